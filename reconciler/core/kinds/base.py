"""What the engine knows of one kind of catalog object, as one frozen value (pure)."""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from reconciler.core.model import Address, TextLimits


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


def _within(limits: TextLimits, text: str) -> bool:
    """Whether ``text`` passes ``limits`` (length in UTF-16 code units, then the pattern)."""
    try:
        limits.check(text)
    except ValueError:
        return False
    return True


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
    # Policy: the grant filter that limits it (its key in a grant of reconciler.yaml's policy,
    # a list of name patterns), and the word naming it there.
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
    # A manifest document that declares many objects of this kind at once (a RecordSet): its
    # model has the first identity field and ``expand()`` gives the declared models; import
    # writes one per value of that field, as ``<directory>/<value>.yaml``.
    set_model: type[Any] | None = None
    # The one file ``import`` writes every object of this kind into; None: one file each,
    # ``<directory>/<identity>.yaml``.
    import_file: str | None = None

    @property
    def directory(self) -> str:
        """The directory ``import`` writes its files into: ``storage-targets``."""
        return self.plural.replace(" ", "-")

    @property
    def set_kind(self) -> str:
        """The ``kind:`` of its set documents (``RecordSet``); empty when it has none."""
        return "" if self.set_model is None else str(self.set_model.model_fields["kind"].default)

    @property
    def set_item_model(self) -> type[Any]:
        """The model of one item of its set documents (``RecordItem``)."""
        assert self.set_model is not None, f"{self.name} has no set documents"
        items = self.set_model.model_fields[self.plural].annotation
        return typing.get_args(items)[0]  # type: ignore[no-any-return]

    @property
    def documents(self) -> dict[str, type[Any]]:
        """The manifest document kinds (``kind:``) that declare it, with their models."""
        found = {self.manifest_kind: self.model}
        if self.set_model is not None:
            found[self.set_kind] = self.set_model
        return found

    def valid_identity(self, identity: str) -> bool:
        """Whether ``identity`` names an object of this kind as its model allows: each identity
        field's part (split on ``/``; only the last may contain one) within that field's limits."""
        parts = identity.split("/", len(self.identity) - 1)
        if len(parts) != len(self.identity):
            return False
        for name, part in zip(self.identity, parts, strict=True):
            limits = [m for m in self.model.model_fields[name].metadata if isinstance(m, TextLimits)]
            if not part or any(not _within(limit, part) for limit in limits):
                return False
        return True

    def address_of(self, identity: str) -> Address:
        """The address of its object ``identity``."""
        return Address(self.name, identity)

    @property
    def form(self) -> str:
        """How its addresses are written, for messages: ``record:<namespace>/<key>``."""
        return f"{self.prefix}<{'>/<'.join(self.identity)}>"

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
