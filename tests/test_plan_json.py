"""The plan JSON: it matches schemas/plan.schema.json and round-trips; edited files are refused."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest

from reconciler.core.diff import FIELDS, Applied, Desired, Live, Location, diff
from reconciler.errors import ConfigurationError
from reconciler.core.plan import FORMAT_VERSION, Author, Plan, Removal, from_diff
from reconciler.render.plan import render_json

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "schemas" / "plan.schema.json"
SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
ADA = Author("Ada Lovelace", "ada@example.com", SHA)
PATH = "manifests/catalog.yaml"


def loc(line: int) -> Location:
    return Location(PATH, line, line + 4)


def dataset(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"name": "Readings", "description": None, "status": "active", "storageTarget": None,
                            "metadata": {}, "retention": None}
    return {**base, **fields}


def record(**fields: Any) -> dict[str, Any]:
    return {"owner": "team", "tags": ["iot"], "schemaHash": None, "metadata": {}, "deleted": False, **fields}


def applied(address: str, kind: str, fields: dict[str, Any], protect: bool = False) -> Applied:
    return Applied(address, kind, "default", fields, protect=protect, commit="0" * 40, path=PATH, line=1, end_line=2)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return loaded


@pytest.fixture(scope="module")
def full_plan() -> Plan:
    """Every action, adoption and refresh, error, drift and note findings, unmanaged objects, a secret."""
    ch, new, upd, back, gone, old, prot = ("storage-target:ch", "dataset:new", "dataset:upd", "dataset:back",
                                           "dataset:gone", "record:obs/old/sensor-1", "dataset:prot")
    adopt, refresh, ingest = "record:obs/adopt", "dataset:refresh", "dataset:made-by-ingestion"
    renamed, was = "dataset:renamed", "dataset:was"
    desired = {
        ch: Desired(ch, "storage-target", {"type": "clickhouse", "config": {"host": "ch", "password": "hunter2"}},
                    loc(1), secret_paths=frozenset({"config.password"})),
        new: Desired(new, "dataset", {"name": "New", "storageTarget": "ch", "retention": {"mode": "time"}},
                     loc(10), protect=True),
        upd: Desired(upd, "dataset", {"name": "Readings v2", "metadata": {"unit": "celsius", "k": 1}}, loc(20)),
        back: Desired(back, "dataset", {"name": "Readings"}, loc(30)),
        gone: Desired(gone, "dataset", {"name": "Readings"}, loc(40), purge=True),
        adopt: Desired(adopt, "record", {"owner": "team", "tags": ["iot"]}, loc(50)),
        refresh: Desired(refresh, "dataset", {"name": "Hand made"}, loc(60)),
        renamed: Desired(renamed, "dataset", {"name": "Renamed"}, loc(70), renamed_from=was),
    }
    live = {
        upd: Live(upd, "dataset", dataset(metadata={"unit": "kelvin", "k": 1, "tableName": "t"}), "2026-11-20T10:00:00.000Z",
                  updated_at="2026-11-20T10:00:00.000Z", updated_by="svc@example.com"),
        back: Live(back, "dataset", dataset(status="inactive"), "t-back"),
        gone: Live(gone, "dataset", dataset(), "t-gone"),
        old: Live(old, "record", record(), "7"),
        prot: Live(prot, "dataset", dataset(name="P"), "t-prot"),
        adopt: Live(adopt, "record", record(), "3"),
        refresh: Live(refresh, "dataset", dataset(name="Hand made"), "t-refresh"),
        ingest: Live(ingest, "dataset", dataset(), "t-ingest"),
        was: Live(was, "dataset", dataset(name="Was"), "t-was"),
    }
    done = {
        upd: applied(upd, "dataset", {"name": "Readings", "metadata": {"unit": "fahrenheit", "k": 1}}),
        back: applied(back, "dataset", {"name": "Readings", "status": "inactive"}),
        gone: applied(gone, "dataset", {"name": "Readings"}),
        old: applied(old, "record", {"owner": "team", "tags": ["iot"]}),
        prot: applied(prot, "dataset", {"name": "P"}, protect=True),
        refresh: applied(refresh, "dataset", {"name": "Readings"}),
        "storage-target:retired": applied("storage-target:retired", "storage-target", {"type": "local"}),
        was: applied(was, "dataset", {"name": "Was"}),
    }
    result = diff(desired, live, done, source="default")
    authors = {address: ADA for address in [*desired, old]}
    authors[new] = Author("Bob", "bob@example.com", None, uncommitted=True)
    return from_diff(result, source="default", commit=SHA, dirty=True, created_at="2026-11-21T12:00:00Z",
                     authors=authors, secrets={ch: {"config.password": "${env:CH_PW}"}})


def test_the_fixture_holds_everything_the_format_can_say(full_plan: Plan) -> None:
    assert full_plan.summary == {"create": 2, "update": 1, "rename": 1, "archive": 1, "restore": 1, "purge": 1}
    rename = next(c for c in full_plan.to_json()["changes"] if c["action"] == "rename")
    assert (rename["address"], rename["from"], rename["fields"]) == ("dataset:renamed", "dataset:was", ["slug", "name"])
    assert {b.reason for b in full_plan.bookkeeping} == {"adopt", "refresh"}
    assert {f.severity for f in full_plan.findings} == {"error", "drift", "note"}
    assert full_plan.unmanaged == ("dataset:made-by-ingestion",)


def test_the_schema_is_a_valid_draft_2020_12_schema(schema: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_the_schema_documents_every_property(schema: dict[str, Any]) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for name, sub in (node.get("properties") or {}).items():
                assert "title" in sub and "description" in sub, f"{where}.{name}"
            for key, sub in node.items():
                if key != "allOf":  # conditions that narrow declared properties, not declarations
                    walk(sub, f"{where}.{key}")
        elif isinstance(node, list):
            for i, sub in enumerate(node):
                walk(sub, f"{where}[{i}]")

    walk(schema, "$")


def test_the_schema_names_exactly_the_managed_fields(schema: dict[str, Any]) -> None:
    managed = {name for names in FIELDS.values() for name in names}
    assert set(schema["$defs"]["field"]["enum"]) == managed | {"protect", "slug"}  # a rename's identity too


def test_the_committed_schema_takes_its_kinds_from_the_registry(schema: dict[str, Any]) -> None:
    # What a saved plan is checked against is the file with its kinds from the registry; the
    # file itself must be that already (regenerate: python -m reconciler.app.saved).
    from reconciler.app.saved import plan_schema, render_plan_schema

    assert plan_schema() == schema
    assert SCHEMA_PATH.read_text(encoding="utf-8") == render_plan_schema()
    assert schema["$defs"]["kind"]["enum"] == ["storage-target", "dataset", "record"]
    assert [rule["then"]["properties"]["address"]["pattern"] for rule in schema["$defs"]["change"]["allOf"]
            if "kind" in rule["if"]["properties"]] == ["^storage-target:", "^dataset:", "^record:"]


def test_plan_json_validates_against_the_schema(full_plan: Plan, schema: dict[str, Any]) -> None:
    data = full_plan.to_json()
    jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(data)
    assert set(data) == set(schema["required"])
    # What the command line prints is the same document.
    jsonschema.validate(json.loads(render_json(full_plan)), schema, cls=jsonschema.Draft202012Validator)


def test_an_empty_plan_validates(schema: dict[str, Any]) -> None:
    plan = Plan(source="default", commit=None, dirty=False, created_at="2026-11-21T12:00:00Z")
    jsonschema.validate(plan.to_json(), schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("edit", [
    lambda d: d.update(extra=1),
    lambda d: d["changes"][0].update(extra=1),
    lambda d: d["changes"][0].update(action="delete"),
    lambda d: d["changes"][0].update(kind="table"),
    lambda d: d["changes"][0].update(address="dataset/no-colon"),
    lambda d: d["changes"][0].update(kind="record"),  # disagrees with the address
    lambda d: d["findings"][0].update(severity="warning"),
    lambda d: d["summary"].pop("purge"),
    lambda d: d.update(format_version=1),
    lambda d: d.update(digest="not-a-digest"),
    lambda d: d["unmanaged"].append("table:x"),
])
def test_the_schema_rejects_what_the_format_does_not_allow(full_plan: Plan, schema: dict[str, Any],
                                                           edit: Any) -> None:
    data = copy.deepcopy(full_plan.to_json())
    edit(data)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("moved_to", [None, "attic/catalog.yaml"])
def test_a_removal_round_trips_with_where_its_file_went(full_plan: Plan, schema: dict[str, Any],
                                                       moved_to: str | None) -> None:
    removed = replace(full_plan, removals={"record:obs/old/sensor-1": Removal(PATH, SHA, True, moved_to)})
    data = json.loads(render_json(removed))
    jsonschema.Draft202012Validator(schema).validate(data)
    (written,) = [c["removal"] for c in data["changes"] if c["removal"] is not None]
    # No move, no key: such plans are written (and digested) exactly as before the key existed.
    assert written == {"path": PATH, "commit": SHA, "file_removed": True,
                       **({"moved_to": moved_to} if moved_to else {})}
    again = Plan.from_json(data)
    assert again.digest() == data["digest"] and dict(again.removals) == dict(removed.removals)


def test_round_trip_keeps_every_value_and_the_digest(full_plan: Plan) -> None:
    data = json.loads(render_json(full_plan))
    again = Plan.from_json(data)
    assert again.digest() == full_plan.digest() == data["digest"]
    assert again.to_json() == full_plan.to_json()
    # Changes without secrets come back equal; the one with a secret keeps its ${env:...} placeholder.
    secret = "storage-target:ch"
    assert [c for c in again.changes if c.address != secret] == \
        [c for c in full_plan.changes if c.address != secret]
    assert again.bookkeeping == full_plan.bookkeeping
    assert again.findings == full_plan.findings and again.unmanaged == full_plan.unmanaged
    assert dict(again.authors) == {c.address: full_plan.author_of(c.address) for c in full_plan.changes}
    (restored,) = [c for c in again.changes if c.address == secret]
    assert restored.after is not None and restored.after["config"]["password"] == "${env:CH_PW}"
    assert again.secrets == {secret: {"config.password": "${env:CH_PW}"}}


def test_the_saved_plan_never_holds_a_resolved_secret(full_plan: Plan) -> None:
    (change,) = [c for c in full_plan.changes if c.address == "storage-target:ch"]
    assert change.after is not None and change.after["config"]["password"] == "hunter2"
    assert "hunter2" not in render_json(full_plan)


@pytest.mark.parametrize("edit", [
    lambda d: d["changes"][0]["after"].update(name="Something else"),
    lambda d: d["changes"][0].update(against="2000-01-01T00:00:00.000Z"),
    lambda d: d["changes"].pop(),
    lambda d: d.update(source="other-team"),
])
def test_a_tampered_plan_is_refused(full_plan: Plan, edit: Any) -> None:
    data = copy.deepcopy(full_plan.to_json())
    edit(data)
    with pytest.raises(ConfigurationError, match="its digest does not match its content"):
        Plan.from_json(data)


@pytest.mark.parametrize("version", [0, 1, 3, "2", None])
def test_an_unknown_format_version_is_refused(full_plan: Plan, version: Any) -> None:
    data = copy.deepcopy(full_plan.to_json())
    data["format_version"] = version
    with pytest.raises(ConfigurationError, match="format_version"):
        Plan.from_json(data)
    assert FORMAT_VERSION == 2


def test_the_documented_example_is_a_valid_plan(schema: dict[str, Any]) -> None:
    text = (ROOT / "docs" / "plan-format.md").read_text(encoding="utf-8")
    example = json.loads(text.split("### Example\n\n```json\n", 1)[1].split("```", 1)[0])
    jsonschema.validate(example, schema, cls=jsonschema.Draft202012Validator)
    plan = Plan.from_json(example)  # its digest is genuine
    assert plan.digest() == example["digest"]
