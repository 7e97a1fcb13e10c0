"""Line endings: LF and CRLF files work in every command; a carriage return alone is refused by every one.

YAML takes a lone CR for a line break and git does not, so the loader and attribution
would count a file's lines apart; the rule is the same for validate, plan, apply and
import, which all read the tree through the loader.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from tests.conftest import run_git

ALICE = ("Alice", "alice@example.com")
BOB = ("Bob", "bob@example.com")
FIRST = "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs-one\nname: One\n"
SECOND = "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs-two\nname: Two\n"
MESSAGE = "carriage return (CR) without a line feed"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def write(path: Path, text: str) -> None:
    path.write_bytes(text.encode("utf-8"))


def commit(repo: Path, author: tuple[str, str], message: str) -> None:
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", message, author=author)


@pytest.mark.parametrize("command", ["validate", "plan", "apply", "import"])
def test_a_lone_carriage_return_is_refused_by_every_command_at_its_place(
        git_repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch, command: str) -> None:
    # The second document's lines end in CR alone: YAML reads it, git sees one long line.
    write(git_repo / "manifests" / "a.yaml", FIRST + "---\n" + SECOND.replace("\n", "\r"))
    commit(git_repo, ALICE, "a file with old Mac line endings")
    monkeypatch.chdir(git_repo)
    args = [command, "manifests"] + ([] if command == "validate" else ["--database-url", db_url])
    args += ["--auto-approve"] if command == "apply" else []
    result = run(*args)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"manifests/a.yaml:6:26: {MESSAGE} (4 in this file); use LF or CRLF line endings",
        "error: 1 problem in the manifest tree"]
    assert not (git_repo / "manifests" / "imported").exists()


def test_a_carriage_return_in_the_last_line_of_a_file_is_placed_there(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", FIRST + "description: x\r")
    result = run("validate", str(tmp_path / "a.yaml"))
    assert result.exit_code == 1
    assert f"a.yaml:5:15: {MESSAGE}; use LF or CRLF line endings" in result.stderr


def test_crlf_lines_before_a_lone_carriage_return_count_as_one_line_each(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", FIRST.replace("\n", "\r\n") + "description: x\rmore: y\r\n")
    result = run("validate", str(tmp_path / "a.yaml"))
    assert result.exit_code == 1
    assert f"a.yaml:5:15: {MESSAGE}; use LF or CRLF line endings" in result.stderr


def test_an_escaped_carriage_return_in_a_quoted_string_is_a_value_not_a_line_ending(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", FIRST + 'description: "one\\rtwo"\r\n')
    result = run("validate", str(tmp_path / "a.yaml"))
    assert result.exit_code == 0, result.output


def test_crlf_files_validate_plan_attribute_and_apply(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    crlf = (FIRST + "---\n" + SECOND).replace("\n", "\r\n")
    write(git_repo / "manifests" / "a.yaml", crlf)
    commit(git_repo, ALICE, "two datasets, CRLF")
    write(git_repo / "manifests" / "a.yaml", crlf.replace("name: Two", "name: Two, renamed by Bob"))
    commit(git_repo, BOB, "Bob renames the second")
    monkeypatch.chdir(git_repo)
    assert run("validate", "manifests").stdout == "Valid: 0 storage targets, 2 datasets, 0 records in 1 file.\n"

    plan = run("plan", "manifests", "--database-url", db_url, "--format", "json")
    assert plan.exit_code == 0, plan.output
    changes = {c["address"]: c for c in json.loads(plan.stdout)["changes"]}
    assert changes["dataset:obs-one"]["source"] == {"path": "manifests/a.yaml", "line": 1, "end_line": 4}
    assert changes["dataset:obs-two"]["source"] == {"path": "manifests/a.yaml", "line": 6, "end_line": 9}
    assert changes["dataset:obs-one"]["author"]["email"] == "alice@example.com"
    assert changes["dataset:obs-two"]["author"]["email"] == "bob@example.com"

    applied = run("apply", "manifests", "--database-url", db_url, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT slug, name FROM timestore.datasets ORDER BY slug").fetchall() == [
        ("obs-one", "One"), ("obs-two", "Two, renamed by Bob")]
    again = run("plan", "manifests", "--database-url", db_url, "--detailed-exitcode")
    assert again.exit_code == 0, again.output
