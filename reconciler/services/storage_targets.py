"""Storage targets (``timestore.storage_targets``): read, create, update and delete."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from reconciler.errors import NotFoundError
from reconciler.services._common import (
    NEXT_UPDATED_AT,
    SAME_MILLISECOND,
    Connection,
    Timestamp,
    atomic,
    conflict,
    lock_fresh,
)
from reconciler.services.rows import StorageTargetRow

TABLE = sql.Identifier("timestore", "storage_targets")
UPDATABLE_FIELDS = frozenset({"kind", "description", "config"})

_COLUMNS = sql.SQL("id, name, kind, description, config, created_at, updated_at")


def storage_target_id(name: str) -> str:
    """The id a new target gets: ``st-<name>``, as the service names its own default target."""
    return f"st-{name}"


def address(name: str) -> str:
    """The address that names a storage target in messages: ``storage-target:<name>``."""
    return f"storage-target:{name}"


def _fetch(conn: Connection, name: str) -> StorageTargetRow | None:
    """One storage target by name; the caller holds the transaction."""
    query = sql.SQL("SELECT {cols} FROM {table} WHERE name = %s").format(cols=_COLUMNS, table=TABLE)
    with conn.cursor(row_factory=class_row(StorageTargetRow)) as cur:
        return cur.execute(query, (name,)).fetchone()


def get_storage_target(conn: Connection, name: str) -> StorageTargetRow | None:
    """The storage target called ``name``, or None."""
    with atomic(conn, f"reading {address(name)}"):
        return _fetch(conn, name)


def list_storage_targets(conn: Connection) -> list[StorageTargetRow]:
    """Every storage target, ordered by name."""
    query = sql.SQL("SELECT {cols} FROM {table} ORDER BY name").format(cols=_COLUMNS, table=TABLE)
    with atomic(conn, "listing storage targets"), conn.cursor(row_factory=class_row(StorageTargetRow)) as cur:
        return cur.execute(query).fetchall()


def create_storage_target(
    conn: Connection,
    *,
    name: str,
    kind: str,
    description: str | None = None,
    config: Mapping[str, Any] | None = None,
) -> StorageTargetRow:
    """Insert a storage target with id ``st-<name>``; ConflictError when it already exists."""
    query = sql.SQL(
        "INSERT INTO {table} (id, name, kind, description, config) VALUES (%s, %s, %s, %s, %s) "
        "RETURNING {cols}"
    ).format(table=TABLE, cols=_COLUMNS)
    params = (storage_target_id(name), name, kind, description, Jsonb(dict(config or {})))
    with atomic(
        conn,
        f"creating {address(name)}",
        unique=conflict(f"{address(name)} already exists", address(name)),
    ), conn.cursor(row_factory=class_row(StorageTargetRow)) as cur:
        row = cur.execute(query, params).fetchone()
    assert row is not None  # INSERT ... RETURNING yields the row it wrote
    return row


def update_storage_target(
    conn: Connection,
    name: str,
    *,
    expected_updated_at: Timestamp,
    changes: Mapping[str, Any],
) -> StorageTargetRow:
    """Change some of ``kind``, ``description``, ``config`` if the target is as the caller saw it.

    ``expected_updated_at`` is compared to the millisecond; a mismatch raises
    ConflictError. ``updated_at`` moves forward when a field changes; changes equal
    to the current values write nothing.
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"storage targets cannot change {', '.join(sorted(unknown))}")
    wanted = {f: dict(v) if f == "config" else v for f, v in changes.items()}
    with atomic(conn, f"updating {address(name)}"):
        lock_fresh(conn, TABLE, "name", name, expected_updated_at, address(name))
        current = _fetch(conn, name)
        assert current is not None  # locked above
        changed = {f: v for f, v in wanted.items() if getattr(current, f) != v}
        if changed:
            assignments = sql.SQL(", ").join(
                sql.SQL("{} = %s").format(sql.Identifier(field)) for field in changed
            )
            values = [Jsonb(v) if f == "config" else v for f, v in changed.items()]
            query = sql.SQL(
                "UPDATE {table} SET {assignments}, updated_at = {next} WHERE name = %s AND {same}"
            ).format(table=TABLE, assignments=assignments, next=NEXT_UPDATED_AT, same=SAME_MILLISECOND)
            conn.execute(query, (*values, name, expected_updated_at))
        row = _fetch(conn, name)
    assert row is not None  # locked above
    return row


def delete_storage_target(conn: Connection, name: str, *, expected_updated_at: Timestamp) -> None:
    """Delete a storage target the caller saw as it is; ConflictError while anything uses it."""
    query = sql.SQL("DELETE FROM {table} WHERE name = %s").format(table=TABLE)
    with atomic(
        conn,
        f"deleting {address(name)}",
        foreign_key=conflict(f"{address(name)} is still in use", address(name)),
    ):
        lock_fresh(conn, TABLE, "name", name, expected_updated_at, address(name))
        conn.execute(query, (name,))


def require_storage_target(conn: Connection, name: str) -> StorageTargetRow:
    """The storage target called ``name``; NotFoundError when there is none."""
    row = get_storage_target(conn, name)
    if row is None:
        raise NotFoundError(f"{address(name)} does not exist")
    return row
