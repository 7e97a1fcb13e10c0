"""The platform services' own catalog migrations, restated as data, and run the way the services run them.

The schema facts are those of the services' migration chains: the timestore's
``services/timestore/src/db/migrations.ts`` (001 to 014, run under
``pg_advisory_lock(hashtext('timestore:migrations'))`` and recorded in its
``schema_migrations``) and the metastore's ``services/metastore/src/db/migrations.ts``
(001 to 005, recorded in ``metastore_schema_migrations``). Each service sets
``search_path`` to its schema (then ``public``), creates unqualified objects with
``IF NOT EXISTS``, and runs each migration it has not recorded in one transaction.

The tests use them to prove the two directions of coexistence, and to compare our
migrations with theirs table by table (tests/test_service_schema.py). Only the
statements are restated here; nothing of the services is run.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

Migration = tuple[str, tuple[str, ...]]

_JSONB_OBJECT = "JSONB NOT NULL DEFAULT '{}'::jsonb"
_NOW = "TIMESTAMPTZ NOT NULL DEFAULT NOW()"

TIMESTORE: tuple[Migration, ...] = (
    ("001_timestore_core_schema", (
        f"""CREATE TABLE IF NOT EXISTS storage_targets (
            id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, description TEXT,
            config {_JSONB_OBJECT}, created_at {_NOW}, updated_at {_NOW},
            CHECK (kind IN ('clickhouse', 'local', 's3', 'gcs', 'azure_blob')))""",
        "CREATE INDEX IF NOT EXISTS idx_storage_targets_kind ON storage_targets(kind)",
        f"""CREATE TABLE IF NOT EXISTS datasets (
            id TEXT PRIMARY KEY, slug TEXT NOT NULL UNIQUE, name TEXT NOT NULL, description TEXT,
            status TEXT NOT NULL DEFAULT 'active', write_format TEXT NOT NULL DEFAULT 'clickhouse',
            default_storage_target_id TEXT REFERENCES storage_targets(id), metadata {_JSONB_OBJECT},
            created_at {_NOW}, updated_at {_NOW},
            CHECK (status IN ('active', 'inactive')), CHECK (write_format IN ('clickhouse')))""",
        "CREATE INDEX IF NOT EXISTS idx_datasets_status ON datasets(status)",
        """CREATE INDEX IF NOT EXISTS idx_datasets_storage_target ON datasets(default_storage_target_id)
            WHERE default_storage_target_id IS NOT NULL""",
        f"""CREATE TABLE IF NOT EXISTS dataset_schema_versions (
            id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            version INTEGER NOT NULL, description TEXT, schema JSONB NOT NULL, checksum TEXT,
            created_at {_NOW}, UNIQUE (dataset_id, version), CHECK (version > 0))""",
        "CREATE INDEX IF NOT EXISTS idx_dataset_schema_versions_dataset ON dataset_schema_versions(dataset_id)",
        f"""CREATE TABLE IF NOT EXISTS dataset_manifests (
            id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            version INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'draft',
            schema_version_id TEXT REFERENCES dataset_schema_versions(id) ON DELETE SET NULL,
            parent_manifest_id TEXT REFERENCES dataset_manifests(id) ON DELETE SET NULL,
            summary {_JSONB_OBJECT}, statistics {_JSONB_OBJECT}, metadata {_JSONB_OBJECT},
            partition_count INTEGER NOT NULL DEFAULT 0, total_rows BIGINT NOT NULL DEFAULT 0,
            total_bytes BIGINT NOT NULL DEFAULT 0, created_by TEXT, created_at {_NOW}, updated_at {_NOW},
            published_at TIMESTAMPTZ, UNIQUE (dataset_id, version), CHECK (version > 0),
            CHECK (status IN ('draft', 'published', 'superseded')))""",
        "CREATE INDEX IF NOT EXISTS idx_dataset_manifests_dataset ON dataset_manifests(dataset_id, version DESC)",
        "CREATE INDEX IF NOT EXISTS idx_dataset_manifests_status ON dataset_manifests(dataset_id, status)",
        """CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_manifests_published ON dataset_manifests(dataset_id)
            WHERE status = 'published'""",
        f"""CREATE TABLE IF NOT EXISTS dataset_partitions (
            id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            manifest_id TEXT NOT NULL REFERENCES dataset_manifests(id) ON DELETE CASCADE,
            partition_key JSONB NOT NULL, storage_target_id TEXT NOT NULL REFERENCES storage_targets(id),
            file_format TEXT NOT NULL, file_path TEXT NOT NULL, file_size_bytes BIGINT, row_count BIGINT,
            start_time TIMESTAMPTZ NOT NULL, end_time TIMESTAMPTZ NOT NULL, checksum TEXT,
            metadata {_JSONB_OBJECT}, column_statistics {_JSONB_OBJECT}, column_bloom_filters {_JSONB_OBJECT},
            ingestion_signature TEXT, created_at {_NOW},
            CHECK (file_format IN ('clickhouse')), CHECK (end_time >= start_time))""",
        "CREATE INDEX IF NOT EXISTS idx_dataset_partitions_time ON dataset_partitions(dataset_id, start_time, end_time)",
        "CREATE INDEX IF NOT EXISTS idx_dataset_partitions_manifest ON dataset_partitions(manifest_id)",
        """CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_partitions_path
            ON dataset_partitions(dataset_id, storage_target_id, file_path)""",
        """CREATE TABLE IF NOT EXISTS dataset_retention_policies (
            dataset_id TEXT PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE, policy JSONB NOT NULL,
            updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    )),
    ("002_timestore_ingestion_batches", (
        f"""CREATE TABLE IF NOT EXISTS ingestion_batches (
            id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            idempotency_key TEXT NOT NULL,
            manifest_id TEXT NOT NULL REFERENCES dataset_manifests(id) ON DELETE CASCADE,
            created_at {_NOW}, UNIQUE (dataset_id, idempotency_key))""",
    )),
    ("003_timestore_lifecycle_maintenance", (
        f"""CREATE TABLE IF NOT EXISTS lifecycle_job_runs (
            id TEXT PRIMARY KEY, job_kind TEXT NOT NULL,
            dataset_id TEXT REFERENCES datasets(id) ON DELETE SET NULL,
            operations TEXT[] NOT NULL DEFAULT '{{}}'::TEXT[], trigger_source TEXT NOT NULL, status TEXT NOT NULL,
            scheduled_for TIMESTAMPTZ, started_at {_NOW}, completed_at TIMESTAMPTZ, duration_ms INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0, error TEXT, metadata {_JSONB_OBJECT},
            created_at {_NOW}, updated_at {_NOW},
            CHECK (status IN ('queued', 'running', 'completed', 'failed', 'skipped')))""",
        "CREATE INDEX IF NOT EXISTS idx_lifecycle_job_runs_dataset ON lifecycle_job_runs(dataset_id, created_at DESC)",
        "CREATE INDEX IF NOT EXISTS idx_lifecycle_job_runs_status ON lifecycle_job_runs(status, created_at DESC)",
        f"""CREATE TABLE IF NOT EXISTS lifecycle_audit_log (
            id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            manifest_id TEXT REFERENCES dataset_manifests(id) ON DELETE SET NULL, event_type TEXT NOT NULL,
            payload {_JSONB_OBJECT}, created_at {_NOW})""",
        "CREATE INDEX IF NOT EXISTS idx_lifecycle_audit_dataset ON lifecycle_audit_log(dataset_id, created_at DESC)",
    )),
    ("004_timestore_dataset_access_audit", (
        f"""CREATE TABLE IF NOT EXISTS dataset_access_audit (
            id TEXT PRIMARY KEY, dataset_id TEXT REFERENCES datasets(id) ON DELETE SET NULL,
            dataset_slug TEXT NOT NULL, actor_id TEXT, actor_scopes TEXT[] NOT NULL DEFAULT '{{}}'::TEXT[],
            action TEXT NOT NULL, success BOOLEAN NOT NULL, metadata {_JSONB_OBJECT}, created_at {_NOW})""",
        "CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_dataset ON dataset_access_audit(dataset_id, created_at DESC)",
        "CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_slug ON dataset_access_audit(dataset_slug, created_at DESC)",
    )),
    ("005_timestore_filestore_activity_state", (
        f"""CREATE TABLE IF NOT EXISTS filestore_node_state (
            node_id BIGINT PRIMARY KEY, backend_mount_id BIGINT, path TEXT, state TEXT, consistency_state TEXT,
            size_bytes BIGINT, last_observed_at {_NOW}, last_journal_id BIGINT, updated_at {_NOW})""",
        "CREATE INDEX IF NOT EXISTS idx_filestore_node_state_backend ON filestore_node_state(backend_mount_id)",
    )),
    ("006_timestore_dataset_access_audit_filters", (
        "DROP INDEX IF EXISTS idx_dataset_access_audit_dataset",
        """CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_dataset_filters
            ON dataset_access_audit(dataset_id, action, success, created_at DESC, id DESC)""",
    )),
    ("007_timestore_sql_saved_queries", (
        f"""CREATE TABLE IF NOT EXISTS sql_saved_queries (
            id TEXT PRIMARY KEY, statement TEXT NOT NULL, label TEXT, created_by TEXT, stats {_JSONB_OBJECT},
            created_at {_NOW}, updated_at {_NOW})""",
        "CREATE INDEX IF NOT EXISTS idx_sql_saved_queries_updated ON sql_saved_queries(updated_at DESC)",
    )),
    ("008_timestore_manifest_shards", (
        "ALTER TABLE dataset_manifests ADD COLUMN IF NOT EXISTS manifest_shard TEXT NOT NULL DEFAULT 'root'",
        "ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS manifest_shard TEXT NOT NULL DEFAULT 'root'",
        "UPDATE dataset_manifests SET manifest_shard = COALESCE(manifest_shard, 'root')",
        """UPDATE dataset_partitions p SET manifest_shard = m.manifest_shard FROM dataset_manifests m
            WHERE p.manifest_id = m.id""",
        "DROP INDEX IF EXISTS uq_dataset_manifests_published",
        """CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_manifests_published_shard
            ON dataset_manifests(dataset_id, manifest_shard) WHERE status = 'published'""",
        """CREATE INDEX IF NOT EXISTS idx_dataset_manifests_dataset_shard_version
            ON dataset_manifests(dataset_id, manifest_shard, version DESC)""",
        """CREATE INDEX IF NOT EXISTS idx_dataset_manifests_shard_status
            ON dataset_manifests(dataset_id, manifest_shard, status)""",
        """CREATE INDEX IF NOT EXISTS idx_dataset_partitions_shard_time
            ON dataset_partitions(dataset_id, manifest_shard, start_time, end_time)""",
        """CREATE OR REPLACE VIEW dataset_manifest_current AS
            SELECT dataset_id, manifest_shard, id AS manifest_id, version, schema_version_id, updated_at, published_at
            FROM dataset_manifests WHERE status = 'published'""",
    )),
    ("009_timestore_compaction_checkpoints", (
        f"""CREATE TABLE IF NOT EXISTS compaction_checkpoints (
            id TEXT PRIMARY KEY, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            manifest_id TEXT NOT NULL REFERENCES dataset_manifests(id) ON DELETE CASCADE,
            manifest_shard TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'pending',
            cursor INTEGER NOT NULL DEFAULT 0, total_groups INTEGER NOT NULL DEFAULT 0,
            retry_count INTEGER NOT NULL DEFAULT 0, last_error TEXT, metadata {_JSONB_OBJECT},
            stats {_JSONB_OBJECT}, updated_at {_NOW}, created_at {_NOW},
            CHECK (status IN ('pending', 'completed')), CHECK (cursor >= 0), CHECK (total_groups >= 0),
            CHECK (retry_count >= 0))""",
        "CREATE UNIQUE INDEX IF NOT EXISTS uq_compaction_checkpoints_manifest ON compaction_checkpoints(manifest_id)",
        """CREATE INDEX IF NOT EXISTS idx_compaction_checkpoints_dataset
            ON compaction_checkpoints(dataset_id, manifest_shard)""",
    )),
    ("010_timestore_partition_indexing", (
        f"ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS column_statistics {_JSONB_OBJECT}",
        f"ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS column_bloom_filters {_JSONB_OBJECT}",
    )),
    ("011_timestore_dataset_access_audit_ttl", (
        "CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_created_at ON dataset_access_audit(created_at ASC)",
    )),
    ("012_timestore_ingestion_signatures", (
        "ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS ingestion_signature TEXT",
        """CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_partitions_ingestion_signature
            ON dataset_partitions(dataset_id, ingestion_signature) WHERE ingestion_signature IS NOT NULL""",
    )),
    ("013_timestore_streaming_watermarks", (
        f"""CREATE TABLE IF NOT EXISTS streaming_watermarks (
            connector_id TEXT NOT NULL, dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
            dataset_slug TEXT NOT NULL, sealed_through TIMESTAMPTZ NOT NULL,
            backlog_lag_ms BIGINT NOT NULL DEFAULT 0, records_processed BIGINT NOT NULL DEFAULT 0,
            updated_at {_NOW}, PRIMARY KEY (connector_id, dataset_id))""",
        "CREATE INDEX IF NOT EXISTS idx_streaming_watermarks_dataset ON streaming_watermarks(dataset_id)",
    )),
    ("014_timestore_postgres_migration_watermarks", (
        f"""CREATE TABLE IF NOT EXISTS migration_watermarks (
            dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE, table_name TEXT NOT NULL,
            watermark_timestamp TIMESTAMPTZ NOT NULL, updated_at {_NOW}, PRIMARY KEY (dataset_id, table_name))""",
        "CREATE INDEX IF NOT EXISTS idx_migration_watermarks_updated ON migration_watermarks(updated_at DESC)",
    )),
)

