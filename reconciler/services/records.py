"""Metastore records (``metastore.metastore_records``): versioned writes with their audit rows, bulk create, streaming reads."""

from __future__ import annotations

import uuid
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from reconciler.errors import ConflictError, NotFoundError
from reconciler.catalog.postgres import service_audit
from reconciler.services._common import Connection, atomic, conflict, iso, normalize_tags
from reconciler.services.rows import RecordAuditRow, RecordRow

TABLE = sql.Identifier("metastore", "metastore_records")
AUDIT_TABLE = sql.Identifier("metastore", "metastore_record_audits")
UPDATABLE_FIELDS = frozenset({"metadata", "tags", "owner", "schema_hash"})

_COLUMNS = sql.SQL(
    "id, namespace, record_key, metadata, tags, owner, schema_hash, version, "
    "created_at, updated_at, deleted_at, created_by, updated_by"
)
_RECORD_COPY_COLUMNS = (
    "id", "namespace", "record_key", "metadata", "tags", "owner", "schema_hash",
    "version", "created_by", "updated_by",
)
_RECORD_COPY_TYPES = ("int8", "text", "text", "jsonb", "text[]", "text", "text", "int4", "text", "text")

# How many rows iter_records fetches per round trip from its server-side cursor.
DEFAULT_BATCH_SIZE = 1000


@dataclass(frozen=True)
class NewRecord:
    """One record for ``create_records``; tags are trimmed and de-duplicated on write."""

    namespace: str
    key: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    tags: Sequence[str] = ()
    owner: str | None = None
    schema_hash: str | None = None


def address(namespace: str, key: str) -> str:
    """The address that names a record in messages: ``record:<namespace>/<key>``."""
    return f"record:{namespace}/{key}"


def _fetch(conn: Connection, namespace: str, key: str, *, lock: bool = False) -> RecordRow | None:
    """One record, soft-deleted or not, optionally locked; the caller holds the transaction."""
    query = sql.SQL("SELECT {cols} FROM {table} WHERE namespace = %s AND record_key = %s{lock}").format(
        cols=_COLUMNS, table=TABLE, lock=sql.SQL(" FOR UPDATE") if lock else sql.SQL("")
    )
    with conn.cursor(row_factory=class_row(RecordRow)) as cur:
        return cur.execute(query, (namespace, key)).fetchone()


# The metastore's create row for each new record (service_audit.record_audit_values).
_AUDIT_CREATED = sql.SQL(
    "INSERT INTO {audits} ({cols}) SELECT {values} FROM {table} r WHERE r.id = ANY(%(ids)s) ORDER BY r.id"
).format(audits=AUDIT_TABLE, cols=service_audit.RECORD_AUDIT_COLUMNS, table=TABLE,
         values=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_CREATED), sql.Placeholder("actor"),
                                                  "r", None))

_PURGE = service_audit.purge_records(sql.SQL("SELECT %(namespace)s::text AS namespace, %(key)s::text AS record_key"))


def get_record(conn: Connection, namespace: str, key: str) -> RecordRow | None:
    """The record, soft-deleted or not, or None."""
    with atomic(conn, f"reading {address(namespace, key)}"):
        return _fetch(conn, namespace, key)


def iter_records(
    conn: Connection, namespace: str | None = None, *, batch_size: int = DEFAULT_BATCH_SIZE
) -> Generator[RecordRow, None, None]:
    """Stream every record (soft-deleted included), optionally of one namespace, by namespace and key.

    Rows come from a server-side cursor ``batch_size`` at a time, inside a
    transaction that lasts until the iterator is exhausted or closed: consume it
    fully or close it (``contextlib.closing``) before using the connection again.
    """
    where = sql.SQL(" WHERE namespace = %s") if namespace is not None else sql.SQL("")
    query = sql.SQL("SELECT {cols} FROM {table}{where} ORDER BY namespace, record_key").format(
        cols=_COLUMNS, table=TABLE, where=where
    )
    params = (namespace,) if namespace is not None else ()
    with atomic(conn, "reading records"):
        name = f"reconciler_records_{uuid.uuid4().hex}"
        with conn.cursor(name, row_factory=class_row(RecordRow)) as cur:
            cur.itersize = batch_size
            cur.execute(query, params)
            yield from cur


