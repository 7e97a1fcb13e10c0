"""Records in metastore.metastore_records, staged with COPY and written set-based, with the metastore's audit rows."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from psycopg import sql

from reconciler.catalog.port import Write
from reconciler.catalog.postgres import service_audit
from reconciler.catalog.postgres.kinds.base import (
    Connection,
    Evidence,
    KindReader,
    KindWriter,
    WriteContext,
    identity,
    metadata_patch,
    ms,
    text_array,
)
from reconciler.core import ops
from reconciler.core.diff import Live, OutOfBand
from reconciler.core.kinds import record
from reconciler.core.service_rules import normalize_tags

_STAGE = sql.SQL(
    """CREATE TEMP TABLE reconciler_stage_records (
           action text NOT NULL, namespace text NOT NULL, record_key text NOT NULL, owner text,
           tags text[] NOT NULL, schema_hash text, metadata jsonb NOT NULL, deleted boolean NOT NULL,
           actor text NOT NULL, metadata_drop text[] NOT NULL DEFAULT '{}', steps smallint NOT NULL DEFAULT 1
       ) ON COMMIT DROP""")

_AUDIT_INSERT = sql.SQL("INSERT INTO metastore.metastore_record_audits ({})").format(
    service_audit.RECORD_AUDIT_COLUMNS)

# A record created already deleted leaves what the metastore leaves for a create then a
# delete: version 2, a create row at version 1 and a delete row from 1 to 2. The audit rows
# are ordered by record and version (the output's first and seventh columns).
_RECORD_CREATE = sql.SQL(
    """WITH ins AS (
           INSERT INTO metastore.metastore_records AS r (namespace, record_key, metadata, tags, owner,
                  schema_hash, version, deleted_at, created_by, updated_by)
           SELECT namespace, record_key, metadata, tags, owner, schema_hash,
                  CASE WHEN deleted THEN 2 ELSE 1 END, CASE WHEN deleted THEN now() END, actor, actor
           FROM reconciler_stage_records WHERE action = 'create'
           RETURNING r.*),
       created AS (
           SELECT id, namespace, record_key, metadata, tags, owner, schema_hash, 1 AS version, created_by,
                  deleted_at
           FROM ins)
       {insert}
       SELECT {created} FROM created c
       UNION ALL
       SELECT {deleted} FROM ins i JOIN created c ON c.id = i.id WHERE i.deleted_at IS NOT NULL
       ORDER BY 1, 7""").format(
    insert=_AUDIT_INSERT,
    created=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_CREATED), sql.SQL("c.created_by"),
                                              "c", None),
    deleted=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_DELETED), sql.SQL("i.created_by"),
                                              "i", "c"))

# Each change is one version and one audit row, with the action the metastore writes for
# it; an archive that also changes fields (steps = 2) is the metastore's update then its
# delete: two versions, and the state between them in both rows.
_RECORD_UPDATE = sql.SQL(
    """WITH prev AS (
           SELECT r.* FROM metastore.metastore_records r JOIN reconciler_stage_records s
             ON s.namespace = r.namespace AND s.record_key = r.record_key
           WHERE s.action IN ('update', 'archive', 'restore')),
       upd AS (
           UPDATE metastore.metastore_records r
           SET metadata = (r.metadata - s.metadata_drop) || s.metadata, tags = s.tags, owner = s.owner,
               schema_hash = s.schema_hash,
               deleted_at = CASE WHEN s.deleted THEN coalesce(r.deleted_at, now()) END,
               version = r.version + s.steps, updated_at = now(), updated_by = s.actor
           FROM reconciler_stage_records s
           WHERE s.namespace = r.namespace AND s.record_key = r.record_key
             AND s.action IN ('update', 'archive', 'restore')
           RETURNING r.*, s.action AS staged_action, s.actor AS staged_actor, s.steps),
       mid AS (
           SELECT id, namespace, record_key, metadata, tags, owner, schema_hash, version - 1 AS version
           FROM upd WHERE steps = 2)
       {insert}
       SELECT {one} FROM upd u JOIN prev p ON p.id = u.id WHERE u.steps = 1
       UNION ALL
       SELECT {first} FROM upd u JOIN prev p ON p.id = u.id JOIN mid m ON m.id = u.id
       UNION ALL
       SELECT {second} FROM upd u JOIN mid m ON m.id = u.id
       ORDER BY 1, 7""").format(
    insert=_AUDIT_INSERT,
    one=service_audit.record_audit_values(
        sql.SQL("CASE u.staged_action WHEN 'archive' THEN {} WHEN 'restore' THEN {} ELSE {} END").format(
            sql.Literal(service_audit.RECORD_DELETED), sql.Literal(service_audit.RECORD_RESTORED),
            sql.Literal(service_audit.RECORD_UPDATED)),
        sql.SQL("u.staged_actor"), "u", "p"),
    first=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_UPDATED), sql.SQL("u.staged_actor"),
                                            "m", "p"),
    second=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_DELETED), sql.SQL("u.staged_actor"),
                                             "u", "m"))

_RECORD_PURGE = service_audit.purge_records(
    sql.SQL("SELECT namespace, record_key FROM reconciler_stage_records WHERE action = 'purge'"))

# The statement that executes each operation, in this order (a staged row's ``action`` is
# its operation's name, which the statements select on).
_STATEMENTS: tuple[tuple[sql.Composed, frozenset[type[ops.Operation]]], ...] = (
    (_RECORD_CREATE, frozenset({ops.Create})),
    (_RECORD_UPDATE, frozenset({ops.Update, ops.Archive, ops.Restore})),
    (_RECORD_PURGE, frozenset({ops.Purge})),
)

# The record fields an archive can change besides the deletion itself.
_RECORD_VALUES = frozenset({"owner", "tags", "schemaHash", "metadata"})

PROGRESS_EVERY = 2_000  # rows staged between two progress reports


def _write(conn: Connection, writes: Sequence[Write], context: WriteContext) -> None:
    """Stage every record change with COPY, then write each action as one set-based statement.

    Each statement also writes the metastore's audit rows for the change, exactly as the
    metastore writes them for the same operations (catalog/service_audit.py), and bumps
    ``version`` by one per operation. A purge deletes the key's audit rows and writes
    none, as the metastore's purge does. The rows cross the wire once (the server copies
    them into the records and their audit rows); a statement whose action has no rows is
    not sent, as it would scan the staging table for nothing.
    """
    if not writes:
        return
    on_rows = context.on_rows
    conn.execute(_STAGE)
    actions = set()
    with conn.cursor() as cur:
        with cur.copy("COPY reconciler_stage_records (action, namespace, record_key, owner, tags, "
                      "schema_hash, metadata, deleted, actor, metadata_drop, steps) FROM STDIN") as copy:
            for staged, w in enumerate(writes, start=1):
                if on_rows is not None and staged % PROGRESS_EVERY == 0:
                    on_rows(staged)
                actions.add(w.op)
                namespace, key = identity(w.address).split("/", 1)
                fields = w.after or w.before or {}
                # Creates carry the whole metadata; updates a patch (staged metadata = the keys to set).
                drop, changed = metadata_patch((w.before or {}).get("metadata"), fields.get("metadata")) \
                    if w.op is not ops.Create else ([], fields.get("metadata") or {})
                steps = 2 if w.op is ops.Archive and _RECORD_VALUES & set(w.fields) else 1
                copy.write_row((w.action, namespace, key, fields.get("owner"),
                                text_array(normalize_tags(fields.get("tags"))), fields.get("schemaHash"),
                                json.dumps(changed), bool(fields.get("deleted")), w.actor, text_array(drop), steps))
        if on_rows is not None and len(writes) % PROGRESS_EVERY:
            on_rows(len(writes))
        for statement, wanted in _STATEMENTS:
            if actions & wanted:
                cur.execute(statement)
    conn.execute("DROP TABLE reconciler_stage_records")


# The rows the plan touches, locked, as the plan read them.
_RECHECK = sql.SQL(
        """SELECT r.namespace, r.record_key, r.owner, r.tags, r.schema_hash, r.metadata,
                  r.deleted_at IS NOT NULL, r.version,
                  to_char(r.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), r.updated_by
           FROM metastore.metastore_records r
           JOIN unnest(%s::text[], %s::text[]) AS k(namespace, record_key)
             ON r.namespace = k.namespace AND r.record_key = k.record_key
           FOR UPDATE OF r""")


# Who changed a record outside git: the metastore's audit rows (catalog/postgres/outside.py).
_AUDIT_ROWS = sql.SQL(
    """SELECT DISTINCT ON (k.address) k.address, a.id::text, a.actor, {at}
       FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) AS k(address, namespace, record_key, since)
       JOIN metastore.metastore_record_audits a
         ON a.namespace = k.namespace AND a.record_key = k.record_key AND a.created_at > k.since
       ORDER BY k.address, a.created_at DESC, a.id DESC""").format(at=ms("a.created_at"))


def _params(ids: list[str]) -> tuple[list[str], list[str]]:
    return [i.split("/", 1)[0] for i in ids], [i.split("/", 1)[1] for i in ids]


# --- reading ---------------------------------------------------------------------------------

# Whether a record still holds every value its last apply set, decided in the catalog
# with jsonb's own equality (key order never matters, 1.0 = 1, true <> 1), field by
# field as the diff compares them: tags as a set, metadata key by key over the applied
# keys only (keys someone else added are theirs). Only a true result is acted on (the
# diff then passes the record over without decoding it); anything unsure is false.
RECORD_IN_SYNC = sql.SQL(
    """m.kind = 'record' AND jsonb_typeof(m.applied) = 'object'
       AND (NOT m.applied ? 'owner' OR m.applied->'owner' = coalesce(to_jsonb(r.owner), 'null'))
       AND (NOT m.applied ? 'schemaHash'
            OR m.applied->'schemaHash' = coalesce(to_jsonb(r.schema_hash), 'null'))
       AND (NOT m.applied ? 'deleted' OR m.applied->'deleted' = to_jsonb(r.deleted_at IS NOT NULL))
       AND (NOT m.applied ? 'tags'
            OR (jsonb_typeof(m.applied->'tags') = 'array'
                AND to_jsonb(r.tags) @> (m.applied->'tags') AND (m.applied->'tags') @> to_jsonb(r.tags)))
       AND (NOT m.applied ? 'metadata'
            OR (jsonb_typeof(m.applied->'metadata') = 'object'
                AND (r.metadata = m.applied->'metadata'
                     OR NOT EXISTS (SELECT 1 FROM jsonb_each(m.applied->'metadata') AS e
                                    WHERE r.metadata->e.key IS DISTINCT FROM e.value))))""")

# Metadata comes as its text, decoded only if the diff looks at it.
_READ = sql.SQL(
    """SELECT r.namespace, r.record_key, r.owner, r.tags, r.schema_hash, r.metadata::text,
              r.deleted_at IS NOT NULL, r.version, {updated}, r.updated_by, coalesce({in_sync}, false)
       FROM metastore.metastore_records r
       LEFT JOIN reconciler.managed_objects m ON m.address = 'record:' || r.namespace || '/' || r.record_key
       -- A namespace holding "/" cannot be named by an address (record:<namespace>/<key>)
       -- nor declared in a manifest: such records are left out, never matched or touched.
       WHERE strpos(r.namespace, '/') = 0
         AND NOT coalesce(m.source = %(source)s AND m.path = ANY(%(settled)s), false)"""
).format(updated=ms("r.updated_at"), in_sync=RECORD_IN_SYNC)

class RecordFields(Mapping[str, Any]):
    """A record's managed fields; its metadata is decoded from text on first use."""

    __slots__ = ("_metadata", "_text", "deleted", "owner", "schema_hash", "tags")
    _NAMES = ("owner", "tags", "schemaHash", "metadata", "deleted")

    def __init__(self, owner: str | None, tags: list[str], schema_hash: str | None, metadata: Any,
                 deleted: bool) -> None:
        self.owner, self.tags, self.schema_hash, self.deleted = owner, tags, schema_hash, deleted
        self._text = metadata if isinstance(metadata, str) else None
        self._metadata = None if self._text is not None else (metadata or {})

    @property
    def metadata(self) -> Any:
        """The metadata object (``{}`` for none)."""
        if self._metadata is None:
            self._metadata = json.loads(self._text) if self._text is not None else {}
            self._metadata = self._metadata or {}
        return self._metadata

    def __getitem__(self, key: str) -> Any:
        if key == "owner":
            return self.owner
        if key == "tags":
            return self.tags
        if key == "schemaHash":
            return self.schema_hash
        if key == "metadata":
            return self.metadata
        if key == "deleted":
            return self.deleted
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self._NAMES)

    def __len__(self) -> int:
        return len(self._NAMES)

    def __repr__(self) -> str:
        return f"RecordFields({dict(self)!r})"


