"""Repository layer: datasets with their audit rows, retention policies, schema versions."""

from __future__ import annotations

import hashlib
import json
import re
import threading
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reconciler.services import datasets as ds
from reconciler.services import retention
from reconciler.services import schema_versions as sv
from reconciler.services import storage_targets as st
from reconciler.services.rows import DatasetRow
from reconciler.errors import ConflictError, NotFoundError

from .helpers import dataset_snapshot

ACTOR = "ada@example.com"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"


def _ms(value: Any) -> Any:
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def _count(db: psycopg.Connection[Any], table: str) -> int:
    schema, name = table.split(".")
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def target(db: psycopg.Connection[Any]) -> str:
    return st.create_storage_target(db, name="warm", kind="clickhouse").id


@pytest.fixture
def dataset(db: psycopg.Connection[Any], target: str) -> DatasetRow:
    return ds.create_dataset(
        db, slug="readings", name="Readings", description="Minute readings",
        storage_target_id=target, metadata={"tableName": "readings"}, actor=ACTOR,
    )


# --- datasets -----------------------------------------------------------------


def test_create_writes_the_dataset_and_a_created_audit_row(db: psycopg.Connection[Any], target: str) -> None:
    row = ds.create_dataset(
        db, slug="readings", name="Readings", storage_target_id=target,
        metadata={"iam": {"readScopes": [" r ", "r", ""], "writeScopes": []}, "x": 1}, actor=ACTOR,
    )
    assert re.fullmatch(f"ds-{UUID}", row.id)
    assert row.status == "active" and row.write_format == "clickhouse"
    assert row.default_storage_target_id == "st-warm"
    assert row.metadata == {"iam": {"readScopes": ["r"]}, "x": 1}
    assert row.retention_policy is None
    (audit,) = ds.list_dataset_audit(db, "readings")
    assert re.fullmatch(f"da-{UUID}", audit.id)
    assert (audit.action, audit.actor_id, audit.success) == ("admin.dataset.created", ACTOR, True)
    assert (audit.dataset_id, audit.dataset_slug, audit.actor_scopes) == (row.id, "readings", [])
    # POST /admin/datasets's row: the request with every default filled in, the dataset.
    assert audit.metadata == {
        "request": {"slug": "readings", "name": "Readings", "description": None, "status": "active",
                    "writeFormat": "clickhouse", "defaultStorageTargetId": "st-warm", "metadata": row.metadata},
        "dataset": dataset_snapshot(row), "idempotencyKey": None, "created": True}


