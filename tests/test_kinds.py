"""The kinds' registry: one spec per kind, in plan order, and the rules each carries (pure)."""

from __future__ import annotations

from reconciler.core import kinds
from reconciler.core.diff import DEFAULTS, FIELDS, KINDS, MERGED_FIELDS, SET_FIELDS, kind_order


def test_the_registry_lists_the_kinds_in_plan_order() -> None:
    assert kinds.NAMES == KINDS == ("storage-target", "dataset", "record")
    assert [spec.manifest_kind for spec in kinds.REGISTRY] == ["StorageTarget", "Dataset", "Record"]
    assert sorted(["record:a/b", "dataset:x", "storage-target:s", "other:z"], key=kind_order) == [
        "storage-target:s", "dataset:x", "record:a/b", "other:z"]


def test_the_diffs_views_are_the_registrys() -> None:
    assert FIELDS == {"storage-target": ("type", "description", "config"),
                      "dataset": ("name", "description", "status", "storageTarget", "metadata", "retention"),
                      "record": ("owner", "tags", "schemaHash", "metadata", "deleted")}
    assert DEFAULTS == {"storage-target": {}, "dataset": {"status": "active"}, "record": {"deleted": False}}
    assert MERGED_FIELDS == {"metadata", "retention"} and SET_FIELDS == {"tags"}


def test_archived_state_per_kind() -> None:
    dataset, record, target = kinds.kind("dataset"), kinds.kind("record"), kinds.kind("storage-target")
    assert dataset.archived({"name": "x"}) == {"name": "x", "status": "inactive"}
    assert dataset.is_archived({"status": "inactive"}) and not dataset.is_archived({"status": "active"})
    assert record.archived({}) == {"deleted": True}
    assert record.is_archived({"deleted": 1}) and not record.is_archived({})
    assert target.archive_field is None and target.archived({"type": "s3"}) == {"type": "s3"}
    assert not target.is_archived({"type": "s3"})


def test_addresses_and_scopes() -> None:
    record = kinds.BY_MANIFEST_KIND["Record"]
    assert record.address({"namespace": "obs", "key": "a/b"}) == "record:obs/a/b"
    assert kinds.BY_MANIFEST_KIND["Dataset"].address({}) == "dataset:None"
    assert record.grant_name("obs/a/b") == "obs"
    assert [record.scope_for(op) for op in ("create", "update", "restore", "archive", "purge")] == [
        "metastore:write", "metastore:write", "metastore:write", "metastore:delete", "metastore:admin"]
    assert {kinds.kind(k).scope_for("purge") for k in ("dataset", "storage-target")} == {"timestore:admin"}
