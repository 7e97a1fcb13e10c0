"""``reconciler audit verify``: both chains, the runs against the entries, the key, anchors, git, replay.

One read-only snapshot of the catalog: the runs (few) are read first, then the entries
streamed. In order, it checks

1. the entries chain: seq contiguous from 1, each ``prev_hash`` the previous ``hash``,
   each ``hash`` its content's; and the keyed chain: once an entry carries a MAC, every
   later one must, and with ``RECONCILER_AUDIT_KEY`` given, every MAC must be the key's;
2. the runs chain and its MACs, the same way;
3. the runs against the entries: from the first entry after the runs chain began, every
   entry belongs to a chained run, and every run holds exactly the entries it says it
   appended, from the seq it says;
4. every anchor given, and ``--expect-head``: the log still holds that entry (and run) with
   that hash;
5. with a repository: every entry's commit is in it and reachable from its default
   branch (and each commit that reached it without a merge or a request is reported);
   with ``replay``, every entry a commit asked for is held against that commit.

The first problem raises AuditVerificationError naming the entry (or run) and why.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.audit import Entry
from reconciler.errors import AuditVerificationError
from reconciler.catalog.postgres import audit_log
from reconciler.core.chain import GENESIS, HASH, mac_matches
from reconciler.errors import ConfigurationError
from reconciler.git.repository import GitRepository
from reconciler.git.review import reviews
from reconciler.core.runs import Run
from reconciler.app.anchors import Anchor
from reconciler.app.replay import Replayed, replay


_FULL = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


@dataclass(frozen=True)
class Verified:
    """What ``audit verify`` established."""

    entries: int
    head: str
    anchor_seq: int | None = None  # where the expected head is (0: the empty log's genesis)
    commits: int | None = None  # distinct commits checked against git
    ref: str | None = None
    runs: int = 0
    runs_head: str = GENESIS
    unchained_runs: int = 0  # runs recorded before the runs chain existed (not covered)
    keyed_from: int | None = None  # the first entry carrying a MAC
    runs_keyed_from: int | None = None
    macs_checked: bool = False
    anchors: tuple[Anchor, ...] = ()
    direct: tuple[tuple[str, tuple[int, ...]], ...] = ()  # commits pushed straight to the branch, with their entries
    replayed: Replayed | None = None

    @property
    def after_anchor(self) -> int:
        """Entries appended after the expected head."""
        return self.entries - (self.anchor_seq or 0)


@dataclass
class _Pass:
    """What the entries pass collects."""

    count: int = 0
    previous: Entry | None = None
    keyed_from: int | None = None
    per_run: dict[str, list[int]] = field(default_factory=dict)  # run id → [count, first seq]
    hashes: dict[int, str] = field(default_factory=dict)  # the hashes of the seqs anchors name
    first_of: dict[str, Entry] = field(default_factory=dict)
    seqs_of: dict[str, list[int]] = field(default_factory=dict)
    anchor_seq: int | None = None


def verify(url: str, *, expect_head: str | None = None, repo: GitRepository | None = None,
           key: bytes | None = None, anchors: Sequence[Anchor] = (), replay_git: bool = False) -> Verified:
    """Check the log at ``url`` as the module docstring says; raise at the first problem."""
    expected = expect_head.strip().lower() if expect_head is not None else None
    if expected is not None and not HASH.fullmatch(expected):
        raise ConfigurationError(f"--expect-head {expect_head!r} is not a hash (64 hex digits, as verify prints it)")
    with audit_log.snapshot(url, "reconciler audit verify") as conn:
        with closing(audit_log.runs_in(conn, Run.from_row)) as read:
            every = list(read)
        chained = [run for run in every if run.seq is not None]
        start = chained[0].first_entry if chained else None
        wanted = {a.entries for a in anchors}
        found = _entries(conn, key, {r.run_id: r for r in chained}, start, wanted, expected)
        runs_keyed = _runs(chained, key)
        unchained = len(every) - len(chained)
        _counts(chained, found)
        replayed = None
        if repo is not None and replay_git:
            with closing(audit_log.entries_in(conn, Entry.from_row)) as again:
                replayed = replay(again, repo, _fail)
    head = found.previous.hash if found.previous else GENESIS
    if expected is not None and found.anchor_seq is None:
        raise AuditVerificationError(
            f"the expected head {expected} is not in the log (it holds {found.count} entries, head {head}): "
            "entries after it were removed (the tail was truncated), or the log was rewritten")
    runs_head = (chained[-1].hash or GENESIS) if chained else GENESIS
    _anchors(anchors, found, {run.seq or 0: run.hash or "" for run in chained}, found.count, head,
             len(chained), runs_head)
    ref, direct = (_check_commits(repo, found) if repo is not None else (None, ()))
    return Verified(found.count, head, found.anchor_seq, len(found.first_of) if repo is not None else None, ref,
                    len(chained), runs_head, unchained, found.keyed_from, runs_keyed, key is not None,
                    tuple(anchors), direct, replayed)


def _fail(message: str, seq: int | None) -> None:
    raise AuditVerificationError(message, seq=seq)


def _runs(chained: Sequence[Run], key: bytes | None) -> int | None:
    """Verify the runs chain (runs in seq order); returns the first keyed run."""
    keyed_from = None
    previous: Run | None = None
    for run in chained:
        expected = previous.seq + 1 if previous is not None and previous.seq else 1
        if run.seq != expected:
            _fail(f"run {expected} missing" + (f" (the runs chain starts at run {run.seq})" if previous is None
                  else f" (sequence jumps from {expected - 1} to {run.seq})"), None)
        if run.prev_hash != (previous.hash if previous else GENESIS):
            _fail(f"{run.label}: out of order or its predecessor changed (prev_hash mismatch)", None)
        try:
            computed = run.computed_hash()
        except (TypeError, ValueError) as error:
            _fail(f"{run.label}: content changed ({error})", None)
        if computed != run.hash:
            _fail(f"{run.label}: content changed", None)
        keyed_from = _mac(run.label, run.seq or 0, run.hash, run.mac, keyed_from, key, "run")
        previous = run
    return keyed_from


def _mac(label: str, seq: int, hash_: str | None, mac: str | None, keyed_from: int | None, key: bytes | None,
         what: str) -> int | None:
    """Check one row's MAC; returns where the keyed part of the chain begins."""
    if mac is None:
        if keyed_from is not None:
            _fail(f"{label}: carries no MAC, although {what} {keyed_from} and every {what} after it up to here "
                  "do: it was not written with the audit key", seq if what == "entry" else None)
        return None
    if key is not None and not mac_matches(key, hash_ or "", mac):
        _fail(f"{label}: its MAC does not match RECONCILER_AUDIT_KEY: it was not written with this key",
              seq if what == "entry" else None)
    return keyed_from if keyed_from is not None else seq


