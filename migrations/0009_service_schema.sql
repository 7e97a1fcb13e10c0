-- Schemas timestore and metastore as the services' own migrations leave them
-- (services/timestore/src/db/migrations.ts, 001 to 014; services/metastore/src/db/
-- migrations.ts, 001 to 005), for every table 0001 and 0002 create:
-- tests/test_service_schema.py compares the two, column by column, constraint by
-- constraint and index by index. The services create a table only when it is
-- missing, so a difference in one we created first would stay for good.
--
-- Idempotent, and written to succeed both on a catalog the services created (where
-- every statement finds its work done) and on one an older reconciler release
-- created. The runner holds pg_advisory_xact_lock(hashtext('timestore:migrations'))
-- while it runs.

-- The services' dataset_partitions.file_format is NOT NULL; 0001 left it nullable.
-- 'clickhouse' is the only value its check admits, so rows written without one get it.
UPDATE timestore.dataset_partitions SET file_format = 'clickhouse' WHERE file_format IS NULL;
ALTER TABLE timestore.dataset_partitions ALTER COLUMN file_format SET NOT NULL;

-- The services' indexes that 0001 and 0002 did not create, under the services' names.
CREATE INDEX IF NOT EXISTS idx_storage_targets_kind ON timestore.storage_targets (kind);
CREATE INDEX IF NOT EXISTS idx_dataset_schema_versions_dataset
    ON timestore.dataset_schema_versions (dataset_id);
CREATE INDEX IF NOT EXISTS idx_dataset_manifests_status ON timestore.dataset_manifests (dataset_id, status);
CREATE INDEX IF NOT EXISTS idx_dataset_manifests_dataset_shard_version
    ON timestore.dataset_manifests (dataset_id, manifest_shard, version DESC);
CREATE INDEX IF NOT EXISTS idx_dataset_manifests_shard_status
    ON timestore.dataset_manifests (dataset_id, manifest_shard, status);
CREATE INDEX IF NOT EXISTS idx_dataset_partitions_shard_time
    ON timestore.dataset_partitions (dataset_id, manifest_shard, start_time, end_time);
CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_dataset_filters
    ON timestore.dataset_access_audit (dataset_id, action, success, created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS idx_dataset_access_audit_created_at
    ON timestore.dataset_access_audit (created_at ASC);

-- The timestore replaced this one by idx_dataset_access_audit_dataset_filters (its
-- migration 006), and 0001 created it again on catalogs that had dropped it.
DROP INDEX IF EXISTS timestore.idx_dataset_access_audit_dataset;

CREATE INDEX IF NOT EXISTS idx_metastore_records_namespace_key
    ON metastore.metastore_records (namespace, record_key);
CREATE INDEX IF NOT EXISTS idx_metastore_records_namespace_updated
    ON metastore.metastore_records (namespace, updated_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX IF NOT EXISTS idx_metastore_records_owner
    ON metastore.metastore_records (owner) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_metastore_records_schema_hash
    ON metastore.metastore_records (schema_hash) WHERE schema_hash IS NOT NULL;
CREATE INDEX IF NOT EXISTS idx_metastore_records_tags ON metastore.metastore_records USING gin (tags);
CREATE INDEX IF NOT EXISTS idx_metastore_records_metadata ON metastore.metastore_records USING gin (metadata);
CREATE INDEX IF NOT EXISTS idx_metastore_records_search ON metastore.metastore_records
    USING gin (to_tsvector('simple', record_key || ' ' || COALESCE(metadata::text, '')));
CREATE INDEX IF NOT EXISTS idx_metastore_schema_registry_updated
    ON metastore.metastore_schema_registry (updated_at DESC);

-- 0002's own index on live records by namespace is not the metastore's; its
-- idx_metastore_records_namespace_updated serves the same reads.
DROP INDEX IF EXISTS metastore.idx_metastore_records_namespace_live;
