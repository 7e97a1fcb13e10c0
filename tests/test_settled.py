"""Plans pass over manifest files unchanged since the last apply, and only when the full
comparison would find nothing to do in them: every case gives the plan a full read gives."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from tests.conftest import run_git
from tests.helpers import commit, invoke, write

ALICE = ("Alice Analyst", "alice@example.com")
OPS = "ops@example.com"

DATASETS = """\
apiVersion: reconciler/v1
kind: Dataset
slug: readings
name: Readings
"""

SENSORS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: obs
defaults: {owner: team-obs, tags: [iot]}
records:
  - key: sensor-1
    metadata: {datasetSlug: readings, unit: celsius}
  - key: sensor-2
    metadata: {unit: kelvin}
"""

PUMPS = """\
apiVersion: reconciler/v1
kind: Record
namespace: plant
key: pump-1
owner: team-plant
metadata: {datasetSlug: readings}
"""

REUSED = "manifest files are unchanged since the last apply"








def plan_json(repo: Path, db_url: str) -> tuple[dict[str, Any], str]:
    """The plan as JSON (without its creation time and the digest covering it) and what went to stderr."""
    result = invoke(repo, db_url, "plan", "--format", "json", "--verbose")  # --verbose: names the files passed over
    assert result.exit_code in (0, 1), result.output
    data = json.loads(result.stdout)
    data.pop("created_at"), data.pop("digest")
    return data, result.stderr


def fast_and_full(repo: Path, db_url: str, db: psycopg.Connection[Any]) -> tuple[dict[str, Any], str]:
    """The plan as it is, then as a full read gives it (the record of files forgotten): both must agree."""
    fast, stderr = plan_json(repo, db_url)
    with db.transaction():
        saved = db.execute("SELECT * FROM reconciler.applied_files").fetchall()
        db.execute("DELETE FROM reconciler.applied_files")
    full, full_stderr = plan_json(repo, db_url)
    assert REUSED not in full_stderr
    with db.transaction():
        for row in saved:
            db.execute("INSERT INTO reconciler.applied_files VALUES (%s, %s, %s, %s, %s, %s, %s)", row)
    assert fast == full
    return fast, stderr


@pytest.fixture
def applied(git_repo: Path, db_url: str) -> Path:
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/sensors.yaml", SENSORS)
    write(git_repo, "manifests/records/pumps.yaml", PUMPS)
    commit(git_repo, ALICE, "catalog")
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    return git_repo


def changes(plan: dict[str, Any]) -> list[tuple[str, str]]:
    return [(c["address"], c["action"]) for c in plan["changes"]]


