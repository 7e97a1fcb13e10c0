"""The PostgreSQL catalog behind the port (reconciler/catalog/port.py): the services' tables
and the reconciler's own schema, read in repeatable-read snapshots and written in one
transaction per apply under the source's lock."""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg

from reconciler.catalog.port import CatalogState, Managed, Write
from reconciler.catalog.postgres import audit_log, outbox, outside, reading, settled, writer
from reconciler.catalog.postgres.connection import connect, describe, translated
from reconciler.catalog.postgres.kinds import WRITERS, WriteContext
from reconciler.catalog.postgres.locks import bound_lock_waits, lock_event_outbox, lock_source, register_source
from reconciler.core.chain import Head
from reconciler.core.diff import OutOfBand
from reconciler.core.events import QueuedEvent
from reconciler.core.plan import FileDigest

Connection = psycopg.Connection[Any]


@dataclass(frozen=True)
class PostgresReader:
    """What plans and refusals read, in the transaction ``conn`` is in."""

    conn: Connection

    def settled_files(self, source: str, files: Iterable[FileDigest]) -> dict[str, int]:
        return settled.settled_files(self.conn, source, files)

    def lookalikes(self, source: str, paths: Collection[str], seen: Collection[str]) -> list[str]:
        return settled.lookalikes_in(self.conn, source, paths, seen)

    def state(self, source: str, settled_paths: Collection[str]) -> CatalogState:
        return reading.read_snapshot(self.conn, reading.Skip(source, list(settled_paths)))

    def last_applied(self, source: str) -> tuple[str | None, bool]:
        return settled.last_applied_commit(self.conn, source)

    def stored_on(self, addresses: Collection[str]) -> dict[str, list[str]]:
        return reading.stored_on(self.conn, addresses) if addresses else {}

    def with_evidence(self, found: Mapping[str, OutOfBand]) -> dict[str, OutOfBand]:
        return outside.with_evidence(self.conn, found)

    def managed_counts(self, source: str) -> dict[str, int]:
        rows = self.conn.execute("SELECT kind, count(*) FROM reconciler.managed_objects WHERE source = %s "
                                 "GROUP BY kind", (source,)).fetchall()
        return {kind: n for kind, n in rows}

    def stored_protection(self, addresses: Sequence[str]) -> dict[str, bool]:
        return dict(self.conn.execute("SELECT address, protect FROM reconciler.managed_objects "
                                      "WHERE address = ANY(%s)", (list(addresses),)).fetchall())

    def recorded_protection(self, addresses: Sequence[str]) -> dict[str, tuple[bool, int]]:
        return audit_log.protection_recorded(self.conn, addresses)


@dataclass(frozen=True)
class PostgresWriter(PostgresReader):
    """An apply's writes, inside its transaction."""

    def recheck(self, expected: Mapping[str, tuple[str, str | None]], source: str) -> None:
        writer.recheck(self.conn, expected, source)

    def write(self, writes: Sequence[Write], progress: Callable[[str], None],
              advance: Callable[[int, int], None] | None, run_id: str, *, announce: bool = False) -> int:
        return _write_changes(self.conn, writes, progress, advance, run_id, announce)

    def record_managed(self, rows: Sequence[Managed], forget: Sequence[str], source: str, run_id: str, *,
                       removed: Sequence[tuple[str, str]], commit: str | None,
                       renamed: Sequence[tuple[str, str]] = ()) -> None:
        writer.write_managed(self.conn, rows, forget, source, run_id, removed=removed, commit=commit,
                             renamed=renamed)

    def lock_audit_head(self, lock_timeout: float | None) -> Head:
        return audit_log.lock_head(self.conn, lock_timeout)

    def append_entries(self, rows: Iterable[Sequence[Any]]) -> None:
        audit_log.append(self.conn, rows)

    def insert_run(self, values: Sequence[Any]) -> None:
        audit_log.insert_run(self.conn, values)

    def record_files(self, source: str, run_id: str, files: Mapping[str, FileDigest]) -> None:
        settled.record_files(self.conn, source, run_id, files)


