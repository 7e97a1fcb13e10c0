"""The audit log's entries as values: a draft, a sealed entry, and sealing drafts into the chain.

Pure: the hash chain's canonical text and its normalisations are described in
reconciler/app/auditing.py; the columns are core/chain.py's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import datetime
from typing import Any

from reconciler.core import chain as chain_format
from reconciler.core.chain import canonical, chain_hash, later_columns, mac_of, plain, utc_text
from reconciler.core.text import clean


# --- entries and the chain -------------------------------------------------------------------


@dataclass(frozen=True)
class Draft:
    """One change as it will be recorded, before it has a place in the chain."""

    run_id: str
    source: str
    address: str
    kind: str
    action: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    fields: tuple[str, ...]
    commit_sha: str | None
    author_name: str
    author_email: str
    uncommitted: bool
    manifest_path: str | None
    manifest_line: int | None
    applier: str
    plan_digest: str
    reason: str | None = None
    commit_date: datetime | None = None
    protect: bool | None = None
    merge_commit: str | None = None
    pull_request: int | None = None
    ci_url: str | None = None
    applied_by: Mapping[str, Any] | None = None
    changed_at: datetime | None = None
    evidence: str | None = None


@dataclass(frozen=True)
class Entry:
    """One row of reconciler.audit_log (fields in table order)."""

    seq: int
    recorded_at: datetime
    run_id: str
    source: str
    address: str
    kind: str
    action: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    fields: tuple[str, ...]
    commit_sha: str | None
    author_name: str
    author_email: str
    uncommitted: bool
    manifest_path: str | None
    manifest_line: int | None
    applier: str
    plan_digest: str
    prev_hash: str
    hash: str
    reason: str | None = None
    commit_date: datetime | None = None
    protect: bool | None = None
    merge_commit: str | None = None
    pull_request: int | None = None
    ci_url: str | None = None
    applied_by: Mapping[str, Any] | None = None
    changed_at: datetime | None = None
    evidence: str | None = None
    mac: str | None = None

    @classmethod
    def from_row(cls, *values: Any) -> Entry:
        """An entry from the columns as catalog.audit_log reads them (JSON columns as text)."""
        row = dict(zip(chain_format.COLUMNS, values, strict=True))
        for name in chain_format.JSON_COLUMNS:
            row[name] = None if row[name] is None else json.loads(row[name])
        row["fields"] = tuple(row["fields"] or ())
        return cls(**row)

    @property
    def label(self) -> str:
        """How messages name the entry: ``entry 17 (record:obs/x, run run-…)``."""
        return f"entry {self.seq} ({clean(self.address)}, run {clean(self.run_id)})"

    def body(self) -> dict[str, Any]:
        """Every column but ``hash`` and ``mac``, normalised: the object the hash covers."""
        out = {name: getattr(self, name) for name in _HASHED}
        later_columns(out, chain_format.LATER_COLUMNS)
        out["recorded_at"] = utc_text(self.recorded_at)
        out["fields"] = list(self.fields)
        out["before"] = plain(self.before)
        out["after"] = plain(self.after)
        return out

    def computed_hash(self) -> str:
        """What ``hash`` must be for this content and ``prev_hash``."""
        return chain_hash(self.prev_hash, canonical(self.body()))

    def to_json(self) -> dict[str, Any]:
        """The entry as ``audit log --format json`` shows it."""
        body = self.body()
        return {name: self.hash if name == "hash" else self.mac if name == "mac" else body.get(name)
                for name in chain_format.COLUMNS}

    def row(self) -> tuple[Any, ...]:
        """The values to COPY, in COLUMNS order (JSON columns as normalised JSON text)."""
        texts = tuple(None if value is None else canonical(plain(value)) for value in (self.before, self.after))
        return _row(self, texts)


_HASHED = tuple(name for name in chain_format.COLUMNS if name not in chain_format.UNHASHED)


def _row(entry: Entry, texts: tuple[str | None, ...]) -> tuple[Any, ...]:
    """``entry.row()``, given ``before`` and ``after`` already as canonical JSON text."""
    out = []
    for name in chain_format.COLUMNS:
        value = getattr(entry, name)
        if name == "before":
            value = texts[0]
        elif name == "after":
            value = texts[1]
        elif name == "fields":
            value = list(value)
        elif name == "applied_by" and value is not None:
            value = canonical(plain(value))
        out.append(value)
    return tuple(out)


def seal(drafts: Sequence[Draft], *, after_seq: int, after_hash: str, recorded_at: datetime,
         key: bytes | None = None) -> list[Entry]:
    """Give drafts their places after the current head: seq, time, prev_hash, hash (and with a key, mac)."""
    return [entry for entry, _ in _sealed(drafts, after_seq=after_seq, after_hash=after_hash,
                                          recorded_at=recorded_at, key=key)]


def _sealed(drafts: Sequence[Draft], *, after_seq: int, after_hash: str,
            recorded_at: datetime, key: bytes | None = None) -> list[tuple[Entry, tuple[Any, ...]]]:
    """``seal``, each entry with its row to COPY (its JSON serialised once).

    The text hashed is ``canonical(entry.body())`` byte for byte; what many entries of an
    apply share (``applied_by``, commit dates) is normalised once, not once per entry.
    """
    entries: list[tuple[Entry, tuple[Any, ...]]] = []
    prev = after_hash
    recorded_text = utc_text(recorded_at)
    shared = _Shared()
    for seq, draft in enumerate(drafts, start=after_seq + 1):
        values = dict(vars(draft))  # every field of the draft (a dataclass without slots)
        before, after = plain(draft.before), plain(draft.after)
        values.update(seq=seq, recorded_at=recorded_at, prev_hash=prev, fields=tuple(draft.fields),
                      before=before, after=after)
        texts = (None if before is None else canonical(before), None if after is None else canonical(after))
        body = {**values, "recorded_at": recorded_text, "fields": list(draft.fields),  # as Entry.body()
                "before": _MARK, "after": _MARK}
        for name in chain_format.LATER_COLUMNS:  # as later_columns(), with shared values normalised once
            value = body[name]
            if value is None:
                del body[name]
            elif type(value) is not str and (isinstance(value, datetime) or isinstance(value, Mapping)):
                body[name] = shared.normalised(value)
        prev = chain_hash(prev, _spliced(canonical(body), texts))
        values["hash"], values["mac"] = prev, mac_of(key, prev)
        row = [values[name] for name in chain_format.COLUMNS]
        row[_BEFORE], row[_AFTER], row[_FIELDS] = texts[0], texts[1], list(draft.fields)
        if draft.applied_by is not None:
            row[_APPLIED_BY] = shared.text(draft.applied_by)
        entries.append((Entry(**values), tuple(row)))
    return entries


_BEFORE, _AFTER, _FIELDS, _APPLIED_BY = (chain_format.COLUMNS.index(name)
                                         for name in ("before", "after", "fields", "applied_by"))


class _Shared:
    """Values many entries of one seal hold, normalised once each: timestamps as ``utc_text``,
    mappings as ``plain`` (hashed) and canonical text (stored)."""

    def __init__(self) -> None:
        self._times: dict[datetime, str] = {}
        self._mappings: dict[int, tuple[Any, Any, str]] = {}  # id → (the mapping, plain, canonical text)

    def normalised(self, value: datetime | Mapping[str, Any]) -> Any:
        """What ``later_columns`` makes of ``value`` in the hashed body."""
        if isinstance(value, datetime):
            text = self._times.get(value)
            if text is None:
                text = self._times[value] = utc_text(value)
            return text
        return self._mapping(value)[1]

    def text(self, value: Mapping[str, Any]) -> str:
        """``canonical(plain(value))``, as the row stores it."""
        return self._mapping(value)[2]

    def _mapping(self, value: Mapping[str, Any]) -> tuple[Any, Any, str]:
        found = self._mappings.get(id(value))
        if found is None or found[0] is not value:
            normal = plain(value)
            found = self._mappings[id(value)] = (value, normal, canonical(normal))
        return found


_DRAFTED = tuple(f.name for f in dataclass_fields(Draft))

# ``canonical(body)`` with the already serialised ``before`` and ``after`` put in place of
# a marker, instead of serialising them a second time. The marker is a lone NUL, which
# canonical JSON always writes escaped; "before" is put in first, while "after" (which
# sorts ahead of it) is still the marker, so each pattern is found at its top-level key.
_MARK = "\x00"
_MARKED = {name: f'"{name}":{canonical(_MARK)}' for name in ("before", "after")}


def _spliced(text: str, texts: tuple[str | None, str | None]) -> str:
    for name, value in (("before", texts[0]), ("after", texts[1])):
        text = text.replace(_MARKED[name], f'"{name}":{"null" if value is None else value}', 1)
    return text
