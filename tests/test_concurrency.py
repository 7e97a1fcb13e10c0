"""Apply beside other sessions: row locks, statement timeouts, concurrent applies and writers.

Every test asserts what an operator would see (the error and its one-line message, or
the outcome of each apply) and what the catalog holds afterwards: nothing of a failed
apply, exactly one copy of a successful one, and an audit log whose chain verifies.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import psycopg
import pytest
from psycopg import conninfo, sql

from reconciler.app import auditing as audit
from reconciler.errors import LockTimeout
from reconciler.core.diff import Desired
from reconciler.app.applying import ApplyResult, apply_plan
from reconciler.core.checks import ApplyOptions
from reconciler.errors import ConflictError, DatabaseError, ReconcilerError
from tests.test_apply_core import CATALOG, ds, make, rec, st, ws
from tests.test_apply_kill import wait_for
from tests.test_scenarios import (
    ALICE,
    DATASETS,
    RECORDS,
    STORAGE,
    commit,
    invoke,
    write,
)

PASSWORD = "concurrency-s3cret-pw"


def held_by(app: str, user: str) -> str:
    """A pattern for a lock holder as messages name it."""
    return rf"held by {app} as database user {user}(?: from [^,]+)?, since \d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def counts(db: psycopg.Connection[Any]) -> dict[str, int]:
    """The rows an apply writes, table by table."""
    row = db.execute(
        """SELECT (SELECT count(*) FROM metastore.metastore_records),
                  (SELECT count(*) FROM metastore.metastore_record_audits),
                  (SELECT count(*) FROM reconciler.managed_objects),
                  (SELECT count(*) FROM reconciler.audit_log),
                  (SELECT count(*) FROM timestore.dataset_access_audit),
                  (SELECT count(*) FROM reconciler.runs WHERE outcome = 'applied')""").fetchone()
    assert row is not None
    names = ("records", "record_audits", "managed", "audit_log", "dataset_audits", "applied_runs")
    return dict(zip(names, row, strict=True))


def current_user(db: psycopg.Connection[Any]) -> str:
    row = db.execute("SELECT current_user").fetchone()
    assert row is not None
    return str(row[0])


def as_url(url: str, *, options: str | None = None) -> str:
    """The catalog as an operator writes its URL: ``postgresql://user:password@/db?host=...``,
    with a password (the test servers trust local connections, so any works) and options."""
    params = {k: v for k, v in conninfo.conninfo_to_dict(url).items() if v is not None}
    params.pop("password", None)
    user = quote(str(params.pop("user", "")), safe="")
    dbname = quote(str(params.pop("dbname", "")), safe="")
    if options is not None:
        params["options"] = options
    return f"postgresql://{user}:{PASSWORD}@/{dbname}?{urlencode(params, quote_via=quote)}"


def last_run(db: psycopg.Connection[Any]) -> tuple[str, str | None]:
    row = db.execute("SELECT outcome, message FROM reconciler.runs ORDER BY started_at DESC LIMIT 1").fetchone()
    assert row is not None
    return row[0], row[1]


@pytest.fixture
def role_timeout(db: psycopg.Connection[Any]) -> Iterator[Callable[[str], None]]:
    """Set statement_timeout for the test's user in the test's database only (new sessions
    get it; ``db`` was opened before and keeps none); reset afterwards."""
    row = db.execute("SELECT current_user, current_database()").fetchone()
    assert row is not None
    names = sql.SQL("ALTER ROLE {} IN DATABASE {}").format(sql.Identifier(row[0]), sql.Identifier(row[1]))

    def set_timeout(value: str) -> None:
        db.execute(sql.SQL("{} SET statement_timeout = {}").format(names, sql.Literal(value)))

    yield set_timeout
    db.execute(sql.SQL("{} RESET statement_timeout").format(names))


# --- a. a row or table the plan touches, locked by another session -----------------------------

CHANGED = [st("ch", description="ClickHouse v2", config={"host": "ch.internal"}),
           ds("readings", storageTarget="ch", description="Minute readings",
              metadata={"iam": {"readScopes": ["timestore:read"]}},
              retention={"mode": "time", "rules": {"maxAgeHours": 720}}),
           rec("obs", "sensor-1", owner="team-iot", tags=["iot", "raw"], metadata={"datasetSlug": "readings"}),
           CATALOG[3]]
LOCKS = {
    "record": "SELECT 1 FROM metastore.metastore_records WHERE record_key = 'sensor-1' FOR UPDATE",
    "dataset": "SELECT 1 FROM timestore.datasets WHERE slug = 'readings' FOR UPDATE",
    "storage-target": "SELECT 1 FROM timestore.storage_targets WHERE name = 'ch' FOR UPDATE",
    # Whole tables: one that stops writes only (the re-check passes, the write waits), and
    # one that stops reads too, as a migration does.
    "table-share": "LOCK TABLE metastore.metastore_records IN SHARE MODE",
    "table-exclusive": "LOCK TABLE timestore.datasets IN ACCESS EXCLUSIVE MODE",
}


@pytest.mark.parametrize("kind", list(LOCKS))
def test_a_row_or_table_locked_by_another_session_fails_the_apply_in_the_lock_timeout_naming_it(
        db_url: str, db: psycopg.Connection[Any], kind: str) -> None:
    apply_plan(ws(db_url), make(db_url, CATALOG), ApplyOptions())
    plan = make(db_url, CHANGED)
    assert plan.summary["update"] == 3
    before = counts(db)
    holder = psycopg.connect(db_url, application_name="metastore-api")
    try:
        holder.execute(LOCKS[kind])  # its transaction stays open: the row stays locked
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            apply_plan(ws(db_url), plan, ApplyOptions(lock_timeout=0.5))
        waited = time.monotonic() - started
        assert counts(db) == before
    finally:
        holder.commit()
        holder.close()
    assert 0.4 <= waited < 3.0, waited
    message = str(caught.value)
    assert re.fullmatch(
        r"an object the plan touches is locked by another session \("
        + held_by("metastore-api", re.escape(current_user(db)))
        + r"\); gave up after 0\.5 s \(--lock-timeout\); nothing was applied", message), message
    assert last_run(db) == ("failed", message)
    assert audit.verify(db_url).entries == 4
    # Once the other session has committed, the same apply goes through and converges.
    apply_plan(ws(db_url), make(db_url, CHANGED), ApplyOptions(lock_timeout=0.5))
    assert counts(db)["audit_log"] == 7
    again = make(db_url, CHANGED)
    assert again.changes == () and again.bookkeeping == ()
    assert audit.verify(db_url).entries == 7


def test_apply_through_the_cli_fails_on_a_locked_row_with_one_clear_line(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/observatory.yaml", RECORDS)
    commit(git_repo, ALICE, "catalog")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("unit: celsius", "unit: kelvin"))
    commit(git_repo, ALICE, "sensor 1 in kelvin")
    before = counts(db)
    url = as_url(db_url)
    with psycopg.connect(db_url, application_name="psql") as holder:
        holder.execute("SELECT 1 FROM metastore.metastore_records WHERE record_key = 'sensor-0001' FOR UPDATE")
        result = invoke(git_repo, url, "apply", "--auto-approve", "--lock-timeout", "0.3")
        assert counts(db) == before
    assert result.exit_code == 1, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.fullmatch(
        r"error: an object the plan touches is locked by another session \("
        + held_by("psql", re.escape(current_user(db)))
        + r"\); gave up after 0\.3 s \(--lock-timeout\); nothing was applied", errors[0]), result.output
    assert "Traceback" not in result.output and PASSWORD not in result.output
    assert invoke(git_repo, url, "apply", "--auto-approve").exit_code == 0
    assert invoke(git_repo, url, "plan", "--detailed-exitcode").exit_code == 0
    assert audit.verify(db_url).entries == 7


def test_the_audit_logs_append_lock_is_waited_for_within_the_lock_timeout(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    """Another apply's append (the audit-log lock row, held until it commits) is waited for,
    on a budget of its own: the whole --lock-timeout."""
    plan = make(db_url, CATALOG)
    holder = psycopg.connect(db_url, application_name="another apply appending")
    holder.execute("SELECT 1 FROM reconciler.apply_locks WHERE name = 'audit-log' FOR UPDATE")
    released: list[float] = []

    def release_while_the_apply_waits() -> None:
        time.sleep(0.6)
        released.append(time.monotonic())
        holder.commit()

    releaser = threading.Thread(target=release_while_the_apply_waits)

    def progress(message: str) -> None:
        if message == "appending to the audit log":
            releaser.start()

    try:
        result = apply_plan(ws(db_url), plan, ApplyOptions(lock_timeout=5), progress=progress)
        finished = time.monotonic()
    finally:
        holder.close()
        if releaser.is_alive():
            releaser.join(timeout=60)
    assert result.outcome == "applied" and released and finished > released[0]
    assert counts(db) == {"records": 2, "record_audits": 2, "managed": 4, "audit_log": 4, "dataset_audits": 1,
                          "applied_runs": 1}
    assert audit.verify(db_url).entries == 4


def test_the_audit_logs_append_lock_held_past_the_lock_timeout_fails_the_apply_naming_the_holder(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    plan = make(db_url, CATALOG)
    before = counts(db)
    with psycopg.connect(db_url, application_name="stuck session") as holder:
        holder.execute("SELECT 1 FROM reconciler.apply_locks WHERE name = 'audit-log' FOR UPDATE")
        started = time.monotonic()
        with pytest.raises(LockTimeout) as caught:
            apply_plan(ws(db_url), plan, ApplyOptions(lock_timeout=0.5))
        waited = time.monotonic() - started
        assert counts(db) == before
    assert 0.4 <= waited < 3.0, waited
    assert re.fullmatch(r"the audit log's append lock is held by another session \("
                        + held_by("stuck session", re.escape(current_user(db)))
                        + r"\); gave up after 0\.5 s \(--lock-timeout\); nothing was applied", str(caught.value))
    assert last_run(db) == ("failed", str(caught.value))
    assert audit.verify(db_url).entries == 0


# --- b. statement_timeout ------------------------------------------------------------------------

BULK = [rec("bulk", f"sensor-{i:05}", owner="team-bulk", tags=["iot"], metadata={"i": i}) for i in range(10_000)]
WHERE = {
    "options": "in the connection's options (the URL's options or PGOPTIONS)",
    "role": "on the database user for this database (ALTER ROLE ... IN DATABASE ... SET)",
}


@pytest.mark.parametrize("set_in", list(WHERE))
def test_an_apply_cancelled_by_the_statement_timeout_fails_clearly_and_writes_nothing(
        db_url: str, db: psycopg.Connection[Any], role_timeout: Callable[[str], None], set_in: str) -> None:
    plan = make(db_url, BULK)
    before = counts(db)
    # 100 ms: far more than any small statement, far less than writing 10,000 records.
    if set_in == "options":
        url = as_url(db_url, options="-c statement_timeout=100ms")
    else:
        url = as_url(db_url)
        role_timeout("100ms")
    with pytest.raises(DatabaseError) as caught:
        apply_plan(ws(url), plan, ApplyOptions())
    assert str(caught.value) == (
        "apply failed and was rolled back; nothing was applied: a statement ran longer than the server's "
        f"statement_timeout of 100ms, set {WHERE[set_in]}; raise it there")
    assert counts(db) == before
    assert last_run(db) == ("failed", str(caught.value))
    assert audit.verify(db_url).entries == 0


def test_plan_with_a_tiny_statement_timeout_exits_1_with_one_clear_line(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner, metadata) "
               "SELECT 'ingested', 'key-' || g, 'ingestion', jsonb_build_object('n', g) "
               "FROM generate_series(1, 10000) AS g")
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("datasetSlug: observatory-readings, ", ""))
    commit(git_repo, ALICE, "records")
    result = invoke(git_repo, as_url(db_url, options="-c statement_timeout=1ms"), "plan")
    assert result.exit_code == 1
    assert len(result.output.splitlines()) == 1, result.output
    assert re.match(r"error: reading the (catalog|migration history) failed: a statement ran longer than the "
                    r"server's statement_timeout", result.output), result.output
    assert "Traceback" not in result.output and "unexpected" not in result.output
    assert PASSWORD not in result.output


def test_plan_names_a_statement_timeout_set_on_the_database_user(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], role_timeout: Callable[[str], None]) -> None:
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("datasetSlug: observatory-readings, ", ""))
    commit(git_repo, ALICE, "records")
    with psycopg.connect(db_url) as migration:  # a long migration of the services holds the table
        migration.execute("LOCK TABLE metastore.metastore_records IN ACCESS EXCLUSIVE MODE")
        role_timeout("300ms")
        result = invoke(git_repo, as_url(db_url), "plan")
    assert result.exit_code == 1
    assert result.output == (
        "error: reading the catalog failed: a statement ran longer than the server's statement_timeout of "
        "300ms, set on the database user for this database (ALTER ROLE ... IN DATABASE ... SET); "
        "raise it there\n")


# --- c. applies side by side -----------------------------------------------------------------------


def run_together(jobs: list[Callable[[], ApplyResult]]) -> list[tuple[str, str]]:
    """Start the jobs at once (a barrier), each in its own thread; (outcome, message) per job
    ("unfinished" for one that raised anything but a ReconcilerError)."""
    barrier = threading.Barrier(len(jobs))
    outcomes: list[tuple[str, str]] = [("unfinished", "")] * len(jobs)

    def run(i: int) -> None:
        barrier.wait()
        try:
            outcomes[i] = (jobs[i]().outcome, "")
        except LockTimeout as error:
            outcomes[i] = ("lock-timeout", str(error))
        except ConflictError as error:
            outcomes[i] = ("conflict", str(error))
        except ReconcilerError as error:
            outcomes[i] = ("error", str(error))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return outcomes


def plan_and_apply(db_url: str, objects: list[Desired], source: str = "default",
                   lock_timeout: float = 60.0) -> Callable[[], ApplyResult]:
    """One operator's apply: plan now, then apply that plan."""
    def job() -> ApplyResult:
        plan = make(db_url, objects, source)
        return apply_plan(ws(db_url, source), plan, ApplyOptions(lock_timeout=lock_timeout))
    return job


