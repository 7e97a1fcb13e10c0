"""Pure: the platform events a record change announces, as the metastore publishes them.

The metastore announces every record it writes on the platform's event bus
(``services/metastore/src/services/recordService.ts``, ``buildEventPayload`` and
``emitMutation``; ``events/publisher.ts``): one event per operation, of type
``metastore.record.<created|updated|deleted>``, with the payload
``{namespace, key, actor, record}`` (``record`` as ``serializeRecord`` writes it), plus
``mode`` for a delete (``soft``) or a purge (``hard``) and ``restoredFrom`` for a restore.
The timestore announces nothing for dataset administration, so datasets and storage
targets have no events. The envelope is ``@apphub/event-bus``'s (``packages/event-bus/src/core.ts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

SOURCE: Final = "reconciler"  # the envelope's ``source``

CREATED: Final = "metastore.record.created"
UPDATED: Final = "metastore.record.updated"
DELETED: Final = "metastore.record.deleted"

# Each metastore operation (its metastore_record_audits action; ``purge`` writes no audit
# row) → the event type and the ``mode`` its payload carries. A restore is announced as an
# update with ``restoredFrom``, as the metastore's restore endpoint announces it.
OPERATIONS: Final[Mapping[str, tuple[str, str | None]]] = {
    "create": (CREATED, None),
    "update": (UPDATED, None),
    "delete": (DELETED, "soft"),
    "restore": (UPDATED, None),
    "purge": (DELETED, "hard"),
}


@dataclass(frozen=True)
class QueuedEvent:
    """One platform event in the outbox: written by an apply, delivered after its commit.

    ``seq`` orders the outbox (apply order); ``payload`` is the event's payload as
    stored; ``attempts`` and ``last_error`` tell how delivery went so far.
    """

    seq: int
    id: str
    type: str
    run_id: str
    occurred_at: datetime
    payload: Mapping[str, Any]
    queued_at: datetime
    attempts: int = 0
    last_error: str | None = None
    delivered_at: datetime | None = None


def js_iso(moment: datetime) -> str:
    """A timestamp as JavaScript's ``Date.prototype.toISOString`` writes it: UTC,
    milliseconds (truncated), ``Z`` — how every timestamp in an event reads."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def envelope(event: QueuedEvent) -> dict[str, Any]:
    """The event as the platform's envelope (``eventEnvelopeSchema``, which admits no other
    keys): its stable ``id``, ``type``, ``source``, ``occurredAt``, ``payload`` and, as
    ``correlationId``, the run id of the apply that wrote it."""
    return {"id": event.id, "type": event.type, "source": SOURCE, "occurredAt": js_iso(event.occurred_at),
            "payload": dict(event.payload), "correlationId": event.run_id}


def record_payload(operation: str, record: Mapping[str, Any], actor: str | None,
                   restored_from: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The payload ``buildEventPayload`` builds for ``operation`` on ``record`` (serialised:
    ``namespace``, ``key``, ``metadata``, ``tags``, ``owner``, ``schemaHash``, ``version``,
    ``createdAt``, ``updatedAt``, ``deletedAt``, ``createdBy``, ``updatedBy``)."""
    payload: dict[str, Any] = {"namespace": record["namespace"], "key": record["key"], "actor": actor,
                               "record": dict(record)}
    mode = OPERATIONS[operation][1]
    if mode is not None:
        payload["mode"] = mode
    if operation == "restore" and restored_from is not None:
        payload["restoredFrom"] = dict(restored_from)
    return payload


def counted(n: int) -> str:
    """``1 event``, ``3 events``."""
    return f"{n} event" if n == 1 else f"{n} events"
