"""An apply killed mid-way leaves nothing written, and running it again converges.

A driver process plans N records against a test catalog and applies them; the test
SIGKILLs it before, during or after the write. Separately, the apply's database
backend is terminated from another session while it writes. Either way the catalog
must hold all of the apply or none of it.

N is 3,000 and the kill test runs its eight trials once. For a long run, set
``RECONCILER_KILL_RECORDS`` (N, for both tests) and ``RECONCILER_KILL_ROUNDS`` (how
many times the eight kill trials run), as in docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import runpy
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import conninfo, sql

from reconciler.app import auditing as audit
from reconciler.app.applying import apply_plan
from reconciler.core.checks import ApplyOptions
from reconciler.errors import ReconcilerError


def _positive(name: str, default: int) -> int:
    """A positive whole number from the environment variable ``name``, else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise pytest.UsageError(f"{name} must be a positive whole number, got {text!r}")
    return int(text)


DEFAULT_N = 3000
N = _positive("RECONCILER_KILL_RECORDS", DEFAULT_N)
ROUNDS = _positive("RECONCILER_KILL_ROUNDS", 1)
# The waits measured in fixed time (below) grow with the apply, which grows with N.
SCALE = N / DEFAULT_N

DRIVER = '''
"""Plan N records against the catalog at argv[1] and apply them (test_apply_kill runs it, then kills it)."""

import sys
from pathlib import Path

import psycopg

from reconciler.catalog.postgres.reading import read_state
from reconciler.core.diff import Desired, Location, diff
from reconciler.app.applying import apply_plan
from reconciler.app.workspace import Workspace
from reconciler.catalog.postgres.catalog import PostgresCatalog
from reconciler.core.checks import ApplyOptions
from reconciler.core.plan import Author, from_diff

AUTHOR = Author("Kill Tester", "kill@example.com", "d" * 40)


def desired(count):
    return [Desired(f"record:bulk-{i % 2}/sensor-{i:05}", "record",
                    {"owner": "team-bulk", "tags": ["iot", f"t{i % 7}"], "schemaHash": "sha256-0123456789",
                     "metadata": {"i": i, "unit": "celsius", "nested": {"even": i % 2 == 0}}},
                    Location("manifests/bulk.yaml", 1 + 7 * i, 7 + 7 * i))
            for i in range(count)]


def plan(url, objects):
    with psycopg.connect(url, autocommit=True) as conn:
        state = read_state(conn)
    result = diff({d.address: d for d in objects}, state.live, state.applied, source="default")
    return from_diff(result, source="default", commit="d" * 40, dirty=False, created_at="2026-11-21T00:00:00Z",
                     authors={c.address: AUTHOR for c in result.changes}, secrets={})


def workspace(url):
    return Workspace(Path("manifests"), None, "default", PostgresCatalog(url))


if __name__ == "__main__":
    url, count = sys.argv[1], int(sys.argv[2])
    the_plan = plan(url, desired(count))
    print("planned", len(the_plan.changes), flush=True)
    result = apply_plan(workspace(url), the_plan, ApplyOptions())
    print("applied", result.outcome, flush=True)
'''



@pytest.fixture(scope="module")
def script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The driver, as a file the subprocess runs."""
    path = tmp_path_factory.mktemp("kill") / "kill_driver.py"
    path.write_text(DRIVER, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def driver(script: Path) -> dict[str, Any]:
    """The driver's functions, loaded in this process (for the re-runs)."""
    return runpy.run_path(str(script), run_name="reconciler_kill_driver")


APPLY_BACKENDS = """SELECT pid, xact_start IS NOT NULL, backend_xid IS NOT NULL, wait_event_type
                    FROM pg_stat_activity
                    WHERE datname = current_database() AND application_name LIKE 'reconciler apply%'"""
CATALOG_TABLES = """SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                    WHERE schemaname IN ('timestore', 'metastore', 'reconciler')
                      AND tablename <> 'migration_history'"""


@contextlib.contextmanager
def empty_catalog(url: str) -> Iterator[str]:
    """The test's migrated database with every row of every catalog table removed (see
    tests/test_apply_properties.py: triggers and foreign keys off for that transaction)."""
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for (table,) in conn.execute(CATALOG_TABLES).fetchall():
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.SQL(table)))
    yield url


