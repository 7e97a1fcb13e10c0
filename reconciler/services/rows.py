"""Frozen row types of the services' catalog tables, filled by psycopg's ``class_row``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

# Field names equal the column names (or the aliases the SELECTs give them), since
# ``class_row`` passes columns as keyword arguments.


@dataclass(frozen=True)
class StorageTargetRow:
    """One row of ``timestore.storage_targets``."""

    id: str
    name: str
    kind: str
    description: str | None
    config: dict[str, Any]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class DatasetRow:
    """One row of ``timestore.datasets``, with its retention policy when it has one."""

    id: str
    slug: str
    name: str
    description: str | None
    status: str
    write_format: str
    default_storage_target_id: str | None
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    retention_policy: dict[str, Any] | None = None


@dataclass(frozen=True)
class RetentionPolicyRow:
    """One row of ``timestore.dataset_retention_policies``."""

    dataset_id: str
    policy: dict[str, Any]
    updated_at: datetime


@dataclass(frozen=True)
class SchemaVersionRow:
    """One row of ``timestore.dataset_schema_versions`` (append-only)."""

    id: str
    dataset_id: str
    version: int
    description: str | None
    schema: dict[str, Any]
    checksum: str | None
    created_at: datetime


@dataclass(frozen=True)
class DatasetAuditRow:
    """One row of ``timestore.dataset_access_audit``."""

    id: str
    dataset_id: str | None
    dataset_slug: str
    actor_id: str | None
    actor_scopes: list[str]
    action: str
    success: bool
    metadata: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class LifecycleAuditRow:
    """One row of ``timestore.lifecycle_audit_log``."""

    id: str
    dataset_id: str
    manifest_id: str | None
    event_type: str
    payload: dict[str, Any]
    created_at: datetime


@dataclass(frozen=True)
class ManifestRow:
    """One row of ``timestore.dataset_manifests``."""

    id: str
    dataset_id: str
    version: int
    status: str
    schema_version_id: str | None
    parent_manifest_id: str | None
    summary: dict[str, Any]
    statistics: dict[str, Any]
    metadata: dict[str, Any]
    partition_count: int
    total_rows: int
    total_bytes: int
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    published_at: datetime | None
    manifest_shard: str


@dataclass(frozen=True)
class PartitionRow:
    """One row of ``timestore.dataset_partitions``."""

    id: str
    dataset_id: str
    manifest_id: str
    partition_key: dict[str, Any]
    storage_target_id: str
    file_format: str
    file_path: str
    file_size_bytes: int | None
    row_count: int | None
    start_time: datetime
    end_time: datetime
    checksum: str | None
    metadata: dict[str, Any]
    column_statistics: dict[str, Any]
    column_bloom_filters: dict[str, Any]
    ingestion_signature: str | None
    manifest_shard: str
    created_at: datetime


@dataclass(frozen=True)
class RecordRow:
    """One row of ``metastore.metastore_records``; ``deleted_at`` set means soft-deleted."""

    id: int
    namespace: str
    record_key: str
    metadata: dict[str, Any]
    tags: list[str]
    owner: str | None
    schema_hash: str | None
    version: int
    created_at: datetime
    updated_at: datetime
    deleted_at: datetime | None
    created_by: str | None
    updated_by: str | None

    @property
    def deleted(self) -> bool:
        """Whether the record is soft-deleted."""
        return self.deleted_at is not None


@dataclass(frozen=True)
class RecordAuditRow:
    """One row of ``metastore.metastore_record_audits``."""

    id: int
    record_id: int | None
    namespace: str
    record_key: str
    action: str
    actor: str | None
    previous_version: int | None
    version: int | None
    metadata: dict[str, Any] | None
    previous_metadata: dict[str, Any] | None
    tags: list[str] | None
    previous_tags: list[str] | None
    owner: str | None
    previous_owner: str | None
    schema_hash: str | None
    previous_schema_hash: str | None
    created_at: datetime
