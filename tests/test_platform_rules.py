"""The platform services' rules the manifests follow: lengths as JavaScript counts them, the
services' request schemas, and values the services accept but cannot serve back."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner
from pydantic import BaseModel, ValidationError

from reconciler.cli import cli
from reconciler.errors import ConfigurationError
from reconciler.manifests.schema import manifest_schema
from reconciler.core import kinds
from reconciler.core.kinds.dataset import Dataset, Retention
from reconciler.core.kinds.record import Record, RecordSet
from reconciler.core.kinds.storage_target import StorageTarget
from reconciler.core.model import LENGTH_UNIT_COMMENT
from reconciler.core.service_rules import js_trim, normalize_dataset_metadata, normalize_tags, utf16_length

from .helpers import js_trimmed

EMOJI = "\U0001f600"  # two UTF-16 code units, one character
GOTHIC = "\U00010348"  # likewise, and not an emoji
HEAD = "apiVersion: reconciler/v1\n"


def messages(error: pytest.ExceptionInfo[ValidationError]) -> list[str]:
    return [detail["msg"] for detail in error.value.errors()]


# --- counting and trimming as JavaScript does --------------------------------------------


def test_utf16_length_counts_characters_outside_the_bmp_twice() -> None:
    assert utf16_length("") == 0
    assert utf16_length("sensor-1") == 8
    assert utf16_length("café") == 4
    assert utf16_length("日本") == 2
    assert utf16_length(EMOJI) == 2
    assert utf16_length(f"a{EMOJI}b{GOTHIC}") == 6


def test_trimming_removes_what_javascript_trims_and_nothing_else() -> None:
    assert js_trim("\ufeff\u00a0\u3000 iot\t\n") == "iot"  # str.strip keeps U+FEFF
    assert js_trim("\x1ciot\x85") == "\x1ciot\x85"  # str.strip removes both
    assert normalize_tags(["\ufeffiot", "iot", " raw ", "\u2028"]) == ["iot", "raw"]
    for code in range(sys.maxunicode + 1):
        text = f"{chr(code)}x{chr(code)}"
        assert js_trim(text) == js_trimmed(text), hex(code)


# Every limited text field: (model, fields around it, field, limit). A value of `limit`
# UTF-16 code units made of two-unit characters is accepted; one more unit is refused,
# though it is far fewer characters than the limit.
LIMITED: list[tuple[type[BaseModel], dict[str, Any], str, int]] = [
    (StorageTarget, {"name": "warm", "type": "s3"}, "description", 1000),
    (Dataset, {"slug": "abc"}, "name", 160),
    (Dataset, {"slug": "abc", "name": "A"}, "description", 1000),
    (Record, {"namespace": "ns"}, "key", 256),
    (Record, {"namespace": "ns", "key": "k"}, "owner", 256),
    (Record, {"namespace": "ns", "key": "k"}, "schema_hash", 256),
]


@pytest.mark.parametrize(("model", "base", "field", "limit"), LIMITED,
                         ids=[f"{m.__name__}.{f}" for m, _, f, _ in LIMITED])
def test_text_limits_count_utf16_code_units(model: type[BaseModel], base: dict[str, Any], field: str,
                                            limit: int) -> None:
    fitting = EMOJI * (limit // 2)
    assert getattr(model(**base, **{field: fitting}), field) == fitting
    with pytest.raises(ValidationError) as caught:
        model(**base, **{field: fitting + "x"})
    (message,) = messages(caught)
    assert f"must be at most {limit} characters, got {limit + 1} (the platform's services count UTF-16" in message
    assert "counts as 2" in message


def test_minimum_lengths_count_utf16_code_units_too() -> None:
    # Three characters, six code units: the metastore accepts it as a schema hash.
    assert Record(namespace="ns", key="k", schema_hash=GOTHIC * 3).schema_hash == GOTHIC * 3
    with pytest.raises(ValidationError) as caught:
        Record(namespace="ns", key="k", schema_hash=GOTHIC * 2 + "x")
    assert "must be at least 6 characters, got 5" in messages(caught)[0]


def test_tags_and_scopes_count_utf16_code_units() -> None:
    assert Record(namespace="ns", key="k", tags=[EMOJI * 32]).tags == (EMOJI * 32,)
    with pytest.raises(ValidationError) as caught:
        Record(namespace="ns", key="k", tags=[EMOJI * 40])
    assert "[0]: each tag must be 1 to 64 characters, got 80" in messages(caught)[0]
    assert Dataset(slug="abc", name="A", metadata={"iam": {"readScopes": [EMOJI * 64]}}).metadata == {
        "iam": {"readScopes": [EMOJI * 64]}}
    with pytest.raises(ValidationError) as caught:
        Dataset(slug="abc", name="A", metadata={"iam": {"writeScopes": [EMOJI * 65]}})
    assert "iam.writeScopes[0]: each scope must be 1 to 128 characters, got 130" in messages(caught)[0]


def test_recordset_fields_count_utf16_code_units() -> None:
    with pytest.raises(ValidationError) as caught:
        RecordSet.model_validate({"namespace": "ns", "defaults": {"owner": EMOJI * 129},
                                  "records": [{"key": EMOJI * 129}]})
    found = messages(caught)
    assert len(found) == 2 and all("got 258" in message for message in found)


def test_addresses_count_utf16_code_units() -> None:
    assert kinds.parse_address(f"record:ns/{EMOJI * 128}").name == f"ns/{EMOJI * 128}"
    with pytest.raises(ConfigurationError):
        kinds.parse_address(f"record:ns/{EMOJI * 129}")


def test_the_json_schema_states_the_unit_of_every_non_ascii_limit() -> None:
    schema = manifest_schema()
    commented, ascii_only = [], []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if "maxLength" in node:
                (commented if node.get("$comment") == LENGTH_UNIT_COMMENT else ascii_only).append(node)
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    assert len(commented) >= 10
    # Without the note only patterns that admit nothing but ASCII, where units are characters.
    assert {node["pattern"] for node in ascii_only} <= {
        "^[A-Za-z0-9][A-Za-z0-9._-]*$", "^[A-Za-z0-9._-]+$", "^[A-Za-z0-9][A-Za-z0-9:._-]*$"}


def test_the_issue_s_tag_and_key_are_refused_by_validate(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        HEAD + f'kind: Record\nnamespace: compat\nkey: "{EMOJI * 200}"\ntags: ["{EMOJI * 40}"]\n', encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{tmp_path}/r.yaml:4:6: key: must be at most 256 characters, got 400")
    assert lines[1].startswith(f"{tmp_path}/r.yaml:5:8: tags[0]: each tag must be 1 to 64 characters, got 80")


# --- the services' request schemas ---------------------------------------------------------


@pytest.mark.parametrize(
    ("execution", "message"),
    [
        ("fast", "execution: must be null or a mapping of backend and options, got 'fast'"),
        ({"options": {}}, "execution: missing required field 'backend'"),
        ({"backend": 1}, "execution.backend: must be a string, got 1"),
        ({"backend": ""}, "execution.backend: must not be empty"),
        ({"backend": "  "}, "execution.backend: must name a backend, got only white space"),
        ({"backend": "duckdb", "options": None}, "execution.options: must be a mapping, got null"),
        ({"backend": "duckdb", "options": [1]}, "execution.options: must be a mapping, got a list"),
        ({"backend": "duckdb", "engine": "x"}, "execution.engine: unknown field 'engine'; expected backend or options"),
    ],
)
def test_dataset_execution_is_checked_as_the_timestore_checks_it(execution: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Dataset(slug="abc", name="A", metadata={"execution": execution})
    assert messages(caught) == [message]


def test_dataset_execution_is_stored_as_the_timestore_stores_it() -> None:
    def stored(execution: Any) -> dict[str, Any]:
        return Dataset(slug="abc", name="A", metadata={"execution": execution, "x": 1}).metadata

    assert stored({"backend": "duckdb", "options": {"threads": 4}}) == {
        "execution": {"backend": "duckdb", "options": {"threads": 4}}, "x": 1}
    assert stored({"backend": " duckdb ", "options": {}}) == {"execution": {"backend": "duckdb"}, "x": 1}
    assert stored(None) == {"x": 1}


def test_scope_lists_are_checked_before_trimming_as_zod_checks_them() -> None:
    seventeen = [f"s{n}" for n in range(16)] + ["s0"]
    with pytest.raises(ValidationError) as caught:
        Dataset(slug="abc", name="A", metadata={"iam": {"readScopes": seventeen}})
    assert messages(caught) == ["iam.readScopes: at most 16 scopes, got 17"]
    padded = "  " + "s" * 127 + " "
    with pytest.raises(ValidationError) as caught:
        Dataset(slug="abc", name="A", metadata={"iam": {"readScopes": [padded]}})
    assert messages(caught) == ["iam.readScopes[0]: each scope must be 1 to 128 characters, got 130"]
    kept = Dataset(slug="abc", name="A", metadata={"iam": {"readScopes": [" a", "a", "b "], "writeScopes": []}})
    assert kept.metadata == {"iam": {"readScopes": ["a", "b"]}}
    assert Dataset(slug="abc", name="A", metadata={"iam": None, "x": 1}).metadata == {"x": 1}


def test_retention_metadata_must_be_a_mapping() -> None:
    assert Retention.model_validate({"metadata": {"a": 1}}).as_policy() == {"metadata": {"a": 1}}
    with pytest.raises(ValidationError) as caught:
        Retention.model_validate({"metadata": "compact-daily"})
    assert [detail["loc"] for detail in caught.value.errors()] == [("metadata",)]


def test_the_repository_layer_normalises_dataset_metadata_by_the_same_rule() -> None:
    given = {"iam": {"readScopes": [" r ", "r", ""], "writeScopes": []},
             "execution": {"backend": " duck ", "options": {}}, "tableName": "t"}
    model = Dataset(slug="abc", name="A", metadata={**given, "iam": {"readScopes": [" r ", "r"]}})
    assert normalize_dataset_metadata(given) == model.metadata == {
        "iam": {"readScopes": ["r"]}, "execution": {"backend": "duck"}, "tableName": "t"}


def test_the_schema_agrees_on_execution() -> None:
    validator = jsonschema.Draft202012Validator(manifest_schema())

    def valid(execution: Any) -> bool:
        return validator.is_valid({"apiVersion": "reconciler/v1", "kind": "Dataset", "slug": "abc", "name": "A",
                                   "metadata": {"execution": execution}})

    assert valid(None) and valid({"backend": "duckdb"}) and valid({"backend": "duckdb", "options": {"a": 1}})
    assert not valid("fast") and not valid({"backend": ""}) and not valid({"backend": " "})
    assert not valid({"options": {}}) and not valid({"backend": "d", "options": []})
    assert not valid({"backend": "d", "engine": "x"})


# --- accepted, but not servable back: warnings ----------------------------------------------


def test_a_record_key_the_metastore_api_cannot_address_is_a_warning(tmp_path: Path) -> None:
    at_limit, over = "k" * 100, "k" * 50 + EMOJI * 26  # 100 and 102 UTF-16 code units
    (tmp_path / "records.yaml").write_text(
        HEAD + f"kind: Record\nnamespace: obs\nkey: {at_limit}\n---\n"
        + HEAD + f'kind: RecordSet\nnamespace: obs\nrecords:\n  - key: fine\n  - key: "{over}"\n',
        encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.stdout == "Valid: 0 storage targets, 0 datasets, 3 records in 1 file.\n"
    assert result.stderr == (
        f"{tmp_path}/records.yaml:11:10: warning: record:obs/{over}: its key is 102 characters long (UTF-16 code "
        "units); the metastore stores it, but its HTTP API takes at most 100 in a path segment, so the record can "
        "never be read, updated or deleted by key through /records/<namespace>/<key>\n")


def test_a_namespace_the_metastore_api_cannot_address_is_one_warning_per_document(tmp_path: Path) -> None:
    namespace = "n" * 101
    (tmp_path / "set.yaml").write_text(
        HEAD + f"kind: RecordSet\nnamespace: {namespace}\nrecords:\n  - key: a\n  - key: b\n  - key: c\n",
        encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0, result.output
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"{tmp_path}/set.yaml:3:12: warning: record:{namespace}/a (and 2 other records of "
                           "this document): its namespace is 101 characters long (UTF-16 code units)")


def test_warnings_leave_the_plan_s_tree_unchanged(tmp_path: Path) -> None:
    from reconciler.manifests import load_tree

    (tmp_path / "r.yaml").write_text(HEAD + f"kind: Record\nnamespace: obs\nkey: {'k' * 101}\n", encoding="utf-8")
    tree = load_tree(tmp_path)
    assert [r.model.key for r in tree.records] == ["k" * 101]
    assert len(tree.warnings) == 1 and tree.warnings[0].line == 4