@dataclass(frozen=True)
class PostgresSession:
    """An apply's connection."""

    conn: Connection

    @contextmanager
    def locked(self, source: str, lock_timeout: float,
               touched: Mapping[str, tuple[str, str | None]]) -> Iterator[PostgresWriter]:
        started = time.monotonic()
        try:
            register_source(self.conn, source, lock_timeout)
            with self.conn.transaction():
                lock_source(self.conn, source, lock_timeout, started)  # and bounds the row-lock waits after
                yield PostgresWriter(self.conn)
        except psycopg.Error as error:
            raise writer.translate(error, self.conn, touched=touched, lock_timeout=lock_timeout) from None

    def record_unapplied_run(self, build: Callable[[Head], Sequence[Any] | str], lock_timeout: float | None,
                             unchained: Callable[[], Sequence[Any]]) -> str | None:
        return audit_log.record_unapplied_run(self.conn, build, lock_timeout, unchained)


@dataclass(frozen=True)
class PostgresOutbox:
    """The event outbox, in the transaction ``conn`` is in."""

    conn: Connection

    def pending(self, limit: int | None = None) -> list[QueuedEvent]:
        return outbox.pending(self.conn, limit)

    def count_pending(self) -> int:
        return outbox.count_pending(self.conn)

    def mark_delivered(self, ids: Sequence[str]) -> None:
        outbox.mark_delivered(self.conn, ids)

    def mark_failed(self, event_id: str, error: str) -> None:
        outbox.mark_failed(self.conn, event_id, error)


@dataclass(frozen=True)
class PostgresCatalog:
    """The catalog at ``url`` (``embedded``: the working directory's own server, migrated on use)."""

    url: str
    embedded: bool = False

    @property
    def description(self) -> str:
        return describe(self.url)

    @contextmanager
    def reading(self) -> Iterator[PostgresReader]:
        with reading.catalog_snapshot(self.url, embedded=self.embedded) as conn:
            yield PostgresReader(conn)

    @contextmanager
    def checking(self, lock_timeout: float) -> Iterator[PostgresReader]:
        with connect(self.url, autocommit=True) as conn, \
                translated("checking the plan against the catalog failed", conn, self.url), \
                conn.transaction():
            bound_lock_waits(conn, lock_timeout)  # a table another session locks is waited for no longer
            yield PostgresReader(conn)

    @contextmanager
    def session(self, application_name: str) -> Iterator[PostgresSession]:
        conn = connect(self.url, application_name=application_name[:63])
        try:
            yield PostgresSession(conn)
        finally:
            conn.close()

    @contextmanager
    def outbox(self, lock_timeout: float | None) -> Iterator[PostgresOutbox]:
        doing = "reading the event outbox failed" if lock_timeout is None else "delivering platform events failed"
        with connect(self.url, autocommit=True, application_name="reconciler events") as conn, \
                translated(doing, conn, self.url), conn.transaction():
            if lock_timeout is not None:
                lock_event_outbox(conn, lock_timeout)
            yield PostgresOutbox(conn)


def _write_changes(conn: Connection, writes: Sequence[Write], progress: Callable[[str], None],
                   advance: Callable[[int, int], None] | None = None, run_id: str | None = None,
                   announce: bool = False) -> int:
    """Write kind by kind; with ``announce``, queue the record changes' events from what was
    written (only records have any: the timestore announces no dataset administration)."""
    by_kind: dict[str, list[Write]] = {kind.kind.name: [] for kind in WRITERS}
    for w in writes:
        by_kind[w.kind].append(w)
    announced: list[Write] = []
    marked = None
    for kind in WRITERS:
        batch = by_kind[kind.kind.name]
        if kind.announces and announce and run_id is not None and batch:
            announced = batch
            marked = outbox.mark(conn, batch)
        if not batch:
            continue
        progress(f"writing {len(batch)} {kind.kind.noun} change(s)")
        on_rows = None if advance is None else _rows_of(advance, len(batch))
        kind.write(conn, batch, WriteContext(run_id, on_rows))
    for kind in WRITERS:
        if kind.finish is not None:
            kind.finish(conn, by_kind[kind.kind.name])
    if marked is None or run_id is None:
        return 0
    progress("queueing the platform events of the record changes")
    return outbox.queue(conn, announced, run_id, marked)


def _rows_of(advance: Callable[[int, int], None], total: int) -> Callable[[int], None]:
    return lambda done: advance(done, total)