def create_record(
    conn: Connection,
    *,
    namespace: str,
    key: str,
    metadata: Mapping[str, Any] | None = None,
    tags: Sequence[str] = (),
    owner: str | None = None,
    schema_hash: str | None = None,
    actor: str,
) -> RecordRow:
    """Insert a record at version 1 with a ``create`` audit row; ConflictError if it exists (even soft-deleted)."""
    query = sql.SQL(
        "INSERT INTO {table} (namespace, record_key, metadata, tags, owner, schema_hash, created_by, updated_by) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING {cols}"
    ).format(table=TABLE, cols=_COLUMNS)
    params = (namespace, key, Jsonb(dict(metadata or {})), normalize_tags(tags), owner, schema_hash, actor, actor)
    where = address(namespace, key)
    with atomic(conn, f"creating {where}", unique=conflict(f"{where} already exists", where)), conn.cursor(row_factory=class_row(RecordRow)) as cur:
        row = cur.execute(query, params).fetchone()
        assert row is not None  # INSERT ... RETURNING yields the row it wrote
        conn.execute(_AUDIT_CREATED, {"ids": [row.id], "actor": actor})
    return row


def _lock_at_version(conn: Connection, namespace: str, key: str, expected_version: int) -> RecordRow:
    """Lock the record; NotFoundError if absent, ConflictError if its version moved on."""
    where = address(namespace, key)
    row = _fetch(conn, namespace, key, lock=True)
    if row is None:
        raise NotFoundError(f"{where} does not exist")
    if row.version != expected_version:
        raise ConflictError(
            f"{where} changed since it was read: expected version {expected_version}, "
            f"the catalog has version {row.version} "
            f"(last updated by {row.updated_by or 'an unknown actor'} at {iso(row.updated_at)})",
            address=where,
        )
    return row


def _write(
    conn: Connection,
    before: RecordRow,
    assignments: sql.Composable,
    values: Mapping[str, Any],
    action: str,
    actor: str,
) -> RecordRow:
    """Apply one change: bump version and updated_at, stamp updated_by, and write the audit
    row of the new and the previous state, as the metastore does for ``action``."""
    query = sql.SQL(
        """WITH p AS (SELECT * FROM {table} WHERE id = %(id)s AND version = %(version)s),
                n AS (UPDATE {table} AS r SET {assignments}, version = r.version + 1,
                          updated_at = GREATEST(clock_timestamp(), r.updated_at + interval '1 millisecond'),
                          updated_by = %(actor)s
                      FROM p WHERE r.id = p.id RETURNING r.*),
                audit AS (INSERT INTO {audits} ({audit_cols}) SELECT {audit_values} FROM n JOIN p ON p.id = n.id)
           SELECT {cols} FROM n"""
    ).format(table=TABLE, assignments=assignments, audits=AUDIT_TABLE, audit_cols=service_audit.RECORD_AUDIT_COLUMNS,
             audit_values=service_audit.record_audit_values(sql.Literal(action), sql.Placeholder("actor"), "n", "p"),
             cols=_COLUMNS)
    with conn.cursor(row_factory=class_row(RecordRow)) as cur:
        after = cur.execute(query, {**values, "actor": actor, "id": before.id, "version": before.version}).fetchone()
    assert after is not None  # locked at this version by _lock_at_version
    return after


def update_record(
    conn: Connection,
    namespace: str,
    key: str,
    *,
    expected_version: int,
    changes: Mapping[str, Any],
    actor: str,
) -> RecordRow:
    """Change some of metadata, tags, owner, schema_hash if the record is at ``expected_version``.

    Bumps the version by one and writes an ``update`` audit row; changes equal to the
    current values write nothing. Works on soft-deleted records too (they stay deleted).
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"records cannot change {', '.join(sorted(unknown))}")
    wanted = dict(changes)
    if "tags" in wanted:
        wanted["tags"] = normalize_tags(wanted["tags"])
    if "metadata" in wanted:
        wanted["metadata"] = dict(wanted["metadata"])
    with atomic(conn, f"updating {address(namespace, key)}"):
        before = _lock_at_version(conn, namespace, key, expected_version)
        changed = {f: v for f, v in wanted.items() if getattr(before, f) != v}
        if not changed:
            return before
        assignments = sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(f), sql.Placeholder(f)) for f in changed)
        values = {f: Jsonb(v) if f == "metadata" else v for f, v in changed.items()}
        return _write(conn, before, assignments, values, service_audit.RECORD_UPDATED, actor)


def soft_delete_record(
    conn: Connection, namespace: str, key: str, *, expected_version: int, actor: str
) -> RecordRow:
    """Set ``deleted_at`` (version + 1, ``delete`` audit row); already deleted: no-op."""
    with atomic(conn, f"deleting {address(namespace, key)}"):
        before = _lock_at_version(conn, namespace, key, expected_version)
        if before.deleted:
            return before
        return _write(conn, before, sql.SQL("deleted_at = now()"), {}, service_audit.RECORD_DELETED, actor)


def restore_record(
    conn: Connection, namespace: str, key: str, *, expected_version: int, actor: str
) -> RecordRow:
    """Clear ``deleted_at`` (version + 1, ``restore`` audit row); not deleted: no-op."""
    with atomic(conn, f"restoring {address(namespace, key)}"):
        before = _lock_at_version(conn, namespace, key, expected_version)
        if not before.deleted:
            return before
        return _write(conn, before, sql.SQL("deleted_at = NULL"), {}, service_audit.RECORD_RESTORED, actor)


def purge_record(
    conn: Connection, namespace: str, key: str, *, expected_version: int, actor: str
) -> RecordRow:
    """Hard-delete the record as the metastore's purge does: every ``metastore_record_audits``
    row of its key goes with it and none is written, so the key, used again, starts a
    fresh history. (``actor`` is not stored anywhere by the purge itself; the caller's
    own log keeps who purged what.) Returns the row as it was."""
    with atomic(conn, f"purging {address(namespace, key)}"):
        before = _lock_at_version(conn, namespace, key, expected_version)
        conn.execute(_PURGE, {"namespace": namespace, "key": key})
    return before


def list_record_audits(conn: Connection, namespace: str, key: str) -> list[RecordAuditRow]:
    """The record's audit rows (purged records included), oldest first."""
    query = sql.SQL(
        "SELECT id, {cols}, created_at FROM {table} WHERE namespace = %s AND record_key = %s ORDER BY id"
    ).format(cols=service_audit.RECORD_AUDIT_COLUMNS, table=AUDIT_TABLE)
    with atomic(conn, f"reading the audit of {address(namespace, key)}"), conn.cursor(row_factory=class_row(RecordAuditRow)) as cur:
        return cur.execute(query, (namespace, key)).fetchall()


