"""A catalog held in memory, behind the same port as PostgreSQL (catalog/port.py).

It keeps what plan and apply need and nothing of the services' own tables: objects with
their managed fields and a version that every write moves, the reconciler's records of
what it applied, the audit log and the runs, chained exactly as in PostgreSQL, and the
outbox of platform events. An apply is all or nothing (the state is copied when its
transaction begins and put back if it fails); one apply at a time holds it. It never
passes a manifest file over (no settled files), and knows no change's author outside git
but the actor of the last write. Its events are one per change, of the type and mode the
change's operation has (core/events.py), with the record as it holds it: no audit rows,
so no ``restoredFrom``, and one time for every timestamp of an apply.

The unit tests run the whole plan/apply flow against it, without a server.
"""

from __future__ import annotations

import copy
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from reconciler.catalog.port import CatalogState, Managed, Write
from reconciler.core.chain import COLUMNS, RUN_COLUMNS, Head
from reconciler.core.checks import check_unmoved, moved_since_plan
from reconciler.core import kinds, ops
from reconciler.core.diff import Applied, Live, OutOfBand
from reconciler.core.events import OPERATIONS, QueuedEvent, js_iso, record_payload
from reconciler.core.plan import FileDigest
from reconciler.errors import LockTimeout

_SEQ, _HASH, _MAC = COLUMNS.index("seq"), COLUMNS.index("hash"), COLUMNS.index("mac")
_ADDRESS, _PROTECT = COLUMNS.index("address"), COLUMNS.index("protect")
_RUN = {name: index for index, name in enumerate(RUN_COLUMNS)}


@dataclass
class Stored:
    """One catalog object: its managed fields, version, and who wrote it last."""

    kind: str
    fields: dict[str, Any]
    version: int = 1
    updated_by: str | None = None


@dataclass
class Contents:
    """Everything the memory catalog holds (copied whole at the start of an apply)."""

    objects: dict[str, Stored] = field(default_factory=dict)
    managed: dict[str, Applied] = field(default_factory=dict)
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    runs: list[tuple[Any, ...]] = field(default_factory=list)
    outbox: list[QueuedEvent] = field(default_factory=list)


@dataclass(frozen=True)
class MemoryReader:
    """Reads of one moment of the memory catalog."""

    contents: Contents

    def settled_files(self, source: str, files: Iterable[FileDigest]) -> dict[str, int]:
        return {}

    def lookalikes(self, source: str, paths: Collection[str], seen: Collection[str]) -> list[str]:
        return []

    def state(self, source: str, settled_paths: Collection[str]) -> CatalogState:
        live = {address: Live(address, obj.kind, copy.deepcopy(obj.fields), str(obj.version),
                              updated_by=obj.updated_by)
                for address, obj in self.contents.objects.items()}
        return CatalogState(live, {address: replace(row, fields=copy.deepcopy(dict(row.fields)))
                                   for address, row in self.contents.managed.items()})

    def last_applied(self, source: str) -> tuple[str | None, bool]:
        for run in reversed(self.contents.runs):
            if run[_RUN["source"]] == source and run[_RUN["outcome"]] == "applied":
                return run[_RUN["commit_sha"]], bool(run[_RUN["complete"]])
        return None, False

    def stored_on(self, addresses: Collection[str]) -> dict[str, list[str]]:
        return {}  # no dataset partitions are held here

    def with_evidence(self, outside: Mapping[str, OutOfBand]) -> dict[str, OutOfBand]:
        return dict(outside)

    def managed_counts(self, source: str) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self.contents.managed.values():
            if row.source == source:
                counts[row.kind] = counts.get(row.kind, 0) + 1
        return counts

    def stored_protection(self, addresses: Sequence[str]) -> dict[str, bool]:
        return {a: self.contents.managed[a].protect for a in addresses if a in self.contents.managed}

    def recorded_protection(self, addresses: Sequence[str]) -> dict[str, tuple[bool, int]]:
        wanted, out = set(addresses), {}
        for entry in self.contents.entries:
            if entry[_ADDRESS] in wanted and entry[_PROTECT] is not None:
                out[entry[_ADDRESS]] = (bool(entry[_PROTECT]), int(entry[_SEQ]))
        return out


def _create(contents: Contents, w: Write) -> None:
    contents.objects[w.address] = Stored(w.kind, copy.deepcopy(dict(w.after or {})), updated_by=w.actor)


def _change(contents: Contents, w: Write) -> None:
    """An update, archive or restore: the object's fields take the values after the change."""
    obj = contents.objects[w.address]
    obj.fields.update(copy.deepcopy(dict(w.after or {})))
    obj.version += 1
    obj.updated_by = w.actor