def _entries(conn: Any, key: bytes | None, runs: Mapping[str, Run], start: int | None, wanted: set[int],
             expected: str | None) -> _Pass:
    found = _Pass(anchor_seq=0 if expected == GENESIS else None)
    with closing(audit_log.entries_in(conn, Entry.from_row)) as entries:
        for entry in entries:
            problem = _problem(entry, found.previous)
            if problem:
                _fail(problem, entry.seq)
            found.keyed_from = _mac(entry.label, entry.seq, entry.hash, entry.mac, found.keyed_from, key, "entry")
            if start is not None and entry.seq >= start and entry.run_id not in runs:
                _fail(f"{entry.label}: belongs to no run in the runs chain (every entry since entry {start}, "
                      "when the runs chain began, must): it was not written by an apply", entry.seq)
            tally = found.per_run.setdefault(entry.run_id, [0, entry.seq])
            tally[0] += 1
            found.count += 1
            if entry.seq in wanted:
                found.hashes[entry.seq] = entry.hash
            if entry.hash == expected:
                found.anchor_seq = entry.seq
            if entry.commit_sha is not None:
                found.first_of.setdefault(entry.commit_sha, entry)
                found.seqs_of.setdefault(entry.commit_sha, []).append(entry.seq)
            found.previous = entry
    return found


