"""Transactional manifest publishing: a new published manifest and its partitions, or nothing."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from reconciler.errors import DuplicatePartitionError, NotFoundError, ReconcilerError
from reconciler.services._common import Connection, ErrorFactory, atomic, new_id
from reconciler.services.datasets import address, lock_dataset
from reconciler.services.rows import DatasetRow, ManifestRow, PartitionRow

MANIFESTS = sql.Identifier("timestore", "dataset_manifests")
PARTITIONS = sql.Identifier("timestore", "dataset_partitions")

_MANIFEST_COLUMNS = sql.SQL(
    "id, dataset_id, version, status, schema_version_id, parent_manifest_id, summary, statistics, "
    "metadata, partition_count, total_rows, total_bytes, created_by, created_at, updated_at, "
    "published_at, manifest_shard"
)
_PARTITION_COLUMNS = (
    "id", "dataset_id", "manifest_id", "partition_key", "storage_target_id", "file_format", "file_path",
    "file_size_bytes", "row_count", "start_time", "end_time", "checksum", "metadata",
    "column_statistics", "column_bloom_filters", "ingestion_signature", "manifest_shard",
)
_PARTITION_TYPES = (
    "text", "text", "text", "jsonb", "text", "text", "text",
    "int8", "int8", "timestamptz", "timestamptz", "text", "jsonb",
    "jsonb", "jsonb", "text", "text",
)


@dataclass(frozen=True)
class NewPartition:
    """One partition file to publish in a manifest (id ``dp-<uuid4>`` is given on write)."""

    partition_key: Mapping[str, Any]
    storage_target_id: str
    file_path: str
    start_time: datetime
    end_time: datetime
    file_format: str = "clickhouse"
    file_size_bytes: int | None = None
    row_count: int | None = None
    checksum: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    column_statistics: Mapping[str, Any] = field(default_factory=dict)
    column_bloom_filters: Mapping[str, Any] = field(default_factory=dict)
    ingestion_signature: str | None = None


def _duplicate_in_batch(partitions: Sequence[NewPartition]) -> str | None:
    """Describe the first partition that repeats an earlier one's file or signature."""
    files: set[tuple[str, str]] = set()
    signatures: set[str] = set()
    for part in partitions:
        if (part.storage_target_id, part.file_path) in files:
            return f"file {part.file_path} (storage target {part.storage_target_id}) appears twice in the publish"
        files.add((part.storage_target_id, part.file_path))
        if part.ingestion_signature is not None:
            if part.ingestion_signature in signatures:
                return f"ingestion signature {part.ingestion_signature} appears twice in the publish"
            signatures.add(part.ingestion_signature)
    return None


def _duplicate_in_catalog(conn: Connection, dataset_id: str, partitions: Sequence[NewPartition]) -> str | None:
    """Describe the first partition the dataset already holds, by file or by signature."""
    query = sql.SQL(
        "SELECT p.file_path, p.storage_target_id, p.ingestion_signature, "
        "(p.storage_target_id, p.file_path) IN (SELECT * FROM unnest(%s::text[], %s::text[])) AS same_file "
        "FROM {table} AS p WHERE p.dataset_id = %s AND ("
        "(p.storage_target_id, p.file_path) IN (SELECT * FROM unnest(%s::text[], %s::text[])) "
        "OR p.ingestion_signature = ANY(%s::text[])) ORDER BY p.file_path LIMIT 1"
    ).format(table=PARTITIONS)
    targets = [p.storage_target_id for p in partitions]
    paths = [p.file_path for p in partitions]
    signatures = [p.ingestion_signature for p in partitions if p.ingestion_signature is not None]
    row = conn.execute(query, (targets, paths, dataset_id, targets, paths, signatures)).fetchone()
    if row is None:
        return None
    path, target, signature, same_file = row
    if same_file:
        return f"file {path} (storage target {target}) is already published"
    return f"ingestion signature {signature} is already published (file {path})"


def _duplicate_error(dataset: DatasetRow, what: str) -> DuplicatePartitionError:
    """The refusal of a publish, naming the dataset and the duplicate."""
    return DuplicatePartitionError(
        f"publishing a manifest for {address(dataset.slug)} was refused and rolled back: {what}",
        address=address(dataset.slug),
    )


def _on_unique(dataset_id: str) -> ErrorFactory:
    """Translate a unique violation the pre-checks could not see (a concurrent writer)."""

    def build(diag: pg_errors.Diagnostic) -> ReconcilerError:
        """The refusal, with the server's detail naming the colliding key."""
        return DuplicatePartitionError(
            f"publishing a manifest for dataset {dataset_id} was refused and rolled back: "
            f"a partition is already published ({diag.message_detail or diag.message_primary})"
        )

    return build


def _on_foreign_key(dataset_id: str) -> ErrorFactory:
    """Translate a reference to a storage target or schema version that does not exist."""

    def build(diag: pg_errors.Diagnostic) -> ReconcilerError:
        """The NotFoundError, with the server's detail naming the missing key."""
        return NotFoundError(
            f"publishing a manifest for dataset {dataset_id}: {diag.message_detail or diag.message_primary}"
        )

    return build


def _supersede(conn: Connection, dataset_id: str, shard: str) -> str | None:
    """Mark the shard's published manifest superseded; return its id (the new one's parent)."""
    query = sql.SQL(
        "UPDATE {table} SET status = 'superseded', updated_at = clock_timestamp() "
        "WHERE dataset_id = %s AND manifest_shard = %s AND status = 'published' RETURNING id"
    ).format(table=MANIFESTS)
    row = conn.execute(query, (dataset_id, shard)).fetchone()
    return row[0] if row else None


