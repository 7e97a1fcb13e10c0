"""What a kind's PostgreSQL writer is, and the helpers the writers share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler.catalog.port import Write
from reconciler.core.diff import Live, OutOfBand, same
from reconciler.core.kinds import KindSpec

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class Evidence:
    """Audit rows a service writes for changes to one kind, read for who changed an object
    outside git, and when.

    ``query`` takes, as positional arrays, the addresses, the identities as the kind's
    writer ``params`` splits them, and since when each is not the reconciler's; it returns
    the newest row per address: (address, row id, actor, when). ``table`` names where the
    rows were read; ``wants`` picks the changes these rows can speak for.
    """

    table: str
    query: sql.Composed
    wants: Callable[[OutOfBand], bool] = lambda change: True


@dataclass(frozen=True)
class KindReader:
    """How the plan reads one kind's live state from PostgreSQL.

    ``query`` selects every object of the kind, as rows its ``KindWriter.live`` turns into
    what the diff sees. With ``skips``, the query takes ``%(source)s`` and ``%(settled)s``
    and leaves out the objects that source manages from those settled files.

    ``evidence``: the services' audit rows naming who changed one of its objects outside
    git, read in this order (a later row wins when newer); ``fallback``: where that is read
    from when no such row exists (catalog/postgres/outside.py). ``users``, given the arrays
    the writer's ``params`` makes of identities, selects (identity, address) of the objects
    outside the live state that keep one of them from being purged.
    """

    query: sql.Composed | sql.SQL
    skips: bool = False
    evidence: tuple[Evidence, ...] = ()
    fallback: Callable[[OutOfBand], str] = lambda change: ""
    users: sql.SQL | None = None


@dataclass(frozen=True)
class KindWriter:
    """How one kind's changes reach PostgreSQL.

    ``write`` writes a batch of the kind's changes, with the services' audit rows, in the
    caller's transaction (kinds write in registry order, so what others need exists first);
    ``finish``, when given, runs once every kind has written (a storage target is purged only
    after the datasets stopped pointing at it). ``recheck`` locks the kind's rows the plan
    touches and reads them back as the plan saw them (``params`` turns identities into its
    parameters). ``announces``: its changes are platform events (queued from the outbox).
    ``reader``: how the plan reads the kind (its rows go through ``live`` too).
    ``holding`` selects the ``xmax`` (as text) of every row holding the objects ``params``
    names, the arrays ``params`` makes given as ``{0}``, ``{1}``...: which session holds a row a
    failed apply waited for (catalog/postgres/writer.py).
    """

    kind: KindSpec
    write: Callable[[Connection, Sequence[Write], "WriteContext"], None]
    recheck: sql.SQL
    live: Callable[[tuple[Any, ...]], Live]
    params: Callable[[list[str]], tuple[Any, ...]] = lambda ids: (ids,)
    finish: Callable[[Connection, Sequence[Write]], None] | None = None
    announces: bool = False
    reader: KindReader = field(kw_only=True)
    holding: sql.SQL = field(kw_only=True)


@dataclass(frozen=True)
class WriteContext:
    """What a write may need besides its changes: the apply's run id (carried into the services'
    audit rows) and a progress callback taking how many rows were staged so far."""

    run_id: str | None = None
    on_rows: Callable[[int], None] | None = None


# updated_at as the services compare it: to the millisecond, in UTC.
_MS = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


def ms(column: str) -> sql.Composable:
    """``column`` (a timestamptz) as the text the services compare: milliseconds, UTC."""
    return sql.SQL(_MS).format(sql.SQL(column))


def identity(address: str) -> str:
    """The part of an address after ``kind:``."""
    return address.split(":", 1)[1]


def after_value(write: Write, name: str) -> Any:
    """The value a change leaves in field ``name``."""
    return (write.after or {}).get(name)


def metadata_patch(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[list[str], dict[str, Any]]:
    """The keys to drop from the live metadata and the keys to set, for ``(m - drop) || set``.

    Apply patches metadata in SQL rather than writing the merged object back, so keys
    the reconciler leaves alone keep their exact stored values (numbers beyond a
    float's precision included): they never travel through Python.
    """
    before, after = before or {}, after or {}
    drop = [key for key in before if key not in after]
    changed = {key: value for key, value in after.items()
               if key not in before or not same("metadata", before[key], value)}
    return drop, changed


def jsonb_patch(patch: tuple[list[str], dict[str, Any]]) -> tuple[list[str], Jsonb]:
    """A ``metadata_patch`` as the statements bind it."""
    return patch[0], Jsonb(patch[1])


def text_array(values: Sequence[str] | None) -> str:
    """A PostgreSQL text[] literal (``{"a","b"}``) for COPY: every element quoted, so any
    text is safe, and built without the driver's generic (per-element) array dumper."""
    if not values:
        return "{}"
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"
