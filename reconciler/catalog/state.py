"""Reading live state for the plan: one pass per table, rows mapped to the diff's plain values."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from ..diff import Applied, Live

# updated_at as the services compare it: to the millisecond, in UTC.
_MS = "to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"


def _ms(column: str) -> sql.Composable:
    return sql.SQL(_MS).format(sql.SQL(column))


_STORAGE_TARGETS = sql.SQL(
    "SELECT name, kind, description, config, {updated} FROM timestore.storage_targets"
).format(updated=_ms("updated_at"))

_DATASETS = sql.SQL(
    """SELECT d.slug, d.name, d.description, d.status, st.name, d.metadata, rp.policy,
              {updated}, {retention_updated}
       FROM timestore.datasets d
       LEFT JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id
       LEFT JOIN timestore.dataset_retention_policies rp ON rp.dataset_id = d.id"""
).format(updated=_ms("d.updated_at"), retention_updated=_ms("rp.updated_at"))

_RECORDS = sql.SQL(
    """SELECT namespace, record_key, owner, tags, schema_hash, metadata, deleted_at IS NOT NULL,
              version, {updated}, updated_by
       FROM metastore.metastore_records"""
).format(updated=_ms("updated_at"))

_APPLIED = sql.SQL(
    """SELECT address, kind, source, applied, protect, commit_sha, path, line, end_line
       FROM reconciler.managed_objects"""
)


@dataclass(frozen=True)
class CatalogState:
    """Everything the plan compares against: live objects and the reconciler's records."""

    live: dict[str, Live]
    applied: dict[str, Applied]


def storage_target_live(row: tuple[Any, ...]) -> Live:
    """A storage_targets row as the diff sees it."""
    name, kind, description, config, updated = row
    return Live(f"storage-target:{name}", "storage-target",
                {"type": kind, "description": description, "config": config or {}},
                token=updated, updated_at=updated)


def dataset_live(row: tuple[Any, ...]) -> Live:
    """A datasets row (with its storage target name and retention policy) as the diff sees it.

    The token covers the retention row too: the services move it on its own.
    """
    slug, name, description, status, target, metadata, policy, updated, policy_updated = row
    fields = {"name": name, "description": description, "status": status, "storageTarget": target,
              "metadata": metadata or {}, "retention": policy}
    return Live(f"dataset:{slug}", "dataset", fields, token=f"{updated}|{policy_updated or '-'}",
                updated_at=updated)


def record_live(row: tuple[Any, ...]) -> Live:
    """A metastore_records row as the diff sees it; the token is its version."""
    namespace, key, owner, tags, schema_hash, metadata, deleted, version, updated, updated_by = row
    fields = {"owner": owner, "tags": list(tags or []), "schemaHash": schema_hash,
              "metadata": metadata or {}, "deleted": deleted}
    return Live(f"record:{namespace}/{key}", "record", fields, token=str(version), updated_at=updated,
                updated_by=updated_by)


def _rows(conn: psycopg.Connection[Any], query: sql.Composed | sql.SQL,
          params: Sequence[Any] | None = None) -> Iterable[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        while batch := cur.fetchmany(5000):
            yield from batch


def read_live(conn: psycopg.Connection[Any]) -> dict[str, Live]:
    """Every storage target, dataset and record in the catalog, one query per table."""
    live: dict[str, Live] = {}
    for query, build in ((_STORAGE_TARGETS, storage_target_live), (_DATASETS, dataset_live),
                         (_RECORDS, record_live)):
        for row in _rows(conn, query):
            obj = build(row)
            live[obj.address] = obj
    return live


def read_applied(conn: psycopg.Connection[Any], addresses: Collection[str] | None = None) -> dict[str, Applied]:
    """The reconciler's record of every object it manages (optionally only some addresses)."""
    query: sql.Composed | sql.SQL = _APPLIED
    params: list[Any] | None = None
    if addresses is not None:
        query = sql.SQL("{} WHERE address = ANY(%s)").format(_APPLIED)
        params = [list(addresses)]
    out: dict[str, Applied] = {}
    for address, kind, source, applied, protect, commit, path, line, end_line in _rows(conn, query, params):
        out[address] = Applied(address, kind, source, applied or {}, protect, commit, path, line, end_line)
    return out


def read_state(conn: psycopg.Connection[Any]) -> CatalogState:
    """Live objects and applied records, read in one repeatable-read snapshot."""
    with conn.transaction():
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return CatalogState(read_live(conn), read_applied(conn))
