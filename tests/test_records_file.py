"""RecordSets whose records live in a data file (recordsFile: JSON Lines or CSV): loading, validation
at the data file's lines, the tree's boundaries, plan/apply, attribution per line, settled files, import."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.errors import ManifestError
from reconciler.manifests import load_tree
from tests.conftest import run_git
from tests.helpers import ALICE, BOB, CAROL, commit, invoke, plan_json, write

HEADER = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: fleet
defaults: {owner: team-fleet, tags: [truck], metadata: {region: eu}}
recordsFile: fleet.jsonl
"""

LINES = [
    {"key": "truck-1", "metadata": {"plate": "A-1"}},
    {"key": "truck-2", "owner": "team-west", "tags": ["truck", "west"]},
    {"key": "truck-3", "schemaHash": "sha256-abcdef", "deleted": True},
]


def jsonl(items: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items)


def problems_of(root: Path) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        load_tree(root)
    return [f"{Path(p.path).name}:{p.line}:{p.column}: {p.message}" for p in caught.value.problems]


def values(root: Path) -> dict[str, tuple[str, int, dict[str, Any]]]:
    tree = load_tree(root)
    return {str(item.address): (Path(item.location.path).name, item.location.line,
                                 {k: v for k, v in item.model.__dict__.items() if k not in ("api_version", "kind")})
            for item in tree.records}


# --- loading ---------------------------------------------------------------------------------


def test_a_jsonl_file_declares_one_record_a_line_with_the_sets_defaults(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER)
    write(tmp_path, "m/fleet.jsonl", "\ufeff" + jsonl(LINES[:1]) + "\n   \n" + jsonl(LINES[1:]).replace("\n", "\r\n"))
    found = values(tmp_path / "m")
    assert found["record:fleet/truck-1"] == ("fleet.jsonl", 1, {
        "namespace": "fleet", "key": "truck-1", "owner": "team-fleet", "tags": ("truck",), "schema_hash": None,
        "metadata": {"region": "eu", "plate": "A-1"}, "deleted": False, "protect": False, "purge": False})
    assert found["record:fleet/truck-2"][1:] == (4, {
        "namespace": "fleet", "key": "truck-2", "owner": "team-west", "tags": ("truck", "west"),
        "schema_hash": None, "metadata": {"region": "eu"}, "deleted": False, "protect": False, "purge": False})
    assert found["record:fleet/truck-3"][1] == 5 and found["record:fleet/truck-3"][2]["deleted"] is True


def test_a_data_file_gives_the_same_records_as_the_same_items_under_records(tmp_path: Path) -> None:
    items = LINES + [{"key": "caf\u00e9", "owner": " padded ", "tags": [" a ", "a", "b"], "metadata": {"n": None}},
                     {"key": "t-9", "owner": None, "protect": True}]
    write(tmp_path, "a/m/fleet.yaml", HEADER)
    write(tmp_path, "a/m/fleet.jsonl", "".join(json.dumps(item) + "\n" for item in items))  # escapes, spaces
    yaml_items = "".join(f"  - {json.dumps(item)}\n" for item in items)
    write(tmp_path, "b/m/fleet.yaml", HEADER.replace("recordsFile: fleet.jsonl\n", "records:\n" + yaml_items))
    from_file, from_yaml = values(tmp_path / "a/m"), values(tmp_path / "b/m")
    assert {a: v[2] for a, v in from_file.items()} == {a: v[2] for a, v in from_yaml.items()}
    assert set(from_file) == {f"record:fleet/{item['key']}" for item in items}


