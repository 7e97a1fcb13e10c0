"""Scenarios: step-by-step manifest trees in a real git repository, applied through the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import psycopg
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from tests.conftest import run_git
from tests.helpers import commit, invoke, write

ALICE = ("Alice Analyst", "alice@example.com")
BOB = ("Bob Builder", "bob@example.com")
CAROL = ("Carol Curator", "carol@example.com")
SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "plan.schema.json").read_text())

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: primary-clickhouse
type: clickhouse
description: ClickHouse cluster
config: {cluster: obs}
"""

DATASETS = """\
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-readings
name: Observatory readings
storageTarget: primary-clickhouse
metadata:
  iam: {readScopes: [timestore:read]}
retention: {mode: time, rules: {maxAgeHours: 720}}
---
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-events
name: Observatory events
storageTarget: primary-clickhouse
"""

RECORDS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: observatory
defaults: {owner: team-observatory, tags: [iot]}
records:
  - key: sensor-0001
    metadata: {datasetSlug: observatory-readings, unit: celsius}
  - key: sensor-0002
    metadata: {datasetSlug: observatory-readings, unit: kelvin}
  - key: sensor-0003
    tags: [iot, raw]
"""








def rows(db: psycopg.Connection[Any], query: str) -> list[tuple[Any, ...]]:
    return db.execute(query).fetchall()


@pytest.fixture
def step1(git_repo: Path, db_url: str) -> str:
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/observatory.yaml", RECORDS)
    return commit(git_repo, ALICE, "step 1")


def test_three_steps_by_three_authors(git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str) -> None:
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    assert "Apply complete: 6 created, 0 updated, 0 archived, 0 restored, 0 purged." in result.output
    assert rows(db, "SELECT slug, status FROM timestore.datasets ORDER BY slug") == [
        ("observatory-events", "active"), ("observatory-readings", "active")]
    assert rows(db, "SELECT DISTINCT actor_id FROM timestore.dataset_access_audit") == [("alice@example.com",)]
    assert rows(db, "SELECT record_key, owner, tags FROM metastore.metastore_records ORDER BY 1") == [
        ("sensor-0001", "team-observatory", ["iot"]), ("sensor-0002", "team-observatory", ["iot"]),
        ("sensor-0003", "team-observatory", ["iot", "raw"])]
    assert rows(db, "SELECT DISTINCT commit_sha FROM reconciler.managed_objects") == [(step1,)]

    # Step 2: Bob describes a dataset and removes a record.
    write(git_repo, "manifests/datasets.yaml", DATASETS.replace("name: Observatory events\n",
                                                      "name: Observatory events\ndescription: Raw events\n"))
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.split("  - key: sensor-0003")[0])
    bob_sha = commit(git_repo, BOB, "step 2")
    planned = invoke(git_repo, db_url, "plan", "--format", "json")
    assert planned.exit_code == 0, planned.output
    plan = json.loads(planned.stdout)
    jsonschema.validate(plan, SCHEMA)
    assert plan["summary"] == {"create": 0, "update": 1, "archive": 1, "restore": 0, "purge": 0}
    by_address = {c["address"]: c for c in plan["changes"]}
    assert by_address["dataset:observatory-events"]["author"]["email"] == "bob@example.com"
    assert by_address["dataset:observatory-events"]["fields"] == ["description"]
    assert by_address["record:observatory/sensor-0003"]["action"] == "archive"
    removal = by_address["record:observatory/sensor-0003"]
    assert {k: removal["author"][k] for k in ("name", "email", "commit", "uncommitted", "applier")} == {
        "name": "Bob Builder", "email": "bob@example.com", "commit": bob_sha, "uncommitted": False,
        "applier": False}
    assert removal["reason"] == "manifest"
    assert removal["removal"] == {"path": "manifests/records/observatory.yaml", "commit": bob_sha,
                                  "file_removed": False}
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT action, actor_id, metadata->'fieldsChanged' FROM timestore.dataset_access_audit "
                    "WHERE dataset_slug = 'observatory-events' ORDER BY created_at DESC LIMIT 1") == [
        ("admin.dataset.updated", "bob@example.com", ["description"])]
    assert rows(db, "SELECT action, actor, previous_version, version FROM metastore.metastore_record_audits "
                    "WHERE record_key = 'sensor-0003' ORDER BY id DESC LIMIT 1") == [("delete", "bob@example.com", 1, 2)]

    # Step 3: Carol purges a record (needs --allow-purge).
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace(
        "  - key: sensor-0002\n", "  - key: sensor-0002\n    purge: true\n").split("  - key: sensor-0003")[0])
    commit(git_repo, CAROL, "step 3")
    refused = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1
    assert "purge needs --allow-purge: record:observatory/sensor-0002" in refused.output
    assert rows(db, "SELECT count(*) FROM metastore.metastore_records") == [(3,)]
    assert invoke(git_repo, db_url, "apply", "--auto-approve", "--allow-purge").exit_code == 0
    # As the metastore purges: the key's audit rows go and none is written; the
    # reconciler's own audit log keeps the purge, by Carol, and the history before it.
    assert rows(db, "SELECT action, actor FROM metastore.metastore_record_audits WHERE record_key = 'sensor-0002' "
                    "ORDER BY id") == []
    assert rows(db, "SELECT action, author_email FROM reconciler.audit_log "
                    "WHERE address = 'record:observatory/sensor-0002' ORDER BY seq") == [
        ("create", "alice@example.com"), ("purge", "carol@example.com")]
    assert rows(db, "SELECT count(*) FROM metastore.metastore_records") == [(2,)]

    # And once more: nothing to do, no audit row, not even a bookkeeping refresh (these
    # commands run from outside the repository, so paths must be compared repo-relative).
    before = rows(db, "SELECT count(*) FROM metastore.metastore_record_audits")
    again = invoke(git_repo, db_url, "plan", "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    assert "No changes. The catalog matches the manifests." in again.output
    settled = json.loads(invoke(git_repo, db_url, "plan", "--format", "json").stdout)
    assert settled["changes"] == [] and settled["bookkeeping"] == []
    assert rows(db, "SELECT DISTINCT path FROM reconciler.managed_objects ORDER BY 1") == [
        ("manifests/datasets.yaml",), ("manifests/records/observatory.yaml",), ("manifests/storage.yaml",)]
    assert by_address["dataset:observatory-events"]["source"]["path"] == "manifests/datasets.yaml"
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT count(*) FROM metastore.metastore_record_audits") == before


def test_detailed_exitcode_and_target(git_repo: Path, db_url: str, step1: str) -> None:
    assert invoke(git_repo, db_url, "plan", "--detailed-exitcode").exit_code == 2
    narrowed = invoke(git_repo, db_url, "plan", "--format", "json", "--target", "dataset:observatory-events")
    # The dataset's storage target is new too: the target pulls it in, and the plan says why.
    data = json.loads(narrowed.stdout)
    assert [c["address"] for c in data["changes"]] == ["storage-target:primary-clickhouse",
                                                       "dataset:observatory-events"]
    assert any(f["address"] == "storage-target:primary-clickhouse" and "dataset:observatory-events needs it"
               in f["message"] for f in data["findings"])
    bad = invoke(git_repo, db_url, "plan", "--target", "observatory-events")
    assert bad.exit_code == 1 and "is not an address" in bad.output


def test_apply_without_terminal_or_auto_approve_refuses(git_repo: Path, db_url: str, db: psycopg.Connection[Any],
                                                         step1: str) -> None:
    result = invoke(git_repo, db_url, "apply")
    assert result.exit_code == 1
    assert "no terminal to confirm on and --auto-approve not given; nothing was written" in result.output
    assert rows(db, "SELECT count(*) FROM timestore.datasets") == [(0,)]


def test_uncommitted_changes_are_planned_but_not_applied_without_flag(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str) -> None:
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    write(git_repo, "manifests/datasets.yaml", DATASETS.replace("name: Observatory events", "name: Events (draft)"))
    planned = json.loads(invoke(git_repo, db_url, "plan", "--format", "json").stdout)
    assert planned["dirty"] is True
    assert planned["changes"][0]["author"]["uncommitted"] is True
    refused = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1
    assert "uncommitted changes (commit them, or pass --allow-uncommitted): dataset:observatory-events" in refused.output
    assert rows(db, "SELECT name FROM timestore.datasets WHERE slug = 'observatory-events'") == [("Observatory events",)]
    allowed = invoke(git_repo, db_url, "apply", "--auto-approve", "--allow-uncommitted")
    assert allowed.exit_code == 0, allowed.output
    assert rows(db, "SELECT name FROM timestore.datasets WHERE slug = 'observatory-events'") == [("Events (draft)",)]
    assert rows(db, "SELECT commit_sha FROM reconciler.managed_objects WHERE address = 'dataset:observatory-events'"
                ) == [(None,)]


def test_saved_plan_applies_exactly_and_a_stale_one_is_refused(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    assert invoke(git_repo, db_url, "plan", "--out", str(saved)).exit_code == 0
    applied = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert rows(db, "SELECT count(*) FROM metastore.metastore_records") == [(3,)]

    write(git_repo, "manifests/datasets.yaml", DATASETS.replace("name: Observatory events", "name: Events"))
    commit(git_repo, BOB, "rename")
    assert invoke(git_repo, db_url, "plan", "--out", str(saved)).exit_code == 0
    db.execute("UPDATE timestore.datasets SET name = 'Renamed by the service', updated_at = now() "
               "WHERE slug = 'observatory-events'")
    stale = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--auto-approve")
    assert stale.exit_code == 1
    assert "dataset:observatory-events changed since the plan" in stale.output
    assert "nothing was applied" in stale.output
    assert rows(db, "SELECT name FROM timestore.datasets WHERE slug = 'observatory-events'") == [
        ("Renamed by the service",)]


def test_a_tampered_saved_plan_is_refused(git_repo: Path, db_url: str, step1: str, tmp_path: Path) -> None:
    saved = tmp_path / "plan.json"
    invoke(git_repo, db_url, "plan", "--out", str(saved))
    data = json.loads(saved.read_text())
    data["changes"][0]["after"]["name"] = "Smuggled in"
    saved.write_text(json.dumps(data))
    result = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--auto-approve")
    assert result.exit_code == 1 and "its digest does not match its content" in result.output


def test_sources_from_reconciler_yaml(git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str,
                                      tmp_path: Path) -> None:
    (git_repo / "reconciler.yaml").write_text("source: team-observatory\n")
    commit(git_repo, ALICE, "name the source")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT DISTINCT source FROM reconciler.managed_objects") == [("team-observatory",)]
    # Another team's repository declaring one of these objects is refused, naming the source.
    other = tmp_path / "other"
    other.mkdir()
    run_git(other, "init", "-q", "-b", "main")
    (other / "reconciler.yaml").write_text("source: team-b\n")
    (other / "manifests").mkdir()
    (other / "manifests" / "s.yaml").write_text(STORAGE)
    commit(other, BOB, "team b")
    clash = invoke(other, db_url, "plan")
    assert clash.exit_code == 1
    assert "it is managed by source 'team-observatory'" in clash.output


def test_drift_shown_with_who_and_when_and_reverted(git_repo: Path, db_url: str, db: psycopg.Connection[Any],
                                                   step1: str) -> None:
    invoke(git_repo, db_url, "apply", "--auto-approve")
    db.execute("UPDATE metastore.metastore_records SET owner = 'someone-else', version = version + 1, "
               "updated_by = 'ops@example.com' WHERE record_key = 'sensor-0001'")
    planned = invoke(git_repo, db_url, "plan")
    assert "owner changed outside git by ops@example.com" in planned.output
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT owner FROM metastore.metastore_records WHERE record_key = 'sensor-0001'") == [
        ("team-observatory",)]


def test_invalid_tree_writes_nothing(git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str) -> None:
    write(git_repo, "manifests/broken.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: x\n")
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 1
    assert "broken.yaml:" in result.output and "Traceback" not in result.output
    assert rows(db, "SELECT count(*) FROM timestore.datasets") == [(0,)]


def test_a_create_beside_a_catalog_lookalike_is_noted_and_kept_separate(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str) -> None:
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner) "
               "VALUES ('observatory', 'SENSOR-0001', 'ingest')")
    planned = invoke(git_repo, db_url, "plan", "--format", "json")
    notes = [f for f in json.loads(planned.stdout)["findings"] if f["severity"] == "note"]
    assert notes == [{
        "address": "record:observatory/sensor-0001", "severity": "note",
        "message": "the catalog holds record:observatory/SENSOR-0001, which differs from it only by letter case "
                   "or Unicode normalisation; this plan creates a separate object",
        "source": {"path": "manifests/records/observatory.yaml", "line": 6, "end_line": 7}}]
    assert "Notes:" in invoke(git_repo, db_url, "plan").output
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT record_key, owner FROM metastore.metastore_records WHERE record_key ILIKE 'sensor-0001' "
                "ORDER BY record_key") == [("SENSOR-0001", "ingest"), ("sensor-0001", "team-observatory")]


SQL_TEXT = "x'); DROP TABLE metastore.metastore_records; --"


def test_sql_in_names_and_values_is_stored_verbatim(git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/hostile.yaml", f"""\
apiVersion: reconciler/v1
kind: Dataset
slug: robert.tables
name: "{SQL_TEXT}"
description: "'; DELETE FROM timestore.datasets WHERE ''='"
metadata: {{"{SQL_TEXT}": "$$; TRUNCATE reconciler.audit_log; $$", "%s": "%(x)s {{}}"}}
---
apiVersion: reconciler/v1
kind: Record
namespace: obs
key: "{SQL_TEXT}"
owner: "owner' OR '1'='1"
tags: ["a'b", "%s", "\\\\"]
metadata: {{datasetSlug: robert.tables, "k'); --": "E'\\\\x00'"}}
""")
    commit(git_repo, ALICE, "hostile values")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert rows(db, "SELECT name, description, metadata FROM timestore.datasets") == [
        (SQL_TEXT, "'; DELETE FROM timestore.datasets WHERE ''='",
         {SQL_TEXT: "$$; TRUNCATE reconciler.audit_log; $$", "%s": "%(x)s {}"})]
    assert rows(db, "SELECT record_key, owner, tags, metadata FROM metastore.metastore_records") == [
        (SQL_TEXT, "owner' OR '1'='1", ["a'b", "%s", "\\"], {"datasetSlug": "robert.tables", "k'); --": "E'\\x00'"})]
    assert rows(db, "SELECT count(*) FROM reconciler.audit_log") == [(2,)]
    assert invoke(git_repo, db_url, "plan", "--detailed-exitcode").exit_code == 0
    verified = CliRunner().invoke(cli, ["audit", "verify", "--database-url", db_url])
    assert verified.exit_code == 0 and "2 entries" in verified.output, verified.output


def _position_of(path: Path, text: str) -> tuple[int, int]:
    """Line and column (1-based) where ``text`` first appears in the file."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if text in line:
            return number, line.index(text) + 1
    raise AssertionError(f"{text!r} not in {path}")


