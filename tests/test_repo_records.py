"""Repository layer: metastore records, their versions and audit rows, bulk create, streaming."""

from __future__ import annotations

import time
from contextlib import closing
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reconciler.services import records as rec
from reconciler.services.records import NewRecord
from reconciler.services.rows import RecordRow
from reconciler.errors import ConflictError, NotFoundError

ACTOR = "ada@example.com"


def _count(db: psycopg.Connection[Any], table: str) -> int:
    schema, name = table.split(".")
    row = db.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, name))).fetchone()
    assert row is not None
    return int(row[0])


@pytest.fixture
def record(db: psycopg.Connection[Any]) -> RecordRow:
    return rec.create_record(
        db, namespace="observatory", key="sensors/0001", metadata={"unit": "celsius"},
        tags=[" iot ", "raw", "iot", "", "raw "], owner="team-obs", schema_hash="sha256-abc123", actor=ACTOR,
    )


def test_create_stores_normalised_tags_and_audits(db: psycopg.Connection[Any], record: RecordRow) -> None:
    assert (record.namespace, record.record_key, record.version) == ("observatory", "sensors/0001", 1)
    assert record.tags == ["iot", "raw"]
    assert (record.created_by, record.updated_by, record.deleted_at) == (ACTOR, ACTOR, None)
    assert rec.get_record(db, "observatory", "sensors/0001") == record
    assert rec.get_record(db, "observatory", "missing") is None
    (audit,) = rec.list_record_audits(db, "observatory", "sensors/0001")
    assert (audit.action, audit.actor, audit.record_id) == ("create", ACTOR, record.id)
    assert (audit.previous_version, audit.version) == (None, 1)
    assert (audit.metadata, audit.previous_metadata) == ({"unit": "celsius"}, None)
    assert (audit.tags, audit.previous_tags) == (["iot", "raw"], None)
    assert (audit.owner, audit.previous_owner) == ("team-obs", None)
    assert (audit.schema_hash, audit.previous_schema_hash) == ("sha256-abc123", None)


def test_create_duplicate_is_a_conflict(db: psycopg.Connection[Any], record: RecordRow) -> None:
    with pytest.raises(ConflictError) as caught:
        rec.create_record(db, namespace="observatory", key="sensors/0001", actor=ACTOR)
    assert "record:observatory/sensors/0001 already exists" in str(caught.value)
    assert caught.value.address == "record:observatory/sensors/0001"
    assert _count(db, "metastore.metastore_record_audits") == 1


def test_update_bumps_version_and_audits_old_and_new(db: psycopg.Connection[Any], record: RecordRow) -> None:
    updated = rec.update_record(
        db, "observatory", "sensors/0001", expected_version=1, actor="bob@example.com",
        changes={"metadata": {"unit": "kelvin"}, "tags": ["raw", " new"], "owner": "team-b", "schema_hash": "sha256-def"},
    )
    assert updated.version == 2
    assert updated.tags == ["raw", "new"]
    assert (updated.created_by, updated.updated_by) == (ACTOR, "bob@example.com")
    assert updated.updated_at > record.updated_at
    audit = rec.list_record_audits(db, "observatory", "sensors/0001")[-1]
    assert (audit.action, audit.actor, audit.previous_version, audit.version) == ("update", "bob@example.com", 1, 2)
    assert (audit.previous_metadata, audit.metadata) == ({"unit": "celsius"}, {"unit": "kelvin"})
    assert (audit.previous_tags, audit.tags) == (["iot", "raw"], ["raw", "new"])
    assert (audit.previous_owner, audit.owner) == ("team-obs", "team-b")
    assert (audit.previous_schema_hash, audit.schema_hash) == ("sha256-abc123", "sha256-def")


def test_update_conflicts_on_a_stale_version(db: psycopg.Connection[Any], record: RecordRow) -> None:
    rec.update_record(db, "observatory", "sensors/0001", expected_version=1,
                      changes={"owner": "x"}, actor="bob@example.com")
    with pytest.raises(ConflictError) as caught:
        rec.update_record(db, "observatory", "sensors/0001", expected_version=1, changes={"owner": "y"}, actor=ACTOR)
    message = str(caught.value)
    assert "record:observatory/sensors/0001 changed since it was read" in message
    assert "expected version 1, the catalog has version 2" in message
    assert "bob@example.com" in message
    assert rec.get_record(db, "observatory", "sensors/0001").owner == "x"  # type: ignore[union-attr]


