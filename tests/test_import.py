"""reconciler import: catalog objects made by the services → manifests that adopt them unchanged.

The catalog tests create objects the way ingestion does (plain INSERTs), import
them through the CLI into a real git repository, and check the plan and apply
that follow; the pure tests drive the importer with plain values.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from reconciler.core.diff import Applied, Live
from reconciler.app.importer import file_name, looks_secret, plan_import
from reconciler.manifests import load_tree
from reconciler.manifests.emit import dump_documents
from tests.helpers import TEST_AUTHOR, commit, invoke, plan_json

SECRET_VARIABLE = "RECONCILER_WARM_S3_SECRETACCESSKEY"

INGESTED = [
    """INSERT INTO timestore.storage_targets (id, name, kind, description, config, updated_at) VALUES
       ('st-warm', 'warm-s3', 's3', 'Warm tier',
        '{"region": "eu-west-1", "bucket": "obs-warm", "secretAccessKey": "hunter2"}', now() - interval '2 days'),
       ('st-default-clickhouse', 'default-clickhouse', 'clickhouse', NULL, '{}', now() - interval '2 days')""",
    """INSERT INTO timestore.datasets (id, slug, name, description, status, default_storage_target_id, metadata,
                                      updated_at) VALUES
       ('ds-1', 'observatory-readings', 'Observatory readings', NULL, 'active', 'st-warm',
        '{"unit": "°C", "tableName": "obs_readings", "timestampColumn": "ts", "createdBy": "ingest",
          "iam": {"readScopes": ["timestore:read"]}}', now() - interval '1 day'),
       ('ds-2', 'observatory-archive', 'Archive', 'Old readings: 2019–2021', 'inactive', 'st-default-clickhouse',
        '{"tableName": "obs_archive"}', now() - interval '1 day'),
       ('ds-3', 'raw.events_v2', 'Raw events', NULL, 'active', NULL, '{}', now() - interval '1 day')""",
    """INSERT INTO timestore.dataset_retention_policies (dataset_id, policy, updated_at) VALUES
       ('ds-1', '{"mode": "hybrid", "rules": {"maxAgeHours": 720, "maxTotalBytes": 1000000000000},
                  "deleteGraceMinutes": 0, "tier": "cold"}', now() - interval '1 day')""",
    """INSERT INTO metastore.metastore_records (namespace, record_key, owner, tags, schema_hash, metadata, version,
                                               deleted_at, created_by, updated_by) VALUES
       ('observatory', 'sensor-0001', 'team-observatory', '{iot,raw}', 'sha256-abc123',
        '{"datasetSlug": "observatory-readings", "note": "température",
          "location": {"site": "Mauna Kea 🌋", "coords": [19.82, -155.47], "elevation": 4207.0},
          "flags": {"yes": "no", "off": null, "n": "1e3", "octal": "0o17", "empty": ""}}', 3, NULL, 'ingest', 'ingest'),
       ('observatory', 'sensor-0002', 'team-observatory', '{iot}', NULL, '{"unit": "kelvin"}', 2, now(),
        'ingest', 'ingest'),
       ('observatory', 'sensor-0003', NULL, '{}', NULL, '{}', 1, NULL, NULL, NULL),
       ('team:ops', 'jobs/nightly', 'ops', '{cron}', NULL, '{"schedule": "0 3 * * *"}', 1, NULL, 'ops', 'ops')""",
]
INGESTED_ADDRESSES = [
    "dataset:observatory-archive", "dataset:observatory-readings", "dataset:raw.events_v2",
    "record:observatory/sensor-0001", "record:observatory/sensor-0002", "record:observatory/sensor-0003",
    "record:team:ops/jobs/nightly", "storage-target:default-clickhouse", "storage-target:warm-s3",
]
SNAPSHOT = {
    "storage_targets": "SELECT * FROM timestore.storage_targets ORDER BY id",
    "datasets": "SELECT * FROM timestore.datasets ORDER BY id",
    "retention": "SELECT * FROM timestore.dataset_retention_policies ORDER BY dataset_id",
    "records": "SELECT * FROM metastore.metastore_records ORDER BY id",
    "record_audits": "SELECT * FROM metastore.metastore_record_audits ORDER BY id",
    "dataset_audits": "SELECT * FROM timestore.dataset_access_audit ORDER BY id",
    "lifecycle": "SELECT * FROM timestore.lifecycle_audit_log ORDER BY id",
}
def _today() -> str:
    return datetime.now(UTC).date().isoformat()


