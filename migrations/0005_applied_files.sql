-- Schema reconciler: which manifest files the last apply of each source read, by
-- content digest. A plan skips re-reading a file whose bytes are unchanged since that
-- apply when every object it declares still holds what was applied (checked in the
-- catalog); rows are trusted only while their run is the source's latest applied run.
CREATE TABLE IF NOT EXISTS reconciler.applied_files (
    source text NOT NULL,
    path text NOT NULL,            -- as objects' locations name it (repository-relative)
    digest text NOT NULL,          -- sha256 of the file's bytes, hex
    objects integer NOT NULL,      -- how many objects the file declared
    loader text NOT NULL,          -- the reconciler release (and reading rules) that read it
    run_id text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, path)
);

CREATE INDEX IF NOT EXISTS managed_objects_source_path ON reconciler.managed_objects (source, path);