def test_update_no_op_unknown_field_and_missing(db: psycopg.Connection[Any], record: RecordRow) -> None:
    same = rec.update_record(db, "observatory", "sensors/0001", expected_version=1,
                             changes={"tags": ["iot", "raw", "iot "], "owner": "team-obs"}, actor=ACTOR)
    assert same == record
    assert len(rec.list_record_audits(db, "observatory", "sensors/0001")) == 1
    with pytest.raises(ValueError):
        rec.update_record(db, "observatory", "sensors/0001", expected_version=1, changes={"version": 9}, actor=ACTOR)
    with pytest.raises(NotFoundError):
        rec.update_record(db, "observatory", "nope", expected_version=1, changes={"owner": "x"}, actor=ACTOR)


def test_soft_delete_and_restore(db: psycopg.Connection[Any], record: RecordRow) -> None:
    deleted = rec.soft_delete_record(db, "observatory", "sensors/0001", expected_version=1, actor="bob@example.com")
    assert deleted.deleted and deleted.version == 2 and deleted.updated_by == "bob@example.com"
    assert rec.get_record(db, "observatory", "sensors/0001") == deleted  # soft-deleted rows are still read
    again = rec.soft_delete_record(db, "observatory", "sensors/0001", expected_version=2, actor=ACTOR)
    assert again == deleted
    with pytest.raises(ConflictError):
        rec.restore_record(db, "observatory", "sensors/0001", expected_version=1, actor=ACTOR)
    restored = rec.restore_record(db, "observatory", "sensors/0001", expected_version=2, actor="cy@example.com")
    assert not restored.deleted and restored.version == 3
    assert rec.restore_record(db, "observatory", "sensors/0001", expected_version=3, actor=ACTOR) == restored
    audits = rec.list_record_audits(db, "observatory", "sensors/0001")
    assert [(a.action, a.actor, a.previous_version, a.version) for a in audits] == [
        ("create", ACTOR, None, 1),
        ("delete", "bob@example.com", 1, 2),
        ("restore", "cy@example.com", 2, 3),
    ]
    assert audits[1].metadata == audits[1].previous_metadata == {"unit": "celsius"}


def test_purge_deletes_the_key_s_audit_history_as_the_metastore_does(
        db: psycopg.Connection[Any], record: RecordRow) -> None:
    rec.create_record(db, namespace="observatory", key="sensors/0002", actor=ACTOR)
    rec.create_record(db, namespace="fleet", key="sensors/0001", actor=ACTOR)
    deleted = rec.soft_delete_record(db, "observatory", "sensors/0001", expected_version=1, actor=ACTOR)
    with pytest.raises(ConflictError):
        rec.purge_record(db, "observatory", "sensors/0001", expected_version=1, actor=ACTOR)
    assert len(rec.list_record_audits(db, "observatory", "sensors/0001")) == 2
    purged = rec.purge_record(db, "observatory", "sensors/0001", expected_version=2, actor="root@example.com")
    assert purged == deleted
    assert rec.get_record(db, "observatory", "sensors/0001") is None
    # Every row of the key goes, and none is written; other keys keep theirs.
    assert rec.list_record_audits(db, "observatory", "sensors/0001") == []
    assert [a.action for a in rec.list_record_audits(db, "observatory", "sensors/0002")] == ["create"]
    assert [a.action for a in rec.list_record_audits(db, "fleet", "sensors/0001")] == ["create"]
    with pytest.raises(NotFoundError):
        rec.purge_record(db, "observatory", "sensors/0001", expected_version=2, actor=ACTOR)
    # The key used again starts a fresh history: nothing of the purged record is in it.
    again = rec.create_record(db, namespace="observatory", key="sensors/0001", actor="new@example.com")
    assert again.version == 1
    assert [(a.action, a.actor, a.version) for a in rec.list_record_audits(db, "observatory", "sensors/0001")] == [
        ("create", "new@example.com", 1)]