def _dated(text: str, before: str, after: str) -> str:
    """``text`` with an import header dated ``after`` dated ``before`` instead: the import ran
    between the two moments, so its header may carry either day when it ran across midnight."""
    return text.replace(f" on {after}; review", f" on {before}; review")






def snapshot(db: psycopg.Connection[Any]) -> dict[str, list[tuple[Any, ...]]]:
    return {name: db.execute(query).fetchall() for name, query in SNAPSHOT.items()}


def files_under(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}




@pytest.fixture
def ingested(db: psycopg.Connection[Any]) -> None:
    for statement in INGESTED:
        db.execute(statement)


@pytest.fixture
def secret_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_VARIABLE, "hunter2")


# --- the adopt flow, end to end ---------------------------------------------------------------


def test_import_commit_plan_apply_adopts_everything_and_changes_no_row(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None, secret_set: None) -> None:
    before = snapshot(db)
    day = _today()
    imported = invoke(git_repo, db_url, "import")
    day_after = _today()
    assert imported.exit_code == 0, imported.output
    out = git_repo / "manifests" / "imported"
    assert sorted(files_under(out)) == [
        "datasets/observatory-archive.yaml", "datasets/observatory-readings.yaml", "datasets/raw.events_v2.yaml",
        "records/observatory.yaml", "records/team_ops.yaml", "storage-targets.yaml"]
    assert imported.stdout.splitlines() == [f"wrote {out / name}" for name in sorted(files_under(out))] + [
        f"Imported 2 storage targets, 3 datasets, 4 records into {out} (6 files)."]
    assert f"set {SECRET_VARIABLE} to its value" in imported.stderr
    assert _dated((out / "datasets" / "observatory-readings.yaml").read_text(encoding="utf-8"), day, day_after) == f"""\
# Imported by reconciler import from {_described(db_url)} on {day}; review before committing.
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-readings
name: Observatory readings
storageTarget: warm-s3
metadata:
  iam:
    readScopes:
      - "timestore:read"
  unit: "°C"
retention:
  deleteGraceMinutes: 0
  mode: hybrid
  rules:
    maxAgeHours: 720
    maxTotalBytes: 1000000000000
  tier: cold
"""
    storage = (out / "storage-targets.yaml").read_text(encoding="utf-8")
    assert "hunter2" not in storage and f"secretAccessKey: \"${{env:{SECRET_VARIABLE}}}\"" in storage
    archive = (out / "datasets" / "observatory-archive.yaml").read_text(encoding="utf-8")
    assert "status: inactive" in archive and "metadata" not in archive  # only a service key: left out
    records = (out / "records" / "observatory.yaml").read_text(encoding="utf-8")
    assert records.index("key: sensor-0001") < records.index("key: sensor-0002") < records.index("key: sensor-0003")
    assert "deleted: true" in records and "defaults" not in records

    commit(git_repo, TEST_AUTHOR, "import the ingested catalog")
    plan = plan_json(git_repo, db_url)
    assert plan["summary"] == {"create": 0, "update": 0, "archive": 0, "restore": 0, "purge": 0}
    assert plan["changes"] == [] and plan["unmanaged"] == []
    assert [f for f in plan["findings"] if f["severity"] == "error"] == []
    assert sorted(b["address"] for b in plan["bookkeeping"] if b["reason"] == "adopt") == INGESTED_ADDRESSES

    applied = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT address, source FROM reconciler.managed_objects ORDER BY address").fetchall() == [
        (address, "default") for address in INGESTED_ADDRESSES]
    assert snapshot(db) == before  # adoption changes no catalog row, not even updated_at or version
    again = invoke(git_repo, db_url, "plan", "--detailed-exitcode")
    assert again.exit_code == 0, again.output
    nothing = invoke(git_repo, db_url, "import")
    assert nothing.exit_code == 0 and nothing.stdout == "Nothing to import: every catalog object is managed.\n"

    # Now managed: removing a record's entry from the imported file archives it.
    (out / "records" / "observatory.yaml").write_text(_without_item(records, "sensor-0001"), encoding="utf-8")
    commit(git_repo, TEST_AUTHOR, "drop sensor-0001")
    plan = plan_json(git_repo, db_url)
    assert [(c["address"], c["action"]) for c in plan["changes"]] == [("record:observatory/sensor-0001", "archive")]


