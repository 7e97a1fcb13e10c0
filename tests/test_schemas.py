"""The manifest JSON Schema: generated from the models, committed, and true to the examples."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from reconciler.manifests.schema import SCHEMA_FILE, manifest_schema, render, schema_dirs
from reconciler.manifests.yamlread import parse_text

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "schemas" / SCHEMA_FILE
EXAMPLES = sorted((REPO / "manifests").rglob("*.yaml"))


def _documents() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in EXAMPLES:
        parsed = parse_text(path.read_text(encoding="utf-8"), str(path))
        assert parsed.problems == []
        for document in parsed.documents:
            found.append((f"{path.relative_to(REPO)}:{document.layout.span.line}", document.value))
    return found


DOCUMENTS = _documents()
VALIDATOR = jsonschema.Draft202012Validator(manifest_schema())


def test_the_committed_schema_is_the_generated_one() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == render(), (
        "schemas/manifest.schema.json is stale: run "
        "python -m reconciler.manifests.schema > schemas/manifest.schema.json"
    )


def test_the_schema_is_a_valid_draft_2020_12_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(manifest_schema())


def test_the_examples_cover_every_kind() -> None:
    assert {document["kind"] for _, document in DOCUMENTS} == {
        "StorageTarget",
        "Dataset",
        "Record",
        "RecordSet",
    }


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_every_example_document_satisfies_the_schema(name: str, document: dict[str, Any]) -> None:
    assert list(VALIDATOR.iter_errors(document)) == []


@pytest.mark.parametrize(("name", "document"), DOCUMENTS, ids=[name for name, _ in DOCUMENTS])
def test_the_schema_rejects_unknown_fields(name: str, document: dict[str, Any]) -> None:
    changed = copy.deepcopy(document)
    changed["colour"] = "blue"
    assert not VALIDATOR.is_valid(changed)


@pytest.mark.parametrize(
    "change",
    [
        {"kind": "Datasets"},
        {"apiVersion": "reconciler/v2"},
        {"slug": "a b"},
        {"protect": "yes"},
        {"status": "archived"},
        {"metadata": {"iam": {"adminScopes": ["x"]}}},
        {"retention": {"rules": {"maxAgeHours": 0}}},
    ],
)
def test_the_schema_rejects_what_the_loader_rejects(change: dict[str, Any]) -> None:
    document = {"apiVersion": "reconciler/v1", "kind": "Dataset", "slug": "abc", "name": "A", **change}
    assert not VALIDATOR.is_valid(document)


@pytest.mark.parametrize("field", ["owner", "schemaHash", "tags", "metadata", "deleted", "protect", "purge"])
@pytest.mark.parametrize("where", ["defaults", "record"])
def test_schema_and_loader_agree_on_null_in_a_recordset(field: str, where: str, tmp_path: Path) -> None:
    from reconciler.errors import ManifestError
    from reconciler.manifests import load_tree
    from reconciler.manifests.emit import dump_documents

    document: dict[str, Any] = {"apiVersion": "reconciler/v1", "kind": "RecordSet", "namespace": "obs",
                                "defaults": {"owner": "team"}, "records": [{"key": "s1"}]}
    (document["defaults"] if where == "defaults" else document["records"][0])[field] = None
    (tmp_path / "set.yaml").write_text(dump_documents([document]), encoding="utf-8")
    try:
        load_tree(tmp_path)
        loads = True
    except ManifestError:
        loads = False
    assert VALIDATOR.is_valid(document) is loads
    assert loads is (field in ("owner", "schemaHash"))  # null clears an inherited default


def test_a_document_must_state_api_version_and_kind() -> None:
    assert VALIDATOR.is_valid({"apiVersion": "reconciler/v1", "kind": "Dataset", "slug": "abc", "name": "A"})
    assert not VALIDATOR.is_valid({"kind": "Dataset", "slug": "abc", "name": "A"})
    assert not VALIDATOR.is_valid({"apiVersion": "reconciler/v1", "slug": "abc", "name": "A"})


def test_the_examples_point_editors_at_the_schema() -> None:
    for path in EXAMPLES:
        first = path.read_text(encoding="utf-8").splitlines()[0]
        target = first.removeprefix("# yaml-language-server: $schema=")
        assert target != first, f"{path} has no yaml-language-server modeline"
        assert (path.parent / target).resolve() == COMMITTED


def test_schema_files_are_found_in_the_repository_when_not_installed_as_a_wheel() -> None:
    assert any((directory / SCHEMA_FILE).is_file() for directory in schema_dirs())
