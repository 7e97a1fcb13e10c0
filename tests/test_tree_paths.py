"""The tree path as the user types it: relative with ``..`` from a subdirectory, ``.``, or absolute.

git reads a relative path from the repository's root, the loader from the working
directory; plan, apply and import must mean the same tree as validate whatever the
spelling.
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

DATASET = "apiVersion: reconciler/v1\nkind: Dataset\nslug: {slug}\nname: {name}\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def repo(git_repo: Path) -> Path:
    """A repository whose tree has a subdirectory, one dataset committed by Alice."""
    (git_repo / "manifests" / "sub").mkdir()
    (git_repo / "manifests" / "sub" / "a.yaml").write_text(DATASET.format(slug="obs-one", name="One"))
    run_git(git_repo, "add", "-A")
    run_git(git_repo, "commit", "-q", "-m", "one dataset", author=("Alice", "alice@example.com"))
    return git_repo


def plan_json(tree: str, db_url: str) -> dict[str, Any]:
    result = run("plan", tree, "--database-url", db_url, "--format", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("spelling", ["../../manifests", "../../manifests/sub/..", "..", "absolute"])
def test_plan_and_apply_from_a_subdirectory_with_any_spelling_of_the_tree(
        repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch,
        spelling: str) -> None:
    monkeypatch.chdir(repo / "manifests" / "sub")
    tree = str(repo / "manifests") if spelling == "absolute" else spelling
    assert run("validate", tree).exit_code == 0

    plan = plan_json(tree, db_url)
    assert [(c["address"], c["action"]) for c in plan["changes"]] == [("dataset:obs-one", "create")]
    (change,) = plan["changes"]
    assert change["source"]["path"] == "manifests/sub/a.yaml"
    assert change["author"]["email"] == "alice@example.com" and not plan["dirty"]

    applied = run("apply", tree, "--database-url", db_url, "--auto-approve")
    assert applied.exit_code == 0, applied.output
    assert db.execute("SELECT name FROM timestore.datasets WHERE slug = 'obs-one'").fetchall() == [("One",)]
    assert db.execute("SELECT path FROM reconciler.managed_objects").fetchall() == [("manifests/sub/a.yaml",)]


def test_uncommitted_changes_are_found_in_the_tree_named_from_a_subdirectory(
        repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo / "manifests" / "sub")
    (repo / "manifests" / "sub" / "a.yaml").write_text(DATASET.format(slug="obs-one", name="One, edited"))
    plan = plan_json("../../manifests", db_url)
    assert plan["dirty"] is True and plan["changes"][0]["author"].get("uncommitted") is True
    refused = run("apply", "../../manifests", "--database-url", db_url, "--auto-approve")
    assert refused.exit_code == 1 and "uncommitted changes" in refused.output


def test_a_change_outside_the_tree_does_not_make_the_tree_dirty(
        repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "notes.txt").write_text("not a manifest\n")  # untracked, beside the tree
    monkeypatch.chdir(repo / "manifests")
    assert plan_json(".", db_url)["dirty"] is False
    monkeypatch.chdir(repo / "manifests" / "sub")
    assert plan_json("..", db_url)["dirty"] is False


def test_import_from_a_subdirectory_writes_into_the_tree_it_names(
        repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-9', 'ingested', 'Ingested')")
    monkeypatch.chdir(repo / "manifests" / "sub")
    result = run("import", "../../manifests", "--database-url", db_url)
    assert result.exit_code == 0, result.output
    written = repo / "manifests" / "imported" / "datasets" / "ingested.yaml"
    assert written.is_file()
    assert result.stdout.splitlines()[0] == "wrote ../../manifests/imported/datasets/ingested.yaml"
    run_git(repo, "add", "-A")
    run_git(repo, "commit", "-q", "-m", "import")
    plan = plan_json("../../manifests", db_url)
    assert [b["address"] for b in plan["bookkeeping"]] == ["dataset:ingested"] and plan["dirty"] is False
