"""The Plan: a frozen, serialisable value of what apply will do and what it was computed against."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from reconciler.core import kinds, ops
from reconciler.core.canonical import canonical_json as canonical_json
from reconciler.core.diff import Bookkeeping, Change, DiffResult, Finding, Location, OutOfBand
from reconciler.core.text import either
from reconciler.errors import ConfigurationError

FORMAT_VERSION = 2
MASK = "***"


@dataclass(frozen=True)
class Author:
    """Who a change is attributed to.

    For a change a commit asked for: that commit's author, its sha and its author date.
    Otherwise (``applier``): whoever applies — for an uncommitted change, or one no
    commit asked for (drift, a rotated secret, an adoption), with ``commit`` the commit
    that declares the value, if any.
    """

    name: str
    email: str
    commit: str | None
    uncommitted: bool = False
    date: str | None = None
    applier: bool = False


@dataclass(frozen=True)
class Removal:
    """How an object stopped being declared: removed from ``path`` by ``commit``; ``file_removed``
    when that file is gone as a whole, and ``moved_to`` when ``commit`` moved it out of the
    manifest tree (or to a name that is no manifest's), with the object in it."""

    path: str
    commit: str
    file_removed: bool
    moved_to: str | None = None


@dataclass(frozen=True)
class FileDigest:
    """One manifest file as a plan read it: the path objects' locations name it by, the
    sha256 of its bytes, and (once known) how many objects it declares."""

    path: str
    digest: str
    objects: int | None = None


@dataclass(frozen=True)
class Plan:
    """What apply will do, for one source, and everything it was computed against."""

    source: str
    commit: str | None
    dirty: bool
    created_at: str
    changes: tuple[Change, ...] = ()
    authors: Mapping[str, Author] = field(default_factory=dict)
    bookkeeping: tuple[Bookkeeping, ...] = ()
    unmanaged: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    targets: tuple[str, ...] = ()
    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # address → path → ${env:..}
    removals: Mapping[str, Removal] = field(default_factory=dict)
    attribution_problem: str | None = None  # why no commit could be named (a shallow clone)
    tree: str | None = None  # the manifests' path relative to the repository's root
    # Paths that held a secret at an earlier apply (address → paths): their catalog values
    # are masked in ``before`` like current secrets, after a reference is removed or changed.
    remembered: Mapping[str, frozenset[str]] = field(default_factory=dict, compare=False)
    outside: Mapping[str, OutOfBand] = field(default_factory=dict)  # address → change made outside git
    adopters: Mapping[str, Author] = field(default_factory=dict)  # address → who declared what apply adopts
    # Not part of the plan's JSON: the manifest files this plan read (path → digest and
    # object count, for an apply of the whole plan to record; empty for a saved plan) and
    # how many of them it passed over as unchanged since the last apply.
    files: Mapping[str, FileDigest] = field(default_factory=dict, compare=False)
    reused_files: int = field(default=0, compare=False)

    @property
    def summary(self) -> dict[str, int]:
        """Changes per action: every action always counted present, the others only when planned
        (so a plan without a rename is, byte for byte and by digest, what format version 2 was)."""
        counts = {op.name: 0 for op in ops.OPERATIONS if op.counted}
        for change in self.changes:
            counts[change.action] = counts.get(change.action, 0) + 1
        return counts

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Findings that block applying this plan."""
        return tuple(f for f in self.findings if f.severity == "error")

    @property
    def has_changes(self) -> bool:
        """Whether applying it would change the catalog."""
        return bool(self.changes)

    @property
    def uncommitted(self) -> tuple[str, ...]:
        """Addresses whose change comes from lines not committed to git."""
        return tuple(c.address for c in self.changes if self.author_of(c.address).uncommitted)

    def author_of(self, address: str) -> Author:
        """The author a change is attributed to (unknown when git could not say)."""
        return self.authors.get(address) or Author("unknown", "unknown", None, True)

    def digest(self) -> str:
        """SHA-256 of what the plan does and what it was computed against: names the reviewed
        plan in the audit log.

        The canonical JSON of the plan without ``created_at`` (two plans of the same tree
        and catalog are the same plan, whenever they were made) and without the name and
        email of whoever applies where a change names them (``applier``: they are whoever
        runs the command, not part of the plan).
        """
        return self._digest

    @functools.cached_property
    def _digest(self) -> str:
        body = {key: value for key, value in self._body.items() if key != "created_at"}
        body["changes"] = [_impersonal(change) for change in body["changes"]]
        body["bookkeeping"] = [_impersonal(entry) for entry in body["bookkeeping"]]
        return hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()

    def to_json(self, *, include_digest: bool = True) -> dict[str, Any]:
        """The plan as the documented JSON (schemas/plan.schema.json); secrets masked.

        Built once per plan (it is frozen); each caller gets its own top-level dict.
        """
        out = dict(self._body)
        if include_digest:
            out["digest"] = self.digest()
        return out

    @functools.cached_property
    def _body(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "format_version": FORMAT_VERSION,
            "source": self.source,
            "tree": self.tree,
            "commit": self.commit,
            "dirty": self.dirty,
            "created_at": self.created_at,
            "summary": self.summary,
            "changes": [self._change_json(c) for c in self.changes],
            "bookkeeping": [_bookkeeping_json(b, self.secrets.get(b.address, {}), self._outside_json(b.address))
                            for b in self.bookkeeping],
            "unmanaged": list(self.unmanaged),
            "findings": [_finding_json(f) for f in self.findings],
            "targets": list(self.targets),
            "attribution_problem": self.attribution_problem,
        }
        return out

    def masked_paths(self, address: str) -> dict[str, str]:
        """Every path of the object whose catalog value is a secret (now or at an earlier apply),
        with the template of the ones that hold one now (the others map to ``***``)."""
        return {**dict.fromkeys(self.remembered.get(address, ()), MASK), **self.secrets.get(address, {})}

    def secret_values(self, environ: Mapping[str, str]) -> set[str]:
        """Every secret value this plan could carry: the environment's values of its
        ``${env:...}`` references, and the catalog's values at its secret paths."""
        from reconciler.core.model import env_references

        found = {environ[name] for templates in self.secrets.values() for template in templates.values()
                 for name in env_references(template) if environ.get(name)}
        for change in self.changes:
            for path in self.masked_paths(change.address):
                parent, last = walk_path(dict(change.before or {}), path.split("."))
                value = parent.get(last) if isinstance(parent, dict) else None
                if isinstance(value, str) and value:
                    found.add(value)
        return found

    def _change_json(self, change: Change) -> dict[str, Any]:
        secrets = self.secrets.get(change.address, {})
        hidden = self.masked_paths(change.address)
        author = self.author_of(change.address)
        removal = self.removals.get(change.address)
        return {
            "address": change.address,
            "kind": change.kind,
            "action": change.action,
            "reason": change.reason,
            "asked": list(change.asked),
            "before": _masked(change.before, hidden, MASK),
            "after": _masked(change.after, secrets, None),
            "fields": list(change.fields),
            "paths": list(change.paths),
            "source": _location_json(change.location),
            "author": _author_json(author),
            "removal": None if removal is None else _removal_json(removal),
            "against": change.against,
            "protect": change.protect,
            "drift": list(change.drift),
            "desired": _masked(change.desired, secrets, None),
            "outside": self._outside_json(change.address),
            # Written only for a rename: every other change is, byte for byte and by digest,
            # what readers of format version 2 without the key wrote and read.
            **({"from": change.renamed_from} if change.renamed_from is not None else {}),
        }

    def _outside_json(self, address: str) -> dict[str, Any] | None:
        found = self.outside.get(address)
        if found is None:
            return None
        adopter = self.adopters.get(address)
        return {"fields": list(found.fields), "before": dict(found.before),
                "after": None if found.after is None else dict(found.after), "adopted": list(found.adopted),
                "by": found.by, "at": found.at, "evidence": found.evidence,
                "adopted_by": None if adopter is None else _author_json(adopter)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], *, check_digest: bool = True) -> Plan:
        """Read a saved plan back; refuses other format versions and (with ``check_digest``)
        files whose digest does not match what they hold."""
        if data.get("format_version") != FORMAT_VERSION:
            raise ConfigurationError(
                f"unsupported plan format_version {data.get('format_version')!r} (expected {FORMAT_VERSION})"
            )
        try:
            plan = cls(
                source=data["source"], commit=data["commit"], dirty=data["dirty"],
                created_at=data["created_at"],
                changes=tuple(_change_from(c) for c in data["changes"]),
                authors={c["address"]: Author(**c["author"]) for c in data["changes"]},
                removals={c["address"]: Removal(**c["removal"]) for c in data["changes"] if c.get("removal")},
                attribution_problem=data.get("attribution_problem"), tree=data.get("tree"),
                bookkeeping=tuple(_bookkeeping_from(b) for b in data["bookkeeping"]),
                unmanaged=tuple(data["unmanaged"]),
                findings=tuple(_finding_from(f) for f in data["findings"]),
                targets=tuple(data.get("targets", [])),
                secrets=_secrets_from(data),
                outside={e["address"]: _outside_from(e["outside"]) for e in [*data["changes"], *data["bookkeeping"]]
                         if e.get("outside")},
                adopters={e["address"]: Author(**e["outside"]["adopted_by"])
                          for e in [*data["changes"], *data["bookkeeping"]]
                          if e.get("outside") and e["outside"].get("adopted_by")},
            )
        except (KeyError, TypeError, ValueError) as error:
            raise ConfigurationError(f"the plan file is not a reconciler plan: {error}") from None
        if check_digest and data.get("digest") != plan.digest():
            raise ConfigurationError("the plan file was modified after it was written (its digest does not "
                                     "match its content); make a new plan")
        return plan

    def narrowed(self, targets: tuple[str, ...]) -> Plan:
        """The plan limited to the given addresses (``--target``) and what they need: a
        dataset's storage target, a record's linked dataset (and so on), when the plan
        creates, updates or restores those too; each one pulled in is noted."""
        if not targets:
            return self
        wanted, pulled = _needed(self.changes, targets)
        notes = tuple(Finding(address, "note", f"included because {needer} needs it (--target)",
                              next((c.location for c in self.changes if c.address == address), None))
                      for address, needer in pulled.items())
        return replace(
            self,
            changes=tuple(c for c in self.changes if c.address in wanted),
            bookkeeping=tuple(b for b in self.bookkeeping if b.address in wanted),
            unmanaged=tuple(a for a in self.unmanaged if a in wanted),
            findings=tuple(f for f in self.findings if f.address in wanted or not f.address) + notes,
            targets=targets,
            outside={a: o for a, o in self.outside.items() if a in wanted},
            adopters={a: o for a, o in self.adopters.items() if a in wanted},
        )


