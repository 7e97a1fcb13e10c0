"""Reading and writing reconciler.audit_log and the failed runs: the SQL side of the audit log."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import args_row

from reconciler.core.chain import COLUMNS as COLUMNS  # the log's format, defined with its chain
from reconciler.core.chain import JSON_COLUMNS, RUN_COLUMNS, RUN_JSON_COLUMNS
from reconciler.core.chain import Head as Head  # the heads an append chains onto
from reconciler.errors import LockTimeout, MigrationError
from reconciler.catalog.postgres.connection import connection, translated
from reconciler.catalog.postgres.locks import lock_audit_log
from reconciler.catalog.postgres.kinds.base import text_array

T = TypeVar("T")

Connection = psycopg.Connection[Any]
"""The apply's connection, as the audit module passes it through."""

# Rows per network fetch when streaming the log.
FETCH_ROWS = 2000

_SELECT_LIST = sql.SQL(", ").join(
    sql.SQL("{}::text").format(sql.Identifier(c)) if c in JSON_COLUMNS else sql.Identifier(c)
    for c in COLUMNS
)
_COPY_IN = sql.SQL("COPY reconciler.audit_log ({}) FROM STDIN").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))

_RUN_SELECT_LIST = sql.SQL(", ").join(
    sql.SQL("{}::text").format(sql.Identifier(c)) if c in RUN_JSON_COLUMNS else sql.Identifier(c)
    for c in RUN_COLUMNS
)
_RUN_INSERT = sql.SQL("INSERT INTO reconciler.runs ({}) VALUES ({})").format(
    sql.SQL(", ").join(map(sql.Identifier, RUN_COLUMNS)),
    sql.SQL(", ").join(sql.SQL("%s::jsonb") if c in RUN_JSON_COLUMNS else sql.SQL("%s") for c in RUN_COLUMNS))

# For the export: one JSON object per line, built by PostgreSQL. JSON text never
# holds a raw control character (PostgreSQL writes them as \uXXXX), so CSV with
# control characters as quote and delimiter passes each line through byte for
# byte; text format would double every backslash.
_EXPORT = sql.SQL(
    """COPY (SELECT json_build_object({pairs}) FROM reconciler.audit_log ORDER BY seq)
       TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"""
).format(pairs=sql.SQL(", ").join(
    sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(c)) for c in COLUMNS))
_EXPORT_RUNS = sql.SQL(
    """COPY (SELECT json_build_object({pairs}) FROM reconciler.runs ORDER BY seq NULLS FIRST, started_at, run_id)
       TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"""
).format(pairs=sql.SQL(", ").join(
    sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(c)) for c in RUN_COLUMNS))


@dataclass(frozen=True)
class Filters:
    """Which entries ``audit log`` lists."""

    address: str | None = None
    since: datetime | None = None
    author_email: str | None = None
    limit: int | None = None
    until: datetime | None = None
    applier: str | None = None
    run_id: str | None = None
    reason: str | None = None
    committed_since: datetime | None = None
    committed_until: datetime | None = None


# --- writing, inside the apply's transaction -------------------------------------------------


def lock_head(conn: psycopg.Connection[Any], lock_timeout: float | None = None) -> Head:
    """Take the audit log's append lock for this transaction and read both heads after it.

    One lock for every source (``locks.lock_audit_log``, waited for at most
    ``lock_timeout`` seconds): applies of different sources run side by side and take it
    only for the append, so the chain stays one line. Read committed: the read after
    the lock sees every entry and run the previous holder committed.
    """
    lock_audit_log(conn, lock_timeout)
    row = conn.execute(
        """SELECT h.seq, h.hash, h.mac, r.seq, r.hash, r.mac, clock_timestamp(), now()
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (SELECT seq, hash, mac FROM reconciler.audit_log ORDER BY seq DESC LIMIT 1) AS h
             ON true
           LEFT JOIN LATERAL (SELECT seq, hash, mac FROM reconciler.runs WHERE seq IS NOT NULL
                              ORDER BY seq DESC LIMIT 1) AS r ON true"""
    ).fetchone()
    assert row is not None
    return Head(row[0] or 0, row[1], row[2], row[3] or 0, row[4], row[5], row[6], row[7])


_FIELDS = COLUMNS.index("fields")


