"""The reconciler's audit log on a real PostgreSQL and real git: entries, chain, verify, log, export."""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from click.testing import CliRunner, Result

from reconciler.app import auditing as audit
from reconciler.catalog.postgres import audit_log
from reconciler.catalog.postgres.reading import read_state
from reconciler.cli import cli
from reconciler.core.diff import Desired, Location, diff
from reconciler.app.applying import apply_plan
from reconciler.app.workspace import Workspace
from reconciler.catalog.postgres.catalog import PostgresCatalog, PostgresWriter
from reconciler.core.checks import ApplyOptions
from reconciler.errors import ConflictError
from reconciler.errors import LockTimeout
from reconciler.core.plan import Author, Plan, from_diff
from reconciler.git.repository import GitRepository
from tests import helpers
from tests.conftest import run_git
from tests.helpers import write

ALICE = ("Alice Analyst", "alice@example.com")
BOB = ("Bob Builder", "bob@example.com")
CAROL = ("Carol Curator", "carol@example.com")

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: primary-clickhouse
type: clickhouse
description: ClickHouse cluster
config: {cluster: obs}
"""

DATASET = """\
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-readings
name: Observatory readings
storageTarget: primary-clickhouse
metadata: {unit: celsius}
"""

RECORDS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: observatory
defaults: {owner: team-observatory}
records:
  - key: sensor-0001
    tags: [iot]
  - key: sensor-0002
"""


# --- helpers -----------------------------------------------------------------------------------




_CLOCK = itertools.count()


def commit(repo: Path, author: tuple[str, str], message: str) -> str:
    """A commit a minute after the one before: attribution picks the latest commit by time, and applies are fast."""
    return helpers.commit(repo, author, message, date=f"@{1767225600 + 60 * next(_CLOCK)} +0000")


