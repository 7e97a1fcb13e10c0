"""The event outbox (migration 0010): the platform events of an apply's record writes, queued
in its transaction from the rows it wrote, and read and marked by the deliverers.

The events are built by the server, set-based, from what the writer left: one event per
``metastore_record_audits`` row the apply wrote (each row is one metastore operation, so
a record created already deleted is a create and a delete, as it is in the audit trail),
with the record serialised as the metastore serialises it, and one per purged record, from
the row as it was before the purge (``mark``, called before the writes, keeps it). Shapes:
reconciler/core/events.py and docs/architecture.md, "Events".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql
from psycopg.rows import class_row

from reconciler.core import ops
from reconciler.catalog.port import Write
from reconciler.catalog.postgres.service_audit import js_timestamp
from reconciler.core.events import OPERATIONS, QueuedEvent

Connection = psycopg.Connection[Any]

KEEP_DELIVERED: Final = "7 days"  # delivered events are kept this long, then removed


@dataclass(frozen=True)
class Mark:
    """What ``queue`` needs from before the writes: the newest metastore audit row then."""

    audits_before: int


def _record(content: str, row: str, deleted_at: sql.Composable, updated_by: sql.Composable) -> sql.Composed:
    """``serializeRecord``: the values of ``content`` (a record or one of its audit rows, which
    name their columns alike) with the timestamps and creator of the record row ``row``."""
    def c(alias: str, column: str) -> sql.Composed:
        return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column))

    return sql.SQL(
        "jsonb_build_object('namespace', {ns}, 'key', {key}, 'metadata', coalesce({metadata}, '{{}}'::jsonb), "
        "'tags', to_jsonb(coalesce({tags}, '{{}}'::text[])), 'owner', {owner}, 'schemaHash', {schema_hash}, "
        "'version', {version}, 'createdAt', {created}, 'updatedAt', {updated}, 'deletedAt', {deleted}, "
        "'createdBy', {created_by}, 'updatedBy', {updated_by})").format(
        ns=c(content, "namespace"), key=c(content, "record_key"), metadata=c(content, "metadata"),
        tags=c(content, "tags"), owner=c(content, "owner"), schema_hash=c(content, "schema_hash"),
        version=c(content, "version"), created=js_timestamp(row, "created_at"),
        updated=js_timestamp(row, "updated_at"), deleted=deleted_at, created_by=c(row, "created_by"),
        updated_by=updated_by)


# The records about to be purged, as the metastore's purge announces them (the record as it
# was, ``mode: hard``), kept until the apply's commit.
_KEEP_PURGED = sql.SQL(
    """CREATE TEMP TABLE reconciler_purged_events ON COMMIT DROP AS
       SELECT w.position, jsonb_build_object('namespace', r.namespace, 'key', r.record_key, 'actor', w.actor,
                                             'record', {record}, 'mode', {mode}) AS payload
       FROM unnest(%s::int[], %s::text[], %s::text[], %s::text[]) AS w(position, namespace, record_key, actor)
       JOIN metastore.metastore_records r ON r.namespace = w.namespace AND r.record_key = w.record_key""").format(
    record=_record("r", "r", js_timestamp("r", "deleted_at"), sql.SQL("r.updated_by")),
    mode=sql.Literal(OPERATIONS["purge"][1]))

_TYPE = sql.SQL("CASE a.action {} END").format(sql.SQL(" ").join(
    sql.SQL("WHEN {} THEN {}").format(sql.Literal(action), sql.Literal(kind))
    for action, (kind, _) in OPERATIONS.items() if action != "purge"))

# A restore names the soft delete it undoes, as the metastore's restore names the audit
# row it restored from: the key's latest ``delete`` row before it.
_RESTORED_FROM = sql.SQL(
    """coalesce((SELECT jsonb_build_object('restoredFrom', jsonb_build_object('auditId', d.id, 'version', d.version))
                 FROM metastore.metastore_record_audits d
                 WHERE d.namespace = a.namespace AND d.record_key = a.record_key AND d.action = 'delete'
                   AND d.id < a.id
                 ORDER BY d.id DESC LIMIT 1), '{}'::jsonb)""")

# Each audit row the apply wrote for the records it wrote is one operation and one event. The
# record is the state that operation left: the audit row's values, the record's timestamps,
# and ``deletedAt`` only in its final state (the first of two operations on one record — a
# create or an update before a delete — leaves it live).
_WRITTEN = sql.SQL(
    """SELECT w.position, a.version AS step, {type} AS type,
              jsonb_build_object('namespace', a.namespace, 'key', a.record_key, 'actor', a.actor,
                                 'record', {record})
              || CASE a.action WHEN 'delete' THEN {soft} WHEN 'restore' THEN {restored_from} ELSE '{{}}'::jsonb END
              AS payload
       FROM unnest(%(positions)s::int[], %(namespaces)s::text[], %(keys)s::text[])
            AS w(position, namespace, record_key)
       JOIN metastore.metastore_record_audits a
         ON a.namespace = w.namespace AND a.record_key = w.record_key AND a.id > %(after)s
       JOIN metastore.metastore_records r ON r.namespace = w.namespace AND r.record_key = w.record_key""").format(
    type=_TYPE,
    record=_record("a", "r", sql.SQL("CASE WHEN a.version = r.version THEN {} END").format(
        js_timestamp("r", "deleted_at")), sql.SQL("a.actor")),
    soft=sql.SQL("jsonb_build_object('mode', {})").format(sql.Literal(OPERATIONS["delete"][1])),
    restored_from=_RESTORED_FROM)

_QUEUE = sql.SQL(
    """INSERT INTO reconciler.event_outbox (id, run_id, type, occurred_at, payload)
       SELECT gen_random_uuid(), %(run_id)s, e.type, now(), e.payload
       FROM ({written} {purged}) AS e
       ORDER BY e.position, e.step""")
_PURGED = sql.SQL("UNION ALL SELECT p.position, 0, {}, p.payload FROM reconciler_purged_events p").format(
    sql.Literal(OPERATIONS["purge"][0]))


def _split(address: str) -> tuple[str, str]:
    namespace, key = address.split(":", 1)[1].split("/", 1)
    return namespace, key


def mark(conn: Connection, writes: Sequence[Write]) -> Mark:
    """Before the record ``writes``: note the newest metastore audit row, and keep the
    records about to be purged as their events carry them."""
    row = conn.execute("SELECT coalesce(max(id), 0) FROM metastore.metastore_record_audits").fetchone()
    purges = [(position, w) for position, w in enumerate(writes) if w.op is ops.Purge]
    if purges:
        keys = [_split(w.address) for _, w in purges]
        conn.execute(_KEEP_PURGED, ([p for p, _ in purges], [n for n, _ in keys], [k for _, k in keys],
                                    [w.actor for _, w in purges]))
    return Mark(int(row[0]) if row else 0)


def queue(conn: Connection, writes: Sequence[Write], run_id: str, marked: Mark) -> int:
    """After the record ``writes``, in the same transaction: queue their events in the
    writes' order (each record's operations in version order). Returns how many."""
    keys = [_split(w.address) for w in writes]
    purged: sql.Composable = _PURGED if any(w.op is ops.Purge for w in writes) else sql.SQL("")
    with conn.cursor() as cur:
        cur.execute(_QUEUE.format(written=_WRITTEN, purged=purged),
                    {"positions": list(range(len(writes))), "namespaces": [n for n, _ in keys],
                     "keys": [k for _, k in keys], "after": marked.audits_before, "run_id": run_id})
        return cur.rowcount


# --- delivering ------------------------------------------------------------------------------

_COLUMNS = sql.SQL("seq, id::text AS id, type, run_id, occurred_at, payload, queued_at, attempts, last_error, "
                   "delivered_at")


def pending(conn: Connection, limit: int | None = None) -> list[QueuedEvent]:
    """Undelivered events, in delivery order (at most ``limit``)."""
    query = sql.SQL("SELECT {} FROM reconciler.event_outbox WHERE delivered_at IS NULL ORDER BY seq {}").format(
        _COLUMNS, sql.SQL("LIMIT {}").format(sql.Literal(limit)) if limit is not None else sql.SQL(""))
    with conn.cursor(row_factory=class_row(QueuedEvent)) as cur:
        return cur.execute(query).fetchall()


def count_pending(conn: Connection) -> int:
    """How many events are undelivered."""
    row = conn.execute("SELECT count(*) FROM reconciler.event_outbox WHERE delivered_at IS NULL").fetchone()
    return int(row[0]) if row else 0


def mark_delivered(conn: Connection, ids: Sequence[str]) -> None:
    """The bus took ``ids``; delivered events older than KEEP_DELIVERED are removed."""
    if not ids:
        return
    conn.execute("""UPDATE reconciler.event_outbox
                    SET delivered_at = now(), attempts = attempts + 1, last_attempt_at = now(), last_error = NULL
                    WHERE id = ANY(%s::uuid[])""", (list(ids),))
    conn.execute(sql.SQL("DELETE FROM reconciler.event_outbox WHERE delivered_at < now() - interval {}").format(
        sql.Literal(KEEP_DELIVERED)))


def mark_failed(conn: Connection, event_id: str, error: str) -> None:
    """The bus refused ``event_id`` or could not be reached: keep why, for ``reconciler events``."""
    conn.execute("""UPDATE reconciler.event_outbox
                    SET attempts = attempts + 1, last_attempt_at = now(), last_error = %s
                    WHERE id = %s::uuid""", (error, event_id))
