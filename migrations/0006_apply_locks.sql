-- Schema reconciler: the rows an apply locks. Applies of one source are serialised by
-- a lock on the row 'source:<source>' (created by the source's first apply), appends to
-- the audit log by a lock on the row 'audit-log'. Both are taken with
-- SELECT ... FOR UPDATE, which PostgreSQL allows only to a role with UPDATE privilege on
-- this table: docs/sql/roles.sql grants it to reconciler_apply alone, so no other role
-- can take or hold them, and every wait for them is bounded by apply's --lock-timeout.
-- They replace the advisory locks hashtext('reconciler:apply:<source>') and
-- hashtext('reconciler:audit') (0004_audit_log.sql), which any role that can connect
-- can take and hold.
CREATE TABLE IF NOT EXISTS reconciler.apply_locks (
    name text PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

INSERT INTO reconciler.apply_locks (name) VALUES ('audit-log') ON CONFLICT (name) DO NOTHING;
