"""Least privilege: plan works with the read-only role, apply with the apply role and no more."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from reconciler.services.publishing import NewPartition, publish_manifest
from reconciler.cli import cli
from tests.test_scenarios import ALICE, BOB, DATASETS, RECORDS, STORAGE, commit, invoke, write

ROLES_SQL = Path(__file__).resolve().parent.parent / "docs" / "sql" / "roles.sql"


def as_role(url: str, role: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["user"] = role
    params.pop("password", None)
    return conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture
def roles(db: psycopg.Connection[Any], db_url: str) -> tuple[str, str]:
    db.execute(ROLES_SQL.read_text().encode())
    return as_role(db_url, "reconciler_plan"), as_role(db_url, "reconciler_apply")


def test_plan_with_the_read_only_role_apply_with_the_apply_role(
        git_repo: Path, db: psycopg.Connection[Any], roles: tuple[str, str]) -> None:
    plan_url, apply_url = roles
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/observatory.yaml", RECORDS)
    commit(git_repo, ALICE, "catalog")

    planned = invoke(git_repo, plan_url, "plan")
    assert planned.exit_code == 0, planned.output
    assert "Plan: 6 to create" in planned.output

    refused = invoke(git_repo, plan_url, "apply", "--auto-approve")
    assert refused.exit_code == 1
    assert "permission denied" in refused.output and "Traceback" not in refused.output
    assert db.execute("SELECT count(*) FROM timestore.storage_targets").fetchone() == (0,)

    applied = invoke(git_repo, apply_url, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT count(*) FROM metastore.metastore_records").fetchone() == (3,)
    assert invoke(git_repo, plan_url, "plan", "--detailed-exitcode").exit_code == 0

    # Update, archive and purge (of a dataset with published manifests, which cascade).
    dataset_id = db.execute("SELECT id FROM timestore.datasets WHERE slug = 'observatory-events'").fetchone()
    assert dataset_id is not None
    publish_manifest(db, dataset_id=dataset_id[0], partitions=[NewPartition(
        partition_key={"day": "2026-11-20"}, storage_target_id="st-primary-clickhouse", file_path="p/1",
        start_time=datetime(2026, 11, 20, tzinfo=UTC), end_time=datetime(2026, 11, 20, 1, tzinfo=UTC))])
    write(git_repo, "manifests/datasets.yaml", DATASETS.replace("name: Observatory events\n",
                                                      "name: Observatory events\npurge: true\n"))
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("unit: kelvin", "unit: rankine")
          .split("  - key: sensor-0003")[0])
    commit(git_repo, BOB, "change, archive, purge")
    changed = invoke(git_repo, apply_url, "apply", "--auto-approve", "--allow-purge")
    assert changed.exit_code == 0, changed.output
    assert "1 updated, 1 archived, 0 restored, 1 purged" in changed.output
    assert db.execute("SELECT count(*) FROM timestore.dataset_manifests").fetchone() == (0,)

    verified = CliRunner().invoke(cli, ["audit", "verify", "--database-url", plan_url])
    assert verified.exit_code == 0, verified.output
    assert "Audit log verified: 9 entries" in verified.output


def test_the_apply_role_cannot_rewrite_history(db: psycopg.Connection[Any], roles: tuple[str, str]) -> None:
    _, apply_url = roles
    with psycopg.connect(apply_url, autocommit=True) as conn:
        for statement in ("UPDATE metastore.metastore_record_audits SET actor = 'x'",
                          "DELETE FROM timestore.dataset_access_audit",
                          "UPDATE reconciler.audit_log SET author_email = 'x'",
                          "DROP TABLE reconciler.audit_log"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(statement)


# --- the locks apply waits for: only the apply role can take them, and never past --lock-timeout ----

def catalog_in_step_one(git_repo: Path, apply_url: str) -> None:
    """The example catalog applied by the apply role, then a committed change for the next apply."""
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/observatory.yaml", RECORDS)
    commit(git_repo, ALICE, "catalog")
    assert invoke(git_repo, apply_url, "apply", "--auto-approve").exit_code == 0
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("unit: kelvin", "unit: rankine"))
    write(git_repo, "manifests/datasets.yaml", DATASETS.replace("name: Observatory events", "name: Observatory event log"))
    commit(git_repo, BOB, "rankine, event log")


def apply_in_a_process(git_repo: Path, url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``reconciler apply`` as its own process (a hung apply is killed, not waited for), and how long it took."""
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "apply", str(git_repo / "manifests"),
                           "--database-url", url, "--auto-approve", *args],
                          cwd=git_repo, capture_output=True, text=True, timeout=60)
    return done, time.monotonic() - started


