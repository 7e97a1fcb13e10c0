"""The migration runner on a real PostgreSQL: from empty, twice, beside the services' own migrations."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from reconciler.catalog.postgres.migrations import (
    TIMESTORE_LOCK_KEY,
    load_migrations,
    migrate,
    migrations_dir,
    pending_sql,
)
from reconciler.cli import cli
from reconciler.errors import MigrationError
from tests.services_ddl import run_services_migrations

# SPEC section 2, column by column, as the services lay them out (tests/test_service_schema.py
# compares with their migrations): (data type, nullable, default contains).
EXPECTED_COLUMNS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "timestore.storage_targets": {
        "id": ("text", False, None),
        "name": ("text", False, None),
        "kind": ("text", False, None),
        "description": ("text", True, None),
        "config": ("jsonb", False, "'{}'"),
        "created_at": ("timestamp with time zone", False, "now()"),
        "updated_at": ("timestamp with time zone", False, "now()"),
    },
    "timestore.datasets": {
        "id": ("text", False, None),
        "slug": ("text", False, None),
        "name": ("text", False, None),
        "description": ("text", True, None),
        "status": ("text", False, "'active'"),
        "write_format": ("text", False, "'clickhouse'"),
        "default_storage_target_id": ("text", True, None),
        "metadata": ("jsonb", False, "'{}'"),
        "created_at": ("timestamp with time zone", False, "now()"),
        "updated_at": ("timestamp with time zone", False, "now()"),
    },
    "timestore.dataset_schema_versions": {
        "id": ("text", False, None),
        "dataset_id": ("text", False, None),
        "version": ("integer", False, None),
        "description": ("text", True, None),
        "schema": ("jsonb", False, None),
        "checksum": ("text", True, None),
        "created_at": ("timestamp with time zone", False, "now()"),
    },
    "timestore.dataset_manifests": {
        "id": ("text", False, None),
        "dataset_id": ("text", False, None),
        "version": ("integer", False, None),
        "status": ("text", False, "'draft'"),
        "schema_version_id": ("text", True, None),
        "parent_manifest_id": ("text", True, None),
        "summary": ("jsonb", False, "'{}'"),
        "statistics": ("jsonb", False, "'{}'"),
        "metadata": ("jsonb", False, "'{}'"),
        "partition_count": ("integer", False, "0"),
        "total_rows": ("bigint", False, "0"),
        "total_bytes": ("bigint", False, "0"),
        "created_by": ("text", True, None),
        "created_at": ("timestamp with time zone", False, "now()"),
        "updated_at": ("timestamp with time zone", False, "now()"),
        "published_at": ("timestamp with time zone", True, None),
        "manifest_shard": ("text", False, "'root'"),
    },
    "timestore.dataset_partitions": {
        "id": ("text", False, None),
        "dataset_id": ("text", False, None),
        "manifest_id": ("text", False, None),
        "partition_key": ("jsonb", False, None),
        "storage_target_id": ("text", False, None),
        "file_format": ("text", False, None),  # NOT NULL in the timestore's own schema
        "file_path": ("text", False, None),
        "file_size_bytes": ("bigint", True, None),
        "row_count": ("bigint", True, None),
        "start_time": ("timestamp with time zone", False, None),
        "end_time": ("timestamp with time zone", False, None),
        "checksum": ("text", True, None),
        "metadata": ("jsonb", False, "'{}'"),
        "column_statistics": ("jsonb", False, "'{}'"),
        "column_bloom_filters": ("jsonb", False, "'{}'"),
        "ingestion_signature": ("text", True, None),
        "manifest_shard": ("text", False, "'root'"),
        "created_at": ("timestamp with time zone", False, "now()"),
    },
    "timestore.dataset_retention_policies": {
        "dataset_id": ("text", False, None),
        "policy": ("jsonb", False, None),
        "updated_at": ("timestamp with time zone", False, "now()"),
    },
    "timestore.dataset_access_audit": {
        "id": ("text", False, None),
        "dataset_id": ("text", True, None),
        "dataset_slug": ("text", False, None),
        "actor_id": ("text", True, None),
        "actor_scopes": ("ARRAY", False, "'{}'"),
        "action": ("text", False, None),
        "success": ("boolean", False, None),
        "metadata": ("jsonb", False, "'{}'"),
        "created_at": ("timestamp with time zone", False, "now()"),
    },
    "timestore.lifecycle_audit_log": {
        "id": ("text", False, None),
        "dataset_id": ("text", False, None),
        "manifest_id": ("text", True, None),
        "event_type": ("text", False, None),
        "payload": ("jsonb", False, "'{}'"),
        "created_at": ("timestamp with time zone", False, "now()"),
    },
    "metastore.metastore_records": {
        "id": ("bigint", False, "nextval"),
        "namespace": ("text", False, None),
        "record_key": ("text", False, None),
        "metadata": ("jsonb", False, "'{}'"),
        "tags": ("ARRAY", False, "'{}'"),
        "owner": ("text", True, None),
        "schema_hash": ("text", True, None),
        "version": ("integer", False, "1"),
        "created_at": ("timestamp with time zone", False, "now()"),
        "updated_at": ("timestamp with time zone", False, "now()"),
        "deleted_at": ("timestamp with time zone", True, None),
        "created_by": ("text", True, None),
        "updated_by": ("text", True, None),
    },
    "metastore.metastore_record_audits": {
        "id": ("bigint", False, "nextval"),
        "record_id": ("bigint", True, None),
        "namespace": ("text", False, None),
        "record_key": ("text", False, None),
        "action": ("text", False, None),
        "actor": ("text", True, None),
        "previous_version": ("integer", True, None),
        "version": ("integer", True, None),
        "metadata": ("jsonb", True, None),
        "previous_metadata": ("jsonb", True, None),
        "tags": ("ARRAY", True, None),
        "previous_tags": ("ARRAY", True, None),
        "owner": ("text", True, None),
        "previous_owner": ("text", True, None),
        "schema_hash": ("text", True, None),
        "previous_schema_hash": ("text", True, None),
        "created_at": ("timestamp with time zone", False, "now()"),
    },
    "metastore.metastore_schema_registry": {
        "schema_hash": ("text", False, None),
        "definition": ("jsonb", False, None),
        "created_at": ("timestamp with time zone", False, "now()"),
        "updated_at": ("timestamp with time zone", False, "now()"),
    },
}


def columns(conn: psycopg.Connection[Any], table: str) -> dict[str, tuple[str, bool, str | None]]:
    schema, name = table.split(".")
    rows = conn.execute(
        """SELECT column_name, data_type, is_nullable = 'YES', column_default
           FROM information_schema.columns WHERE table_schema = %s AND table_name = %s""",
        (schema, name),
    ).fetchall()
    return {row[0]: (row[1], row[2], row[3]) for row in rows}


def assert_catalog_matches_spec(conn: psycopg.Connection[Any]) -> None:
    for table, expected in EXPECTED_COLUMNS.items():
        actual = columns(conn, table)
        assert set(actual) == set(expected), f"{table}: columns differ"
        for column, (data_type, nullable, default) in expected.items():
            got_type, got_nullable, got_default = actual[column]
            assert got_type == data_type, f"{table}.{column} type {got_type}"
            assert got_nullable == nullable, f"{table}.{column} nullability"
            if default is None:
                assert got_default is None, f"{table}.{column} default {got_default}"
            else:
                assert got_default is not None and default in got_default, f"{table}.{column} default"


def constraint_defs(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        """SELECT conrelid::regclass::text || ': ' || pg_get_constraintdef(oid)
           FROM pg_constraint WHERE connamespace::regnamespace::text IN ('timestore', 'metastore')"""
    ).fetchall()
    return {row[0] for row in rows}


def index_defs(conn: psycopg.Connection[Any]) -> set[str]:
    rows = conn.execute(
        "SELECT indexdef FROM pg_indexes WHERE schemaname IN ('timestore', 'metastore')"
    ).fetchall()
    return {row[0].split(" ON ", 1)[1] for row in rows}


def test_migrate_from_empty_creates_every_table_and_column_of_the_spec(empty_db: str) -> None:
    applied = migrate(empty_db)
    assert [m.filename for m in applied] == [m.filename for m in load_migrations()]
    with psycopg.connect(empty_db) as conn:
        assert_catalog_matches_spec(conn)
        history = conn.execute(
            "SELECT filename, checksum FROM reconciler.migration_history ORDER BY version"
        ).fetchall()
    assert history == [(m.filename, m.checksum) for m in load_migrations()]


def test_catalog_constraints_match_the_spec(db: psycopg.Connection[Any]) -> None:
    constraints = constraint_defs(db)
    for expected in [
        "timestore.storage_targets: CHECK ((kind = ANY (ARRAY['clickhouse'::text, 'local'::text, 's3'::text, 'gcs'::text, 'azure_blob'::text])))",
        "timestore.storage_targets: UNIQUE (name)",
        "timestore.datasets: UNIQUE (slug)",
        "timestore.datasets: CHECK ((status = ANY (ARRAY['active'::text, 'inactive'::text])))",
        "timestore.datasets: CHECK ((write_format = 'clickhouse'::text))",
        "timestore.datasets: FOREIGN KEY (default_storage_target_id) REFERENCES timestore.storage_targets(id)",
        "timestore.dataset_schema_versions: CHECK ((version > 0))",
        "timestore.dataset_schema_versions: UNIQUE (dataset_id, version)",
        "timestore.dataset_schema_versions: FOREIGN KEY (dataset_id) REFERENCES timestore.datasets(id) ON DELETE CASCADE",
        "timestore.dataset_manifests: CHECK ((status = ANY (ARRAY['draft'::text, 'published'::text, 'superseded'::text])))",
        "timestore.dataset_manifests: UNIQUE (dataset_id, version)",
        "timestore.dataset_manifests: FOREIGN KEY (schema_version_id) REFERENCES timestore.dataset_schema_versions(id) ON DELETE SET NULL",
        "timestore.dataset_manifests: FOREIGN KEY (parent_manifest_id) REFERENCES timestore.dataset_manifests(id) ON DELETE SET NULL",
        "timestore.dataset_partitions: CHECK ((end_time >= start_time))",
        "timestore.dataset_partitions: FOREIGN KEY (manifest_id) REFERENCES timestore.dataset_manifests(id) ON DELETE CASCADE",
        "timestore.dataset_partitions: FOREIGN KEY (storage_target_id) REFERENCES timestore.storage_targets(id)",
        "timestore.dataset_retention_policies: FOREIGN KEY (dataset_id) REFERENCES timestore.datasets(id) ON DELETE CASCADE",
        "timestore.dataset_access_audit: FOREIGN KEY (dataset_id) REFERENCES timestore.datasets(id) ON DELETE SET NULL",
        "timestore.lifecycle_audit_log: FOREIGN KEY (dataset_id) REFERENCES timestore.datasets(id) ON DELETE CASCADE",
        "timestore.lifecycle_audit_log: FOREIGN KEY (manifest_id) REFERENCES timestore.dataset_manifests(id) ON DELETE SET NULL",
        "metastore.metastore_records: UNIQUE (namespace, record_key)",
    ]:
        assert expected in constraints, expected
    # The constraint name the services rely on.
    name = db.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = 'timestore.datasets'::regclass AND contype = 'u'"
    ).fetchone()
    assert name == ("datasets_slug_key",)
    indexes = index_defs(db)
    assert "timestore.dataset_manifests USING btree (dataset_id, manifest_shard) WHERE (status = 'published'::text)" in indexes
    assert "timestore.dataset_partitions USING btree (dataset_id, storage_target_id, file_path)" in indexes
    assert "timestore.dataset_partitions USING btree (dataset_id, ingestion_signature) WHERE (ingestion_signature IS NOT NULL)" in indexes


def test_one_published_manifest_per_dataset_and_shard(db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-1', 'one', 'One')")
    db.execute(
        "INSERT INTO timestore.dataset_manifests (id, dataset_id, version, status) VALUES ('m1', 'ds-1', 1, 'published')"
    )
    db.execute(
        "INSERT INTO timestore.dataset_manifests (id, dataset_id, version, status, manifest_shard)"
        " VALUES ('m2', 'ds-1', 2, 'published', 'eu')"
    )
    with pytest.raises(psycopg.errors.UniqueViolation):
        db.execute(
            "INSERT INTO timestore.dataset_manifests (id, dataset_id, version, status) VALUES ('m3', 'ds-1', 3, 'published')"
        )


def test_second_migrate_is_a_no_op(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        before = conn.execute("SELECT count(*), max(applied_at) FROM reconciler.migration_history").fetchone()
    assert migrate(db_url) == []
    with psycopg.connect(db_url) as conn:
        after = conn.execute("SELECT count(*), max(applied_at) FROM reconciler.migration_history").fetchone()
    assert before == after


def test_ours_on_a_catalog_the_services_created(empty_db: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        run_services_migrations(conn)
        # What the timestore writes at start-up and at ingestion.
        conn.execute("INSERT INTO timestore.storage_targets (id, name, kind)"
                     " VALUES ('st-default-clickhouse', 'default-clickhouse', 'clickhouse')")
        conn.execute(
            "INSERT INTO timestore.datasets (id, slug, name, default_storage_target_id)"
            " VALUES ('ds-x', 'made-by-ingestion', 'Made by ingestion', 'st-default-clickhouse')"
        )
    migrate(empty_db)
    with psycopg.connect(empty_db) as conn:
        assert_catalog_matches_spec(conn)
        assert conn.execute("SELECT slug FROM timestore.datasets").fetchall() == [("made-by-ingestion",)]


def test_services_on_a_catalog_we_created(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        ours = {row[0] for row in conn.execute(
            "SELECT oid::regclass::text FROM pg_class WHERE relnamespace::regnamespace::text IN "
            "('timestore', 'metastore') AND relkind = 'r'")}
        before = (constraint_defs(conn), index_defs(conn))
        run_services_migrations(conn)
        run_services_migrations(conn)  # and their re-runs are no-ops too
        assert_catalog_matches_spec(conn)
        after = (constraint_defs(conn), index_defs(conn))
    # Their IF NOT EXISTS found our tables as theirs: on those, nothing is new (the tables
    # only they have, their bookkeeping among them, are created as on an empty catalog).
    def on_ours(definitions: set[str]) -> set[str]:
        return {d for d in definitions if d.split(":", 1)[0].split(" USING", 1)[0] in ours}

    assert on_ours(after[0]) == on_ours(before[0])
    assert on_ours(after[1]) == on_ours(before[1])


def test_edited_migration_is_refused(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    migrate(empty_db, directory=copy)
    target = copy / "0002_metastore.sql"
    target.write_text(target.read_text() + "\n-- an edit\n")
    with pytest.raises(MigrationError, match="0002_metastore.sql was edited after it was applied"):
        migrate(empty_db, directory=copy)


def test_new_migration_file_is_applied_next(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    migrate(empty_db, directory=copy)
    (copy / "9000_extra.sql").write_text("CREATE TABLE reconciler.extra (id int);\n")
    applied = migrate(empty_db, directory=copy)
    assert [m.filename for m in applied] == ["9000_extra.sql"]


def test_failing_migration_rolls_back_alone(empty_db: str, tmp_path: Path) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), copy)
    (copy / "9000_broken.sql").write_text(
        "CREATE TABLE reconciler.half (id int);\nSELECT * FROM no_such_table;\n"
    )
    with pytest.raises(MigrationError, match="9000_broken.sql failed and was rolled back"):
        migrate(empty_db, directory=copy)
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('reconciler.half')").fetchone() == (None,)
        done = [r[0] for r in conn.execute("SELECT filename FROM reconciler.migration_history")]
    assert "9000_broken.sql" not in done and "0001_timestore.sql" in done


def test_catalog_newer_than_this_release_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO reconciler.migration_history (version, filename, checksum) VALUES ('9999', '9999_future.sql', 'x')"
        )
    with pytest.raises(MigrationError, match="9999_future.sql, which this reconciler does not know"):
        migrate(db_url)


def test_migrate_waits_for_the_timestore_services_lock(empty_db: str) -> None:
    holder = psycopg.connect(empty_db, autocommit=True)
    holder.execute("SELECT pg_advisory_lock(hashtext(%s))", (TIMESTORE_LOCK_KEY,))
    finished: list[float] = []

    def run() -> None:
        migrate(empty_db)
        finished.append(time.monotonic())

    worker = threading.Thread(target=run)
    worker.start()
    time.sleep(1.0)
    assert not finished, "migrate changed schema timestore while the service held its lock"
    released = time.monotonic()
    holder.execute("SELECT pg_advisory_unlock(hashtext(%s))", (TIMESTORE_LOCK_KEY,))
    holder.close()
    worker.join(timeout=30)
    assert finished and finished[0] >= released


def test_pending_sql_lists_everything_on_an_empty_catalog_and_changes_nothing(empty_db: str) -> None:
    text = pending_sql(empty_db)
    for migration in load_migrations():
        assert f"-- >>> {migration.filename}" in text
    assert "pg_advisory_xact_lock(hashtext('timestore:migrations'))" in text
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('reconciler.migration_history')").fetchone() == (None,)
        assert conn.execute("SELECT to_regnamespace('timestore')").fetchone() == (None,)


def test_pending_sql_applied_by_psql_style_runner_equals_migrate(empty_db: str) -> None:
    # Teams that run migrations themselves execute the printed SQL as it is.
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute(pending_sql(empty_db).encode())
        assert_catalog_matches_spec(conn)
    assert migrate(empty_db) == []


def test_cli_migrate_and_sql(empty_db: str) -> None:
    runner = CliRunner()
    first = runner.invoke(cli, ["migrate", "--database-url", empty_db])
    assert first.exit_code == 0, first.output
    assert f"{len(load_migrations())} migration(s) applied" in first.output
    second = runner.invoke(cli, ["migrate", "--database-url", empty_db])
    assert second.exit_code == 0
    assert "is up to date" in second.output
    sql_out = runner.invoke(cli, ["migrate", "--sql", "--database-url", empty_db])
    assert sql_out.output == "-- The catalog schema is up to date; nothing to apply.\n"


def test_cli_connection_failure_is_one_line_without_password() -> None:
    runner = CliRunner()
    result = runner.invoke(
        cli, ["migrate", "--database-url", "postgresql://admin:s3cret-pw@127.0.0.1:9/catalog"]
    )
    assert result.exit_code == 1
    assert "s3cret-pw" not in result.output
    assert result.output.startswith("error: cannot connect to postgresql://admin@127.0.0.1:9/catalog:")
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
