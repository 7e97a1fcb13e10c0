"""The kinds of catalog object, one module each, and their registry in plan order.

Adding a kind: a module here with its ``SPEC``, one line in ``REGISTRY``, and its
writer in ``catalog/postgres/kinds/`` (with one line in that registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from reconciler.core.kinds import dataset, record, storage_target
from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import Address
from reconciler.errors import ConfigurationError

# In the order plans list them and apply writes them: what others need comes first.
REGISTRY: Final[tuple[KindSpec, ...]] = (
    storage_target.SPEC,
    dataset.SPEC,
    record.SPEC,
)

BY_NAME: Final[Mapping[str, KindSpec]] = {spec.name: spec for spec in REGISTRY}
BY_MANIFEST_KIND: Final[Mapping[str, KindSpec]] = {spec.manifest_kind: spec for spec in REGISTRY}
BY_MODEL: Final[Mapping[type, KindSpec]] = {spec.model: spec for spec in REGISTRY}
NAMES: Final[tuple[str, ...]] = tuple(spec.name for spec in REGISTRY)
RANK: Final[Mapping[str, int]] = {spec.name: rank for rank, spec in enumerate(REGISTRY)}
# Every manifest document kind (``kind:``) with its model, and the kind of object it declares.
DOCUMENTS: Final[Mapping[str, type[Any]]] = {
    name: model for spec in REGISTRY for name, model in spec.documents.items()
}
BY_DOCUMENT: Final[Mapping[str, KindSpec]] = {name: spec for spec in REGISTRY for name in spec.documents}


def kind(name: str) -> KindSpec:
    """The kind the plan JSON calls ``name``; KeyError for a name no kind has."""
    return BY_NAME[name]


def parse_address(text: str) -> Address:
    """Read an address as users write it (``<kind>:<identity>``); ConfigurationError when
    the kind is unknown or the identity is not one its kind allows."""
    kind_text, sep, identity = text.partition(":")
    spec = BY_NAME.get(kind_text) if sep else None
    if spec is None:
        raise ConfigurationError(
            f"invalid address {text!r}: expected <kind>:<name> with kind one of {', '.join(NAMES)}"
        )
    if not spec.valid_identity(identity):
        raise ConfigurationError(f"invalid address {text!r}: expected {spec.form}")
    return spec.address_of(identity)


__all__ = ["BY_DOCUMENT", "BY_MANIFEST_KIND", "BY_MODEL", "BY_NAME", "DOCUMENTS", "NAMES", "RANK", "REGISTRY",
           "KindSpec", "kind", "parse_address"]
