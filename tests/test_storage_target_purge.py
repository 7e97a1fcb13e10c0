"""Storage targets: `protect` and `purge` as for datasets, and no purge while a dataset uses one.

Through the CLI against a real PostgreSQL and git repository, except the race of a dataset
created between plan and apply, which drives the engine with a plan it made itself.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from reconciler.app import auditing as audit
from reconciler.services.publishing import NewPartition, publish_manifest
from reconciler.cli import cli
from reconciler.core.diff import Desired
from reconciler.app.applying import apply_plan
from reconciler.core.checks import ApplyOptions
from reconciler.errors import ConflictError
from tests.test_apply_core import ds, loc, make, st, ws
from tests.test_scenarios import ALICE, BOB, commit, invoke, write

PRIMARY = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: primary-clickhouse
type: clickhouse
config: {cluster: obs}
"""
ARCHIVE = """\
---
apiVersion: reconciler/v1
kind: StorageTarget
name: archive-s3
type: s3
description: Cold archive
config: {bucket: obs-archive, secretKey: "${env:ARCHIVE_SECRET}"}
"""
READINGS = """\
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-readings
name: Observatory readings
storageTarget: {target}
"""
SECRET = "archive-s3cret-value"


def purging(extra: str = "") -> str:
    """The archive target's manifest asking for its purge (without its config: the secret's
    reference is gone from the tree, the value still in the catalog)."""
    return ("---\napiVersion: reconciler/v1\nkind: StorageTarget\nname: archive-s3\ntype: s3\n"
            f"purge: true\n{extra}")


