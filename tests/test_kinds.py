"""The kinds' registries (core and PostgreSQL): one spec and one writer per kind, in plan order, the rules
each carries, and no kind spelled out elsewhere beyond what is left (pure)."""

from __future__ import annotations

import ast
import re
import typing
from pathlib import Path

from psycopg import sql

from reconciler.catalog.postgres import kinds as postgres_kinds
from reconciler.core import kinds, model
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


# --- the registries are complete, and kinds stay in their modules ---------------------------------

def _placeholders(query: sql.Composable) -> set[int]:
    text = query.as_string(None) if isinstance(query, sql.SQL) else ""
    return {int(n) for n in re.findall(r"\{(\d+)\}", text)}


def test_every_kind_has_a_postgres_writer_and_reader_in_registry_order() -> None:
    assert [writer.kind for writer in postgres_kinds.WRITERS] == list(kinds.REGISTRY)
    assert set(postgres_kinds.BY_KIND) == set(kinds.NAMES)
    for writer in postgres_kinds.WRITERS:
        columns = len(writer.params([]))
        assert columns >= 1, writer.kind.name
        # The row-holder lookup gives the holding query one placeholder per array params makes.
        assert _placeholders(writer.holding) == set(range(columns)), writer.kind.name
        assert writer.reader.query is not None and callable(writer.live)
        for evidence in writer.reader.evidence:
            assert evidence.table and evidence.query is not None, writer.kind.name


def test_the_manifest_documents_and_addresses_come_from_the_registry() -> None:
    from reconciler.core.kinds.record import RecordItem, RecordSet
    from reconciler.manifests.schema import manifest_schema

    assert kinds.DOCUMENTS == {"StorageTarget": kinds.kind("storage-target").model,
                               "Dataset": kinds.kind("dataset").model, "Record": kinds.kind("record").model,
                               "RecordSet": RecordSet}
    assert {name: spec.name for name, spec in kinds.BY_DOCUMENT.items()} == {
        "StorageTarget": "storage-target", "Dataset": "dataset", "Record": "record", "RecordSet": "record"}
    record = kinds.kind("record")
    assert (record.set_kind, record.set_item_model, kinds.kind("dataset").set_kind) == ("RecordSet", RecordItem, "")
    assert set(manifest_schema()["discriminator"]["mapping"]) == set(kinds.DOCUMENTS)
    for spec in kinds.REGISTRY:  # every model names its objects as the registry does
        assert issubclass(spec.model, model.Document)
        assert spec.model.model_fields["kind"].default == spec.manifest_kind
    assert [str(kinds.parse_address(f"{name}:{identity}")) for name, identity in
            (("storage-target", "s"), ("dataset", "abc"), ("record", "n/k"))] == [
        "storage-target:s", "dataset:abc", "record:n/k"]


def test_import_lays_out_each_kind_from_its_spec() -> None:
    assert [(spec.directory, spec.import_file, spec.set_kind) for spec in kinds.REGISTRY] == [
        ("storage-targets", "storage-targets.yaml", ""), ("datasets", None, ""), ("records", None, "RecordSet")]


def test_ui_links_per_kind() -> None:
    assert kinds.kind("dataset").ui_links("x y", {}) == (("dataset", "x y", "datasets"),)
    record = kinds.kind("record")
    assert record.ui_links("ns/k", {"metadata": {"datasetSlug": "d", "assetId": "a/1"}}) == (
        ("dataset", "d", "datasets"), ("asset", "a/1", "assets"))
    assert record.ui_links("ns/k", {"metadata": {"datasetSlug": "", "assetId": 3}}) == ()
    assert record.ui_links("ns/k", {"metadata": None}) == () == kinds.kind("storage-target").ui_links("s", {})


# Kind names as string literals (``"dataset"``, ``"Record"``, ``"storage-target:..."``; not
# in docstrings) outside the kinds' own modules. Each is a place a new kind may have to be
# added by hand; lower a count when you take one out, never raise one.
_KIND_LITERALS_LEFT = {
    "reconciler/app/attribution.py": 1,  # a RecordSet item's address, built from its document
    "reconciler/app/events.py": 1,  # only record changes are announced
    "reconciler/catalog/memory.py": 2,  # the in-memory catalog announces record changes
    "reconciler/core/events.py": 1,  # the event payload's "record" key, not a kind
    "reconciler/render/events.py": 1,
    "reconciler/services/datasets.py": 1,  # the repository layer is one module per kind already
    "reconciler/services/records.py": 1,
    "reconciler/services/storage_targets.py": 1,
}
_KIND_MODULES = ("reconciler/core/kinds/", "reconciler/catalog/postgres/kinds/")


def _kind_literals(source: str) -> int:
    words = {spec.name for spec in kinds.REGISTRY} | {spec.manifest_kind for spec in kinds.REGISTRY}
    prefixes = tuple(spec.prefix for spec in kinds.REGISTRY)
    tree = ast.parse(source)
    docstrings = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return sum(1 for node in ast.walk(tree)
               if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
               and (node.value in words or node.value.startswith(prefixes)))


def test_kind_names_are_spelled_out_only_in_the_kind_modules_and_the_allow_list() -> None:
    root = Path(__file__).resolve().parent.parent
    found = {}
    for path in sorted((root / "reconciler").rglob("*.py")):
        name = path.relative_to(root).as_posix()
        if not name.startswith(_KIND_MODULES) and (count := _kind_literals(path.read_text(encoding="utf-8"))):
            found[name] = count
    assert found == _KIND_LITERALS_LEFT, "kind names spelled out outside core/kinds/ and catalog/postgres/kinds/: " \
        "move them behind the registries (or, when one was taken out, lower its count here)"


def test_messages_name_each_kinds_address_form() -> None:
    import pytest

    from reconciler.core.checks import check_address
    from reconciler.errors import ConfigurationError

    assert [spec.form for spec in kinds.REGISTRY] == [
        "storage-target:<name>", "dataset:<slug>", "record:<namespace>/<key>"]
    with pytest.raises(ConfigurationError) as caught:
        check_address("table:x")
    assert caught.value.message == ("--target 'table:x' is not an address; use storage-target:<name>, "
                                    "dataset:<slug> or record:<namespace>/<key>")
