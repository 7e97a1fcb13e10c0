"""The kinds of catalog object, one module each, and their registry in plan order.

Adding a kind: a module here with its ``SPEC``, one line in ``REGISTRY``, and its
writer in ``catalog/postgres/kinds/`` (with one line in that registry).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from reconciler.core.kinds import dataset, record, storage_target
from reconciler.core.kinds.base import KindSpec

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


def kind(name: str) -> KindSpec:
    """The kind the plan JSON calls ``name``; KeyError for a name no kind has."""
    return BY_NAME[name]


__all__ = ["BY_MANIFEST_KIND", "BY_MODEL", "BY_NAME", "NAMES", "RANK", "REGISTRY", "KindSpec", "kind"]
