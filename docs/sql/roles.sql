-- Least-privilege roles for the reconciler. Run once, as the catalog's owner, in the
-- catalog database, after `reconciler migrate` (which needs the owner's rights).
--
--   reconciler_plan   read-only: enough for `reconciler plan`, `import`, `audit log/verify/export`
--   reconciler_apply  what `reconciler apply` writes, and nothing more
--
-- Give each role a password or certificate as your installation requires
-- (ALTER ROLE ... PASSWORD ...); nothing here sets one.

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reconciler_plan') THEN
        CREATE ROLE reconciler_plan LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reconciler_apply') THEN
        CREATE ROLE reconciler_apply LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO reconciler_plan', current_database());
    -- TEMPORARY: apply stages its rows in temporary tables (COPY, then set-based SQL).
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO reconciler_apply', current_database());
END
$$;

-- Reading: every command reads the three schemas.
GRANT USAGE ON SCHEMA timestore, metastore, reconciler TO reconciler_plan, reconciler_apply;
GRANT SELECT ON ALL TABLES IN SCHEMA timestore, metastore, reconciler TO reconciler_plan, reconciler_apply;

-- The apply locks (migrations/0006_apply_locks.sql): row locks on reconciler.apply_locks,
-- which need UPDATE privilege, so only the apply role can take them. No other role needs
-- to read the table either; without SELECT a role cannot even LOCK TABLE it.
REVOKE ALL ON reconciler.apply_locks FROM PUBLIC, reconciler_plan;
GRANT SELECT, INSERT, UPDATE ON reconciler.apply_locks TO reconciler_apply;

-- Writing: the objects apply creates, updates, archives and purges ...
GRANT INSERT, UPDATE, DELETE ON
    timestore.storage_targets,
    timestore.datasets,
    timestore.dataset_retention_policies,
    metastore.metastore_records,
    reconciler.managed_objects,
    reconciler.applied_files
TO reconciler_apply;

-- ... and the audit rows written with them: appended, never changed. (Apply also reads
-- the services' audit rows, to name who changed an object outside git: SELECT above.)
-- A role that can INSERT into reconciler.audit_log and reconciler.runs could append a
-- well-chained fake entry; set RECONCILER_AUDIT_KEY where apply runs (a CI secret, never
-- in the database) so that such an entry fails `reconciler audit verify`, and use
-- `reconciler audit verify --replay` (docs/auditing.md).
GRANT INSERT ON
    timestore.dataset_access_audit,
    timestore.lifecycle_audit_log,
    metastore.metastore_record_audits,
    reconciler.audit_log,
    reconciler.runs
TO reconciler_apply;

-- The platform events apply queues in its transaction and delivers after it (migration 0010):
-- queued, then marked delivered (or failed), and removed a week after delivery. Delivering
-- also takes the 'event-outbox' row of reconciler.apply_locks (UPDATE above), so only the
-- apply role delivers; the read-only role can list what is pending (`reconciler events`).
GRANT INSERT, UPDATE, DELETE ON reconciler.event_outbox TO reconciler_apply;

-- Record and record-audit ids come from their bigserial sequences.
GRANT USAGE ON SEQUENCE
    metastore.metastore_records_id_seq,
    metastore.metastore_record_audits_id_seq
TO reconciler_apply;
