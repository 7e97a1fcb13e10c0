"""Datasets (``timestore.datasets``): read, create, update, archive, restore, purge, with audit rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from reconciler.errors import NotFoundError
from reconciler.core.service_rules import normalize_dataset_metadata
from reconciler.catalog.postgres import service_audit
from reconciler.services._common import Connection, Timestamp, atomic, conflict, lock_fresh, new_id, not_found
from reconciler.services.rows import DatasetAuditRow, DatasetRow

TABLE = sql.Identifier("timestore", "datasets")
AUDIT_TABLE = sql.Identifier("timestore", "dataset_access_audit")

CREATED = service_audit.DATASET_CREATED
UPDATED = service_audit.DATASET_UPDATED
ARCHIVED = service_audit.DATASET_ARCHIVED
PURGED = service_audit.DATASET_PURGED

# The columns update_dataset may change: the ones the timestore's PATCH changes.
UPDATABLE_FIELDS = frozenset(column for _, column in service_audit.DATASET_COMPARED)

# Dataset metadata as the timestore stores it; the one rule lives in service_rules.
normalize_metadata = normalize_dataset_metadata

_CREATED_AUDIT = service_audit.dataset_event("id", CREATED, service_audit.created_metadata)
_PURGED_AUDIT = service_audit.dataset_event("slug", PURGED, service_audit.purged_metadata)

_SELECT = sql.SQL(
    "SELECT d.id, d.slug, d.name, d.description, d.status, d.write_format, "
    "d.default_storage_target_id, d.metadata, d.created_at, d.updated_at, "
    "r.policy AS retention_policy "
    "FROM timestore.datasets AS d "
    "LEFT JOIN timestore.dataset_retention_policies AS r ON r.dataset_id = d.id"
)


def address(slug: str) -> str:
    """The address that names a dataset in messages: ``dataset:<slug>``."""
    return f"dataset:{slug}"


def _fetch(conn: Connection, column: str, value: str, *, lock: bool = False) -> DatasetRow | None:
    """One dataset by ``id`` or ``slug``, optionally locked; the caller holds the transaction."""
    query = sql.SQL("{select} WHERE {column} = %s{lock}").format(
        select=_SELECT,
        column=sql.Identifier("d", column),
        lock=sql.SQL(" FOR UPDATE OF d") if lock else sql.SQL(""),
    )
    with conn.cursor(row_factory=class_row(DatasetRow)) as cur:
        return cur.execute(query, (value,)).fetchone()


def get_dataset(conn: Connection, slug: str) -> DatasetRow | None:
    """The dataset with this slug (any status), with its retention policy, or None."""
    with atomic(conn, f"reading {address(slug)}"):
        return _fetch(conn, "slug", slug)


def get_dataset_by_id(conn: Connection, dataset_id: str) -> DatasetRow | None:
    """The dataset with this id (any status), with its retention policy, or None."""
    with atomic(conn, f"reading dataset {dataset_id}"):
        return _fetch(conn, "id", dataset_id)


def list_datasets(conn: Connection) -> list[DatasetRow]:
    """Every dataset with its retention policy (one query), ordered by slug."""
    query = sql.SQL("{select} ORDER BY d.slug").format(select=_SELECT)
    with atomic(conn, "listing datasets"), conn.cursor(row_factory=class_row(DatasetRow)) as cur:
        return cur.execute(query).fetchall()


def lock_dataset(conn: Connection, dataset_id: str) -> DatasetRow:
    """Lock a dataset row ``FOR UPDATE`` until the caller's transaction ends; NotFoundError if absent.

    Serialises writers that derive a number from the dataset's children (schema
    versions, manifest versions, retention before/after). Called outside a
    transaction the lock ends with the call, so it only makes sense inside one.
    """
    with atomic(conn, f"locking dataset {dataset_id}"):
        row = _fetch(conn, "id", dataset_id, lock=True)
    if row is None:
        raise NotFoundError(f"dataset {dataset_id} does not exist")
    return row


def create_dataset(
    conn: Connection,
    *,
    slug: str,
    name: str,
    description: str | None = None,
    status: str = "active",
    storage_target_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    actor: str,
) -> DatasetRow:
    """Insert a dataset (id ``ds-<uuid4>``) and its ``admin.dataset.created`` audit row.

    ConflictError when the slug is taken; NotFoundError when the storage target id
    does not exist.
    """
    query = sql.SQL(
        "INSERT INTO {table} (id, slug, name, description, status, default_storage_target_id, metadata) "
        "VALUES (%s, %s, %s, %s, %s, %s, %s)"
    ).format(table=TABLE)
    dataset_id = new_id("ds")
    params = (dataset_id, slug, name, description, status, storage_target_id,
              Jsonb(normalize_metadata(metadata or {})))
    with atomic(
        conn,
        f"creating {address(slug)}",
        unique=conflict(f"{address(slug)} already exists", address(slug)),
        foreign_key=not_found(f"storage target {storage_target_id} does not exist"),
    ):
        conn.execute(query, params)
        conn.execute(_CREATED_AUDIT, {"audit_id": new_id("da"), "actor": actor, "key": dataset_id, "run_id": None})
        row = _fetch(conn, "id", dataset_id)
        assert row is not None  # inserted just above
    return row


def _change(
    conn: Connection,
    slug: str,
    expected_updated_at: Timestamp,
    changes: Mapping[str, Any],
    actor: str,
    action: str,
) -> DatasetRow:
    """Lock, check freshness, write the fields that differ, and audit them as the timestore
    does (``action`` UPDATED or ARCHIVED); a no-op writes nothing."""
    lock_fresh(conn, TABLE, "slug", slug, expected_updated_at, address(slug))
    before = _fetch(conn, "slug", slug)
    assert before is not None  # locked by lock_fresh
    changed = {f: v for f, v in changes.items() if getattr(before, f) != v}
    if not changed:
        return before
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(f), sql.Placeholder(f)) for f in changed)
    values = {f: Jsonb(v) if f == "metadata" else v for f, v in changed.items()}
    conn.execute(service_audit.dataset_update("slug", assignments),
                 {**values, "key": slug, "audit_id": new_id("da"), "actor": actor, "archived": action == ARCHIVED,
                  "run_id": None})
    after = _fetch(conn, "slug", slug)
    assert after is not None
    return after


def update_dataset(
    conn: Connection,
    slug: str,
    *,
    expected_updated_at: Timestamp,
    changes: Mapping[str, Any],
    actor: str,
) -> DatasetRow:
    """Change some of name, description, status, default_storage_target_id, metadata.

    The dataset must still have ``expected_updated_at`` (to the millisecond), else
    ConflictError. Writes one ``admin.dataset.updated`` row as the timestore's PATCH
    does: both snapshots in full and ``fieldsChanged``; changes equal to the current
    values write nothing.
    """
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"datasets cannot change {', '.join(sorted(unknown))}")
    wanted = dict(changes)
    if "metadata" in wanted:
        wanted["metadata"] = normalize_metadata(wanted["metadata"])
    target = wanted.get("default_storage_target_id")
    with atomic(
        conn,
        f"updating {address(slug)}",
        foreign_key=not_found(f"storage target {target} does not exist"),
    ):
        return _change(conn, slug, expected_updated_at, wanted, actor, UPDATED)


def archive_dataset(conn: Connection, slug: str, *, expected_updated_at: Timestamp, actor: str) -> DatasetRow:
    """Set status ``inactive`` with an ``admin.dataset.archived`` row (both snapshots, as the
    timestore's archive writes it); already inactive: no-op."""
    with atomic(conn, f"archiving {address(slug)}"):
        return _change(conn, slug, expected_updated_at, {"status": "inactive"}, actor, ARCHIVED)


def restore_dataset(conn: Connection, slug: str, *, expected_updated_at: Timestamp, actor: str) -> DatasetRow:
    """Set status ``active`` with an ``admin.dataset.updated`` row (fieldsChanged ["status"]).

    The services have no "restored" action; already active is a no-op.
    """
    with atomic(conn, f"restoring {address(slug)}"):
        return _change(conn, slug, expected_updated_at, {"status": "active"}, actor, UPDATED)


def purge_dataset(conn: Connection, slug: str, *, expected_updated_at: Timestamp, actor: str) -> DatasetRow:
    """Hard-delete a dataset (its versions, manifests, partitions, retention go with it).

    The ``admin.dataset.purged`` row is written first, in the same transaction; the
    foreign key then sets its ``dataset_id`` to NULL and it keeps the slug and a
    snapshot of what was deleted, with its retention policy. Returns the row as it was.
    """
    query = sql.SQL("DELETE FROM {table} WHERE slug = %s").format(table=TABLE)
    with atomic(conn, f"purging {address(slug)}", foreign_key=conflict(f"{address(slug)} is still in use", address(slug))):
        lock_fresh(conn, TABLE, "slug", slug, expected_updated_at, address(slug))
        before = _fetch(conn, "slug", slug)
        assert before is not None
        conn.execute(_PURGED_AUDIT, {"audit_id": new_id("da"), "actor": actor, "key": slug, "run_id": None})
        conn.execute(query, (slug,))
    return before


def list_dataset_audit(conn: Connection, slug: str) -> list[DatasetAuditRow]:
    """The ``dataset_access_audit`` rows for a slug (purged datasets included), oldest first."""
    query = sql.SQL(
        "SELECT id, dataset_id, dataset_slug, actor_id, actor_scopes, action, success, metadata, created_at "
        "FROM {table} WHERE dataset_slug = %s ORDER BY created_at, id"
    ).format(table=AUDIT_TABLE)
    with atomic(conn, f"reading the audit of {address(slug)}"), conn.cursor(row_factory=class_row(DatasetAuditRow)) as cur:
        return cur.execute(query, (slug,)).fetchall()
