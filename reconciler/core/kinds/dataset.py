"""The Dataset kind: archived as status inactive; metadata and retention merged key by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from reconciler.core.kinds.base import KindSpec
from reconciler.core.model import Dataset


def _needs(after: Mapping[str, Any]) -> tuple[str, ...]:
    """A dataset needs its storage target."""
    target = after.get("storageTarget")
    return (f"storage-target:{target}",) if target else ()


def _ui_links(slug: str, fields: Mapping[str, Any]) -> tuple[tuple[str, str, str], ...]:
    """The dataset's own page."""
    return (("dataset", slug, "datasets"),)


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
)
