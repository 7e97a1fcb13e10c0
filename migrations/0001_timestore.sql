-- Schema timestore: the time-series store's catalog tables, as the timestore
-- service lays them out (SPEC section 2). Every statement is written to succeed
-- on a catalog the service already created: IF NOT EXISTS throughout, inline
-- constraints so PostgreSQL gives them the same default names the service's do
-- (datasets_slug_key, datasets_status_check, ...), and index names that match
-- the service's own so neither side creates a second copy of the other's.
-- The runner holds pg_advisory_lock(hashtext('timestore:migrations')) while
-- this file runs, the lock the timestore service takes for its migrations.

CREATE SCHEMA IF NOT EXISTS timestore;

CREATE TABLE IF NOT EXISTS timestore.storage_targets (
    id text PRIMARY KEY,
    name text NOT NULL UNIQUE,
    kind text NOT NULL CHECK (kind IN ('clickhouse', 'local', 's3', 'gcs', 'azure_blob')),
    description text,
    config jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS timestore.datasets (
    id text PRIMARY KEY,
    slug text NOT NULL CONSTRAINT datasets_slug_key UNIQUE,
    name text NOT NULL,
    description text,
    status text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'inactive')),
    write_format text NOT NULL DEFAULT 'clickhouse' CHECK (write_format IN ('clickhouse')),
    default_storage_target_id text REFERENCES timestore.storage_targets (id),
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_datasets_status ON timestore.datasets (status);
CREATE INDEX IF NOT EXISTS idx_datasets_storage_target
    ON timestore.datasets (default_storage_target_id)
    WHERE default_storage_target_id IS NOT NULL;

CREATE TABLE IF NOT EXISTS timestore.dataset_schema_versions (
    id text PRIMARY KEY,
    dataset_id text NOT NULL REFERENCES timestore.datasets (id) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version > 0),
    description text,
    schema jsonb NOT NULL,
    checksum text,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (dataset_id, version)
);

CREATE TABLE IF NOT EXISTS timestore.dataset_manifests (
    id text PRIMARY KEY,
    dataset_id text NOT NULL REFERENCES timestore.datasets (id) ON DELETE CASCADE,
    version integer NOT NULL CHECK (version > 0),
    status text NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'published', 'superseded')),
    schema_version_id text REFERENCES timestore.dataset_schema_versions (id) ON DELETE SET NULL,
    parent_manifest_id text REFERENCES timestore.dataset_manifests (id) ON DELETE SET NULL,
    summary jsonb NOT NULL DEFAULT '{}'::jsonb,
    statistics jsonb NOT NULL DEFAULT '{}'::jsonb,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    partition_count integer NOT NULL DEFAULT 0,
    total_rows bigint NOT NULL DEFAULT 0,
    total_bytes bigint NOT NULL DEFAULT 0,
    created_by text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz,
    manifest_shard text NOT NULL DEFAULT 'root',
    UNIQUE (dataset_id, version)
);

-- Catalogs created by an earlier timestore release predate manifest sharding.
ALTER TABLE timestore.dataset_manifests
    ADD COLUMN IF NOT EXISTS manifest_shard text NOT NULL DEFAULT 'root';

CREATE INDEX IF NOT EXISTS idx_dataset_manifests_dataset
    ON timestore.dataset_manifests (dataset_id, version DESC);
-- At most one published manifest per dataset and shard.
CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_manifests_published_shard
    ON timestore.dataset_manifests (dataset_id, manifest_shard)
    WHERE status = 'published';

CREATE TABLE IF NOT EXISTS timestore.dataset_partitions (
    id text PRIMARY KEY,
    dataset_id text NOT NULL REFERENCES timestore.datasets (id) ON DELETE CASCADE,
    manifest_id text NOT NULL REFERENCES timestore.dataset_manifests (id) ON DELETE CASCADE,
    partition_key jsonb NOT NULL,
    storage_target_id text NOT NULL REFERENCES timestore.storage_targets (id),
    file_format text CHECK (file_format IN ('clickhouse')),
    file_path text NOT NULL,
    file_size_bytes bigint,
    row_count bigint,
    start_time timestamptz NOT NULL,
    end_time timestamptz NOT NULL,
    checksum text,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    column_statistics jsonb NOT NULL DEFAULT '{}'::jsonb,
    column_bloom_filters jsonb NOT NULL DEFAULT '{}'::jsonb,
    ingestion_signature text,
    manifest_shard text NOT NULL DEFAULT 'root',
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (end_time >= start_time)
);

ALTER TABLE timestore.dataset_partitions
    ADD COLUMN IF NOT EXISTS column_statistics jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS column_bloom_filters jsonb NOT NULL DEFAULT '{}'::jsonb,
    ADD COLUMN IF NOT EXISTS ingestion_signature text,
    ADD COLUMN IF NOT EXISTS manifest_shard text NOT NULL DEFAULT 'root';

CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_partitions_path
    ON timestore.dataset_partitions (dataset_id, storage_target_id, file_path);
CREATE UNIQUE INDEX IF NOT EXISTS uq_dataset_partitions_ingestion_signature
    ON timestore.dataset_partitions (dataset_id, ingestion_signature)
    WHERE ingestion_signature IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_dataset_partitions_time
    ON timestore.dataset_partitions (dataset_id, start_time, end_time);
CREATE INDEX IF NOT EXISTS idx_dataset_partitions_manifest
    ON timestore.dataset_partitions (manifest_id);

CREATE TABLE IF NOT EXISTS timestore.dataset_retention_policies (
    dataset_id text PRIMARY KEY REFERENCES timestore.datasets (id) ON DELETE CASCADE,
    policy jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS timestore.dataset_access_audit (
    id text PRIMARY KEY,
    dataset_id text REFERENCES timestore.datasets (id) ON DELETE SET NULL,
    dataset_slug text NOT NULL,
    actor_id text,
    actor_scopes text[] NOT NULL DEFAULT '{}'::text[],
    action text NOT NULL,
    success boolean NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_dataset
    ON timestore.dataset_access_audit (dataset_id, created_at DESC);
CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_slug
    ON timestore.dataset_access_audit (dataset_slug, created_at DESC);

CREATE TABLE IF NOT EXISTS timestore.lifecycle_audit_log (
    id text PRIMARY KEY,
    dataset_id text NOT NULL REFERENCES timestore.datasets (id) ON DELETE CASCADE,
    manifest_id text REFERENCES timestore.dataset_manifests (id) ON DELETE SET NULL,
    event_type text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_lifecycle_audit_dataset
    ON timestore.lifecycle_audit_log (dataset_id, created_at DESC);
