"""Plumbing shared by the repository modules: atomic calls, error translation, ids, SQL fragments."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from reconciler.core.service_rules import new_id as new_id  # the services' id shape, one copy
from reconciler.core.canonical import canonical_json as canonical_json  # checksums: the one canonical text
from reconciler.core.service_rules import normalize_tags as normalize_tags  # the metastore's rule, one copy
from reconciler.errors import ConflictError, DatabaseError, NotFoundError, ReconcilerError
from reconciler.catalog.postgres.connection import explain

Connection = psycopg.Connection[Any]
"""Any psycopg connection; the repository sets its own row factory per cursor."""

ErrorFactory = Callable[[pg_errors.Diagnostic], ReconcilerError]

Timestamp = datetime | str
"""An ``updated_at`` the caller saw: a datetime, or ISO 8601 text such as the services' etags."""

# Every change moves updated_at strictly forward, by at least one millisecond, even
# when two changes land within the same millisecond: the services compare it to the
# millisecond for optimistic concurrency, so an unmoved value would hide a change.
NEXT_UPDATED_AT = sql.SQL("GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')")

# The services' optimistic-concurrency predicate, bound to the caller's expected value.
SAME_MILLISECOND = sql.SQL(
    "date_trunc('milliseconds', updated_at) = date_trunc('milliseconds', %s::timestamptz)"
)




def sha256_of_json(value: Any) -> str:
    """Hex SHA-256 of the canonical JSON text of ``value`` (UTF-8)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def iso(moment: datetime | None) -> str | None:
    """A timestamp as ISO 8601 text with milliseconds, as messages and audit payloads show it."""
    return moment.isoformat(timespec="milliseconds") if moment is not None else None


def shown(moment: Timestamp) -> str:
    """A caller's timestamp as messages show it (datetimes to the millisecond, text as given)."""
    return moment if isinstance(moment, str) else moment.isoformat(timespec="milliseconds")


@contextmanager
def atomic(
    conn: Connection,
    doing: str,
    *,
    unique: ErrorFactory | None = None,
    foreign_key: ErrorFactory | None = None,
) -> Iterator[None]:
    """Run the block in a transaction (a savepoint inside the caller's) and translate failures.

    The transaction is rolled back before any translation, so a raised error always
    leaves the catalog as it was. Unique violations become ``ConflictError`` and
    foreign-key violations ``ConflictError`` unless a factory says better; any other
    driver error becomes ``DatabaseError``. Our own errors pass through unchanged.
    """
    try:
        with conn.transaction():
            yield
    except pg_errors.UniqueViolation as error:
        if unique is not None:
            raise unique(error.diag) from error
        raise ConflictError(f"{doing}: {explain(error, conn)}") from error
    except pg_errors.ForeignKeyViolation as error:
        if foreign_key is not None:
            raise foreign_key(error.diag) from error
        raise ConflictError(f"{doing}: {explain(error, conn)}") from error
    except psycopg.Error as error:
        raise DatabaseError(f"{doing} failed: {explain(error, conn)}") from error


def lock_fresh(
    conn: Connection,
    table: sql.Composable,
    key_column: str,
    key: str,
    expected_updated_at: Timestamp,
    address: str,
) -> None:
    """Lock one row for change and check the caller saw its current ``updated_at``.

    Raises ``NotFoundError`` when the row is missing, and ``ConflictError`` naming
    what the caller expected and what the catalog has now when it moved since.
    """
    query = sql.SQL(
        "SELECT updated_at, {same} AS fresh FROM {table} WHERE {key} = %s FOR UPDATE"
    ).format(same=SAME_MILLISECOND, table=table, key=sql.Identifier(key_column))
    row = conn.execute(query, (expected_updated_at, key)).fetchone()
    if row is None:
        raise NotFoundError(f"{address} does not exist")
    current, fresh = row
    if not fresh:
        raise ConflictError(
            f"{address} changed since it was read: expected updated_at {shown(expected_updated_at)}, "
            f"the catalog has {iso(current)}",
            address=address,
        )


def not_found(message: str) -> ErrorFactory:
    """An error factory for a foreign-key violation that means a named object is missing."""

    def build(diag: pg_errors.Diagnostic) -> ReconcilerError:
        """The NotFoundError, whatever the server's detail."""
        return NotFoundError(message)

    return build


def conflict(message: str, address: str | None = None) -> ErrorFactory:
    """An error factory for a violation best told as a fixed conflict message."""

    def build(diag: pg_errors.Diagnostic) -> ReconcilerError:
        """The ConflictError, with the server's detail (the key that collided) appended."""
        detail = f" ({diag.message_detail})" if diag.message_detail else ""
        return ConflictError(f"{message}{detail}", address=address)

    return build
