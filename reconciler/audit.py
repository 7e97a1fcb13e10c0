"""The reconciler's audit log: chain, verify, export.

Every applied change becomes one entry of ``reconciler.audit_log``, written in the
apply's transaction. Entries form a hash chain::

    hash = sha256(prev_hash + canonical(entry))      (UTF-8, lowercase hex)

where the first entry's ``prev_hash`` is 64 zeros and ``canonical(entry)`` is the
JSON object of every column except ``hash``, with sorted keys, no whitespace and
unescaped UTF-8, after these normalisations, chosen so that what PostgreSQL hands
back re-serialises byte for byte:

- floats (anywhere, also inside ``before``/``after``) that are integral become the
  integer their shortest decimal form names (``1.0`` → ``1``, ``1e300`` → ``10**300``):
  jsonb keeps numbers as decimals and gives ``1e300`` back as that integer; other
  floats keep Python's shortest repr (``0.1``, ``1e-07``), which a decimal round trip
  preserves; NaN and infinities are refused (jsonb cannot hold them);
- ``recorded_at`` is UTC text with microseconds, ``2026-11-21T10:04:05.123456Z``;
- ``fields`` is a JSON array of strings; absent values are ``null``.

``reconciler audit verify`` recomputes the chain; an entry changed, removed or
reordered breaks it at that entry. Removing the newest entries leaves a valid,
shorter chain: only a head hash kept outside the database shows it
(``--expect-head``, docs/auditing.md).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from dataclasses import fields as dataclass_fields
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from .catalog import audit_log
from .catalog.audit_log import Filters as Filters  # re-exported for the CLI
from .errors import ConfigurationError, ReconcilerError
from .plan import MASK, Author, Plan, mask
from .git.repository import GitRepository
from .text import clean

GENESIS = "0" * 64
EXPORT_FORMATS = ("parquet", "csv")
# Longest value shown in ``audit log`` text; JSON output is never shortened.
VALUE_LIMIT = 200

_HASH = re.compile(r"^[0-9a-f]{64}$")


class AuditVerificationError(ReconcilerError):
    """The audit log does not verify; names the first bad entry and why."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(f"audit log verification failed: {message}")
        self.seq = seq


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

    @classmethod
    def from_row(cls, *values: Any) -> Entry:
        """An entry from the columns as catalog.audit_log reads them (JSON columns as text)."""
        row = dict(zip(audit_log.COLUMNS, values, strict=True))
        for name in ("before", "after"):
            row[name] = None if row[name] is None else json.loads(row[name])
        row["fields"] = tuple(row["fields"] or ())
        return cls(**row)

    @property
    def label(self) -> str:
        """How messages name the entry: ``entry 17 (record:obs/x, run run-…)``."""
        return f"entry {self.seq} ({clean(self.address)}, run {clean(self.run_id)})"

    def body(self) -> dict[str, Any]:
        """Every column but ``hash``, normalised: the object the hash covers."""
        out = {name: getattr(self, name) for name in _HASHED}
        _later(out)
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
        return {**dict.fromkeys(audit_log.LATER_COLUMNS), **self.body(), "hash": self.hash}

    def row(self) -> tuple[Any, ...]:
        """The values to COPY, in COLUMNS order (JSON columns as normalised JSON text)."""
        texts = tuple(None if value is None else canonical(plain(value)) for value in (self.before, self.after))
        return _row(self, texts)


_HASHED = tuple(name for name in audit_log.COLUMNS if name != "hash")


def _later(body: dict[str, Any]) -> None:
    """Columns added after the first version are hashed only when set (entries written before
    they existed hold null there, and must still verify); timestamps as ``utc_text``."""
    for name in audit_log.LATER_COLUMNS:
        value = body.get(name)
        if value is None:
            body.pop(name, None)
        elif isinstance(value, datetime):
            body[name] = utc_text(value)


def plain(value: Any) -> Any:
    """``value`` with integral floats as integers and tuples as lists (see the module docstring)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return value
    if kind is dict:
        return {k if type(k) is str else str(k): plain(v) for k, v in value.items()}
    if kind is list or kind is tuple:
        return [plain(v) for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be recorded in the audit log (JSON has no such number)")
        return int(Decimal(repr(value))) if value.is_integer() else float(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    raise TypeError(f"a {type(value).__name__} cannot be recorded in the audit log")


def canonical(value: Any) -> str:
    """Canonical JSON text: sorted keys, no whitespace, UTF-8 left unescaped."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def utc_text(moment: datetime) -> str:
    """A timestamp as fixed-format UTC text with microseconds."""
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must carry a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, body: str) -> str:
    """sha256 over the previous hash followed by the entry's canonical text."""
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def _row(entry: Entry, texts: tuple[str | None, ...]) -> tuple[Any, ...]:
    """``entry.row()``, given ``before`` and ``after`` already as canonical JSON text."""
    return tuple(
        texts[0] if name == "before" else texts[1] if name == "after"
        else list(value) if name == "fields" else value
        for name, value in ((name, getattr(entry, name)) for name in audit_log.COLUMNS))


