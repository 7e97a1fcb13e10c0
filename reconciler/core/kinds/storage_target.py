"""The StorageTarget kind: where datasets keep their data; no archived state, config may hold secrets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, StrictBool

from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import (
    API_VERSION,
    Address,
    Description,
    Document,
    StorageConfig,
    StorageTargetName,
    StorageTargetType,
)


class StorageTarget(Document):
    """Where a dataset's data lives: a row of timestore.storage_targets."""

    kind: Literal["StorageTarget"] = "StorageTarget"
    name: StorageTargetName = Field(description="Identity; the catalog id is st-<name>.")
    renamed_from: StorageTargetName | None = Field(
        default=None, description="The name it had: renames it in place (its id, and the datasets on it, stay)."
    )
    type: StorageTargetType = Field(description="The catalog's storage_targets.kind.")
    description: Description | None = None
    config: StorageConfig = Field(
        default_factory=dict,
        description="Free JSON object; string values may hold ${env:NAME}, resolved at plan/apply time.",
    )
    protect: StrictBool = Field(default=False, description="Never purged while true.")
    purge: StrictBool = Field(
        default=False,
        description="Delete it (needs apply --allow-purge; refused while a dataset uses it).",
    )

    @property
    def address(self) -> Address:
        """``storage-target:<name>``."""
        return Address("storage-target", self.name)


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
    grant_filter="storageTargets",
    import_file="storage-targets.yaml",
    grant_noun="storage target",
    scope="timestore:admin",
    draft=_draft,
)
