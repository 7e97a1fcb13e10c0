"""The Record kind: archived as soft-deleted; metadata merged key by key, tags compared as a set."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import Record


def _needs(after: Mapping[str, Any]) -> tuple[str, ...]:
    """A record needs the dataset its metadata links to."""
    metadata = after.get("metadata")
    if isinstance(metadata, Mapping) and isinstance(metadata.get("datasetSlug"), str):
        return (f"dataset:{metadata['datasetSlug']}",)
    return ()


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
)
