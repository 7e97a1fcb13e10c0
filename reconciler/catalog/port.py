"""What planning and applying need of a catalog, whatever holds it.

The use cases (reconciler/app/) talk to a catalog only through these protocols; a
backend implements them (catalog/postgres/catalog.py for PostgreSQL, catalog/memory.py
for the in-memory catalog the unit tests run the whole plan/apply flow against).

A backend's own failures reach the use cases as ReconcilerError subclasses
(errors.py), never as a driver's exception: each context manager below translates them.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from reconciler.core import ops
from reconciler.core.chain import Head
from reconciler.core.diff import Applied, Live, OutOfBand
from reconciler.core.events import QueuedEvent
from reconciler.core.plan import FileDigest


@dataclass(frozen=True)
class CatalogState:
    """Everything a plan compares against: live objects and the reconciler's records.

    ``text_of`` is how the backend encodes applied fields as ``Applied.text``: the diff
    passes an object over without decoding it when ``text_of(desired)`` equals that text.
    None when the backend keeps no text (then every object is compared in full).
    """

    live: dict[str, Live]
    applied: dict[str, Applied]
    text_of: Callable[[Any], str] | None = None


@dataclass(frozen=True)
class Write:
    """One change as a backend executes it: the plan's change with secrets resolved and the actor set."""

    address: str
    kind: str
    action: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None  # secrets resolved
    fields: tuple[str, ...]
    actor: str

    @property
    def op(self) -> type[ops.Operation]:
        """The operation ``action`` names: what each backend's writers dispatch on."""
        return ops.of(self.action)


@dataclass(frozen=True)
class Managed:
    """The reconciler's bookkeeping row for one object it manages (next plan's "last applied")."""

    address: str
    kind: str
    applied: Mapping[str, Any]
    protect: bool
    commit: str | None
    path: str | None
    line: int | None
    end_line: int | None
    secret_paths: tuple[str, ...] = ()  # config paths holding a secret now (kept with those held before)


class PlanReader(Protocol):
    """One consistent view of the catalog, for a plan."""

    def settled_files(self, source: str, files: Iterable[FileDigest]) -> dict[str, int]:
        """Of ``files``, those a plan may pass over (path → objects it declares); see settled.py."""
        ...

    def lookalikes(self, source: str, paths: Collection[str], seen: Collection[str]) -> list[str]:
        """Addresses declared by the settled ``paths`` that fold to one of ``seen``."""
        ...

    def state(self, source: str, settled: Collection[str]) -> CatalogState:
        """Live objects and applied records, leaving out what ``source`` manages from ``settled`` files."""
        ...

    def last_applied(self, source: str) -> tuple[str | None, bool]:
        """The commit of the source's latest applied run, and whether that run applied the whole tree."""
        ...

    def stored_on(self, addresses: Collection[str]) -> dict[str, list[str]]:
        """For each address given (of an object to purge), the objects outside the live state
        that keep it in place: the datasets with data stored on a storage target."""
        ...

    def with_evidence(self, outside: Mapping[str, OutOfBand]) -> dict[str, OutOfBand]:
        """Changes made outside git, with who made them and when, where the catalog says."""
        ...

    def recorded_protection(self, addresses: Sequence[str]) -> dict[str, tuple[bool, int]]:
        """The protect flag the audit chain last recorded for each address that has one: (flag, seq)."""
        ...


class RefusalReader(Protocol):
    """What the refusals read: counts and protection as the catalog holds them now."""

    def managed_counts(self, source: str) -> dict[str, int]:
        """Objects ``source`` manages, per kind."""
        ...

    def stored_protection(self, addresses: Sequence[str]) -> dict[str, bool]:
        """The stored protect flag of each managed address given."""
        ...

    def recorded_protection(self, addresses: Sequence[str]) -> dict[str, tuple[bool, int]]:
        """The protect flag the audit chain last recorded for each address that has one: (flag, seq)."""
        ...


