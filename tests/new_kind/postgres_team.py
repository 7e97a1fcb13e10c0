"""Teams in metastore.teams: the Team kind's PostgreSQL writer (tests/test_new_kind.py adds it to a copy
of the package)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from psycopg import sql

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
from reconciler.core.diff import Live
from reconciler.core.kinds import team


def _write(conn: Connection, writes: Sequence[Write], context: WriteContext) -> None:
    """Upsert the created and updated teams, delete the purged ones."""
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO metastore.teams (name, description, contact) VALUES (%s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET description = EXCLUDED.description, contact = EXCLUDED.contact,
                   updated_at = clock_timestamp()""",
            [(identity(w.address), after_value(w, "description"), after_value(w, "contact"))
             for w in writes if w.op is not ops.Purge])
        cur.execute("DELETE FROM metastore.teams WHERE name = ANY(%s)",
                    ([identity(w.address) for w in writes if w.op is ops.Purge],))


_COLUMNS = sql.SQL("name, description, contact, {updated}").format(updated=ms("updated_at"))
_READ = sql.SQL("SELECT {columns} FROM metastore.teams").format(columns=_COLUMNS)
_RECHECK = sql.SQL("SELECT {columns} FROM metastore.teams WHERE name = ANY(%s) FOR UPDATE").format(columns=_COLUMNS)
_HOLDING = sql.SQL("SELECT t.xmax::text AS xid FROM metastore.teams t WHERE t.name = ANY({0})")


def _live(row: tuple[Any, ...]) -> Live:
    """A teams row as the diff sees it."""
    name, description, contact, updated = row
    return Live(f"team:{name}", "team", {"description": description, "contact": contact},
                token=updated, updated_at=updated)


WRITER = KindWriter(team.SPEC, _write, _RECHECK, _live, holding=_HOLDING, reader=KindReader(_READ))