def _described(db_url: str) -> str:
    from reconciler.catalog.postgres.connection import describe

    return describe(db_url)


def _without_item(text: str, key: str) -> str:
    """The RecordSet text without the item whose key is ``key`` (its lines up to the next item)."""
    lines = text.splitlines(keepends=True)
    start = lines.index(f"  - key: {key}\n")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("  - ")), len(lines))
    return "".join(lines[:start] + lines[end:])


def test_reimport_of_the_same_catalog_is_byte_identical_and_never_overwrites_without_force(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None, tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    assert invoke(git_repo, db_url, "import", "--out", str(first)).exit_code == 0
    assert invoke(git_repo, db_url, "import", "--out", str(second)).exit_code == 0
    written = files_under(first)
    assert len(written) == 6 and files_under(second) == written

    (first / "storage-targets.yaml").write_text("# edited by hand\n", encoding="utf-8")
    refused = invoke(git_repo, db_url, "import", "--out", str(first))
    assert refused.exit_code == 1
    assert "refusing to overwrite existing files (pass --force to overwrite them)" in refused.output
    assert str(first / "storage-targets.yaml") in refused.output
    assert (first / "storage-targets.yaml").read_text(encoding="utf-8") == "# edited by hand\n"
    forced = invoke(git_repo, db_url, "import", "--out", str(first), "--force")
    assert forced.exit_code == 0, forced.output
    assert files_under(first) == written


def _imported_and_applied(git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> Path:
    """Everything imported, committed and applied; then ingestion goes on: a new record in an
    imported namespace, and a new dataset. Returns the import directory."""
    assert invoke(git_repo, db_url, "import").exit_code == 0
    commit(git_repo, TEST_AUTHOR, "import")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner) "
               "VALUES ('observatory', 'sensor-0004', 'team-observatory')")
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-4', 'late-arrival', 'Late')")
    return git_repo / "manifests" / "imported"


def _adopts_exactly(git_repo: Path, db_url: str, addresses: list[str], *, left: tuple[str, ...] = ()) -> None:
    """The tree validates; committed, its plan adopts exactly ``addresses`` with no change, and
    once applied only ``left`` remain to import."""
    assert CliRunner().invoke(cli, ["validate", str(git_repo / "manifests")]).exit_code == 0
    commit(git_repo, TEST_AUTHOR, "import the late arrivals")
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and [f for f in plan["findings"] if f["severity"] == "error"] == []
    assert sorted(b["address"] for b in plan["bookkeeping"] if b["reason"] == "adopt") == addresses
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    assert tuple(plan_json(git_repo, db_url)["unmanaged"]) == left


@pytest.mark.parametrize("force", [(), ("--force",)])
def test_importing_into_the_tree_again_appends_to_the_namespace_file_and_never_overwrites_it(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None, secret_set: None,
        force: tuple[str, ...]) -> None:
    out = _imported_and_applied(git_repo, db_url, db)
    before = files_under(out)
    day = _today()
    result = invoke(git_repo, db_url, "import", *force)
    day_after = _today()
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        f"wrote {out / 'datasets' / 'late-arrival.yaml'}",
        f"appended to {out / 'records' / 'observatory.yaml'}",
        f"Imported 0 storage targets, 1 dataset, 1 record into {out} (2 files).",
    ]
    after = files_under(out)
    assert {name: data for name, data in after.items() if name in before and name != "records/observatory.yaml"} \
        == {name: data for name, data in before.items() if name != "records/observatory.yaml"}
    old, new = before["records/observatory.yaml"], after["records/observatory.yaml"]
    assert new.startswith(old)  # what the file declared stays, byte for byte
    assert _dated(new[len(old):].decode("utf-8"), day, day_after) == f"""\
---
# Imported by reconciler import from {_described(db_url)} on {day}; review before committing.
apiVersion: reconciler/v1
kind: RecordSet
namespace: observatory
records:
  - key: sensor-0004
    owner: team-observatory
"""
    _adopts_exactly(git_repo, db_url, ["dataset:late-arrival", "record:observatory/sensor-0004"])
    assert invoke(git_repo, db_url, "import").stdout == "Nothing to import: every catalog object is managed.\n"


