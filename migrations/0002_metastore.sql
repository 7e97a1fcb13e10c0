-- Schema metastore: the metadata store's record tables, as the metastore
-- service lays them out (SPEC section 2). IF NOT EXISTS throughout so this
-- succeeds on a catalog the service already created, and inline constraints so
-- their names are the ones the service's own migrations produce.

CREATE SCHEMA IF NOT EXISTS metastore;

CREATE TABLE IF NOT EXISTS metastore.metastore_records (
    id bigserial PRIMARY KEY,
    namespace text NOT NULL,
    record_key text NOT NULL,
    metadata jsonb NOT NULL DEFAULT '{}'::jsonb,
    tags text[] NOT NULL DEFAULT '{}'::text[],
    owner text,
    schema_hash text,
    version integer NOT NULL DEFAULT 1,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    created_by text,
    updated_by text,
    UNIQUE (namespace, record_key)
);

CREATE INDEX IF NOT EXISTS idx_metastore_records_namespace_live
    ON metastore.metastore_records (namespace)
    WHERE deleted_at IS NULL;

-- record_id carries no foreign key: a purge removes the record but never its
-- audit history.
CREATE TABLE IF NOT EXISTS metastore.metastore_record_audits (
    id bigserial PRIMARY KEY,
    record_id bigint,
    namespace text NOT NULL,
    record_key text NOT NULL,
    action text NOT NULL,
    actor text,
    previous_version integer,
    version integer,
    metadata jsonb,
    previous_metadata jsonb,
    tags text[],
    previous_tags text[],
    owner text,
    previous_owner text,
    schema_hash text,
    previous_schema_hash text,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS idx_metastore_record_audits_record
    ON metastore.metastore_record_audits (namespace, record_key, created_at DESC);

-- Schema definitions that records point at through schema_hash. SPEC section 2
-- does not lay this table out; these are the columns the metastore service
-- reads and writes (see docs/architecture.md).
CREATE TABLE IF NOT EXISTS metastore.metastore_schema_registry (
    schema_hash text PRIMARY KEY,
    definition jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
