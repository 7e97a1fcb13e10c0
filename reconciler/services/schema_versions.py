"""Dataset schema versions (``timestore.dataset_schema_versions``): append-only, numbered per dataset."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from reconciler.services._common import Connection, atomic, conflict, new_id, sha256_of_json
from reconciler.services.datasets import lock_dataset
from reconciler.services.rows import SchemaVersionRow

TABLE = sql.Identifier("timestore", "dataset_schema_versions")

_COLUMNS = sql.SQL("id, dataset_id, version, description, schema, checksum, created_at")


def schema_checksum(schema: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the schema's canonical JSON: sorted keys, no spaces, UTF-8."""
    return sha256_of_json(schema)


def append_schema_version(
    conn: Connection,
    dataset_id: str,
    schema: Mapping[str, Any],
    description: str | None = None,
) -> SchemaVersionRow:
    """Append the next schema version (previous + 1, from 1) with id ``dsv-<uuid4>``.

    The dataset row is locked ``FOR UPDATE`` so concurrent appends get consecutive
    numbers instead of colliding; NotFoundError when the dataset does not exist.
    """
    query = sql.SQL(
        "INSERT INTO {table} (id, dataset_id, version, description, schema, checksum) "
        "SELECT %s, %s, COALESCE(MAX(version), 0) + 1, %s, %s, %s FROM {table} WHERE dataset_id = %s "
        "RETURNING {cols}"
    ).format(table=TABLE, cols=_COLUMNS)
    body = dict(schema)
    params = (new_id("dsv"), dataset_id, description, Jsonb(body), schema_checksum(body), dataset_id)
    with atomic(
        conn,
        f"appending a schema version to dataset {dataset_id}",
        unique=conflict(f"dataset {dataset_id} got a schema version concurrently; retry"),
    ):
        lock_dataset(conn, dataset_id)
        with conn.cursor(row_factory=class_row(SchemaVersionRow)) as cur:
            row = cur.execute(query, params).fetchone()
    assert row is not None  # INSERT ... SELECT of an aggregate always yields one row
    return row


def list_schema_versions(conn: Connection, dataset_id: str) -> list[SchemaVersionRow]:
    """The dataset's schema versions, oldest (version 1) first."""
    query = sql.SQL("SELECT {cols} FROM {table} WHERE dataset_id = %s ORDER BY version").format(
        cols=_COLUMNS, table=TABLE
    )
    with atomic(conn, f"listing schema versions of dataset {dataset_id}"), conn.cursor(row_factory=class_row(SchemaVersionRow)) as cur:
        return cur.execute(query, (dataset_id,)).fetchall()