def test_a_secret_is_resolved_only_to_write_it_masked_everywhere_and_a_rotation_is_a_change(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write(git_repo, "manifests/storage.yaml", STORAGE.replace("config: {cluster: obs}",
                                                    "config: {cluster: obs, password: '${env:CH_PW}'}"))
    commit(git_repo, ALICE, "storage with a password")
    monkeypatch.delenv("CH_PW", raising=False)
    missing = invoke(git_repo, db_url, "plan")
    assert missing.exit_code == 1 and "environment variable CH_PW is not set" in missing.output
    # At the value's own line and column, not the storage target's first line.
    line, column = _position_of(git_repo / "manifests" / "storage.yaml", "'${env:CH_PW}'")
    assert missing.stderr.splitlines()[0] == (
        f"{git_repo / 'manifests' / 'storage.yaml'}:{line}:{column}: storage-target:primary-clickhouse: "
        "config.password: environment variable CH_PW is not set")

    seen: list[str] = []

    def run(*args: str) -> Result:
        result = invoke(git_repo, db_url, *args)
        seen.extend([result.stdout, result.stderr])
        return result

    monkeypatch.setenv("CH_PW", "hunter2")
    saved = tmp_path / "plan.json"
    for output in ("text", "json", "markdown"):
        assert run("plan", "--format", output, "--out", str(saved)).exit_code == 0
        seen.append(saved.read_text())
    assert "${env:CH_PW}" in saved.read_text()
    assert run("apply", "--plan", str(saved), "--auto-approve").exit_code == 0
    assert rows(db, "SELECT config FROM timestore.storage_targets") == [({"cluster": "obs", "password": "hunter2"},)]

    monkeypatch.setenv("CH_PW", "rotated-2")  # the same tree, another value: a change to apply
    rotated = run("plan", "--detailed-exitcode")
    assert rotated.exit_code == 2 and 'config.password: "***" → "${env:CH_PW}"' in rotated.stdout
    assert run("apply", "--auto-approve", "--format", "json").exit_code == 0
    assert rows(db, "SELECT config->>'password' FROM timestore.storage_targets") == [("rotated-2",)]
    assert run("plan", "--detailed-exitcode").exit_code == 0

    monkeypatch.setenv("CH_PW", "third-value")  # a failing apply: its error and its run row
    db.execute("ALTER TABLE timestore.storage_targets ADD CONSTRAINT no_third CHECK (config->>'password' <> "
               "'third-value')")
    failed = run("apply", "--auto-approve")
    assert failed.exit_code == 1 and "apply failed and was rolled back" in failed.output
    for table in ("reconciler.audit_log", "reconciler.runs", "reconciler.managed_objects"):
        seen.extend(str(row) for row in rows(db, f"SELECT t::text FROM {table} t"))
    seen.extend([CliRunner().invoke(cli, ["audit", "log", "--database-url", db_url]).output,
                 CliRunner().invoke(cli, ["audit", "log", "--format", "json", "--database-url", db_url]).output])
    text = "\n".join(seen)
    assert "${env:CH_PW}" in text
    for value in ("hunter2", "rotated-2", "third-value"):
        assert value not in text


def test_the_database_password_never_appears_in_any_output(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], step1: str) -> None:
    url = f"{db_url} password=pw-s3cr3t-77"  # the test server trusts local connections: any password works
    outputs = [invoke(git_repo, url, *args) for args in (("plan",), ("plan", "--format", "markdown"),
                                                          ("plan", "--format", "json"), ("apply", "--auto-approve"))]
    db.execute("ALTER TABLE metastore.metastore_records ADD CONSTRAINT no_kelvin CHECK (metadata->>'unit' <> 'x')")
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("unit: kelvin", "unit: x"))
    commit(git_repo, BOB, "unit x")
    outputs.append(invoke(git_repo, url, "apply", "--auto-approve"))
    assert outputs[-1].exit_code == 1 and "apply failed and was rolled back" in outputs[-1].output
    for args in (["audit", "log"], ["audit", "verify"], ["migrate"], ["--debug", "audit", "verify"]):
        outputs.append(CliRunner().invoke(cli, [*args, "--database-url", url]))
    unreachable = "postgresql://u:pw-s3cr3t-77@127.0.0.1:9/nowhere?connect_timeout=2"
    outputs.append(CliRunner().invoke(cli, ["plan", str(git_repo / "manifests"), "--database-url", unreachable]))
    assert outputs[-1].exit_code == 1
    assert [o.exit_code for o in outputs[:4]] == [0, 0, 0, 0]
    for result in outputs:
        assert "pw-s3cr3t-77" not in result.output