def counts(conn: psycopg.Connection[Any]) -> dict[str, int]:
    """What an apply of the driver's records writes, table by table."""
    row = conn.execute(
        """SELECT (SELECT count(*) FROM metastore.metastore_records),
                  (SELECT count(*) FROM metastore.metastore_record_audits WHERE action = 'create'),
                  (SELECT count(*) FROM metastore.metastore_record_audits),
                  (SELECT count(*) FROM reconciler.managed_objects),
                  (SELECT count(*) FROM reconciler.audit_log),
                  (SELECT count(*) FROM reconciler.runs WHERE outcome = 'applied'),
                  (SELECT count(*) FROM timestore.datasets) + (SELECT count(*) FROM timestore.storage_targets)
                    + (SELECT count(*) FROM timestore.dataset_access_audit)""").fetchone()
    assert row is not None
    names = ("records", "create_audits", "record_audits", "managed", "audit_log", "applied_runs", "timestore")
    return dict(zip(names, row))


UNTOUCHED = {"records": 0, "create_audits": 0, "record_audits": 0, "managed": 0, "audit_log": 0,
             "applied_runs": 0, "timestore": 0}
APPLIED = {"records": N, "create_audits": N, "record_audits": N, "managed": N, "audit_log": N,
           "applied_runs": 1, "timestore": 0}


def state_of(conn: psycopg.Connection[Any]) -> str:
    """``untouched``, ``applied``, or ``partial`` (what must never happen)."""
    found = counts(conn)
    if found == UNTOUCHED:
        return "untouched"
    if found == APPLIED:
        return "applied"
    return "partial"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0, every: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(every)


def apply_backends(conn: psycopg.Connection[Any]) -> list[tuple[int, bool, bool, str | None]]:
    return conn.execute(APPLY_BACKENDS).fetchall()


def rerun_converges(driver: dict[str, Any], url: str, conn: psycopg.Connection[Any]) -> None:
    """The audit chain verifies as the failure left it; running the apply again (in this
    process) completes it, the chain verifies with one entry per record, and the next
    plan is empty."""
    assert audit.verify(url).entries in (0, N)
    objects = driver["desired"](N)
    apply_plan(driver["workspace"](url), driver["plan"](url, objects), ApplyOptions())
    assert counts(conn) == APPLIED
    assert audit.verify(url).entries == N
    again = driver["plan"](url, objects)
    assert again.changes == () and again.bookkeeping == ()


# --- SIGKILL of the applying process -----------------------------------------------------------

# When each trial kills the driver: after it reported the apply done (this trial also times
# the driver's run and its apply, from plan to commit); right after it starts; a random
# 0–1.5 s (times N/3000) after it starts; at a random moment between its plan and 1.2 times
# the apply's duration after it (so before, during or after the write); within 20 ms (times
# N/3000) of its backend opening the apply's transaction; within as long of that
# transaction's first write; and while it is blocked inside the write (all records written,
# its bookkeeping insert waiting on a lock).
TRIALS = ("after-commit", "at-start", "random", "random-after-plan", "random-after-plan",
          "in-transaction", "written", "blocked-mid-write")
# The trials that cannot race: killed after it said it had committed, killed before it
# could connect, killed while blocked mid-write.
CERTAIN = {"after-commit": "applied", "at-start": "untouched", "blocked-mid-write": "untouched"}


@dataclass(frozen=True)
class Trial:
    """One kill: when it was aimed, where the apply was (``before`` its transaction,
    ``during`` it or ``after`` its commit) and what the catalog held afterwards."""

    when: str
    state: str
    phase: str
    wrote: bool = False
    found: str = ""


