"""A tree whose source was last applied from a commit outside its own history: another repository
on the same catalog, a branch behind the last apply, or a tree outside git. The plan says so,
plans nothing, and apply refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import psycopg
import pytest

from .conftest import run_git
from .helpers import ALICE, BOB, apply, commit, invoke, plan_json, write

TEAM_A = """\
apiVersion: reconciler/v1
kind: Dataset
slug: team-a-readings
name: Team A readings
"""
TEAM_B = """\
apiVersion: reconciler/v1
kind: Dataset
slug: team-b-events
name: Team B events
"""


def _repository(root: Path, dataset: str) -> Path:
    root.mkdir()
    run_git(root, "init", "-q", "-b", "main")
    write(root, "manifests/datasets.yaml", dataset)
    return root


def _catalog(db: psycopg.Connection[Any]) -> list[tuple[Any, ...]]:
    return db.execute("SELECT slug, name, status FROM timestore.datasets ORDER BY slug").fetchall()


@pytest.fixture
def first(tmp_path: Path, db_url: str) -> tuple[Path, str]:
    """Team A's repository, applied as source "default"; returns it and the commit applied."""
    repo = _repository(tmp_path / "team-a", TEAM_A)
    sha = commit(repo, ALICE, "team A's dataset")
    apply(repo, db_url)
    return repo, sha


def test_a_second_repository_with_the_default_source_is_told_what_is_true(
        tmp_path: Path, db_url: str, db: psycopg.Connection[Any], first: tuple[Path, str]) -> None:
    _, applied = first
    other = _repository(tmp_path / "team-b", TEAM_B)
    commit(other, BOB, "team B's dataset")
    before = _catalog(db)
    runs = db.execute("SELECT count(*) FROM reconciler.runs").fetchone()

    text = invoke(other, db_url, "plan")
    assert text.exit_code == 1
    message = (f"source 'default' was last applied from commit {applied[:12]}, which is not in this repository: "
               "another repository applies its tree as source 'default' to this catalog (or this repository's "
               "history was rewritten since). Give this tree a source of its own: `source: <name>` in "
               f"reconciler.yaml at the root of this repository ({other}); see docs/operators.md, \"Sources\"")
    assert f"Errors:\n  - {message}\n" in text.stdout
    assert "team-a-readings" not in text.stdout and "uncommitted" not in text.output  # nothing archived
    data = json.loads(invoke(other, db_url, "plan", "--format", "json").stdout)
    assert data["changes"] == [] and data["bookkeeping"] == [] and data["unmanaged"] == []
    assert data["findings"] == [{"address": "", "severity": "error", "message": message, "source": None}]
    assert invoke(other, db_url, "plan", "--detailed-exitcode").exit_code == 1

    refused = invoke(other, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1
    assert f"error: apply refused; nothing was written:\n  {message}\n" in refused.stderr
    assert _catalog(db) == before
    assert db.execute("SELECT count(*) FROM reconciler.runs").fetchone() == runs


def test_with_a_source_of_its_own_the_second_repository_plans_and_applies_beside_the_first(
        tmp_path: Path, db_url: str, db: psycopg.Connection[Any], first: tuple[Path, str]) -> None:
    other = _repository(tmp_path / "team-b", TEAM_B)
    write(other, "reconciler.yaml", "source: team-b\n")
    commit(other, BOB, "team B's dataset, as source team-b")
    data = plan_json(other, db_url)
    assert [(c["address"], c["action"]) for c in data["changes"]] == [("dataset:team-b-events", "create")]
    assert [f for f in data["findings"] if f["severity"] == "error"] == []
    apply(other, db_url)
    assert _catalog(db) == [("team-a-readings", "Team A readings", "active"),
                            ("team-b-events", "Team B events", "active")]
    assert plan_json(first[0], db_url)["changes"] == []  # and team A's tree still plans as before


def test_a_branch_behind_the_last_apply_is_told_to_catch_up_instead_of_undoing_it(
        db_url: str, db: psycopg.Connection[Any], first: tuple[Path, str]) -> None:
    repo, old = first
    run_git(repo, "branch", "behind")
    write(repo, "manifests/datasets.yaml", TEAM_A.replace("Team A readings", "Team A readings, renamed"))
    newer = commit(repo, BOB, "rename it")
    apply(repo, db_url)
    run_git(repo, "checkout", "-q", "behind")
    text = invoke(repo, db_url, "plan")
    assert text.exit_code == 1
    assert (f"source 'default' was last applied from commit {newer[:12]}, which this tree's history does not "
            f"contain: commit {old[:12]} is behind it or on another branch. Merge or rebase onto it (git pull), "
            "then plan again") in text.stdout
    assert "Team A readings, renamed" not in text.stdout  # no update back to the old name
    assert invoke(repo, db_url, "apply", "--auto-approve").exit_code == 1
    assert _catalog(db) == [("team-a-readings", "Team A readings, renamed", "active")]
    run_git(repo, "merge", "-q", "--ff-only", "main")
    assert plan_json(repo, db_url)["changes"] == []


def test_a_side_branch_that_merged_the_last_apply_plans_as_usual(
        db_url: str, first: tuple[Path, str]) -> None:
    repo, _ = first
    run_git(repo, "checkout", "-q", "-b", "topic")
    write(repo, "manifests/datasets.yaml", TEAM_A.replace("Team A readings", "Topic name"))
    commit(repo, BOB, "topic")
    data = plan_json(repo, db_url)
    assert [(c["address"], c["action"], c["author"]["email"]) for c in data["changes"]] == [
        ("dataset:team-a-readings", "update", "bob@example.com")]


def test_a_tree_outside_git_is_told_to_plan_from_a_clone(
        tmp_path: Path, db_url: str, first: tuple[Path, str]) -> None:
    repo, applied = first
    copy = tmp_path / "exported"
    shutil.copytree(repo / "manifests", copy / "manifests")
    text = invoke(copy, db_url, "plan", "--format", "json")
    assert text.exit_code == 1
    (finding,) = json.loads(text.stdout)["findings"]
    assert finding["message"] == (f"source 'default' was last applied from commit {applied[:12]} of a git "
                                  f"repository, and {copy / 'manifests'} is not in one; plan from a clone of "
                                  "that repository (a tree outside git cannot have a source of its own)")
    assert json.loads(text.stdout)["changes"] == []