def seal(drafts: Sequence[Draft], *, after_seq: int, after_hash: str, recorded_at: datetime) -> list[Entry]:
    """Give drafts their places after the current head: seq, time, prev_hash and hash."""
    return [entry for entry, _ in _sealed(drafts, after_seq=after_seq, after_hash=after_hash,
                                          recorded_at=recorded_at)]


def _sealed(drafts: Sequence[Draft], *, after_seq: int, after_hash: str,
            recorded_at: datetime) -> list[tuple[Entry, tuple[Any, ...]]]:
    """``seal``, each entry with its row to COPY (its JSON serialised once)."""
    entries: list[tuple[Entry, tuple[Any, ...]]] = []
    prev = after_hash
    recorded_text = utc_text(recorded_at)
    for seq, draft in enumerate(drafts, start=after_seq + 1):
        values = {name: getattr(draft, name) for name in _DRAFTED}
        before, after = plain(draft.before), plain(draft.after)
        values.update(seq=seq, recorded_at=recorded_at, prev_hash=prev, fields=tuple(draft.fields),
                      before=before, after=after)
        texts = (None if before is None else canonical(before), None if after is None else canonical(after))
        body = {**values, "recorded_at": recorded_text, "fields": list(draft.fields),  # as Entry.body()
                "before": _MARK, "after": _MARK}
        _later(body)
        prev = chain_hash(prev, _spliced(canonical(body), texts))
        entry = Entry(**values, hash=prev)
        entries.append((entry, _row(entry, texts)))
    return entries


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


# --- recording an apply ----------------------------------------------------------------------


def drafts_for(plan: Plan, *, run_id: str, applier: str, applying: Author | None = None) -> list[Draft]:
    """One draft per change of the plan, secrets masked exactly as the plan JSON masks them.

    Manifest paths are the plan's: relative to the repository root when there is one. A
    change no commit asked for (or an uncommitted one) names ``applying``, whoever applies
    now, whoever computed the plan.
    """
    digest = plan.digest()
    drafts = []
    for change in plan.changes:
        secrets = plan.secrets.get(change.address, {})
        hidden = plan.masked_paths(change.address)
        author = plan.author_of(change.address)
        name, email = (applying.name, applying.email) if author.applier and applying else (author.name, author.email)
        drafts.append(Draft(
            run_id=run_id, source=plan.source, address=change.address, kind=change.kind, action=change.action,
            # Drafts are only read (seal copies them), so fields without secrets are shared.
            before=mask(change.before, hidden, MASK) if hidden else change.before,
            after=mask(change.after, secrets, None) if secrets else change.after,
            fields=tuple(change.fields), commit_sha=author.commit, author_name=name,
            author_email=email, uncommitted=bool(author.uncommitted),
            manifest_path=change.location.path if change.location else None,
            manifest_line=change.location.line if change.location else None,
            applier=applier, plan_digest=digest, reason=change.reason,
            commit_date=datetime.fromisoformat(author.date) if author.date else None,
            protect=change.protect if change.action != "purge" else None))
    for entry in plan.bookkeeping:
        # Taking over an object with protect: true changes nothing in the catalog, but the flag
        # goes into the chain like every other change of it.
        if entry.reason == "adopt" and entry.protect:
            name, email = (applying.name, applying.email) if applying else ("unknown", "")
            drafts.append(Draft(
                run_id=run_id, source=plan.source, address=entry.address, kind=entry.kind, action="update",
                before=None, after=None, fields=("protect",), commit_sha=plan.commit, author_name=name,
                author_email=email, uncommitted=False, manifest_path=entry.location.path,
                manifest_line=entry.location.line, applier=applier, plan_digest=digest, reason="adoption",
                protect=True))
    return drafts


def append(conn: audit_log.Connection, drafts: Sequence[Draft], *,
           lock_timeout: float | None = None) -> list[Entry]:
    """Append the drafts to the log inside the caller's transaction; nothing for no drafts.

    The append lock is held from reading the head until the caller commits, so two
    applies never chain onto the same head; it is waited for at most ``lock_timeout``
    seconds (None: as the session's own lock_timeout allows), then LockTimeout names its holder.
    """
    if not drafts:
        return []
    head = audit_log.lock_head(conn, lock_timeout)
    sealed = _sealed(drafts, after_seq=head.seq, after_hash=head.hash or GENESIS, recorded_at=head.now)
    audit_log.append(conn, (row for _, row in sealed))
    return [entry for entry, _ in sealed]