def append(conn: psycopg.Connection[Any], rows: Iterable[Sequence[Any]]) -> None:
    """Write entries (values in COLUMNS order, JSON columns as text) with one COPY.

    ``fields`` goes as a text[] literal: the driver's generic array dumper, per element,
    was a third of the COPY's client time at 100,000 entries.
    """
    with conn.cursor() as cur, cur.copy(_COPY_IN) as copy:
        for row in rows:
            values = list(row)
            values[_FIELDS] = text_array(values[_FIELDS])
            copy.write_row(values)


def protection_recorded(conn: psycopg.Connection[Any], addresses: Sequence[str]) -> dict[str, tuple[bool, int]]:
    """The protect flag the chain last recorded for each address that has one: (flag, seq)."""
    rows = conn.execute(
        """SELECT DISTINCT ON (address) address, protect, seq FROM reconciler.audit_log
           WHERE address = ANY(%s) AND protect IS NOT NULL ORDER BY address, seq DESC""",
        (list(addresses),)).fetchall()
    return {address: (bool(flag), int(seq)) for address, flag, seq in rows}


def insert_run(conn: psycopg.Connection[Any], values: Sequence[Any]) -> None:
    """Write one run (values in RUN_COLUMNS order, JSON columns as text)."""
    conn.execute(_RUN_INSERT, tuple(values))


# --- runs that did not apply -----------------------------------------------------------------


def record_unapplied_run(conn: psycopg.Connection[Any], build: Callable[[Head], Sequence[Any] | str],
                         lock_timeout: float | None = None,
                         unchained: Callable[[], Sequence[Any]] | None = None) -> str | None:
    """Record a failed or refused apply in its own short transaction, after the rollback: under
    the append lock (waited for at most ``lock_timeout`` seconds), ``build`` turns the heads
    into the run's values (RUN_COLUMNS order), or says why it cannot be recorded. When another
    session holds the lock past the timeout, the run is recorded outside the chain
    (``unchained()``'s values), so that the failure is never lost nor waits without end.

    Never raises: returns why the row could not be written, or None when it was.
    """
    if conn.closed or conn.broken:
        return "the connection to the catalog was lost"
    try:
        with conn.transaction():
            values = build(lock_head(conn, lock_timeout))
            if isinstance(values, str):
                raise _NotRecorded(values)
            insert_run(conn, values)
    except _NotRecorded as why:
        return str(why)
    except LockTimeout as held:
        if unchained is None:
            return str(held).removesuffix("; nothing was applied")
        try:
            with conn.transaction():
                insert_run(conn, unchained())
        except psycopg.Error as error:
            return " ".join(str(error).split()) or type(error).__name__
        return None
    except psycopg.Error as error:
        return " ".join(str(error).split()) or type(error).__name__
    return None


class _NotRecorded(Exception):
    """``build`` refused: the transaction is rolled back and the reason returned."""


# --- reading ---------------------------------------------------------------------------------


def read_entries(url: str, make: Callable[..., T], filters: Filters | None = None, *,
                 newest_first: bool = False) -> Generator[T, None, None]:
    """Stream entries in seq order (or newest first), each built by ``make(*columns)``.

    One repeatable-read snapshot and a server-side cursor: entries appended meanwhile
    are not seen, and a long log is never held in memory.
    """
    query = _select(filters or Filters(), newest_first)
    with (connection(url, application_name="reconciler audit") as conn,
          translated("reading the audit log failed", conn, url), conn.transaction()):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _require_table(conn)
        with conn.cursor("reconciler_audit", row_factory=args_row(make)) as cur:
            cur.itersize = FETCH_ROWS
            cur.execute(query[0], query[1])
            yield from cur


# The names an object went by: its address, and each name it had before a rename (whose
# ``before`` holds the old identity), for the entries before that rename's seq. Joined to
# the log, so the index on (address, seq) finds each name's entries.
_NAMES = sql.SQL(
    """WITH RECURSIVE names (name, until) AS (
           SELECT %s::text, NULL::bigint
           UNION
           SELECT r.kind || ':' || (r.before ->> CASE r.kind WHEN 'dataset' THEN 'slug' ELSE 'name' END), r.seq
           FROM reconciler.audit_log r JOIN names n ON r.address = n.name
           WHERE r.action = 'rename' AND (n.until IS NULL OR r.seq < n.until)) """)
_JOIN_NAMES = sql.SQL(" JOIN names ON names.name = audit_log.address "
                      "AND (names.until IS NULL OR audit_log.seq < names.until)")


