"""The StorageTarget kind: where datasets keep their data; no archived state, config may hold secrets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import API_VERSION, StorageTarget


def _draft(name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Its document, but for ``config`` (the importer adds it, secrets written as ${env:...})."""
    document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "StorageTarget", "name": name,
                                "type": fields["type"]}
    if fields["description"] is not None:
        document["description"] = fields["description"]
    return document


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
    draft=_draft,
)