def test_a_file_that_cannot_take_more_documents_unchanged_gets_a_new_file_beside_it(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None, secret_set: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from reconciler.app import importing

    out = _imported_and_applied(git_repo, db_url, db)
    old = (out / "records" / "observatory.yaml").read_bytes()
    monkeypatch.setattr(importing, "MAX_APPEND_BYTES", len(old) + 10)  # no room for another document
    result = invoke(git_repo, db_url, "import", "--target", "record:observatory/sensor-0004")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == (
        f"wrote {out / 'records' / 'observatory.2.yaml'} (beside {out / 'records' / 'observatory.yaml'}, which "
        "cannot take more documents and stay as it is)")
    assert (out / "records" / "observatory.yaml").read_bytes() == old
    assert "key: sensor-0004" in (out / "records" / "observatory.2.yaml").read_text(encoding="utf-8")
    _adopts_exactly(git_repo, db_url, ["record:observatory/sensor-0004"], left=("dataset:late-arrival",))


def test_a_file_with_crlf_line_endings_is_appended_to_in_them(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None, secret_set: None) -> None:
    out = _imported_and_applied(git_repo, db_url, db)
    path = out / "records" / "observatory.yaml"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))
    commit(git_repo, TEST_AUTHOR, "windows line endings")
    crlf = path.read_bytes()
    assert invoke(git_repo, db_url, "import", "--target", "record:observatory/sensor-0004").exit_code == 0
    new = path.read_bytes()
    assert new.startswith(crlf) and b"\r\n---\r\n# Imported by reconciler import" in new
    assert new.count(b"\n") == new.count(b"\r\n")
    _adopts_exactly(git_repo, db_url, ["record:observatory/sensor-0004"], left=("dataset:late-arrival",))


# --- choosing what to import ------------------------------------------------------------------


def test_target_imports_only_the_named_objects(git_repo: Path, db_url: str, ingested: None) -> None:
    result = invoke(git_repo, db_url, "import", "--target", "dataset:observatory-archive",
                    "--target", "record:team:ops/jobs/nightly")
    assert result.exit_code == 0, result.output
    out = git_repo / "manifests" / "imported"
    assert sorted(files_under(out)) == ["datasets/observatory-archive.yaml", "records/team_ops.yaml"]
    assert result.stdout.splitlines()[-1] == (
        f"Imported 0 storage targets, 1 dataset, 1 record into {out} (2 files).")
    assert "namespace: \"team:ops\"\nrecords:\n  - key: jobs/nightly\n" in (
        out / "records" / "team_ops.yaml").read_text(encoding="utf-8")


def test_target_that_is_managed_declared_or_missing_is_an_error_naming_it(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None) -> None:
    db.execute("INSERT INTO reconciler.managed_objects (address, kind, source) "
               "VALUES ('dataset:observatory-archive', 'dataset', 'team-b')")
    (git_repo / "manifests" / "ops.yaml").write_text(
        "apiVersion: reconciler/v1\nkind: Record\nnamespace: team:ops\nkey: jobs/nightly\nowner: ops\n")
    result = invoke(git_repo, db_url, "import", "--target", "dataset:observatory-archive",
                    "--target", "dataset:no-such-thing", "--target", "record:team:ops/jobs/nightly",
                    "--target", "dataset:raw.events_v2")
    assert result.exit_code == 1
    assert "dataset:observatory-archive is managed by source 'team-b'" in result.output
    assert "dataset:no-such-thing is not in the catalog" in result.output
    assert "record:team:ops/jobs/nightly is already declared in the tree" in result.output
    assert "raw.events_v2" not in result.output
    assert not (git_repo / "manifests" / "imported").exists()
    malformed = invoke(git_repo, db_url, "import", "--target", "observatory-archive")
    assert malformed.exit_code == 1 and "is not an address" in malformed.output


