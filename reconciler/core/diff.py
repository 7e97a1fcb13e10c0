"""The pure diff: desired + live + last applied → changes, with the three-way merge of JSON fields."""

from __future__ import annotations

import gc
import json
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

from reconciler.core import kinds, ops
from reconciler.core.canonical import canonical_json
from reconciler.core.service_rules import normalize_tags as normalize_tags  # the metastore's rule, one copy

# Kinds and actions as the plan JSON names them (SPEC section 4).
KINDS = kinds.NAMES
ACTIONS = ops.NAMES
# Why a change is made: a commit asked for it; it reverts a change made outside git; a value
# resolved from ${env:...} changed; or an object the catalog already had is taken over.
REASONS = ("manifest", "drift", "secret", "adoption")
# How a backend writes applied fields as text (``Applied.text``), given to the diff.
TextOf = Callable[[Any], str]

# Views of the kinds' registry (core/kinds/) by kind name, for the modules that look a
# field up without its kind: the managed fields, their defaults, and the fields merged key
# by key or compared as sets (the same rule wherever a field of that name appears).
FIELDS: Mapping[str, tuple[str, ...]] = {spec.name: spec.fields for spec in kinds.REGISTRY}
DEFAULTS: Mapping[str, Mapping[str, Any]] = {spec.name: spec.defaults for spec in kinds.REGISTRY}
MERGED_FIELDS = frozenset(name for spec in kinds.REGISTRY for name in spec.merged)
SET_FIELDS = frozenset(name for spec in kinds.REGISTRY for name in spec.sets)


@dataclass(frozen=True)
class Location:
    """Where an object is defined: file (as shown to users) and its line range."""

    path: str
    line: int
    end_line: int
    also: tuple[tuple[int, int], ...] = ()  # further line ranges that define it (a RecordSet's defaults)


@dataclass(frozen=True)
class Desired:
    """An object as the manifest tree declares it; ``fields`` holds only what the manifest sets."""

    address: str
    kind: str
    fields: Mapping[str, Any]
    location: Location
    protect: bool = False
    purge: bool = False
    secret_paths: frozenset[str] = frozenset()  # config keys whose values came from ${env:...}
    recorded: Mapping[str, Any] | None = None  # ``fields`` as recorded (${env:...} texts, no secrets)
    renamed_from: str | None = None  # ``renamedFrom``: the address it had

    @property
    def record(self) -> Mapping[str, Any]:
        """What the reconciler records as applied: never a resolved secret."""
        return self.recorded if self.recorded is not None else self.fields


@dataclass(frozen=True, slots=True)
class Live:
    """An object as the catalog holds it now, with the token optimistic concurrency compares.

    ``in_sync`` is the reader's word that every field the last apply set still holds
    the applied value (checked in the catalog itself); it lets an unchanged object be
    passed over without decoding its fields.
    """

    address: str
    kind: str
    fields: Mapping[str, Any]
    token: str  # records: their version; datasets and storage targets: updated_at to the millisecond
    updated_at: str | None = None
    updated_by: str | None = None
    in_sync: bool = False
    policy_updated_at: str | None = None  # a dataset's retention policy moves on its own clock


@dataclass(frozen=True, slots=True)
class Applied:
    """The reconciler's record of what it last applied to an object, and for which source.

    ``text`` is the applied fields as the backend stored them, when the reader has it:
    equal to the backend's ``text_of`` (``CatalogState.text_of``) of the manifest's
    fields exactly when they are the same values.
    """

    address: str
    kind: str
    source: str
    fields: Mapping[str, Any]
    protect: bool = False
    commit: str | None = None
    path: str | None = None
    line: int | None = None
    end_line: int | None = None
    text: str | None = None
    declared: bool = True  # false once archived because no manifest declares it any more
    secret_paths: frozenset[str] = frozenset()  # every path that ever held a secret (``config.password``)


@dataclass(frozen=True)
class Change:
    """One planned change to one catalog object (``before``/``after`` hold every managed field)."""

    address: str
    kind: str
    action: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    fields: tuple[str, ...]
    desired: Mapping[str, Any] | None  # what the manifest asked: next run's "last applied"
    location: Location | None
    against: str | None  # the live token the plan saw; None = the object must not exist
    protect: bool = False
    drift: tuple[str, ...] = ()  # fields changed outside git since the last apply
    paths: tuple[str, ...] = ()  # field-level paths that differ (metadata.unit), from the real values
    reason: str = "manifest"  # manifest | drift | secret | adoption: why the change is made (REASONS)
    asked: tuple[str, ...] = ()  # declared fields the manifest changed since the last apply
    renamed_from: str | None = None  # a rename: the address it had (the plan JSON's "from")

    @property
    def op(self) -> type[ops.Operation]:
        """The operation ``action`` names (core/ops.py): what renderers and executors dispatch on."""
        return ops.of(self.action)