class CatalogWriter(RefusalReader, Protocol):
    """Inside an apply's transaction, under the source's lock: everything is written or nothing."""

    def recheck(self, expected: Mapping[str, tuple[str, str | None]], source: str) -> None:
        """Lock the objects the plan touches; raise ConflictError naming every one that moved."""
        ...

    def write(self, writes: Sequence[Write], progress: Callable[[str], None],
              advance: Callable[[int, int], None] | None, run_id: str, *, announce: bool = False) -> int:
        """Execute the changes, kind by kind, with the services' audit rows; with ``announce``,
        also queue in the outbox the platform event the service would have published for
        each (core/events.py), in the changes' order. Returns how many events were queued."""
        ...

    def record_managed(self, rows: Sequence[Managed], forget: Sequence[str], source: str, run_id: str, *,
                       removed: Sequence[tuple[str, str]], commit: str | None,
                       renamed: Sequence[tuple[str, str]] = ()) -> None:
        """Record what was applied; forget purged objects; mark ``removed`` (address, kind) undeclared;
        move the records of ``renamed`` objects (old address, new address) first, so they follow them."""
        ...

    def lock_audit_head(self, lock_timeout: float | None) -> Head:
        """Take the audit log's append lock until commit and read both chains' heads."""
        ...

    def append_entries(self, rows: Iterable[Sequence[Any]]) -> None:
        """Append sealed audit entries (values in the audit log's column order)."""
        ...

    def insert_run(self, values: Sequence[Any]) -> None:
        """Append a sealed run (values in the runs' column order)."""
        ...

    def record_files(self, source: str, run_id: str, files: Mapping[str, FileDigest]) -> None:
        """Record the manifest files this apply read, for later plans to pass over."""
        ...


class ApplySession(Protocol):
    """One apply's hold on the catalog (a connection), open until the apply is recorded."""

    def locked(self, source: str, lock_timeout: float,
               touched: Mapping[str, tuple[str, str | None]]) -> AbstractContextManager[CatalogWriter]:
        """A transaction under the source's apply lock (waited for at most ``lock_timeout``
        seconds), committed when the block ends and rolled back if it raises; a backend
        failure is raised as a ReconcilerError that names the ``touched`` objects it concerns."""
        ...

    def record_unapplied_run(self, build: Callable[[Head], Sequence[Any] | str], lock_timeout: float | None,
                             unchained: Callable[[], Sequence[Any]]) -> str | None:
        """After a rollback, record a run that did not apply in a transaction of its own: ``build``
        turns the heads into its values or says why it cannot; ``unchained()`` gives the values
        to record outside the chain when the audit log's lock stays held. Returns why nothing
        could be recorded, or None; never raises."""
        ...


class EventOutbox(Protocol):
    """The platform events applies queued, in one transaction (see ``Catalog.outbox``)."""

    def pending(self, limit: int | None = None) -> list[QueuedEvent]:
        """Events not delivered yet, in the order they are to be delivered (at most ``limit``)."""
        ...

    def count_pending(self) -> int:
        """How many events are not delivered yet."""
        ...

    def mark_delivered(self, ids: Sequence[str]) -> None:
        """The bus took the events ``ids``."""
        ...

    def mark_failed(self, event_id: str, error: str) -> None:
        """The bus did not take ``event_id``, for the reason ``error``."""
        ...


class Catalog(Protocol):
    """A catalog that plans read and applies write."""

    @property
    def description(self) -> str:
        """The catalog, as messages name it (never with a password)."""
        ...

    @property
    def embedded(self) -> bool:
        """Whether this is the embedded catalog of the working directory."""
        ...

    def reading(self) -> AbstractContextManager[PlanReader]:
        """One read-only consistent snapshot (a plan takes two: choosing files, then reading state)."""
        ...

    def checking(self, lock_timeout: float) -> AbstractContextManager[RefusalReader]:
        """A short read of what the refusals need, lock waits bounded by ``lock_timeout``."""
        ...

    def session(self, application_name: str) -> AbstractContextManager[ApplySession]:
        """An apply's session, closed when the block ends."""
        ...

    def outbox(self, lock_timeout: float | None) -> AbstractContextManager[EventOutbox]:
        """The event outbox in one transaction, committed when the block ends. With a
        ``lock_timeout``, the block holds the deliverers' lock (one deliverer at a time),
        waited for at most that long (LockTimeout after); without, it only reads."""
        ...
