"""The platform services' own catalog migrations, written out from SPEC section 2.

Used to prove the two directions of coexistence: our migrations on a catalog the
services created, and the services' migrations on a catalog we created. Like the
services, these statements use unqualified CREATE ... IF NOT EXISTS under their
own search_path and their own index names.
"""

TIMESTORE = [
    "CREATE SCHEMA IF NOT EXISTS timestore",
    "SET search_path TO timestore",
    """CREATE TABLE IF NOT EXISTS storage_targets (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        description TEXT,
        config JSONB NOT NULL DEFAULT '{}'::jsonb,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        CHECK (kind IN ('clickhouse', 'local', 's3', 'gcs', 'azure_blob')))""",
    """INSERT INTO storage_targets (id, name, kind, description)
        VALUES ('st-default-clickhouse', 'default-clickhouse', 'clickhouse', 'service default')
        ON CONFLICT (id) DO NOTHING""",
    """CREATE TABLE IF NOT EXISTS datasets (
        id TEXT PRIMARY KEY,
        slug TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        description TEXT,
        status TEXT NOT NULL DEFAULT 'active',
        write_format TEXT NOT NULL DEFAULT 'clickhouse',
        default_storage_target_id TEXT REFERENCES storage_targets(id),
        metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        CHECK (status IN ('active', 'inactive')),
        CHECK (write_format IN ('clickhouse')))""",
    "CREATE INDEX IF NOT EXISTS idx_datasets_status ON datasets(status)",
    """CREATE TABLE IF NOT EXISTS dataset_schema_versions (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        description TEXT,
        schema JSONB NOT NULL,
        checksum TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        UNIQUE (dataset_id, version),
        CHECK (version > 0))""",
    """CREATE TABLE IF NOT EXISTS dataset_manifests (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        version INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'draft',
        schema_version_id TEXT REFERENCES dataset_schema_versions(id) ON DELETE SET NULL,
        parent_manifest_id TEXT REFERENCES dataset_manifests(id) ON DELETE SET NULL,
        summary JSONB NOT NULL DEFAULT '{}'::jsonb,
        statistics JSONB NOT NULL DEFAULT '{}'::jsonb,
        metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
        partition_count INTEGER NOT NULL DEFAULT 0,
        total_rows BIGINT NOT NULL DEFAULT 0,
        total_bytes BIGINT NOT NULL DEFAULT 0,
        created_by TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        published_at TIMESTAMPTZ,
        UNIQUE (dataset_id, version),
        CHECK (version > 0),
        CHECK (status IN ('draft', 'published', 'superseded')))""",
    "ALTER TABLE dataset_manifests ADD COLUMN IF NOT EXISTS manifest_shard TEXT NOT NULL DEFAULT 'root'",
    """CREATE UNIQUE INDEX IF NOT EXISTS dataset_manifests_published_per_shard
        ON dataset_manifests(dataset_id, manifest_shard) WHERE status = 'published'""",
    """CREATE TABLE IF NOT EXISTS dataset_partitions (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        manifest_id TEXT NOT NULL REFERENCES dataset_manifests(id) ON DELETE CASCADE,
        partition_key JSONB NOT NULL,
        storage_target_id TEXT NOT NULL REFERENCES storage_targets(id),
        file_format TEXT CHECK (file_format IN ('clickhouse')),
        file_path TEXT NOT NULL,
        file_size_bytes BIGINT,
        row_count BIGINT,
        start_time TIMESTAMPTZ NOT NULL,
        end_time TIMESTAMPTZ NOT NULL,
        checksum TEXT,
        metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        CHECK (end_time >= start_time))""",
    "ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS column_statistics JSONB NOT NULL DEFAULT '{}'::jsonb",
    "ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS column_bloom_filters JSONB NOT NULL DEFAULT '{}'::jsonb",
    "ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS ingestion_signature TEXT",
    "ALTER TABLE dataset_partitions ADD COLUMN IF NOT EXISTS manifest_shard TEXT NOT NULL DEFAULT 'root'",
    """CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_partitions_path
        ON dataset_partitions(dataset_id, storage_target_id, file_path)""",
    """CREATE UNIQUE INDEX IF NOT EXISTS dataset_partitions_signature_unique
        ON dataset_partitions(dataset_id, ingestion_signature) WHERE ingestion_signature IS NOT NULL""",
    """CREATE TABLE IF NOT EXISTS dataset_retention_policies (
        dataset_id TEXT PRIMARY KEY REFERENCES datasets(id) ON DELETE CASCADE,
        policy JSONB NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    """CREATE TABLE IF NOT EXISTS dataset_access_audit (
        id TEXT PRIMARY KEY,
        dataset_id TEXT REFERENCES datasets(id) ON DELETE SET NULL,
        dataset_slug TEXT NOT NULL,
        actor_id TEXT,
        actor_scopes TEXT[] NOT NULL DEFAULT '{}'::TEXT[],
        action TEXT NOT NULL,
        success BOOLEAN NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    """CREATE TABLE IF NOT EXISTS lifecycle_audit_log (
        id TEXT PRIMARY KEY,
        dataset_id TEXT NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
        manifest_id TEXT REFERENCES dataset_manifests(id) ON DELETE SET NULL,
        event_type TEXT NOT NULL,
        payload JSONB NOT NULL DEFAULT '{}'::jsonb,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    # The service's own migration bookkeeping, in its schema.
    """CREATE TABLE IF NOT EXISTS schema_migrations (
        id TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    "RESET search_path",
]

METASTORE = [
    "CREATE SCHEMA IF NOT EXISTS metastore",
    "SET search_path TO metastore",
    """CREATE TABLE IF NOT EXISTS metastore_records (
        id BIGSERIAL PRIMARY KEY,
        namespace TEXT NOT NULL,
        record_key TEXT NOT NULL,
        metadata JSONB NOT NULL DEFAULT '{}'::jsonb,
        tags TEXT[] NOT NULL DEFAULT '{}'::TEXT[],
        owner TEXT,
        schema_hash TEXT,
        version INTEGER NOT NULL DEFAULT 1,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        deleted_at TIMESTAMPTZ,
        created_by TEXT,
        updated_by TEXT,
        UNIQUE (namespace, record_key))""",
    """CREATE TABLE IF NOT EXISTS metastore_record_audits (
        id BIGSERIAL PRIMARY KEY,
        record_id BIGINT,
        namespace TEXT NOT NULL,
        record_key TEXT NOT NULL,
        action TEXT NOT NULL,
        actor TEXT,
        previous_version INTEGER,
        version INTEGER,
        metadata JSONB,
        previous_metadata JSONB,
        tags TEXT[],
        previous_tags TEXT[],
        owner TEXT,
        previous_owner TEXT,
        schema_hash TEXT,
        previous_schema_hash TEXT,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    """CREATE TABLE IF NOT EXISTS metastore_schema_registry (
        schema_hash TEXT PRIMARY KEY,
        definition JSONB NOT NULL,
        created_at TIMESTAMPTZ NOT NULL DEFAULT NOW(),
        updated_at TIMESTAMPTZ NOT NULL DEFAULT NOW())""",
    "RESET search_path",
]


def run_services_migrations(conn: object) -> None:
    """Run both services' statements, each service in one transaction, as they do."""
    import psycopg

    assert isinstance(conn, psycopg.Connection)
    for statements in (TIMESTORE, METASTORE):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('timestore:migrations'))")
            for statement in statements:
                conn.execute(statement)
