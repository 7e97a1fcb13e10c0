"""Who changed a managed object outside git, and when: read from the services' own audit rows.

For each object a plan found changed outside git, the newest audit row the services wrote
for it since the reconciler last wrote it names who made the change and when (the
change's own time, not the row's): ``metastore.metastore_record_audits`` for a record,
``timestore.dataset_access_audit`` for a dataset's columns and
``timestore.lifecycle_audit_log`` for its retention policy. Rows the reconciler wrote
itself are never taken (they carry its run id, or are older than its last write). Where
no such row exists — an edit made in SQL by hand — the row's own ``updated_by`` and
``updated_at`` (for retention, the policy's ``updated_at``) are what is left.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg import sql

from reconciler.core.diff import OutOfBand

_MS = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"

# Since when a row is not the reconciler's: the later of its last bookkeeping write and its
# last audit entry (the services' rows of an apply are written between the two).
_SINCE = sql.SQL(
    """SELECT m.address, greatest(m.applied_at, (SELECT max(a.recorded_at) FROM reconciler.audit_log a
                                                 WHERE a.address = m.address))
       FROM reconciler.managed_objects m WHERE m.address = ANY(%s)""")

_RECORD_ROWS = sql.SQL(
    """SELECT DISTINCT ON (k.address) k.address, a.id::text, a.actor, {at}
       FROM unnest(%s::text[], %s::text[], %s::text[], %s::timestamptz[]) AS k(address, namespace, record_key, since)
       JOIN metastore.metastore_record_audits a
         ON a.namespace = k.namespace AND a.record_key = k.record_key AND a.created_at > k.since
       ORDER BY k.address, a.created_at DESC, a.id DESC""").format(at=sql.SQL(_MS).format(sql.SQL("a.created_at")))

_DATASET_ROWS = sql.SQL(
    """SELECT DISTINCT ON (k.address) k.address, a.id, a.actor_id, {at}
       FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(address, slug, since)
       JOIN timestore.dataset_access_audit a
         ON a.dataset_slug = k.slug AND a.created_at > k.since AND NOT a.metadata ? 'reconcilerRunId'
       ORDER BY k.address, a.created_at DESC, a.id DESC""").format(at=sql.SQL(_MS).format(sql.SQL("a.created_at")))

_RETENTION_ROWS = sql.SQL(
    """SELECT DISTINCT ON (k.address) k.address, l.id,
              coalesce(l.payload->>'actor', l.payload->>'actorId', l.payload->>'updatedBy'), {at}
       FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(address, slug, since)
       JOIN timestore.datasets d ON d.slug = k.slug
       JOIN timestore.lifecycle_audit_log l
         ON l.dataset_id = d.id AND l.event_type LIKE 'admin.retention.%%' AND l.created_at > k.since
            AND NOT l.payload ? 'reconcilerRunId'
       ORDER BY k.address, l.created_at DESC, l.id DESC""").format(at=sql.SQL(_MS).format(sql.SQL("l.created_at")))

_LONG_AGO = datetime(1, 1, 1, tzinfo=UTC)
# What is left to read who and when from, when no audit row says it.
_FALLBACK = {
    "record": "metastore.metastore_records updated_by, updated_at",
    "dataset": "timestore.datasets updated_at",
    "retention": "timestore.dataset_retention_policies updated_at",
    "storage-target": "timestore.storage_targets updated_at",
}


def with_evidence(conn: psycopg.Connection[Any], outside: Mapping[str, OutOfBand]) -> dict[str, OutOfBand]:
    """``outside`` (address → change made outside git) with who, when and where that was read
    filled in from the services' audit rows, where they have one for it."""
    if not outside:
        return {}
    since = dict(conn.execute(_SINCE, (list(outside),)).fetchall())
    found: dict[str, tuple[str, str | None, str]] = {}  # address → (evidence, by, at)
    records = [a for a in outside if a.startswith("record:")]
    datasets = [a for a in outside if a.startswith("dataset:")]
    for address, row_id, actor, at in _rows(conn, _RECORD_ROWS, _record_keys(records, since)):
        found[address] = (f"metastore.metastore_record_audits id {row_id}", actor, at)
    columns = [a for a in datasets if set(outside[a].fields) - {"retention"} or outside[a].after is None]
    retention = [a for a in datasets if "retention" in outside[a].fields]
    for query, table, chosen in ((_DATASET_ROWS, "timestore.dataset_access_audit", columns),
                                 (_RETENTION_ROWS, "timestore.lifecycle_audit_log", retention)):
        for address, row_id, actor, at in _rows(conn, query, _slugs(chosen, since)):
            if address not in found or at > (found[address][2] or ""):
                found[address] = (f"{table} id {row_id}", actor, at)
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
    kind = address.split(":", 1)[0]
    if kind == "dataset" and set(change.fields) == {"retention"}:
        return _FALLBACK["retention"]
    return _FALLBACK.get(kind, "")


def _record_keys(addresses: Sequence[str], since: Mapping[str, Any]) -> tuple[list[Any], ...]:
    keys = [a.split(":", 1)[1].split("/", 1) for a in addresses]
    return (list(addresses), [k[0] for k in keys], [k[1] for k in keys], [since.get(a) for a in addresses])


def _slugs(addresses: Sequence[str], since: Mapping[str, Any]) -> tuple[list[Any], ...]:
    return (list(addresses), [a.split(":", 1)[1] for a in addresses], [since.get(a) for a in addresses])


def _rows(conn: psycopg.Connection[Any], query: sql.Composed,
          params: tuple[list[Any], ...]) -> list[tuple[str, str, str | None, str]]:
    if not params[0]:
        return []
    since = [moment if moment is not None else _LONG_AGO for moment in params[-1]]
    return conn.execute(query, (*params[:-1], since)).fetchall()