METASTORE: tuple[Migration, ...] = (
    ("001_metastore_initial_schema", (
        f"""CREATE TABLE IF NOT EXISTS metastore_records (
            id BIGSERIAL PRIMARY KEY, namespace TEXT NOT NULL, record_key TEXT NOT NULL,
            metadata {_JSONB_OBJECT}, tags TEXT[] NOT NULL DEFAULT '{{}}'::text[], owner TEXT, schema_hash TEXT,
            version INTEGER NOT NULL DEFAULT 1, created_at {_NOW}, updated_at {_NOW}, deleted_at TIMESTAMPTZ,
            created_by TEXT, updated_by TEXT, UNIQUE (namespace, record_key))""",
        f"""CREATE TABLE IF NOT EXISTS metastore_record_audits (
            id BIGSERIAL PRIMARY KEY, record_id BIGINT, namespace TEXT NOT NULL, record_key TEXT NOT NULL,
            action TEXT NOT NULL, actor TEXT, previous_version INTEGER, version INTEGER, metadata JSONB,
            previous_metadata JSONB, created_at {_NOW})""",
        "CREATE INDEX IF NOT EXISTS idx_metastore_records_namespace_key ON metastore_records(namespace, record_key)",
        """CREATE INDEX IF NOT EXISTS idx_metastore_records_namespace_updated
            ON metastore_records(namespace, updated_at DESC) WHERE deleted_at IS NULL""",
        "CREATE INDEX IF NOT EXISTS idx_metastore_records_owner ON metastore_records(owner) WHERE owner IS NOT NULL",
        """CREATE INDEX IF NOT EXISTS idx_metastore_records_schema_hash ON metastore_records(schema_hash)
            WHERE schema_hash IS NOT NULL""",
        "CREATE INDEX IF NOT EXISTS idx_metastore_records_tags ON metastore_records USING GIN (tags)",
        "CREATE INDEX IF NOT EXISTS idx_metastore_records_metadata ON metastore_records USING GIN (metadata)",
        """CREATE INDEX IF NOT EXISTS idx_metastore_record_audits_record
            ON metastore_record_audits(namespace, record_key, created_at DESC)""",
    )),
    ("002_metastore_audit_enrichment", tuple(
        f"ALTER TABLE metastore_record_audits ADD COLUMN IF NOT EXISTS {column} {kind}"
        for column, kind in (("tags", "TEXT[]"), ("previous_tags", "TEXT[]"), ("owner", "TEXT"),
                             ("previous_owner", "TEXT"), ("schema_hash", "TEXT"), ("previous_schema_hash", "TEXT"))
    )),
    ("003_metastore_schema_registry", (
        f"""CREATE TABLE IF NOT EXISTS metastore_schema_registry (
            schema_hash TEXT PRIMARY KEY, definition JSONB NOT NULL, created_at {_NOW}, updated_at {_NOW})""",
        """CREATE INDEX IF NOT EXISTS idx_metastore_schema_registry_updated
            ON metastore_schema_registry(updated_at DESC)""",
    )),
    ("004_metastore_record_idempotency", (
        f"""CREATE TABLE IF NOT EXISTS metastore_record_idempotency (
            namespace TEXT NOT NULL, record_key TEXT NOT NULL, idempotency_key TEXT NOT NULL,
            payload_hash TEXT NOT NULL, record_version INTEGER NOT NULL, created_at {_NOW},
            PRIMARY KEY (namespace, record_key, idempotency_key))""",
        """CREATE INDEX IF NOT EXISTS idx_metastore_record_idempotency_created
            ON metastore_record_idempotency(created_at)""",
    )),
    ("005_metastore_full_text_search", (
        """CREATE INDEX IF NOT EXISTS idx_metastore_records_search ON metastore_records
            USING GIN (to_tsvector('simple', record_key || ' ' || COALESCE(metadata::text, '')))""",
    )),
)