def written(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
    """What an apply changes: the rows and audit rows it writes, and the runs it completes."""
    row = db.execute(
        """SELECT (SELECT array_agg(metadata->>'unit' ORDER BY record_key) FROM metastore.metastore_records),
                  (SELECT array_agg(name ORDER BY slug) FROM timestore.datasets),
                  (SELECT count(*) FROM metastore.metastore_record_audits),
                  (SELECT count(*) FROM timestore.dataset_access_audit),
                  (SELECT count(*) FROM reconciler.audit_log),
                  (SELECT count(*) FROM reconciler.runs WHERE outcome = 'applied')""").fetchone()
    assert row is not None
    return tuple(row)


# Every lock apply takes, in every mode a session might try to hold it in.
ROW_LOCKS = [f"SELECT 1 FROM {table} {where} {mode}"
             for table, where in [("reconciler.apply_locks", "WHERE name = 'source:default'"),
                                  ("reconciler.apply_locks", "WHERE name = 'audit-log'"),
                                  ("timestore.storage_targets", ""), ("timestore.datasets", ""),
                                  ("timestore.dataset_retention_policies", ""),
                                  ("metastore.metastore_records", ""), ("reconciler.managed_objects", ""),
                                  ("reconciler.applied_files", ""), ("reconciler.audit_log", ""),
                                  ("reconciler.runs", "")]
             for mode in ("FOR UPDATE", "FOR NO KEY UPDATE", "FOR SHARE", "FOR KEY SHARE")]
TABLE_LOCKS = [f"LOCK TABLE reconciler.apply_locks IN {mode} MODE"
               for mode in ("ACCESS SHARE", "ROW SHARE", "SHARE", "ACCESS EXCLUSIVE")] + [
    f"LOCK TABLE {table} IN {mode} MODE"
    for table in ("timestore.storage_targets", "timestore.datasets", "metastore.metastore_records",
                  "reconciler.managed_objects", "reconciler.audit_log")
    for mode in ("ROW SHARE", "ROW EXCLUSIVE", "SHARE", "EXCLUSIVE", "ACCESS EXCLUSIVE")]
# What any session may take: advisory locks (among them the keys apply used to lock with)
# and the read lock on each table the role may read.
ALLOWED = ["SELECT pg_advisory_lock(hashtext('reconciler:apply:default'))",
           "SELECT pg_advisory_lock(hashtext('reconciler:audit'))",
           *(f"LOCK TABLE {table} IN ACCESS SHARE MODE"
             for table in ("timestore.storage_targets", "timestore.datasets", "timestore.dataset_retention_policies",
                           "metastore.metastore_records", "reconciler.managed_objects", "reconciler.applied_files",
                           "reconciler.audit_log", "reconciler.runs"))]


def test_the_read_only_role_can_take_no_lock_apply_waits_for(
        git_repo: Path, db: psycopg.Connection[Any], roles: tuple[str, str]) -> None:
    plan_url, apply_url = roles
    catalog_in_step_one(git_repo, apply_url)
    with psycopg.connect(plan_url, application_name="read-only session") as session:
        for statement in ROW_LOCKS + TABLE_LOCKS:
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                session.execute(statement)
            session.rollback()
        for statement in ALLOWED:  # held, in one open transaction, while apply runs
            session.execute(statement)
        before = written(db)
        done, took = apply_in_a_process(git_repo, apply_url, "--lock-timeout", "2")
        assert done.returncode == 0, done.stderr
        assert "Apply complete: 0 created, 2 updated" in done.stdout
    assert took < 30, took
    after = written(db)
    assert after[:2] == (["celsius", "rankine", None], ["Observatory event log", "Observatory readings"])
    assert after[2:] == (before[2] + 1, before[3] + 1, before[4] + 2, before[5] + 1)


@pytest.mark.parametrize("lock", ["source:default", "audit-log"])
def test_a_session_holding_an_apply_lock_fails_the_apply_within_the_lock_timeout_naming_it(
        git_repo: Path, db: psycopg.Connection[Any], roles: tuple[str, str], lock: str) -> None:
    _, apply_url = roles
    catalog_in_step_one(git_repo, apply_url)
    before = written(db)
    with psycopg.connect(apply_url, application_name="rogue session") as holder:
        holder.execute("SELECT 1 FROM reconciler.apply_locks WHERE name = %s FOR UPDATE", (lock,))
        done, took = apply_in_a_process(git_repo, apply_url, "--lock-timeout", "2")
        assert written(db) == before
    assert done.returncode == 1
    assert 2 <= took < 30, took
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    held = r"held by rogue session as database user reconciler_apply(?: from [^,]+)?, since [0-9TZ:-]+"
    expected = (rf"error: another apply of source 'default' is running \({held}\); gave up after 2 s "
                r"\(--lock-timeout\)" if lock.startswith("source:") else
                rf"error: the audit log's append lock is held by another session \({held}\); gave up after 2 s "
                r"\(--lock-timeout\); nothing was applied")
    assert len(errors) == 1 and re.fullmatch(expected, errors[0]), done.stderr
    assert "Traceback" not in done.stderr
    assert db.execute("SELECT outcome, message FROM reconciler.runs ORDER BY started_at DESC LIMIT 1").fetchone() \
        == ("failed", errors[0].removeprefix("error: "))
    # Once the holder is gone, the same apply goes through.
    again, _ = apply_in_a_process(git_repo, apply_url, "--lock-timeout", "2")
    assert again.returncode == 0, again.stderr
    assert written(db)[:2] == (["celsius", "rankine", None], ["Observatory event log", "Observatory readings"])