def _needed(changes: tuple[Change, ...], targets: tuple[str, ...]) -> tuple[set[str], dict[str, str]]:
    """The targets and every change they depend on (address → the address that needed it)."""
    by_address = {c.address: c for c in changes}
    wanted, pulled = set(targets), {}
    queue = list(targets)
    while queue:
        address = queue.pop()
        change = by_address.get(address)
        spec = kinds.BY_NAME.get(change.kind) if change is not None else None
        if change is None or change.after is None or spec is None:
            continue
        for need in spec.needs(change.after):
            needed = by_address.get(need)
            if need not in wanted and needed is not None and not _removes(needed):
                wanted.add(need)
                pulled[need] = address
                queue.append(need)
    return wanted, pulled


def _removes(change: Change) -> bool:
    """Whether the change takes its object out of use (so nothing can need it applied)."""
    op = ops.named(change.action)
    return op is None or op.removes


def from_diff(result: DiffResult, *, source: str, commit: str | None, dirty: bool, created_at: str,
              authors: Mapping[str, Author], secrets: Mapping[str, Mapping[str, str]],
              extra_findings: tuple[Finding, ...] = (), files: Mapping[str, FileDigest] | None = None,
              reused_files: int = 0, removals: Mapping[str, Removal] | None = None,
              attribution_problem: str | None = None, tree: str | None = None,
              remembered: Mapping[str, frozenset[str]] | None = None,
              adopters: Mapping[str, Author] | None = None) -> Plan:
    """Wrap a diff result with its provenance into a Plan."""
    return Plan(source=source, commit=commit, dirty=dirty, created_at=created_at, tree=tree,
                remembered=dict(remembered or {}), outside=dict(result.outside), adopters=dict(adopters or {}),
                files=dict(files or {}), reused_files=reused_files, removals=dict(removals or {}),
                attribution_problem=attribution_problem,
                changes=result.changes, authors=dict(authors), bookkeeping=result.bookkeeping,
                unmanaged=result.unmanaged, findings=tuple(sorted(result.findings + extra_findings,
                                                                  key=lambda f: (f.address, f.message))),
                secrets=dict(secrets))