@dataclass(frozen=True)
class Bookkeeping:
    """Management recorded without a catalog change: adoption as-is, or refreshed applied state."""

    address: str
    kind: str
    reason: str  # "adopt" | "refresh"
    desired: Mapping[str, Any]
    location: Location
    protect: bool
    against: str | None


@dataclass(frozen=True)
class OutOfBand:
    """A change made to a managed object outside git since the reconciler last applied it.

    ``fields`` are the managed fields whose catalog value is no longer the one last applied
    (keys someone else owns in a JSON field do not count); ``before`` holds them as applied,
    ``after`` as the catalog holds them now (None: the object is gone). Of those fields,
    ``adopted`` are the ones the tree now declares as the catalog has them: apply adopts
    them instead of reverting them. ``by`` and ``at`` say who made the change and when, as
    far as the catalog tells (``evidence`` says where that was read).
    """

    fields: tuple[str, ...]
    before: Mapping[str, Any]
    after: Mapping[str, Any] | None
    adopted: tuple[str, ...] = ()
    by: str | None = None
    at: str | None = None
    evidence: str | None = None

    @property
    def reverted(self) -> tuple[str, ...]:
        """The fields apply sets back to what the tree declares."""
        return tuple(name for name in self.fields if name not in self.adopted)


@dataclass(frozen=True)
class Finding:
    """A problem that blocks the plan (``error``) or a note worth showing (``note``)."""

    address: str
    severity: str  # "error" blocks the plan; "drift" and "note" inform
    message: str
    location: Location | None = None


@dataclass(frozen=True)
class DiffResult:
    """Everything the diff found, by kind (storage targets, datasets, records), then address."""

    changes: tuple[Change, ...] = ()
    bookkeeping: tuple[Bookkeeping, ...] = ()
    unmanaged: tuple[str, ...] = ()
    findings: tuple[Finding, ...] = ()
    outside: Mapping[str, OutOfBand] = field(default_factory=dict)  # address → change made outside git


def comparable_text(field_name: str, value: Any) -> str:
    """The form two values are compared in: canonical JSON of the plain value, tags as a sorted set.

    Key order never matters, integral floats equal their integers, and ``true``
    never equals ``1`` — so nothing shows a perpetual diff, and nothing real hides.
    """
    if field_name in SET_FIELDS and value is not None:
        value = sorted(set(normalize_tags(value)))
    return canonical_json(_plain(value))