def scrub(text: str, values: Iterable[str]) -> str:
    """``text`` with every one of the secret ``values`` replaced by ***, longest first."""
    for value in sorted(values, key=len, reverse=True):
        if value:
            text = text.replace(value, MASK)
    return text


# --- verifying -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verified:
    """What ``audit verify`` established."""

    entries: int
    head: str
    anchor_seq: int | None = None  # where the expected head is (0: the empty log's genesis)
    commits: int | None = None  # distinct commits checked against git
    ref: str | None = None

    @property
    def after_anchor(self) -> int:
        """Entries appended after the expected head."""
        return self.entries - (self.anchor_seq or 0)


def verify(url: str, *, expect_head: str | None = None, repo: GitRepository | None = None) -> Verified:
    """Recompute the chain over the whole log, in seq order; raise at the first bad entry.

    With ``expect_head`` (a hash kept outside the database), the log must contain it:
    a log that lost its newest entries verifies as a chain but no longer holds it.
    With ``repo``, every entry's commit must be in that repository, reachable from its
    default branch.
    """
    expected = expect_head.strip().lower() if expect_head is not None else None
    if expected is not None and not _HASH.match(expected):
        raise ConfigurationError(f"--expect-head {expect_head!r} is not a hash (64 hex digits, as verify prints it)")
    anchor: int | None = 0 if expected == GENESIS else None
    previous: Entry | None = None
    first_of: dict[str, Entry] = {}
    count = 0
    with closing(audit_log.read_entries(url, Entry.from_row)) as entries:
        for entry in entries:
            problem = _problem(entry, previous)
            if problem:
                raise AuditVerificationError(problem, seq=entry.seq)
            count += 1
            if entry.hash == expected:
                anchor = entry.seq
            if entry.commit_sha is not None:
                first_of.setdefault(entry.commit_sha, entry)
            previous = entry
    head = previous.hash if previous else GENESIS
    if expected is not None and anchor is None:
        raise AuditVerificationError(
            f"the expected head {expected} is not in the log (it holds {count} entries, head {head}): "
            "entries after it were removed (the tail was truncated), or the log was rewritten")
    ref = _check_commits(repo, first_of) if repo is not None else None
    return Verified(count, head, anchor, len(first_of) if repo is not None else None, ref)


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


def _check_commits(repo: GitRepository, first_of: Mapping[str, Entry]) -> str:
    """Every commit in the repository and reachable from its default branch; returns that ref."""
    ref = repo.default_branch()
    shallow = " (this is a shallow clone: fetch the full history)" if repo.is_shallow() else ""
    for sha, entry in first_of.items():  # in order of first appearance
        if not repo.commit_exists(sha):
            raise AuditVerificationError(
                f"{entry.label}: commit {sha} is not in the repository at {repo.root}{shallow}", seq=entry.seq)
        if not repo.is_ancestor(sha, ref):
            raise AuditVerificationError(
                f"{entry.label}: commit {sha} is not reachable from {ref} in {repo.root}", seq=entry.seq)
    return ref


# --- listing ---------------------------------------------------------------------------------


