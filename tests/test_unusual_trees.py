"""Trees in unusual places and servers with unusual settings: a git submodule, a short
idle-in-transaction timeout."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from reconciler.catalog.postgres.connection import explain

from .conftest import run_git
from .helpers import ALICE, BOB, apply, commit, invoke, write

DATASET = """\
apiVersion: reconciler/v1
kind: Dataset
slug: sub-obs
name: Inside a submodule
"""


def test_manifests_in_a_submodule_are_attributed_from_its_own_history(
        tmp_path: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    inner = tmp_path / "catalog-manifests"
    inner.mkdir()
    run_git(inner, "init", "-q", "-b", "main")
    write(inner, "manifests/obs.yaml", DATASET)
    alice = commit(inner, ALICE, "dataset, in its own repository")
    outer = tmp_path / "platform"
    outer.mkdir()
    run_git(outer, "init", "-q", "-b", "main")
    run_git(outer, "-c", "protocol.file.allow=always", "submodule", "add", "-q", str(inner), "catalog")
    commit(outer, BOB, "add the catalog as a submodule")
    tree = outer / "catalog"
    plan = json.loads(invoke(tree, db_url, "plan", "--format", "json").stdout)
    assert plan["dirty"] is False
    (change,) = plan["changes"]
    assert change["author"]["email"] == ALICE[1] and change["author"]["commit"] == alice
    apply(tree, db_url)  # committed in the submodule: no --allow-uncommitted needed
    assert db.execute("SELECT author_email, commit_sha, uncommitted FROM reconciler.audit_log").fetchall() == [
        (ALICE[1], alice, False)]


def test_a_short_idle_in_transaction_timeout_does_not_break_a_plan_of_a_large_tree(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """Parsing and the diff (seconds at 100,000 records) run with no transaction open.

    Both are made to outlast the server's timeout for sure: the tree is large, and the
    diff is held up for 0.6 s on top of its own time; a plan that kept a transaction open
    across either would be cut off by the server."""
    from reconciler.app import planning

    records = "".join(f"  - key: r{n:05d}\n    metadata: {{n: {n}, unit: celsius, site: north}}\n"
                      for n in range(20_000))
    write(git_repo, "manifests/many.yaml", "apiVersion: reconciler/v1\nkind: RecordSet\nnamespace: many\n"
          "defaults: {owner: team}\nrecords:\n" + records)
    write(git_repo, "manifests/ds.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs\n")
    commit(git_repo, ALICE, "many records")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    # A change made outside git, so that the plan also reads the evidence of who made it.
    db.execute("UPDATE timestore.datasets SET name = 'Renamed by hand' WHERE slug = 'obs'")
    write(git_repo, "manifests/ds.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs 2\n")
    commit(git_repo, ALICE, "rename obs")
    name = db.execute("SELECT current_database()").fetchone()
    assert name is not None
    db.execute(sql.SQL("ALTER DATABASE {} SET idle_in_transaction_session_timeout = '300ms'").format(
        sql.Identifier(name[0])))
    slow_calls = []
    original = planning.diff

    def slow_diff(*args: Any, **kwargs: Any) -> Any:
        slow_calls.append(time.monotonic())
        time.sleep(0.6)
        return original(*args, **kwargs)

    monkeypatch.setattr(planning, "diff", slow_diff)
    result = invoke(git_repo, db_url, "plan", "--detailed-exitcode", "--format", "json")
    assert result.exit_code == 2, result.output
    assert len(slow_calls) == 1
    plan = json.loads(result.stdout)
    change = next(c for c in plan["changes"] if c["address"] == "dataset:obs")
    assert change["after"]["name"] == "Obs 2" and change["outside"]["before"]["name"] == "Obs"


def test_the_idle_in_transaction_timeout_is_named_when_it_fires(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        conn.execute("SET idle_in_transaction_session_timeout = '100ms'")
        with pytest.raises(psycopg.Error) as raised:
            conn.execute("SELECT 1")
            time.sleep(0.5)
            conn.execute("SELECT 2")
    message = explain(raised.value)
    assert "idle_in_transaction_session_timeout" in message and "raise" in message


# --- values that end in a line break: a pattern anchored with ``$`` lets one through ---------------


def test_a_source_name_with_a_line_break_after_it_is_refused(tmp_path: Path) -> None:
    from reconciler.errors import ConfigurationError
    from reconciler.manifests.config import load_config

    (tmp_path / "reconciler.yaml").write_text('source: "team-a\\n"\n', encoding="utf-8")
    with pytest.raises(ConfigurationError, match="source must be 1-64 characters"):
        load_config(tmp_path)


def test_a_commit_name_with_a_line_break_after_it_names_no_commit(git_repo: Path) -> None:
    from reconciler.git.repository import GitRepository

    (git_repo / "manifests" / "a.yaml").write_text("", encoding="utf-8")
    run_git(git_repo, "add", "-A")
    run_git(git_repo, "commit", "-q", "-m", "one")
    sha = run_git(git_repo, "rev-parse", "HEAD").strip()
    repo = GitRepository.discover(git_repo)
    assert repo is not None and repo.commit_exists(sha)
    assert not repo.commit_exists(sha + "\n") and not repo.is_ancestor(sha + "\n", "HEAD")