def _plain(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        # The integer the float's shortest decimal names (1e23 → 10**23), which is what
        # jsonb stores and returns, not the float's binary value (99999999999999991611392).
        return int(Decimal(repr(value)))
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def same(field_name: str, left: Any, right: Any) -> bool:
    """Whether two values of a field mean the same thing.

    Values that are equal and of the same JSON types all the way down are the same
    without serialising anything; only the rest (tags in another order, ``1.0``
    against ``1``, ``true`` against ``1``) go through the canonical form.
    """
    if left == right and same_types(left, right):
        return True
    return comparable_text(field_name, left) == comparable_text(field_name, right)


def same_types(left: Any, right: Any) -> bool:
    """Whether two values that compare equal also have the same JSON types throughout.

    Python's ``==`` says ``True == 1``; the contract says ``true`` never equals ``1``.
    Scalars and strings answer at once; containers are walked only when equal.
    """
    kind = type(left)
    if kind is not type(right):
        return False
    if kind is dict:
        return all(same_types(value, right[key]) for key, value in left.items())
    if kind is list or kind is tuple:
        return all(same_types(a, b) for a, b in zip(left, right))
    return True


def changed_paths(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None,
                  fields: tuple[str, ...]) -> list[str]:
    """Field-level paths that differ (``metadata.unit``, ``tags``), for reviewers."""
    from deepdiff import (
        DeepDiff,  # imported only when something changed: it takes a third of a second
    )

    paths: list[str] = []
    for name in fields:
        old = (before or {}).get(name)
        new = (after or {}).get(name)
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            tree = DeepDiff(_plain(old), _plain(new), view="tree")
            found = {name + _dotted(level.path()) for levels in tree.values() for level in levels}
            paths.extend(sorted(found))
        else:
            paths.append(name)
    return paths


def _dotted(deepdiff_path: str) -> str:
    """``root['a']['b'][0]`` → ``.a.b[0]``."""
    out = deepdiff_path.removeprefix("root")
    out = out.replace("['", ".").replace("']", "")
    return out


def merge_object(desired: Mapping[str, Any] | None, applied: Mapping[str, Any] | None,
                 live: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Three-way merge of one JSON object field.

    Keys the tree sets take the tree's value; keys applied before and now gone from
    the tree are removed; keys only the live object has belong to someone else and
    stay. ``None`` (no object) results only when nothing remains and the tree set none.
    """
    desired = desired or {}
    applied = applied or {}
    merged = {k: v for k, v in (live or {}).items() if k not in applied}
    merged.update(desired)
    return merged


def target_fields(kind: str, desired: Desired, applied: Applied | None,
                  live: Live | None) -> dict[str, Any]:
    """The values every managed field should have after apply."""
    spec = kinds.kind(kind)
    live_fields = live.fields if live else {}
    applied_fields = applied.fields if applied else {}
    target: dict[str, Any] = {}
    for name in spec.fields:
        if name in spec.merged:
            empty = spec.merged[name]
            if name in desired.fields or name in applied_fields or live_fields.get(name) is not None:
                merged = merge_object(desired.fields.get(name), applied_fields.get(name),
                                      live_fields.get(name))
                keep_none = empty is None and not merged and desired.fields.get(name) is None
                target[name] = None if keep_none else merged
            else:
                target[name] = empty
        elif name in desired.fields:
            value = desired.fields[name]
            target[name] = normalize_tags(value) if name in spec.sets else value
        elif name in spec.defaults:
            target[name] = spec.defaults[name]
        elif name in applied_fields or live is None:
            target[name] = None  # applied before and now dropped (or a new object): cleared
        else:
            target[name] = live_fields.get(name)  # never managed: left as the catalog has it
    return target


def is_archived(kind: str, fields: Mapping[str, Any]) -> bool:
    """Whether an object is in its archived state (dataset inactive, record soft-deleted)."""
    return kinds.kind(kind).is_archived(fields)


def archived(kind: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields with the archived state set."""
    return kinds.kind(kind).archived(fields)


def _action(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    was, will = is_archived(kind, before), is_archived(kind, after)
    if will and not was:
        return ops.Archive.name
    if was and not will:
        return ops.Restore.name
    return ops.Update.name


def _changed(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(name for name in kinds.kind(kind).fields if not same(name, before.get(name), after.get(name)))


def _outside(kind: str, live: Live, applied: Applied, skip: frozenset[str],
             secret_paths: frozenset[str] = frozenset()) -> tuple[str, ...]:
    """Managed fields whose live value is no longer what the reconciler last left there: the
    value it applied, or for a field with a default the manifest left out, that default.

    In a JSON object field only the keys the reconciler applied count (the others belong to
    someone else); fields in ``skip`` never do, and paths that hold or held a secret (recorded
    as ``${env:...}`` text) are left out of the comparison.
    """
    out = []
    spec = kinds.kind(kind)
    for name in spec.fields:
        if name in skip:
            continue
        mine = applied.fields[name] if name in applied.fields else spec.defaults.get(name, _ABSENT)
        if mine is _ABSENT:
            continue
        mine = _without(mine, name, secret_paths)
        theirs = _without(live.fields.get(name), name, secret_paths)
        if same(name, mine, theirs):
            continue
        if name in spec.merged:
            ours, now = mine or {}, theirs or {}
            if all(same(name, {k: ours[k]}, {k: now.get(k)}) for k in ours):
                continue  # only keys someone else owns differ
        out.append(name)
    return tuple(out)


def _out_of_band(kind: str, live: Live | None, applied: Applied, fields: tuple[str, ...],
                 adopted: tuple[str, ...]) -> OutOfBand:
    """The change made outside git to ``fields``, with who and when as the live row tells."""
    spec = kinds.kind(kind)
    before = {name: applied.fields[name] if name in applied.fields else spec.defaults.get(name)
              for name in fields}
    if live is None:
        return OutOfBand(fields, before, None, adopted)
    after = {name: live.fields.get(name) for name in fields}
    for name in (name for name in spec.merged if name in fields):
        # The whole object as it was: the keys someone else owns as they are, ours as applied.
        before[name] = {**(after[name] or {}), **(before[name] or {})}
    at = live.updated_at
    if live.policy_updated_at is not None and "retention" in fields:
        own = live.policy_updated_at
        at = own if set(fields) == {"retention"} or at is None else max(own, at)
    return OutOfBand(fields, before, after, adopted, live.updated_by, at)


def drift_message(outside: OutOfBand, *, declared: bool = True) -> str:
    """The plan's drift finding for a change made outside git: what, who, when, and what apply does."""
    who = f" by {outside.by}" if outside.by else ""
    when = f" at {outside.at}" if outside.at else ""
    source = f" ({outside.evidence})" if outside.evidence else ""
    unknown = "" if outside.by else " (the catalog does not record by whom)"
    if outside.after is None:
        return f"deleted outside git{who}{when}{source}{unknown}; apply creates it again"
    what = f"{', '.join(outside.fields)} changed outside git{who}{when}{source}{unknown}"
    if not declared:
        return f"{what}; no manifest declares it any more, so apply archives it as it is"
    if not outside.adopted:
        return f"{what}; apply reverts it"
    if not outside.reverted:
        return f"{what}; the tree now declares the same value, so apply adopts it"
    return (f"{what}; apply reverts {', '.join(outside.reverted)} and adopts {', '.join(outside.adopted)}, "
            "which the tree now declares")


def unchanged(desired: Desired, live: Live, applied: Applied, text_of: TextOf | None) -> bool:
    """The rerun's common case, decided without decoding the catalog's JSON.

    True only when the full comparison would find nothing to do: the reader vouched
    that the catalog still holds every applied value (``live.in_sync``), the tree asks
    for exactly what was applied (the same text, as the backend's ``text_of`` writes it),
    protection and file are the same, and every field the manifest leaves out is at its
    default. Without ``text_of`` (a backend that keeps no text) it is never decided here.
    """
    if text_of is None or not live.in_sync or applied.text is None or desired.purge:
        return False
    if applied.protect != desired.protect or _moved(applied, desired.location):
        return False
    if applied.text != text_of(desired.record) or desired.record is not desired.fields:
        return False
    spec = kinds.kind(desired.kind)
    for name, default in spec.defaults.items():
        if name not in desired.fields and not same(name, live.fields.get(name), default):
            return False
    for name, empty in spec.merged.items():
        # A merged field the manifest leaves out takes the catalog's value, except where
        # the catalog holds the other empty form: an absent object where the field's empty
        # value is {} (metadata), an empty one where it is none at all (retention).
        if name not in desired.fields and live.fields.get(name) == ({} if empty is None else None):
            return False
    return True


# The catalog's stored flag decides, not the commit: lifting protection takes an apply of its own.
_STILL_PROTECTED = ("it is protected in the catalog (the last apply set protect: true); lift protection first: "
                    "apply protect: false on its own, then {verb} it in a later apply")


def _plan_declared(desired: Desired, live: Live | None, applied: Applied | None,
                   out: _Collector, text_of: TextOf | None = None) -> None:
    kind = desired.kind
    if live is not None and applied is not None and unchanged(desired, live, applied, text_of):
        return
    if live is None:
        if desired.purge:
            out.note(desired.address, "purge: true, but it does not exist in the catalog; nothing to do",
                     desired.location)
            return
        managed = kinds.kind(kind).fields
        if applied is not None:  # it was applied, and is gone: deleted outside git
            out.observed(desired, _out_of_band(kind, None, applied, tuple(n for n in managed
                                                                          if n in applied.fields), ()))
        after = target_fields(kind, desired, None, None)
        out.changes.append(Change(desired.address, kind, ops.Create.name, None, after, managed,
                                  dict(desired.record), desired.location, None, desired.protect,
                                  paths=managed))
        return
    outside = _outside(kind, live, applied, frozenset(), _secret_paths(desired, applied)) \
        if applied is not None else ()
    if desired.purge:
        if desired.protect:
            out.error(desired.address, "protect and purge are both true; set protect: false to purge it",
                      desired.location)
            return
        if applied is not None and applied.protect:
            out.error(desired.address, _STILL_PROTECTED.format(verb="purge"), desired.location)
            return
        if outside:
            assert applied is not None
            out.observed(desired, _out_of_band(kind, live, applied, outside, ()))
        out.changes.append(Change(desired.address, kind, ops.Purge.name, _purged(kind, live, applied), None, (),
                                  dict(desired.record), desired.location, live.token, False))
        return
    after = target_fields(kind, desired, applied, live)
    changed = _changed(kind, live.fields, after)
    action = _action(kind, live.fields, after)
    if action == ops.Archive.name and desired.protect:
        out.error(desired.address, "it is protected (protect: true); set protect: false to archive it",
                  desired.location)
        return
    if action == ops.Archive.name and applied is not None and applied.protect:
        out.error(desired.address, _STILL_PROTECTED.format(verb="archive"), desired.location)
        return
    if outside:
        assert applied is not None
        out.observed(desired, _out_of_band(kind, live, applied, outside,
                                           tuple(n for n in outside if n not in changed)))
    protect_moves = applied is not None and applied.protect != desired.protect
    if changed or protect_moves:
        fields = changed + (("protect",) if protect_moves else ())
        drift = tuple(name for name in changed if name in outside)
        asked = _asked(desired, applied, fields)
        out.changes.append(Change(desired.address, kind, action, dict(live.fields), after, fields,
                                  dict(desired.record), desired.location, live.token, desired.protect,
                                  drift, tuple(changed_paths(live.fields, after, changed)),
                                  _reason(desired, live, applied, asked, changed), asked))
    elif applied is None:
        out.bookkeeping.append(Bookkeeping(desired.address, kind, "adopt", dict(desired.record),
                                           desired.location, desired.protect, live.token))
    elif not _same_record(applied.fields, desired.record) or _moved(applied, desired.location):
        out.bookkeeping.append(Bookkeeping(desired.address, kind, "refresh", dict(desired.record),
                                           desired.location, desired.protect, live.token))


_ABSENT: Any = object()


def _asked(desired: Desired, applied: Applied | None, fields: tuple[str, ...]) -> tuple[str, ...]:
    """The changed fields the manifest itself changed since the last apply (all of them for an
    object never applied: its declaration is what asks)."""
    if applied is None:
        return fields
    out = []
    for name in fields:
        if name == "protect":
            out.append(name)  # protect moves only when the manifest moved it
            continue
        mine, before = desired.record.get(name, _ABSENT), applied.fields.get(name, _ABSENT)
        if (mine is _ABSENT) != (before is _ABSENT) or (mine is not _ABSENT and not same(name, mine, before)):
            out.append(name)
    return tuple(out)


def _reason(desired: Desired, live: Live, applied: Applied | None, asked: tuple[str, ...],
            changed: tuple[str, ...]) -> str:
    """Why an existing object changes: the manifest asked, it is being adopted, or nothing in
    git moved and the catalog did (drift) or only a secret's resolved value did."""
    if applied is None:
        return "adoption"
    if asked:
        return "manifest"
    secret_fields = {path.split(".", 1)[0] for path in desired.secret_paths}
    if changed and all(name in secret_fields for name in changed):
        return "secret" if all(_only_secrets_moved(desired, live, applied, name) for name in changed) else "drift"
    return "drift"


def _only_secrets_moved(desired: Desired, live: Live, applied: Applied, name: str) -> bool:
    """Whether the live field equals what was applied once its secret values are put back as
    their ``${env:...}`` texts: then only a resolved secret differs, not what the catalog holds."""
    value = json.loads(json.dumps(live.fields.get(name)))
    prefix = name + "."
    for path in desired.secret_paths:
        if path.startswith(prefix):
            _put(value, path[len(prefix):].split("."), _at(desired.record.get(name), path[len(prefix):].split(".")))
    return same(name, value, applied.fields.get(name))


def _at(node: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def _put(node: Any, parts: list[str], value: Any) -> None:
    parent = _at(node, parts[:-1])
    last = parts[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and last.isdigit() and int(last) < len(parent):
        parent[int(last)] = value


def _purged(kind: str, live: Live, applied: Applied | None) -> dict[str, Any]:
    """What a purge deletes, as the plan shows it: the values of its secret field (a storage
    target's config) that the last apply wrote from ``${env:...}`` are masked, even when the
    purging manifest no longer names the variables."""
    before = dict(live.fields)
    secret = kinds.kind(kind).secret_field
    if secret is None or applied is None or not isinstance(before.get(secret), Mapping):
        return before
    recorded = applied.fields.get(secret)
    if isinstance(recorded, Mapping):
        before[secret] = _mask_like(before[secret], recorded)
    return before


def _mask_like(value: Any, recorded: Any) -> Any:
    """``value`` with ``***`` wherever ``recorded`` (what was applied) holds a ``${env:...}`` text."""
    if isinstance(recorded, str):
        return "***" if "${env:" in recorded else value
    if isinstance(value, Mapping) and isinstance(recorded, Mapping):
        return {k: _mask_like(v, recorded[k]) if k in recorded else v for k, v in value.items()}
    if isinstance(value, list) and isinstance(recorded, list):
        return [_mask_like(v, recorded[i]) if i < len(recorded) else v for i, v in enumerate(value)]
    return value


def _refuse_purges_in_use(out: _Collector, live: Mapping[str, Live],
                          stored_on: Mapping[str, Collection[str]]) -> None:
    """A storage target is purged only when no dataset uses it once the plan is applied: none
    names it as its storage target (in the catalog, or declared in the tree) and none that
    stays has partitions stored on it. Otherwise the purge is an error naming every such dataset."""
    target, dataset = kinds.storage_target.SPEC, kinds.dataset.SPEC
    purges = [c for c in out.changes if c.kind == target.name and c.op is ops.Purge]
    if not purges:
        return
    planned = {c.address: c for c in out.changes if c.kind == dataset.name}
    gone = {address for address, change in planned.items() if change.op is ops.Purge}
    pointing: dict[str, set[str]] = {}
    for address in {a for a, obj in live.items() if obj.kind == dataset.name} | set(planned):
        change = planned.get(address)
        fields = change.after if change is not None else live[address].fields
        name = (fields or {}).get("storageTarget")
        if name is not None:
            pointing.setdefault(f"{target.prefix}{name}", set()).add(address)
    for change in purges:
        named = sorted(pointing.get(change.address, ()))
        stored = sorted(set(stored_on.get(change.address, ())) - gone - set(named))
        if not named and not stored:
            continue
        uses = ([f"{', '.join(named)} (its storageTarget)"] if named else []) + (
            [f"{', '.join(stored)} (partitions stored on it)"] if stored else [])
        out.changes.remove(change)
        out.error(change.address, f"cannot be purged while datasets use it: {'; '.join(uses)}; point them at "
                  "another storage target, or purge them, first", change.location)


def _same_record(applied: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    return set(applied) == set(desired) and all(same(k, applied[k], desired[k]) for k in desired)


def _secret_paths(desired: Desired, applied: Applied | None) -> frozenset[str]:
    """Paths that hold a secret now or ever did."""
    return desired.secret_paths | (applied.secret_paths if applied is not None else frozenset())


def _without(value: Any, name: str, paths: frozenset[str]) -> Any:
    """``value`` (field ``name``) with the values at secret ``paths`` taken out, for comparison."""
    inside = [path[len(name) + 1:].split(".") for path in paths if path.startswith(name + ".")]
    if not inside or not isinstance(value, Mapping | list):
        return value
    copy = json.loads(json.dumps(value))
    for parts in inside:
        _put(copy, parts, None)
    return copy


def _moved(applied: Applied, location: Location) -> bool:
    """Moved to another file: worth recording, so a later removal is traced to the right file.

    Moves within a file are not: they would rewrite bookkeeping on every unrelated edit.
    """
    return applied.path != location.path


def _plan_removed(applied: Applied, live: Live | None, out: _Collector) -> None:
    location = (Location(applied.path, applied.line or 1, applied.end_line or applied.line or 1)
                if applied.path else None)
    if live is None:
        out.note(applied.address, "no longer declared and already gone from the catalog", location)
        return
    spec = kinds.kind(applied.kind)
    if spec.archive_field is None:
        out.note(applied.address, f"no longer declared; {spec.plural} have no archived state, so it "
                 "is left in place (declare it with purge: true to delete it)", location)
        return
    if is_archived(applied.kind, live.fields):
        return
    if applied.protect:
        out.error(applied.address, "its manifest was removed but it is protected; restore the manifest "
                  "and commit protect: false before removing it", location)
        return
    outside = _outside(applied.kind, live, applied, frozenset())
    if outside:
        found = _out_of_band(applied.kind, live, applied, outside, ())
        out.outside[applied.address] = found
        out.findings.append(Finding(applied.address, "drift", drift_message(found, declared=False), location))
    after = archived(applied.kind, live.fields)
    changed = _changed(applied.kind, live.fields, after)
    out.changes.append(Change(applied.address, applied.kind, ops.Archive.name, dict(live.fields), after,
                              changed, None, location, live.token, False, paths=changed))


@dataclass
class _Collector:
    changes: list[Change] = field(default_factory=list)
    bookkeeping: list[Bookkeeping] = field(default_factory=list)
    unmanaged: list[str] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    outside: dict[str, OutOfBand] = field(default_factory=dict)

    def observed(self, desired: Desired, found: OutOfBand) -> None:
        """Record a change made outside git to a declared object, and say so in the plan."""
        self.outside[desired.address] = found
        self.findings.append(Finding(desired.address, "drift", drift_message(found), desired.location))

    def error(self, address: str, message: str, location: Location | None) -> None:
        self.findings.append(Finding(address, "error", message, location))

    def note(self, address: str, message: str, location: Location | None) -> None:
        self.findings.append(Finding(address, "note", message, location))


@contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many long-lived objects.

    Nothing built here forms cycles worth collecting, and with a loaded tree of a
    hundred thousand objects in memory each collection rescans all of it: reading
    the catalog took twice as long with the collector running.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def kind_order(address: str) -> tuple[int, str]:
    """Sort key of an address: storage targets, then datasets, then records (the order a plan
    lists them in every rendering, and apply writes them in), each by address."""
    return kinds.RANK.get(address.partition(":")[0], len(kinds.REGISTRY)), address


def diff(desired: Mapping[str, Desired], live: Mapping[str, Live], applied: Mapping[str, Applied],
         *, source: str, stored_on: Mapping[str, Collection[str]] | None = None,
         text_of: TextOf | None = None) -> DiffResult:
    """Compare the tree with the catalog for one source; no I/O, values in, values out.

    Objects another source manages are never changed (declaring one is an error);
    objects no source manages and the tree does not declare are listed as unmanaged.
    ``stored_on`` maps a storage target's address to the datasets with partitions stored
    on it (only needed for the storage targets the tree purges). ``text_of`` is the
    backend's encoding of applied fields (``CatalogState.text_of``): with it, an object
    whose applied text is unchanged is passed over without decoding its fields.
    """
    out = _Collector()
    with collector_paused():
        renames = _renames(desired, live, applied, source, out)
        if renames:
            live, applied, repointed = _repointed(desired, live, applied, renames, out)
        _diff_all(desired, live, applied, source, out, text_of, renames)
        if renames:
            _refresh_repointed(desired, live, repointed, out)
            _note_linked_records(desired, live, renames, out)
        _refuse_purges_in_use(out, live, stored_on or {})
    return DiffResult(tuple(out.changes), tuple(out.bookkeeping), tuple(out.unmanaged),
                      tuple(out.findings), out.outside)


def _diff_all(desired: Mapping[str, Desired], live: Mapping[str, Live], applied: Mapping[str, Applied],
              source: str, out: _Collector, text_of: TextOf | None, renames: Mapping[str, str]) -> None:
    moving = set(renames.values())
    for address in sorted(set(desired) | set(live) | set(applied), key=kind_order):
        if address in moving:
            continue  # planned under the name it takes
        want, have, done = desired.get(address), live.get(address), applied.get(address)
        if want is not None and address in renames:
            old = renames[address]
            _plan_renamed(want, live[old], applied.get(old), old, out)
            continue
        if done is not None and done.source != source:
            if want is not None:
                out.error(address, f"it is managed by source {done.source!r}; remove it from this tree "
                          "or move it between sources explicitly", want.location)
            continue
        if want is not None:
            _plan_declared(want, have, done, out, text_of)
        elif done is not None:
            _plan_removed(done, have, out)
        elif have is not None:
            out.unmanaged.append(address)


# --- renames ---------------------------------------------------------------------------------


def _refuse_rename(out: _Collector, desired: Desired, why: str) -> None:
    out.error(desired.address, f"cannot rename {desired.renamed_from} to {desired.address}: {why}", desired.location)


def _renames(desired: Mapping[str, Desired], live: Mapping[str, Live], applied: Mapping[str, Applied],
             source: str, out: _Collector) -> dict[str, str]:
    """The renames the plan makes (new address → old), and an error for each one refused.

    ``renamedFrom`` is a no-op once the rename is done (the new name is this source's, or
    exists while the old one is gone); a refused rename plans nothing for the object.
    """
    renames: dict[str, str] = {}
    for address, want in sorted(desired.items()):
        old = want.renamed_from
        if old is None or old == address:
            continue
        mine = applied.get(address) is not None and applied[address].source == source
        if address in live:
            # Both names in the catalog: taken, unless the rename is done and someone else
            # has since made an object under the old name.
            if old in live and (not mine or (old in applied and applied[old].source == source)):
                _refuse_rename(out, want, f"{address} already exists in the catalog; choose another name, "
                               "or remove renamedFrom to take over the existing one")
            continue  # renamed already (by an apply, or in the catalog): renamedFrom is harmless
        if old not in live:
            if not mine:
                _refuse_rename(out, want, f"{old} does not exist in the catalog; remove renamedFrom to "
                               f"create {address} as a new object")
            continue  # renamed, then deleted outside git: created again, as any deleted object is
        held = applied.get(old)
        if held is not None and held.source != source:
            _refuse_rename(out, want, f"{old} is managed by source {held.source!r}; rename it from that source's tree")
        elif old in desired:
            _refuse_rename(out, want, f"the tree still declares {old} ({desired[old].location.path}); remove "
                           "that declaration, the rename takes its place")
        elif old in renames.values():
            _refuse_rename(out, want, f"another manifest renames {old} too")
        elif want.purge:
            _refuse_rename(out, want, "it also says purge: true; purge it under its old name, or rename it first")
        else:
            renames[address] = old
    return renames


def _repointed(desired: Mapping[str, Desired], live: Mapping[str, Live], applied: Mapping[str, Applied],
               renames: Mapping[str, str], out: _Collector
               ) -> tuple[dict[str, Live], dict[str, Applied], set[str]]:
    """Live and applied datasets as they are once their storage targets are renamed: a dataset
    refers to its storage target by id, which a rename keeps, so only the name it shows moves.

    A dataset the tree still declares on the old name is an error (apply would leave it on none).
    Returns the addresses whose applied record names the old name, for ``_refresh_repointed``.
    """
    target, dataset = kinds.storage_target.SPEC, kinds.dataset.SPEC
    names = {old[len(target.prefix):]: new[len(target.prefix):]
             for new, old in renames.items() if new.startswith(target.prefix)}
    if not names:
        return dict(live), dict(applied), set()
    for want in desired.values():
        old_name = want.fields.get("storageTarget") if want.kind == dataset.name else None
        if old_name in names:
            out.error(want.address, f"its storageTarget {old_name} is renamed to {names[old_name]} by this plan; "
                      f"set storageTarget: {names[old_name]}", want.location)
    moved_live = dict(live)
    for address, obj in live.items():
        if obj.kind == dataset.name and obj.fields.get("storageTarget") in names:
            moved_live[address] = replace(obj, fields={**obj.fields,
                                                       "storageTarget": names[obj.fields["storageTarget"]]})
    moved_applied, repointed = dict(applied), set()
    for address, row in applied.items():
        if row.kind == dataset.name and row.fields.get("storageTarget") in names:
            moved_applied[address] = replace(row, fields={**row.fields,
                                                          "storageTarget": names[row.fields["storageTarget"]]},
                                             text=None)
            repointed.add(address)
    return moved_live, moved_applied, repointed


def _refresh_repointed(desired: Mapping[str, Desired], live: Mapping[str, Live], repointed: set[str],
                       out: _Collector) -> None:
    """Record the new storage target name for the datasets whose record named the old one and
    that nothing else rewrites, so the next plan sees no change made outside git."""
    written = {c.address for c in out.changes} | {b.address for b in out.bookkeeping}
    for address in sorted(repointed - written):
        want = desired.get(address)
        held = live.get(address)
        if want is not None and held is not None and not any(f.address == address and f.severity == "error"
                                                             for f in out.findings):
            out.bookkeeping.append(Bookkeeping(address, want.kind, "refresh", dict(want.record), want.location,
                                               want.protect, held.token))


def _plan_renamed(desired: Desired, live: Live, applied: Applied | None, old: str, out: _Collector) -> None:
    """One ``rename`` change: the identity moves, and the fields change as for an update (the
    object is compared with what it is under its old name). Errors of that comparison (an
    archive of a protected object) refuse the whole change."""
    spec = kinds.kind(desired.kind)
    identity = spec.identity[0]
    counts = len(out.changes), len(out.bookkeeping), len(out.findings)
    _plan_declared(desired, replace(live, address=desired.address),
                   None if applied is None else replace(applied, address=desired.address), out)
    planned = out.changes[counts[0]:]
    del out.changes[counts[0]:], out.bookkeeping[counts[1]:]
    if any(f.severity == "error" for f in out.findings[counts[2]:]):
        return
    inner = planned[0] if planned else None
    before = {identity: old[len(spec.prefix):], **live.fields}
    after = {identity: desired.address[len(spec.prefix):], **((inner.after or {}) if inner else live.fields)}
    reason = inner.reason if inner else ("adoption" if applied is None else "manifest")
    out.changes.append(Change(desired.address, desired.kind, ops.Rename.name, before, after,
                              (identity, *(inner.fields if inner else ())), dict(desired.record),
                              desired.location, live.token, desired.protect, inner.drift if inner else (),
                              (identity, *(inner.paths if inner else ())), reason,
                              (identity, *(inner.asked if inner else ())), renamed_from=old))


LINKS_SHOWN = 10  # records named in a rename's note before "and n more"


def _note_linked_records(desired: Mapping[str, Desired], live: Mapping[str, Live], renames: Mapping[str, str],
                         out: _Collector) -> None:
    """A note on each dataset rename naming the records (in the tree, or only in the catalog)
    whose ``metadata.datasetSlug`` still names the old slug: they are updated in the same
    pull request, or keep pointing at a slug that no longer exists."""
    dataset, record = kinds.dataset.SPEC, kinds.record.SPEC
    slugs = {old[len(dataset.prefix):]: new for new, old in renames.items() if new.startswith(dataset.prefix)}
    planned = {c.address for c in out.changes if c.op is ops.Rename}
    slugs = {slug: new for slug, new in slugs.items() if new in planned}
    if not slugs:
        return
    linking: dict[str, list[str]] = {}
    for address in sorted(set(desired) | {a for a, obj in live.items() if obj.kind == record.name}):
        obj = desired.get(address)
        if (obj.kind if obj is not None else live[address].kind) != record.name:
            continue
        metadata = (obj.fields if obj is not None else live[address].fields).get("metadata")
        slug = metadata.get("datasetSlug") if isinstance(metadata, Mapping) else None
        if slug in slugs:
            linking.setdefault(slug, []).append(address)
    for slug, found in linking.items():
        shown = ", ".join(found[:LINKS_SHOWN]) + (f" and {len(found) - LINKS_SHOWN:,} more"
                                                  if len(found) > LINKS_SHOWN else "")
        new = slugs[slug]
        out.note(new, f"{len(found):,} record(s) still name the old slug {slug} in metadata.datasetSlug: {shown}; "
                 f"set datasetSlug: {new[len(dataset.prefix):]} in the same pull request",
                 desired[new].location)
