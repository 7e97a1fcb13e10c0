"""``audit verify --replay``: every entry a commit asked for is held against that commit in git.

For an entry with reason ``manifest`` that names a commit (entries written before reasons
were recorded are not replayed: their commits were found by lines, not by meaning), the
commit must exist, its author must be the one the entry names, and the file the entry
names must, at that commit, declare the object with what the entry
recorded: every field it changed has the ``after`` value (in ``metadata`` and
``retention``, every key whose value changed); a purge is declared ``purge: true``; an
archive of an object no longer declared is a commit that removed it from that file. An
entry that no commit supports — a row inserted by someone who can write the table —
fails with its sequence number.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from reconciler.core import kinds
from reconciler.core.diff import DEFAULTS, MERGED_FIELDS, same
from reconciler.git.objects import BlobReader
from reconciler.git.repository import GitRepository
from reconciler.app.attribution import DATA_SUFFIXES, SUFFIXES, declared_from_data, declared_in

if TYPE_CHECKING:
    from reconciler.core.audit import Entry

CACHED_FILES = 256
_ABSENT: Any = object()


@dataclass(frozen=True)
class Replayed:
    """What the replay checked: entries held against their commit, and entries with no commit to hold."""

    checked: int
    skipped: int


class _Files:
    """What a file declares at a commit, parsed once (a small LRU)."""

    def __init__(self, repo: GitRepository) -> None:
        self.repo = repo
        self.reader = BlobReader(repo.root)
        self.cache: OrderedDict[tuple[str, str], Mapping[str, Mapping[str, Any]] | None] = OrderedDict()

    def at(self, commit: str, path: str) -> Mapping[str, Mapping[str, Any]] | None:
        """address → declared value in ``path`` at ``commit``; None when the file is not there."""
        key = (commit, path)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key]
        blob = self.repo.blob_at(commit, path)
        data = self.reader.read(blob) if blob is not None else None
        if path.endswith(DATA_SUFFIXES):
            found = self._from_data(commit, path) if data is not None else None
        else:
            found = declared_in(data, path) if data is not None else None
        self.cache[key] = found
        if len(self.cache) > CACHED_FILES:
            self.cache.popitem(last=False)
        return found

    def _from_data(self, commit: str, path: str) -> Mapping[str, Mapping[str, Any]]:
        """What a RecordSet data file declares at ``commit``, through the manifests that name it."""
        found: dict[str, Mapping[str, Any]] = {}
        for manifest in self.repo.files_mentioning(commit, path.rpartition("/")[2], SUFFIXES):
            found.update(declared_from_data(lambda name: self.reader.read(f"{commit}:{name}"), manifest, path))
        return found

    def find(self, commit: str, address: str) -> tuple[Mapping[str, Any] | None, str | None]:
        """The object's declared value anywhere in the commit's manifest files, and its file."""
        kind, _, identity = address.partition(":")
        spec = kinds.BY_NAME.get(kind)
        if spec is not None and len(spec.identity) > 1:
            # Its last part (a record's key): the others (a namespace) are often written once, in defaults.
            identity = identity.split("/", len(spec.identity) - 1)[-1]
        for path in self.repo.files_mentioning(commit, identity, SUFFIXES + DATA_SUFFIXES):
            value = (self.at(commit, path) or {}).get(address)
            if value is not None:
                return value, path
        return None, None

    def close(self) -> None:
        self.reader.close()


def replay(entries: Iterable[Entry], repo: GitRepository, fail: Any) -> Replayed:
    """Hold every commit-asked entry against its commit; ``fail(message, seq)`` raises at the first
    entry that does not hold."""
    files = _Files(repo)
    facts: dict[str, tuple[str, str, str, tuple[str, ...]] | None] = {}
    checked = skipped = 0
    try:
        for entry in entries:
            if entry.reason != "manifest":  # entries from before reasons were recorded are not replayed
                continue
            if entry.commit_sha is None or entry.uncommitted:
                skipped += 1
                continue
            sha = entry.commit_sha
            if sha not in facts:
                facts[sha] = repo.commit_facts(sha)
            problem = _problem(entry, facts[sha], files)
            if problem:
                fail(f"{entry.label}: {problem}", entry.seq)
            checked += 1
    finally:
        files.close()
    return Replayed(checked, skipped)


def _problem(entry: Entry, fact: tuple[str, str, str, tuple[str, ...]] | None, files: _Files) -> str | None:
    sha = entry.commit_sha or ""
    if fact is None:
        return f"commit {sha} is not in the repository at {files.repo.root}"
    name, email, date, parents = fact
    if (entry.author_name, entry.author_email.lower()) != (name, email.lower()):
        return (f"it names {entry.author_name} <{entry.author_email}> as the author of commit {sha[:12]}, "
                f"whose author is {name} <{email}>")
    if entry.commit_date is not None and date and entry.commit_date != datetime.fromisoformat(date):
        return f"it dates commit {sha[:12]} {entry.commit_date.isoformat()}, but its author date is {date}"
    if entry.manifest_path is None:
        return f"it names no manifest file to hold against commit {sha[:12]}"
    full = files.repo.resolve(sha) or sha
    declared = files.at(full, entry.manifest_path)
    value = (declared or {}).get(entry.address)
    where = f"{entry.manifest_path} at commit {sha[:12]}"
    if value is None and entry.action != "archive":
        # The object may have moved to the file the entry names after this commit asked for it.
        value, moved = files.find(full, entry.address)
        where = f"{moved or entry.manifest_path} at commit {sha[:12]}"
    if value is None:
        if entry.action == "archive":
            return _removal(entry, full, parents, files, where)
        return f"{where} does not declare {entry.address}"
    if entry.action == "purge":
        return None if value.get("purge") is True else f"{where} does not declare {entry.address} with purge: true"
    return _values(entry, value, where)


def _removal(entry: Entry, commit: str, parents: tuple[str, ...], files: _Files, where: str) -> str | None:
    """An archive of an object no longer declared: the commit removed it from the file."""
    for parent in parents:
        before = files.at(parent, entry.manifest_path or "")
        if before is not None and entry.address in before:
            return None
    return (f"{where} does not declare {entry.address}, and no parent of the commit did: the commit did "
            "not remove it")


def _values(entry: Entry, value: Mapping[str, Any], where: str) -> str | None:
    """Whether the declared ``value`` has what the entry wrote, field by field."""
    before, after = entry.before or {}, entry.after or {}
    for name in entry.fields:
        if name == "protect":
            continue
        declared = value.get(name, DEFAULTS.get(entry.kind, {}).get(name, _ABSENT))
        wrote = after.get(name)
        if name in MERGED_FIELDS:
            problem = _keys(name, before.get(name), wrote, declared)
            if problem:
                return f"{where} declares {entry.address} with {problem}"
            continue
        if declared is _ABSENT:
            declared = None
        if not same(name, declared, wrote):
            return f"{where} declares {entry.address} with {name} {_shown(declared)}, not {_shown(wrote)}"
    return None


def _keys(name: str, old: Any, new: Any, declared: Any) -> str | None:
    """For a JSON object field: every key whose value the entry changed is declared with the new value
    (or, when the entry removed it, not declared)."""
    old = old if isinstance(old, Mapping) else {}
    new_object = new if isinstance(new, Mapping) else {}
    declared = declared if isinstance(declared, Mapping) else {}
    if new is None and old:
        return None if not declared else f"{name} {_shown(declared)}, not none"
    for key in sorted(set(old) | set(new_object)):
        if key in old and key in new_object and same(name, {key: old[key]}, {key: new_object[key]}):
            continue
        if key in new_object:
            if key not in declared or not same(name, {key: declared[key]}, {key: new_object[key]}):
                shown = _shown(declared[key]) if key in declared else "(not declared)"
                return f"{name}.{key} {shown}, not {_shown(new_object[key])}"
        elif key in declared:
            return f"{name}.{key} {_shown(declared[key])}, which the entry removed"
    return None


def _shown(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:119] + "…"