def _check_batch(conn: Connection, records: Sequence[NewRecord]) -> None:
    """Refuse a batch naming one record twice or a record that already exists."""
    seen: set[tuple[str, str]] = set()
    for record in records:
        identity = (record.namespace, record.key)
        if identity in seen:
            raise ConflictError(f"{address(*identity)} appears more than once in the batch", address=address(*identity))
        seen.add(identity)
    query = sql.SQL(
        "SELECT r.namespace, r.record_key FROM {table} AS r "
        "JOIN unnest(%s::text[], %s::text[]) AS b(namespace, record_key) "
        "ON r.namespace = b.namespace AND r.record_key = b.record_key "
        "ORDER BY r.namespace, r.record_key LIMIT 11"
    ).format(table=TABLE)
    existing = conn.execute(query, ([r.namespace for r in records], [r.key for r in records])).fetchall()
    if existing:
        names = ", ".join(address(ns, key) for ns, key in existing[:10])
        more = " and more" if len(existing) > 10 else ""
        raise ConflictError(f"records already exist: {names}{more}", address=address(*existing[0]))


def _copy_rows(conn: Connection, table: sql.Identifier, columns: Sequence[str], types: Sequence[str],
               rows: Sequence[Sequence[Any]]) -> None:
    """Write rows with one binary COPY."""
    statement = sql.SQL("COPY {table} ({cols}) FROM STDIN (FORMAT BINARY)").format(
        table=table, cols=sql.SQL(", ").join(map(sql.Identifier, columns))
    )
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types(list(types))
        for row in rows:
            copy.write_row(row)


def create_records(conn: Connection, records: Sequence[NewRecord], actor: str) -> list[RecordRow]:
    """Create many records and their ``create`` audit rows in one transaction.

    Ids are reserved from the table's sequence in one query, the records are written
    with one binary COPY and their audit rows with one statement that reads them back
    on the server, so the cost does not grow with round trips. A record that exists already, or appears twice, refuses the
    whole batch (ConflictError). Returns the new rows in the order given.
    """
    if not records:
        return []
    reserve = sql.SQL(
        "SELECT nextval(pg_get_serial_sequence(%s, 'id')) FROM generate_series(1, %s) ORDER BY 1"
    )
    select = sql.SQL("SELECT {cols} FROM {table} WHERE id = ANY(%s) ORDER BY id").format(
        cols=_COLUMNS, table=TABLE
    )
    with atomic(conn, f"creating {len(records)} records", unique=conflict("a record in the batch already exists")):
        _check_batch(conn, records)
        ids = [row[0] for row in conn.execute(reserve, ("metastore.metastore_records", len(records)))]
        _copy_rows(conn, TABLE, _RECORD_COPY_COLUMNS, _RECORD_COPY_TYPES, [
            (i, r.namespace, r.key, dict(r.metadata), normalize_tags(r.tags), r.owner, r.schema_hash, 1, actor, actor)
            for i, r in zip(ids, records)
        ])
        conn.execute(_AUDIT_CREATED, {"ids": ids, "actor": actor})
        with conn.cursor(row_factory=class_row(RecordRow)) as cur:
            created = cur.execute(select, (ids,)).fetchall()
    return created