def test_iter_records_streams_through_a_server_side_cursor(db: psycopg.Connection[Any]) -> None:
    rec.create_records(db, [NewRecord("b", f"k{i:03}") for i in range(25)] + [NewRecord("a", "z")], ACTOR)
    rec.soft_delete_record(db, "b", "k003", expected_version=1, actor=ACTOR)
    with closing(rec.iter_records(db, batch_size=10)) as rows:
        first = next(rows)
        # Mid-stream the connection is free for other statements in the same transaction.
        cursors = db.execute("SELECT count(*) FROM pg_cursors WHERE NOT is_holdable").fetchone()
        assert cursors == (1,)
        rest = list(rows)
    everything = [first, *rest]
    assert [(r.namespace, r.record_key) for r in everything][:3] == [("a", "z"), ("b", "k000"), ("b", "k001")]
    assert len(everything) == 26
    assert [r.record_key for r in everything if r.deleted] == ["k003"]
    assert [r.record_key for r in rec.iter_records(db, "a")] == ["z"]
    assert list(rec.iter_records(db, "none")) == []


def test_iter_records_closed_early_releases_the_connection(db: psycopg.Connection[Any]) -> None:
    rec.create_records(db, [NewRecord("n", f"k{i}") for i in range(5)], ACTOR)
    stream = rec.iter_records(db, batch_size=2)
    next(stream)
    stream.close()
    assert db.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    assert rec.get_record(db, "n", "k1") is not None


def test_bulk_create_of_5000_records_with_their_audit_rows(db: psycopg.Connection[Any]) -> None:
    batch = [
        NewRecord("bulk", f"item-{i:05}", metadata={"i": i}, tags=[" t ", "t", f"g{i % 3}"],
                  owner="team", schema_hash="sha256-bulk")
        for i in range(5000)
    ]
    started = time.perf_counter()
    created = rec.create_records(db, batch, ACTOR)
    elapsed = time.perf_counter() - started
    assert elapsed < 20  # one COPY each, not 10,000 round trips
    assert len(created) == 5000
    assert [r.record_key for r in created] == [r.key for r in batch]
    assert created[7].tags == ["t", "g1"] and created[7].metadata == {"i": 7}
    assert all(r.version == 1 and r.created_by == ACTOR == r.updated_by for r in created)
    assert _count(db, "metastore.metastore_records") == 5000
    row = db.execute(
        "SELECT count(*), count(DISTINCT record_id), min(action), max(action), min(actor), "
        "count(*) FILTER (WHERE version = 1 AND previous_version IS NULL) "
        "FROM metastore.metastore_record_audits"
    ).fetchone()
    assert row == (5000, 5000, "create", "create", ACTOR, 5000)
    (audit,) = rec.list_record_audits(db, "bulk", "item-00007")
    assert (audit.record_id, audit.metadata, audit.tags) == (created[7].id, {"i": 7}, ["t", "g1"])
    # The sequence moved past the reserved ids: a single create still works.
    single = rec.create_record(db, namespace="bulk", key="after", actor=ACTOR)
    assert single.id > max(r.id for r in created)


def test_bulk_create_refuses_duplicates_and_writes_nothing(db: psycopg.Connection[Any], record: RecordRow) -> None:
    with pytest.raises(ConflictError) as twice:
        rec.create_records(db, [NewRecord("n", "a"), NewRecord("n", "b"), NewRecord("n", "a")], ACTOR)
    assert "record:n/a appears more than once" in str(twice.value)
    with pytest.raises(ConflictError) as existing:
        rec.create_records(db, [NewRecord("n", "c"), NewRecord("observatory", "sensors/0001")], ACTOR)
    assert "record:observatory/sensors/0001" in str(existing.value)
    assert _count(db, "metastore.metastore_records") == 1
    assert _count(db, "metastore.metastore_record_audits") == 1
    assert rec.create_records(db, [], ACTOR) == []