def _rename(contents: Contents, w: Write) -> None:
    """The object moves to its new address with its fields changed; datasets on a renamed
    storage target show its new name (the catalog links them by an id the rename keeps)."""
    old = w.before or {}
    spec = kinds.kind(w.kind)
    identity = spec.identity[0]
    obj = contents.objects.pop(spec.prefix + str(old[identity]))
    contents.objects[w.address] = obj
    _change(contents, replace(w, after={k: v for k, v in (w.after or {}).items() if k != identity}))
    if spec is kinds.storage_target.SPEC:
        for other in contents.objects.values():
            if other.kind == kinds.dataset.SPEC.name and other.fields.get("storageTarget") == old[identity]:
                other.fields["storageTarget"] = (w.after or {})[identity]


def _purge(contents: Contents, w: Write) -> None:
    contents.objects.pop(w.address, None)


# How each operation is executed on the in-memory catalog (update, archive, restore: ``_change``).
_EXECUTE: dict[type[ops.Operation], Callable[[Contents, Write], None]] = {
    ops.Create: _create, ops.Update: _change, ops.Rename: _rename, ops.Archive: _change, ops.Restore: _change,
    ops.Purge: _purge}


@dataclass(frozen=True)
class MemoryWriter(MemoryReader):
    """An apply's writes to the copy its transaction works on."""

    started: datetime

    def recheck(self, expected: Mapping[str, tuple[str, str | None]], source: str) -> None:
        state = self.state(source, ())
        found = {a: state.live[a] for a in expected if a in state.live}
        elsewhere = [(a, row.source) for a, row in sorted(self.contents.managed.items())
                     if a in expected and row.source != source]
        check_unmoved(moved_since_plan({a: token for a, (_, token) in expected.items()}, found), elsewhere)

    def write(self, writes: Sequence[Write], progress: Callable[[str], None],
              advance: Callable[[int, int], None] | None, run_id: str, *, announce: bool = False) -> int:
        progress(f"writing {len(writes)} change(s)")
        queued = 0
        for done, w in enumerate(writes, 1):
            if announce and w.kind == "record" and w.op is ops.Purge:
                queued += self._queue(w, run_id)  # the record as it was
            _EXECUTE[w.op](self.contents, w)
            if announce and w.kind == "record" and w.op is not ops.Purge:
                queued += self._queue(w, run_id)
            if advance is not None:
                advance(done, len(writes))
        return queued

    def _queue(self, w: Write, run_id: str) -> int:
        """Queue the event of the record change ``w`` (one per change; see the module's docstring)."""
        operation = {"archive": "delete"}.get(w.action, w.action)
        obj = self.contents.objects[w.address]
        namespace, key = w.address.split(":", 1)[1].split("/", 1)
        moment = js_iso(self.started)
        record = {"namespace": namespace, "key": key, "metadata": copy.deepcopy(obj.fields.get("metadata") or {}),
                  "tags": list(obj.fields.get("tags") or []), "owner": obj.fields.get("owner"),
                  "schemaHash": obj.fields.get("schemaHash"), "version": obj.version, "createdAt": moment,
                  "updatedAt": moment, "deletedAt": moment if obj.fields.get("deleted") else None,
                  "createdBy": obj.updated_by, "updatedBy": obj.updated_by}
        self.contents.outbox.append(QueuedEvent(
            len(self.contents.outbox) + 1, str(uuid.uuid4()), OPERATIONS[operation][0], run_id, self.started,
            record_payload(operation, record, w.actor), self.started))
        return 1

    def record_managed(self, rows: Sequence[Managed], forget: Sequence[str], source: str, run_id: str, *,
                       removed: Sequence[tuple[str, str]], commit: str | None,
                       renamed: Sequence[tuple[str, str]] = ()) -> None:
        managed = self.contents.managed
        for old, new in renamed:
            held = managed.get(old)
            if held is not None and held.source == source:
                managed[new] = replace(managed.pop(old), address=new)
        for m in rows:
            held = managed.get(m.address)
            if held is not None and held.source != source:
                continue  # another source's record is never changed (recheck refused the apply before)
            remembered = held.secret_paths if held is not None else frozenset()
            managed[m.address] = Applied(m.address, m.kind, source, copy.deepcopy(dict(m.applied)), m.protect,
                                         m.commit, m.path, m.line, m.end_line,
                                         secret_paths=remembered | frozenset(m.secret_paths))
        for address in forget:
            if address in managed and managed[address].source == source:
                del managed[address]
        for address, kind in removed:
            held = managed.get(address)
            spec = kinds.kind(kind)
            if held is not None and held.source == source and spec.archive_field is not None:
                managed[address] = replace(held, fields=spec.archived(held.fields), commit=commit, declared=False)

    def lock_audit_head(self, lock_timeout: float | None) -> Head:
        entry = self.contents.entries[-1] if self.contents.entries else None
        chained = [run for run in self.contents.runs if run[_RUN["seq"]] is not None]
        run = chained[-1] if chained else None
        return Head(entry[_SEQ] if entry else 0, entry[_HASH] if entry else None, entry[_MAC] if entry else None,
                    run[_RUN["seq"]] if run else 0, run[_RUN["hash"]] if run else None,
                    run[_RUN["mac"]] if run else None, datetime.now(UTC), self.started)

    def append_entries(self, rows: Iterable[Sequence[Any]]) -> None:
        self.contents.entries.extend(tuple(row) for row in rows)

    def insert_run(self, values: Sequence[Any]) -> None:
        self.contents.runs.append(tuple(values))

    def record_files(self, source: str, run_id: str, files: Mapping[str, FileDigest]) -> None:
        return None  # files are never passed over here


