"""Reading and writing reconciler.audit_log and the failed runs: the SQL side of the audit log."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import psycopg
from psycopg import sql
from psycopg.rows import args_row
from psycopg.types.json import Jsonb

from ..errors import MigrationError
from .connection import connection, translated
from .locks import lock_audit_log

T = TypeVar("T")

Connection = psycopg.Connection[Any]
"""The apply's connection, as the audit module passes it through."""

# Rows per network fetch when streaming the log.
FETCH_ROWS = 2000

# The columns in their table order; reconciler.audit.Entry has the same fields.
COLUMNS = (
    "seq", "recorded_at", "run_id", "source", "address", "kind", "action", "before", "after", "fields",
    "commit_sha", "author_name", "author_email", "uncommitted", "manifest_path", "manifest_line",
    "applier", "plan_digest", "prev_hash", "hash",
    # Added after the first version: hashed only when not null (see reconciler/audit.py).
    "reason", "commit_date", "protect",
)
LATER_COLUMNS = ("reason", "commit_date", "protect")
# JSON columns are read as their text, so that the caller parses them the one way
# the hash was computed (and never through a json loader someone configured).
_SELECT_LIST = sql.SQL(", ").join(
    sql.SQL("{}::text").format(sql.Identifier(c)) if c in ("before", "after") else sql.Identifier(c)
    for c in COLUMNS
)
_COPY_IN = sql.SQL("COPY reconciler.audit_log ({}) FROM STDIN").format(
    sql.SQL(", ").join(map(sql.Identifier, COLUMNS)))

# For the export: one JSON object per line, built by PostgreSQL. JSON text never
# holds a raw control character (PostgreSQL writes them as \uXXXX), so CSV with
# control characters as quote and delimiter passes each line through byte for
# byte; text format would double every backslash.
_EXPORT = sql.SQL(
    """COPY (SELECT json_build_object({pairs}) FROM reconciler.audit_log ORDER BY seq)
       TO STDOUT (FORMAT csv, QUOTE E'\\x01', DELIMITER E'\\x02')"""
).format(pairs=sql.SQL(", ").join(
    sql.SQL("{}, {}").format(sql.Literal(c), sql.Identifier(c)) for c in COLUMNS))


@dataclass(frozen=True)
class Head:
    """The last entry of the log when an append starts, and the server's clock then."""

    seq: int
    hash: str | None
    now: datetime


@dataclass(frozen=True)
class Filters:
    """Which entries ``audit log`` lists."""

    address: str | None = None
    since: datetime | None = None
    author_email: str | None = None
    limit: int | None = None


# --- writing, inside the apply's transaction -------------------------------------------------


def lock_head(conn: psycopg.Connection[Any], lock_timeout: float | None = None) -> Head:
    """Take the audit log's append lock for this transaction and read the head after it.

    One lock for every source (``locks.lock_audit_log``, waited for at most
    ``lock_timeout`` seconds): applies of different sources run side by side and take it
    only for the append, so the chain stays one line. Read committed: the read after
    the lock sees every entry the previous holder committed.
    """
    lock_audit_log(conn, lock_timeout)
    row = conn.execute(
        """SELECT h.seq, h.hash, clock_timestamp()
           FROM (SELECT 1) AS one
           LEFT JOIN LATERAL (SELECT seq, hash FROM reconciler.audit_log ORDER BY seq DESC LIMIT 1) AS h
             ON true"""
    ).fetchone()
    assert row is not None
    return Head(row[0] or 0, row[1], row[2])


def append(conn: psycopg.Connection[Any], rows: Iterable[Sequence[Any]]) -> None:
    """Write entries (values in COLUMNS order, JSON columns as text) with one COPY."""
    with conn.cursor() as cur, cur.copy(_COPY_IN) as copy:
        for row in rows:
            copy.write_row(row)


def protection_recorded(conn: psycopg.Connection[Any], addresses: Sequence[str]) -> dict[str, tuple[bool, int]]:
    """The protect flag the chain last recorded for each address that has one: (flag, seq)."""
    rows = conn.execute(
        """SELECT DISTINCT ON (address) address, protect, seq FROM reconciler.audit_log
           WHERE address = ANY(%s) AND protect IS NOT NULL ORDER BY address, seq DESC""",
        (list(addresses),)).fetchall()
    return {address: (bool(flag), int(seq)) for address, flag, seq in rows}


# --- runs that did not apply -----------------------------------------------------------------


def record_unapplied_run(conn: psycopg.Connection[Any], *, run_id: str, source: str, applier: str,
                         commit: str | None, plan_digest: str, outcome: str, message: str,
                         counts: dict[str, int]) -> str | None:
    """Record a failed or refused apply in its own short transaction, after the rollback.

    Never raises: returns why the row could not be written, or None when it was.
    """
    if conn.closed or conn.broken:
        return "the connection to the catalog was lost"
    try:
        with conn.transaction():
            conn.execute(
                """INSERT INTO reconciler.runs (run_id, source, applier, commit_sha, plan_digest,
                       finished_at, outcome, counts, message)
                   VALUES (%s, %s, %s, %s, %s, clock_timestamp(), %s, %s, %s)
                   ON CONFLICT (run_id) DO NOTHING""",
                (run_id, source, applier, commit, plan_digest, outcome, Jsonb(counts), message),
            )
    except psycopg.Error as error:
        return " ".join(str(error).split()) or type(error).__name__
    return None


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


def _select(filters: Filters, newest_first: bool) -> tuple[sql.Composed, list[Any]]:
    where: list[sql.Composable] = []
    params: list[Any] = []
    if filters.address is not None:
        where.append(sql.SQL("address = %s"))
        params.append(filters.address)
    if filters.since is not None:
        where.append(sql.SQL("recorded_at >= %s"))
        params.append(filters.since)
    if filters.author_email is not None:
        where.append(sql.SQL("lower(author_email) = lower(%s)"))
        params.append(filters.author_email)
    query: sql.Composed = sql.SQL("SELECT {} FROM reconciler.audit_log").format(_SELECT_LIST)
    if where:
        query = sql.SQL("{} WHERE {}").format(query, sql.SQL(" AND ").join(where))
    query = sql.SQL("{} ORDER BY seq {}").format(query, sql.SQL("DESC" if newest_first else "ASC"))
    if filters.limit is not None:
        query = sql.SQL("{} LIMIT %s").format(query)
        params.append(filters.limit)
    return query, params


def write_ndjson(url: str, out: BinaryIO) -> int:
    """Write every entry, in seq order, as one JSON object per line; returns how many.

    PostgreSQL builds the lines and COPY streams them: no Python work per entry.
    Timestamps are written in UTC with their offset.
    """
    with (connection(url, application_name="reconciler audit export") as conn,
          translated("exporting the audit log failed", conn, url), conn.transaction()):
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute("SET LOCAL TIME ZONE 'UTC'")
        _require_table(conn)
        with conn.cursor() as cur:
            with cur.copy(_EXPORT) as copy:
                out.writelines(copy)
            return max(cur.rowcount, 0)


def _require_table(conn: psycopg.Connection[Any]) -> None:
    row = conn.execute("SELECT to_regclass('reconciler.audit_log') IS NOT NULL").fetchone()
    if not row or not row[0]:
        raise MigrationError("the catalog has no audit log (reconciler.audit_log); run `reconciler migrate`")