def test_objects_managed_by_the_tree_or_another_source_are_not_imported(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], ingested: None, secret_set: None) -> None:
    (git_repo / "manifests" / "mine.yaml").write_text("""\
apiVersion: reconciler/v1
kind: StorageTarget
name: primary
type: clickhouse
---
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-readings
name: Observatory readings (managed)
storageTarget: warm-s3
""")
    commit(git_repo, TEST_AUTHOR, "manage one dataset and one storage target")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    db.execute("INSERT INTO reconciler.managed_objects (address, kind, source) "
               "VALUES ('record:team:ops/jobs/nightly', 'record', 'team-b')")
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    out = git_repo / "manifests" / "imported"
    assert sorted(files_under(out)) == ["datasets/observatory-archive.yaml", "datasets/raw.events_v2.yaml",
                                        "records/observatory.yaml", "storage-targets.yaml"]
    storage = (out / "storage-targets.yaml").read_text(encoding="utf-8")
    assert "name: warm-s3" in storage and "name: primary" not in storage
    commit(git_repo, TEST_AUTHOR, "import the rest")
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and plan["unmanaged"] == []


def test_nothing_to_import(git_repo: Path, db_url: str) -> None:
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0
    assert result.stdout == "Nothing to import: every catalog object is managed.\n"
    assert not (git_repo / "manifests" / "imported").exists()


# --- secrets and objects no manifest can express ------------------------------------------------