def test_a_csv_file_declares_one_record_a_row(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER.replace("fleet.jsonl", "data/fleet.csv"))
    write(tmp_path, "m/data/fleet.csv", "\ufeffkey,owner,tags,schemaHash,deleted,protect,purge,metadata\r\n"
          'truck-1,,,,,,,"{""plate"": ""A-1""}"\r\n'
          "\r\n"
          "truck-2,team-west,truck;west,sha256-abcdef,true,false,,\r\n")
    found = values(tmp_path / "m")
    assert found["record:fleet/truck-1"] == ("fleet.csv", 2, {
        "namespace": "fleet", "key": "truck-1", "owner": "team-fleet", "tags": ("truck",), "schema_hash": None,
        "metadata": {"region": "eu", "plate": "A-1"}, "deleted": False, "protect": False, "purge": False})
    assert found["record:fleet/truck-2"][1:] == (4, {
        "namespace": "fleet", "key": "truck-2", "owner": "team-west", "tags": ("truck", "west"),
        "schema_hash": "sha256-abcdef", "metadata": {"region": "eu"}, "deleted": True, "protect": False,
        "purge": False})


def test_a_data_file_no_recordset_names_is_not_read(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER)
    write(tmp_path, "m/fleet.jsonl", jsonl(LINES))
    write(tmp_path, "m/old.jsonl", "not json at all\n")
    write(tmp_path, "m/old.csv", "nonsense,\n")
    assert len(values(tmp_path / "m")) == 3


# --- problems at the data file's lines -----------------------------------------------------


def test_every_problem_in_a_jsonl_file_is_reported_at_its_line_and_column(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER)
    write(tmp_path, "m/fleet.jsonl", "\n".join([
        '{"key":"ok-1"}',
        '{"key":"t-2","owner":5}',
        '{"key":"t-3","metadata":{"datasetSlug":"x"}}',
        '{"key":"t-4","color":"red"}',
        '{"key":"t-5","tags":["a"],"tags":["b"]}',
        '{"key":"t-6",',
        '[1, 2]',
        '{"key":"t-8","metadata":{"a":"\\u0000"}}',
        '{"key":"t-9","protect":NaN}',
        '{"owner":"x"}',
        '{"key":"ok-1"}',
    ]) + "\n")
    assert problems_of(tmp_path / "m") == [
        "fleet.jsonl:2:22: owner: must be a string, got 5",
        "fleet.jsonl:3:40: metadata.datasetSlug: must be a dataset slug (3 to 120 letters, digits, '.', '_' "
        "and '-'), got 'x'",
        "fleet.jsonl:4:14: unknown field 'color'",
        "fleet.jsonl:5:27: key 'tags' is given twice",
        "fleet.jsonl:6:14: not valid JSON: Expecting property name enclosed in double quotes",
        "fleet.jsonl:7:1: a record must be a JSON object, got a list",
        "fleet.jsonl:8:30: metadata.a: text must not contain U+0000 (NUL), which the catalog cannot store",
        "fleet.jsonl:9:1: not valid JSON: NaN is not a JSON number",
        "fleet.jsonl:10:1: missing required field 'key'",
        f"fleet.jsonl:11:1: record:fleet/ok-1 is declared twice; first at {tmp_path}/m/fleet.jsonl:1",
    ]


def test_every_problem_in_a_csv_file_is_reported_at_its_row_and_cell(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER.replace("fleet.jsonl", "fleet.csv"))
    write(tmp_path, "m/fleet.csv", "key,owner,deleted,metadata,tags\n"
          "ok-1,,,,\n"
          "t-2,,yes,,\n"
          "t-3,,,{bad,\n"
          "t-4,,,\"[1]\",\n"
          "t-5,,,,a;;b\n"
          "t-6,,\n")
    assert problems_of(tmp_path / "m") == [
        "fleet.csv:3:6: deleted: must be true or false, got 'yes'",
        "fleet.csv:4:7: metadata: not valid JSON: Expecting property name enclosed in double quotes "
        "(at character 2 of the cell)",
        "fleet.csv:5:7: metadata: must be a mapping, got a list",
        "fleet.csv:6:8: tags[1]: each tag must be 1 to 64 characters, got 0",
        "fleet.csv:7:1: the row has 3 cells; the header has 5",
    ]


