"""The embedded catalog as a newcomer meets it: its first use says so, and it lives only at the
root of a git repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from reconciler.catalog.postgres.connection import resolve_database
from reconciler.errors import DatabaseUnavailable

from .conftest import run_git


def _reconciler(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed command, with no catalog configured (as on a newcomer's machine)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    return subprocess.run([sys.executable, "-c", "from reconciler.cli import main; main()", *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow
def test_the_first_use_says_in_one_line_that_it_creates_the_catalog_and_where(tmp_path: Path) -> None:
    repo = tmp_path / "team-repo"
    (repo / "manifests").mkdir(parents=True)
    run_git(repo, "init", "-q")
    first = _reconciler("plan", cwd=repo)
    assert first.returncode == 0, first.stderr
    assert first.stderr.splitlines() == [
        f"Creating the embedded catalog in {repo.resolve() / '.reconciler'} (first use: PostgreSQL is "
        "initialised and migrated, which takes several seconds; later commands start it in about a second)"]
    assert (repo / ".reconciler" / "pgdata" / "PG_VERSION").is_file()
    again = _reconciler("plan", "manifests", cwd=repo)
    assert again.returncode == 0 and again.stderr == ""
    # From a subdirectory, the same catalog at the repository's root.
    (repo / "manifests" / "deep").mkdir()
    inner = _reconciler("migrate", cwd=repo / "manifests" / "deep")
    assert inner.returncode == 0 and inner.stderr == "" and "is up to date" in inner.stdout
    assert not (repo / "manifests" / ".reconciler").exists()


@pytest.mark.parametrize("command", [("plan",), ("apply", "--auto-approve"), ("import",), ("migrate",),
                                     ("audit", "log")])
def test_outside_git_no_catalog_is_started_anywhere(tmp_path: Path, command: tuple[str, ...]) -> None:
    work = tmp_path / "not-a-repo"
    (work / "manifests").mkdir(parents=True)
    done = _reconciler(*command, cwd=work)
    assert done.returncode == 1
    assert done.stderr.startswith("error: no database configured and ")
    assert "is not in a git repository, at whose root the embedded catalog keeps its data (.reconciler/)" \
        in done.stderr
    assert "--database-url" in done.stderr and "git init" in done.stderr
    assert sorted(p.name for p in work.rglob("*")) == ["manifests"]  # nothing written, inside the tree or beside it


def test_resolving_outside_git_refuses_and_a_url_needs_no_repository(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECONCILER_DATABASE_URL", raising=False)
    announced: list[str] = []
    with pytest.raises(DatabaseUnavailable):
        resolve_database(None, tmp_path, announced.append)
    assert announced == [] and list(tmp_path.iterdir()) == []
    url = "postgresql://someone@127.0.0.1:5432/catalog"
    assert resolve_database(url, tmp_path, announced.append) == (url, False) and announced == []