def _select(filters: Filters, newest_first: bool) -> tuple[sql.Composed, list[Any]]:
    where: list[sql.Composable] = []
    params: list[Any] = []
    if filters.address is not None:
        params.append(filters.address)  # bound in _NAMES, which comes first
    if filters.since is not None:
        where.append(sql.SQL("recorded_at >= %s"))
        params.append(filters.since)
    if filters.author_email is not None:
        where.append(sql.SQL("lower(author_email) = lower(%s)"))
        params.append(filters.author_email)
    for value, condition in ((filters.until, "recorded_at < %s"), (filters.run_id, "run_id = %s"),
                             (filters.reason, "reason = %s"), (filters.committed_since, "commit_date >= %s"),
                             (filters.committed_until, "commit_date < %s")):
        if value is not None:
            where.append(sql.SQL(condition))
            params.append(value)
    if filters.applier is not None:
        # The applier as any of the names an apply records for it: the actor, the CI account's
        # email, the local git email or the OS user.
        where.append(sql.SQL(
            "lower(%s) IN (lower(applier), lower(applied_by->>'email'), lower(applied_by->>'git_email'), "
            "lower(applied_by->>'os_user'))"))
        params.append(filters.applier)
    query: sql.Composed = sql.SQL("SELECT {} FROM reconciler.audit_log").format(_SELECT_LIST)
    if filters.address is not None:  # the object's entries under every name it had
        query = sql.SQL("{}{}{}").format(_NAMES, query, _JOIN_NAMES)
    if where:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
    query = sql.SQL("{} ORDER BY seq {}").format(query, sql.SQL("DESC" if newest_first else "ASC"))
    if filters.limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(filters.limit)
    return query, params


def read_runs(url: str, make: Callable[..., T], *, newest_first: bool = False, limit: int | None = None,
              source: str | None = None) -> Generator[T, None, None]:
    """Stream runs, chained ones in seq order (or newest first) after the unchained ones,
    each built by ``make(*columns)``; one repeatable-read snapshot."""
    with (connection(url, application_name="reconciler audit") as conn,
          translated("reading the runs failed", conn, url), conn.transaction()):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _require_table(conn)
        yield from runs_in(conn, make, newest_first=newest_first, limit=limit, source=source)


def runs_in(conn: psycopg.Connection[Any], make: Callable[..., T], *, newest_first: bool = False,
            limit: int | None = None, source: str | None = None) -> Generator[T, None, None]:
    """``read_runs`` inside the caller's transaction."""
    order = sql.SQL("DESC" if newest_first else "ASC")
    query = sql.SQL("SELECT {} FROM reconciler.runs {} ORDER BY seq {} NULLS {}, started_at {}, run_id").format(
        _RUN_SELECT_LIST, sql.SQL("WHERE source = %s") if source is not None else sql.SQL(""), order,
        sql.SQL("LAST" if newest_first else "FIRST"), order)
    params: list[Any] = [source] if source is not None else []
    if limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(limit)
    with conn.cursor("reconciler_runs", row_factory=args_row(make)) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(query, params)
        yield from cur


def entries_in(conn: psycopg.Connection[Any], make: Callable[..., T]) -> Generator[T, None, None]:
    """Every entry in seq order, inside the caller's transaction."""
    with conn.cursor("reconciler_audit", row_factory=args_row(make)) as cur:
        cur.itersize = FETCH_ROWS
        cur.execute(_select(Filters(), False)[0])
        yield from cur


@contextmanager
def snapshot(url: str, application_name: str) -> Iterator[psycopg.Connection[Any]]:
    """A read-only repeatable-read transaction on the catalog: both chains read as of one moment."""
    with (connection(url, application_name=application_name) as conn,
          translated("reading the audit log failed", conn, url), conn.transaction()):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        _require_table(conn)
        yield conn


def write_ndjson(url: str, out: BinaryIO, *, runs: bool = False) -> int:
    """Write every entry (``runs``: every run), in seq order, as one JSON object per line; returns how many.

    PostgreSQL builds the lines and COPY streams them: no Python work per entry.
    Timestamps are written in UTC with their offset.
    """
    with (connection(url, application_name="reconciler audit export") as conn,
          translated("exporting the audit log failed", conn, url), conn.transaction()):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        _require_table(conn)
        with conn.cursor() as cur:
            with cur.copy(_EXPORT_RUNS if runs else _EXPORT) as copy:
                out.writelines(copy)
            return max(cur.rowcount, 0)


def _require_table(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT to_regclass('reconciler.audit_log') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise MigrationError("the catalog has no audit log (reconciler.audit_log); run `reconciler migrate`")