# (schema, the table recording applied migrations, the advisory lock held while migrating, migrations)
SERVICES: tuple[tuple[str, str, str | None, tuple[Migration, ...]], ...] = (
    ("timestore", "schema_migrations", "timestore:migrations", TIMESTORE),
    ("metastore", "metastore_schema_migrations", None, METASTORE),
)


def run_services_migrations(conn: psycopg.Connection[Any]) -> None:
    """Run both services' migrations on an autocommit connection, as the services do: the
    schema, their bookkeeping table, then every migration not yet recorded, each in one
    transaction with its record (the timestore's under its advisory lock)."""
    for schema, bookkeeping, lock, migrations in SERVICES:
        table = sql.Identifier(bookkeeping)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(schema)))
        try:
            if lock:
                conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (lock,))
            conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {} "
                                 "(id TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())").format(table))
            done = {row[0] for row in conn.execute(sql.SQL("SELECT id FROM {}").format(table))}
            for name, statements in migrations:
                if name in done:
                    continue
                with conn.transaction():
                    for statement in statements:
                        conn.execute(statement.encode())
                    conn.execute(sql.SQL("INSERT INTO {} (id) VALUES (%s) ON CONFLICT DO NOTHING").format(table),
                                 (name,))
        finally:
            if lock:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", (lock,))
            conn.execute("RESET search_path")
