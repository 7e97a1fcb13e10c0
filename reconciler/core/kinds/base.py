"""What the engine knows of one kind of catalog object, as one frozen value (pure)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


def _no_needs(after: Mapping[str, Any]) -> tuple[str, ...]:
    return ()


def key_sorted(value: Any) -> Any:
    """A JSON value with every mapping's keys sorted, so the same value is always written alike.

    A value, not a text: the YAML writer lays it out, so it is not ``canonical_json``."""
    if isinstance(value, Mapping):
        return {key: key_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [key_sorted(item) for item in value]
    return value


def _no_links(identity: str, fields: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    return ()


@dataclass(frozen=True)
class KindSpec:
    """One kind: its names, the fields it manages and their rules, and its archived state.

    Field names are the manifest's (camelCase), which are also the plan's and the diff's.
    A kind without ``archive_field`` has no archived state: removing its manifest leaves
    it in place, and only a purge deletes it.
    """

    name: str  # as the plan JSON and addresses name it: "storage-target"
    manifest_kind: str  # the manifest's ``kind:``: "StorageTarget"
    model: type[Any]  # the pydantic model of one declared object
    identity: tuple[str, ...]  # manifest fields naming it, joined by "/" after the prefix
    fields: tuple[str, ...]  # the catalog fields it manages, in plan order
    attributes: Mapping[str, str]  # model attribute → managed field, where the names differ or not
    noun: str  # "storage target"
    plural: str  # "storage targets"
    title: str  # heading of its section in plans: "Storage targets"
    # Fields that, when a manifest leaves them out and they were never applied, take this
    # value; all other omitted fields are left as the catalog has them.
    defaults: Mapping[str, Any] = field(default_factory=dict)
    # JSON object fields merged key by key (keys only the catalog has are kept), with the
    # value such a field takes when nothing sets it: ``{}`` or ``None`` (no object at all).
    merged: Mapping[str, Any] = field(default_factory=dict)
    sets: frozenset[str] = frozenset()  # fields compared as sets (order carries no meaning)
    archive_field: str | None = None  # the field holding the archived state, if it has one
    archived_value: Any = None  # that field's value once archived
    secret_field: str | None = None  # the field whose values may come from ${env:...}
    # Policy: the grant filter that limits it (a Grant attribute), and the word naming it there.
    grant_filter: str = ""
    grant_noun: str = ""
    scope: str = ""  # the scope its changes need ...
    scopes: Mapping[str, str] = field(default_factory=dict)  # ... unless its operation needs another
    # The addresses a change to it needs applied first, from its fields after the change.
    needs: Callable[[Mapping[str, Any]], tuple[str, ...]] = _no_needs
    # Its pages in the platform's UI, from its identity and fields: (label, value, path),
    # linked as ``<ui base>/<path>/<value>`` under the text ``<label> <value>``.
    ui_links: Callable[[str, Mapping[str, Any]], tuple[tuple[str, str, str], ...]] = _no_links
    # The manifest document (for a kind declared in sets, its item) that declares a live
    # object exactly, from its identity and fields, as ``import`` writes it; the value of
    # ``secret_field`` is left for the importer, which writes secrets as ${env:...}.
    draft: Callable[[str, Mapping[str, Any]], dict[str, Any]] | None = None

    @property
    def prefix(self) -> str:
        """The start of its addresses: ``storage-target:``."""
        return self.name + ":"

    def address(self, values: Mapping[str, Any]) -> str:
        """The address of an object from its manifest values (``str`` of each identity field)."""
        return self.prefix + "/".join(str(values.get(name)) for name in self.identity)

    def grant_name(self, identity: str) -> str:
        """The part of an address's identity that grant filters match (a record's namespace)."""
        return identity.split("/", 1)[0] if len(self.identity) > 1 else identity

    def is_archived(self, fields: Mapping[str, Any]) -> bool:
        """Whether an object is in its archived state (dataset inactive, record soft-deleted)."""
        if self.archive_field is None:
            return False
        value = fields.get(self.archive_field)
        return bool(value) if self.archived_value is True else value == self.archived_value

    def archived(self, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The fields with the archived state set."""
        out = dict(fields)
        if self.archive_field is not None:
            out[self.archive_field] = self.archived_value
        return out

    def scope_for(self, operation: str) -> str:
        """The scope a change of this kind needs, as the services guard the same operation."""
        return self.scopes.get(operation, self.scope)
