"""Least privilege: plan works with the read-only role, apply with the apply role and no more."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import conninfo

from reconciler.catalog.publishing import NewPartition, publish_manifest
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
    write(git_repo, "storage.yaml", STORAGE)
    write(git_repo, "datasets.yaml", DATASETS)
    write(git_repo, "records/observatory.yaml", RECORDS)
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
    write(git_repo, "datasets.yaml", DATASETS.replace("name: Observatory events\n",
                                                      "name: Observatory events\npurge: true\n"))
    write(git_repo, "records/observatory.yaml", RECORDS.replace("unit: kelvin", "unit: rankine")
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
