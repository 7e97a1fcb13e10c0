"""An apply's writes around the kinds' own (catalog/postgres/kinds/): re-checking what the plan
saw under row locks, the reconciler's bookkeeping, and failures as one clear error; all inside
the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler.core import kinds
from reconciler.errors import ConflictError, DatabaseError, LockTimeout, ReconcilerError
from reconciler.core.checks import check_unmoved, moved_since_plan
from reconciler.catalog.postgres.connection import explain
from reconciler.catalog.postgres.kinds import WRITERS
from reconciler.catalog.postgres.kinds.base import identity, text_array
from reconciler.catalog.postgres.locks import describe_holder
from reconciler.catalog.port import Managed as Managed  # the values a backend writes
from reconciler.catalog.port import Write as Write


# --- re-checking -------------------------------------------------------------------------

# Who holds what the plan touches, as the holder lookups name a session.
_SESSION = sql.SQL(
    """SELECT a.application_name, a.usename, a.client_addr::text,
              to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
       FROM pg_stat_activity a WHERE a.pid = ANY(ARRAY({pids})) AND a.pid <> pg_backend_pid()
       ORDER BY a.xact_start LIMIT 1""")

# A session holding a catalog table in a mode that stops writes (a migration, LOCK TABLE).
_TABLE_HOLDER = _SESSION.format(pids=sql.SQL(
    """SELECT l.pid FROM pg_locks l
       JOIN pg_class c ON c.oid = l.relation
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE l.locktype = 'relation' AND l.granted
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND n.nspname IN ('timestore', 'metastore', 'reconciler')
         AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"""))

# The session whose open transaction locked or changed a row the plan touches: a row's
# xmax is the transaction that last locked or updated it, and a running transaction holds
# the lock on its own id. (Rows locked by several sessions at once carry a multixact id
# instead, and are not traced.)
def _row_holder_query() -> sql.Composed:
    """``_ROW_HOLDER``: each kind's rows (``KindWriter.holding``, its placeholders named
    ``k<rank>_<n>``), and the reconciler's own record of them."""
    touched = [kind.holding.format(*(sql.Placeholder(f"k{rank}_{n}") for n in range(len(kind.params([])))))
               for rank, kind in enumerate(WRITERS)]
    return _SESSION.format(pids=sql.SQL(
        """WITH touched AS (
               {touched}
               UNION SELECT m.xmax::text FROM reconciler.managed_objects m WHERE m.address = ANY(%(addresses)s))
           SELECT l.pid FROM pg_locks l
           WHERE l.locktype = 'transactionid' AND l.granted
             AND l.transactionid::text IN (SELECT xid FROM touched WHERE xid <> '0')""").format(
        touched=sql.SQL("\n               UNION ").join(touched)))


_ROW_HOLDER = _row_holder_query()


def _row_holder(conn: psycopg.Connection[Any], addresses: Collection[str]) -> str:
    """The session holding a table or a row the plan touches, named as ``locks.describe_holder`` names it.

    Best effort, after the apply's transaction was rolled back: the tables are looked at
    first, since reading the rows would wait behind a session holding a whole table.
    """
    if conn.closed or conn.broken:
        return describe_holder(None)
    params: dict[str, Any] = {"addresses": list(addresses)}
    for rank, kind in enumerate(WRITERS):
        columns = kind.params([identity(a) for a in addresses if a.startswith(kind.kind.prefix)])
        params.update({f"k{rank}_{n}": column for n, column in enumerate(columns)})
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', '1s', true)")
            row = conn.execute(_TABLE_HOLDER).fetchone() or conn.execute(_ROW_HOLDER, params).fetchone()
    except psycopg.Error:
        row = None
    return describe_holder(row)


def recheck(conn: psycopg.Connection[Any], expected: Mapping[str, tuple[str, str | None]],
            source: str) -> None:
    """Lock every object the plan touches and compare it with what the plan saw.

    ``expected`` maps address → (kind, token the plan saw; None = must not exist).
    Any difference raises one ConflictError naming every object that moved.
    """
    problems: list[str] = []
    for kind in WRITERS:
        wanted = {a: t for a, (k, t) in expected.items() if k == kind.kind.name}
        if not wanted:
            continue
        found = {}
        with conn.cursor() as cur:
            cur.execute(kind.recheck, kind.params([identity(a) for a in wanted]))
            for row in cur:
                obj = kind.live(row)
                found[obj.address] = obj
        problems += moved_since_plan(wanted, found)
    others = conn.execute(
        "SELECT address, source FROM reconciler.managed_objects WHERE address = ANY(%s) AND source <> %s",
        (list(expected), source),
    ).fetchall()
    check_unmoved(problems, others)


# --- the reconciler's own bookkeeping ----------------------------------------------------------


# What an object archived because it is no longer declared was last applied as: its archived state.
_ARCHIVED_STATE = {spec.name: spec.archived({}) for spec in kinds.REGISTRY if spec.archive_field is not None}


