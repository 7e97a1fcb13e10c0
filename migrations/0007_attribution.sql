-- Schema reconciler: why each applied change was made. `reason` is one of
--   manifest  a commit asked for it (author_* name that commit's author)
--   drift     it reverts a change made outside git (author_* name whoever applied)
--   secret    a value resolved from ${env:...} changed (author_* name whoever applied)
--   adoption  it takes over an object the catalog already had (author_* name whoever applied)
-- and `commit_date` is the author date of the commit named by commit_sha.
--
-- Entries written before this migration have both columns null. The hash chain
-- covers a column added after the first version only when it is not null, so those
-- entries still verify (reconciler/audit.py).
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS reason text
    CHECK (reason IN ('manifest', 'drift', 'secret', 'adoption'));
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS commit_date timestamptz;

-- Whether an apply applied the whole tree at its commit, with nothing uncommitted (no
-- --target, a clean working tree): then every object this source manages was left
-- exactly as that commit declares it, and a later plan's history walk can take the
-- values at that commit from here instead of reading old file versions from git.
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS complete boolean NOT NULL DEFAULT false;
-- Whether the object is still declared as of its last apply (false once it was archived
-- because its manifest was removed).
ALTER TABLE reconciler.managed_objects ADD COLUMN IF NOT EXISTS declared boolean NOT NULL DEFAULT true;

-- The object's protect flag as this entry left it (null for entries written before this
-- column): the chain holds every change of the flag, so a flag changed by hand in
-- reconciler.managed_objects is detected before an apply archives or purges the object.
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS protect boolean;

-- Every config path of the object that ever held a value resolved from ${env:...}: its
-- value stays masked in plans and in the audit log after the reference is removed or
-- changed, and is never reported as drift.
ALTER TABLE reconciler.managed_objects ADD COLUMN IF NOT EXISTS secret_paths text[] NOT NULL DEFAULT '{}';