def test_a_rerun_passes_over_the_unchanged_record_files_and_plans_nothing(
        applied: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    assert db.execute("SELECT path, objects FROM reconciler.applied_files ORDER BY path").fetchall() == [
        ("manifests/datasets.yaml", 1), ("manifests/records/pumps.yaml", 1), ("manifests/records/sensors.yaml", 2)]
    plan, stderr = fast_and_full(applied, db_url, db)
    assert "2 of 3 " + REUSED in stderr  # the datasets file is always read
    assert changes(plan) == [] and plan["bookkeeping"] == [] and plan["findings"] == []
    result = invoke(applied, db_url, "plan", "--detailed-exitcode")
    assert result.exit_code == 0 and "No changes" in result.stdout


def test_keys_the_services_add_leave_a_file_settled(applied: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("UPDATE metastore.metastore_records SET metadata = metadata || '{\"lastSeen\": \"today\"}', "
               "version = version + 1 WHERE record_key = 'sensor-2'")
    plan, stderr = fast_and_full(applied, db_url, db)
    assert "2 of 3 " + REUSED in stderr and changes(plan) == []


@pytest.mark.parametrize(("edit", "expected"), [
    (("UPDATE metastore.metastore_records SET owner = 'someone', version = version + 1, updated_by = 'ops@example.com' "
      "WHERE record_key = 'sensor-1'"), ("record:obs/sensor-1", "update")),
    (("UPDATE metastore.metastore_records SET metadata = metadata || '{\"unit\": \"fahrenheit\"}' "
      "WHERE record_key = 'sensor-2'"), ("record:obs/sensor-2", "update")),
    ("UPDATE metastore.metastore_records SET tags = '{iot,extra}' WHERE record_key = 'sensor-2'",
     ("record:obs/sensor-2", "update")),
    ("UPDATE metastore.metastore_records SET deleted_at = now(), version = version + 1 WHERE record_key = 'sensor-1'",
     ("record:obs/sensor-1", "restore")),
    ("DELETE FROM metastore.metastore_records WHERE record_key = 'sensor-2'", ("record:obs/sensor-2", "create")),
], ids=["owner", "metadata-value", "tags", "soft-deleted", "hard-deleted"])
def test_any_out_of_band_edit_makes_its_file_read_again(
        applied: Path, db_url: str, db: psycopg.Connection[Any], edit: str, expected: tuple[str, str]) -> None:
    db.execute(edit)
    plan, stderr = fast_and_full(applied, db_url, db)
    assert "1 of 3 " + REUSED in stderr  # pumps.yaml only
    assert changes(plan) == [expected]
    assert invoke(applied, db_url, "apply", "--auto-approve").exit_code == 0
    again, stderr = plan_json(applied, db_url)
    assert "2 of 3 " + REUSED in stderr and changes(again) == []


def test_a_link_to_a_dataset_gone_from_tree_and_catalog_is_still_reported(
        applied: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(applied, "manifests/datasets.yaml", "")
    commit(applied, ALICE, "drop the dataset")
    db.execute("DELETE FROM timestore.dataset_retention_policies")
    db.execute("DELETE FROM reconciler.managed_objects WHERE kind = 'dataset'")
    db.execute("DELETE FROM timestore.datasets")
    plan, stderr = fast_and_full(applied, db_url, db)
    assert REUSED not in stderr
    assert sorted(f["address"] for f in plan["findings"] if f["severity"] == "error") == [
        "record:obs/sensor-1", "record:plant/pump-1"]


def test_a_new_file_repeating_a_settled_address_names_both_places(
        applied: Path, db_url: str) -> None:
    write(applied, "manifests/records/more.yaml", PUMPS)
    write(applied, "manifests/records/lookalike.yaml", SENSORS.replace("sensor-2", "SENSOR-2").replace("sensor-1", "sensor-9"))
    commit(applied, ALICE, "repeat")
    result = invoke(applied, db_url, "plan")
    assert result.exit_code == 1
    records = applied / "manifests" / "records"
    assert result.output.splitlines() == [
        f"{records}/pumps.yaml:1:1: record:plant/pump-1 is declared twice; first at {records}/more.yaml:1",
        (f"{records}/sensors.yaml:8:5: record:obs/sensor-2 differs from record:obs/SENSOR-2 (at "
         f"{records}/lookalike.yaml:8) only by letter case or Unicode normalisation; the catalog would keep them "
         "as two objects, so rename one"),
        "error: 2 problems in the manifest tree"]


def test_after_an_apply_of_a_saved_or_narrowed_plan_no_file_is_passed_over(
        applied: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    # A saved plan changes a record; reverting the file makes its bytes those the
    # record of files names, but the catalog holds the saved plan's value.
    write(applied, "manifests/records/pumps.yaml", PUMPS.replace("team-plant", "team-maintenance"))
    commit(applied, ALICE, "hand pump-1 over")
    saved = tmp_path / "plan.json"
    assert invoke(applied, db_url, "plan", "--out", str(saved)).exit_code == 0
    assert invoke(applied, db_url, "apply", "--plan", str(saved), "--auto-approve").exit_code == 0
    run_git(applied, "revert", "--no-edit", "HEAD", author=ALICE)
    plan, stderr = fast_and_full(applied, db_url, db)
    assert REUSED not in stderr
    assert changes(plan) == [("record:plant/pump-1", "update")]
    # The same after an apply narrowed by --target.
    result = invoke(applied, db_url, "apply", "--auto-approve", "--target", "record:plant/pump-1")
    assert result.exit_code == 0
    plan, stderr = plan_json(applied, db_url)
    assert REUSED not in stderr and changes(plan) == []
    # A whole apply records the files again.
    db.execute("UPDATE metastore.metastore_records SET owner = 'x', version = version + 1 WHERE record_key = 'sensor-1'")
    assert invoke(applied, db_url, "apply", "--auto-approve").exit_code == 0
    plan, stderr = plan_json(applied, db_url)
    assert "2 of 3 " + REUSED in stderr and changes(plan) == []


def test_an_edited_file_is_read_again(applied: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(applied, "manifests/records/sensors.yaml", SENSORS.replace("kelvin", "rankine"))
    commit(applied, ALICE, "rankine")
    plan, stderr = fast_and_full(applied, db_url, db)
    assert "1 of 3 " + REUSED in stderr
    assert changes(plan) == [("record:obs/sensor-2", "update")]


def test_a_new_file_with_a_unicode_lookalike_of_a_settled_address_is_refused(
        applied: Path, db_url: str) -> None:
    write(applied, "manifests/records/cafe.yaml", PUMPS.replace("pump-1", "CAF\u00c9"))
    commit(applied, ALICE, "café")
    assert invoke(applied, db_url, "apply", "--auto-approve").exit_code == 0
    assert "3 of 4 " + REUSED in invoke(applied, db_url, "plan", "--verbose").stderr
    write(applied, "manifests/records/zzz.yaml", PUMPS.replace("pump-1", "Cafe\u0301"))
    commit(applied, ALICE, "Café, decomposed")
    result = invoke(applied, db_url, "plan")
    assert result.exit_code == 1
    records = applied / "manifests" / "records"
    assert result.output.splitlines()[0] == (
        f"{records}/zzz.yaml:1:1: record:plant/Cafe\u0301 differs from record:plant/CAF\u00c9 (at {records}/cafe.yaml:1) "
        "only by letter case or Unicode normalisation; the catalog would keep them as two objects, so rename one")


def test_a_file_over_the_size_limit_is_refused_without_being_read(applied: Path, db_url: str) -> None:
    huge = applied / "manifests" / "records" / "huge.yaml"
    with huge.open("wb") as stream:
        stream.truncate(2 * 1024**3)  # 2 GiB, sparse: reading it all would take seconds and memory
    started = time.process_time()
    result = invoke(applied, db_url, "plan")
    assert time.process_time() - started < 1.5
    assert result.exit_code == 1
    assert f"{huge}:1:1: file is 2,147,483,648 bytes; the limit is 64 MiB" in result.output
