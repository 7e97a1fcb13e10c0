"""Loading manifest trees: locations, every problem at once with its place, the limits, both parse paths."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from reconciler.errors import ConfigurationError, ManifestError
from reconciler.manifests import Location, ManifestTree, load_tree, yamlread
from reconciler.manifests.emit import dump_documents, scalar, to_document
from reconciler.manifests.yamlread import parse_text
from reconciler.core.kinds.dataset import Dataset
from reconciler.core.kinds.record import Record, RecordSet
from reconciler.core.kinds.storage_target import StorageTarget
from reconciler.core.model import Address
from reconciler.core.service_rules import js_trim

BAD = Path(__file__).parent / "bad"
HEAD = "apiVersion: reconciler/v1\n"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)


def write(files: dict[str, str | bytes], root: str = "m") -> Path:
    """Write ``files`` (relative path → text or bytes) under ``root`` in the working directory."""
    base = Path(root)
    base.mkdir(exist_ok=True)
    for name, content in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return base


def problems(root: Path, **options: Any) -> list[str]:
    """Every problem loading ``root`` reports, as printed."""
    with pytest.raises(ManifestError) as excinfo:
        load_tree(root, **options)
    return [str(problem) for problem in excinfo.value.problems]


DATASET = HEAD + "kind: Dataset\nslug: {slug}\nname: Readings\n"


# --- a valid tree -------------------------------------------------------------------------


def test_valid_tree_gives_every_object_with_its_location() -> None:
    root = write(
        {
            "storage.yaml": HEAD
            + "kind: StorageTarget\nname: ch\ntype: clickhouse\nconfig: {database: ts}\n",
            "datasets.yml": "# datasets\n" + DATASET.format(slug="readings") + "storageTarget: ch\n",
            "records/sensors.yaml": HEAD + "kind: RecordSet\nnamespace: obs\ndefaults:\n  owner: team\n"
            "records:\n  - key: s1\n    metadata: {datasetSlug: readings}\n\n  # second\n  - key: s2\n"
            "    tags: [a]\n",
            "notes.txt": "not a manifest",
        }
    )
    tree = load_tree(root)
    assert tree.files == ("m/datasets.yml", "m/records/sensors.yaml", "m/storage.yaml")
    assert [str(item.address) for item in tree.objects()] == [
        "storage-target:ch",
        "dataset:readings",
        "record:obs/s1",
        "record:obs/s2",
    ]
    assert tree.get(Address("dataset", "readings")) is tree.datasets[0]
    assert tree.datasets[0].location == Location("m/datasets.yml", 2, 1, 6)
    assert str(tree.datasets[0].location) == "m/datasets.yml:2"
    s1, s2 = tree.records
    assert s1.location == Location("m/records/sensors.yaml", 7, 5, 8, ((3, 3), (4, 5)))
    assert s2.location == Location("m/records/sensors.yaml", 11, 5, 12, ((3, 3), (4, 5)))
    assert s1.location.line_ranges == ((3, 5), (7, 8))
    assert s2.model == Record(namespace="obs", key="s2", owner="team", tags=["a"])
    assert tree.unresolved == ()


def test_multi_document_files_with_markers_comments_and_empty_documents() -> None:
    text = (
        "# header\n---\n" + DATASET.format(slug="one") + "\n# trailing comment\n---\n# empty\n...\n"
        "---\n" + DATASET.format(slug="two") + "...\n---\n"
    )
    tree = load_tree(write({"a.yaml": text}))
    assert [(str(d.address), d.location.line, d.location.end_line) for d in tree.datasets] == [
        ("dataset:one", 3, 6),
        ("dataset:two", 13, 16),
    ]


def test_recordset_with_unindented_items_and_block_scalars() -> None:
    text = (
        HEAD + "kind: RecordSet\nnamespace: obs\nrecords:\n- key: a\n  metadata:\n    note: |\n      text\n"
        "      # inside the text\n- key: b\n"
    )
    tree = load_tree(write({"a.yaml": text}))
    assert [(r.location.line, r.location.end_line) for r in tree.records] == [(5, 9), (10, 10)]
    assert tree.records[0].model.metadata == {"note": "text\n# inside the text\n"}


def test_crlf_line_endings_and_a_byte_order_mark() -> None:
    text = "\ufeff" + DATASET.format(slug="abc").replace("\n", "\r\n") + "protect: maybe\r\n"
    assert problems(write({"a.yaml": text})) == ["m/a.yaml:5:10: protect: must be true or false, got 'maybe'"]


def test_paths_are_shown_relative_to_the_working_directory(tmp_path: Path) -> None:
    write({"a.yaml": DATASET.format(slug="abc") + "bogus: 1\n"})
    assert problems(Path("m")) == ["m/a.yaml:5:1: unknown field 'bogus'"]
    assert problems(tmp_path / "m") == ["m/a.yaml:5:1: unknown field 'bogus'"]
    os.chdir(tmp_path / "m")
    assert problems(Path("../m")) == ["a.yaml:5:1: unknown field 'bogus'"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    os.chdir(elsewhere)
    assert problems(Path("../m")) == ["../m/a.yaml:5:1: unknown field 'bogus'"]


def test_a_single_file_can_be_loaded() -> None:
    write({"a.yaml": DATASET.format(slug="abc")})
    tree = load_tree(Path("m/a.yaml"))
    assert tree.files == ("m/a.yaml",) and len(tree) == 1


def test_hidden_files_and_directories_are_skipped() -> None:
    root = write(
        {".hidden.yaml": "not: [valid", ".git/x.yaml": "nor: [this", "a.yaml": DATASET.format(slug="abc")}
    )
    assert load_tree(root).files == ("m/a.yaml",)


def test_an_empty_tree_is_valid() -> None:
    Path("m").mkdir()
    tree = load_tree(Path("m"))
    assert (tree.files, len(tree)) == ((), 0)


def test_a_missing_root_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"^nope: no such file or directory$"):
        load_tree(Path("nope"))


# --- every problem at once ----------------------------------------------------------------


def test_every_problem_in_every_file_is_reported_at_once() -> None:
    root = write(
        {
            "a.yaml": DATASET.format(slug="abc") + "protect: 1\n---\n" + HEAD + "kind: Nope\n",
            "b/c.yaml": "key: [unclosed\n",
            "d.yaml": HEAD + "kind: Record\nnamespace: ns\nkey: k\nkey: again\n",
        }
    )
    assert problems(root) == [
        "m/a.yaml:5:10: protect: must be true or false, got 1",
        "m/a.yaml:8:7: kind: unknown kind 'Nope'; expected one of StorageTarget, Dataset, Record, RecordSet",
        "m/b/c.yaml:2:1: YAML syntax error: did not find expected ',' or ']' (while parsing a flow "
        "sequence at line 1, column 6)",
        "m/d.yaml:5:1: duplicate key 'key' (first at line 4)",
    ]


def test_the_same_address_in_two_files_names_both_places() -> None:
    root = write({"a.yaml": DATASET.format(slug="abc"), "b.yaml": "# again\n" + DATASET.format(slug="abc")})
    assert problems(root) == ["m/b.yaml:2:1: dataset:abc is declared twice; first at m/a.yaml:1"]


def test_a_record_and_a_recordset_item_with_one_address_collide() -> None:
    root = write(
        {
            "a.yaml": HEAD + "kind: Record\nnamespace: obs\nkey: s1\n",
            "b.yaml": HEAD + "kind: RecordSet\nnamespace: obs\nrecords:\n  - key: s0\n  - key: s1\n",
        }
    )
    assert problems(root) == ["m/b.yaml:6:5: record:obs/s1 is declared twice; first at m/a.yaml:1"]


def test_an_invalid_document_still_collides_with_a_duplicate_of_its_address() -> None:
    root = write(
        {
            "a.yaml": DATASET.format(slug="abc") + "protect: 1\n",
            "b.yaml": DATASET.format(slug="abc"),
            "c.yaml": HEAD + "kind: RecordSet\nnamespace: obs\nrecords:\n"
            "  - key: s1\n    tags: 5\n  - key: s1\n",
        }
    )
    assert problems(root) == [
        "m/a.yaml:5:10: protect: must be true or false, got 1",
        "m/b.yaml:1:1: dataset:abc is declared twice; first at m/a.yaml:1",
        "m/c.yaml:6:11: records[0].tags: must be a list of tags, got 5",
        "m/c.yaml:7:5: record:obs/s1 is declared twice; first at m/c.yaml:5",
    ]


def test_addresses_differing_only_by_case_or_unicode_normalisation_are_refused_naming_both() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    root = write(
        {
            "a.yaml": DATASET.format(slug="Readings") + "---\n" + HEAD
            + f"kind: RecordSet\nnamespace: obs\nrecords:\n  - key: {composed}\n  - key: \uff33ensor\n",
            "b.yaml": DATASET.format(slug="readings") + "---\n" + HEAD
            + f"kind: Record\nnamespace: obs\nkey: {decomposed}\n---\n" + HEAD
            + "kind: Record\nnamespace: OBS\nkey: SENSOR\n",
        }
    )
    assert problems(root) == [
        "m/b.yaml:1:1: dataset:readings differs from dataset:Readings (at m/a.yaml:1) only by letter case "
        "or Unicode normalisation; the catalog would keep them as two objects, so rename one",
        f"m/b.yaml:6:1: record:obs/{decomposed} differs from record:obs/{composed} (at m/a.yaml:10) only by "
        "letter case or Unicode normalisation; the catalog would keep them as two objects, so rename one",
        "m/b.yaml:11:1: record:OBS/SENSOR differs from record:obs/\uff33ensor (at m/a.yaml:11) only by letter "
        "case or Unicode normalisation; the catalog would keep them as two objects, so rename one",
    ]


def test_addresses_that_differ_beyond_case_and_normalisation_load_side_by_side() -> None:
    root = write({"a.yaml": HEAD + "kind: RecordSet\nnamespace: obs\nrecords:\n  - key: sensor-1\n"
                  "  - key: sensor-l\n  - key: caf\u00e9\n  - key: cafe\n"})
    keys = [record.model.key for record in load_tree(root).records]
    assert sorted(keys) == ["cafe", "caf\u00e9", "sensor-1", "sensor-l"]


def test_a_recordset_may_be_empty() -> None:
    text = HEAD + "kind: RecordSet\nnamespace: obs\nrecords: []\n"
    tree = load_tree(write({"a.yaml": text}))
    assert (len(tree), tree.files) == (0, ("m/a.yaml",))


def test_duplicate_keys_are_found_at_any_depth() -> None:
    text = DATASET.format(slug="abc") + "metadata:\n  a:\n    - {x: 1, y: 2, x: 3}\n  b: 1\n  'b': 2\n"
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:7:20: duplicate key 'x' (first at line 7)",
        "m/a.yaml:9:3: duplicate key 'b' (first at line 8)",
    ]


def test_field_names_are_camel_case_only() -> None:
    text = HEAD + "kind: Dataset\nslug: abc\nname: A\nstorage_target: ch\n"
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:5:1: unknown field 'storage_target'; did you mean 'storageTarget'?"
    ]


def test_nested_problems_point_at_the_value() -> None:
    text = HEAD + "kind: RecordSet\nnamespace: obs\nrecords:\n  - key: a\n    tags: [ok, {no: 1}]\n"
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:6:16: records[0].tags[1]: must be a string, got a mapping"
    ]


def test_a_document_that_is_not_a_mapping_is_an_error() -> None:
    assert problems(write({"a.yaml": "---\n42\n---\n- x\n"})) == [
        "m/a.yaml:2:1: a manifest document must be a mapping, got 42",
        "m/a.yaml:4:1: a manifest document must be a mapping, got a list",
    ]


def test_yaml_1_1_booleans_are_plain_strings() -> None:
    text = DATASET.format(slug="abc") + "protect: yes\npurge: off\n"
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:5:10: protect: must be true or false, got 'yes'",
        "m/a.yaml:6:8: purge: must be true or false, got 'off'",
    ]


# --- cross-links --------------------------------------------------------------------------


def test_links_the_tree_cannot_resolve_are_returned_not_reported() -> None:
    root = write(
        {
            "a.yaml": DATASET.format(slug="here") + "storageTarget: elsewhere\n",
            "b.yaml": HEAD + "kind: RecordSet\nnamespace: obs\nrecords:\n"
            "  - key: a\n    metadata: {datasetSlug: here}\n"
            "  - key: b\n    metadata: {datasetSlug: missing, assetId: not-checked}\n",
        }
    )
    tree = load_tree(root)
    assert [(str(r.source), str(r.target), str(r.location)) for r in tree.unresolved] == [
        ("record:obs/b", "dataset:missing", "m/b.yaml:7"),
        ("dataset:here", "storage-target:elsewhere", "m/a.yaml:1"),
    ]


# --- environment references ---------------------------------------------------------------

TARGET = (
    HEAD + "kind: StorageTarget\nname: ch\ntype: clickhouse\nconfig:\n  user: ${env:CH_USER}\n"
    '  urls: ["http://${env:CH_HOST}:8123", plain]\n  note: $${env:literal}\n'
)


def test_environment_references_are_kept_unless_resolving() -> None:
    tree = load_tree(write({"a.yaml": TARGET}))
    (target,) = tree.storage_targets
    assert target.model.config["user"] == "${env:CH_USER}" and target.secret_paths == frozenset()


def test_resolving_environment_references_remembers_the_secret_paths() -> None:
    tree = load_tree(write({"a.yaml": TARGET}), resolve_env=True, environ={"CH_USER": "u", "CH_HOST": "h"})
    (target,) = tree.storage_targets
    assert target.model.config == {"user": "u", "urls": ["http://h:8123", "plain"], "note": "${env:literal}"}
    assert target.secret_paths == frozenset({("user",), ("urls", 0)})


def test_an_unset_variable_is_a_problem_only_when_resolving() -> None:
    root = write({"a.yaml": TARGET})
    assert problems(root, resolve_env=True, environ={"CH_USER": "u"}) == [
        "m/a.yaml:7:10: config.urls[0]: environment variable CH_HOST is not set"
    ]
    assert len(load_tree(root, environ={})) == 1


def test_checking_the_environment_reports_an_unset_variable_at_its_value_and_keeps_the_reference() -> None:
    root = write({"a.yaml": TARGET})
    assert problems(root, check_env=True, environ={"CH_USER": "u"}) == [
        "m/a.yaml:7:10: storage-target:ch: config.urls[0]: environment variable CH_HOST is not set"
    ]
    assert problems(root, check_env=True, environ={}) == [
        "m/a.yaml:6:9: storage-target:ch: config.user: environment variable CH_USER is not set",
        "m/a.yaml:7:10: storage-target:ch: config.urls[0]: environment variable CH_HOST is not set",
    ]
    tree = load_tree(root, check_env=True, environ={"CH_USER": "u", "CH_HOST": "h"})
    (target,) = tree.storage_targets
    assert target.model.config["user"] == "${env:CH_USER}" and target.secret_paths == frozenset()


# --- files that cannot be read ------------------------------------------------------------


def test_a_file_that_is_not_utf8_names_the_line() -> None:
    root = write({"a.yaml": DATASET.format(slug="abc").encode() + b"description: caf\xe9\n"})
    assert problems(root) == ["m/a.yaml:5:17: file is not valid UTF-8: byte 0xe9 at offset 81"]


def test_raw_control_characters_are_refused() -> None:
    root = write({"a.yaml": DATASET.format(slug="abc") + "description: a\x00b\x1bc\n"})
    advice = "is not allowed in YAML; write it as an escape in a double-quoted string"
    assert problems(root) == [
        f"m/a.yaml:5:15: character U+0000 {advice}",
        f"m/a.yaml:5:17: character U+001B {advice}",
    ]


def test_files_above_the_size_limit_are_refused_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(yamlread, "MAX_FILE_BYTES", 100)
    root = write({"a.yaml": DATASET.format(slug="abc") + "# " + "x" * 100 + "\n"})
    assert problems(root) == ["m/a.yaml:1:1: file is 168 bytes; the limit is 100 bytes"]


def test_the_size_limit_is_64_mib() -> None:
    assert yamlread.MAX_FILE_BYTES == 64 * 1024 * 1024


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="needs symbolic links")
def test_links_that_lead_outside_the_tree_are_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "x.yaml").write_text(DATASET.format(slug="abc"))
    root = write({"a.yaml": DATASET.format(slug="inside")})
    (root / "file-link.yaml").symlink_to(outside / "x.yaml")
    (root / "dir-link").symlink_to(outside)
    (root / "broken.yaml").symlink_to(tmp_path / "nowhere.yaml")
    (root / "readme-link").symlink_to(outside / "x.yaml")  # not a manifest name: never read
    real = str(outside.resolve())
    assert problems(root) == [
        "m/broken.yaml:1:1: broken symbolic link",
        f"m/dir-link:1:1: symbolic link leads outside the manifest tree (to {real})",
        f"m/file-link.yaml:1:1: symbolic link leads outside the manifest tree (to {real}/x.yaml)",
    ]


def test_links_inside_the_tree_are_followed_once() -> None:
    root = write({"real/a.yaml": DATASET.format(slug="abc")})
    (root / "alias").symlink_to(Path("real"))
    (root / "b.yaml").symlink_to(Path("real/a.yaml"))
    (root / "real" / "loop").symlink_to(Path(".."))
    tree = load_tree(root)
    assert tree.files == ("m/alias/a.yaml",) and len(tree) == 1


# --- YAML the loader refuses, fast --------------------------------------------------------


def test_python_tags_are_refused_and_never_constructed() -> None:
    text = DATASET.format(slug="abc") + 'description: !!python/object/apply:os.system ["touch pwned"]\n'
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:5:14: tag !!python/object/apply:os.system is not allowed here; only !!str, !!int, "
        "!!float, !!bool and !!null on scalars, !!map on mappings and !!seq on sequences"
    ]
    assert not Path("pwned").exists()


def test_standard_tags_are_accepted() -> None:
    text = HEAD + "kind: Record\nnamespace: ns\nkey: !!str 0017\nmetadata: !!map {n: !!int 5, f: !!float 1}\n"
    (record,) = load_tree(write({"a.yaml": text})).records
    assert record.model.key == "0017" and record.model.metadata == {"n": 5, "f": 1.0}


def test_an_alias_bomb_fails_fast() -> None:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x]"]
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    root = write({"bomb.yaml": "\n".join(lines) + "\n"})
    started = time.process_time()  # this process's CPU: other load on the machine does not count
    assert problems(root) == ["m/bomb.yaml:6:8: aliases expand to more than 100,000 nodes"]
    assert time.process_time() - started < 0.5


def test_anchors_within_the_limit_are_fine() -> None:
    text = (
        HEAD + "kind: RecordSet\nnamespace: ns\nrecords:\n  - key: a\n    metadata: &shared {unit: c}\n"
        "  - key: b\n    metadata: *shared\n"
    )
    tree = load_tree(write({"a.yaml": text}))
    assert [r.model.metadata for r in tree.records] == [{"unit": "c"}, {"unit": "c"}]
    assert [(r.location.line, r.location.end_line) for r in tree.records] == [(5, 6), (7, 8)]


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("flow", "a: " + "[" * 5000 + "]" * 5000 + "\n", "m/a.yaml:1:67: nesting deeper than 64 levels"),
        # Flow styles make libyaml (bundled with PyYAML 6.0.3 and later) scan past its own
        # limit of 1,000 levels before the reader sees the 65th: the message is still ours.
        ("flow-mapping", "a: " + "{b: " * 5000 + "}" * 5000 + "\n", "m/a.yaml:1:256: nesting deeper than 64 levels"),
        ("flow-in-block", "a:\n  b:\n    " + "[" * 3000 + "\n", "m/a.yaml:3:67: nesting deeper than 64 levels"),
        ("compact", "- " * 5000 + "x\n", "m/a.yaml:1:129: nesting deeper than 64 levels"),
        (
            "indented",
            "".join(" " * i + "a:\n" for i in range(5000)) + " " * 5000 + "b\n",
            "m/a.yaml:65:65: nesting deeper than 64 levels",
        ),
    ],
)
def test_absurd_nesting_fails_fast(name: str, text: str, expected: str) -> None:
    root = write({"a.yaml": text})
    started = time.process_time()  # this process's CPU: other load on the machine does not count
    assert problems(root) == [expected]
    assert time.process_time() - started < 0.5


def test_64_levels_of_nesting_are_allowed() -> None:
    text = HEAD + "kind: Record\nnamespace: ns\nkey: k\nmetadata:\n  a: " + "[" * 62 + "]" * 62 + "\n"
    assert len(load_tree(write({"a.yaml": text}))) == 1


def test_control_characters_in_keys_are_refused() -> None:
    text = HEAD + 'kind: Record\nnamespace: ns\nkey: k\nmetadata: {"a\\tb": 1, ok: "tab\\tin value"}\n'
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:5:12: key 'a\\tb' contains the control character U+0009"
    ]


def test_keys_must_be_strings_and_numbers_finite() -> None:
    text = HEAD + "kind: Record\nnamespace: ns\nkey: k\nmetadata:\n  2024: year\n  ratio: .inf\n"
    assert problems(write({"a.yaml": text})) == [
        "m/a.yaml:6:3: keys must be strings, got 2024",
        "m/a.yaml:7:10: numbers must be finite, got .inf",
    ]


# --- inputs the fuzzer found (tests/fuzz/fuzz_loader.py), at their smallest ----------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n: \ni", "m/a.yaml:2:2: YAML syntax error: could not find expected ':' (while scanning a simple key at "
         + "line 2, column 1)"),
        ("{", "m/a.yaml:1:2: YAML syntax error: did not find expected node content (while parsing a flow node at "
         + "line 1, column 2)"),
        ("{p", "m/a.yaml:1:3: YAML syntax error: did not find expected ',' or '}' (while parsing a flow mapping at "
         + "line 1, column 1)"),
        ("{p,", "m/a.yaml:1:4: YAML syntax error: did not find expected node content (while parsing a flow node at "
         + "line 1, column 4)"),
        ("[i", "m/a.yaml:1:3: YAML syntax error: did not find expected ',' or ']' (while parsing a flow sequence at "
         + "line 1, column 1)"),
    ],
)
def test_a_syntax_error_at_the_end_of_a_file_without_a_final_line_break_is_placed_on_its_last_line(
    text: str, expected: str
) -> None:
    assert problems(write({"a.yaml": text})) == [expected]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\r\xfc", "m/a.yaml:1:2: file is not valid UTF-8: byte 0xfc at offset 1"),  # a CR alone breaks no line
        (b"a: 1\r\nb: \xe9\n", "m/a.yaml:2:4: file is not valid UTF-8: byte 0xe9 at offset 9"),
        (b"\xef\xbb\xbfab\xfc", "m/a.yaml:1:3: file is not valid UTF-8: byte 0xfc at offset 5"),
    ],
)
def test_a_bad_utf8_byte_is_placed_by_lines_and_columns_as_the_parser_counts_them(
    data: bytes, expected: str
) -> None:
    assert problems(write({"a.yaml": data})) == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{{a: 1}: x}\n", "m/a.yaml:1:2: keys must be strings, got a mapping"),
        ("? [a]\n: x\n", "m/a.yaml:1:3: keys must be strings, got a list"),
        ("a:\n  {b: 1}: x\n", "m/a.yaml:2:3: keys must be strings, got a mapping"),
        ("a: &x {b: 1}\nc: {*x : 1}\n", "m/a.yaml:2:5: keys must be strings, got a mapping"),
        ("a: &x 1\nb: {{c: [1]}: 2}\n", "m/a.yaml:2:5: keys must be strings, got a mapping"),
    ],
)
def test_keys_that_are_mappings_or_lists_are_refused_where_they_are(text: str, expected: str) -> None:
    assert problems(write({"a.yaml": text})) == [expected]


def test_a_document_the_fast_reader_cannot_build_is_left_to_the_precise_one() -> None:
    # yaml-rs raised TypeError (a mapping key holding a mapping); libyaml reads it as an error.
    text = "{" * 62 + ": {}" + "}" * 62
    message = "did not find expected node content (while parsing a flow node at line 1, column 63)"
    assert problems(write({"a.yaml": text})) == [f"m/a.yaml:1:63: YAML syntax error: {message}"]


def test_whole_numbers_of_more_than_4300_digits_are_refused_and_never_written_out() -> None:
    record = HEAD + "kind: Record\nnamespace: n\nkey: k\nmetadata: {{n: {}}}\n"
    assert len(load_tree(write({"a.yaml": record.format("9" * 4300)}))) == 1
    root = write(
        {
            "a.yaml": record.format("-" + "9" * 4301),
            "b.yaml": DATASET.format(slug="abc") + "protect: " + "1" * 5000 + "\n",
            "c.yaml": "? " + "9" * 5000 + "\n: x\n",
            "d.yaml": "9" * 5000 + "\n",
        }
    )
    assert problems(root) == [
        "m/a.yaml:5:15: numbers must have at most 4,300 digits",
        "m/b.yaml:5:10: numbers must have at most 4,300 digits",
        "m/c.yaml:1:3: keys must be strings, got a whole number of more than 4,300 digits",
        "m/d.yaml:1:1: a manifest document must be a mapping, got a whole number of more than 4,300 digits",
    ]


# --- the corpus of bad files --------------------------------------------------------------

EXPECTED = json.loads((BAD / "expected.json").read_text(encoding="utf-8"))


def test_every_corpus_file_has_expected_messages() -> None:
    assert sorted(EXPECTED) == sorted(path.name for path in BAD.glob("*.yaml"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_corpus(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(BAD)
    assert problems(Path(name)) == EXPECTED[name]


# --- the two parse paths agree ------------------------------------------------------------

SAMPLES = {
    "plain": DATASET.format(slug="abc") + "metadata:\n  a: [1, 2]\n  b: {c: d}\n",
    "multi": "---\n" + DATASET.format(slug="abc") + "---\n" + DATASET.format(slug="abd") + "...\n",
    "recordset": HEAD + "kind: RecordSet\nnamespace: n\ndefaults: {owner: o}\nrecords:\n  - key: a\n"
    '    metadata:\n      x: "multi\n        line"\n  # about b\n  - key: b\n\n  -\n    key: c\n',
    "comments": "# top\n" + DATASET.format(slug="abc") + "# end\n\n",
    "quoted keys": "\"apiVersion\": reconciler/v1\n'kind': Dataset\nslug: abc\nname: A\n",
    "empty values": HEAD + "kind: Record\nnamespace: n\nkey: k\nowner:\n\nmetadata:\n  x:\n",
}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_fast_and_precise_paths_agree(name: str) -> None:
    fast = parse_text(SAMPLES[name], "a.yaml")
    precise = parse_text(SAMPLES[name], "a.yaml", precise=True)
    assert not fast.precise and precise.precise
    assert [d.value for d in fast.documents] == [d.value for d in precise.documents]
    assert [d.layout for d in fast.documents] == [d.layout for d in precise.documents]


def test_record_style_files_take_the_fast_path() -> None:
    items = "".join(
        f'  - key: s{n}\n    tags: [iot, "zone-{n}"]\n    metadata:\n      loc: {{lat: 1.5, lon: 2}}\n'
        for n in range(200)
    )
    parsed = parse_text(HEAD + "kind: RecordSet\nnamespace: n\nrecords:\n" + items, "a.yaml")
    assert not parsed.precise and len(parsed.documents[0].layout.items) == 200


# --- round trip: any valid model written as YAML loads back equal -------------------------

_TEXT = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")  # no string may hold U+0000
_KEY_TEXT = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"))
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(_TEXT, max_size=12),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(_KEY_TEXT, max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
_METADATA = st.dictionaries(
    st.text(_KEY_TEXT, max_size=8).filter(lambda k: k not in ("datasetSlug", "iam")), _JSON, max_size=4
)
# A tag the model takes: something left once trimmed as JavaScript trims (U+FEFF too, which str.strip keeps).
_TAG = st.text(_TEXT, min_size=1, max_size=20).filter(lambda t: js_trim(t) != "")
_NAMESPACE = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9:._-]{0,30}\Z")
_KEY = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=30)

_RECORDS = st.builds(
    Record,
    namespace=_NAMESPACE,
    key=_KEY,
    owner=st.none() | st.text(_TEXT, min_size=1, max_size=20),
    tags=st.lists(_TAG, max_size=5),
    schema_hash=st.none() | st.text(_TEXT, min_size=6, max_size=20),
    metadata=_METADATA,
    deleted=st.booleans(),
    protect=st.booleans(),
    purge=st.booleans(),
)
_SLUG = st.from_regex(r"\A[A-Za-z0-9._-]{3,40}\Z")
_DATASETS = st.builds(
    Dataset,
    slug=_SLUG,
    name=st.text(_TEXT, min_size=1, max_size=40),
    description=st.none() | st.text(_TEXT, max_size=60),
    status=st.sampled_from(["active", "inactive"]),
    storage_target=st.none() | st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"),
    metadata=st.builds(
        lambda extra, read: {**extra, **({"iam": {"readScopes": read}} if read else {})},
        _METADATA,
        st.lists(st.text(_TEXT, min_size=1, max_size=10).filter(str.strip), max_size=3),
    ),
    retention=st.none()
    | st.builds(
        dict,
        mode=st.sampled_from(["time", "size", "hybrid"]),
        rules=st.builds(dict, maxAgeHours=st.integers(1, 10**6)),
        deleteGraceMinutes=st.integers(0, 1000),
    ),
    protect=st.booleans(),
    purge=st.booleans(),
)
_TARGETS = st.builds(
    StorageTarget,
    name=st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,20}\Z"),
    type=st.sampled_from(["clickhouse", "local", "s3", "gcs", "azure_blob"]),
    description=st.none() | st.text(_TEXT, max_size=40),
    config=st.dictionaries(st.text(_KEY_TEXT, max_size=8), _JSON, max_size=3).filter(
        lambda config: "$" not in json.dumps(config)
    ),
)


def _round_trip(models: list[Any], tmp: Path) -> ManifestTree:
    tmp.mkdir(exist_ok=True)
    (tmp / "a.yaml").write_text(dump_documents(to_document(m) for m in models), encoding="utf-8")
    return load_tree(tmp)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(_RECORDS, _DATASETS, _TARGETS))
def test_any_valid_model_written_as_yaml_loads_back_equal(tmp_path: Path, model: Any) -> None:
    tree = _round_trip([model], tmp_path / "round")
    (loaded,) = list(tree.objects())
    assert loaded.model == model


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_NAMESPACE, st.lists(_RECORDS, min_size=1, max_size=6, unique_by=lambda r: r.key))
def test_recordsets_written_as_yaml_expand_back_to_their_records(
    tmp_path: Path, namespace: str, records: list[Record]
) -> None:
    items = [
        {
            key: value
            for key, value in to_document(record).items()
            if key not in ("apiVersion", "kind", "namespace")
        }
        for record in records
    ]
    document = {"apiVersion": "reconciler/v1", "kind": "RecordSet", "namespace": namespace, "records": items}
    folder = tmp_path / "set"
    folder.mkdir(exist_ok=True)
    (folder / "a.yaml").write_text(dump_documents([document]), encoding="utf-8")
    tree = load_tree(folder)
    expected = [record.model_copy(update={"namespace": namespace}) for record in records]
    assert [item.model for item in tree.records] == expected
    text = (folder / "a.yaml").read_text(encoding="utf-8")
    fast, precise = parse_text(text, "a.yaml"), parse_text(text, "a.yaml", precise=True)
    assert [d.layout for d in fast.documents] == [d.layout for d in precise.documents]


@given(st.one_of(_JSON, st.text(_TEXT)))
@example("A\n")  # a plain-looking word with a line break after it: once written plain, losing the break
def test_emitted_scalars_read_back_unchanged(value: Any) -> None:
    text = dump_documents([{"v": value}])
    assert parse_text(text, "a.yaml").documents[0].value == {"v": value}


def test_scalar_quotes_what_a_reader_would_take_for_something_else() -> None:
    assert [scalar(v) for v in ["yes", "null", "0o17", "1e3", "plain text", " pad", "a: b", 1.0, True]] == [
        '"yes"',
        '"null"',
        '"0o17"',
        '"1e3"',
        "plain text",
        '" pad"',
        '"a: b"',
        "1.0",
        "true",
    ]


def test_to_document_puts_api_version_and_kind_first_and_omits_defaults() -> None:
    recordset = RecordSet(namespace="n", records=[{"key": "a"}])  # type: ignore[list-item]
    assert list(to_document(recordset)) == ["apiVersion", "kind", "namespace", "records"]
    assert to_document(Dataset(slug="abc", name="A")) == {
        "apiVersion": "reconciler/v1",
        "kind": "Dataset",
        "slug": "abc",
        "name": "A",
    }
