"""Reading live state for the plan: one pass per table, rows mapped to the diff's plain values."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from psycopg import sql

from reconciler.catalog.port import CatalogState
from reconciler.core.diff import Applied, Live, collector_paused
from reconciler.catalog.postgres.connection import connection, translated
from reconciler.catalog.postgres.migrations import ensure_migrated, migrate


def jsonb_text(value: Any) -> str:
    """``value`` as PostgreSQL prints it once stored as jsonb, for the common values: the
    catalog's ``text_of``, compared with the applied text the reader takes from the catalog.

    jsonb orders object keys by length, then bytewise, and writes ``, `` and ``: ``
    between items. Any faithful JSON text of a value equals the jsonb text of another
    only if the two are the same value, types included; so where this differs from
    PostgreSQL (keys beyond ASCII, floats PostgreSQL prints without an exponent) it
    only costs a full comparison, never a wrong answer.
    """
    if type(value) is dict:
        return _JSONB_ENCODE(_jsonb_ordered(value))
    return _JSONB_ENCODE(value)


_JSONB_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(", ", ": ")).encode


def _jsonb_ordered(value: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key in sorted(sorted(value), key=len):  # stable: by length, then by code point
        item = value[key]
        kind = type(item)
        out[key] = _jsonb_ordered(item) if kind is dict else _jsonb_list(item) if kind is list else item
    return out


def _jsonb_list(value: list[Any]) -> list[Any]:
    return [_jsonb_ordered(v) if type(v) is dict else _jsonb_list(v) if type(v) is list else v for v in value]


# updated_at as the services compare it: to the millisecond, in UTC.
_MS = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


def _ms(column: str) -> sql.Composable:
    return sql.SQL(_MS).format(sql.SQL(column))


_STORAGE_TARGETS = sql.SQL(
    "SELECT name, kind, description, config, {updated} FROM timestore.storage_targets"
).format(updated=_ms("updated_at"))

_DATASETS = sql.SQL(
    """SELECT d.slug, d.name, d.description, d.status, st.name, d.metadata, rp.policy,
              {updated}, {retention_updated}
       FROM timestore.datasets d
       LEFT JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id
       LEFT JOIN timestore.dataset_retention_policies rp ON rp.dataset_id = d.id"""
).format(updated=_ms("d.updated_at"), retention_updated=_ms("rp.updated_at"))

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
_RECORDS = sql.SQL(
    """SELECT r.namespace, r.record_key, r.owner, r.tags, r.schema_hash, r.metadata::text,
              r.deleted_at IS NOT NULL, r.version, {updated}, r.updated_by, coalesce({in_sync}, false)
       FROM metastore.metastore_records r
       LEFT JOIN reconciler.managed_objects m ON m.address = 'record:' || r.namespace || '/' || r.record_key
       -- A namespace holding "/" cannot be named by an address (record:<namespace>/<key>)
       -- nor declared in a manifest: such records are left out, never matched or touched.
       WHERE strpos(r.namespace, '/') = 0
         AND NOT coalesce(m.source = %(source)s AND m.path = ANY(%(settled)s), false)"""
).format(updated=_ms("r.updated_at"), in_sync=RECORD_IN_SYNC)

# The applied fields come as jsonb's text: compared as text with the tree's, decoded
# only for objects the diff has to look into.
_APPLIED = sql.SQL(
    """SELECT address, kind, source, applied::text, protect, commit_sha, path, line, end_line, declared,
              secret_paths
       FROM reconciler.managed_objects
       WHERE NOT coalesce(source = %(source)s AND path = ANY(%(settled)s), false)"""
)


# Datasets with partitions stored on the named storage targets (a partition's storage
# target is a foreign key: the target cannot be deleted while one is there).
_STORED_ON = """SELECT DISTINCT st.name, d.slug FROM timestore.dataset_partitions p
                JOIN timestore.storage_targets st ON st.id = p.storage_target_id
                JOIN timestore.datasets d ON d.id = p.dataset_id
                WHERE st.name = ANY(%s)"""


def storage_target_live(row: tuple[Any, ...]) -> Live:
    """A storage_targets row as the diff sees it."""
    name, kind, description, config, updated = row
    return Live(f"storage-target:{name}", "storage-target",
                {"type": kind, "description": description, "config": config or {}},
                token=updated, updated_at=updated)


def dataset_live(row: tuple[Any, ...]) -> Live:
    """A datasets row (with its storage target name and retention policy) as the diff sees it.

    The token covers the retention row too: the services move it on its own.
    """
    slug, name, description, status, target, metadata, policy, updated, policy_updated = row
    fields = {"name": name, "description": description, "status": status, "storageTarget": target,
              "metadata": metadata or {}, "retention": policy}
    return Live(f"dataset:{slug}", "dataset", fields, token=f"{updated}|{policy_updated or '-'}",
                updated_at=updated, policy_updated_at=policy_updated)


class JsonObject(Mapping[str, Any]):
    """A JSON object kept as its text until something reads it (then decoded once)."""

    __slots__ = ("_value", "text")

    def __init__(self, text: str | None) -> None:
        self.text = text
        self._value: dict[str, Any] | None = None

    def _decoded(self) -> dict[str, Any]:
        if self._value is None:
            value = json.loads(self.text) if self.text is not None else None
            self._value = value if isinstance(value, dict) else {}
        return self._value

    def __getitem__(self, key: str) -> Any:
        return self._decoded()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._decoded())

    def __len__(self) -> int:
        return len(self._decoded())

    def __repr__(self) -> str:
        return f"JsonObject({self._decoded()!r})"


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


def record_live(row: tuple[Any, ...]) -> Live:
    """A metastore_records row as the diff sees it; the token is its version.

    The row may carry its metadata as text (decoded when first read) and, as an
    eleventh column, whether it still holds everything last applied (``in_sync``).
    """
    namespace, key, owner, tags, schema_hash, metadata, deleted, version, updated, updated_by = row[:10]
    fields = RecordFields(owner, list(tags or []), schema_hash, metadata, deleted)
    return Live(f"record:{namespace}/{key}", "record", fields, str(version), updated, updated_by,
                len(row) > 10 and bool(row[10]))


def _rows(conn: psycopg.Connection[Any], query: sql.Composed | sql.SQL,
          params: Sequence[Any] | Mapping[str, Any] | None = None) -> Iterable[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        while batch := cur.fetchmany(5000):
            yield from batch


@dataclass(frozen=True)
class Skip:
    """Objects to leave out of the state: those ``source`` manages from the settled files
    ``paths`` (see catalog/settled.py)."""

    source: str = ""
    paths: Collection[str] = ()

    def params(self) -> dict[str, Any]:
        return {"source": self.source, "settled": list(self.paths)}


NOTHING: Final = Skip()


def read_live(conn: psycopg.Connection[Any], skip: Skip = NOTHING) -> dict[str, Live]:
    """Every storage target, dataset and record in the catalog, one query per table."""
    live: dict[str, Live] = {}
    for query, build, params in ((_STORAGE_TARGETS, storage_target_live, None), (_DATASETS, dataset_live, None),
                                 (_RECORDS, record_live, skip.params())):
        for row in _rows(conn, query, params):
            obj = build(row)
            live[obj.address] = obj
    return live


def read_applied(conn: psycopg.Connection[Any], addresses: Collection[str] | None = None,
                 skip: Skip = NOTHING) -> dict[str, Applied]:
    """The reconciler's record of every object it manages (optionally only some addresses)."""
    query: sql.Composed | sql.SQL = _APPLIED
    params: dict[str, Any] = skip.params()
    if addresses is not None:
        query = sql.SQL("{} AND address = ANY(%(addresses)s)").format(_APPLIED)
        params["addresses"] = list(addresses)
    out: dict[str, Applied] = {}
    for (address, kind, source, text, protect, commit, path, line, end_line, declared,
         secret_paths) in _rows(conn, query, params):
        out[address] = Applied(address, kind, source, JsonObject(text), protect, commit, path, line, end_line,
                               text, declared, frozenset(secret_paths) if secret_paths else frozenset())
    return out