def _live(row: tuple[Any, ...]) -> Live:
    """A metastore_records row as the diff sees it; the token is its version.

    The row may carry its metadata as text (decoded when first read) and, as an
    eleventh column, whether it still holds everything last applied (``in_sync``).
    """
    namespace, key, owner, tags, schema_hash, metadata, deleted, version, updated, updated_by = row[:10]
    fields = RecordFields(owner, list(tags or []), schema_hash, metadata, deleted)
    return Live(f"record:{namespace}/{key}", "record", fields, str(version), updated, updated_by,
                len(row) > 10 and bool(row[10]))


# The rows holding the records (catalog/postgres/writer.py names who holds them).
_HOLDING = sql.SQL(
    """SELECT r.xmax::text AS xid FROM metastore.metastore_records r
       JOIN unnest({0}::text[], {1}::text[]) AS k(namespace, record_key)
         ON r.namespace = k.namespace AND r.record_key = k.record_key""")


def _fallback(change: OutOfBand) -> str:
    return "metastore.metastore_records updated_by, updated_at"


_READER = KindReader(_READ, skips=True, evidence=(Evidence("metastore.metastore_record_audits", _AUDIT_ROWS),),
                     fallback=_fallback)

WRITER = KindWriter(record.SPEC, _write, _RECHECK, _live, params=_params, announces=True, holding=_HOLDING,
                    reader=_READER)
