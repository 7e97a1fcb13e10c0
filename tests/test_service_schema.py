"""Our migrations against the services' own, table by table: every column (type, nullability,
default), every constraint and every index of each table our migrations create in schemas
timestore and metastore is exactly what the services' migrations make of it, whichever
side created the catalog first, and a catalog an older reconciler release created is
brought there too."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.catalog.postgres.migrations import load_migrations, migrate, migrations_dir

from .conftest import _create_database, _drop_database
from .services_ddl import run_services_migrations

SCHEMAS = ("timestore", "metastore")

Shape = dict[str, Any]


def tables(conn: psycopg.Connection[Any]) -> list[tuple[str, str]]:
    """The ordinary tables of the services' schemas."""
    return conn.execute(
        "SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = ANY(%s) AND c.relkind = 'r' ORDER BY 1, 2", (list(SCHEMAS),)).fetchall()


def shape(conn: psycopg.Connection[Any], schema: str, table: str) -> Shape:
    """What the services can notice of a table: each column's type, nullability and default;
    each constraint (primary and unique keys, foreign keys, checks) by name and definition;
    each index (unique and partial ones included) by name and definition."""
    relation = f"{schema}.{table}"
    columns = {name: (kind, not_null, default) for name, kind, not_null, default in conn.execute(
        """SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid)
           FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
           WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped""", (relation,))}
    constraints = dict(conn.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass",
        (relation,)).fetchall())
    indexes = dict(conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s",
        (schema, table)).fetchall())
    return {"columns": columns, "constraints": constraints, "indexes": indexes}


def differences(ours: Shape, theirs: Shape) -> list[str]:
    """Each way ``ours`` differs from ``theirs``, in words."""
    found = []
    for part, noun in (("columns", "column"), ("constraints", "constraint"), ("indexes", "index")):
        for name in sorted(set(ours[part]) | set(theirs[part])):
            mine, their = ours[part].get(name), theirs[part].get(name)
            if mine != their:
                found.append(f"{noun} {name}: ours {mine}, the services' {their}")
    return found


def compare(ours_url: str, theirs_url: str) -> list[str]:
    """Every difference the services would notice in the tables our migrations create."""
    with psycopg.connect(ours_url) as ours, psycopg.connect(theirs_url) as theirs:
        ours_tables = [t for t in tables(ours) if t != ("timestore", "schema_migrations")
                       and t != ("metastore", "metastore_schema_migrations")]
        theirs_tables = set(tables(theirs))
        found = [f"{s}.{t}: not a table of the services" for s, t in ours_tables if (s, t) not in theirs_tables]
        for schema, table in ours_tables:
            if (schema, table) in theirs_tables:
                found += [f"{schema}.{table}: {d}" for d in differences(shape(ours, schema, table),
                                                                         shape(theirs, schema, table))]
    return found


@pytest.fixture(scope="module")
def services_catalog(pg_server: str) -> Iterator[str]:
    """A catalog the services' migrations alone created: the reference."""
    name = f"reconciler_services_{uuid.uuid4().hex[:10]}"
    url = _create_database(pg_server, name)
    with psycopg.connect(url, autocommit=True) as conn:
        run_services_migrations(conn)
    yield url
    _drop_database(pg_server, name)


def test_the_reference_is_the_services_whole_schema(services_catalog: str) -> None:
    with psycopg.connect(services_catalog) as conn:
        created = {f"{s}.{t}" for s, t in tables(conn)}
    assert {"timestore.dataset_partitions", "timestore.ingestion_batches", "timestore.migration_watermarks",
            "metastore.metastore_records", "metastore.metastore_record_idempotency"} <= created
    with psycopg.connect(services_catalog) as conn:
        partitions = shape(conn, "timestore", "dataset_partitions")
    assert partitions["columns"]["file_format"] == ("text", True, None)
    assert "uq_dataset_partitions_ingestion_signature" in partitions["indexes"]


def test_our_migrations_create_the_services_tables_exactly(db_url: str, services_catalog: str) -> None:
    assert compare(db_url, services_catalog) == []


def test_ours_on_a_catalog_the_services_created_leave_it_as_they_made_it(empty_db: str,
                                                                           services_catalog: str) -> None:
    with psycopg.connect(empty_db, autocommit=True) as conn:
        run_services_migrations(conn)
    migrate(empty_db)
    assert compare(empty_db, services_catalog) == []
    with psycopg.connect(empty_db) as conn, psycopg.connect(services_catalog) as theirs:
        # Tables only the services have are untouched too.
        for schema, table in tables(theirs):
            assert shape(conn, schema, table) == shape(theirs, schema, table), f"{schema}.{table}"


