"""The apply's own locks: rows of reconciler.apply_locks that only the apply role can lock, each wait bounded.

Applies of one source are serialised by a lock on the row ``source:<source>``,
appends to the audit log by a lock on the row ``audit-log`` (migration 0006), and
deliverers of platform events by a lock on the row ``event-outbox`` (migration 0010). All are
row locks (``SELECT ... FOR UPDATE``), which PostgreSQL grants only to a role with
UPDATE privilege on the table: docs/sql/roles.sql gives it to reconciler_apply alone,
so a read-only session cannot take them, let alone hold them. (Advisory locks, used
before, can be taken by any role that can connect.) Every wait for them is bounded by
the apply's ``--lock-timeout``: a lock is tried without waiting and tried again after
short pauses until the budget runs out, and then the session holding the row is named.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import psycopg
from psycopg import sql

from reconciler.errors import LockTimeout

SOURCE_PREFIX: Final = "source:"
AUDIT_LOG: Final = "audit-log"
EVENT_OUTBOX: Final = "event-outbox"  # held by whoever delivers platform events (migration 0010)
MAX_LOCK_TIMEOUT_MS: Final = 2_147_483_647  # the largest lock_timeout the server accepts
LONGEST_PAUSE: Final = 0.1  # seconds between two attempts at a held lock, at most

# Taken at the top level of the transaction, never in a savepoint: a row locked by a
# subtransaction carries the subtransaction's id, which no session can trace to its holder.
# SKIP LOCKED tries without waiting and without failing the transaction, so a wait that
# runs out leaves it able to name the holder.
_TRY = "SELECT 1 FROM reconciler.apply_locks WHERE name = %s FOR UPDATE SKIP LOCKED"
_EXISTS = "SELECT 1 FROM reconciler.apply_locks WHERE name = %s"
# A row missing (deleted by the catalog's owner) is created and locked in one statement.
_CREATE_LOCKED = """INSERT INTO reconciler.apply_locks AS l (name) VALUES (%s)
                    ON CONFLICT (name) DO UPDATE SET name = l.name"""
_CREATE = "INSERT INTO reconciler.apply_locks (name) VALUES (%s) ON CONFLICT (name) DO NOTHING"

# The session whose open transaction holds the row: a row's xmax is the transaction that
# last locked or changed it, and a running transaction holds the lock on its own id.
# (A row locked by several sessions at once, or in a savepoint, carries another id: not traced.)
_HOLDER = sql.SQL(
    """SELECT a.application_name, a.usename, a.client_addr::text,
              to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
       FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
       WHERE l.locktype = 'transactionid' AND l.granted AND l.pid <> pg_backend_pid()
         AND l.transactionid::text = (SELECT xmax::text FROM reconciler.apply_locks WHERE name = %s)
       LIMIT 1""")


def bound_lock_waits(conn: psycopg.Connection[Any], seconds: float) -> None:
    """Bound each later lock wait of the current transaction to ``seconds``.

    At least 1 ms, since PostgreSQL reads a lock_timeout of 0 as no bound at all.
    """
    milliseconds = min(MAX_LOCK_TIMEOUT_MS, max(1, round(seconds * 1000)))
    conn.execute("SELECT set_config('lock_timeout', %s, true)", (f"{milliseconds}ms",))


def register_source(conn: psycopg.Connection[Any], source: str, timeout: float) -> None:
    """Make sure the source's lock row exists, committed, before the apply's transaction locks it.

    A source's first apply creates it in a short transaction of its own, so that a second
    apply of a new source waits on the row's lock, whose holder can be named, and not on
    an uncommitted insert. Needs INSERT privilege only that first time.
    """
    name = SOURCE_PREFIX + source
    try:
        with conn.transaction():
            if conn.execute(_EXISTS, (name,)).fetchone() is None:
                bound_lock_waits(conn, timeout)
                conn.execute(_CREATE, (name,))
    except psycopg.errors.LockNotAvailable:
        raise _busy(source, timeout, describe_holder(None)) from None


def lock_source(conn: psycopg.Connection[Any], source: str, timeout: float,
                started: float | None = None) -> None:
    """Take the source's apply lock for the current transaction, waiting up to ``timeout`` seconds.

    On timeout, raises LockTimeout naming the holder (its application name carries the run
    id and actor of an apply) and since when. Once the lock is taken, what is left of
    ``timeout`` (counted from ``started``, a ``time.monotonic()`` reading, by default now)
    bounds each later lock wait of the transaction: the re-check's row locks and the writes'.
    """
    deadline = (time.monotonic() if started is None else started) + timeout
    _take(conn, SOURCE_PREFIX + source, deadline, lambda who: _busy(source, timeout, who))
    bound_lock_waits(conn, max(0.0, deadline - time.monotonic()))


def lock_audit_log(conn: psycopg.Connection[Any], timeout: float | None) -> None:
    """Take the audit log's append lock for the current transaction, waiting up to ``timeout`` seconds.

    The wait has a budget of its own: another apply (of any source) holds the lock only
    from its append to its commit. The bound stays in force for the rest of the
    transaction. ``None``: wait as long as the session's own lock_timeout allows.
    """
    if timeout is None:
        conn.execute(_CREATE_LOCKED, (AUDIT_LOG,))
        return

    def busy(who: str) -> LockTimeout:
        return LockTimeout(f"the audit log's append lock is held by another session ({who}); "
                           f"gave up after {timeout:g} s (--lock-timeout); nothing was applied")

    _take(conn, AUDIT_LOG, time.monotonic() + timeout, busy)
    bound_lock_waits(conn, timeout)


def lock_event_outbox(conn: psycopg.Connection[Any], timeout: float) -> None:
    """Take the deliverers' lock on the event outbox for the current transaction, waiting up
    to ``timeout`` seconds: one deliverer at a time sends events, so none overtakes another."""
    def busy(who: str) -> LockTimeout:
        return LockTimeout(f"another process is delivering platform events ({who}); gave up waiting after "
                           f"{timeout:g} s; the events stay pending")

    _take(conn, EVENT_OUTBOX, time.monotonic() + timeout, busy)
    bound_lock_waits(conn, timeout)


def _take(conn: psycopg.Connection[Any], name: str, deadline: float,
          busy: Callable[[str], LockTimeout]) -> None:
    """Lock the row ``name`` by the ``time.monotonic()`` deadline, or raise ``busy(holder)``.

    Tries again after short, growing pauses, as the lock is held only while an apply runs.
    """
    pause = 0.005
    while conn.execute(_TRY, (name,)).fetchone() is None:
        if conn.execute(_EXISTS, (name,)).fetchone() is None:
            _create_locked(conn, name, deadline, busy)
            return
        left = deadline - time.monotonic()
        if left <= 0:
            raise busy(holder(conn, name))
        pause = min(2 * pause, LONGEST_PAUSE)
        time.sleep(min(pause, left))


def _create_locked(conn: psycopg.Connection[Any], name: str, deadline: float,
                   busy: Callable[[str], LockTimeout]) -> None:
    """Create the missing row ``name`` and hold it; a concurrent creator is waited for until the deadline."""
    bound_lock_waits(conn, max(0.0, deadline - time.monotonic()))
    try:
        conn.execute(_CREATE_LOCKED, (name,))
    except psycopg.errors.LockNotAvailable:
        raise busy(describe_holder(None)) from None  # the transaction failed: nothing more can be read


def _busy(source: str, timeout: float, who: str) -> LockTimeout:
    return LockTimeout(f"another apply of source {source!r} is running ({who}); "
                       f"gave up after {timeout:g} s (--lock-timeout)")


def holder(conn: psycopg.Connection[Any], name: str) -> str:
    """The session holding the lock row ``name``, as messages name a lock's holder."""
    try:
        with conn.transaction():
            row = conn.execute(_HOLDER, (name,)).fetchone()
    except psycopg.Error:
        row = None
    return describe_holder(row)


def describe_holder(row: Sequence[Any] | None) -> str:
    """A lock's holder as messages name it, from its application name, user, address and
    transaction start (columns another role's sessions may hide are left out)."""
    if not row:
        return "holder unknown"
    app, user, addr, since = row
    return f"held by {app or 'an unnamed session'} as database user {user}" + (
        f" from {addr}" if addr else "") + (f", since {since}" if since else "")