def _removal_json(removal: Removal) -> dict[str, Any]:
    out: dict[str, Any] = {"path": removal.path, "commit": removal.commit, "file_removed": removal.file_removed}
    if removal.moved_to is not None:
        # Written only when there is a move: every other plan is, byte for byte and by digest,
        # what readers of format version 2 without the key wrote and read.
        out["moved_to"] = removal.moved_to
    return out


def mask(fields: Mapping[str, Any] | None, secrets: Mapping[str, str],
         replacement: str | None) -> dict[str, Any] | None:
    """The fields with every secret value replaced.

    ``secrets`` maps dotted paths inside the fields (``config.password``) to the
    ``${env:NAME}`` text the manifest wrote; ``replacement`` None puts that text
    back (safe to show and to save), a string replaces the value outright.
    """
    if fields is None:
        return None
    out = json.loads(json.dumps(fields))
    for path, template in secrets.items():
        parent, last = walk_path(out, path.split("."))
        if isinstance(parent, dict) and last in parent:
            parent[last] = template if replacement is None else replacement
        elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
            parent[int(last)] = template if replacement is None else replacement
    return dict(out)


def _masked(fields: Mapping[str, Any] | None, secrets: Mapping[str, str],
            replacement: str | None) -> Mapping[str, Any] | None:
    """``mask`` for the plan's JSON: fields without secrets are shown as they are (read-only), not copied."""
    return mask(fields, secrets, replacement) if secrets else fields