def test_a_csv_header_names_known_columns_once_and_has_a_key(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER.replace("fleet.jsonl", "fleet.csv"))
    write(tmp_path, "m/fleet.csv", "owner,colour,owner\nx,y,z\n")
    assert problems_of(tmp_path / "m") == [
        "fleet.csv:1:1: the header has no 'key' column",
        "fleet.csv:1:7: unknown column 'colour'; the columns are key, owner, tags, schemaHash, deleted, protect, "
        "purge, metadata",
        "fleet.csv:1:14: column 'owner' is given twice",
    ]


def test_a_file_that_is_not_utf8_or_holds_a_lone_carriage_return_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER)
    (tmp_path / "m/fleet.jsonl").write_bytes(b'{"key":"a"}\n{"key":"\xff"}\n')
    assert problems_of(tmp_path / "m") == ["fleet.jsonl:2:9: file is not valid UTF-8: byte 0xff at offset 20"]
    (tmp_path / "m/fleet.jsonl").write_bytes(b'{"key":"a"}\r{"key":"b"}\n')
    assert problems_of(tmp_path / "m")[0].startswith("fleet.jsonl:1:12: a carriage return alone")


@pytest.mark.parametrize(("reference", "message"), [
    ("../outside.jsonl", "'../outside.jsonl' leads outside the manifest tree"),
    ("/etc/fleet.jsonl", "must be relative to this manifest, got the absolute path '/etc/fleet.jsonl'"),
    (".hidden/fleet.jsonl", "'.hidden/fleet.jsonl' names a hidden file or directory"),
    ("missing.jsonl", "no such file 'missing.jsonl'"),
    ("fleet.json", "must name a .jsonl or .csv file, got 'fleet.json'"),
    ("link.jsonl", "'link.jsonl' is a symbolic link that leads outside the manifest tree"),
])
def test_a_records_file_must_stay_inside_the_tree(tmp_path: Path, reference: str, message: str) -> None:
    write(tmp_path, "outside.jsonl", jsonl(LINES))
    write(tmp_path, "m/.hidden/fleet.jsonl", jsonl(LINES))
    os.symlink(tmp_path / "outside.jsonl", tmp_path / "m/link.jsonl")
    write(tmp_path, "m/fleet.yaml", HEADER.replace("fleet.jsonl", reference))
    found = problems_of(tmp_path / "m")
    assert len(found) == 1 and found[0].startswith("fleet.yaml:5:14: recordsFile: ") and message in found[0], found


def test_a_link_or_dotdot_that_stays_inside_the_tree_is_followed(tmp_path: Path) -> None:
    write(tmp_path, "m/data/fleet.jsonl", jsonl(LINES))
    os.symlink(tmp_path / "m/data/fleet.jsonl", tmp_path / "m/sets/link.jsonl") if (tmp_path / "m/sets").mkdir() \
        is None else None
    write(tmp_path, "m/sets/a.yaml", HEADER.replace("fleet.jsonl", "../data/fleet.jsonl"))
    write(tmp_path, "m/sets/b.yaml", HEADER.replace("fleet.jsonl", "link.jsonl").replace("fleet\n", "fleet-b\n"))
    assert len(values(tmp_path / "m")) == 6


def test_a_version_from_git_follows_links_inside_the_tree_and_refuses_the_others() -> None:
    from reconciler.errors import DataFileError
    from reconciler.manifests.datapaths import VersionFiles

    files = {"m/data/fleet.jsonl": b"1", "m/real/trucks.jsonl": b"2"}
    links = {"m/sets/link.jsonl": "../data/fleet.jsonl", "m/alias": "real", "m/out.jsonl": "../../etc/passwd",
             "m/abs.jsonl": "/etc/passwd", "m/loop.jsonl": "loop.jsonl"}
    version = VersionFiles("m", files.get, links)
    assert version.read("m/sets/a.yaml", "link.jsonl") == ("m/data/fleet.jsonl", b"1")
    assert version.read("m/b.yaml", "alias/trucks.jsonl") == ("m/real/trucks.jsonl", b"2")  # a directory link
    for reference, message in (("out.jsonl", "is a symbolic link that leads outside the manifest tree"),
                               ("abs.jsonl", "is a symbolic link that leads outside the manifest tree"),
                               ("loop.jsonl", "no such file")):
        with pytest.raises(DataFileError, match=message):
            version.read("m/c.yaml", reference)


