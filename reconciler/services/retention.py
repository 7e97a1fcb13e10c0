"""Dataset retention policies (``timestore.dataset_retention_policies``) and their lifecycle audit rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from psycopg import sql
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from reconciler.catalog.postgres import service_audit
from reconciler.services._common import Connection, atomic, new_id
from reconciler.services.datasets import lock_dataset
from reconciler.services.rows import LifecycleAuditRow, RetentionPolicyRow

TABLE = sql.Identifier("timestore", "dataset_retention_policies")
LIFECYCLE_TABLE = sql.Identifier("timestore", "lifecycle_audit_log")

RETENTION_UPDATED = service_audit.RETENTION_UPDATED
_RETENTION_EVENT = service_audit.retention_event("id")


def _fetch(conn: Connection, dataset_id: str) -> RetentionPolicyRow | None:
    """The policy row, if any; the caller holds the transaction."""
    query = sql.SQL("SELECT dataset_id, policy, updated_at FROM {table} WHERE dataset_id = %s").format(
        table=TABLE
    )
    with conn.cursor(row_factory=class_row(RetentionPolicyRow)) as cur:
        return cur.execute(query, (dataset_id,)).fetchone()


def get_retention_policy(conn: Connection, dataset_id: str) -> RetentionPolicyRow | None:
    """The dataset's retention policy, or None when it has none (the service default applies)."""
    with atomic(conn, f"reading the retention policy of dataset {dataset_id}"):
        return _fetch(conn, dataset_id)


def record_lifecycle_event(
    conn: Connection,
    dataset_id: str,
    event_type: str,
    payload: Mapping[str, Any],
    *,
    manifest_id: str | None = None,
) -> str:
    """Append a ``lifecycle_audit_log`` row (id ``la-<uuid4>``); returns its id."""
    event_id = new_id("la")
    query = sql.SQL(
        "INSERT INTO {table} (id, dataset_id, manifest_id, event_type, payload, created_at) "
        "VALUES (%s, %s, %s, %s, %s, clock_timestamp())"
    ).format(table=LIFECYCLE_TABLE)
    with atomic(conn, f"recording lifecycle event {event_type} for dataset {dataset_id}"):
        conn.execute(query, (event_id, dataset_id, manifest_id, event_type, Jsonb(dict(payload))))
    return event_id


def _retention_event(conn: Connection, dataset_id: str, actor: str) -> None:
    """Log ``admin.retention.updated`` as the timestore's PUT of a policy logs it, with the
    policy as stored now (null once removed)."""
    conn.execute(_RETENTION_EVENT, {"event_id": new_id("la"), "actor": actor, "key": dataset_id, "run_id": None})


def upsert_retention_policy(
    conn: Connection, dataset_id: str, policy: Mapping[str, Any], actor: str
) -> RetentionPolicyRow:
    """Set the dataset's retention policy and log ``admin.retention.updated`` (payload
    ``{datasetId, datasetSlug, policy, actor}``, as the timestore logs it).

    A policy equal to the current one changes nothing and logs nothing. The dataset
    row is locked so concurrent upserts are serialised.
    """
    wanted = dict(policy)
    query = sql.SQL(
        "INSERT INTO {table} AS p (dataset_id, policy, updated_at) VALUES (%s, %s, clock_timestamp()) "
        "ON CONFLICT (dataset_id) DO UPDATE SET policy = EXCLUDED.policy, "
        "updated_at = GREATEST(clock_timestamp(), p.updated_at + interval '1 millisecond')"
    ).format(table=TABLE)
    with atomic(conn, f"setting the retention policy of dataset {dataset_id}"):
        lock_dataset(conn, dataset_id)
        current = _fetch(conn, dataset_id)
        if current is not None and current.policy == wanted:
            return current
        conn.execute(query, (dataset_id, Jsonb(wanted)))
        _retention_event(conn, dataset_id, actor)
        row = _fetch(conn, dataset_id)
    assert row is not None  # written just above
    return row


def delete_retention_policy(conn: Connection, dataset_id: str, actor: str) -> bool:
    """Remove the dataset's retention policy (the service default applies again).

    Logs ``admin.retention.updated`` with ``policy`` null (the timestore has no removal
    of its own; the row keeps its shape); returns False, logging nothing, when there
    was no policy.
    """
    query = sql.SQL("DELETE FROM {table} WHERE dataset_id = %s").format(table=TABLE)
    with atomic(conn, f"removing the retention policy of dataset {dataset_id}"):
        lock_dataset(conn, dataset_id)
        current = _fetch(conn, dataset_id)
        if current is None:
            return False
        conn.execute(query, (dataset_id,))
        _retention_event(conn, dataset_id, actor)
    return True


def list_lifecycle_events(conn: Connection, dataset_id: str) -> list[LifecycleAuditRow]:
    """The dataset's ``lifecycle_audit_log`` rows, oldest first."""
    query = sql.SQL(
        "SELECT id, dataset_id, manifest_id, event_type, payload, created_at FROM {table} "
        "WHERE dataset_id = %s ORDER BY created_at, id"
    ).format(table=LIFECYCLE_TABLE)
    with atomic(conn, f"reading the lifecycle log of dataset {dataset_id}"), conn.cursor(row_factory=class_row(LifecycleAuditRow)) as cur:
        return cur.execute(query, (dataset_id,)).fetchall()