def walk_path(node: Any, parts: list[str]) -> tuple[Any, str]:
    """The container holding the last part of a dotted path (dict keys, list indexes)."""
    for part in parts[:-1]:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None, parts[-1]
    return node, parts[-1]


def _location_json(location: Location | None) -> dict[str, Any] | None:
    if location is None:
        return None
    return {"path": location.path, "line": location.line, "end_line": location.end_line}


def _location_from(data: Mapping[str, Any] | None) -> Location | None:
    return Location(data["path"], data["line"], data["end_line"]) if data else None


def _finding_json(finding: Finding) -> dict[str, Any]:
    return {"address": finding.address, "severity": finding.severity, "message": finding.message,
            "source": _location_json(finding.location)}


def _finding_from(data: Mapping[str, Any]) -> Finding:
    return Finding(data["address"], data["severity"], data["message"], _location_from(data.get("source")))


def _bookkeeping_json(entry: Bookkeeping, secrets: Mapping[str, str],
                      outside: dict[str, Any] | None) -> dict[str, Any]:
    return {"address": entry.address, "kind": entry.kind, "reason": entry.reason,
            "desired": _masked(entry.desired, secrets, None), "source": _location_json(entry.location),
            "protect": entry.protect, "against": entry.against, "outside": outside}


def _author_json(author: Author) -> dict[str, Any]:
    return {"name": author.name, "email": author.email, "commit": author.commit,
            "uncommitted": author.uncommitted, "date": author.date, "applier": author.applier}


def _impersonal(entry: dict[str, Any]) -> dict[str, Any]:
    """A change or bookkeeping entry of the plan's JSON with whoever applies left unnamed."""
    author, outside = entry.get("author"), entry.get("outside")
    if author is not None and author["applier"]:
        entry = {**entry, "author": {**author, "name": None, "email": None}}
    if outside is not None and outside["adopted_by"] is not None and outside["adopted_by"]["applier"]:
        entry = {**entry, "outside": {**outside, "adopted_by": {**outside["adopted_by"], "name": None,
                                                                  "email": None}}}
    return entry


def _outside_from(data: Mapping[str, Any]) -> OutOfBand:
    return OutOfBand(tuple(data["fields"]), dict(data["before"]),
                     None if data["after"] is None else dict(data["after"]), tuple(data["adopted"]),
                     data["by"], data["at"], data["evidence"])