def _problem(entry: Entry, previous: Entry | None) -> str | None:
    """Why ``entry`` breaks the chain after ``previous``, or None."""
    expected_seq = previous.seq + 1 if previous else 1
    if entry.seq != expected_seq:
        if previous is None:
            return f"entry 1 missing (the log starts at entry {entry.seq})"
        return f"entry {expected_seq} missing (sequence jumps from {previous.seq} to {entry.seq})"
    if entry.prev_hash != (previous.hash if previous else GENESIS):
        return f"{entry.label}: out of order or its predecessor changed (prev_hash mismatch)"
    try:
        computed = entry.computed_hash()
    except (TypeError, ValueError) as error:
        return f"{entry.label}: content changed ({error})"
    if computed != entry.hash:
        return f"{entry.label}: content changed"
    return None


def _counts(chained: Sequence[Run], found: _Pass) -> None:
    """Every chained run holds exactly the entries it says it appended."""
    for run in chained:
        tally = found.per_run.get(run.run_id)
        count, first = (tally[0], tally[1]) if tally else (0, None)
        claimed = run.entries or 0
        if run.outcome != "applied" and count:
            _fail(f"{run.label}: it was {run.outcome}, yet the log holds {count} entries of it (from entry {first})",
                  first)
        if count != claimed or (claimed and first != run.first_entry):
            where = f" from entry {first}" if first is not None else ""
            _fail(f"{run.label}: it appended {claimed} entries from entry {run.first_entry}, but the log holds "
                  f"{count} entries of it{where}", first)


def _anchors(anchors: Sequence[Anchor], found: _Pass, run_hashes: Mapping[int, str], count: int, head: str,
             runs: int, runs_head: str) -> None:
    """Every anchor's entry and run are still in the log, with the anchored hashes."""
    for anchor in anchors:
        taken = f"the anchor in {anchor.where} (taken at {anchor.taken_at})"
        held = GENESIS if anchor.entries == 0 else found.hashes.get(anchor.entries)
        if held is None:
            _fail(f"{taken} names entry {anchor.entries} (hash {anchor.head}), but the log holds only {count} "
                  f"entries (head {head}): the tail was truncated", None)
        if held != anchor.head:
            _fail(f"{taken} names entry {anchor.entries} with hash {anchor.head}, but that entry's hash is now "
                  f"{held}: the log was rewritten", anchor.entries)
        held_run = GENESIS if anchor.runs == 0 else run_hashes.get(anchor.runs)
        if held_run is None:
            _fail(f"{taken} names run {anchor.runs}, but the runs chain holds only {runs} runs (head {runs_head}): "
                  "its tail was truncated", None)
        if held_run != anchor.runs_head:
            _fail(f"{taken} names run {anchor.runs} with hash {anchor.runs_head}, but that run's hash is now "
                  f"{held_run}: the runs were rewritten", None)


def _check_commits(repo: GitRepository, found: _Pass) -> tuple[str, tuple[tuple[str, tuple[int, ...]], ...]]:
    """Every commit in the repository and reachable from its default branch; returns that ref and
    the commits that reached it without a merge or a request number, with their entries."""
    ref = repo.default_branch()
    shallow = " (this is a shallow clone: fetch the full history)" if repo.is_shallow() else ""
    full: dict[str, str] = {}
    for sha, entry in found.first_of.items():  # in order of first appearance
        if not repo.commit_exists(sha):
            _fail(f"{entry.label}: commit {sha} is not in the repository at {repo.root}{shallow}", entry.seq)
        if not repo.is_ancestor(sha, ref):
            _fail(f"{entry.label}: commit {sha} is not reachable from {ref} in {repo.root}", entry.seq)
        full[sha if _FULL.fullmatch(sha) else repo.resolve(sha) or sha] = sha
    arrived = reviews(repo, list(full), ref)
    direct = tuple((full[sha], tuple(found.seqs_of[full[sha]])) for sha, review in arrived.items() if review.direct)
    return ref, tuple(sorted(direct, key=lambda item: item[1][0]))
