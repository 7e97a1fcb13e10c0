"""Repository layer: transactional manifest publishing and duplicate-partition rollback."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from reconciler.services import datasets as ds
from reconciler.services import publishing as pub
from reconciler.services import schema_versions as sv
from reconciler.services import storage_targets as st
from reconciler.services.publishing import NewPartition
from reconciler.services.rows import DatasetRow
from reconciler.errors import DuplicatePartitionError, NotFoundError

ACTOR = "ada@example.com"
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _part(path: str, *, rows: int = 10, size: int = 100, signature: str | None = None,
          hour: int = 0, target: str = "st-warm") -> NewPartition:
    return NewPartition(
        partition_key={"window": f"h{hour}"}, storage_target_id=target, file_path=path,
        start_time=T0 + timedelta(hours=hour), end_time=T0 + timedelta(hours=hour + 1),
        file_size_bytes=size, row_count=rows, ingestion_signature=signature,
    )


def _state(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    """Everything publishing can touch, to compare before and after a refused publish."""
    manifests = db.execute(
        "SELECT id, version, status, parent_manifest_id, updated_at, published_at "
        "FROM timestore.dataset_manifests ORDER BY id"
    ).fetchall()
    partitions = db.execute("SELECT id, manifest_id, file_path FROM timestore.dataset_partitions ORDER BY id").fetchall()
    counts = db.execute(
        "SELECT (SELECT count(*) FROM timestore.dataset_manifests), (SELECT count(*) FROM timestore.dataset_partitions)"
    ).fetchall()
    return [*manifests, *partitions, *counts]


@pytest.fixture
def dataset(db: psycopg.Connection[Any]) -> DatasetRow:
    st.create_storage_target(db, name="warm", kind="clickhouse")
    return ds.create_dataset(db, slug="readings", name="Readings", storage_target_id="st-warm", actor=ACTOR)


def test_publish_versions_supersede_and_totals(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    schema = sv.append_schema_version(db, dataset.id, {"fields": [{"name": "ts", "type": "timestamp"}]})
    one = pub.publish_manifest(
        db, dataset_id=dataset.id, partitions=[_part("a.bin", rows=10, size=100, signature="sig-a"),
                                               _part("b.bin", rows=5, size=50, hour=1)],
        schema_version_id=schema.id, summary={"s": 1}, statistics={"rows": 15}, metadata={"m": True},
        created_by=ACTOR,
    )
    assert re.fullmatch(f"dm-{UUID}", one.id)
    assert (one.version, one.status, one.manifest_shard, one.parent_manifest_id) == (1, "published", "root", None)
    assert one.published_at is not None
    assert (one.partition_count, one.total_rows, one.total_bytes) == (2, 15, 150)
    assert (one.schema_version_id, one.summary, one.statistics, one.metadata, one.created_by) == (
        schema.id, {"s": 1}, {"rows": 15}, {"m": True}, ACTOR)
    parts = pub.list_partitions(db, one.id)
    assert [p.file_path for p in parts] == ["a.bin", "b.bin"]
    assert all(re.fullmatch(f"dp-{UUID}", p.id) for p in parts)
    first = parts[0]
    assert (first.dataset_id, first.manifest_id, first.storage_target_id, first.file_format) == (
        dataset.id, one.id, "st-warm", "clickhouse")
    assert (first.partition_key, first.row_count, first.file_size_bytes, first.ingestion_signature) == (
        {"window": "h0"}, 10, 100, "sig-a")
    assert (first.start_time, first.end_time, first.manifest_shard) == (T0, T0 + timedelta(hours=1), "root")
    assert (first.metadata, first.column_statistics, first.column_bloom_filters) == ({}, {}, {})

    two = pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("c.bin", rows=7, size=70)])
    three = pub.publish_manifest(db, dataset_id=dataset.id, partitions=[])
    assert [two.version, three.version] == [2, 3]
    assert (two.parent_manifest_id, three.parent_manifest_id) == (one.id, two.id)
    assert (three.partition_count, three.total_rows, three.total_bytes) == (0, 0, 0)
    assert [(m.version, m.status) for m in pub.list_manifests(db, dataset.id)] == [
        (1, "superseded"), (2, "superseded"), (3, "published")]
    assert pub.get_published_manifest(db, dataset.id) == three
    assert [p.file_path for p in pub.list_partitions(db, two.id)] == ["c.bin"]


def test_shards_each_keep_one_published_manifest(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    a1 = pub.publish_manifest(db, dataset_id=dataset.id, shard="2024-01", partitions=[_part("a1")])
    b1 = pub.publish_manifest(db, dataset_id=dataset.id, shard="2024-02", partitions=[_part("b1")])
    a2 = pub.publish_manifest(db, dataset_id=dataset.id, shard="2024-01", partitions=[_part("a2")])
    assert [a1.version, b1.version, a2.version] == [1, 2, 3]  # numbered per dataset, across shards
    assert a2.parent_manifest_id == a1.id and b1.parent_manifest_id is None
    assert pub.get_published_manifest(db, dataset.id, "2024-01") == a2
    assert pub.get_published_manifest(db, dataset.id, "2024-02") == b1
    assert pub.get_published_manifest(db, dataset.id) is None
    statuses = {(m.manifest_shard, m.version): m.status for m in pub.list_manifests(db, dataset.id)}
    assert statuses == {("2024-01", 1): "superseded", ("2024-02", 2): "published", ("2024-01", 3): "published"}
    assert pub.list_partitions(db, b1.id)[0].manifest_shard == "2024-02"


@pytest.mark.parametrize(
    ("batch", "named"),
    [
        pytest.param([_part("new.bin"), _part("a.bin", hour=3)], "file a.bin", id="existing-path"),
        pytest.param([_part("new.bin", signature="sig-a")], "ingestion signature sig-a", id="existing-signature"),
        pytest.param([_part("x.bin"), _part("x.bin", hour=2)], "file x.bin", id="path-within-batch"),
        pytest.param([_part("x.bin", signature="s"), _part("y.bin", signature="s")], "ingestion signature s",
                     id="signature-within-batch"),
    ],
)
def test_a_duplicate_partition_rolls_the_whole_publish_back(
    db: psycopg.Connection[Any], dataset: DatasetRow, batch: list[NewPartition], named: str
) -> None:
    published = pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("a.bin", signature="sig-a")])
    before = _state(db)
    with pytest.raises(DuplicatePartitionError) as caught:
        pub.publish_manifest(db, dataset_id=dataset.id, partitions=batch)
    assert named in str(caught.value)
    assert "dataset:readings" in str(caught.value)
    assert caught.value.address == "dataset:readings"
    assert _state(db) == before
    assert pub.get_published_manifest(db, dataset.id) == published
    # The same path in another storage target is a different file.
    st.create_storage_target(db, name="cold", kind="s3")
    later = pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("a.bin", target="st-cold")])
    assert later.version == 2


def test_a_duplicate_found_only_by_the_database_still_rolls_back(
    db: psycopg.Connection[Any], dataset: DatasetRow
) -> None:
    # Another dataset may reuse the path; a unique index, not the pre-check, must catch the rest.
    pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("a.bin", signature="sig-a")])
    before = _state(db)
    with pytest.raises(DuplicatePartitionError), db.transaction():
        db.execute("DROP INDEX timestore.uq_dataset_partitions_ingestion_signature")
        db.execute("CREATE UNIQUE INDEX uq_sig_again ON timestore.dataset_partitions (ingestion_signature)")
        other = ds.create_dataset(db, slug="other", name="Other", actor=ACTOR)
        pub.publish_manifest(db, dataset_id=other.id, partitions=[_part("z.bin", signature="sig-a")])
    assert _state(db) == before


def test_missing_dataset_or_storage_target(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    with pytest.raises(NotFoundError):
        pub.publish_manifest(db, dataset_id="ds-nope", partitions=[_part("a.bin")])
    pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("a.bin")])
    before = _state(db)
    with pytest.raises(NotFoundError) as caught:
        pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("b.bin", target="st-nope")])
    assert "st-nope" in str(caught.value)
    assert _state(db) == before


def test_purging_the_dataset_removes_its_manifests(db: psycopg.Connection[Any], dataset: DatasetRow) -> None:
    pub.publish_manifest(db, dataset_id=dataset.id, partitions=[_part("a.bin")])
    ds.purge_dataset(db, "readings", expected_updated_at=dataset.updated_at, actor=ACTOR)
    assert _state(db)[-1] == (0, 0)
