-- Schema reconciler: the reconciler's own bookkeeping. Nothing here is read by
-- the platform's services.

CREATE SCHEMA IF NOT EXISTS reconciler;

-- One row per catalog object the reconciler manages: which source (tree) manages
-- it, what the manifest asked for at the last apply (the "last applied" side of
-- the three-way merge), whether it is protected, and where it was declared.
CREATE TABLE reconciler.managed_objects (
    address text PRIMARY KEY,
    kind text NOT NULL CHECK (kind IN ('storage-target', 'dataset', 'record')),
    source text NOT NULL,
    applied jsonb NOT NULL DEFAULT '{}'::jsonb,
    protect boolean NOT NULL DEFAULT false,
    commit_sha text,
    path text,
    line integer,
    end_line integer,
    run_id text,
    applied_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX managed_objects_source ON reconciler.managed_objects (source, kind);

-- One row per apply run, whatever its outcome.
CREATE TABLE reconciler.runs (
    run_id text PRIMARY KEY,
    source text NOT NULL,
    applier text NOT NULL,
    commit_sha text,
    plan_digest text,
    started_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    outcome text NOT NULL DEFAULT 'running'
        CHECK (outcome IN ('running', 'applied', 'no-op', 'failed', 'refused')),
    counts jsonb NOT NULL DEFAULT '{}'::jsonb,
    message text
);
