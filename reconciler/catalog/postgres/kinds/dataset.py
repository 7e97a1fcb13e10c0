"""Datasets in timestore.datasets and their retention policies, with the timestore's audit rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler.catalog.port import Write
from reconciler.catalog.postgres import service_audit
from reconciler.catalog.postgres.kinds.base import (
    Connection,
    Evidence,
    KindReader,
    KindWriter,
    WriteContext,
    after_value,
    identity,
    jsonb_patch,
    metadata_patch,
    ms,
)
from reconciler.core import ops
from reconciler.core.diff import Live, OutOfBand
from reconciler.core.kinds import dataset
from reconciler.core.service_rules import new_id

# The manifest fields that are columns of timestore.datasets (the rest, retention and
# protect, live elsewhere).
_DATASET_COLUMNS = frozenset({"name", "description", "status", "storageTarget", "metadata"})
_INSERT_DATASET = sql.SQL(
    """INSERT INTO timestore.datasets (id, slug, name, description, status, default_storage_target_id,
           metadata)
       VALUES (%s, %s, %s, %s, %s, (SELECT id FROM timestore.storage_targets WHERE name = %s), %s)""")
# Metadata is patched, not replaced (metadata_patch).
_UPDATE_DATASET = service_audit.dataset_update("slug", sql.SQL(
    """name = %(name)s, description = %(description)s, status = %(status)s,
       default_storage_target_id = (SELECT st.id FROM timestore.storage_targets st WHERE st.name = %(target)s),
       metadata = (d.metadata - %(drop)s::text[]) || %(set)s"""))
# A rename is the same PATCH with the slug too, found under the slug it had (``key``).
_RENAME_DATASET = service_audit.dataset_update("slug", sql.SQL(
    """slug = %(slug)s, name = %(name)s, description = %(description)s, status = %(status)s,
       default_storage_target_id = (SELECT st.id FROM timestore.storage_targets st WHERE st.name = %(target)s),
       metadata = (d.metadata - %(drop)s::text[]) || %(set)s"""), service_audit.RENAME_COMPARED)
_DATASET_CREATED = service_audit.dataset_event("slug", service_audit.DATASET_CREATED,
                                               service_audit.created_metadata)
_DATASET_PURGED = service_audit.dataset_event("slug", service_audit.DATASET_PURGED, service_audit.purged_metadata)
_RETENTION_EVENT = service_audit.retention_event("slug")


def _write(conn: Connection, writes: Sequence[Write], context: WriteContext) -> None:
    """Write dataset changes and, in the same transaction, the audit rows the timestore
    writes for the same operations (catalog/service_audit.py).

    Columns change only when a column field changed; a retention-only change writes
    the policy and its lifecycle row and leaves the dataset row (and its updated_at) alone.
    The audit rows carry ``run_id`` (as ``reconcilerRunId``) in their free-form JSON, so
    they can be matched with the reconciler's own log.
    """
    run_id = context.run_id
    creates = [w for w in writes if w.op is ops.Create]
    column_changes = [w for w in writes if w.op in (ops.Update, ops.Archive, ops.Restore)
                      and _DATASET_COLUMNS & set(w.fields)]
    purges = [w for w in writes if w.op is ops.Purge]
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_DATASET,
            [(new_id("ds"), identity(w.address), after_value(w, "name"), after_value(w, "description"),
              after_value(w, "status"), after_value(w, "storageTarget"), Jsonb(after_value(w, "metadata") or {}))
             for w in creates],
        )
        cur.executemany(_DATASET_CREATED, [_audited(w, run_id) for w in creates])
        # Renames before the other writes, which find a renamed dataset by its new slug.
        cur.executemany(_RENAME_DATASET, [{**_dataset_update(w, run_id), "key": (w.before or {})["slug"],
                                           "slug": identity(w.address), "archived": False}
                                          for w in writes if w.op is ops.Rename])
        cur.executemany(_UPDATE_DATASET, [_dataset_update(w, run_id) for w in column_changes])
        _write_retention(cur, [w for w in writes if w.op is not ops.Purge
                               and (w.op is ops.Create or "retention" in w.fields)], run_id)
        cur.executemany(_DATASET_PURGED, [_audited(w, run_id) for w in purges])
        cur.executemany("DELETE FROM timestore.datasets WHERE slug = %s",
                        [(identity(w.address),) for w in purges])


def _audited(write: Write, run_id: str | None) -> dict[str, Any]:
    return {"audit_id": new_id("da"), "actor": write.actor, "key": identity(write.address), "run_id": run_id}


def _metadata_patch(write: Write) -> tuple[list[str], Jsonb]:
    return jsonb_patch(metadata_patch((write.before or {}).get("metadata"), after_value(write, "metadata")))


def _dataset_update(write: Write, run_id: str | None) -> dict[str, Any]:
    drop, changed = _metadata_patch(write)
    # An archive that changes nothing but the status is the timestore's archive; one that
    # changes other columns too is a PATCH of them all (the archive endpoint changes only
    # the status), audited as an update.
    archived = write.op is ops.Archive and set(write.fields) & _DATASET_COLUMNS == {"status"}
    return {**_audited(write, run_id), "name": after_value(write, "name"),
            "description": after_value(write, "description"), "status": after_value(write, "status"),
            "target": after_value(write, "storageTarget"), "drop": drop, "set": changed,
            "archived": archived}


def _write_retention(cur: psycopg.Cursor[Any], writes: Sequence[Write], run_id: str | None = None) -> None:
    sets = [w for w in writes if after_value(w, "retention") is not None]
    drops = [w for w in writes if after_value(w, "retention") is None and w.op is not ops.Create]
    # A new policy is written whole; an existing one is patched in SQL, like metadata, so
    # keys someone else owns keep their exact stored values.
    cur.executemany(
        """INSERT INTO timestore.dataset_retention_policies (dataset_id, policy, updated_at)
           SELECT id, %s, clock_timestamp() FROM timestore.datasets WHERE slug = %s
           ON CONFLICT (dataset_id) DO UPDATE
           SET policy = (timestore.dataset_retention_policies.policy - %s::text[]) || %s::jsonb,
               updated_at = clock_timestamp()""",
        [(Jsonb(after_value(w, "retention")), identity(w.address),
          *jsonb_patch(metadata_patch((w.before or {}).get("retention"), after_value(w, "retention"))))
         for w in sets],
    )
    cur.executemany(
        """DELETE FROM timestore.dataset_retention_policies
           WHERE dataset_id = (SELECT id FROM timestore.datasets WHERE slug = %s)""",
        [(identity(w.address),) for w in drops],
    )
    cur.executemany(_RETENTION_EVENT, [{"event_id": new_id("la"), "actor": w.actor, "key": identity(w.address),
                                        "run_id": run_id} for w in [*sets, *drops]])


# The rows the plan touches, locked, as the plan read them.
_RECHECK = sql.SQL(
        """SELECT d.slug, d.name, d.description, d.status, st.name, d.metadata, rp.policy,
                  to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  to_char(rp.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
           FROM timestore.datasets d
           LEFT JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id
           LEFT JOIN timestore.dataset_retention_policies rp ON rp.dataset_id = d.id
           WHERE d.slug = ANY(%s) FOR UPDATE OF d""")

# --- reading ---------------------------------------------------------------------------------

_READ = sql.SQL(
    """SELECT d.slug, d.name, d.description, d.status, st.name, d.metadata, rp.policy,
              {updated}, {retention_updated}
       FROM timestore.datasets d
       LEFT JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id
       LEFT JOIN timestore.dataset_retention_policies rp ON rp.dataset_id = d.id"""
).format(updated=ms("d.updated_at"), retention_updated=ms("rp.updated_at"))


def _live(row: tuple[Any, ...]) -> Live:
    """A datasets row (with its storage target name and retention policy) as the diff sees it.

    The token covers the retention row too: the services move it on its own.
    """
    slug, name, description, status, target, metadata, policy, updated, policy_updated = row
    fields = {"name": name, "description": description, "status": status, "storageTarget": target,
              "metadata": metadata or {}, "retention": policy}
    return Live(f"dataset:{slug}", "dataset", fields, token=f"{updated}|{policy_updated or '-'}",
                updated_at=updated, policy_updated_at=policy_updated)


# Who changed a dataset outside git: the timestore's audit rows for its columns, and its
# lifecycle log for its retention policy (catalog/postgres/outside.py).
_ACCESS_AUDIT_ROWS = sql.SQL(
    """SELECT DISTINCT ON (k.address) k.address, a.id, a.actor_id, {at}
       FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(address, slug, since)
       JOIN timestore.dataset_access_audit a
         ON a.dataset_slug = k.slug AND a.created_at > k.since AND NOT a.metadata ? 'reconcilerRunId'
       ORDER BY k.address, a.created_at DESC, a.id DESC""").format(at=ms("a.created_at"))

_RETENTION_AUDIT_ROWS = sql.SQL(
    """SELECT DISTINCT ON (k.address) k.address, l.id,
              coalesce(l.payload->>'actor', l.payload->>'actorId', l.payload->>'updatedBy'), {at}
       FROM unnest(%s::text[], %s::text[], %s::timestamptz[]) AS k(address, slug, since)
       JOIN timestore.datasets d ON d.slug = k.slug
       JOIN timestore.lifecycle_audit_log l
         ON l.dataset_id = d.id AND l.event_type LIKE 'admin.retention.%%' AND l.created_at > k.since
            AND NOT l.payload ? 'reconcilerRunId'
       ORDER BY k.address, l.created_at DESC, l.id DESC""").format(at=ms("l.created_at"))


def _columns_changed(change: OutOfBand) -> bool:
    return bool(set(change.fields) - {"retention"}) or change.after is None


def _fallback(change: OutOfBand) -> str:
    if set(change.fields) == {"retention"}:
        return "timestore.dataset_retention_policies updated_at"
    return "timestore.datasets updated_at"


# The rows holding the datasets (catalog/postgres/writer.py names who holds them).
_HOLDING = sql.SQL(
    """SELECT d.xmax::text AS xid FROM timestore.datasets d WHERE d.slug = ANY({0})
       UNION SELECT p.xmax::text FROM timestore.dataset_retention_policies p
             JOIN timestore.datasets d ON d.id = p.dataset_id WHERE d.slug = ANY({0})""")

def _retention_changed(change: OutOfBand) -> bool:
    return "retention" in change.fields


_EVIDENCE = (Evidence("timestore.dataset_access_audit", _ACCESS_AUDIT_ROWS, _columns_changed),
             Evidence("timestore.lifecycle_audit_log", _RETENTION_AUDIT_ROWS, _retention_changed))

WRITER = KindWriter(dataset.SPEC, _write, _RECHECK, _live, holding=_HOLDING,
                    reader=KindReader(_READ, evidence=_EVIDENCE, fallback=_fallback))