def apply_tree(repo: Path, db_url: str, *extra: str) -> Result:
    result = CliRunner().invoke(cli, ["apply", str(repo / "manifests"), "--database-url", db_url,
                                      "--auto-approve", *extra], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def run(db_url: str, *args: str) -> Result:
    return CliRunner().invoke(cli, ["audit", *args, "--database-url", db_url], catch_exceptions=False)


def log_rows(db: psycopg.Connection[Any], columns: str) -> list[tuple[Any, ...]]:
    return db.execute(f"SELECT {columns} FROM reconciler.audit_log ORDER BY seq").fetchall()


def tamper(db: psycopg.Connection[Any], statement: str) -> None:
    """What someone who owns the table can do: drop the append-only guard, then edit."""
    db.execute("ALTER TABLE reconciler.audit_log DISABLE TRIGGER USER")
    db.execute(statement)
    db.execute("ALTER TABLE reconciler.audit_log ENABLE TRIGGER USER")


def loc(line: int) -> Location:
    return Location("manifests/catalog.yaml", line, line + 2)


def engine_apply(db_url: str, objects: list[Desired], author: Author, source: str = "default",
                 **options: Any) -> Plan:
    """Plan and apply plain desired values (no tree, no git), attributed to ``author``."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        state = read_state(conn)
    result = diff({d.address: d for d in objects}, state.live, state.applied, source=source)
    plan = from_diff(result, source=source, commit=author.commit, dirty=False,
                     created_at="2026-11-21T00:00:00Z", authors={c.address: author for c in result.changes},
                     secrets={})
    apply_plan(Workspace(Path("manifests"), None, source, PostgresCatalog(db_url)), plan, ApplyOptions(**options))
    return plan


def rec(key: str, line: int, namespace: str = "obs", **fields: Any) -> Desired:
    return Desired(f"record:{namespace}/{key}", "record", {"owner": "team", **fields}, loc(line))


def five_entries(db_url: str) -> list[str]:
    """A log of five entries from three applies by two authors; returns their hashes."""
    alice = Author("Alice", "alice@example.com", "a" * 40)
    bob = Author("Bob", "bob@example.com", "b" * 40)
    engine_apply(db_url, [rec("r1", 1), rec("r2", 5)], alice)
    engine_apply(db_url, [rec("r1", 1, tags=["x"]), rec("r2", 5), rec("r3", 9)], bob)
    engine_apply(db_url, [rec("r1", 1, tags=["x"]), rec("r3", 9)], alice)  # archives r2
    with psycopg.connect(db_url) as conn:
        return [h for (h,) in conn.execute("SELECT hash FROM reconciler.audit_log ORDER BY seq")]


# --- the canonical serialisation (pure) ----------------------------------------------------------


def test_entry_fields_match_the_table_and_the_export() -> None:
    assert tuple(f.name for f in dataclass_fields(audit.Entry)) == audit_log.COLUMNS
    assert tuple(audit.EXPORT_TYPES) == audit_log.COLUMNS


def test_sealed_hashes_and_rows_match_a_fresh_serialisation_even_for_values_that_look_like_its_markers() -> None:
    tricky = {"before": "\x00", '"before":"\\u0000"': 1.0, "after": ["\x00", 2.0], "k": None}
    drafts = [
        audit.Draft(run_id="run-1", source="default", address="record:a/b", kind="record", action="update",
                    before=tricky, after={"after": "\x00", "before": tricky}, fields=("metadata",), commit_sha=None,
                    author_name='"before":"\x00"', author_email='"after":"\x00"', uncommitted=False,
                    manifest_path=None, manifest_line=None, applier="ci", plan_digest="d" * 64),
        audit.Draft(run_id="run-1", source="default", address="record:a/c", kind="record", action="create",
                    before=None, after=None, fields=(), commit_sha=None, author_name="n", author_email="e",
                    uncommitted=True, manifest_path="m.yaml", manifest_line=3, applier="ci", plan_digest="d" * 64),
    ]
    sealed = audit._sealed(drafts, after_seq=0, after_hash=audit.GENESIS, recorded_at=datetime.now(UTC))
    for entry, row in sealed:
        assert entry.hash == entry.computed_hash()
        assert row == entry.row()
    assert json.loads(sealed[0][1][audit_log.COLUMNS.index("after")])["before"]["after"] == ["\x00", 2]


def test_values_shared_by_many_drafts_are_hashed_and_stored_as_each_entry_alone_would_be() -> None:
    from datetime import timedelta, timezone

    identity = {"actor": "ci", "run": {"attempt": 2.0, "url": "https://ci.example/1"}}
    moment = datetime(2026, 3, 4, 5, 6, 7, 8, tzinfo=timezone(timedelta(hours=-3)))
    base = dict(run_id="run-1", source="default", kind="record", action="create", before=None, fields=("owner",),
                commit_sha="c" * 40, author_name="Ada", author_email="ada@x", uncommitted=False,
                manifest_path="m.yaml", manifest_line=1, applier="ci", plan_digest="d" * 64)
    drafts = [audit.Draft(address=f"record:a/k{i}", after={"owner": "t", "n": float(i), "x": [0.5, (1, 2.0)]},
                          commit_date=moment if i % 2 else moment.astimezone(UTC),
                          applied_by=identity if i < 3 else {**identity, "actor": "other"},
                          changed_at=moment if i == 4 else None, reason=None if i else "manifest",
                          **base)  # type: ignore[arg-type]
              for i in range(6)]
    sealed = audit._sealed(drafts, after_seq=7, after_hash="e" * 64, recorded_at=moment, key=b"k" * 16)
    assert [entry.seq for entry, _ in sealed] == list(range(8, 14))
    for (entry, row), draft in zip(sealed, drafts, strict=True):
        assert entry.hash == entry.computed_hash() and row == entry.row()
        assert entry.applied_by is draft.applied_by and entry.commit_date is draft.commit_date
        alone = audit._sealed([draft], after_seq=entry.seq - 1, after_hash=entry.prev_hash, recorded_at=moment,
                              key=b"k" * 16)
        assert alone == [(entry, row)]
    assert json.loads(sealed[3][1][audit_log.COLUMNS.index("applied_by")]) == {
        "actor": "other", "run": {"attempt": 2, "url": "https://ci.example/1"}}


def test_plain_normalises_numbers_as_postgresql_gives_them_back() -> None:
    assert audit.plain({"a": 1.0, "b": [2.0, 0.5], "c": -0.0}) == {"a": 1, "b": [2, 0.5], "c": 0}
    assert type(audit.plain(1.0)) is int and type(audit.plain(True)) is bool
    assert audit.plain(1e300) == 10**300  # jsonb gives the decimal back, not the binary value
    assert audit.canonical(audit.plain({"b": 1e-7, "a": "é"})) == '{"a":"é","b":1e-07}'
    with pytest.raises(ValueError):
        audit.plain(float("nan"))


def test_utc_text_is_fixed_format() -> None:
    from datetime import timedelta, timezone

    moment = datetime(2026, 1, 2, 5, 4, 5, 7, tzinfo=timezone(timedelta(hours=2)))
    assert audit.utc_text(moment) == "2026-01-02T03:04:05.000007Z"


# --- round trip through PostgreSQL -----------------------------------------------------------------

AWKWARD = {
    "floats": [1.0, 0.1, 1e-7, 2.5e-300, 1e300, 123456789.125, -0.0, 3.0e15],
    "ints": [0, -1, 2**53 + 1, 2**70, -(10**30)],
    "text": "é ü 日本 😀 \u2028 tab\t nl\n quote\" backslash\\ ${env:X}",
    "nested": {"b": [{"z": None, "a": [True, False]}], "a": {}, "": "empty key"},
}


def test_awkward_values_survive_postgresql_and_verify(db_url: str, db: psycopg.Connection[Any]) -> None:
    drafts = [audit.Draft("run-1", "default", f"record:ns/k{i}", "record", "update", AWKWARD,
                          {"nested": AWKWARD["nested"], "n": 1.0}, ("metadata", "tags"), "c" * 40,
                          "Zoë Ünïcode", "zoe@example.com", False, "manifests/ä.yaml", 3, "ci-bot", "d" * 64)
              for i in range(3)]
    with psycopg.connect(db_url) as conn, conn.transaction():
        written = audit.append(PostgresWriter(conn), drafts)
    assert [e.seq for e in written] == [1, 2, 3] and written[0].prev_hash == audit.GENESIS
    assert written[1].prev_hash == written[0].hash
    read = list(audit_log.read_entries(db_url, audit.Entry.from_row))
    assert [e.to_json() for e in read] == [e.to_json() for e in written]
    assert read[0].before == audit.plain(AWKWARD)
    assert audit.verify(db_url).entries == 3
    assert run(db_url, "verify").exit_code == 0


# --- entries written by apply ----------------------------------------------------------------------


def test_every_action_is_recorded_with_author_commit_and_applier(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_ACTOR", "ci-bot")
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASET)
    write(git_repo, "manifests/records/obs.yaml", RECORDS)
    alice = commit(git_repo, ALICE, "step 1")
    apply_tree(git_repo, db_url)
    # Bob describes the dataset and removes a record (archived).
    write(git_repo, "manifests/datasets.yaml", DATASET + "description: Minute readings\n")
    write(git_repo, "manifests/records/obs.yaml", RECORDS.replace("  - key: sensor-0002\n", ""))
    bob = commit(git_repo, BOB, "step 2")
    monkeypatch.setenv("GITHUB_ACTOR", "release-bot")
    apply_tree(git_repo, db_url)
    # Carol brings the record back (restored), then purges it.
    write(git_repo, "manifests/records/obs.yaml", RECORDS)
    carol = commit(git_repo, CAROL, "step 3")
    apply_tree(git_repo, db_url)
    write(git_repo, "manifests/records/obs.yaml", RECORDS + "    purge: true\n")
    carol2 = commit(git_repo, CAROL, "step 4")
    apply_tree(git_repo, db_url, "--allow-purge")

    rows = log_rows(db, "seq, action, address, author_name, author_email, commit_sha, applier, fields, "
                        "manifest_path, uncommitted")
    assert [r[0] for r in rows] == list(range(1, 9))
    assert [(r[1], r[2], r[4], r[5], r[6]) for r in rows] == [
        ("create", "storage-target:primary-clickhouse", "alice@example.com", alice, "ci-bot"),
        ("create", "dataset:observatory-readings", "alice@example.com", alice, "ci-bot"),
        ("create", "record:observatory/sensor-0001", "alice@example.com", alice, "ci-bot"),
        ("create", "record:observatory/sensor-0002", "alice@example.com", alice, "ci-bot"),
        ("update", "dataset:observatory-readings", "bob@example.com", bob, "release-bot"),
        ("archive", "record:observatory/sensor-0002", "bob@example.com", bob, "release-bot"),
        ("restore", "record:observatory/sensor-0002", "carol@example.com", carol, "release-bot"),
        ("purge", "record:observatory/sensor-0002", "carol@example.com", carol2, "release-bot"),
    ]
    by_action = {(r[1], r[2]): r for r in rows}
    update = by_action[("update", "dataset:observatory-readings")]
    assert update[3] == "Bob Builder" and update[7] == ["description"]
    assert update[8] == "manifests/datasets.yaml" and update[9] is False
    archive = by_action[("archive", "record:observatory/sensor-0002")]
    assert archive[7] == ["deleted"] and archive[8] == "manifests/records/obs.yaml"
    assert by_action[("purge", "record:observatory/sensor-0002")][3] == "Carol Curator"
    before, after = db.execute("SELECT before, after FROM reconciler.audit_log WHERE action = 'update'").fetchone()
    assert before["description"] is None and after["description"] == "Minute readings"
    assert db.execute("SELECT after FROM reconciler.audit_log WHERE action = 'purge'").fetchone() == (None,)
    # Every run is recorded with its plan digest, and its entries carry the same run id and digest.
    runs = db.execute("SELECT r.run_id, r.outcome, count(a.seq), count(DISTINCT a.plan_digest) "
                      "FROM reconciler.runs r JOIN reconciler.audit_log a USING (run_id) "
                      "WHERE a.plan_digest = r.plan_digest GROUP BY 1, 2 ORDER BY min(a.seq)").fetchall()
    assert [(r[1], r[2], r[3]) for r in runs] == [("applied", 4, 1), ("applied", 2, 1), ("applied", 1, 1),
                                                  ("applied", 1, 1)]
    verified = run(db_url, "verify", "--git", str(git_repo))
    assert verified.exit_code == 0, verified.output
    head = log_rows(db, "hash")[-1][0]
    assert f"Audit log verified: 8 entries, head {head}" in verified.output
    assert "All 4 commit(s) are in" in verified.output


def test_no_op_apply_writes_no_entry(git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/storage.yaml", STORAGE)
    commit(git_repo, ALICE, "storage")
    apply_tree(git_repo, db_url)
    assert log_rows(db, "action") == [("create",)]
    apply_tree(git_repo, db_url)
    assert log_rows(db, "action") == [("create",)]


def test_secrets_never_reach_the_log(git_repo: Path, db_url: str, db: psycopg.Connection[Any],
                                     monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CH_PW", "hunter2")
    secret = STORAGE.replace("config: {cluster: obs}", "config: {cluster: obs, password: '${env:CH_PW}'}")
    write(git_repo, "manifests/storage.yaml", secret)
    commit(git_repo, ALICE, "storage with a password")
    apply_tree(git_repo, db_url)
    assert db.execute("SELECT config->>'password' FROM timestore.storage_targets").fetchone() == ("hunter2",)
    write(git_repo, "manifests/storage.yaml", secret.replace("cluster: obs", "cluster: obs2"))
    commit(git_repo, BOB, "another cluster")
    apply_tree(git_repo, db_url)
    rows = db.execute("SELECT before->'config', after->'config' FROM reconciler.audit_log ORDER BY seq").fetchall()
    assert rows == [(None, {"cluster": "obs", "password": "${env:CH_PW}"}),
                    ({"cluster": "obs", "password": "***"}, {"cluster": "obs2", "password": "${env:CH_PW}"})]
    leaked = db.execute("SELECT count(*) FROM reconciler.audit_log a WHERE a::text LIKE '%hunter2%'").fetchone()
    assert leaked == (0,)
    assert db.execute("SELECT count(*) FROM reconciler.runs r WHERE r::text LIKE '%hunter2%'").fetchone() == (0,)
    out = tmp_path / "audit.csv"
    assert run(db_url, "export", str(out)).exit_code == 0
    assert "hunter2" not in out.read_text() and "${env:CH_PW}" in out.read_text()
    assert "hunter2" not in run(db_url, "log", "--format", "json").output


# --- verify ----------------------------------------------------------------------------------------


def test_chain_verifies_after_applies_by_different_authors(db_url: str, db: psycopg.Connection[Any]) -> None:
    hashes = five_entries(db_url)
    assert len(hashes) == 5
    assert log_rows(db, "seq, author_email, action") == [
        (1, "alice@example.com", "create"), (2, "alice@example.com", "create"),
        (3, "bob@example.com", "update"), (4, "bob@example.com", "create"), (5, "alice@example.com", "archive")]
    chain = log_rows(db, "prev_hash, hash")
    assert chain[0][0] == "0" * 64 and all(chain[i][0] == chain[i - 1][1] for i in range(1, 5))
    result = run(db_url, "verify")
    assert result.exit_code == 0
    (runs_head,) = db.execute("SELECT hash FROM reconciler.runs ORDER BY seq DESC LIMIT 1").fetchone() or ("",)
    assert result.output == (f"Audit log verified: 5 entries, head {hashes[-1]}\n"
                             f"Runs verified: 3 runs, head {runs_head}; each holds exactly the entries it appended\n")


def test_the_log_is_append_only_for_the_careless(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    for statement in ("UPDATE reconciler.audit_log SET applier = 'x'", "DELETE FROM reconciler.audit_log",
                      "TRUNCATE reconciler.audit_log"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
            db.execute(statement)


def test_a_changed_entry_is_named(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    tamper(db, "UPDATE reconciler.audit_log SET after = jsonb_set(after, '{owner}', '\"mallory\"') WHERE seq = 3")
    result = run(db_url, "verify")
    assert result.exit_code == 1
    run_id = db.execute("SELECT run_id FROM reconciler.audit_log WHERE seq = 3").fetchone()
    assert result.output.strip() == (f"error: audit log verification failed: entry 3 (record:obs/r1, run "
                                      f"{run_id[0] if run_id else ''}): content changed")


def test_a_changed_author_on_the_last_entry_is_named(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    tamper(db, "UPDATE reconciler.audit_log SET author_email = 'mallory@example.com' WHERE seq = 5")
    result = run(db_url, "verify")
    assert result.exit_code == 1 and "entry 5 (record:obs/r2, run " in result.output
    assert "content changed" in result.output


def test_a_deleted_entry_is_named(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    tamper(db, "DELETE FROM reconciler.audit_log WHERE seq = 3")
    result = run(db_url, "verify")
    assert result.exit_code == 1
    assert "entry 3 missing (sequence jumps from 2 to 4)" in result.output
    tamper(db, "DELETE FROM reconciler.audit_log WHERE seq = 1")
    assert "entry 1 missing (the log starts at entry 2)" in run(db_url, "verify").output


def test_a_deleted_entry_with_the_rest_renumbered_is_named(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    tamper(db, "DELETE FROM reconciler.audit_log WHERE seq = 2")
    tamper(db, "UPDATE reconciler.audit_log SET seq = seq - 1 WHERE seq > 2")
    result = run(db_url, "verify")
    assert result.exit_code == 1
    assert "entry 2 (record:obs/r1, run " in result.output and "prev_hash mismatch" in result.output


def test_reordered_entries_are_named(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    tamper(db, "UPDATE reconciler.audit_log SET seq = 100 WHERE seq = 3")
    tamper(db, "UPDATE reconciler.audit_log SET seq = 3 WHERE seq = 4")
    tamper(db, "UPDATE reconciler.audit_log SET seq = 4 WHERE seq = 100")
    result = run(db_url, "verify")
    assert result.exit_code == 1
    assert "entry 3 (record:obs/r3, run " in result.output
    assert "out of order or its predecessor changed (prev_hash mismatch)" in result.output


def test_a_truncated_tail_is_detected_with_the_anchored_head(db_url: str, db: psycopg.Connection[Any]) -> None:
    hashes = five_entries(db_url)
    anchored = run(db_url, "verify", "--expect-head", hashes[-1])
    assert anchored.exit_code == 0 and "The expected head is the current head." in anchored.output
    older = run(db_url, "verify", "--expect-head", hashes[2].upper())
    assert older.exit_code == 0 and "The expected head is entry 3; 2 entries appended after it." in older.output
    tamper(db, "DELETE FROM reconciler.audit_log WHERE seq >= 4")
    inside = run(db_url, "verify")  # a cut inside a run: the runs chain still claims the entries
    assert inside.exit_code == 1 and "run 2 (run-" in inside.output
    assert "it appended 2 entries from entry 3, but the log holds 1 entries of it from entry 3" in inside.output
    # Cut along with the runs that wrote the entries, both chains are shorter chains still...
    db.execute("DELETE FROM reconciler.runs WHERE seq >= 2")
    tamper(db, "DELETE FROM reconciler.audit_log WHERE seq >= 3")
    assert run(db_url, "verify").exit_code == 0
    result = run(db_url, "verify", "--expect-head", hashes[-1])
    assert result.exit_code == 1  # ...but they no longer hold the head kept outside the database
    assert f"the expected head {hashes[-1]} is not in the log (it holds 2 entries, head {hashes[1]})" in result.output
    assert "truncated" in result.output
    assert run(db_url, "verify", "--expect-head", "abc").exit_code == 1


def test_verify_of_an_empty_log(db_url: str) -> None:
    result = run(db_url, "verify", "--expect-head", "0" * 64)
    assert result.exit_code == 0
    assert result.output.startswith(f"Audit log verified: 0 entries, head {'0' * 64}\n")


def test_git_check_names_an_entry_whose_commit_is_not_in_the_repository(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/README.md", "catalog\n")
    real = commit(git_repo, ALICE, "first")
    engine_apply(db_url, [rec("r1", 1)], Author("Alice", "alice@example.com", real))
    engine_apply(db_url, [rec("r1", 1), rec("r2", 5)], Author("Alice", "alice@example.com", None, True),
                 allow_uncommitted=True)
    assert run(db_url, "verify", "--git", str(git_repo)).exit_code == 0  # uncommitted entries have no commit
    # A commit on a branch that was never merged exists, but is not reachable from the default branch.
    run_git(git_repo, "checkout", "-q", "-b", "side")
    write(git_repo, "manifests/side.txt", "x\n")
    side = commit(git_repo, BOB, "side")
    run_git(git_repo, "checkout", "-q", "main")
    engine_apply(db_url, [rec("r1", 1), rec("r2", 5), rec("r3", 9)], Author("Bob", "bob@example.com", side))
    engine_apply(db_url, [rec("r1", 1), rec("r2", 5), rec("r3", 9), rec("r4", 13)],
                 Author("Mallory", "m@example.com", "f" * 40))
    result = run(db_url, "verify", "--git", str(git_repo))
    assert result.exit_code == 1
    assert f"entry 3 (record:obs/r3, run " in result.output
    assert f"commit {side} is not reachable from HEAD" in result.output
    run_git(git_repo, "merge", "-q", "--no-edit", "side", author=ALICE)
    result = run(db_url, "verify", "--git", str(git_repo))
    assert result.exit_code == 1
    assert "entry 4 (record:obs/r4, run " in result.output
    assert f"commit {'f' * 40} is not in the repository at" in result.output
    assert GitRepository(git_repo).is_ancestor(side, "HEAD")


# --- failed and refused runs -----------------------------------------------------------------------


def test_refused_and_failed_applies_leave_a_run_and_no_entry(db_url: str, db: psycopg.Connection[Any]) -> None:
    alice = Author("Alice", "alice@example.com", "a" * 40)
    engine_apply(db_url, [rec("r1", 1)], alice)
    with psycopg.connect(db_url, autocommit=True) as conn:
        state = read_state(conn)
    result = diff({"record:obs/r1": rec("r1", 1, tags=["t"])}, state.live, state.applied, source="default")
    plan = from_diff(result, source="default", commit="a" * 40, dirty=False, created_at="2026-11-21T00:00:00Z",
                     authors={"record:obs/r1": alice}, secrets={})
    db.execute("UPDATE metastore.metastore_records SET owner = 'someone', version = version + 1")
    ws = Workspace(Path("manifests"), None, "default", PostgresCatalog(db_url))
    with pytest.raises(ConflictError):
        apply_plan(ws, plan, ApplyOptions())
    with psycopg.connect(db_url) as holder:  # another apply of the source holds its lock
        holder.execute("SELECT 1 FROM reconciler.apply_locks WHERE name = 'source:default' FOR UPDATE")
        with pytest.raises(LockTimeout):
            apply_plan(ws, plan, ApplyOptions(lock_timeout=0))
    runs = db.execute("SELECT outcome, finished_at IS NOT NULL, commit_sha, plan_digest, counts, message "
                      "FROM reconciler.runs ORDER BY started_at").fetchall()
    assert [r[0] for r in runs] == ["applied", "refused", "failed"]
    assert runs[1][1:5] == (True, "a" * 40, plan.digest(), plan.summary)
    assert "changed since the plan" in runs[1][5] and "another apply of source 'default'" in runs[2][5]
    assert log_rows(db, "seq") == [(1,)]


def test_a_run_that_cannot_be_recorded_does_not_hide_the_error(db_url: str, db: psycopg.Connection[Any]) -> None:
    alice = Author("Alice", "alice@example.com", "a" * 40)
    engine_apply(db_url, [rec("r1", 1)], alice)
    with psycopg.connect(db_url, autocommit=True) as conn:
        state = read_state(conn)
    result = diff({"record:obs/r1": rec("r1", 1, tags=["t"])}, state.live, state.applied, source="default")
    plan = from_diff(result, source="default", commit=None, dirty=False, created_at="2026-11-21T00:00:00Z",
                     authors={"record:obs/r1": alice}, secrets={})
    db.execute("UPDATE metastore.metastore_records SET version = version + 1")
    db.execute("ALTER TABLE reconciler.runs ADD CONSTRAINT no_more_runs CHECK (outcome = 'applied')")
    said: list[str] = []
    with pytest.raises(ConflictError, match="changed since the plan"):
        apply_plan(Workspace(Path("manifests"), None, "default", PostgresCatalog(db_url)), plan, ApplyOptions(),
                   progress=said.append)
    assert any(m.startswith("could not record the refused run run-") and "no_more_runs" in m for m in said)


# --- concurrency and volume ------------------------------------------------------------------------


def test_applies_of_two_sources_side_by_side_keep_one_chain(db_url: str, db: psycopg.Connection[Any]) -> None:
    errors: list[BaseException] = []

    def apply_source(source: str) -> None:
        try:
            for step in range(3):
                objects = [rec(f"{source}-{i}", i, namespace=source, tags=[str(step)]) for i in range(20)]
                engine_apply(db_url, objects, Author(source, f"{source}@example.com", "c" * 40), source)
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=apply_source, args=(s,)) for s in ("north", "south")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert db.execute("SELECT count(*), min(seq), max(seq) FROM reconciler.audit_log").fetchone() == (120, 1, 120)
    assert audit.verify(db_url).entries == 120


def test_a_big_append_is_one_copy_and_verifies(db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    drafts = [audit.Draft("run-big", "default", f"record:bulk/k{i}", "record", "create", None,
                          {"owner": "team", "metadata": {"i": i, "x": i / 7}}, ("owner", "metadata"), "e" * 40,
                          "Bulk", "bulk@example.com", False, "manifests/bulk.yaml", i + 1, "ci", "f" * 64)
              for i in range(20_000)]
    with psycopg.connect(db_url) as conn, conn.transaction():
        audit.append(PostgresWriter(conn), drafts)
    assert audit.verify(db_url).entries == 20_000
    out = tmp_path / "big.parquet"
    assert audit.export(db_url, out, "parquet") == 20_000
    assert duckdb.sql(f"SELECT count(*), max(seq) FROM '{out}'").fetchall() == [(20_000, 20_000)]


# --- audit log -------------------------------------------------------------------------------------


def test_log_filters_by_address_author_and_time_newest_first(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)
    text = run(db_url, "log", "--address", "record:obs/r1")
    assert text.exit_code == 0
    blocks = text.output.strip().split("\n\n")
    assert [b.splitlines()[0].split()[:2] for b in blocks] == [["entry", "3"], ["entry", "1"]]
    assert "update record:obs/r1" in blocks[0]
    assert "author    Bob <bob@example.com>, bbbbbbbbbbbb" in blocks[0]
    assert "tags: [] → [\"x\"]" in blocks[0]
    assert "manifest  manifests/catalog.yaml:1" in blocks[0]
    as_json = json.loads(run(db_url, "log", "--author", "BOB@example.com", "--format", "json").output)
    assert [(e["seq"], e["address"], e["action"]) for e in as_json] == [
        (4, "record:obs/r3", "create"), (3, "record:obs/r1", "update")]
    assert as_json[1]["before"]["tags"] == [] and as_json[1]["after"]["tags"] == ["x"]
    assert as_json[1]["fields"] == ["tags"] and as_json[1]["commit_sha"] == "b" * 40
    assert set(as_json[0]) == set(audit_log.COLUMNS)
    assert json.loads(run(db_url, "log", "--since", "2999-01-01", "--format", "json").output) == []
    # The day the entries were recorded on (not the day now: the test may run across midnight).
    recorded = json.loads(run(db_url, "log", "--format", "json").output)
    day = min(e["recorded_at"] for e in recorded)[:10]
    assert len(json.loads(run(db_url, "log", "--since", day, "--format", "json").output)) == 5
    assert len(json.loads(run(db_url, "log", "--since", "2026-01-31T12:00:00+02:00", "--format", "json").output)) == 5
    limited = json.loads(run(db_url, "log", "--limit", "2", "--format", "json").output)
    assert [e["seq"] for e in limited] == [5, 4]
    assert run(db_url, "log", "--since", "yesterday").exit_code == 1
    assert run(db_url, "log", "--address", "dataset:none").output == "No audit log entries.\n"


def test_log_until_keeps_the_entries_recorded_before_it(db_url: str, db: psycopg.Connection[Any]) -> None:
    five_entries(db_url)

    def seqs(*args: str) -> list[int]:
        result = run(db_url, "log", *args, "--format", "json")
        assert result.exit_code == 0, result.output
        return [entry["seq"] for entry in json.loads(result.output)]

    assert seqs("--until", "2000-01-01") == []
    assert seqs("--until", "2999-01-01") == [5, 4, 3, 2, 1]
    assert seqs("--until", "2999-01-01T00:00:00+14:00") == [5, 4, 3, 2, 1]
    # The bound is exclusive, to the microsecond: the second apply's entries are left out.
    second = db.execute("SELECT recorded_at FROM reconciler.audit_log WHERE seq = 3").fetchone()
    third = db.execute("SELECT recorded_at FROM reconciler.audit_log WHERE seq = 5").fetchone()
    assert second is not None and third is not None
    assert seqs("--until", second[0].isoformat()) == [2, 1]
    assert seqs("--since", second[0].isoformat(), "--until", third[0].isoformat()) == [4, 3]
    assert seqs("--since", third[0].isoformat(), "--until", second[0].isoformat()) == []
    text = run(db_url, "log", "--until", "2000-01-01")
    assert (text.exit_code, text.output) == (0, "No audit log entries.\n")


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-01", "31/01/2026", ""])
def test_log_until_refuses_what_is_not_a_date(db_url: str, db: psycopg.Connection[Any], bad: str) -> None:
    five_entries(db_url)
    result = run(db_url, "log", "--until", bad)
    assert result.exit_code == 1
    assert f"--until {bad!r} is not an ISO date or time (e.g. 2026-01-31" in result.output
    assert "Traceback" not in result.output and "entry" not in result.output


# --- export ----------------------------------------------------------------------------------------


def test_parquet_export_has_typed_columns(db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    five_entries(db_url)
    out = tmp_path / "audit.parquet"
    result = run(db_url, "export", str(out))
    assert result.exit_code == 0 and result.output == f"Exported 5 entries to {out}\n"
    types = {name: kind for name, kind, *_ in duckdb.sql(f"DESCRIBE SELECT * FROM '{out}'").fetchall()}
    assert list(types) == list(audit_log.COLUMNS)
    assert types["seq"] == "BIGINT" and types["recorded_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["fields"] == "VARCHAR[]" and types["before"] == "JSON" and types["uncommitted"] == "BOOLEAN"
    assert types["manifest_line"] == "INTEGER"
    rows = duckdb.sql(f"""SELECT seq, action, fields, after->>'$.owner', strftime(recorded_at, '%Y'), hash
                          FROM '{out}' ORDER BY seq""").fetchall()
    assert len(rows) == 5 and rows[2][:4] == (3, "update", ["tags"], "team")
    assert rows[0][4] == str(datetime.now(UTC).year)
    assert [r[5] for r in rows] == [h for (h,) in log_rows(db, "hash")]
    # The monthly question of docs/auditing.md.
    per_author = duckdb.sql(f"""SELECT author_email, strftime(recorded_at, '%Y-%m') AS month, count(*)
                                FROM '{out}' GROUP BY ALL ORDER BY 1""").fetchall()
    assert [(r[0], r[2]) for r in per_author] == [("alice@example.com", 3), ("bob@example.com", 2)]
    # Every query docs/auditing.md shows runs on the export (and the runs export).
    runs = tmp_path / "runs.parquet"
    assert run(db_url, "export", str(tmp_path / "again.parquet"), "--runs", str(runs)).output.endswith(
        f"Exported 3 runs to {runs}\n")
    docs = (Path(__file__).resolve().parent.parent / "docs" / "auditing.md").read_text()
    queries = [block.split("```")[0] for block in docs.split("```sql\n")[1:]]
    assert len(queries) >= 7
    for query in queries:
        inner = query.strip().rstrip(";").replace("'audit.parquet'", f"'{out}'").replace("'runs.parquet'", f"'{runs}'")
        duckdb.sql(f"SELECT count(*) FROM ({inner})").fetchall()
    # As docs/auditing.md says: fetched into Python, the times are timezone-aware datetimes,
    # converted by DuckDB itself (this environment has no pytz).
    fetched = duckdb.sql(f"SELECT recorded_at FROM '{out}' ORDER BY seq").fetchall()
    assert all(isinstance(value, datetime) and value.utcoffset() is not None for (value,) in fetched)
    assert [value for (value,) in fetched] == [row[0] for row in log_rows(db, "recorded_at")]


def test_csv_export(db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    five_entries(db_url)
    out = tmp_path / "audit.csv"
    result = run(db_url, "export", str(out))
    assert result.exit_code == 0 and result.output == f"Exported 5 entries to {out}\n"
    header = out.read_text().splitlines()[0]
    assert header.split(",") == list(audit_log.COLUMNS)
    rows = duckdb.sql(f"SELECT seq, fields, author_email FROM read_csv('{out}') ORDER BY seq").fetchall()
    assert len(rows) == 5 and rows[2] == (3, '["tags"]', "bob@example.com")
    as_parquet = tmp_path / "named.csv"
    assert run(db_url, "export", str(as_parquet), "--format", "parquet").exit_code == 0
    assert duckdb.sql(f"SELECT count(*) FROM read_parquet('{as_parquet}')").fetchall() == [(5,)]


def test_export_of_an_empty_log(db_url: str, tmp_path: Path) -> None:
    out = tmp_path / "empty.parquet"
    assert run(db_url, "export", str(out)).output == f"Exported 0 entries to {out}\n"
    assert duckdb.sql(f"SELECT count(*) FROM '{out}'").fetchall() == [(0,)]
