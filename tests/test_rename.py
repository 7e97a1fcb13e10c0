"""Renames on PostgreSQL through the command line: the same rows keep their id and everything
hanging off it, the timestore's audit row, the renderings, and the reconciler's own records."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from tests.helpers import ALICE, BOB, commit, invoke, plan_json, write

pytestmark = pytest.mark.integration

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: primary-clickhouse
type: clickhouse
config: {cluster: obs}
"""

DATASET = """\
apiVersion: reconciler/v1
kind: Dataset
slug: obs-readings
name: Observatory readings
storageTarget: primary-clickhouse
retention: {mode: time, rules: {maxAgeHours: 720}}
"""

RECORDS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: observatory
defaults: {owner: team-observatory}
records:
  - key: sensor-0001
    metadata: {datasetSlug: obs-readings}
"""


def rows(db: psycopg.Connection[Any], query: str, *params: Any) -> list[tuple[Any, ...]]:
    return db.execute(query, params).fetchall()


@pytest.fixture
def applied(git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> str:
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASET)
    write(git_repo, "manifests/records.yaml", RECORDS)
    commit(git_repo, ALICE, "readings")
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    (dataset_id,) = db.execute("SELECT id FROM timestore.datasets WHERE slug = 'obs-readings'").fetchone() or ()
    db.execute("INSERT INTO timestore.dataset_schema_versions (id, dataset_id, version, schema) "
               "VALUES ('dsv-1', %s, 1, '{}')", (dataset_id,))
    db.execute("INSERT INTO timestore.dataset_manifests (id, dataset_id, version, schema_version_id) "
               "VALUES ('dm-1', %s, 1, 'dsv-1')", (dataset_id,))
    db.execute("INSERT INTO timestore.dataset_partitions (id, dataset_id, manifest_id, partition_key, "
               "storage_target_id, file_format, file_path, start_time, end_time) "
               "VALUES ('dp-1', %s, 'dm-1', '{}', 'st-primary-clickhouse', 'clickhouse', 'a/1', now(), now())", (dataset_id,))
    return str(dataset_id)


def test_a_dataset_rename_keeps_its_id_and_everything_on_it(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], applied: str) -> None:
    write(git_repo, "manifests/datasets.yaml", DATASET.replace(
        "slug: obs-readings", "slug: observatory-readings\nrenamedFrom: obs-readings"))
    write(git_repo, "manifests/records.yaml", RECORDS.replace("datasetSlug: obs-readings",
                                                              "datasetSlug: observatory-readings"))
    sha = commit(git_repo, BOB, "a longer slug")
    plan = plan_json(git_repo, db_url)
    (change,) = [c for c in plan["changes"] if c["kind"] == "dataset"]
    assert (change["action"], change["address"], change["from"]) == (
        "rename", "dataset:observatory-readings", "dataset:obs-readings")
    assert change["author"]["commit"] == sha and change["author"]["email"] == BOB[1]
    assert plan["summary"]["rename"] == 1
    text = invoke(git_repo, db_url, "plan").output
    assert "» dataset:obs-readings → dataset:observatory-readings (rename)" in text
    assert 'slug: "obs-readings" → "observatory-readings"' in text
    assert "1 to rename" in text
    markdown = invoke(git_repo, db_url, "plan", "--format", "markdown").output
    assert "`dataset:obs-readings → dataset:observatory-readings` **rename**" in markdown
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "renamed dataset:obs-readings → dataset:observatory-readings" in result.output
    assert rows(db, "SELECT id, slug FROM timestore.datasets") == [(applied, "observatory-readings")]
    assert rows(db, "SELECT count(*) FROM timestore.dataset_partitions WHERE dataset_id = %s", applied) == [(1,)]
    assert rows(db, "SELECT count(*) FROM timestore.dataset_schema_versions WHERE dataset_id = %s", applied) == [(1,)]
    assert rows(db, "SELECT policy->'rules'->>'maxAgeHours' FROM timestore.dataset_retention_policies "
                    "WHERE dataset_id = %s", applied) == [("720",)]
    # The timestore's row: a PATCH of the same dataset, both snapshots, the slug named as changed.
    (audit,) = rows(db, "SELECT dataset_id, dataset_slug, actor_id, action, metadata FROM "
                        "timestore.dataset_access_audit ORDER BY created_at DESC LIMIT 1")
    assert audit[:4] == (applied, "observatory-readings", BOB[1], "admin.dataset.updated")
    assert audit[4]["fieldsChanged"] == ["slug"]
    assert (audit[4]["before"]["slug"], audit[4]["after"]["slug"]) == ("obs-readings", "observatory-readings")
    assert rows(db, "SELECT address FROM reconciler.managed_objects WHERE kind = 'dataset'") == [
        ("dataset:observatory-readings",)]
    log = CliRunner().invoke(cli, ["audit", "log", "--database-url", db_url, "--address",
                                   "dataset:observatory-readings", "--format", "json"], catch_exceptions=False)
    # The new name's history includes the old one's, up to the rename (newest first).
    assert [(e["address"], e["action"]) for e in json.loads(log.stdout)] == [
        ("dataset:observatory-readings", "rename"), ("dataset:obs-readings", "create")]
    old = CliRunner().invoke(cli, ["audit", "log", "--database-url", db_url, "--address", "dataset:obs-readings",
                                   "--format", "json"], catch_exceptions=False)
    assert [e["action"] for e in json.loads(old.stdout)] == ["create"]
    verify = CliRunner().invoke(cli, ["audit", "verify", "--database-url", db_url], catch_exceptions=False)
    assert verify.exit_code == 0, verify.output
    again = plan_json(git_repo, db_url)
    assert again["changes"] == [] and again["bookkeeping"] == []


def test_a_storage_target_rename_keeps_its_id_and_the_datasets_on_it(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], applied: str) -> None:
    write(git_repo, "manifests/storage.yaml", STORAGE.replace(
        "name: primary-clickhouse", "name: clickhouse-main\nrenamedFrom: primary-clickhouse"))
    write(git_repo, "manifests/datasets.yaml", DATASET.replace("storageTarget: primary-clickhouse",
                                                               "storageTarget: clickhouse-main"))
    commit(git_repo, BOB, "clickhouse-main")
    plan = plan_json(git_repo, db_url)
    assert [(c["action"], c["address"], c.get("from")) for c in plan["changes"]] == [
        ("rename", "storage-target:clickhouse-main", "storage-target:primary-clickhouse")]
    assert not [f for f in plan["findings"] if f["severity"] == "drift"]
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert rows(db, "SELECT id, name FROM timestore.storage_targets") == [("st-primary-clickhouse", "clickhouse-main")]
    assert rows(db, "SELECT default_storage_target_id FROM timestore.datasets") == [("st-primary-clickhouse",)]
    again = plan_json(git_repo, db_url)
    assert again["changes"] == [] and again["bookkeeping"] == [] and not again["findings"]


def test_a_pending_rename_reads_settled_files_and_a_kept_renamed_from_does_not(
        applied: str, git_repo: Path, db_url: str) -> None:
    """While a rename is still to apply, the plan reads the record files it could otherwise pass
    over (it must name every record that links the old slug); once applied, keeping
    ``renamedFrom`` in the manifest leaves those files passed over again."""
    write(git_repo, "manifests/datasets.yaml",
          DATASET.replace("slug: obs-readings", "slug: obs-data\nrenamedFrom: obs-readings"))
    commit(git_repo, BOB, "rename the readings dataset")
    plan = plan_json(git_repo, db_url, "--detailed-exitcode")
    notes = [f["message"] for f in plan["findings"] if f["severity"] == "note"]
    assert any("record:observatory/sensor-0001" in note for note in notes), notes  # from the settled file
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    write(git_repo, "manifests/records.yaml", RECORDS.replace("datasetSlug: obs-readings", "datasetSlug: obs-data"))
    commit(git_repo, BOB, "records follow the rename")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    again = invoke(git_repo, db_url, "plan", "--verbose", "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "1 of 3 manifest files are unchanged since the last apply" in again.stderr