class MemoryCatalog:
    """An empty catalog in memory (``seed`` puts objects in it as a service would have)."""

    description = "the in-memory catalog"
    embedded = False

    def __init__(self) -> None:
        self.contents = Contents()
        self._lock = threading.Lock()
        self._delivering = threading.Lock()

    def seed(self, address: str, kind: str, fields: Mapping[str, Any], *, by: str | None = None) -> None:
        """Create or overwrite an object as someone outside the reconciler would (its version moves)."""
        held = self.contents.objects.get(address)
        version = held.version + 1 if held is not None else 1
        self.contents.objects[address] = Stored(kind, copy.deepcopy(dict(fields)), version, by)

    @contextmanager
    def reading(self) -> Iterator[MemoryReader]:
        yield MemoryReader(self.contents)

    @contextmanager
    def checking(self, lock_timeout: float) -> Iterator[MemoryReader]:
        yield MemoryReader(self.contents)

    @contextmanager
    def session(self, application_name: str) -> Iterator[MemorySession]:
        yield MemorySession(self)

    @contextmanager
    def outbox(self, lock_timeout: float | None) -> Iterator[MemoryOutbox]:
        if lock_timeout is None:
            yield MemoryOutbox(self)
            return
        if not self._delivering.acquire(timeout=lock_timeout):
            raise LockTimeout(f"another process is delivering platform events; gave up waiting after "
                              f"{lock_timeout:g} s; the events stay pending")
        try:
            yield MemoryOutbox(self)
        finally:
            self._delivering.release()


@dataclass(frozen=True)
class MemoryOutbox:
    """The memory catalog's event outbox."""

    catalog: MemoryCatalog

    def pending(self, limit: int | None = None) -> list[QueuedEvent]:
        waiting = [e for e in self.catalog.contents.outbox if e.delivered_at is None]
        return waiting if limit is None else waiting[:limit]

    def count_pending(self) -> int:
        return len(self.pending())

    def mark_delivered(self, ids: Sequence[str]) -> None:
        self._change(set(ids), lambda e: replace(e, delivered_at=datetime.now(UTC), attempts=e.attempts + 1,
                                                 last_error=None))

    def mark_failed(self, event_id: str, error: str) -> None:
        self._change({event_id}, lambda e: replace(e, attempts=e.attempts + 1, last_error=error))

    def _change(self, ids: set[str], change: Callable[[QueuedEvent], QueuedEvent]) -> None:
        outbox = self.catalog.contents.outbox
        outbox[:] = [change(e) if e.id in ids else e for e in outbox]


@dataclass(frozen=True)
class MemorySession:
    """An apply's hold on the memory catalog."""

    catalog: MemoryCatalog

    @contextmanager
    def locked(self, source: str, lock_timeout: float,
               touched: Mapping[str, tuple[str, str | None]]) -> Iterator[MemoryWriter]:
        catalog = self.catalog
        if not catalog._lock.acquire(timeout=lock_timeout):
            raise LockTimeout(f"another apply holds the in-memory catalog; gave up after {lock_timeout:g} s "
                              "(--lock-timeout); nothing was applied")
        try:
            working = copy.deepcopy(catalog.contents)
            yield MemoryWriter(working, datetime.now(UTC))
            catalog.contents = working  # committed: the copy becomes the catalog
        finally:
            catalog._lock.release()

    def record_unapplied_run(self, build: Callable[[Head], Sequence[Any] | str], lock_timeout: float | None,
                             unchained: Callable[[], Sequence[Any]]) -> str | None:
        writer = MemoryWriter(self.catalog.contents, datetime.now(UTC))
        values = build(writer.lock_audit_head(lock_timeout))
        if isinstance(values, str):
            return values
        writer.insert_run(values)
        return None
