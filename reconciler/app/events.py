"""Platform events: delivering what applies queued in the outbox, and listing what is pending.

An apply queues the events of its record changes in its own transaction (catalog
port, ``write(..., announce=True)``) and delivers them after its commit; whatever the
bus did not take stays pending for the next apply or ``reconciler events --deliver``.
Deliverers take turns (the catalog's outbox lock), each sending the oldest pending
events first and marking them delivered before it lets go, so events reach the bus in
apply order, each at least once, always under its own id.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from reconciler.bus import Bus, configured, not_configured
from reconciler.catalog.port import Catalog
from reconciler.core.events import QueuedEvent, envelope
from reconciler.core.text import clean
from reconciler.core.events import counted as _events
from reconciler.errors import ConfigurationError, DatabaseError, EventDeliveryError, LockTimeout

BATCH: Final = 500  # events sent, then marked delivered, under one hold of the lock


@dataclass(frozen=True)
class Delivery:
    """How a delivery went: how many events the bus took, how many are still pending and why."""

    bus: str
    delivered: int
    pending: int
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The delivery, as the apply's JSON result carries it."""
        return {"bus": self.bus, "delivered": self.delivered, "pending": self.pending, "error": self.error}

    def describe(self) -> str:
        """One line: what was delivered, and what is left and why."""
        sent = f"{_events(self.delivered)} delivered to {self.bus}"
        if self.pending == 0:
            return f"Platform events: {sent}."
        left = _events(self.pending) if self.pending > 0 else "the rest"  # < 0: the outbox could not be read
        return (f"Platform events: {sent}; {left} pending ({clean(self.error or 'not sent')}): "
                "the next apply or `reconciler events --deliver` sends them.")


def deliver(catalog: Catalog, bus: Bus, lock_timeout: float,
            progress: Callable[[str], None] = lambda _: None) -> Delivery:
    """Send every pending event to ``bus``, oldest first, until none is left or the bus fails.

    Raises EventDeliveryError when the bus fails (``sent`` = how many it took before),
    LockTimeout when another deliverer holds the outbox longer than ``lock_timeout``.
    """
    delivered = 0
    with bus.open() as sender:
        while True:
            failed: EventDeliveryError | None = None
            with catalog.outbox(lock_timeout) as box:
                batch = box.pending(BATCH)
                if not batch:
                    return Delivery(bus.description, delivered, 0)
                progress(f"delivering {_events(len(batch))} to {bus.description}")
                try:
                    sender.send([envelope(event) for event in batch])
                except EventDeliveryError as error:
                    failed = error  # what went before it is marked, and committed, all the same
                    box.mark_delivered([event.id for event in batch[:error.sent]])
                    box.mark_failed(batch[error.sent].id, error.message)
                else:
                    box.mark_delivered([event.id for event in batch])
            if failed is not None:
                failed.sent += delivered
                raise failed
            delivered += len(batch)


def deliver_after_apply(catalog: Catalog, bus: Bus, lock_timeout: float,
                        progress: Callable[[str], None] = lambda _: None) -> Delivery:
    """Deliver after an apply's commit: whatever goes wrong leaves the events pending and
    the apply applied, so it is reported, never raised."""
    try:
        return deliver(catalog, bus, lock_timeout, progress)
    except (EventDeliveryError, LockTimeout, DatabaseError) as error:
        sent = error.sent if isinstance(error, EventDeliveryError) else 0
        return Delivery(bus.description, sent, _pending_count(catalog), error.message)


def _pending_count(catalog: Catalog) -> int:
    try:
        with catalog.outbox(None) as box:
            return box.count_pending()
    except DatabaseError:
        return -1  # unknown: the catalog cannot be read either


def deliver_pending(catalog: Catalog, environ: Mapping[str, str], lock_timeout: float,
                    progress: Callable[[str], None] = lambda _: None) -> Delivery:
    """``reconciler events --deliver``: a bus must be configured; a failure is an error."""
    bus = configured(environ)
    if bus is None:
        raise ConfigurationError("no event bus is configured: set APPHUB_EVENT_PROXY_URL (and "
                                 "APPHUB_EVENT_PROXY_TOKEN) or REDIS_URL (and APPHUB_EVENT_QUEUE_NAME) as the "
                                 "platform's services have them; nothing was delivered")
    try:
        return deliver(catalog, bus, lock_timeout, progress)
    except EventDeliveryError as error:
        left = _pending_count(catalog)
        error.message = (f"{_events(error.sent)} delivered to {bus.description}, {_events(left)} still pending: "
                         f"{error.message}")
        error.args = (error.message,)
        raise


def pending_events(catalog: Catalog, limit: int | None = None) -> tuple[list[QueuedEvent], int]:
    """The pending events (the oldest ``limit``) and how many are pending in all."""
    with catalog.outbox(None) as box:
        return box.pending(limit), box.count_pending()


def open_catalog(database_url: str | None, anchor: Path, announce: Callable[[str], None] | None = None) -> Catalog:
    """The catalog whose outbox ``reconciler events`` lists or delivers."""
    from reconciler.app.auditing import catalog_url
    from reconciler.catalog.postgres.catalog import PostgresCatalog

    return PostgresCatalog(catalog_url(database_url, anchor, announce))


def no_bus_note(kinds: Sequence[str], environ: Mapping[str, str]) -> str | None:
    """What to say when record changes will not be announced because no event bus is configured."""
    return not_configured(environ) if "record" in kinds else None
