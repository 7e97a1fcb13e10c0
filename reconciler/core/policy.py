"""Who may change what: scopes granted to commit authors, checked for every planned change (pure)."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from reconciler.core import kinds
from reconciler.errors import ConfigurationError

# The scopes the platform's services guard their operations with: those the kinds' changes need.
SCOPES = frozenset({spec.scope for spec in kinds.REGISTRY} | {s for spec in kinds.REGISTRY for s in spec.scopes.values()})
# A scope also grants the scopes listed here (the services' admin scopes include the rest).
IMPLIES: Mapping[str, frozenset[str]] = {
    "metastore:admin": frozenset({"metastore:write", "metastore:delete"}),
}
# A grant's keys: who and what, then one filter per kind (``KindSpec.grant_filter``).
_GRANT_KEYS = frozenset({"authors", "scopes", *(spec.grant_filter for spec in kinds.REGISTRY)})


@dataclass(frozen=True)
class Grant:
    """Scopes granted to authors matching any pattern, limited to objects matching the filters.

    ``filters`` holds each kind's name patterns under its filter's key (``KindSpec.grant_filter``:
    ``datasets``, ``namespaces``, ``storageTargets``); a filter left out matches every object of
    its kind.
    """

    authors: tuple[str, ...]
    scopes: frozenset[str]
    filters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def covers(self, email: str, scope: str, kind: str, identity: str) -> bool:
        """Whether this grant lets ``email`` use ``scope`` on the object."""
        if not any(fnmatch.fnmatchcase(email.lower(), p.lower()) for p in self.authors):
            return False
        if scope not in self.scopes and not any(scope in IMPLIES.get(s, ()) for s in self.scopes):
            return False
        spec = kinds.kind(kind)
        patterns = self.filters.get(spec.grant_filter)
        name = spec.grant_name(identity)
        return patterns is None or any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass(frozen=True)
class Policy:
    """The grants of ``reconciler.yaml``'s ``policy:``; no policy means no restriction."""

    grants: tuple[Grant, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class Denial:
    """A planned change its author may not make."""

    address: str
    email: str
    action: str
    scope: str
    where: str

    @property
    def message(self) -> str:
        """How the plan reports it."""
        return (f"policy: {self.email} may not {self.action} it: needs scope {self.scope} for {self.where} "
                "(reconciler.yaml policy)")


def required_scope(kind: str, action: str) -> str:
    """The scope a change needs, as the services guard the same operation."""
    return kinds.kind(kind).scope_for(action)


def check(policy: Policy | None, changes: Iterable[tuple[str, str, str]]) -> list[Denial]:
    """The denials among ``(address, action, author email)`` changes; none without a policy."""
    if policy is None:
        return []
    denials = []
    for address, action, email in changes:
        kind, _, identity = address.partition(":")
        scope = required_scope(kind, action)
        if not any(g.covers(email, scope, kind, identity) for g in policy.grants):
            spec = kinds.kind(kind)
            where = f"{spec.grant_noun} {spec.grant_name(identity)}"
            denials.append(Denial(address, email, action, scope, where))
    return denials


def parse_policy(data: Any, origin: str) -> Policy:
    """Read the ``policy:`` mapping of ``reconciler.yaml``; every mistake is one clear error."""
    if not isinstance(data, Mapping) or set(data) - {"grants"}:
        raise ConfigurationError(f"{origin}: policy must be a mapping with a `grants:` list")
    grants = data.get("grants") or []
    if not isinstance(grants, list):
        raise ConfigurationError(f"{origin}: policy.grants must be a list")
    return Policy(tuple(_grant(g, f"{origin}: policy.grants[{i}]") for i, g in enumerate(grants)))


def _grant(data: Any, where: str) -> Grant:
    if not isinstance(data, Mapping):
        raise ConfigurationError(f"{where} must be a mapping")
    unknown = sorted(set(data) - _GRANT_KEYS)
    if unknown:
        raise ConfigurationError(f"{where}: unknown key(s) {', '.join(unknown)} "
                                 f"(known: {', '.join(sorted(_GRANT_KEYS))})")
    authors = _strings(data.get("authors"), f"{where}.authors", required=True)
    scopes = _strings(data.get("scopes"), f"{where}.scopes", required=True)
    bad = sorted(set(scopes or ()) - SCOPES)
    if bad:
        raise ConfigurationError(f"{where}.scopes: unknown scope(s) {', '.join(bad)} "
                                 f"(known: {', '.join(sorted(SCOPES))})")
    filters = {spec.grant_filter: _optional(data, spec.grant_filter, where) for spec in kinds.REGISTRY}
    return Grant(authors=tuple(authors or ()), scopes=frozenset(scopes or ()),
                 filters={key: patterns for key, patterns in filters.items() if patterns is not None})


def _optional(data: Mapping[str, Any], key: str, where: str) -> tuple[str, ...] | None:
    values = _strings(data.get(key), f"{where}.{key}", required=False)
    return None if values is None else tuple(values)


def _strings(value: Any, where: str, *, required: bool) -> Sequence[str] | None:
    if value is None:
        if required:
            raise ConfigurationError(f"{where} is required (a list of strings)")
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise ConfigurationError(f"{where} must be a non-empty list of strings")
    return value
