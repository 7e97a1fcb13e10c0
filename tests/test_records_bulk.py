"""The bulk road of a JSON Lines records file (manifests/datafile.py, ``_bulk``) against the line
road: for any file, and any tree around it, the two must accept the same things, declare the same
records at the same lines, and report the same problems, links and warnings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.core.kinds.record import RecordSet
from reconciler.core.model import Address
from reconciler.errors import ManifestError
from reconciler.manifests import load_tree
from reconciler.manifests.datafile import RecordRows, load_lines, load_records
from reconciler.manifests.loader import _sorted_references
from reconciler.manifests.tree import Location, Reference
from tests.helpers import write

pytestmark = pytest.mark.unit

_KEYS = st.sampled_from(["a-1", "A-1", "b-2", "c/3", "k" * 101, "x" * 256, "y" * 257, "caf\u00e9", "t\x7fab",
                         "", " pad"])
_TAGS = st.lists(st.sampled_from(["iot", "iot", " x", "z" * 64, "z" * 65, "", "\u00fc"]), max_size=4)
_METADATA = st.fixed_dictionaries({}, optional={
    "datasetSlug": st.sampled_from(["declared-ds", "missing-ds", "other-missing", "no", 7, ["x"]]),
    "unit": st.sampled_from(["c", "\u00b0c", None]),
    "nested": st.recursive(st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False, width=32),
                           lambda inner: st.lists(inner, max_size=2) | st.dictionaries(st.sampled_from("ab"), inner,
                                                                                     max_size=2), max_leaves=4),
    "big": st.just(10**25),
})
_ITEMS = st.fixed_dictionaries({"key": _KEYS}, optional={
    "owner": st.sampled_from(["team-a", "", "o" * 257, None, 3]),
    "tags": _TAGS | st.just("iot"),
    "schemaHash": st.sampled_from(["sha256-abcdef", "short", "h" * 257]),
    "metadata": _METADATA | st.just([1]),
    "deleted": st.booleans() | st.just("yes"),
    "protect": st.booleans(),
    "purge": st.booleans(),
    "extra": st.just(1),
})
# Items the bulk road takes (plain keys, owners, tags, hashes), near-misses left to _ITEMS.
_PLAIN_ITEMS = st.fixed_dictionaries({"key": st.sampled_from(["a-1", "A-1", "b-2", "c/3", "k" * 101, "x" * 256])},
                                     optional={
    "owner": st.sampled_from(["team-a", "o" * 256]),
    "tags": st.lists(st.sampled_from(["iot", "iot", "z" * 64, "a b"]), max_size=4)
    | st.lists(st.sampled_from(["iot", " x", "x ", "", "z" * 65, "\u00fc"]), min_size=1, max_size=2),
    "schemaHash": st.sampled_from(["sha256-abcdef", "h" * 256]),
    "metadata": _METADATA.filter(lambda metadata: "big" not in metadata and metadata.get("datasetSlug") in (
        None, "declared-ds", "missing-ds", "other-missing")),
    "deleted": st.booleans(),
    "protect": st.booleans(),
})


def _line(item: dict[str, Any], form: str) -> str:
    """One line as a user's export might write it: compact (the bulk road's case), with spaces,
    ASCII-escaped, or with a key given twice."""
    if form == "spaced":
        return json.dumps(item)
    if form == "escaped":
        return json.dumps(item, separators=(",", ":"))  # ensure_ascii: non-ASCII text as \\u escapes
    text = json.dumps(item, separators=(",", ":"), ensure_ascii=False)
    if form == "twice":
        return text.replace("{", '{"key":"dup",', 1)
    return text


def _file(items: list[dict[str, Any]], forms: list[str], tail: str) -> bytes:
    lines = [_line(item, form) for item, form in zip(items, forms, strict=False)]
    return ("\n".join(lines) + tail).encode()


_FORMS = st.lists(st.sampled_from(["compact"] * 6 + ["spaced", "escaped", "twice"]), min_size=8, max_size=8)
_TAILS = st.sampled_from(["\n", "", "\n\n", "\n  \n", "\r\n"])

RECORDSET = RecordSet.model_validate({
    "apiVersion": "reconciler/v1", "kind": "RecordSet", "namespace": "fleet",
    "defaults": {"owner": "team-fleet", "tags": ["truck"], "metadata": {"region": "eu", "datasetSlug": "declared-ds"}},
    "recordsFile": "fleet.jsonl"}, by_alias=True)


def _outcome(loaded: Any) -> tuple[list[tuple[str, Any, dict[str, Any]]], list[Any]]:
    return ([(str(item.address), item.location, item.model.__dict__) for item in loaded.declared],
            sorted(loaded.problems))


@settings(max_examples=300, deadline=None)
@given(st.lists(_PLAIN_ITEMS, min_size=1, max_size=8) | st.lists(_ITEMS | _PLAIN_ITEMS, min_size=1, max_size=8),
       st.just(["compact"] * 8) | _FORMS, _TAILS)
@example([{"key": "a-1", "tags": ["iot", "iot"], "metadata": {"datasetSlug": "declared-ds"}}], ["compact"] * 8, "\n")
def test_a_data_file_declares_the_same_records_and_problems_by_either_road(
        items: list[dict[str, Any]], forms: list[str], tail: str) -> None:
    data = _file(items, forms, tail.replace("\r\n", "\n") if "\r" not in tail else tail)
    if tail == "\r\n":
        data = data.replace(b"\n", b"\r\n")
    assert _outcome(load_records(RECORDSET, "fleet.jsonl", data)) == _outcome(load_lines(RECORDSET, "fleet.jsonl", data))


def test_a_plain_file_is_kept_as_rows_and_anything_else_is_read_line_by_line() -> None:
    plain = b'{"key":"a-1","tags":["iot"]}\n{"key":"b-2","metadata":{"datasetSlug":"declared-ds"}}\n'
    assert isinstance(load_records(RECORDSET, "fleet.jsonl", plain).declared, RecordRows)
    assert isinstance(load_records(RECORDSET, "fleet.jsonl", b"\xef\xbb\xbf" + plain.replace(b"\n", b"\r\n")).declared,
                      RecordRows)
    for other in (plain.replace(b'"a-1",', b'"a-1", '), plain + b"\n\n", plain.replace(b"a-1", b"\\u0061-1"),
                  plain.replace(b'"iot"', b'"i\\u00f6t"'), b'{"key":"a","key":"b"}\n',
                  b'{"key":"a","metadata":' + b'{"a":' * 70 + b"1" + b"}" * 71 + b"\n"):
        assert not isinstance(load_records(RECORDSET, "fleet.jsonl", other).declared, RecordRows), other


# --- whole trees: identities across files, links, warnings -----------------------------------

_TREE_KEYS = st.sampled_from(["a-1", "A-1", "b-2", "k" * 101, "\uff41-1"])  # a fullwidth "a" folds to "a"
_NAMESPACES = st.sampled_from(["fleet", "Fleet", "depot", "fl\u00ebet"])
_SLUGS = st.sampled_from([None, "declared-ds", "missing-ds"])


@st.composite
def _trees(draw: st.DrawFn) -> dict[str, Any]:
    files = []
    for index in range(draw(st.integers(1, 3))):
        keys = draw(st.lists(_TREE_KEYS, min_size=1, max_size=4))
        items = []
        for key in keys:
            item: dict[str, Any] = {"key": key}
            slug = draw(_SLUGS)
            if slug is not None:
                item["metadata"] = {"datasetSlug": slug}
            items.append(item)
        files.append({"name": draw(st.sampled_from([f"d{index}", "shared"])), "namespace": draw(_NAMESPACES),
                      "items": items, "default_slug": draw(_SLUGS),
                      "order": draw(st.sampled_from(["after", "before"]))})
    yaml_keys = draw(st.lists(_TREE_KEYS, max_size=3, unique=True))
    return {"files": files, "yaml_namespace": draw(_NAMESPACES), "yaml_keys": yaml_keys,
            "one_manifest": draw(st.booleans())}


def _write_tree(root: Path, tree: dict[str, Any], plain: bool) -> Path:
    """The tree: a dataset, a RecordSet of YAML records, and RecordSets naming data files. With
    ``plain`` false, each data file's first line has a space added, which sends it down the
    line road and changes nothing it declares."""
    manifests = root / ("plain" if plain else "lines")
    yaml_items = "".join(f"  - key: {json.dumps(key)}\n" for key in tree["yaml_keys"])
    write(manifests, "b-records.yaml", "apiVersion: reconciler/v1\nkind: RecordSet\n"
          f"namespace: {json.dumps(tree['yaml_namespace'])}\nrecords:\n" + (yaml_items or "  []\n"))
    write(manifests, "a-dataset.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: declared-ds\n"
          "name: Declared\nstorageTarget: missing-target\n")
    for index, data in enumerate(tree["files"]):
        lines = [json.dumps(item, separators=(",", ":"), ensure_ascii=False) for item in data["items"]]
        if not plain:
            lines[0] = lines[0].replace("{", "{ ", 1)
        if not (manifests / f"{data['name']}.jsonl").exists():
            write(manifests, f"{data['name']}.jsonl", "\n".join(lines) + "\n")
        defaults = f"defaults: {{metadata: {{datasetSlug: {data['default_slug']}}}}}\n" if data["default_slug"] else ""
        document = ("apiVersion: reconciler/v1\nkind: RecordSet\n"
                    f"namespace: {json.dumps(data['namespace'])}\n{defaults}recordsFile: {data['name']}.jsonl\n")
        if tree["one_manifest"]:  # every set a document of one file
            sets = manifests / "c-sets.yaml"
            write(manifests, "c-sets.yaml", (sets.read_text() + "---\n" if sets.exists() else "") + document)
        else:
            write(manifests, f"{'c' if data['order'] == 'after' else 'a'}-set-{index}.yaml", document)
    return manifests


def _loaded(root: Path) -> Any:
    try:
        tree = load_tree(root)
    except ManifestError as error:
        return "problems", [(Path(p.path).name, p.line, p.column, p.message.replace(str(root), "<root>"))
                            for p in error.problems]
    return ("tree", len(tree), [(str(d.address), Path(d.location.path).name, d.location.line, d.model.__dict__)
                                for d in tree.objects()],
            [(str(r.target), str(r.source), Path(r.location.path).name, r.location.line) for r in tree.unresolved],
            [(Path(w.path).name, w.line, w.column, w.message) for w in tree.warnings])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_trees())
def test_a_tree_with_data_files_loads_the_same_by_either_road(tmp_path_factory: pytest.TempPathFactory,
                                                             tree: dict[str, Any]) -> None:
    root = tmp_path_factory.mktemp("tree")
    assert _loaded(_write_tree(root, tree, plain=True)) == _loaded(_write_tree(root, tree, plain=False))


def test_two_sets_of_one_file_reading_one_data_file_declare_its_records_line_by_line(tmp_path: Path) -> None:
    data = {"name": "shared", "default_slug": None, "order": "after", "items": [{"key": "a-1"}, {"key": "b-2"}]}
    tree = {"files": [{**data, "namespace": "fleet"}, {**data, "namespace": "depot"}],
            "yaml_namespace": "other", "yaml_keys": [], "one_manifest": True}
    loaded = _loaded(_write_tree(tmp_path, tree, plain=True))
    assert [address for address, *_ in loaded[2][1:]] == [
        "record:fleet/a-1", "record:depot/a-1", "record:fleet/b-2", "record:depot/b-2"]
    assert loaded == _loaded(_write_tree(tmp_path, tree, plain=False))


def test_records_kept_as_rows_are_found_by_address_and_their_missing_links_named(tmp_path: Path) -> None:
    tree = {"files": [{"name": "d0", "namespace": "fleet", "default_slug": "missing-ds", "order": "after",
                       "items": [{"key": "a-1"}, {"key": "b-2", "metadata": {"datasetSlug": "declared-ds"}}]}],
            "yaml_namespace": "depot", "yaml_keys": ["a-1"], "one_manifest": False}
    loaded = load_tree(_write_tree(tmp_path, tree, plain=True))
    assert len(loaded) == 4 and loaded.count("record") == 3
    assert Address("record", "fleet/b-2") in loaded and Address("record", "fleet/c-3") not in loaded
    found = loaded.get(Address("record", "fleet/a-1"))
    assert found is not None and found.location.line == 1 and found.model.__dict__["metadata"] == {"datasetSlug": "missing-ds"}
    assert [(str(r.target), str(r.source), r.location.line) for r in loaded.unresolved] == [
        ("dataset:missing-ds", "record:fleet/a-1", 1), ("storage-target:missing-target", "dataset:declared-ds", 1)]


@pytest.mark.parametrize("first_line", ['{"key":"a-1"}', '{ "key": "a-1" }'], ids=["bulk road", "line road"])
def test_a_key_the_services_cannot_serve_back_is_warned_about_at_its_data_file_line(
        tmp_path: Path, first_line: str) -> None:
    write(tmp_path, "m/s.yaml", "apiVersion: reconciler/v1\nkind: RecordSet\nnamespace: fleet\nrecordsFile: d.jsonl\n")
    write(tmp_path, "m/d.jsonl", first_line + '\n{"key":"' + "k" * 101 + '"}\n')
    (warning,) = load_tree(tmp_path / "m").warnings
    assert (Path(warning.path).name, warning.line, warning.column) == ("d.jsonl", 2, 1)
    assert warning.message.startswith(f"record:fleet/{'k' * 101}: its key is 101 characters long")


_LOCATIONS = st.builds(Location, st.sampled_from(["a.yaml", "b.jsonl", "a b.yaml"]), st.integers(1, 3),
                       st.integers(1, 2), st.integers(1, 4),
                       st.lists(st.tuples(st.integers(1, 3), st.integers(1, 3)), max_size=2).map(tuple))
_ADDRESSES = st.builds(Address, st.sampled_from(["dataset", "record", "storage-target"]),
                       st.sampled_from(["a", "a/b", "B", "\u00e9"]))


@given(st.lists(st.builds(Reference, _ADDRESSES, _ADDRESSES, _LOCATIONS), max_size=12))
def test_links_sort_by_their_spelled_out_order_as_the_dataclass_orders_them(references: list[Reference]) -> None:
    assert _sorted_references(references) == sorted(references)
    if references:
        assert min(references, key=lambda r: r.location.order()).location == min(r.location for r in references)


@pytest.mark.parametrize("data", [
    b'{"key":"a","metadata":{"x":"\xed\xa0\x80"}}\n',  # a surrogate, encoded
    b'{"key":"a","metadata":{"x":"\xc0\x80"}}\n',  # an overlong NUL
    b'{"key":"a"}\n{"key":"b","metadata":{"x":"\xf4\x90\x80\x80"}}\n',  # past U+10FFFF
    b'{"key":"a","metadata":{"x":"\x7f\xef\xbb\xbf"}}\n',  # DEL and a BOM inside a value: valid
    b'{"key":"a\xef\xbb\xbf"}\n',  # a BOM inside a key: valid, not plain
    b'{"key":"a"}\r{"key":"b"}\n',  # a carriage return alone
    b'{"key":"a"}\n\x00\n',
], ids=["surrogate", "overlong", "beyond-unicode", "del-and-bom-in-value", "bom-in-key", "lone-cr", "nul"])
def test_bytes_that_are_not_plain_text_give_the_same_outcome_by_either_road(data: bytes) -> None:
    assert _outcome(load_records(RECORDSET, "fleet.jsonl", data)) == _outcome(load_lines(RECORDSET, "fleet.jsonl", data))


def test_records_kept_as_rows_say_which_addresses_they_declare() -> None:
    rows = load_records(RECORDSET, "fleet.jsonl", b'{"key":"a-1"}\n{"key":"c/3"}\n').declared
    assert isinstance(rows, RecordRows)
    assert rows.declares(Address("record", "fleet/a-1")) and rows.declares(Address("record", "fleet/c/3"))
    assert not rows.declares(Address("record", "fleet/A-1"))  # exact, as the catalog compares
    assert not rows.declares(Address("record", "depot/a-1")) and not rows.declares(Address("dataset", "fleet/a-1"))
    assert not rows.declares("record:fleet/a-1")
    assert rows.located(1) == (Address("record", "fleet/c/3"), rows[1].location)
    assert rows[1].address == Address("record", "fleet/c/3")
