"""Who changed a managed object outside git, and when: read from the services' own audit rows.

For each object a plan found changed outside git, the newest audit row the services wrote
for it since the reconciler last wrote it names who made the change and when (the
change's own time, not the row's); each kind's module (catalog/postgres/kinds/) says which
audit tables speak for it (``KindReader.evidence``): ``metastore.metastore_record_audits``
for a record, ``timestore.dataset_access_audit`` for a dataset's columns and
``timestore.lifecycle_audit_log`` for its retention policy. Rows the reconciler wrote
itself are never taken (they carry its run id, or are older than its last write). Where
no such row exists — an edit made in SQL by hand — the row's own ``updated_by`` and
``updated_at`` (for retention, the policy's ``updated_at``) are what is left
(``KindReader.fallback``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from reconciler.catalog.postgres.kinds import BY_KIND, WRITERS
from reconciler.core.diff import OutOfBand

# Since when a row is not the reconciler's: the later of its last bookkeeping write and its
# last audit entry (the services' rows of an apply are written between the two).
_SINCE = sql.SQL(
    """SELECT m.address, greatest(m.applied_at, (SELECT max(a.recorded_at) FROM reconciler.audit_log a
                                                 WHERE a.address = m.address))
       FROM reconciler.managed_objects m WHERE m.address = ANY(%s)""")

_LONG_AGO = datetime(1, 1, 1, tzinfo=UTC)


def with_evidence(conn: psycopg.Connection[Any], outside: Mapping[str, OutOfBand]) -> dict[str, OutOfBand]:
    """``outside`` (address → change made outside git) with who, when and where that was read
    filled in from the services' audit rows, where they have one for it."""
    if not outside:
        return {}
    since = dict(conn.execute(_SINCE, (list(outside),)).fetchall())
    found: dict[str, tuple[str, str | None, str]] = {}  # address → (evidence, by, at)
    for kind in WRITERS:
        prefix = kind.kind.prefix
        addresses = [a for a in outside if a.startswith(prefix)]
        for rows in kind.reader.evidence:
            chosen = [a for a in addresses if rows.wants(outside[a])]
            params = (chosen, *kind.params([a.removeprefix(prefix) for a in chosen]), [since.get(a) for a in chosen])
            for address, row_id, actor, at in _rows(conn, rows.query, params):
                if address not in found or at > (found[address][2] or ""):
                    found[address] = (f"{rows.table} id {row_id}", actor, at)
    out = {}
    for address, change in outside.items():
        if address in found:
            evidence, by, at = found[address]
            out[address] = replace(change, by=by, at=at, evidence=evidence)
        else:
            out[address] = replace(change, evidence=_fallback(address, change))
    return out


def _fallback(address: str, change: OutOfBand) -> str:
    if change.after is None:
        return "no audit row of the services names it"
    kind = BY_KIND.get(address.split(":", 1)[0])
    return kind.reader.fallback(change) if kind is not None else ""


def _rows(conn: psycopg.Connection[Any], query: sql.Composed,
          params: tuple[Sequence[Any], ...]) -> list[tuple[str, str, str | None, str]]:
    if not params[0]:
        return []
    since = [moment if moment is not None else _LONG_AGO for moment in params[-1]]
    return conn.execute(query, (*params[:-1], since)).fetchall()