def check_losers(outcomes: list[tuple[str, str]], addresses: list[str], verb: str) -> None:
    """One apply applied; every other one failed cleanly, naming what stopped it, or had nothing to do."""
    assert [outcome for outcome, _ in outcomes].count("applied") == 1, outcomes
    apply_holder = held_by(r"reconciler apply [0-9a-f]{8} \S+", r"\S+")
    for outcome, message in outcomes:
        if outcome == "conflict":
            assert message.startswith("the catalog changed since the plan was made; nothing was applied:\n")
            for address in addresses:
                assert f"\n  {address} {verb} since the plan" in message, (address, message)
        elif outcome == "lock-timeout":
            assert re.fullmatch(rf"another apply of source 'default' is running \(({apply_holder}|holder unknown)\); "
                                r"gave up after 0\.2 s \(--lock-timeout\)", message), message
        else:
            assert outcome in ("applied", "no-op"), (outcome, message)


def bulk(owner: str, count: int = 300) -> list[Desired]:
    return [*CATALOG, *(rec("bulk", f"k{i:04}", owner=owner, tags=["iot"], metadata={"i": i}) for i in range(count))]


def test_four_applies_of_the_same_tree_at_once_apply_it_exactly_once(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    created = bulk("team-1")
    outcomes = run_together([plan_and_apply(db_url, created, lock_timeout=30) for _ in range(4)])
    check_losers(outcomes, [d.address for d in created], "was created")
    assert counts(db) == {"records": 302, "record_audits": 302, "managed": 304, "audit_log": 304,
                          "dataset_audits": 1, "applied_runs": 1}
    assert db.execute("SELECT version, owner, count(*) FROM metastore.metastore_records WHERE namespace = 'bulk' "
                      "GROUP BY 1, 2").fetchall() == [(1, "team-1", 300)]
    assert db.execute("SELECT count(*) FROM (SELECT address FROM reconciler.audit_log GROUP BY address "
                      "HAVING count(*) > 1) AS twice").fetchone() == (0,)

    updated = bulk("team-2")
    plan = make(db_url, updated)
    outcomes = run_together([plan_and_apply(db_url, updated, lock_timeout=0.2) for _ in range(4)])
    check_losers(outcomes, [c.address for c in plan.changes], "changed")
    assert counts(db) == {"records": 302, "record_audits": 602, "managed": 304, "audit_log": 604,
                          "dataset_audits": 1, "applied_runs": 2}
    assert db.execute("SELECT version, owner, count(*) FROM metastore.metastore_records WHERE namespace = 'bulk' "
                      "GROUP BY 1, 2").fetchall() == [(2, "team-2", 300)]
    assert db.execute("SELECT action, previous_version, version, owner, count(*) FROM "
                      "metastore.metastore_record_audits WHERE namespace = 'bulk' AND action = 'update' "
                      "GROUP BY 1, 2, 3, 4").fetchall() == [("update", 1, 2, "team-2", 300)]
    assert audit.verify(db_url).entries == 604
    again = make(db_url, updated)
    assert again.changes == () and again.bookkeeping == ()


SOURCES = ("north", "south", "east", "west")


def owned_by(source: str, owner: str, count: int = 50) -> list[Desired]:
    """A source's own storage target, dataset and records: disjoint from every other source's."""
    return [st(f"ch-{source}", description=f"{source} cluster"),
            ds(f"readings-{source}", storageTarget=f"ch-{source}", description=owner),
            *(rec(source, f"k{i:03}", owner=owner, metadata={"i": i}) for i in range(count))]


def test_four_sources_touching_disjoint_objects_apply_side_by_side(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    for step, owner in enumerate(("team-1", "team-2"), start=1):
        outcomes = run_together([plan_and_apply(db_url, owned_by(s, owner), s) for s in SOURCES])
        assert outcomes == [("applied", "")] * 4
        assert db.execute("SELECT source, count(*) FROM reconciler.managed_objects GROUP BY 1 ORDER BY 1"
                          ).fetchall() == sorted((s, 52) for s in SOURCES)
        assert db.execute("SELECT namespace, min(version), max(version), min(owner), max(owner) "
                          "FROM metastore.metastore_records GROUP BY 1 ORDER BY 1").fetchall() == sorted(
            (s, step, step, owner, owner) for s in SOURCES)
    # Creates of 52 objects per source, then 50 record and 1 dataset updates per source.
    assert counts(db) == {"records": 200, "record_audits": 400, "managed": 208, "audit_log": 412,
                          "dataset_audits": 8, "applied_runs": 8}
    assert db.execute("SELECT min(seq), max(seq), count(DISTINCT seq) FROM reconciler.audit_log").fetchone() == (
        1, 412, 412)
    assert audit.verify(db_url).entries == 412
    for source in SOURCES:
        again = make(db_url, owned_by(source, "team-2"), source)
        assert again.changes == () and again.bookkeeping == ()


# --- d. the services writing while an apply runs ------------------------------------------------

WRITER = ("UPDATE metastore.metastore_records SET owner = 'svc-owner', version = version + 1, "
          "updated_by = 'svc@example.com', updated_at = now() WHERE namespace = 'obs' AND record_key = 'sensor-1'")
UPDATES = [*CATALOG[:2], rec("obs", "sensor-1", owner="team-iot", tags=["iot"], metadata={"datasetSlug": "readings"}),
           rec("obs", "sensor-2", owner="team-obs", metadata={"unit": "rankine"})]


def test_a_writer_committing_before_the_recheck_makes_the_apply_fail_naming_the_record(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    apply_plan(ws(db_url), make(db_url, CATALOG), ApplyOptions())
    plan = make(db_url, UPDATES)
    assert [c.address for c in plan.changes] == ["record:obs/sensor-1", "record:obs/sensor-2"]
    before = counts(db)

    def progress(message: str) -> None:
        if message == "checking the catalog against the plan":  # the plan is made, nothing is locked yet
            with psycopg.connect(db_url, autocommit=True, application_name="metastore-api") as writer:
                assert writer.execute(WRITER).rowcount == 1

    with pytest.raises(ConflictError) as caught:
        apply_plan(ws(db_url), plan, ApplyOptions(), progress=progress)
    assert str(caught.value) == (
        "the catalog changed since the plan was made; nothing was applied:\n"
        "  record:obs/sensor-1 changed since the plan by svc@example.com (plan saw 1, now 2)\n"
        "run plan again and review the new plan")
    assert counts(db) == before
    assert db.execute("SELECT record_key, owner, tags, version, metadata FROM metastore.metastore_records "
                      "ORDER BY record_key").fetchall() == [
        ("sensor-1", "svc-owner", ["iot", "raw"], 2, {"datasetSlug": "readings"}),
        ("sensor-2", "team-obs", [], 1, {"unit": "kelvin"})]
    assert last_run(db)[0] == "refused"
    assert audit.verify(db_url).entries == 4
    # A new plan sees the writer's change as drift, and applying it converges.
    replan = make(db_url, UPDATES)
    assert [(c.address, c.drift) for c in replan.changes] == [("record:obs/sensor-1", ("owner",)),
                                                              ("record:obs/sensor-2", ())]
    apply_plan(ws(db_url), replan, ApplyOptions())
    assert make(db_url, UPDATES).changes == ()
    # Two changes, and before the revert the writer's change itself, as its own entry.
    assert audit.verify(db_url).entries == 7
    assert db.execute("SELECT address, reason, author_email FROM reconciler.audit_log WHERE seq = 5").fetchone() == (
        "record:obs/sensor-1", "out-of-band", "svc@example.com")


def test_a_writer_blocked_by_the_applys_row_lock_writes_after_it_commits(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    apply_plan(ws(db_url), make(db_url, CATALOG), ApplyOptions())
    plan = make(db_url, UPDATES)
    written: list[int] = []

    def write_as_the_service() -> None:
        with psycopg.connect(db_url, autocommit=True, application_name="metastore-api") as writer:
            written.append(writer.execute(WRITER).rowcount)

    writer = threading.Thread(target=write_as_the_service)

    def progress(message: str) -> None:
        if message == "appending to the audit log":  # rows locked and written, not yet committed
            writer.start()
            wait_for(lambda: db.execute("SELECT wait_event_type FROM pg_stat_activity WHERE datname = "
                                        "current_database() AND application_name = 'metastore-api'"
                                        ).fetchall() == [("Lock",)],
                     "the writer to wait for the apply's row lock")
            assert written == []

    result = apply_plan(ws(db_url), plan, ApplyOptions(), progress=progress)
    writer.join(timeout=60)
    assert result.outcome == "applied" and written == [1]
    # The apply's update is whole (its version, its fields, its audit row); the writer's
    # came after it, on top of it.
    assert db.execute("SELECT record_key, owner, tags, version, updated_by, metadata FROM "
                      "metastore.metastore_records ORDER BY record_key").fetchall() == [
        ("sensor-1", "svc-owner", ["iot"], 3, "svc@example.com", {"datasetSlug": "readings"}),
        ("sensor-2", "team-obs", [], 2, "alice@example.com", {"unit": "rankine"})]
    assert db.execute("SELECT record_key, action, previous_version, version, owner, actor FROM "
                      "metastore.metastore_record_audits WHERE action = 'update' ORDER BY record_key").fetchall() == [
        ("sensor-1", "update", 1, 2, "team-iot", "alice@example.com"),
        ("sensor-2", "update", 1, 2, "team-obs", "alice@example.com")]
    assert counts(db) == {"records": 2, "record_audits": 4, "managed": 4, "audit_log": 6, "dataset_audits": 1,
                          "applied_runs": 2}
    assert audit.verify(db_url).entries == 6
    drift = make(db_url, UPDATES)
    assert [(c.address, c.drift) for c in drift.changes] == [("record:obs/sensor-1", ("owner",))]
    assert any(f.severity == "drift" and "svc@example.com" in f.message for f in drift.findings)