def rows(db: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return db.execute(query).fetchall()


@pytest.fixture
def two_targets(git_repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Both storage targets applied, the dataset on the primary one."""
    monkeypatch.setenv("ARCHIVE_SECRET", SECRET)
    write(git_repo, "manifests/storage.yaml", PRIMARY + ARCHIVE)
    write(git_repo, "manifests/datasets.yaml", READINGS.format(target="primary-clickhouse"))
    commit(git_repo, ALICE, "storage targets and a dataset")
    applied = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    return git_repo


def test_purge_needs_allow_purge_then_deletes_the_row_forgets_it_and_audits_it(
        two_targets: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(two_targets, "manifests/storage.yaml", PRIMARY + purging())
    commit(two_targets, BOB, "purge the archive target")
    planned = invoke(two_targets, db_url, "plan")
    assert planned.exit_code == 0, planned.output
    assert "Destructive changes (need --allow-purge):" in planned.stdout
    assert "  ! storage-target:archive-s3 (purge)" in planned.stdout
    assert "deleted permanently from the catalog; this cannot be undone" in planned.stdout
    as_json = json.loads(invoke(two_targets, db_url, "plan", "--format", "json").stdout)
    assert as_json["summary"]["purge"] == 1
    [change] = as_json["changes"]
    assert (change["address"], change["action"], change["author"]["email"]) == (
        "storage-target:archive-s3", "purge", "bob@example.com")
    # The secret the last apply wrote from ${env:...} stays hidden, though the manifest no longer names it.
    assert change["before"]["config"] == {"bucket": "obs-archive", "secretKey": "***"}

    refused = invoke(two_targets, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1
    assert "purge needs --allow-purge: storage-target:archive-s3" in refused.output
    assert rows(db, "SELECT name FROM timestore.storage_targets ORDER BY name") == [
        ("archive-s3",), ("primary-clickhouse",)]

    applied = invoke(two_targets, db_url, "apply", "--auto-approve", "--allow-purge")
    assert applied.exit_code == 0, applied.output
    assert "Apply complete: 0 created, 0 updated, 0 archived, 0 restored, 1 purged." in applied.output
    assert rows(db, "SELECT name FROM timestore.storage_targets") == [("primary-clickhouse",)]
    assert rows(db, "SELECT address FROM reconciler.managed_objects WHERE kind = 'storage-target'") == [
        ("storage-target:primary-clickhouse",)]
    assert rows(db, "SELECT action, author_email, before->'config', after->'config' FROM reconciler.audit_log "
                    "WHERE address = 'storage-target:archive-s3' ORDER BY seq") == [
        ("create", "alice@example.com", None, {"bucket": "obs-archive", "secretKey": "${env:ARCHIVE_SECRET}"}),
        ("purge", "bob@example.com", {"bucket": "obs-archive", "secretKey": "***"}, None)]
    assert SECRET not in json.dumps(rows(db, "SELECT t::text FROM reconciler.audit_log t"))
    assert audit.verify(db_url).entries == 4
    after = invoke(two_targets, db_url, "plan", "--detailed-exitcode")
    assert after.exit_code == 0, after.output
    assert "purge: true, but it does not exist in the catalog; nothing to do" in after.stdout


@pytest.mark.parametrize("user", ["declared", "catalog", "partitions"])
def test_a_storage_target_is_not_purged_while_a_dataset_uses_it(
        two_targets: Path, db_url: str, db: psycopg.Connection[Any], user: str) -> None:
    if user == "declared":  # the tree moves its dataset onto the target it purges
        write(two_targets, "manifests/datasets.yaml", READINGS.format(target="archive-s3"))
        used_by = "dataset:observatory-readings (its storageTarget)"
    elif user == "catalog":  # ingestion made a dataset of its own on it
        db.execute("INSERT INTO timestore.datasets (id, slug, name, default_storage_target_id) "
                   "VALUES ('ds-ingested', 'ingested-events', 'Ingested', 'st-archive-s3')")
        used_by = "dataset:ingested-events (its storageTarget)"
    else:  # the dataset keeps its default target, but some partitions live on the archive
        dataset = rows(db, "SELECT id FROM timestore.datasets WHERE slug = 'observatory-readings'")[0][0]
        publish_manifest(db, dataset_id=dataset, partitions=[NewPartition(
            partition_key={"day": "2026-11-20"}, storage_target_id="st-archive-s3", file_path="cold/1",
            start_time=datetime(2026, 11, 20, tzinfo=UTC), end_time=datetime(2026, 11, 20, 1, tzinfo=UTC))])
        used_by = "dataset:observatory-readings (partitions stored on it)"
    write(two_targets, "manifests/storage.yaml", PRIMARY + purging())
    commit(two_targets, BOB, "purge the archive target")
    error = (f"storage-target:archive-s3: cannot be purged while datasets use it: {used_by}; point them at "
             "another storage target, or purge them, first")
    planned = invoke(two_targets, db_url, "plan")
    assert planned.exit_code == 1
    assert f"  - {error} (manifests/storage.yaml:7)" in planned.stdout.splitlines(), planned.stdout
    assert "(purge)" not in planned.stdout
    before = rows(db, "SELECT count(*) FROM reconciler.audit_log")
    refused = invoke(two_targets, db_url, "apply", "--auto-approve", "--allow-purge")
    assert refused.exit_code == 1
    assert f"apply refused; nothing was written:\n  {error}" in refused.output
    assert rows(db, "SELECT name FROM timestore.storage_targets ORDER BY name") == [
        ("archive-s3",), ("primary-clickhouse",)]
    assert rows(db, "SELECT count(*) FROM reconciler.audit_log") == before
    assert rows(db, "SELECT count(*) FROM reconciler.managed_objects WHERE address = 'storage-target:archive-s3'") \
        == [(1,)]


def test_several_users_are_all_named(two_targets: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO timestore.datasets (id, slug, name, default_storage_target_id) VALUES "
               "('ds-a', 'zeta-events', 'Z', 'st-archive-s3'), ('ds-b', 'alpha-events', 'A', 'st-archive-s3')")
    write(two_targets, "manifests/datasets.yaml", READINGS.format(target="archive-s3"))
    write(two_targets, "manifests/storage.yaml", PRIMARY + purging())
    commit(two_targets, BOB, "purge the archive target")
    planned = invoke(two_targets, db_url, "plan", "--format", "json")
    assert planned.exit_code == 1
    errors = [f["message"] for f in json.loads(planned.stdout)["findings"] if f["severity"] == "error"]
    assert errors == ["cannot be purged while datasets use it: dataset:alpha-events, dataset:observatory-readings, "
                      "dataset:zeta-events (its storageTarget); point them at another storage target, or purge "
                      "them, first"]


def test_a_dataset_purged_in_the_same_apply_does_not_hold_its_storage_target(
        two_targets: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(two_targets, "manifests/datasets.yaml", READINGS.format(target="archive-s3"))
    commit(two_targets, ALICE, "readings move to the archive")
    assert invoke(two_targets, db_url, "apply", "--auto-approve").exit_code == 0
    write(two_targets, "manifests/datasets.yaml", READINGS.format(target="archive-s3") + "purge: true\n")
    write(two_targets, "manifests/storage.yaml", PRIMARY + purging())
    commit(two_targets, BOB, "retire the archive and its dataset")
    applied = invoke(two_targets, db_url, "apply", "--auto-approve", "--allow-purge")
    assert applied.exit_code == 0, applied.output
    assert "2 purged" in applied.output
    assert rows(db, "SELECT name FROM timestore.storage_targets") == [("primary-clickhouse",)]
    assert rows(db, "SELECT count(*) FROM timestore.datasets") == [(0,)]


def test_protect_blocks_the_purge_of_a_storage_target(
        two_targets: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(two_targets, "manifests/storage.yaml", PRIMARY + ARCHIVE + "protect: true\n")
    commit(two_targets, ALICE, "protect the archive")
    protected = invoke(two_targets, db_url, "apply", "--auto-approve")
    assert protected.exit_code == 0, protected.output
    assert rows(db, "SELECT protect FROM reconciler.managed_objects WHERE address = 'storage-target:archive-s3'") \
        == [(True,)]
    write(two_targets, "manifests/storage.yaml", PRIMARY + purging("protect: true\n"))
    commit(two_targets, BOB, "purge the protected archive")
    planned = invoke(two_targets, db_url, "plan")
    assert planned.exit_code == 1
    assert "storage-target:archive-s3: protect and purge are both true; set protect: false to purge it" \
        in planned.stdout
    refused = invoke(two_targets, db_url, "apply", "--auto-approve", "--allow-purge")
    assert refused.exit_code == 1
    assert "storage-target:archive-s3: protect and purge are both true" in refused.output
    assert rows(db, "SELECT count(*) FROM timestore.storage_targets WHERE name = 'archive-s3'") == [(1,)]


def test_protect_alone_changes_only_the_reconcilers_records(
        two_targets: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    stamp = "SELECT updated_at FROM timestore.storage_targets WHERE name = 'archive-s3'"
    before = rows(db, stamp)
    write(two_targets, "manifests/storage.yaml", PRIMARY + ARCHIVE + "protect: true\n")
    commit(two_targets, ALICE, "protect the archive")
    applied = invoke(two_targets, db_url, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert rows(db, stamp) == before
    assert rows(db, "SELECT protect FROM reconciler.managed_objects WHERE address = 'storage-target:archive-s3'") \
        == [(True,)]
    assert invoke(two_targets, db_url, "plan", "--detailed-exitcode").exit_code == 0


def test_removing_a_storage_targets_manifest_leaves_it_in_place(
        two_targets: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(two_targets, "manifests/storage.yaml", PRIMARY)
    commit(two_targets, BOB, "drop the archive's manifest")
    planned = invoke(two_targets, db_url, "plan", "--detailed-exitcode")
    assert planned.exit_code == 0, planned.output
    assert ("storage-target:archive-s3: no longer declared; storage targets have no archived state, so it is left "
            "in place (declare it with purge: true to delete it)") in planned.stdout
    assert invoke(two_targets, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT count(*) FROM timestore.storage_targets WHERE name = 'archive-s3'") == [(1,)]


def test_validate_checks_the_new_fields(tmp_path: Path) -> None:
    tree = tmp_path / "manifests"
    tree.mkdir()
    (tree / "storage.yaml").write_text(PRIMARY + "protect: yes\npurge: 1\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tree)])
    assert result.exit_code == 1
    assert result.stderr.splitlines()[:2] == [
        f"{tree / 'storage.yaml'}:6:10: protect: must be true or false, got 'yes'",
        f"{tree / 'storage.yaml'}:7:8: purge: must be true or false, got 1"]


def test_a_dataset_that_starts_using_it_after_the_plan_fails_the_whole_apply(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    apply_plan(ws(db_url), make(db_url, [st("ch"), st("cold")]), ApplyOptions())
    plan = make(db_url, [st("ch"), Desired("storage-target:cold", "storage-target", {"type": "clickhouse"}, loc(),
                                           purge=True)])
    assert [(c.address, c.action) for c in plan.changes] == [("storage-target:cold", "purge")]
    apply_plan(ws(db_url, "team-b"), make(db_url, [ds("late-events", storageTarget="cold")], "team-b"),
               ApplyOptions())
    with pytest.raises(ConflictError) as caught:
        apply_plan(ws(db_url), plan, ApplyOptions(allow_purge=True))
    assert str(caught.value) == ("cannot purge storage target(s) cold: datasets started using them since the plan: "
                                 "dataset:late-events (points at storage-target:cold); nothing was applied")
    assert rows(db, "SELECT name FROM timestore.storage_targets ORDER BY name") == [("ch",), ("cold",)]
    assert audit.verify(db_url).entries == 3