def datasets_stored_on(conn: psycopg.Connection[Any], addresses: Collection[str]) -> dict[str, list[str]]:
    """For each storage target address given, the datasets with partitions stored on it."""
    names = [address.removeprefix("storage-target:") for address in addresses]
    out: dict[str, list[str]] = {}
    for name, slug in conn.execute(_STORED_ON, (names,)).fetchall():
        out.setdefault(f"storage-target:{name}", []).append(f"dataset:{slug}")
    return out


@contextmanager
def snapshot(conn: psycopg.Connection[Any]) -> Iterator[psycopg.Connection[Any]]:
    """One read-only repeatable-read transaction: every read inside sees the same catalog.

    JIT compilation is off inside: the plan's queries run once over every record, and
    on PostgreSQL's default settings compiling the in-sync check took longer (3 s at
    100,000 records) than running it.
    """
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL jit = off")
        yield conn


def read_snapshot(conn: psycopg.Connection[Any], skip: Skip = NOTHING) -> CatalogState:
    """Live objects and applied records, inside a ``snapshot``."""
    with collector_paused():
        return CatalogState(read_live(conn, skip), read_applied(conn, skip=skip), text_of=jsonb_text)


def read_state(conn: psycopg.Connection[Any]) -> CatalogState:
    """Live objects and applied records, read in one repeatable-read snapshot."""
    with snapshot(conn):
        return read_snapshot(conn)


@contextmanager
def catalog_snapshot(url: str, *, embedded: bool = False) -> Iterator[psycopg.Connection[Any]]:
    """A connection to the catalog at ``url`` inside one ``snapshot``, for a plan or an
    import; changes nothing but the embedded catalog's schema, brought up to date first.

    Refuses a catalog whose schema is behind this reconciler; a failure of the server
    (a statement_timeout, a missing privilege) is one DatabaseError without the password.
    """
    if embedded:
        migrate(url)
    with connection(url, autocommit=True) as conn, translated("reading the catalog failed", conn, url):
        ensure_migrated(url)
        with snapshot(conn):
            yield conn


def read_catalog(url: str, *, embedded: bool = False) -> CatalogState:
    """The whole state of the catalog at ``url`` (see ``catalog_snapshot``)."""
    with catalog_snapshot(url, embedded=embedded) as conn:
        return read_snapshot(conn)
