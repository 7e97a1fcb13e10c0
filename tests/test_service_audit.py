"""The services' own audit rows, written by apply and by the repository layer exactly as the
timestore and the metastore write them for the same operations, and purge as the metastore
purges. Expected rows are worked out here from the catalog rows, independently of the SQL
that writes them."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from reconciler.services import datasets as repo_datasets
from reconciler.services import records as repo_records
from reconciler.services import retention as repo_retention
from reconciler.services.rows import DatasetRow

from .helpers import dataset_snapshot
from .test_apply_core import apply, ds, rec, st

ALICE = "alice@example.com"


def dataset(db: psycopg.Connection[Any], slug: str) -> DatasetRow:
    row = repo_datasets.get_dataset(db, slug)
    assert row is not None
    return row


def _untagged(db: psycopg.Connection[Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """The services' shape: the run id apply adds (and the repository layer does not) is taken
    out, after checking that it names a run the reconciler recorded."""
    run_id = metadata.pop("reconcilerRunId", None)
    if run_id is not None:
        assert db.execute("SELECT count(*) FROM reconciler.runs WHERE run_id = %s", (run_id,)).fetchone() == (1,)
    return metadata


def audits(db: psycopg.Connection[Any], slug: str) -> list[tuple[str, str | None, bool, list[str], Any]]:
    rows = db.execute("SELECT action, actor_id, success, actor_scopes, metadata FROM timestore.dataset_access_audit "
                      "WHERE dataset_slug = %s ORDER BY created_at, id", (slug,)).fetchall()
    return [(*row[:4], _untagged(db, row[4])) for row in rows]


def lifecycle(db: psycopg.Connection[Any], slug: str) -> list[tuple[str, Any]]:
    rows = db.execute("SELECT l.event_type, l.payload FROM timestore.lifecycle_audit_log l "
                      "JOIN timestore.datasets d ON d.id = l.dataset_id WHERE d.slug = %s "
                      "ORDER BY l.created_at, l.id", (slug,)).fetchall()
    return [(event, _untagged(db, payload)) for event, payload in rows]


def record_audits(db: psycopg.Connection[Any], key: str) -> list[tuple[Any, ...]]:
    return db.execute(
        "SELECT action, actor, previous_version, version, previous_metadata, metadata, previous_tags, tags, "
        "previous_owner, owner, previous_schema_hash, schema_hash FROM metastore.metastore_record_audits "
        "WHERE namespace = 'obs' AND record_key = %s ORDER BY id", (key,)).fetchall()


TARGET = st("ch")
RETENTION = {"mode": "time", "rules": {"maxAgeHours": 720}}


# --- datasets: timestore/src/routes/admin.ts ------------------------------------------------


def test_a_created_dataset_is_audited_as_post_admin_datasets(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [TARGET, ds("readings", storageTarget="ch", description="Minute readings",
                              metadata={"unit": "C"}, retention=RETENTION)])
    row = dataset(db, "readings")
    assert audits(db, "readings") == [("admin.dataset.created", ALICE, True, [], {
        "request": {"slug": "readings", "name": "Readings", "description": "Minute readings", "status": "active",
                    "writeFormat": "clickhouse", "defaultStorageTargetId": "st-ch", "metadata": {"unit": "C"}},
        "dataset": dataset_snapshot(row), "idempotencyKey": None, "created": True})]
    # PUT .../retention's lifecycle row: exactly these four keys, the policy as stored.
    assert lifecycle(db, "readings") == [("admin.retention.updated", {
        "datasetId": row.id, "datasetSlug": "readings", "policy": RETENTION, "actor": ALICE})]


def test_an_update_carries_both_snapshots_in_full_and_fields_in_the_timestore_s_order(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [TARGET, ds("readings", metadata={"unit": "C"})])
    db.execute("UPDATE timestore.datasets SET metadata = metadata || '{\"tableName\": \"t\"}'")  # ingestion's key
    before = dataset(db, "readings")
    apply(db_url, [TARGET, ds("readings", name="Readings v2", description="Minute readings",
                              metadata={"unit": "K"})])
    after = dataset(db, "readings")
    assert after.metadata == {"unit": "K", "tableName": "t"}
    assert audits(db, "readings")[-1] == ("admin.dataset.updated", ALICE, True, [], {
        "before": dataset_snapshot(before), "after": dataset_snapshot(after),
        "fieldsChanged": ["name", "description", "metadata"]})
    assert after.updated_at > before.updated_at


def test_archive_restore_and_archive_with_other_changes(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [TARGET, ds("readings")])
    active = dataset(db, "readings")
    apply(db_url, [TARGET, ds("readings", status="inactive")])
    inactive = dataset(db, "readings")
    # POST .../archive: both snapshots, no reason, not idempotent.
    assert audits(db, "readings")[-1] == ("admin.dataset.archived", ALICE, True, [], {
        "before": dataset_snapshot(active), "after": dataset_snapshot(inactive), "reason": None,
        "idempotent": False})
    apply(db_url, [TARGET, ds("readings")])
    restored = dataset(db, "readings")
    # The timestore restores through PATCH {status: active}.
    assert audits(db, "readings")[-1] == ("admin.dataset.updated", ALICE, True, [], {
        "before": dataset_snapshot(inactive), "after": dataset_snapshot(restored), "fieldsChanged": ["status"]})
    # Archiving while renaming is one PATCH of both fields (the archive endpoint changes only the status).
    apply(db_url, [TARGET, ds("readings", name="Old readings", status="inactive")])
    renamed = dataset(db, "readings")
    assert audits(db, "readings")[-1] == ("admin.dataset.updated", ALICE, True, [], {
        "before": dataset_snapshot(restored), "after": dataset_snapshot(renamed),
        "fieldsChanged": ["name", "status"]})


def test_retention_changes_and_removal_keep_the_timestore_s_payload(db_url: str,
                                                                    db: psycopg.Connection[Any]) -> None:
    apply(db_url, [TARGET, ds("readings", retention=RETENTION)])
    db.execute("UPDATE timestore.dataset_retention_policies SET policy = policy || '{\"metadata\": {\"by\": \"svc\"}}'")
    apply(db_url, [TARGET, ds("readings", retention={"mode": "hybrid", "rules": {"maxAgeHours": 48}})])
    apply(db_url, [TARGET, ds("readings")])
    row = dataset(db, "readings")
    base = {"datasetId": row.id, "datasetSlug": "readings", "actor": ALICE}
    assert lifecycle(db, "readings") == [
        ("admin.retention.updated", {**base, "policy": RETENTION}),
        # The policy as stored after the write, with the key someone else owns.
        ("admin.retention.updated", {**base, "policy": {"mode": "hybrid", "rules": {"maxAgeHours": 48},
                                                         "metadata": {"by": "svc"}}}),
        ("admin.retention.updated", {**base, "policy": {"metadata": {"by": "svc"}}}),
    ]


def test_a_purged_dataset_is_audited_with_its_snapshot_and_policy(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [TARGET, ds("readings", retention=RETENTION)])
    last = dataset(db, "readings")
    apply(db_url, [TARGET, ds("readings", purge=True)], allow_purge=True)
    assert audits(db, "readings")[-1] == ("admin.dataset.purged", ALICE, True, [], {
        "dataset": dataset_snapshot(last), "retentionPolicy": RETENTION})


def test_apply_and_the_repository_layer_write_the_same_rows(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [TARGET, ds("by-apply", storageTarget="ch", metadata={"unit": "C"})])
    apply(db_url, [TARGET, ds("by-apply", storageTarget="ch", metadata={"unit": "K"}, description="d")])
    apply(db_url, [TARGET, ds("by-apply", storageTarget="ch", metadata={"unit": "K"}, description="d",
                              status="inactive")])
    created = repo_datasets.create_dataset(db, slug="by-repo", name="By-Apply", storage_target_id="st-ch",
                                           metadata={"unit": "C"}, actor=ALICE)
    updated = repo_datasets.update_dataset(db, "by-repo", expected_updated_at=created.updated_at, actor=ALICE,
                                           changes={"metadata": {"unit": "K"}, "description": "d"})
    repo_datasets.archive_dataset(db, "by-repo", expected_updated_at=updated.updated_at, actor=ALICE)

    def shape(slug: str) -> list[Any]:
        row = dataset(db, slug)

        def same(value: Any) -> Any:  # what differs between the two datasets by construction
            if isinstance(value, dict):
                return {k: "<updatedAt>" if k == "updatedAt" else same(v) for k, v in value.items()}
            if isinstance(value, list | tuple):
                return [same(v) for v in value]
            return {row.id: "<id>", slug: "<slug>"}.get(value, value) if isinstance(value, str) else value

        return [same(entry) for entry in audits(db, slug)]

    assert shape("by-apply") == shape("by-repo")
    assert [entry[0] for entry in audits(db, "by-repo")] == [
        "admin.dataset.created", "admin.dataset.updated", "admin.dataset.archived"]


# --- records: metastore/src/db/recordsRepository.ts, audit.ts --------------------------------


def test_a_record_created_deleted_leaves_a_create_then_a_delete(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [rec("obs", "gone", owner="team", tags=["iot"], schemaHash="sha256-aaaaaa", metadata={"u": 1},
                       deleted=True)])
    assert db.execute("SELECT version, deleted_at IS NOT NULL, created_by, updated_by FROM metastore.metastore_records"
                      ).fetchone() == (2, True, ALICE, ALICE)
    values = ({"u": 1}, ["iot"], "team", "sha256-aaaaaa")

    def interleaved(previous: tuple[Any, ...] | None, new: tuple[Any, ...]) -> tuple[Any, ...]:
        return tuple(v for pair in zip(previous or (None,) * 4, new, strict=True) for v in pair)

    assert record_audits(db, "gone") == [
        ("create", ALICE, None, 1, *interleaved(None, values)),
        ("delete", ALICE, 1, 2, *interleaved(values, values)),
    ]


def test_an_archive_that_changes_fields_is_an_update_then_a_delete(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [rec("obs", "k", owner="team", tags=["iot"]), rec("obs", "plain", owner="team")])
    apply(db_url, [rec("obs", "k", owner="other", tags=["iot"], deleted=True), rec("obs", "plain", owner="team",
                                                                                     deleted=True)])
    assert record_audits(db, "k") == [
        ("create", ALICE, None, 1, None, {}, None, ["iot"], None, "team", None, None),
        ("update", ALICE, 1, 2, {}, {}, ["iot"], ["iot"], "team", "other", None, None),
        ("delete", ALICE, 2, 3, {}, {}, ["iot"], ["iot"], "other", "other", None, None),
    ]
    assert db.execute("SELECT version FROM metastore.metastore_records WHERE record_key = 'k'").fetchone() == (3,)
    # A plain archive is the metastore's delete alone.
    assert [row[:4] for row in record_audits(db, "plain")] == [("create", ALICE, None, 1), ("delete", ALICE, 1, 2)]


def test_a_purged_key_starts_a_fresh_history_when_it_is_used_again(db_url: str,
                                                                  db: psycopg.Connection[Any]) -> None:
    apply(db_url, [rec("obs", "alpha", owner="team", metadata={"v": 1}), rec("obs", "beta", owner="team")])
    apply(db_url, [rec("obs", "alpha", owner="team", metadata={"v": 2}), rec("obs", "beta", owner="team")])
    apply(db_url, [rec("obs", "alpha", purge=True), rec("obs", "beta", owner="team")], allow_purge=True)
    assert record_audits(db, "alpha") == []
    assert [row[0] for row in record_audits(db, "beta")] == ["create"]
    # Created again through the metastore's own path: its history is its own, and no
    # version of the purged record is there to be restored into it.
    again = repo_records.create_record(db, namespace="obs", key="alpha", metadata={"fresh": True}, actor="svc@x")
    assert again.version == 1
    assert [row[:4] for row in record_audits(db, "alpha")] == [("create", "svc@x", None, 1)]
    # The reconciler's own audit log keeps everything, the purge included.
    assert db.execute("SELECT action FROM reconciler.audit_log WHERE address = 'record:obs/alpha' ORDER BY seq"
                      ).fetchall() == [("create",), ("update",), ("purge",)]


@pytest.mark.parametrize("via", ["apply", "repository"])
def test_record_rows_are_the_same_through_apply_and_the_repository(via: str, db_url: str,
                                                                   db: psycopg.Connection[Any]) -> None:
    if via == "apply":
        apply(db_url, [rec("obs", "k", owner="team", tags=[" iot", "iot"], metadata={"u": 1})])
        apply(db_url, [rec("obs", "k", owner="team", tags=["iot"], metadata={"u": 2})])
        apply(db_url, [rec("obs", "k", owner="team", tags=["iot"], metadata={"u": 2}, deleted=True)])
        apply(db_url, [rec("obs", "k", owner="team", tags=["iot"], metadata={"u": 2})])
    else:
        row = repo_records.create_record(db, namespace="obs", key="k", owner="team", tags=[" iot", "iot"],
                                         metadata={"u": 1}, actor=ALICE)
        row = repo_records.update_record(db, "obs", "k", expected_version=row.version, actor=ALICE,
                                         changes={"metadata": {"u": 2}})
        row = repo_records.soft_delete_record(db, "obs", "k", expected_version=row.version, actor=ALICE)
        repo_records.restore_record(db, "obs", "k", expected_version=row.version, actor=ALICE)
    state = ({"u": 1}, ["iot"], "team", None)
    changed = ({"u": 2}, ["iot"], "team", None)

    def row_of(action: str, versions: tuple[int | None, int], previous: Any, new: Any) -> tuple[Any, ...]:
        pairs = zip(previous or (None,) * 4, new, strict=True)
        return (action, ALICE, *versions, *(v for pair in pairs for v in pair))

    assert record_audits(db, "k") == [
        row_of("create", (None, 1), None, state),
        row_of("update", (1, 2), state, changed),
        row_of("delete", (2, 3), changed, changed),
        row_of("restore", (3, 4), changed, changed),
    ]


def test_the_repository_s_retention_rows_match_apply_s(db_url: str, db: psycopg.Connection[Any]) -> None:
    row = repo_datasets.create_dataset(db, slug="by-repo", name="R", actor=ALICE)
    repo_retention.upsert_retention_policy(db, row.id, RETENTION, ALICE)
    assert lifecycle(db, "by-repo") == [("admin.retention.updated", {
        "datasetId": row.id, "datasetSlug": "by-repo", "policy": RETENTION, "actor": ALICE})]
