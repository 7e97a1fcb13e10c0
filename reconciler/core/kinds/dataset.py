"""The Dataset kind: archived as status inactive; metadata and retention merged key by key."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import ConfigDict, Field, StrictBool

from reconciler.core.kinds.base import KindSpec, key_sorted
from reconciler.core.model import (
    API_VERSION,
    Address,
    Base,
    DatasetMetadata,
    DatasetName,
    DatasetSlug,
    DatasetStatus,
    Description,
    Document,
    JsonObject,
    NonNegativeInt,
    PositiveInt,
    RetentionMode,
    StorageTargetName,
)

# Dataset metadata keys the platform's services write for themselves. They are left
# out of imported manifests, so they stay the services' (the three-way merge keeps
# keys the tree never set) instead of becoming managed and reverted as drift.
SERVICE_METADATA_KEYS: Final = frozenset({"createdBy", "tableName", "timestampColumn"})


class RetentionRules(Base):
    """retention.rules: the two known limits; other keys are kept as given."""

    model_config = ConfigDict(extra="allow")

    max_age_hours: PositiveInt | None = Field(default=None, description="Delete data older than this.")
    max_total_bytes: PositiveInt | None = Field(default=None, description="Keep at most this many bytes.")


class Retention(Base):
    """A dataset's retention policy; keys other than the known ones are kept as given."""

    model_config = ConfigDict(extra="allow")

    mode: RetentionMode | None = Field(default=None, description="Which rules apply: time, size or both.")
    rules: RetentionRules | None = None
    delete_grace_minutes: NonNegativeInt | None = Field(
        default=None, description="Minutes between marking data for deletion and deleting it."
    )
    cold_storage_after_hours: PositiveInt | None = Field(
        default=None, description="Move data to cold storage after this many hours."
    )
    metadata: JsonObject | None = Field(
        default=None, description="Free JSON object (the timestore ignores a policy whose metadata is not one)."
    )

    def as_policy(self) -> dict[str, Any]:
        """The policy as the catalog stores it (camelCase, unset keys left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Dataset(Document):
    """A dataset: a row of timestore.datasets and its retention policy."""

    kind: Literal["Dataset"] = "Dataset"
    slug: DatasetSlug = Field(description="Identity.")
    renamed_from: DatasetSlug | None = Field(
        default=None, description="The slug it had: renames it in place (same id, partitions and history)."
    )
    name: DatasetName
    description: Description | None = None
    status: DatasetStatus = Field(default="active", description="inactive means archived.")
    storage_target: StorageTargetName | None = Field(
        default=None, description="Name of the dataset's default StorageTarget."
    )
    metadata: DatasetMetadata = Field(
        default_factory=dict,
        description=(
            "Free JSON object; iam holds readScopes and writeScopes (trimmed, de-duplicated); "
            "execution is null or {backend, options}."
        ),
    )
    retention: Retention | None = None
    protect: StrictBool = Field(default=False, description="Never archive or purge while true.")
    purge: StrictBool = Field(default=False, description="Hard-delete (needs apply --allow-purge).")

    @property
    def address(self) -> Address:
        """``dataset:<slug>``."""
        return Address("dataset", self.slug)


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
