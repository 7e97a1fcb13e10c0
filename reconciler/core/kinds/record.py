"""The Record kind: archived as soft-deleted; metadata merged key by key, tags compared as a set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.kinds.base import KindSpec, key_sorted
from reconciler.core.model import Record


def _needs(after: Mapping[str, Any]) -> tuple[str, ...]:
    """A record needs the dataset its metadata links to."""
    metadata = after.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("datasetSlug"), str):
        return (f"dataset:{metadata['datasetSlug']}",)
    return ()


def _ui_links(identity: str, fields: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The pages its metadata links to: its dataset (datasetSlug) and its asset (assetId)."""
    metadata = fields.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        return ()
    return tuple((label, value, path) for key, label, path in (("datasetSlug", "dataset", "datasets"),
                                                               ("assetId", "asset", "assets"))
                 if isinstance(value := metadata.get(key), str) and value)


def _draft(identity: str, fields: Mapping[str, Any]) -> dict[str, Any]:
    """Its item in its namespace's RecordSet."""
    item: dict[str, Any] = {"key": identity.partition("/")[2]}
    if fields["owner"] is not None:
        item["owner"] = fields["owner"]
    if fields["tags"]:
        item["tags"] = list(dict.fromkeys(fields["tags"]))
    if fields["schemaHash"] is not None:
        item["schemaHash"] = fields["schemaHash"]
    if fields["metadata"]:
        item["metadata"] = key_sorted(fields["metadata"])
    if fields["deleted"]:
        item["deleted"] = True
    return item


SPEC = KindSpec(
    name="record",
    manifest_kind="Record",
    model=Record,
    identity=("namespace", "key"),
    fields=("owner", "tags", "schemaHash", "metadata", "deleted"),
    attributes={"owner": "owner", "tags": "tags", "schema_hash": "schemaHash", "metadata": "metadata",
                "deleted": "deleted"},
    noun="record",
    plural="records",
    title="Records",
    defaults={"deleted": False},
    merged={"metadata": {}},
    sets=frozenset({"tags"}),
    archive_field="deleted",
    archived_value=True,
    grant_filter="namespaces",
    grant_noun="namespace",
    scope="metastore:write",
    scopes={"purge": "metastore:admin", "archive": "metastore:delete"},
    needs=_needs,
    ui_links=_ui_links,
    draft=_draft,
)
