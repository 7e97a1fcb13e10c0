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
from reconciler.catalog.postgres.kinds import WRITERS
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


# The applied fields come as jsonb's text: compared as text with the tree's, decoded
# only for objects the diff has to look into.
_APPLIED = sql.SQL(
    """SELECT address, kind, source, applied::text, protect, commit_sha, path, line, end_line, declared,
              secret_paths
       FROM reconciler.managed_objects
       WHERE NOT coalesce(source = %(source)s AND path = ANY(%(settled)s), false)"""
)


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
    """Every object of every kind in the catalog, one query per kind (catalog/postgres/kinds/)."""
    live: dict[str, Live] = {}
    for kind in WRITERS:
        for row in _rows(conn, kind.reader.query, skip.params() if kind.reader.skips else None):
            obj = kind.live(row)
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


def stored_on(conn: psycopg.Connection[Any], addresses: Collection[str]) -> dict[str, list[str]]:
    """For each address given (of an object to purge), the objects outside the live state that
    keep it in place: the datasets with partitions on a storage target (``KindReader.users``)."""
    out: dict[str, list[str]] = {}
    for kind in WRITERS:
        ids = [a.removeprefix(kind.kind.prefix) for a in addresses if a.startswith(kind.kind.prefix)]
        if kind.reader.users is None or not ids:
            continue
        for identity, user in conn.execute(kind.reader.users, kind.params(ids)).fetchall():
            out.setdefault(kind.kind.prefix + identity, []).append(user)
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
