"""The StorageTarget kind: where datasets keep their data; no archived state, config may hold secrets."""

from __future__ import annotations

from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import StorageTarget

SPEC = KindSpec(
    name="storage-target",
    manifest_kind="StorageTarget",
    model=StorageTarget,
    identity=("name",),
    fields=("type", "description", "config"),
    attributes={"type": "type", "description": "description", "config": "config"},
    noun="storage target",
    plural="storage targets",
    title="Storage targets",
    secret_field="config",
    grant_filter="storage_targets",
    grant_noun="storage target",
    scope="timestore:admin",
)