def test_the_services_on_a_catalog_we_created_change_nothing_of_ours(db_url: str, services_catalog: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        before = {t: shape(conn, *t) for t in tables(conn)}
        run_services_migrations(conn)
        run_services_migrations(conn)  # and their re-runs are no-ops
        after = {t: shape(conn, *t) for t in before}
    assert after == before
    assert compare(db_url, services_catalog) == []


def test_a_catalog_of_an_older_release_is_brought_to_the_services_schema(
        empty_db: str, services_catalog: str, tmp_path: Path) -> None:
    older = tmp_path / "migrations"
    shutil.copytree(migrations_dir(), older)
    for later in sorted(older.glob("*.sql")):  # the release before 0009 knew the files before it
        if later.name >= "0009":
            later.unlink()
    migrate(empty_db, directory=older)
    with psycopg.connect(empty_db, autocommit=True) as conn:
        # What ingestion could write while file_format was nullable.
        conn.execute("INSERT INTO timestore.storage_targets (id, name, kind) VALUES ('st-a', 'a', 'clickhouse')")
        conn.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-a', 'a', 'A')")
        conn.execute("INSERT INTO timestore.dataset_manifests (id, dataset_id, version) VALUES ('dm-a', 'ds-a', 1)")
        conn.execute("INSERT INTO timestore.dataset_partitions (id, dataset_id, manifest_id, partition_key, "
                     "storage_target_id, file_path, start_time, end_time) "
                     "VALUES ('dp-a', 'ds-a', 'dm-a', '{}', 'st-a', 'a/1', now(), now())")
    assert compare(empty_db, services_catalog) != []  # the gap 0009 closes
    applied = migrate(empty_db)
    assert [m.filename for m in applied][0] == "0009_service_schema.sql"
    assert [m.filename for m in applied] == [m.filename for m in load_migrations() if m.filename >= "0009"]
    assert compare(empty_db, services_catalog) == []
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT file_format FROM timestore.dataset_partitions").fetchall() == [("clickhouse",)]
    assert migrate(empty_db) == []


def test_the_differences_the_services_would_notice_are_reported(db_url: str, services_catalog: str) -> None:
    # The comparison itself: a column made nullable, a default dropped, an index missing
    # and a constraint renamed are each one difference, named.
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE timestore.dataset_partitions ALTER COLUMN file_format DROP NOT NULL")
        conn.execute("ALTER TABLE metastore.metastore_records ALTER COLUMN version DROP DEFAULT")
        conn.execute("DROP INDEX timestore.uq_dataset_partitions_ingestion_signature")
        conn.execute("ALTER TABLE timestore.datasets RENAME CONSTRAINT datasets_slug_key TO datasets_slug_unique")
    # (PostgreSQL 18 also lists NOT NULL as a constraint of its own; earlier servers do not.)
    found = [f for f in compare(db_url, services_catalog) if "_not_null:" not in f]
    assert [f.split(": ours")[0] for f in found] == [
        "metastore.metastore_records: column version",
        "timestore.dataset_partitions: column file_format",
        "timestore.dataset_partitions: index uq_dataset_partitions_ingestion_signature",
        "timestore.datasets: constraint datasets_slug_key",
        "timestore.datasets: constraint datasets_slug_unique",
        "timestore.datasets: index datasets_slug_key",
        "timestore.datasets: index datasets_slug_unique",
    ]
    assert found[1] == ("timestore.dataset_partitions: column file_format: ours ('text', False, None), "
                        "the services' ('text', True, None)")


def test_every_statement_touching_the_services_schemas_is_written_to_succeed_on_theirs() -> None:
    # The rule of SPEC section 2: what touches timestore or metastore finds its work done
    # on a catalog the services created (the tests above run it on one).
    checked = 0
    for migration in load_migrations():
        code = "\n".join(line.split("--", 1)[0] for line in migration.sql_text.splitlines())
        for statement in (" ".join(part.split()).upper() for part in code.split(";")):
            if not any(f"{schema}." in statement or statement.endswith(f"SCHEMA IF NOT EXISTS {schema}")
                       for schema in ("TIMESTORE", "METASTORE")):
                continue
            checked += 1
            if statement.startswith(("CREATE TABLE", "CREATE INDEX", "CREATE UNIQUE INDEX", "CREATE SCHEMA")) or (
                    "ADD COLUMN" in statement):
                assert "IF NOT EXISTS" in statement, f"{migration.filename}: {statement[:120]}"
            if statement.startswith("DROP "):
                assert "IF EXISTS" in statement, f"{migration.filename}: {statement[:120]}"
    assert checked > 30
