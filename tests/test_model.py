"""The manifest models: limits, normalisation, the RecordSet merge rule and addresses."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from reconciler.errors import ConfigurationError
from reconciler.core import kinds
from reconciler.core.kinds.dataset import Dataset, Retention
from reconciler.core.kinds.record import Record, RecordSet
from reconciler.core.kinds.storage_target import StorageTarget
from reconciler.core.model import (
    Address,
    env_references,
    field_names,
    format_path,
    substitute_env,
)


def errors(excinfo: pytest.ExceptionInfo[ValidationError]) -> list[tuple[tuple[Any, ...], str]]:
    """(loc, message) of each error, the message as a person reads it."""
    return [(tuple(e["loc"]), e["msg"]) for e in excinfo.value.errors()]


# --- addresses ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind", "name"),
    [
        ("storage-target:timestore-clickhouse", "storage-target", "timestore-clickhouse"),
        ("dataset:observatory-readings", "dataset", "observatory-readings"),
        ("record:observatory/sensor-0001", "record", "observatory/sensor-0001"),
        ("record:fleet/vehicle/van-017", "record", "fleet/vehicle/van-017"),
    ],
)
def test_address_parses_and_prints_back(text: str, kind: str, name: str) -> None:
    address = kinds.parse_address(text)
    assert (address.kind, address.name) == (kind, name)
    assert str(address) == text


def test_record_address_splits_on_the_first_slash() -> None:
    address = kinds.parse_address("record:fleet/vehicle/van-017")
    assert address.name.partition("/") == ("fleet", "/", "vehicle/van-017")
    assert address == Address("record", "fleet/vehicle/van-017")
    assert Record(namespace="fleet", key="vehicle/van-017").address == address


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "observatory-readings",
            "invalid address 'observatory-readings': expected <kind>:<name> "
            "with kind one of storage-target, dataset, record",
        ),
        (
            "table:x",
            "invalid address 'table:x': expected <kind>:<name> with kind one of "
            "storage-target, dataset, record",
        ),
        ("dataset:a b", "invalid address 'dataset:a b': expected dataset:<slug>"),
        ("dataset:ab", "invalid address 'dataset:ab': expected dataset:<slug>"),
        ("record:observatory", "invalid address 'record:observatory': expected record:<namespace>/<key>"),
        ("record:/key", "invalid address 'record:/key': expected record:<namespace>/<key>"),
        ("storage-target:", "invalid address 'storage-target:': expected storage-target:<name>"),
    ],
)
def test_malformed_address_is_a_configuration_error(text: str, message: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        kinds.parse_address(text)
    assert excinfo.value.message == message


def test_an_identity_has_one_part_per_identity_field_and_only_the_last_holds_a_slash() -> None:
    record, dataset = kinds.kind("record"), kinds.kind("dataset")
    assert record.valid_identity("ns/a/b") and not record.valid_identity("ns")
    assert not record.valid_identity("n s/k") and not dataset.valid_identity("abc/d")
    assert dataset.valid_identity("abc") and not dataset.valid_identity("ab")


def test_addresses_sort_by_kind_then_name() -> None:
    addresses = [Address("record", "b/k"), Address("dataset", "zzz"), Address("dataset", "aaa")]
    assert [str(a) for a in sorted(addresses)] == ["dataset:aaa", "dataset:zzz", "record:b/k"]


def test_every_kind_has_its_address() -> None:
    assert str(StorageTarget(name="ch", type="clickhouse").address) == "storage-target:ch"
    assert str(Dataset(slug="abc", name="A").address) == "dataset:abc"


# --- records ------------------------------------------------------------------------------


def test_record_tags_are_trimmed_and_deduplicated_in_first_order() -> None:
    record = Record(namespace="ns", key="k", tags=[" iot", "raw ", "iot", "raw", "edge"])
    assert record.tags == ("iot", "raw", "edge")


def test_equal_intent_gives_equal_records() -> None:
    one = Record(namespace="ns", key="k", tags=["a", " b"])
    two = Record.model_validate(
        {"namespace": "ns", "key": "k", "tags": ["a", "b", "a"], "deleted": False, "protect": False}
    )
    assert one == two


@pytest.mark.parametrize(
    ("tags", "loc", "message"),
    [
        (["ok", "x" * 65], ("tags",), "[1]: each tag must be 1 to 64 characters, got 65"),
        (["ok", ""], ("tags",), "[1]: each tag must be 1 to 64 characters, got 0"),
        (["ok", "   "], ("tags",), "[1]: each tag must hold more than white space"),
        # The metastore checks each tag as given, before trimming.
        (["ok", " " + "x" * 64], ("tags",), "[1]: each tag must be 1 to 64 characters, got 65"),
        (["ok", 5], ("tags",), "[1]: must be a string, got 5"),
        ([f"t{n}" for n in range(129)], ("tags",), "at most 128 tags, got 129"),
        ("iot", ("tags",), "must be a list of tags, got 'iot'"),
    ],
)
def test_record_tag_limits(tags: Any, loc: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Record(namespace="ns", key="k", tags=tags)
    assert errors(excinfo) == [(loc, message)]


def test_128_tags_are_allowed_and_repeats_count_as_the_services_count_them() -> None:
    tags = [f"t{n}" for n in range(128)]
    assert len(Record(namespace="ns", key="k", tags=tags).tags) == 128
    assert Record(namespace="ns", key="k", tags=["a", " a", "b"]).tags == ("a", "b")
    # The metastore's request schema counts the list as given, repeats included.
    with pytest.raises(ValidationError) as excinfo:
        Record(namespace="ns", key="k", tags=[*tags, "t0"])
    assert errors(excinfo) == [(("tags",), "at most 128 tags, got 129")]


@pytest.mark.parametrize("value", ["yes", 1, "true", None])
def test_booleans_must_be_real_booleans(value: Any) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Record.model_validate({"namespace": "ns", "key": "k", "protect": value})
    assert errors(excinfo)[0][0] == ("protect",)


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"namespace": "", "key": "k"}, ("namespace",)),
        ({"namespace": "-ns", "key": "k"}, ("namespace",)),
        ({"namespace": "a/b", "key": "k"}, ("namespace",)),
        ({"namespace": "n" * 129, "key": "k"}, ("namespace",)),
        ({"namespace": "ns", "key": ""}, ("key",)),
        ({"namespace": "ns", "key": "k" * 257}, ("key",)),
        ({"namespace": "ns", "key": "a\nb"}, ("key",)),
        ({"namespace": "ns", "key": "k", "owner": ""}, ("owner",)),
        ({"namespace": "ns", "key": "k", "owner": "o" * 257}, ("owner",)),
        ({"namespace": "ns", "key": "k", "schemaHash": "abcde"}, ("schemaHash",)),
        ({"namespace": "ns", "key": "k", "schemaHash": "h" * 257}, ("schemaHash",)),
    ],
)
def test_record_limits(fields: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Record.model_validate(fields)
    assert [error[0] for error in errors(excinfo)] == [loc]


def test_record_limits_at_their_bounds_are_valid() -> None:
    record = Record(namespace="n:s.1_-" + "n" * 121, key="k/" * 128, owner="o" * 256, schema_hash="h" * 6)
    assert len(record.namespace) == 128 and len(record.key) == 256


def test_record_metadata_dataset_slug_must_be_a_slug() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Record(namespace="ns", key="k", metadata={"datasetSlug": "a b"})
    assert errors(excinfo) == [
        (
            ("metadata",),
            "datasetSlug: must be a dataset slug (3 to 120 letters, digits, '.', '_' and '-'), got 'a b'",
        )
    ]
    assert Record(namespace="ns", key="k", metadata={"datasetSlug": "abc"}).dataset_slug == "abc"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"x": math.nan}, "x: numbers must be finite, got .nan"),
        ({"x": [1, {"y": math.inf}]}, "x[1].y: numbers must be finite, got .inf"),
        ({"x": {1: "one"}}, "x: keys must be strings, got 1"),
        ({"x": {1, 2}}, "x: not a JSON value: set"),
    ],
)
def test_metadata_built_in_python_must_be_json(metadata: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Record(namespace="ns", key="k", metadata=metadata)
    assert errors(excinfo) == [(("metadata",), message)]


def test_models_are_frozen() -> None:
    record = Record(namespace="ns", key="k")
    with pytest.raises(ValidationError):
        record.key = "other"  # type: ignore[misc]


def test_python_names_and_camel_case_aliases_both_construct() -> None:
    assert Record(namespace="ns", key="k", schema_hash="sha256-1") == Record.model_validate(
        {"namespace": "ns", "key": "k", "schemaHash": "sha256-1"}
    )
    assert field_names(Record)[:2] == ["apiVersion", "kind"]
    assert "schemaHash" in field_names(Record)


# --- datasets -----------------------------------------------------------------------------


def test_dataset_iam_is_normalised() -> None:
    dataset = Dataset(
        slug="abc",
        name="A",
        metadata={
            "iam": {"readScopes": [" timestore:read ", "timestore:read", "fleet:read"], "writeScopes": []},
            "team": "fleet",
        },
    )
    assert dataset.metadata == {"iam": {"readScopes": ["timestore:read", "fleet:read"]}, "team": "fleet"}


def test_empty_iam_is_removed() -> None:
    assert Dataset(slug="abc", name="A", metadata={"iam": {}}).metadata == {}
    assert Dataset(slug="abc", name="A", metadata={"iam": {"readScopes": []}}).metadata == {}


def test_equal_intent_gives_equal_datasets() -> None:
    one = Dataset(slug="abc", name="A", metadata={"iam": {"readScopes": ["r", "r "], "writeScopes": []}})
    two = Dataset.model_validate(
        {
            "slug": "abc",
            "name": "A",
            "status": "active",
            "protect": False,
            "purge": False,
            "metadata": {"iam": {"readScopes": ["r"]}},
        }
    )
    assert one == two


def test_iam_problems_are_all_reported() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Dataset(
            slug="abc",
            name="A",
            metadata={
                "iam": {
                    "readScopes": [f"s{n}" for n in range(17)],
                    "writeScopes": ["x" * 129],
                    "adminScopes": [],
                }
            },
        )
    assert errors(excinfo) == [
        (
            ("metadata",),
            "iam.adminScopes: unknown field 'adminScopes'; expected readScopes or writeScopes (and 2 more)",
        )
    ]
    context = excinfo.value.errors()[0]["ctx"]
    assert [message for _, message, _ in context["problems"]] == [
        "unknown field 'adminScopes'; expected readScopes or writeScopes",
        "at most 16 scopes, got 17",
        "each scope must be 1 to 128 characters, got 129",
    ]


def test_iam_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError) as excinfo:
        Dataset(slug="abc", name="A", metadata={"iam": ["timestore:read"]})
    assert errors(excinfo) == [
        (("metadata",), "iam: must be null or a mapping of readScopes and writeScopes, got a list")
    ]


@pytest.mark.parametrize(
    ("fields", "loc"),
    [
        ({"slug": "ab"}, ("slug",)),
        ({"slug": "a" * 121}, ("slug",)),
        ({"slug": "a/b"}, ("slug",)),
        ({"name": ""}, ("name",)),
        ({"name": "n" * 161}, ("name",)),
        ({"description": "d" * 1001}, ("description",)),
        ({"status": "archived"}, ("status",)),
        ({"storageTarget": "-x"}, ("storageTarget",)),
        ({"retention": {"mode": "weekly"}}, ("retention", "mode")),
        ({"retention": {"rules": {"maxAgeHours": 0}}}, ("retention", "rules", "maxAgeHours")),
        ({"retention": {"rules": {"maxTotalBytes": -1}}}, ("retention", "rules", "maxTotalBytes")),
        ({"retention": {"deleteGraceMinutes": -1}}, ("retention", "deleteGraceMinutes")),
        ({"retention": {"coldStorageAfterHours": 0}}, ("retention", "coldStorageAfterHours")),
        ({"retention": {"coldStorageAfterHours": True}}, ("retention", "coldStorageAfterHours")),
    ],
)
def test_dataset_limits(fields: dict[str, Any], loc: tuple[str, ...]) -> None:
    with pytest.raises(ValidationError) as excinfo:
        Dataset.model_validate({"slug": "abc", "name": "A", **fields})
    assert [error[0] for error in errors(excinfo)] == [loc]


def test_retention_keeps_unknown_keys_and_renders_the_policy() -> None:
    retention = Retention.model_validate(
        {
            "mode": "hybrid",
            "rules": {"maxAgeHours": 720, "tier": "hot"},
            "deleteGraceMinutes": 0,
            "owner": "ops",
        }
    )
    assert retention.as_policy() == {
        "mode": "hybrid",
        "rules": {"maxAgeHours": 720, "tier": "hot"},
        "deleteGraceMinutes": 0,
        "owner": "ops",
    }


def test_dataset_defaults() -> None:
    dataset = Dataset(slug="abc", name="A")
    assert (dataset.status, dataset.protect, dataset.purge, dataset.metadata) == ("active", False, False, {})


# --- storage targets ----------------------------------------------------------------------


def test_storage_target_accepts_well_formed_environment_references() -> None:
    target = StorageTarget(
        name="ch",
        type="clickhouse",
        config={"user": "${env:CH_USER}", "hosts": ["${env:CH_HOST}:9000"], "note": "$${env:LITERAL}"},
    )
    assert target.config["user"] == "${env:CH_USER}"


def test_malformed_environment_references_are_all_reported() -> None:
    with pytest.raises(ValidationError) as excinfo:
        StorageTarget(
            name="ch",
            type="clickhouse",
            config={"a": "${env:}", "b": {"c": ["${env:9X}"]}, "d": "${HOME}", "e": "${env:X"},
        )
    context = excinfo.value.errors()[0]["ctx"]
    assert [(path, message) for path, message, _ in context["problems"]] == [
        (
            ("a",),
            "malformed reference '${env:}': expected ${env:NAME} with NAME matching ^[A-Za-z_][A-Za-z0-9_]*$",
        ),
        (
            ("b", "c", 0),
            "malformed reference '${env:9X}': expected ${env:NAME} with NAME matching "
            "^[A-Za-z_][A-Za-z0-9_]*$",
        ),
        (
            ("d",),
            "malformed reference '${HOME}': expected ${env:NAME} with NAME matching ^[A-Za-z_][A-Za-z0-9_]*$",
        ),
        (("e",), "unclosed '${'; write '$${' for a literal '${'"),
    ]


def test_environment_reference_name_followed_by_a_line_break_is_malformed() -> None:
    # "$" in the name pattern also matches before a final line break; the whole name must match.
    with pytest.raises(ValidationError) as excinfo:
        StorageTarget(name="ch", type="clickhouse", config={"a": "${env:PASSWORD\n}"})
    context = excinfo.value.errors()[0]["ctx"]
    assert [(path, message) for path, message, _ in context["problems"]] == [
        (("a",), "malformed reference '${env:PASSWORD\\n}': expected ${env:NAME} with NAME matching "
                 "^[A-Za-z_][A-Za-z0-9_]*$"),
    ]


def test_environment_references_are_found_and_substituted() -> None:
    text = "clickhouse://${env:USER}:${env:PASSWORD}@host/$${not_a_ref}"
    assert env_references(text) == ["USER", "PASSWORD"]
    assert substitute_env(text, {"USER": "u", "PASSWORD": "p"}) == "clickhouse://u:p@host/${not_a_ref}"
    with pytest.raises(KeyError):
        substitute_env(text, {"USER": "u"})


def test_storage_target_type_is_one_of_the_catalog_kinds() -> None:
    with pytest.raises(ValidationError) as excinfo:
        StorageTarget(name="ch", type="mysql")  # type: ignore[arg-type]
    assert errors(excinfo)[0][0] == ("type",)


# --- record sets --------------------------------------------------------------------------


def _recordset(defaults: dict[str, Any], records: list[dict[str, Any]]) -> RecordSet:
    return RecordSet.model_validate(
        {"namespace": "observatory", "defaults": defaults, "records": records}, by_alias=True, by_name=False
    )


def test_recordset_merge_rule() -> None:
    recordset = _recordset(
        {"owner": "team", "tags": ["iot"], "metadata": {"unit": "celsius", "site": "north"}, "protect": True},
        [
            {"key": "plain"},
            {"key": "own-scalars", "owner": "other", "protect": False, "schemaHash": "sha256-1"},
            {"key": "merged-metadata", "metadata": {"site": "south", "model": "TMP-117"}},
            {"key": "own-tags", "tags": ["humidity"]},
            {"key": "no-tags", "tags": []},
            {"key": "no-owner", "owner": None},
        ],
    )
    records = {record.key: record for record in recordset.expand()}
    assert records["plain"] == Record(
        namespace="observatory",
        key="plain",
        owner="team",
        tags=["iot"],
        metadata={"unit": "celsius", "site": "north"},
        protect=True,
    )
    assert (records["own-scalars"].owner, records["own-scalars"].protect) == ("other", False)
    assert records["own-scalars"].schema_hash == "sha256-1"
    assert records["merged-metadata"].metadata == {"unit": "celsius", "site": "south", "model": "TMP-117"}
    assert records["own-tags"].tags == ("humidity",)
    assert records["no-tags"].tags == ()
    assert records["no-owner"].owner is None


def test_expanded_records_equal_validated_records_and_know_their_given_fields() -> None:
    recordset = _recordset({"owner": "team"}, [{"key": "a", "tags": ["x", "x"], "metadata": {"m": 1}}])
    (record,) = recordset.expand()
    validated = Record.model_validate(
        {"namespace": "observatory", "key": "a", "owner": "team", "tags": ["x"], "metadata": {"m": 1}}
    )
    assert record == validated
    assert record.model_fields_set == validated.model_fields_set
    assert record.model_dump() == validated.model_dump()
    assert record.address == validated.address


@pytest.mark.parametrize("field", ["tags", "metadata", "deleted", "protect", "purge"])
def test_recordset_fields_cannot_be_null(field: str) -> None:
    with pytest.raises(ValidationError) as excinfo:
        _recordset({}, [{"key": "a", field: None}])
    assert errors(excinfo) == [(("records", 0, field), "must not be null; leave the field out instead")]


def test_recordset_items_cannot_set_a_namespace() -> None:
    with pytest.raises(ValidationError) as excinfo:
        _recordset({}, [{"key": "a", "namespace": "other"}])
    assert errors(excinfo)[0][0] == ("records", 0, "namespace")


def test_format_path() -> None:
    assert (
        format_path(("records", 3, "metadata", "iam", "readScopes", 0))
        == "records[3].metadata.iam.readScopes[0]"
    )
    assert format_path(()) == ""