def test_records_and_records_file_are_one_or_the_other(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.jsonl", jsonl(LINES))
    write(tmp_path, "m/a.yaml", HEADER + "records: [{key: x}]\n")
    write(tmp_path, "m/b.yaml", HEADER.replace("recordsFile: fleet.jsonl\n", ""))
    assert problems_of(tmp_path / "m") == [
        "a.yaml:5:14: recordsFile: give either records or recordsFile, not both",
        "b.yaml:1:1: missing required field 'records' (or 'recordsFile', a data file of records)",
    ]


def test_validate_reports_data_file_problems(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from reconciler.cli import cli

    write(tmp_path, "m/fleet.yaml", HEADER)
    write(tmp_path, "m/fleet.jsonl", '{"key":"a"}\n{"key":"b","owner":""}\n')
    result = CliRunner().invoke(cli, ["validate", str(tmp_path / "m")])
    assert result.exit_code == 1 and "fleet.jsonl:2:20: owner: must not be empty" in result.output


# --- plan, apply, attribution, settled files (PostgreSQL and git) ------------------------------


def changes(plan: dict[str, Any]) -> dict[str, tuple[str, str | None, str | None]]:
    return {c["address"]: (c["action"], c["author"]["email"], c["source"]["path"]) for c in plan["changes"]}


@pytest.fixture
def fleet(git_repo: Path, db_url: str) -> Path:
    write(git_repo, "manifests/fleet.yaml", HEADER)
    write(git_repo, "manifests/fleet.jsonl", jsonl(LINES))
    commit(git_repo, ALICE, "the fleet")
    return git_repo


def test_plan_and_apply_create_the_records_and_a_second_plan_is_empty(
        fleet: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    plan = plan_json(fleet, db_url)
    assert changes(plan) == {f"record:fleet/truck-{n}": ("create", ALICE[1], "manifests/fleet.jsonl")
                             for n in (1, 2, 3)}
    assert [c["source"]["line"] for c in plan["changes"]] == [1, 2, 3]
    assert invoke(fleet, db_url, "apply", "--auto-approve").exit_code == 0
    rows = db.execute("SELECT record_key, owner, tags, metadata, deleted_at IS NOT NULL, created_by "
                      "FROM metastore.metastore_records ORDER BY record_key").fetchall()
    assert rows == [("truck-1", "team-fleet", ["truck"], {"region": "eu", "plate": "A-1"}, False, ALICE[1]),
                    ("truck-2", "team-west", ["truck", "west"], {"region": "eu"}, False, ALICE[1]),
                    ("truck-3", "team-fleet", ["truck"], {"region": "eu"}, True, ALICE[1])]
    assert plan_json(fleet, db_url)["changes"] == []


def test_an_edited_line_is_its_commits_and_the_other_records_keep_their_authors(
        fleet: Path, db_url: str) -> None:
    edited = [dict(LINES[0], owner="team-east"), LINES[1], LINES[2]]
    write(fleet, "manifests/fleet.jsonl", jsonl(edited))
    commit(fleet, BOB, "truck-1 goes east")
    write(fleet, "manifests/fleet.jsonl", jsonl(edited) + jsonl([{"key": "truck-4"}]))
    commit(fleet, CAROL, "a new truck")
    assert changes(plan_json(fleet, db_url)) == {
        "record:fleet/truck-1": ("create", BOB[1], "manifests/fleet.jsonl"),
        "record:fleet/truck-2": ("create", ALICE[1], "manifests/fleet.jsonl"),
        "record:fleet/truck-3": ("create", ALICE[1], "manifests/fleet.jsonl"),
        "record:fleet/truck-4": ("create", CAROL[1], "manifests/fleet.jsonl"),
    }
    assert invoke(fleet, db_url, "apply", "--auto-approve").exit_code == 0
    # After an apply: a line edit, then a change of the manifest's defaults, each by its author.
    write(fleet, "manifests/fleet.jsonl", jsonl([edited[0], dict(LINES[1], tags=["west"]), LINES[2],
                                                 {"key": "truck-4"}]))
    commit(fleet, ALICE, "truck-2 tags")
    write(fleet, "manifests/fleet.yaml", HEADER.replace("region: eu", "region: north"))
    commit(fleet, BOB, "the fleet moves north")
    plan = plan_json(fleet, db_url)
    assert {a: v[1] for a, v in changes(plan).items()} == {
        "record:fleet/truck-1": BOB[1], "record:fleet/truck-2": BOB[1], "record:fleet/truck-3": BOB[1],
        "record:fleet/truck-4": BOB[1]}
    tags = next(c for c in plan["changes"] if c["address"] == "record:fleet/truck-2")
    assert tags["fields"] == ["tags", "metadata"] or sorted(tags["fields"]) == ["metadata", "tags"]


def test_moving_a_data_file_and_its_manifest_keeps_each_records_author(fleet: Path, db_url: str) -> None:
    # git mv of both files, then the data file moved again with its manifest pointing at it: what
    # each record declares never changed, so its author stays the one who wrote it.
    (fleet / "manifests/vehicles").mkdir()
    run_git(fleet, "mv", "manifests/fleet.yaml", "manifests/vehicles/fleet.yaml")
    run_git(fleet, "mv", "manifests/fleet.jsonl", "manifests/vehicles/fleet.jsonl")
    commit(fleet, BOB, "the fleet moves to vehicles/")
    assert changes(plan_json(fleet, db_url)) == {
        f"record:fleet/truck-{n}": ("create", ALICE[1], "manifests/vehicles/fleet.jsonl") for n in (1, 2, 3)}
    (fleet / "manifests/vehicles/data").mkdir()
    run_git(fleet, "mv", "manifests/vehicles/fleet.jsonl", "manifests/vehicles/data/trucks.jsonl")
    write(fleet, "manifests/vehicles/fleet.yaml", HEADER.replace("recordsFile: fleet.jsonl",
                                                                 "recordsFile: data/trucks.jsonl"))
    commit(fleet, CAROL, "data files go to data/")
    assert changes(plan_json(fleet, db_url)) == {
        f"record:fleet/truck-{n}": ("create", ALICE[1], "manifests/vehicles/data/trucks.jsonl") for n in (1, 2, 3)}


def test_a_data_file_whose_name_has_a_space_and_an_accent_is_walked_through_its_history(
        fleet: Path, db_url: str) -> None:
    # Read by <commit>:<path> at commits where it does not exist yet: git answers "<name> missing"
    # with the name as asked, spaces and all, and the name is not ASCII.
    write(fleet, "manifests/flotte été.jsonl", jsonl([{"key": "van-1"}]))
    write(fleet, "manifests/vans.yaml", HEADER.replace("namespace: fleet", "namespace: vans")
          .replace("recordsFile: fleet.jsonl", "recordsFile: flotte été.jsonl"))
    commit(fleet, BOB, "the vans")
    assert changes(plan_json(fleet, db_url))["record:vans/van-1"] == ("create", BOB[1], "manifests/flotte été.jsonl")


def test_a_defaults_change_made_before_a_move_keeps_its_author(fleet: Path, db_url: str) -> None:
    write(fleet, "manifests/fleet.yaml", HEADER.replace("owner: team-fleet", "owner: team-road"))
    commit(fleet, BOB, "the fleet belongs to team-road")
    (fleet / "manifests/vehicles").mkdir()
    run_git(fleet, "mv", "manifests/fleet.yaml", "manifests/vehicles/fleet.yaml")
    run_git(fleet, "mv", "manifests/fleet.jsonl", "manifests/vehicles/fleet.jsonl")
    commit(fleet, CAROL, "the fleet moves to vehicles/")
    # truck-2 gives its own owner: Bob's change of the defaults did not touch it.
    assert {a: v[1] for a, v in changes(plan_json(fleet, db_url)).items()} == {
        "record:fleet/truck-1": BOB[1], "record:fleet/truck-2": ALICE[1], "record:fleet/truck-3": BOB[1]}


def test_a_linked_data_file_plans_applies_from_a_saved_plan_and_keeps_its_author(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/fleet.yaml", HEADER)
    write(git_repo, "manifests/exports/trucks-2026.jsonl", jsonl(LINES))
    os.symlink("exports/trucks-2026.jsonl", git_repo / "manifests/fleet.jsonl")
    commit(git_repo, ALICE, "the fleet, its data file a link to this year's export")
    write(git_repo, "manifests/other.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: other\nname: O\n")
    commit(git_repo, BOB, "another dataset")
    # Shown as the file the link leads to, where its lines are.
    assert changes(plan_json(git_repo, db_url))["record:fleet/truck-2"] == (
        "create", ALICE[1], "manifests/exports/trucks-2026.jsonl")
    saved = git_repo / "plan.json"
    assert invoke(git_repo, db_url, "plan", "--out", str(saved)).exit_code == 0
    applied = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT count(*), min(created_by) FROM metastore.metastore_records").fetchone() == (3, ALICE[1])


def test_a_line_edit_after_an_apply_names_its_commit_and_an_uncommitted_edit_the_applier(
        fleet: Path, db_url: str) -> None:
    assert invoke(fleet, db_url, "apply", "--auto-approve").exit_code == 0
    write(fleet, "manifests/fleet.jsonl", jsonl([LINES[0], dict(LINES[1], owner="team-south"), LINES[2]]))
    commit(fleet, CAROL, "truck-2 goes south")
    assert changes(plan_json(fleet, db_url)) == {
        "record:fleet/truck-2": ("update", CAROL[1], "manifests/fleet.jsonl")}
    write(fleet, "manifests/fleet.jsonl", jsonl([LINES[0], dict(LINES[1], owner="team-north"), LINES[2]]))
    plan = plan_json(fleet, db_url)
    assert plan["changes"][0]["author"]["uncommitted"] is True


def test_a_changed_data_file_is_never_passed_over_as_settled(fleet: Path, db_url: str,
                                                             db: psycopg.Connection[Any]) -> None:
    assert invoke(fleet, db_url, "apply", "--auto-approve").exit_code == 0
    assert db.execute("SELECT path, objects FROM reconciler.applied_files ORDER BY path").fetchall() == [
        ("manifests/fleet.jsonl", 3), ("manifests/fleet.yaml", 0)]
    again = invoke(fleet, db_url, "plan", "--verbose")
    assert "2 of 2 manifest files are unchanged" in again.stderr, again.stderr
    write(fleet, "manifests/fleet.jsonl", jsonl([LINES[0], LINES[1], dict(LINES[2], deleted=False)]))
    commit(fleet, BOB, "truck-3 is back")
    assert changes(plan_json(fleet, db_url)) == {"record:fleet/truck-3": ("restore", BOB[1], "manifests/fleet.jsonl")}
    write(fleet, "manifests/fleet.yaml", HEADER.replace("owner: team-fleet", "owner: team-cars"))
    changed = changes(plan_json(fleet, db_url))  # uncommitted: the defaults reach every line
    assert set(changed) == {f"record:fleet/truck-{n}" for n in (1, 2, 3)} - {"record:fleet/truck-2"}


# --- import --records-format ----------------------------------------------------------------


@pytest.mark.parametrize("records_format", ["jsonl", "csv"])
def test_import_writes_records_to_a_data_file_and_the_plan_then_adopts_them_unchanged(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], records_format: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_import import INGESTED, SECRET_VARIABLE, files_under, snapshot

    monkeypatch.setenv(SECRET_VARIABLE, "hunter2")
    for statement in INGESTED:
        db.execute(statement)
    before = snapshot(db)
    result = invoke(git_repo, db_url, "import", "--records-format", records_format)
    assert result.exit_code == 0, result.output
    out = git_repo / "manifests" / "imported"
    written = files_under(out)
    assert f"records/observatory.{records_format}" in written and f"records/team_ops.{records_format}" in written
    assert written["records/observatory.yaml"].decode().endswith(
        f"kind: RecordSet\nnamespace: observatory\nrecordsFile: observatory.{records_format}\n")
    lines = written[f"records/observatory.{records_format}"].decode().splitlines()
    assert len(lines) == (3 if records_format == "jsonl" else 4)
    commit(git_repo, ALICE, "import")
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and [f for f in plan["findings"] if f["severity"] == "error"] == []
    assert sorted(b["address"] for b in plan["bookkeeping"] if b["reason"] == "adopt" and
                  b["address"].startswith("record:")) == [
        "record:observatory/sensor-0001", "record:observatory/sensor-0002", "record:observatory/sensor-0003",
        "record:team:ops/jobs/nightly"]
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    after = snapshot(db)
    assert after["records"] == before["records"] and after["record_audits"] == before["record_audits"]
    # A record ingested later goes to a new pair beside the first one, never into it.
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner) "
               "VALUES ('observatory', 'sensor-0004', 'team-observatory')")
    again = invoke(git_repo, db_url, "import", "--records-format", records_format)
    assert again.exit_code == 0, again.output
    assert files_under(out)[f"records/observatory.{records_format}"] == written[f"records/observatory.{records_format}"]
    assert f"recordsFile: observatory.2.{records_format}" in (out / "records/observatory.2.yaml").read_text()
    commit(git_repo, ALICE, "late arrival")
    plan = plan_json(git_repo, db_url)
    assert plan["changes"] == [] and [b["address"] for b in plan["bookkeeping"] if b["reason"] == "adopt"] == [
        "record:observatory/sensor-0004"]


def test_import_as_csv_skips_a_record_whose_tag_holds_the_separator(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, tags) VALUES "
               "('ops', 'a', '{\"x;y\"}'), ('ops', 'b', '{x}')")
    result = invoke(git_repo, db_url, "import", "--records-format", "csv")
    assert result.exit_code == 0, result.output
    assert "skipped record:ops/a: a tag holds ';'" in result.stderr
    assert (git_repo / "manifests/imported/records/ops.csv").read_text() == (
        "key,owner,tags,schemaHash,deleted,protect,purge,metadata\nb,,x,,,,,\n")


def test_audit_replay_holds_data_file_records_against_their_commits(fleet: Path, db_url: str) -> None:
    from click.testing import CliRunner

    from reconciler.cli import cli

    assert invoke(fleet, db_url, "apply", "--auto-approve").exit_code == 0
    write(fleet, "manifests/fleet.jsonl", jsonl([dict(LINES[0], owner="team-east"), LINES[2]]))
    commit(fleet, BOB, "truck-1 east, truck-2 gone")
    assert invoke(fleet, db_url, "apply", "--auto-approve").exit_code == 0
    replayed = CliRunner().invoke(cli, ["audit", "verify", "--git", str(fleet), "--replay", "--database-url", db_url])
    assert replayed.exit_code == 0, replayed.output
    assert "Replayed 5 entries against git" in replayed.output, replayed.output


def test_an_env_reference_in_a_record_is_plain_text_as_in_yaml(tmp_path: Path) -> None:
    write(tmp_path, "m/fleet.yaml", HEADER)
    write(tmp_path, "m/fleet.jsonl", '{"key":"t-1","owner":"${env:OWNER}","metadata":{"token":"${env:TOKEN}"}}\n')
    record = values(tmp_path / "m")["record:fleet/t-1"][2]
    assert record["owner"] == "${env:OWNER}" and record["metadata"] == {"region": "eu", "token": "${env:TOKEN}"}