def write_managed(conn: psycopg.Connection[Any], rows: Sequence[Managed], forget: Sequence[str],
                  source: str, run_id: str, *, removed: Sequence[tuple[str, str]] = (),
                  commit: str | None = None, renamed: Sequence[tuple[str, str]] = ()) -> None:
    """Record what was applied (the next plan's "last applied"); forget purged objects.

    ``renamed`` (old address, new address): the row moves to the new address first, so what
    it remembers (the paths that ever held a secret) follows the object.

    ``removed`` (address, kind) were archived because no manifest declares them any more:
    their last applied state becomes the archived one, so that declaring them again is a
    change the manifest asks for (a restore), as it is.

    Objects recorded for the first time go straight in with COPY; a row some source
    created meanwhile fails the apply as a concurrent writer. The others are staged
    and upserted, and only this source's rows are changed.
    """
    if renamed:
        with conn.cursor() as cur:
            cur.executemany("UPDATE reconciler.managed_objects SET address = %s WHERE address = %s AND source = %s",
                            [(new, old, source) for old, new in renamed])
    known = {address for (address,) in conn.execute(
        "SELECT address FROM reconciler.managed_objects WHERE address = ANY(%s)", ([m.address for m in rows],))}
    with conn.cursor() as cur:
        new = [m for m in rows if m.address not in known]
        if new:
            with cur.copy("COPY reconciler.managed_objects (address, kind, source, applied, protect, commit_sha, "
                          "path, line, end_line, run_id, secret_paths) FROM STDIN") as copy:
                for m in new:
                    copy.write_row((m.address, m.kind, source, json.dumps(m.applied), m.protect, m.commit, m.path,
                                    m.line, m.end_line, run_id, text_array(sorted(m.secret_paths))))
        again = [m for m in rows if m.address in known]
        if again:
            _update_managed(cur, again, source, run_id)
        if forget:
            cur.execute("DELETE FROM reconciler.managed_objects WHERE address = ANY(%s) AND source = %s",
                        (list(forget), source))
        for kind, state in _ARCHIVED_STATE.items():
            addresses = [address for address, of in removed if of == kind]
            if addresses:
                cur.execute(
                    """UPDATE reconciler.managed_objects SET applied = applied || %s, commit_sha = %s,
                           run_id = %s, applied_at = now(), declared = false
                       WHERE address = ANY(%s) AND source = %s""",
                    (Jsonb(state), commit, run_id, addresses, source))


def _update_managed(cur: psycopg.Cursor[Any], rows: Sequence[Managed], source: str, run_id: str) -> None:
    cur.execute(
        """CREATE TEMP TABLE reconciler_stage_managed (address text, kind text, applied jsonb,
               protect boolean, commit_sha text, path text, line integer, end_line integer,
               secret_paths text[]) ON COMMIT DROP""")
    with cur.copy("COPY reconciler_stage_managed FROM STDIN") as copy:
        for m in rows:
            copy.write_row((m.address, m.kind, json.dumps(m.applied), m.protect, m.commit, m.path,
                            m.line, m.end_line, text_array(sorted(m.secret_paths))))
    # A path that held a secret is remembered for good (its old value stays masked).
    cur.execute(
        """INSERT INTO reconciler.managed_objects AS m (address, kind, source, applied, protect,
               commit_sha, path, line, end_line, run_id, applied_at, secret_paths)
           SELECT address, kind, %s, applied, protect, commit_sha, path, line, end_line, %s, now(), secret_paths
           FROM reconciler_stage_managed
           ON CONFLICT (address) DO UPDATE SET applied = EXCLUDED.applied, protect = EXCLUDED.protect,
               declared = true,
               secret_paths = ARRAY(SELECT DISTINCT p FROM unnest(m.secret_paths || EXCLUDED.secret_paths) AS p
                                    ORDER BY p),
               commit_sha = EXCLUDED.commit_sha, path = EXCLUDED.path, line = EXCLUDED.line,
               end_line = EXCLUDED.end_line, run_id = EXCLUDED.run_id, applied_at = now()
           WHERE m.source = EXCLUDED.source""",
        (source, run_id),
    )
    cur.execute("DROP TABLE reconciler_stage_managed")


def translate(error: psycopg.Error, conn: psycopg.Connection[Any] | None = None, *,
              touched: Collection[str] = (), lock_timeout: float | None = None) -> ReconcilerError:
    """A database failure during apply, as one clear line, once the apply's transaction is rolled back.

    ``conn`` (the apply's connection) is used to name what the failure was about: the
    session holding a row of the ``touched`` objects when a lock wait ran out of the
    ``lock_timeout`` budget, or the statement_timeout in force when a statement was cancelled.
    """
    if isinstance(error, psycopg.errors.LockNotAvailable) and lock_timeout is not None:
        holder = _row_holder(conn, touched) if conn is not None else describe_holder(None)
        return LockTimeout(f"an object the plan touches is locked by another session ({holder}); "
                           f"gave up after {lock_timeout:g} s (--lock-timeout); nothing was applied")
    text = explain(error, conn)
    if isinstance(error, psycopg.errors.UniqueViolation):
        return ConflictError(f"a concurrent writer created the same object: {text}; nothing was applied")
    return DatabaseError(f"apply failed and was rolled back; nothing was applied: {text}")
