-- Schema reconciler: the evidence an auditor needs beside each audit entry, and a
-- chain over the runs (docs/auditing.md).
--
-- Entries gain
--   merge_commit  the first-parent commit of the branch that brought commit_sha in (null:
--                 the commit is on the branch's first-parent line itself)
--   pull_request  the pull or merge request number it arrived through (from that merge's
--                 message, a squash commit's "(#N)", or the CI's own variables)
--   ci_url        the CI run (job) that applied it
--   applied_by    who applied, as the CI or the machine names them: the CI system, actor and
--                 run identifiers, or for a local apply its git identity and OS user
--   changed_at    for an out-of-band entry, when the change was made outside git
--   evidence      for an out-of-band entry, where who and when were read
--   mac           HMAC-SHA256 of hash under RECONCILER_AUDIT_KEY (null: written without a key)
-- and a fifth reason, out-of-band: a change made in the catalog outside git, observed by a
-- plan and recorded before the entry that reverts or adopts it.
--
-- Every column but mac is covered by the hash when it is not null (mac is computed from the
-- hash), so entries written before this migration still verify.
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS merge_commit text;
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS pull_request integer;
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS ci_url text;
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS applied_by jsonb;
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS changed_at timestamptz;
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS evidence text;
ALTER TABLE reconciler.audit_log ADD COLUMN IF NOT EXISTS mac text CHECK (mac ~ '^[0-9a-f]{64}$');

ALTER TABLE reconciler.audit_log DROP CONSTRAINT IF EXISTS audit_log_reason_check;
ALTER TABLE reconciler.audit_log ADD CONSTRAINT audit_log_reason_check
    CHECK (reason IN ('manifest', 'drift', 'secret', 'adoption', 'out-of-band'));

CREATE INDEX IF NOT EXISTS audit_log_commit_date ON reconciler.audit_log (commit_date);

-- Runs form a chain of their own, like the entries: seq 1, 2, 3, ... in the order they were
-- recorded (under the audit log's append lock), hash = sha256(prev_hash + canonical(run)),
-- and each run states how many entries it appended, from which seq, so that verify can
-- hold the two chains against each other. Runs recorded before this migration have no
-- seq and are not covered.
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS seq bigint CHECK (seq > 0);
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS command text;
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS applied_by jsonb;
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS ci_url text;
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS entries integer CHECK (entries >= 0);
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS first_entry bigint;
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS prev_hash text CHECK (prev_hash ~ '^[0-9a-f]{64}$');
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS hash text CHECK (hash ~ '^[0-9a-f]{64}$');
ALTER TABLE reconciler.runs ADD COLUMN IF NOT EXISTS mac text CHECK (mac ~ '^[0-9a-f]{64}$');

CREATE UNIQUE INDEX IF NOT EXISTS runs_seq ON reconciler.runs (seq);
