"""Storage targets in timestore.storage_targets: upserts, and purges once the datasets moved off them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler.catalog.port import Write
from reconciler.catalog.postgres.kinds.base import (
    Connection,
    KindReader,
    KindWriter,
    WriteContext,
    after_value,
    identity,
    ms,
)
from reconciler.core import ops
from reconciler.core.diff import Live, OutOfBand
from reconciler.core.kinds import storage_target
from reconciler.errors import ConflictError

_STORAGE_TARGET_COLUMNS = frozenset({"type", "description", "config"})


def _write(conn: Connection, writes: Sequence[Write], context: WriteContext) -> None:
    """Create, rename or update storage targets (ids ``st-<name>``, as the service names its own;
    a renamed one keeps its id).

    A change of ``protect`` alone is the reconciler's bookkeeping: the row (and its
    updated_at) is left alone. Purges are ``_purge``, after the datasets.
    """
    upserts = [w for w in writes if w.op is ops.Create
               or (w.op is not ops.Purge and _STORAGE_TARGET_COLUMNS & set(w.fields))]
    with conn.cursor() as cur:
        # A rename keeps the id (st-<the name it was created with>): datasets refer to it by id.
        cur.executemany(
            """UPDATE timestore.storage_targets SET name = %s,
                   updated_at = GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')
               WHERE name = %s""",
            [(identity(w.address), (w.before or {})["name"]) for w in writes if w.op is ops.Rename])
        cur.executemany(
            """INSERT INTO timestore.storage_targets (id, name, kind, description, config)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, description = EXCLUDED.description,
                   config = EXCLUDED.config,
                   updated_at = GREATEST(clock_timestamp(), timestore.storage_targets.updated_at
                                         + interval '1 millisecond')""",
            [("st-" + identity(w.address), identity(w.address), after_value(w, "type"),
              after_value(w, "description"), Jsonb(after_value(w, "config") or {})) for w in upserts],
        )


def _purge(conn: Connection, writes: Sequence[Write]) -> None:
    """Delete storage targets marked for purge (after datasets, which may point at them).

    The plan refuses a purge while a dataset uses the target; one that started using it
    since makes the whole apply fail, naming it.
    """
    names = [identity(w.address) for w in writes if w.op is ops.Purge]
    if not names:
        return
    try:
        with conn.transaction():
            conn.execute("DELETE FROM timestore.storage_targets WHERE name = ANY(%s)", (names,))
    except psycopg.errors.ForeignKeyViolation:
        users = conn.execute(_STORAGE_TARGET_USERS, {"names": names}).fetchall()
        listed = ", ".join(f"dataset:{slug} ({why} storage-target:{name})" for name, slug, why in users)
        raise ConflictError(f"cannot purge storage target(s) {', '.join(names)}: datasets started using them "
                            f"since the plan: {listed or 'unknown'}; nothing was applied") from None


# Who uses the storage targets: as their default target, or with partitions stored there.
_STORAGE_TARGET_USERS = sql.SQL(
    """SELECT st.name, d.slug, 'points at' FROM timestore.datasets d
       JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id WHERE st.name = ANY(%(names)s)
       UNION SELECT st.name, d.slug, 'has partitions on' FROM timestore.dataset_partitions p
       JOIN timestore.storage_targets st ON st.id = p.storage_target_id
       JOIN timestore.datasets d ON d.id = p.dataset_id WHERE st.name = ANY(%(names)s)
       ORDER BY 1, 2, 3""")


# The rows the plan touches, locked, as the plan read them.
_RECHECK = sql.SQL(
        """SELECT name, kind, description, config,
                  to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
           FROM timestore.storage_targets WHERE name = ANY(%s) FOR UPDATE""")

# --- reading ---------------------------------------------------------------------------------

_READ = sql.SQL(
    "SELECT name, kind, description, config, {updated} FROM timestore.storage_targets"
).format(updated=ms("updated_at"))


def _live(row: tuple[Any, ...]) -> Live:
    """A storage_targets row as the diff sees it."""
    name, kind, description, config, updated = row
    return Live(f"storage-target:{name}", "storage-target",
                {"type": kind, "description": description, "config": config or {}},
                token=updated, updated_at=updated)


# Datasets with partitions stored on the named storage targets (a partition's storage
# target is a foreign key: the target cannot be deleted while one is there).
_STORED_ON = sql.SQL(
    """SELECT DISTINCT st.name, 'dataset:' || d.slug FROM timestore.dataset_partitions p
       JOIN timestore.storage_targets st ON st.id = p.storage_target_id
       JOIN timestore.datasets d ON d.id = p.dataset_id
       WHERE st.name = ANY(%s)""")

# The rows holding the storage targets (catalog/postgres/writer.py names who holds them).
_HOLDING = sql.SQL("SELECT s.xmax::text AS xid FROM timestore.storage_targets s WHERE s.name = ANY({0})")


def _fallback(change: OutOfBand) -> str:
    return "timestore.storage_targets updated_at"


WRITER = KindWriter(storage_target.SPEC, _write, _RECHECK, _live, finish=_purge, holding=_HOLDING,
                    reader=KindReader(_READ, users=_STORED_ON, fallback=_fallback))
