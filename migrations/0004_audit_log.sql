-- The reconciler's audit log: one entry per applied change, written in the
-- apply's own transaction, chained by hash so that an entry changed, removed or
-- reordered afterwards is detected by `reconciler audit verify` (docs/auditing.md).
--
-- seq is not a sequence: a rolled-back apply would leave gaps, and verify treats
-- a gap as a removed entry. Apply takes the advisory lock
-- hashtext('reconciler:audit') for its transaction, reads the head (last seq and
-- hash) and appends seq + 1, + 2, ... after it.
--
-- hash = sha256(prev_hash || canonical serialisation of every other column);
-- the first entry's prev_hash is 64 zeros. The serialisation is documented in
-- reconciler/audit.py.

CREATE TABLE reconciler.audit_log (
    seq bigint PRIMARY KEY CHECK (seq > 0),
    recorded_at timestamptz NOT NULL,
    run_id text NOT NULL,
    source text NOT NULL,
    address text NOT NULL,
    kind text NOT NULL CHECK (kind IN ('storage-target', 'dataset', 'record')),
    action text NOT NULL CHECK (action IN ('create', 'update', 'archive', 'restore', 'purge')),
    before jsonb,            -- secrets masked as "***"
    after jsonb,             -- secrets as the ${env:NAME} text the manifest wrote
    fields text[] NOT NULL,
    commit_sha text,
    author_name text NOT NULL,
    author_email text NOT NULL,
    uncommitted boolean NOT NULL,
    manifest_path text,      -- relative to the root of the manifests' git repository
    manifest_line integer,
    applier text NOT NULL,   -- the CI actor, else the OS user that ran apply
    plan_digest text NOT NULL,
    prev_hash text NOT NULL CHECK (prev_hash ~ '^[0-9a-f]{64}$'),
    hash text NOT NULL UNIQUE CHECK (hash ~ '^[0-9a-f]{64}$')
);

CREATE INDEX audit_log_address ON reconciler.audit_log (address, seq);
CREATE INDEX audit_log_recorded_at ON reconciler.audit_log (recorded_at);
CREATE INDEX audit_log_run ON reconciler.audit_log (run_id);

-- Entries are never changed or removed by the reconciler (a purge keeps every
-- earlier entry of the object). This guard stops accidents; deliberate tampering
-- by someone who can drop it is what the hash chain is for.
CREATE FUNCTION reconciler.audit_log_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'reconciler.audit_log is append-only (% refused)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update_or_delete
    BEFORE UPDATE OR DELETE ON reconciler.audit_log
    FOR EACH ROW EXECUTE FUNCTION reconciler.audit_log_append_only();

CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON reconciler.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION reconciler.audit_log_append_only();