def _bookkeeping_from(data: Mapping[str, Any]) -> Bookkeeping:
    location = _location_from(data["source"])
    assert location is not None
    return Bookkeeping(data["address"], data["kind"], data["reason"], data["desired"], location,
                       data["protect"], data["against"])


def _change_from(data: Mapping[str, Any]) -> Change:
    return Change(
        address=data["address"], kind=data["kind"], action=data["action"], before=data["before"],
        after=data["after"], fields=tuple(data["fields"]), desired=data["desired"],
        location=_location_from(data["source"]), against=data["against"], protect=data["protect"],
        drift=tuple(data.get("drift", [])), paths=tuple(data.get("paths", [])),
        reason=data.get("reason", "manifest"), asked=tuple(data.get("asked", [])),
        renamed_from=data.get("from"),
    )


def _secrets_from(data: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """Secret paths are recovered from the ``${env:NAME}`` texts a saved plan keeps in place of values."""
    out: dict[str, dict[str, str]] = {}
    for entry in [*data["changes"], *data["bookkeeping"]]:
        found: dict[str, str] = {}
        fields = entry.get("after") or entry.get("desired") or {}
        spec = kinds.BY_NAME.get(entry.get("kind"))
        if spec is not None and spec.secret_field is not None:  # only that field takes ${env:...}
            _collect_templates(fields.get(spec.secret_field) or {}, spec.secret_field + ".", found)
        if found:
            out[entry["address"]] = found
    return out


def _collect_templates(node: Any, prefix: str, found: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            _collect_templates(value, f"{prefix}{key}.", found)
    elif isinstance(node, str) and node.startswith("${env:") and node.endswith("}"):
        found[prefix.rstrip(".")] = node


# --- the kinds in the plan's JSON Schema ---------------------------------------------------


def with_kinds(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The plan's JSON Schema (schemas/plan.schema.json) with every part that names kinds made
    from the registry: the address pattern, the kind and field enums, and each kind's rule that
    a change's address starts with its prefix. A saved plan is checked against this, so a kind
    added to the registry is accepted without editing the file; the committed file is this
    function's output (a test holds it so)."""
    out: dict[str, Any] = json.loads(json.dumps(schema))  # a deep copy, plain JSON
    definitions = out["$defs"]
    forms = [f"`{spec.form}`" for spec in kinds.REGISTRY]
    notes = [f"the {spec.identity[-1]} may contain `/`, the {' and '.join(spec.identity[:-1])} cannot"
             for spec in kinds.REGISTRY if len(spec.identity) > 1]
    definitions["address"].update(
        description=f"One catalog object: {either(forms)}"
                    + (f" ({'; '.join(notes)})." if notes else "."),
        pattern="^(" + "|".join(spec.prefix + "[^/]+/" * (len(spec.identity) - 1)
                                for spec in kinds.REGISTRY) + ").+")
    definitions["kind"]["enum"] = list(kinds.NAMES)
    renamed = [spec for spec in kinds.REGISTRY if "renamed_from" in spec.model.model_fields]
    fields = [*dict.fromkeys(name for spec in kinds.REGISTRY for name in spec.fields), "protect"]
    fields += [name for spec in renamed for name in spec.identity if name not in fields]
    per_kind = " ".join(f"{spec.plural.capitalize()}: {', '.join(spec.fields)}." for spec in kinds.REGISTRY)
    identities = " and ".join(f"`{name}` (a {spec.noun}'s)" for spec in renamed for name in spec.identity)
    definitions["field"].update(
        enum=fields,
        description=f"A managed field, in manifest (camelCase) terms. {per_kind} `protect` is the reconciler's "
                    f"own flag." + (f" {identities} {'is' if len(renamed) == 1 else 'are'} a rename's identity."
                                    if renamed else ""))
    rules = definitions["change"]["allOf"]
    others = [rule for rule in rules if "kind" not in rule.get("if", {}).get("properties", {})]
    definitions["change"]["allOf"] = [
        {"if": {"properties": {"kind": {"const": spec.name}}},
         "then": {"properties": {"address": {"pattern": f"^{spec.prefix}"}}}} for spec in kinds.REGISTRY
    ] + others
    return out