def parse_since(text: str) -> datetime:
    """An ISO date or time for ``--since``; one without a zone is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ConfigurationError(
            f"--since {text!r} is not an ISO date or time (e.g. 2026-01-31, 2026-01-31T12:00, "
            "2026-01-31T12:00:00+02:00)") from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def entries(url: str, filters: Filters) -> Generator[Entry, None, None]:
    """The entries ``audit log`` lists, newest first."""
    return audit_log.read_entries(url, Entry.from_row, filters, newest_first=True)


def render_json(found: Iterable[Entry]) -> str:
    """Entries as a JSON array (every column, full values)."""
    return json.dumps([e.to_json() for e in found], indent=2, ensure_ascii=False) + "\n"


def render_text(found: Iterable[Entry]) -> str:
    """Entries as blocks: when, what, who asked (author and commit), who applied, old → new."""
    blocks = [_block(entry) for entry in found]
    return "\n".join(blocks) if blocks else "No audit log entries.\n"


def _block(entry: Entry) -> str:
    when = entry.recorded_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    commit = entry.commit_sha[:12] if entry.commit_sha else "no commit"
    if entry.uncommitted:
        commit += " (uncommitted)"
    elif entry.reason not in (None, "manifest") and entry.commit_sha:
        commit = f"value declared in {commit}"
    if entry.commit_date is not None and entry.reason in (None, "manifest"):
        commit += f" of {entry.commit_date.astimezone(UTC).strftime('%Y-%m-%d %H:%M UTC')}"
    who = "author" if entry.reason in (None, "manifest") and not entry.uncommitted else "by"
    reason = f" ({entry.reason})" if entry.reason and entry.reason != "manifest" else ""
    lines = [f"entry {entry.seq}  {when}  {entry.action} {clean(entry.address)}{reason}",
             f"  {who:<9} {clean(entry.author_name)} <{clean(entry.author_email)}>, {commit}",
             f"  applier   {clean(entry.applier)}, {clean(entry.run_id)}, source {clean(entry.source)}"]
    if entry.manifest_path:
        line = f":{entry.manifest_line}" if entry.manifest_line else ""
        lines.append(f"  manifest  {clean(entry.manifest_path)}{line}")
    before, after = entry.before or {}, entry.after or {}
    names = entry.fields or tuple(sorted(set(before) | set(after)))
    label = "  changed   "
    for name in names:
        if name in before or name in after:
            old = _value(before[name]) if entry.before is not None and name in before else "(none)"
            new = _value(after[name]) if entry.after is not None and name in after else "(none)"
            lines.append(f"{label}{clean(name)}: {old} → {new}")
        else:
            lines.append(f"{label}{clean(name)}")
        label = " " * len(label)
    return "\n".join(lines) + "\n"


def _value(value: Any) -> str:
    text = clean(canonical(plain(value)))
    return text if len(text) <= VALUE_LIMIT else text[: VALUE_LIMIT - 1] + "…"


# --- exporting -------------------------------------------------------------------------------

# The export's columns and their DuckDB types.
EXPORT_TYPES = {
    "seq": "BIGINT", "recorded_at": "TIMESTAMPTZ", "run_id": "VARCHAR", "source": "VARCHAR",
    "address": "VARCHAR", "kind": "VARCHAR", "action": "VARCHAR", "before": "JSON", "after": "JSON",
    "fields": "VARCHAR[]", "commit_sha": "VARCHAR", "author_name": "VARCHAR", "author_email": "VARCHAR",
    "uncommitted": "BOOLEAN", "manifest_path": "VARCHAR", "manifest_line": "INTEGER", "applier": "VARCHAR",
    "plan_digest": "VARCHAR", "prev_hash": "VARCHAR", "hash": "VARCHAR", "reason": "VARCHAR",
    "commit_date": "TIMESTAMPTZ", "protect": "BOOLEAN",
}


def export_format(path: Path, chosen: str | None) -> str:
    """The format asked for, else the file's suffix (``.csv``), else Parquet."""
    if chosen is not None:
        return chosen
    return "csv" if path.suffix.lower() == ".csv" else "parquet"


def export(url: str, path: Path, fmt: str) -> int:
    """Write every entry to ``path`` as Parquet (typed columns) or CSV; returns how many.

    PostgreSQL streams the log as NDJSON into a temporary file beside ``path``; DuckDB
    converts it in one statement, into a temporary file renamed over ``path`` at the end.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigurationError(f"unknown export format {fmt!r} (use {' or '.join(EXPORT_FORMATS)})")
    directory = path.resolve().parent
    if not directory.is_dir():
        raise ConfigurationError(f"cannot write {path}: {directory} is not a directory")
    try:
        with tempfile.TemporaryDirectory(prefix=".reconciler-export-", dir=directory) as work:
            ndjson = Path(work) / "audit.ndjson"
            with ndjson.open("wb") as out:
                count = audit_log.write_ndjson(url, out)
            staged = Path(work) / f"audit.{fmt}"
            _convert(ndjson, staged, fmt)
            os.replace(staged, path)
    except OSError as error:
        raise ConfigurationError(f"cannot write {path}: {error.strerror or error}") from None
    return count


def _convert(ndjson: Path, target: Path, fmt: str) -> None:
    import duckdb  # only the export needs it

    try:
        with duckdb.connect() as db:
            db.execute("SET TimeZone = 'UTC'")
            relation = db.read_json(str(ndjson), format="newline_delimited", columns=EXPORT_TYPES)
            if fmt == "parquet":
                relation.write_parquet(str(target))
            else:
                # CSV has no lists: the changed fields become a JSON array, like before/after.
                columns = ", ".join("to_json(fields)::VARCHAR AS fields" if c == "fields" else f'"{c}"'
                                    for c in EXPORT_TYPES)
                relation.project(columns).write_csv(str(target), header=True)
    except duckdb.Error as error:
        raise ReconcilerError(f"exporting the audit log with DuckDB failed: {error}") from None


# --- the catalog ------------------------------------------------------------------------------


def catalog_url(database_url: str | None, anchor: Path, announce: Callable[[str], None] | None = None) -> str:
    """The catalog the audit commands read, the embedded one started and migrated when chosen
    (``announce`` is told when it is being created)."""
    from .catalog.connection import resolve_database
    from .catalog.migrations import migrate

    url, embedded = resolve_database(database_url, anchor, announce)
    if embedded:
        migrate(url)
    return url
