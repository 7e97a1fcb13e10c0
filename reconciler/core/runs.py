"""The runs chain: one row per apply that reached the catalog, chained like the audit log's entries.

Each run (``reconciler.runs``) records who applied (the actor, and the CI run's identifiers
or the local identities), the command, the commit and the digest of the plan, the outcome,
the counts, and how many audit entries it appended from which ``seq``. Runs are chained
the way entries are — ``hash = sha256(prev_hash + canonical(run))`` over every column but
``hash`` and ``mac``, ``seq`` 1, 2, 3 … in the order they were recorded under the append
lock — so a run changed, removed or reordered is detected, and ``audit verify`` holds the
entries each run claims against the entries the log holds. Runs recorded before the chain
existed have no ``seq`` and are listed, not verified.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from reconciler.core.chain import RUN_COLUMNS, RUN_JSON_COLUMNS, Head
from reconciler.core.chain import GENESIS, canonical, chain_hash, mac_of, plain, utc_text
from reconciler.core.ops import NAMES
from reconciler.core.text import clean

_HASHED = tuple(name for name in RUN_COLUMNS if name not in ("hash", "mac"))
ACTIONS = NAMES  # the operations in the order a run counts them

# The runs export's columns and their DuckDB types.
EXPORT_TYPES = {
    "seq": "BIGINT", "run_id": "VARCHAR", "source": "VARCHAR", "applier": "VARCHAR", "commit_sha": "VARCHAR",
    "plan_digest": "VARCHAR", "started_at": "TIMESTAMPTZ", "finished_at": "TIMESTAMPTZ", "outcome": "VARCHAR",
    "counts": "JSON", "message": "VARCHAR", "complete": "BOOLEAN", "command": "VARCHAR", "applied_by": "JSON",
    "ci_url": "VARCHAR", "entries": "INTEGER", "first_entry": "BIGINT", "prev_hash": "VARCHAR", "hash": "VARCHAR",
    "mac": "VARCHAR",
}


@dataclass(frozen=True)
class RunDraft:
    """One run as it will be recorded, before it has a place in the chain."""

    run_id: str
    source: str
    applier: str
    commit_sha: str | None
    plan_digest: str
    outcome: str  # applied | failed | refused
    counts: Mapping[str, int]
    message: str | None = None
    complete: bool = False
    command: str | None = None
    applied_by: Mapping[str, Any] | None = None
    ci_url: str | None = None


@dataclass(frozen=True)
class Run:
    """One row of reconciler.runs (fields in RUN_COLUMNS order); ``seq`` None: before the chain."""

    seq: int | None
    run_id: str
    source: str
    applier: str
    commit_sha: str | None
    plan_digest: str | None
    started_at: datetime
    finished_at: datetime | None
    outcome: str
    counts: Mapping[str, Any]
    message: str | None
    complete: bool
    command: str | None
    applied_by: Mapping[str, Any] | None
    ci_url: str | None
    entries: int | None
    first_entry: int | None
    prev_hash: str | None
    hash: str | None
    mac: str | None

    @classmethod
    def from_row(cls, *values: Any) -> Run:
        """A run from the columns as catalog.audit_log reads them (JSON columns as text)."""
        row = dict(zip(RUN_COLUMNS, values, strict=True))
        for name in RUN_JSON_COLUMNS:
            row[name] = None if row[name] is None else json.loads(row[name])
        return cls(**row)

    @property
    def label(self) -> str:
        """How messages name the run: ``run 7 (run-…)``."""
        return f"run {self.seq} ({clean(self.run_id)})"

    def body(self) -> dict[str, Any]:
        """Every column but ``hash`` and ``mac``, normalised: the object the hash covers."""
        out = {name: getattr(self, name) for name in _HASHED}
        for name in ("started_at", "finished_at"):
            out[name] = None if out[name] is None else utc_text(out[name])
        for name in RUN_JSON_COLUMNS:
            out[name] = plain(out[name])
        return out

    def computed_hash(self) -> str:
        """What ``hash`` must be for this content and ``prev_hash``."""
        return chain_hash(self.prev_hash or "", canonical(self.body()))

    def to_json(self) -> dict[str, Any]:
        """The run as ``audit runs --format json`` shows it."""
        return {**self.body(), "hash": self.hash, "mac": self.mac}

    def values(self) -> tuple[Any, ...]:
        """The values to insert, in RUN_COLUMNS order (JSON columns as canonical text)."""
        return tuple(canonical(plain(getattr(self, name))) if name in RUN_JSON_COLUMNS
                     and getattr(self, name) is not None else getattr(self, name) for name in RUN_COLUMNS)


def seal(draft: RunDraft, head: Head, *, entries: int, first_entry: int | None, key: bytes | None) -> Run:
    """Give a run its place after the runs head: seq, times, prev_hash, hash and (with a key) mac."""
    run = Run(seq=head.run_seq + 1, run_id=draft.run_id, source=draft.source, applier=draft.applier,
              commit_sha=draft.commit_sha, plan_digest=draft.plan_digest, started_at=head.started,
              finished_at=head.now, outcome=draft.outcome, counts=dict(draft.counts), message=draft.message,
              complete=draft.complete, command=draft.command,
              applied_by=None if draft.applied_by is None else dict(draft.applied_by), ci_url=draft.ci_url,
              entries=entries, first_entry=first_entry, prev_hash=head.run_hash or GENESIS, hash=None, mac=None)
    hashed = run.computed_hash()
    return replace(run, hash=hashed, mac=mac_of(key, hashed))


def outside_chain(draft: RunDraft, moment: datetime) -> Run:
    """A run recorded without a place in the chain (no seq or hashes), listed but not verified:
    for a failed apply whose append lock another session held past the timeout."""
    return Run(seq=None, run_id=draft.run_id, source=draft.source, applier=draft.applier,
               commit_sha=draft.commit_sha, plan_digest=draft.plan_digest, started_at=moment,
               finished_at=moment, outcome=draft.outcome, counts=dict(draft.counts), message=draft.message,
               complete=False, command=draft.command,
               applied_by=None if draft.applied_by is None else dict(draft.applied_by), ci_url=draft.ci_url,
               entries=0, first_entry=None, prev_hash=None, hash=None, mac=None)


def who_applied(applier: str, applied_by: Mapping[str, Any] | None) -> str:
    """The applier with what identifies it: the CI system and run, or the local identities, marked."""
    name = clean(applier)
    if not applied_by:
        return name
    if applied_by.get("kind") == "local":
        git = applied_by.get("git_email") or applied_by.get("git_name")
        return f"{name} (local: OS user {clean(applied_by.get('os_user', applier))}" + (
            f", git {clean(git)})" if git else ")")
    ids = [f"{key} {clean(applied_by[key])}" for key in ("run_id", "run_attempt", "pipeline_id", "build_number",
                                                         "build_id", "job_id") if applied_by.get(key)]
    system = clean(applied_by.get("system", "ci"))
    return f"{name} ({system}" + (f" {', '.join(ids)}" if ids else "") + ")"