def test_secret_config_values_become_env_references_with_a_warning(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    db.execute("""INSERT INTO timestore.storage_targets (id, name, kind, config) VALUES ('st-ch', 'ch.main',
        'clickhouse', '{"host": "ch", "password": "p@ss", "dsn": "clickhouse://default:hunter2@ch:9000/db",
                        "auth": {"accessKeyId": "AKIA1"}, "port": 9000}')""")
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    text = (git_repo / "manifests" / "imported" / "storage-targets.yaml").read_text(encoding="utf-8")
    for secret in ("p@ss", "hunter2", "AKIA1"):
        assert secret not in text
    assert text.endswith("""\
config:
  auth:
    accessKeyId: "${env:RECONCILER_CH_MAIN_AUTH_ACCESSKEYID}"
  dsn: "${env:RECONCILER_CH_MAIN_DSN}"
  host: ch
  password: "${env:RECONCILER_CH_MAIN_PASSWORD}"
  port: 9000
""")
    for variable, path in [("RECONCILER_CH_MAIN_AUTH_ACCESSKEYID", "config.auth.accessKeyId"),
                           ("RECONCILER_CH_MAIN_DSN", "config.dsn"),
                           ("RECONCILER_CH_MAIN_PASSWORD", "config.password")]:
        assert (f"warning: storage-target:ch.main: {path} is written as ${{env:{variable}}}; "
                f"set {variable} to its value before plan or apply") in result.stderr
    commit(git_repo, TEST_AUTHOR, "import")

    unset = invoke(git_repo, db_url, "plan")
    assert unset.exit_code == 1 and "RECONCILER_CH_MAIN_AUTH_ACCESSKEYID is not set" in unset.output
    monkeypatch.setenv("RECONCILER_CH_MAIN_AUTH_ACCESSKEYID", "AKIA1")
    monkeypatch.setenv("RECONCILER_CH_MAIN_DSN", "clickhouse://default:hunter2@ch:9000/db")
    monkeypatch.setenv("RECONCILER_CH_MAIN_PASSWORD", "p@ss")
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and [b["address"] for b in plan["bookkeeping"]] == ["storage-target:ch.main"]
    monkeypatch.setenv("RECONCILER_CH_MAIN_PASSWORD", "rotated")
    plan = plan_json(git_repo, db_url)
    assert [(c["address"], c["fields"]) for c in plan["changes"]] == [("storage-target:ch.main", ["config"])]


def test_objects_no_manifest_can_express_are_skipped_with_the_reason(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("""INSERT INTO timestore.storage_targets (id, name, kind, config) VALUES
        ('st-home', 'home', 'local', '{"root": "${HOME}/data"}'),
        ('st-ok', 'ok', 'local', '{"root": "/data"}')""")
    db.execute("""INSERT INTO timestore.datasets (id, slug, name, metadata) VALUES
        ('ds-1', 'bad slug', 'Spaces', '{}'),
        ('ds-2', 'untrimmed', 'Scopes', '{"iam": {"readScopes": [" timestore:read"]}}'),
        ('ds-3', 'fine', 'Fine', '{"iam": {"readScopes": ["timestore:read"]}}')""")
    db.execute(f"""INSERT INTO metastore.metastore_records (namespace, record_key, tags, metadata) VALUES
        ('n', 'long-tag', '{{{"x" * 65}}}', '{{}}'),
        ('n', 'dangling', '{{}}', '{{"datasetSlug": "gone-away"}}'),
        ('n', 'linked', '{{}}', '{{"datasetSlug": "fine"}}')""")
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: skipped ")]
    assert warnings == [
        ("warning: skipped dataset:bad slug: it cannot be written as a valid manifest: slug: must contain "
         "only letters, digits, '.', '_' and '-', got 'bad slug'"),
        ("warning: skipped dataset:untrimmed: no manifest can hold its metadata.iam.readScopes[0] exactly as the "
         "catalog has it (the plan would show a change)"),
        ("warning: skipped record:n/dangling: it refers to dataset:gone-away, which is neither in the catalog nor "
         "in the tree (the plan would refuse the broken link)"),
        ("warning: skipped record:n/long-tag: it cannot be written as a valid manifest: tags[0]: each tag must "
         "be 1 to 64 characters, got 65"),
        ("warning: skipped storage-target:home: config.root holds '${', which a manifest reads as an environment "
         "variable reference"),
    ]
    assert result.stdout.splitlines()[-1].startswith("Imported 1 storage target, 1 dataset, 1 record into")
    commit(git_repo, TEST_AUTHOR, "import what can be")
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and [f for f in plan["findings"] if f["severity"] == "error"] == []
    assert plan["unmanaged"] == ["storage-target:home", "dataset:bad slug", "dataset:untrimmed",
                                 "record:n/dangling", "record:n/long-tag"]


def test_nothing_expressible_is_an_error(git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-1', 'ab', 'Too short a slug')")
    result = invoke(git_repo, db_url, "import")
    assert result.exit_code == 1
    assert "warning: skipped dataset:ab: it cannot be written as a valid manifest: slug:" in result.stderr
    assert "nothing imported: none of the 1 unmanaged object(s) can be written as a manifest" in result.output


# --- the importer itself, with plain values ---------------------------------------------------


def _live(address: str, **fields: Any) -> Live:
    kind = address.partition(":")[0]
    defaults: dict[str, dict[str, Any]] = {
        "storage-target": {"type": "local", "description": None, "config": {}},
        "dataset": {"name": "N", "description": None, "status": "active", "storageTarget": None,
                    "metadata": {}, "retention": None},
        "record": {"owner": None, "tags": [], "schemaHash": None, "metadata": {}, "deleted": False},
    }
    return Live(address, kind, {**defaults[kind], **fields}, token="1")


def test_documents_are_canonical_whatever_order_the_catalog_returns() -> None:
    one = {"b": {"y": 1, "x": [{"d": 1, "c": 2}]}, "a": "1e3"}
    two = {"a": "1e3", "b": {"x": [{"c": 2, "d": 1}], "y": 1}}
    texts = []
    for metadata in (one, two):
        live = {"record:ns/k": _live("record:ns/k", metadata=metadata, tags=["z", "a", "z"])}
        (file,) = plan_import(live, {}, {}).files
        texts.append(dump_documents(file.documents))
    assert texts[0] == texts[1] == """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: ns
records:
  - key: k
    tags:
      - z
      - a
    metadata:
      a: "1e3"
      b:
        x:
          - c: 2
            d: 1
        "y": 1
"""


def test_service_keys_are_left_out_and_fields_without_a_value_are_omitted() -> None:
    live = {"dataset:abc": _live("dataset:abc", metadata={"tableName": "t", "createdBy": "svc",
                                                          "timestampColumn": "ts", "unit": "C"}),
            "dataset:xyz": _live("dataset:xyz", metadata={"tableName": "t"}, description="")}
    files = {f.path: f.documents for f in plan_import(live, {}, {}).files}
    assert files == {
        "datasets/abc.yaml": ({"apiVersion": "reconciler/v1", "kind": "Dataset", "slug": "abc", "name": "N",
                               "metadata": {"unit": "C"}},),
        "datasets/xyz.yaml": ({"apiVersion": "reconciler/v1", "kind": "Dataset", "slug": "xyz", "name": "N",
                               "description": ""},),
    }


def test_file_names_are_safe_and_names_that_clash_share_a_file() -> None:
    assert file_name("team:ops") == "team_ops.yaml"
    assert file_name(".hidden") == "_.hidden.yaml"  # the loader skips files starting with "."
    live = {"record:Team:ops/k": _live("record:Team:ops/k"), "record:team_ops/k": _live("record:team_ops/k"),
            "record:a:b/k": _live("record:a:b/k"), "record:a_b/k": _live("record:a_b/k")}
    files = {f.path: f.addresses for f in plan_import(live, {}, {}).files}
    assert files == {"records/Team_ops.yaml": ("record:Team:ops/k", "record:team_ops/k"),
                     "records/a_b.yaml": ("record:a:b/k", "record:a_b/k")}
    # Names that differ only by case are look-alikes, which one tree cannot hold: not written at all.
    alike = plan_import({"dataset:Readings": _live("dataset:Readings"),
                         "dataset:readings": _live("dataset:readings")}, {}, {})
    assert alike.files == () and [address for address, _ in alike.skipped] == ["dataset:Readings",
                                                                               "dataset:readings"]


def test_secret_variable_names_are_unique_and_only_strings_are_replaced() -> None:
    assert looks_secret("apiKey") and looks_secret("DB_PASSWORD") and looks_secret("sasToken")
    assert not looks_secret("bucket") and not looks_secret("region")
    live = {"storage-target:s": _live("storage-target:s", config={"api-key": "a", "api_key": "b", "keySize": 2048})}
    result = plan_import(live, {}, {})
    assert [(s.path, s.variable) for s in result.secrets] == [
        ("config.api-key", "RECONCILER_S_API_KEY"), ("config.api_key", "RECONCILER_S_API_KEY_2")]
    assert result.files[0].documents[0]["config"] == {
        "api-key": "${env:RECONCILER_S_API_KEY}", "api_key": "${env:RECONCILER_S_API_KEY_2}", "keySize": 2048}


def test_only_unmanaged_objects_are_candidates() -> None:
    live = {"dataset:abc": _live("dataset:abc"), "dataset:def": _live("dataset:def")}
    applied = {"dataset:abc": Applied("dataset:abc", "dataset", "default", {})}
    assert plan_import(live, applied, {}).candidates == ("dataset:def",)
    assert plan_import(live, {**applied, "dataset:def": Applied("dataset:def", "dataset", "b", {})}, {}).files == ()


def test_written_files_load_back_to_the_catalog_values(tmp_path: Path) -> None:
    tricky = ["yes", "No", "null", "~", "0o17", "1e3", ".inf", "- x", "a: b", "#x", " pad ", "two\nlines",
              "tab\there", "émoji 🌋", "\u2028", "'quoted'", '"double"', "{x}", "[1]", "@at", "`tick`", ""]
    metadata = {f"k{i}": value for i, value in enumerate(tricky)} | {"n": [0, -1, 2.5, 1e300, True, None]}
    live = {"record:ns/k": _live("record:ns/k", metadata=metadata, owner="null", schemaHash="0x1234ab"),
            "dataset:true": _live("dataset:true", name="1.0", description="multi\nline: text")}
    for file in plan_import(live, {}, {}).files:
        target = tmp_path / file.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(dump_documents(file.documents, header="header"), encoding="utf-8")
    tree = load_tree(tmp_path)
    (record,) = tree.records
    assert (record.model.metadata, record.model.owner, record.model.schema_hash) == (metadata, "null", "0x1234ab")
    (dataset,) = tree.datasets
    assert (dataset.model.slug, dataset.model.name, dataset.model.description) == ("true", "1.0", "multi\nline: text")