def test_an_apply_killed_at_any_moment_leaves_all_or_nothing_and_a_rerun_converges(
        db_url: str, script: Path, driver: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    seed = int.from_bytes(os.urandom(4), "big")
    rng = random.Random(seed)
    trials: list[Trial] = []
    timing = {"apply": 1.5, "run": 1.5}
    started = time.monotonic()
    try:
        for _ in range(ROUNDS):
            for when in TRIALS:
                with empty_catalog(db_url) as url, psycopg.connect(url, autocommit=True) as conn:
                    trial = kill_trial(url, conn, script, when, rng, timing)
                    trials.append(trial)
                    if trial.state == "partial":
                        pytest.fail(f"the catalog holds part of an apply ({when}): {trial.found}")
                    rerun_converges(driver, url, conn)
    finally:
        with capsys.disabled():
            print("\n" + kill_summary(trials, seed, timing, time.monotonic() - started))
    wrong = [(t.when, t.state) for t in trials if t.when in CERTAIN and t.state != CERTAIN[t.when]]
    assert not wrong, f"expected {CERTAIN}, got {wrong}"


def kill_summary(trials: list[Trial], seed: int, timing: dict[str, float], seconds: float) -> str:
    """Trials and outcomes overall, where the kills landed, and the same per kind of trial."""
    outcomes = Counter(t.state for t in trials)
    phases = Counter(t.phase for t in trials)
    wrote = sum(t.wrote for t in trials)
    headline = (f"kill trials (seed {seed}, {N:,} records, {len(trials)} trials in {seconds:.0f} s; "
                f"the apply took {timing['apply']:.2f} s, the driver {timing['run']:.2f} s): "
                f"untouched {outcomes['untouched']}, applied {outcomes['applied']}, "
                f"partial {outcomes['partial']}")
    landed = (f"killed before the transaction {phases['before']}, during it {phases['during']} "
              f"({wrote} of them after its first write), after its commit {phases['after']}")
    lines = [headline, landed]
    for when in dict.fromkeys(t.when for t in trials):
        mine = [t for t in trials if t.when == when]
        tally = Counter(f"{t.phase}/{t.state}" for t in mine)
        lines.append(f"  {when}: {len(mine)}: " + ", ".join(f"{k} {v}" for k, v in sorted(tally.items())))
    return "\n".join(lines)


def kill_trial(url: str, conn: psycopg.Connection[Any], script: Path, when: str, rng: random.Random,
               timing: dict[str, float]) -> Trial:
    blocker: psycopg.Connection[Any] | None = None
    if when == "blocked-mid-write":
        blocker = psycopg.connect(url)
        blocker.execute("LOCK TABLE reconciler.managed_objects IN EXCLUSIVE MODE")  # held until rollback
    launched = time.monotonic()
    proc = subprocess.Popen([sys.executable, str(script), url, str(N)], cwd=script.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        aim(proc, conn, when, rng, timing, launched)
        if proc.poll() not in (None, 0):
            pytest.fail(f"the driver failed on its own: {proc.stderr.read() if proc.stderr else ''}")
        # Where the apply was: its backend just before and just after the kill (a backend
        # idle in its transaction may end at once when the client goes away).
        seen = apply_backends(conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        seen += apply_backends(conn)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if blocker is not None:
            blocker.rollback()
            blocker.close()
        if proc.stdout:
            proc.stdout.close()
        if proc.stderr:
            proc.stderr.close()
    # The server ends the orphaned backend (rolling back its transaction) once it notices
    # the client is gone; only then is the outcome final.
    wait_for(lambda: not apply_backends(conn), "the killed apply's backend to end", every=0.01)
    state = state_of(conn)
    during = any(backend[1] for backend in seen)
    phase = "during" if during else "after" if state == "applied" else "before"
    found = "" if state != "partial" else str(counts(conn))
    return Trial(when, state, phase, wrote=any(backend[2] for backend in seen), found=found)


def aim(proc: subprocess.Popen[str], conn: psycopg.Connection[Any], when: str, rng: random.Random,
        timing: dict[str, float], launched: float) -> None:
    """Wait until the moment trial ``when`` kills the driver at (``after-commit`` also
    measures the driver's run and its apply, for the random trials that follow)."""
    if when == "random":
        time.sleep(rng.uniform(0.0, 1.5 * SCALE))
    elif when == "random-after-plan":
        assert proc.stdout is not None
        planned = proc.stdout.readline()
        assert planned.startswith("planned"), (planned, proc.stderr.read() if proc.stderr else "")
        time.sleep(rng.uniform(0.0, 1.2 * timing["apply"]))
    elif when == "in-transaction":
        wait_for(lambda: proc.poll() is not None or any(b[1] for b in apply_backends(conn)),
                 "the apply's transaction", timeout=60.0 * SCALE)
        time.sleep(rng.uniform(0.0, 0.02 * SCALE))
    elif when == "written":
        wait_for(lambda: proc.poll() is not None or any(b[2] for b in apply_backends(conn)),
                 "the apply's first write", timeout=60.0 * SCALE)
        time.sleep(rng.uniform(0.0, 0.02 * SCALE))
    elif when == "blocked-mid-write":
        wait_for(lambda: proc.poll() is not None or any(b[3] == "Lock" for b in apply_backends(conn)),
                 "the apply to block on the lock", timeout=60.0 * SCALE)
    elif when == "after-commit":
        assert proc.stdout is not None
        planned = proc.stdout.readline()
        started = time.monotonic()
        applied = proc.stdout.readline()
        timing["apply"] = time.monotonic() - started
        timing["run"] = time.monotonic() - launched
        assert planned.startswith("planned") and applied.startswith("applied"), (
            planned, applied, proc.stderr.read() if proc.stderr else "")


# --- the apply's backend terminated from another session ------------------------------------------


def with_password(url: str) -> tuple[str, str]:
    """The URL with a password in it (the test servers trust local connections, so any
    password works; an existing one is kept), so the test can check none leaks."""
    params: dict[str, Any] = {k: v for k, v in conninfo.conninfo_to_dict(url).items() if v is not None}
    password = str(params.get("password") or "kill-test-s3cret-pw")
    params["password"] = password
    return conninfo.make_conninfo("", **params), password


def terminate_apply_backend(admin: psycopg.Connection[Any]) -> None:
    rows = admin.execute("SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity "
                         "WHERE datname = current_database() AND application_name LIKE 'reconciler apply%'"
                         ).fetchall()
    assert rows == [(True,)], f"expected one apply backend to terminate, found {rows}"


# Terminated between statements as the record writes start; inside a statement, once every
# record is written (its bookkeeping insert blocked on a lock); and at the last step, once
# everything but the audit log is written.
@pytest.mark.parametrize("moment", [f"writing {N} record change(s)", "blocked inside a statement",
                                    "appending to the audit log"])
def test_an_apply_whose_backend_is_terminated_fails_clearly_writes_nothing_and_a_rerun_converges(
        db_url: str, driver: dict[str, Any], moment: str) -> None:
    url, password = with_password(db_url)
    objects = driver["desired"](N)
    with empty_catalog(db_url), psycopg.connect(db_url, autocommit=True) as admin:
        plan = driver["plan"](url, objects)
        terminated: list[str] = []
        blocker: psycopg.Connection[Any] | None = None
        watcher: threading.Thread | None = None

        def progress(message: str) -> None:
            if message == moment:
                terminate_apply_backend(admin)
                terminated.append(message)

        if moment == "blocked inside a statement":
            blocker = psycopg.connect(db_url)
            blocker.execute("LOCK TABLE reconciler.managed_objects IN EXCLUSIVE MODE")

            def watch() -> None:
                assert blocker is not None
                try:
                    with psycopg.connect(db_url, autocommit=True) as other:
                        wait_for(lambda: any(b[3] == "Lock" for b in apply_backends(other)),
                                 "the apply to block on the lock")
                        terminate_apply_backend(other)
                        terminated.append(moment)
                except BaseException:
                    blocker.rollback()  # never leave the apply blocked; it then fails "DID NOT RAISE"
                    raise

            watcher = threading.Thread(target=watch)
            watcher.start()
        try:
            with pytest.raises(ReconcilerError) as caught:
                apply_plan(driver["workspace"](url), plan, ApplyOptions(), progress=progress)
        finally:
            if watcher is not None:
                watcher.join(timeout=60)
            if blocker is not None:
                blocker.rollback()
                blocker.close()
        assert terminated == [moment], f"the apply never reached {moment!r}: {caught.value}"
        message = str(caught.value)
        assert "\n" not in message, message
        assert password not in message, message
        assert re.search(r"nothing was applied|rolled back", message), message
        assert message == caught.value.render()
        wait_for(lambda: not apply_backends(admin), "the terminated backend to end", every=0.01)
        assert counts(admin) == UNTOUCHED
        rerun_converges(driver, url, admin)