def test_create_conflicts_and_missing_storage_target(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    with pytest.raises(ConflictError) as caught:
        ds.create_dataset(db, slug="readings", name="Again", actor=ACTOR)
    assert "dataset:readings already exists" in str(caught.value)
    assert caught.value.address == "dataset:readings"
    with pytest.raises(NotFoundError) as missing:
        ds.create_dataset(db, slug="other", name="Other", storage_target_id="st-nope", actor=ACTOR)
    assert "st-nope" in str(missing.value)
    assert _count(db, "timestore.datasets") == 1
    assert _count(db, "timestore.dataset_access_audit") == 1


def test_get_and_list_include_the_retention_policy(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    other = ds.create_dataset(db, slug="alpha", name="Alpha", actor=ACTOR)
    retention.upsert_retention_policy(db, dataset.id, {"mode": "time", "rules": {"maxAgeHours": 24}}, ACTOR)
    listed = ds.list_datasets(db)
    assert [d.slug for d in listed] == ["alpha", "readings"]
    assert listed[0].retention_policy is None
    assert listed[1].retention_policy == {"mode": "time", "rules": {"maxAgeHours": 24}}
    by_slug = ds.get_dataset(db, "readings")
    assert by_slug is not None and by_slug.retention_policy == listed[1].retention_policy
    assert ds.get_dataset_by_id(db, other.id) == listed[0]
    assert ds.get_dataset(db, "nope") is None and ds.get_dataset_by_id(db, "ds-nope") is None


def test_update_audits_both_snapshots_and_the_changed_fields(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    st.create_storage_target(db, name="cold", kind="s3")
    updated = ds.update_dataset(
        db, "readings", expected_updated_at=dataset.updated_at, actor="bob@example.com",
        changes={"name": "Readings v2", "description": "Minute readings", "default_storage_target_id": "st-cold",
                 "metadata": {"tableName": "readings", "unit": "C"}},
    )
    assert updated.name == "Readings v2" and updated.default_storage_target_id == "st-cold"
    assert _ms(updated.updated_at) > _ms(dataset.updated_at)
    audit = ds.list_dataset_audit(db, "readings")[-1]
    assert (audit.action, audit.actor_id, audit.success) == ("admin.dataset.updated", "bob@example.com", True)
    assert audit.dataset_id == dataset.id
    # The timestore's PATCH row: both snapshots in full, fieldsChanged in diffDatasets' order.
    assert audit.metadata == {
        "before": dataset_snapshot(dataset),
        "after": dataset_snapshot(updated),
        "fieldsChanged": ["name", "defaultStorageTargetId", "metadata"],
    }


def test_update_conflicts_on_a_stale_updated_at(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    first = ds.update_dataset(db, "readings", expected_updated_at=dataset.updated_at,
                              changes={"name": "One"}, actor=ACTOR)
    with pytest.raises(ConflictError) as caught:
        ds.update_dataset(db, "readings", expected_updated_at=dataset.updated_at, changes={"name": "Two"}, actor=ACTOR)
    message = str(caught.value)
    assert "dataset:readings changed since it was read" in message
    assert dataset.updated_at.isoformat(timespec="milliseconds") in message
    assert first.updated_at.isoformat(timespec="milliseconds") in message
    assert caught.value.address == "dataset:readings"
    assert ds.get_dataset(db, "readings").name == "One"  # type: ignore[union-attr]
    assert len(ds.list_dataset_audit(db, "readings")) == 2


def test_two_updates_in_one_millisecond_both_move_updated_at(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    with db.transaction():
        one = ds.update_dataset(db, "readings", expected_updated_at=dataset.updated_at,
                                changes={"name": "One"}, actor=ACTOR)
        two = ds.update_dataset(db, "readings", expected_updated_at=one.updated_at,
                                changes={"name": "Two"}, actor=ACTOR)
    assert _ms(dataset.updated_at) < _ms(one.updated_at) < _ms(two.updated_at)
    with pytest.raises(ConflictError):
        ds.update_dataset(db, "readings", expected_updated_at=one.updated_at, changes={"name": "Three"}, actor=ACTOR)


def test_update_no_op_unknown_field_and_missing(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    same = ds.update_dataset(db, "readings", expected_updated_at=dataset.updated_at,
                             changes={"name": "Readings"}, actor=ACTOR)
    assert same.updated_at == dataset.updated_at
    assert len(ds.list_dataset_audit(db, "readings")) == 1
    with pytest.raises(ValueError):
        ds.update_dataset(db, "readings", expected_updated_at=dataset.updated_at, changes={"slug": "x"}, actor=ACTOR)
    with pytest.raises(NotFoundError):
        ds.update_dataset(db, "gone", expected_updated_at=dataset.updated_at, changes={"name": "x"}, actor=ACTOR)
    with pytest.raises(NotFoundError):
        ds.update_dataset(db, "readings", expected_updated_at=dataset.updated_at,
                          changes={"default_storage_target_id": "st-nope"}, actor=ACTOR)


def test_archive_and_restore(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    archived = ds.archive_dataset(db, "readings", expected_updated_at=dataset.updated_at, actor="bob@example.com")
    assert archived.status == "inactive"
    again = ds.archive_dataset(db, "readings", expected_updated_at=archived.updated_at, actor=ACTOR)
    assert again.updated_at == archived.updated_at  # already archived: nothing written
    with pytest.raises(ConflictError):
        ds.restore_dataset(db, "readings", expected_updated_at=dataset.updated_at, actor=ACTOR)
    restored = ds.restore_dataset(db, "readings", expected_updated_at=archived.updated_at, actor="cy@example.com")
    assert restored.status == "active" and restored.updated_at > archived.updated_at
    created, archive, restore = ds.list_dataset_audit(db, "readings")
    assert created.action == "admin.dataset.created"
    # The timestore's archive row, and its PATCH row for the restore (it has no restore).
    assert (archive.action, archive.actor_id) == ("admin.dataset.archived", "bob@example.com")
    assert archive.metadata == {"before": dataset_snapshot(dataset), "after": dataset_snapshot(archived),
                                "reason": None, "idempotent": False}
    assert (restore.action, restore.actor_id) == ("admin.dataset.updated", "cy@example.com")
    assert restore.metadata == {"before": dataset_snapshot(archived), "after": dataset_snapshot(restored),
                                "fieldsChanged": ["status"]}


def test_purge_deletes_the_dataset_and_keeps_its_audit_history(
    db: psycopg.Connection[Any], dataset: DatasetRow
) -> None:
    sv.append_schema_version(db, dataset.id, {"fields": []})
    retention.upsert_retention_policy(db, dataset.id, {"mode": "time"}, ACTOR)
    current = ds.archive_dataset(db, "readings", expected_updated_at=dataset.updated_at, actor=ACTOR)
    with pytest.raises(ConflictError):
        ds.purge_dataset(db, "readings", expected_updated_at=dataset.updated_at, actor=ACTOR)
    assert ds.get_dataset(db, "readings") is not None
    purged = ds.purge_dataset(db, "readings", expected_updated_at=current.updated_at, actor="root@example.com")
    assert purged.id == dataset.id
    assert ds.get_dataset(db, "readings") is None
    assert _count(db, "timestore.dataset_schema_versions") == 0
    assert _count(db, "timestore.dataset_retention_policies") == 0
    history = ds.list_dataset_audit(db, "readings")
    assert [a.action for a in history] == ["admin.dataset.created", "admin.dataset.archived", "admin.dataset.purged"]
    assert all(a.dataset_id is None for a in history)  # ON DELETE SET NULL; slug kept
    last = history[-1]
    assert (last.actor_id, last.success, last.dataset_slug) == ("root@example.com", True, "readings")
    assert last.metadata == {"dataset": dataset_snapshot(current), "retentionPolicy": {"mode": "time"}}
    with pytest.raises(NotFoundError):
        ds.purge_dataset(db, "readings", expected_updated_at=current.updated_at, actor=ACTOR)


# --- retention ----------------------------------------------------------------


def test_retention_insert_change_no_op_and_delete(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    assert retention.get_retention_policy(db, dataset.id) is None
    first = retention.upsert_retention_policy(db, dataset.id, {"mode": "time", "rules": {"maxAgeHours": 24}}, ACTOR)
    assert first.policy == {"mode": "time", "rules": {"maxAgeHours": 24}}
    second = retention.upsert_retention_policy(
        db, dataset.id, {"mode": "hybrid", "rules": {"maxAgeHours": 48}}, "bob@example.com"
    )
    assert second.updated_at > first.updated_at
    unchanged = retention.upsert_retention_policy(db, dataset.id, {"rules": {"maxAgeHours": 48}, "mode": "hybrid"}, ACTOR)
    assert unchanged == second
    assert retention.get_retention_policy(db, dataset.id) == second
    assert retention.delete_retention_policy(db, dataset.id, "cy@example.com") is True
    assert retention.delete_retention_policy(db, dataset.id, ACTOR) is False
    events = retention.list_lifecycle_events(db, dataset.id)
    assert [e.event_type for e in events] == ["admin.retention.updated"] * 3
    assert all(re.fullmatch(f"la-{UUID}", e.id) and e.manifest_id is None for e in events)
    # The timestore's PUT .../retention payload, and nothing else; a removal keeps the shape.
    base = {"datasetId": dataset.id, "datasetSlug": "readings"}
    assert events[0].payload == {**base, "policy": first.policy, "actor": ACTOR}
    assert events[1].payload == {**base, "policy": second.policy, "actor": "bob@example.com"}
    assert events[2].payload == {**base, "policy": None, "actor": "cy@example.com"}
    # Retention lives in its own table: the dataset row (and its etag) is untouched.
    assert ds.get_dataset(db, "readings").updated_at == dataset.updated_at  # type: ignore[union-attr]


def test_retention_of_a_missing_dataset(db: psycopg.Connection[Any]) -> None:
    with pytest.raises(NotFoundError):
        retention.upsert_retention_policy(db, "ds-nope", {"mode": "time"}, ACTOR)
    with pytest.raises(NotFoundError):
        retention.delete_retention_policy(db, "ds-nope", ACTOR)
    assert _count(db, "timestore.lifecycle_audit_log") == 0


# --- schema versions ------------------------------------------------------------


def test_schema_versions_are_numbered_and_checksummed(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    schema = {"fields": [{"name": "ts", "type": "timestamp"}, {"name": "värme", "type": "double"}]}
    one = sv.append_schema_version(db, dataset.id, schema, description="first")
    two = sv.append_schema_version(db, dataset.id, {"fields": []})
    three = sv.append_schema_version(db, dataset.id, dict(reversed(list(schema.items()))))
    assert [one.version, two.version, three.version] == [1, 2, 3]
    assert re.fullmatch(f"dsv-{UUID}", one.id)
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert one.checksum == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert one.checksum == three.checksum == sv.schema_checksum(schema)
    assert one.description == "first" and one.schema == schema
    assert sv.list_schema_versions(db, dataset.id) == [one, two, three]
    other = ds.create_dataset(db, slug="other", name="Other", actor=ACTOR)
    assert sv.append_schema_version(db, other.id, schema).version == 1
    with pytest.raises(NotFoundError):
        sv.append_schema_version(db, "ds-nope", schema)


def test_concurrent_schema_appends_are_serialised(db_url: str, db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    results: list[int] = []
    with psycopg.connect(db_url, autocommit=True) as holder, holder.transaction():
        results.append(sv.append_schema_version(holder, dataset.id, {"n": 1}).version)

        def append() -> None:
            with psycopg.connect(db_url, autocommit=True) as conn:
                results.append(sv.append_schema_version(conn, dataset.id, {"n": 2}).version)

        waiter = threading.Thread(target=append)
        waiter.start()
        waiter.join(timeout=0.5)
        assert waiter.is_alive()  # blocked on the dataset row lock
    waiter.join(timeout=10)
    assert results == [1, 2]
