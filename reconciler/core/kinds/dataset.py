"""The Dataset kind: archived as status inactive; metadata and retention merged key by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from reconciler.core.kinds.base import KindSpec, key_sorted
from reconciler.core.model import API_VERSION, Dataset

# Dataset metadata keys the platform's services write for themselves. They are left
# out of imported manifests, so they stay the services' (the three-way merge keeps
# keys the tree never set) instead of becoming managed and reverted as drift.
SERVICE_METADATA_KEYS: Final = frozenset({"createdBy", "tableName", "timestampColumn"})


def _needs(after: Mapping[str, Any]) -> tuple[str, ...]:
    """A dataset needs its storage target."""
    target = after.get("storageTarget")
    return (f"storage-target:{target}",) if target else ()


def _ui_links(slug: str, fields: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The dataset's own page."""
    return (("dataset", slug, "datasets"),)


def _draft(slug: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "Dataset", "slug": slug,
                                "name": fields["name"]}
    if fields["description"] is not None:
        document["description"] = fields["description"]
    if fields["status"] != "active":
        document["status"] = fields["status"]
    if fields["storageTarget"] is not None:
        document["storageTarget"] = fields["storageTarget"]
    metadata = fields["metadata"]
    if isinstance(metadata, Mapping):  # anything else fails validation, and is skipped with the reason
        metadata = {k: v for k, v in metadata.items() if k not in SERVICE_METADATA_KEYS}
    if metadata:
        document["metadata"] = key_sorted(metadata)
    if fields["retention"] is not None:
        document["retention"] = key_sorted(fields["retention"])
    return document


SPEC = KindSpec(
    name="dataset",
    manifest_kind="Dataset",
    model=Dataset,
    identity=("slug",),
    fields=("name", "description", "status", "storageTarget", "metadata", "retention"),
    attributes={"name": "name", "description": "description", "status": "status",
                "storage_target": "storageTarget", "metadata": "metadata", "retention": "retention"},
    noun="dataset",
    plural="datasets",
    title="Datasets",
    defaults={"status": "active"},
    merged={"metadata": {}, "retention": None},
    archive_field="status",
    archived_value="inactive",
    grant_filter="datasets",
    grant_noun="dataset",
    scope="timestore:admin",
    needs=_needs,
    ui_links=_ui_links,
    draft=_draft,
)