def _insert_manifest(conn: Connection, values: Mapping[str, Any]) -> ManifestRow:
    """Insert the manifest as ``published`` at the dataset's next version number."""
    columns = list(values)
    query = sql.SQL(
        "INSERT INTO {table} ({cols}, version, status, published_at) "
        "SELECT {values}, COALESCE(MAX(version), 0) + 1, 'published', now() FROM {table} WHERE dataset_id = %s "
        "RETURNING {returning}"
    ).format(
        table=MANIFESTS,
        cols=sql.SQL(", ").join(map(sql.Identifier, columns)),
        values=sql.SQL(", ").join(sql.Placeholder() * len(columns)),
        returning=_MANIFEST_COLUMNS,
    )
    with conn.cursor(row_factory=class_row(ManifestRow)) as cur:
        row = cur.execute(query, (*values.values(), values["dataset_id"])).fetchone()
    assert row is not None  # INSERT ... SELECT of an aggregate always yields one row
    return row


def _copy_partitions(conn: Connection, manifest: ManifestRow, partitions: Sequence[NewPartition]) -> None:
    """Write the partitions with one binary COPY."""
    statement = sql.SQL("COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)").format(
        table=PARTITIONS, cols=sql.SQL(", ").join(map(sql.Identifier, _PARTITION_COLUMNS))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(list(_PARTITION_TYPES))
        for p in partitions:
            copy.write_row((
                new_id("dp"), manifest.dataset_id, manifest.id, dict(p.partition_key), p.storage_target_id,
                p.file_format, p.file_path, p.file_size_bytes, p.row_count, p.start_time, p.end_time,
                p.checksum, dict(p.metadata), dict(p.column_statistics), dict(p.column_bloom_filters),
                p.ingestion_signature, manifest.manifest_shard,
            ))


def publish_manifest(
    conn: Connection,
    *,
    dataset_id: str,
    shard: str = "root",
    partitions: Sequence[NewPartition],
    schema_version_id: str | None = None,
    summary: Mapping[str, Any] | None = None,
    statistics: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    created_by: str | None = None,
) -> ManifestRow:
    """Publish a manifest (id ``dm-<uuid4>``) of ``partitions`` for one shard of a dataset, atomically.

    Under a lock on the dataset row: the new manifest takes the dataset's next
    version (across shards), status ``published`` and ``published_at = now()``; the
    shard's previously published manifest becomes ``superseded`` and the new one's
    parent; the partitions are written with COPY and counted into the totals. A
    partition whose file or ingestion signature the dataset already has, or that
    repeats one of the batch, rolls everything back with DuplicatePartitionError.
    """
    with atomic(
        conn,
        f"publishing a manifest for dataset {dataset_id}",
        unique=_on_unique(dataset_id),
        foreign_key=_on_foreign_key(dataset_id),
    ):
        dataset = lock_dataset(conn, dataset_id)
        problem = _duplicate_in_batch(partitions) or _duplicate_in_catalog(conn, dataset_id, partitions)
        if problem:
            raise _duplicate_error(dataset, problem)
        parent = _supersede(conn, dataset_id, shard)
        manifest = _insert_manifest(conn, {
            "id": new_id("dm"),
            "dataset_id": dataset_id,
            "manifest_shard": shard,
            "schema_version_id": schema_version_id,
            "parent_manifest_id": parent,
            "summary": Jsonb(dict(summary or {})),
            "statistics": Jsonb(dict(statistics or {})),
            "metadata": Jsonb(dict(metadata or {})),
            "partition_count": len(partitions),
            "total_rows": sum(p.row_count or 0 for p in partitions),
            "total_bytes": sum(p.file_size_bytes or 0 for p in partitions),
            "created_by": created_by,
        })
        _copy_partitions(conn, manifest, partitions)
    return manifest


def get_published_manifest(conn: Connection, dataset_id: str, shard: str = "root") -> ManifestRow | None:
    """The shard's published manifest, or None."""
    query = sql.SQL(
        "SELECT {cols} FROM {table} WHERE dataset_id = %s AND manifest_shard = %s AND status = 'published'"
    ).format(cols=_MANIFEST_COLUMNS, table=MANIFESTS)
    with atomic(conn, f"reading the published manifest of dataset {dataset_id}"), conn.cursor(row_factory=class_row(ManifestRow)) as cur:
        return cur.execute(query, (dataset_id, shard)).fetchone()


def list_manifests(conn: Connection, dataset_id: str) -> list[ManifestRow]:
    """Every manifest of the dataset (all shards and statuses), by version."""
    query = sql.SQL("SELECT {cols} FROM {table} WHERE dataset_id = %s ORDER BY version").format(
        cols=_MANIFEST_COLUMNS, table=MANIFESTS
    )
    with atomic(conn, f"listing manifests of dataset {dataset_id}"), conn.cursor(row_factory=class_row(ManifestRow)) as cur:
        return cur.execute(query, (dataset_id,)).fetchall()


def list_partitions(conn: Connection, manifest_id: str) -> list[PartitionRow]:
    """The manifest's partitions, by start time and file path."""
    query = sql.SQL(
        "SELECT {cols}, created_at FROM {table} WHERE manifest_id = %s ORDER BY start_time, file_path"
    ).format(cols=sql.SQL(", ").join(map(sql.Identifier, _PARTITION_COLUMNS)), table=PARTITIONS)
    with atomic(conn, f"listing partitions of manifest {manifest_id}"), conn.cursor(row_factory=class_row(PartitionRow)) as cur:
        return cur.execute(query, (manifest_id,)).fetchall()
