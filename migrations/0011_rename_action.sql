-- Schema reconciler: a rename (a dataset's slug or a storage target's name changed in
-- place, `renamedFrom:`) is an action of the audit log like the others.
ALTER TABLE reconciler.audit_log DROP CONSTRAINT IF EXISTS audit_log_action_check;
ALTER TABLE reconciler.audit_log ADD CONSTRAINT audit_log_action_check
    CHECK (action IN ('create', 'update', 'rename', 'archive', 'restore', 'purge'));
