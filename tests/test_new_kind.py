"""Adding a kind takes its two modules, two registry lines and its table, and nothing else.

The test copies the package, adds the Team kind of ``tests/new_kind/`` (its core module with
its model and spec, its PostgreSQL writer), registers it by one line in each registry, adds
its table in a migration (which also lets the reconciler's bookkeeping hold the new kind),
checks that nothing else in the copy differs from the package (the plan's JSON Schema
included), and drives the copy's command line through the whole life of a team: validate,
plan, a policy filter of its own, apply, a change made outside git left alone, import of an
unmanaged one, a saved plan applied, purge, and the audit log.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.catalog.postgres.migrations import load_migrations
from reconciler.core import kinds

from .helpers import TEST_AUTHOR, commit, write

ROOT = Path(__file__).resolve().parent.parent
KIND = Path(__file__).resolve().parent / "new_kind"

pytestmark = pytest.mark.integration


def _register(path: Path, module_line: str, entry: str) -> None:
    """Add ``team`` to the import line and ``entry`` after the record's in the registry."""
    text = path.read_text(encoding="utf-8")
    assert module_line in text and text.count("    record.") == 1, path
    last = next(line for line in text.splitlines() if line.startswith("    record."))
    path.write_text(text.replace(module_line, module_line + ", team")
                    .replace(last + "\n", f"{last}\n    {entry},\n"), encoding="utf-8")


def _package_with_a_team(root: Path) -> tuple[Path, str]:
    """A copy of the package and its migrations with the Team kind added; the new migration's name."""
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "reconciler", root / "reconciler", ignore=ignore)
    shutil.copytree(ROOT / "migrations", root / "migrations", ignore=ignore)
    shutil.copytree(ROOT / "schemas", root / "schemas", ignore=ignore)  # a saved plan is checked against it
    shutil.copy(KIND / "core_team.py", root / "reconciler/core/kinds/team.py")
    shutil.copy(KIND / "postgres_team.py", root / "reconciler/catalog/postgres/kinds/team.py")
    _register(root / "reconciler/core/kinds/__init__.py",
              "from reconciler.core.kinds import dataset, record, storage_target", "team.SPEC")
    _register(root / "reconciler/catalog/postgres/kinds/__init__.py",
              "from reconciler.catalog.postgres.kinds import dataset, record, storage_target", "team.WRITER")
    every = ", ".join(f"'{name}'" for name in (*kinds.NAMES, "team"))
    migration = f"{len(load_migrations()) + 1:04d}_teams.sql"
    (root / "migrations" / migration).write_text(
        "CREATE TABLE metastore.teams (name text PRIMARY KEY, description text, contact text,\n"
        "    updated_at timestamptz NOT NULL DEFAULT now());\n"
        + "".join(f"ALTER TABLE reconciler.{table} DROP CONSTRAINT {table}_kind_check,\n"
                  f"    ADD CONSTRAINT {table}_kind_check CHECK (kind IN ({every}));\n"
                  for table in ("managed_objects", "audit_log")), encoding="utf-8")
    return root, migration


def _differences(left: Path, right: Path, under: str = "") -> list[str]:
    """Files added or changed in ``right`` against ``left``, as paths below them."""
    compared = filecmp.dircmp(left, right, ignore=["__pycache__"])
    found = [f"{under}{name}" for name in compared.right_only + compared.diff_files]
    for name in compared.common_dirs:
        found += _differences(left / name, right / name, f"{under}{name}/")
    return found


def test_a_kind_is_its_two_modules_two_registry_lines_and_its_table(
        tmp_path: Path, git_repo: Path, db_url: str, db: psycopg.Connection[object]) -> None:
    code, migration = _package_with_a_team(tmp_path / "code")
    assert sorted(_differences(ROOT / "reconciler", code / "reconciler")) == [
        "catalog/postgres/kinds/__init__.py", "catalog/postgres/kinds/team.py",
        "core/kinds/__init__.py", "core/kinds/team.py"]
    assert _differences(ROOT / "migrations", code / "migrations") == [migration]
    assert _differences(ROOT / "schemas", code / "schemas") == []

    env = {**os.environ, "PYTHONPATH": str(code), "NO_COLOR": "1", "RECONCILER_DATABASE_URL": db_url}

    def reconciler(*args: str, expect: int) -> subprocess.CompletedProcess[str]:
        """The copy's ``reconciler ARGS``, which must exit ``expect``."""
        program = "import sys; from reconciler.cli import main; sys.argv[0] = 'reconciler'; main()"
        done = subprocess.run([sys.executable, "-c", program, *args], cwd=git_repo, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == expect, done.stdout + done.stderr
        return done

    def run(*args: str, expect: int = 0) -> str:
        """What the copy's ``reconciler ARGS`` prints: its standard output, then its standard error."""
        done = reconciler(*args, expect=expect)
        return done.stdout + done.stderr

    def plan(expect: int = 0) -> dict[str, Any]:
        """The copy's plan of the tree, as JSON."""
        found: dict[str, Any] = json.loads(reconciler("plan", "manifests", "--format", "json", expect=expect).stdout)
        return found

    where = subprocess.run([sys.executable, "-c", "import reconciler; print(reconciler.__file__)"],
                           cwd=git_repo, env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(str(code)), where  # the copy runs, not the package under test
    assert f"applied {migration}" in run("migrate")

    write(git_repo, "reconciler.yaml", "source: teams\npolicy:\n  grants:\n"
          "    - authors: ['*@example.com']\n      scopes: [metastore:write, timestore:admin]\n"
          "      teams: ['data-*']\n      namespaces: ['*']\n")
    write(git_repo, "manifests/teams.yaml", "apiVersion: reconciler/v1\nkind: Team\nname: data-platform\n"
          "description: Runs the catalog\ncontact: platform@example.com\n---\n"
          "apiVersion: reconciler/v1\nkind: Team\nname: ops\n")
    write(git_repo, "manifests/records.yaml", "apiVersion: reconciler/v1\nkind: Record\nnamespace: people\n"
          "key: ada\nowner: data-platform\n")
    commit(git_repo, TEST_AUTHOR, "teams")
    assert run("validate", "manifests").strip() == (
        "Valid: 0 storage targets, 0 datasets, 1 record, 2 teams in 2 files.")

    # Its grant filter is a key of its own in the policy; the denial names the team.
    refused = run("plan", "manifests", expect=1)
    assert ("team:ops: policy: author@example.com may not create it: needs scope metastore:write for team ops"
            in refused)
    assert [(c["address"], c["kind"], c["action"]) for c in plan(expect=1)["changes"]] == [
        ("record:people/ada", "record", "create"), ("team:data-platform", "team", "create"),
        ("team:ops", "team", "create")]  # after the kinds before it, in registry order

    write(git_repo, "reconciler.yaml", "source: teams\n")
    commit(git_repo, TEST_AUTHOR, "no policy")
    applied = run("apply", "manifests", "--auto-approve")
    assert "created team:data-platform" in applied and "created team:ops" in applied
    assert db.execute("SELECT name, description, contact FROM metastore.teams ORDER BY name").fetchall() == [
        ("data-platform", "Runs the catalog", "platform@example.com"), ("ops", None, None)]
    assert db.execute("SELECT kind, source FROM reconciler.managed_objects WHERE address = 'team:ops'"
                      ).fetchall() == [("team", "teams")]

    # A field the manifest leaves out stays the catalog's; a team made by hand is unmanaged, and imported.
    db.execute("UPDATE metastore.teams SET contact = 'ops@example.com' WHERE name = 'ops'")
    db.execute("INSERT INTO metastore.teams (name, description) VALUES ('stray', 'made by hand')")
    settled = plan()
    assert (settled["changes"], settled["unmanaged"]) == ([], ["team:stray"])
    assert "Imported 0 storage targets, 0 datasets, 0 records, 1 team" in run("import", "--out", "imported")
    imported = (git_repo / "imported" / "teams" / "stray.yaml").read_text(encoding="utf-8")
    assert imported.endswith("apiVersion: reconciler/v1\nkind: Team\nname: stray\ndescription: made by hand\n")

    # A saved plan of a team change is checked against the plan's schema, with the team in it.
    write(git_repo, "manifests/teams.yaml", "apiVersion: reconciler/v1\nkind: Team\nname: data-platform\n"
          "description: Runs the catalog from git\ncontact: platform@example.com\n---\n"
          "apiVersion: reconciler/v1\nkind: Team\nname: ops\n")
    commit(git_repo, TEST_AUTHOR, "describe")
    run("plan", "manifests", "--out", "plan.json")
    assert "updated team:data-platform" in run("apply", "manifests", "--plan", "plan.json", "--auto-approve")
    assert db.execute("SELECT description FROM metastore.teams WHERE name = 'data-platform'").fetchall() == [
        ("Runs the catalog from git",)]

    # A team has no archived state: left in place when its manifest goes, deleted by a purge.
    write(git_repo, "manifests/teams.yaml", "apiVersion: reconciler/v1\nkind: Team\nname: data-platform\n"
          "purge: true\n")
    commit(git_repo, TEST_AUTHOR, "purge one")
    applied = run("apply", "manifests", "--auto-approve", "--allow-purge", "--allow-mass-archive", "1")
    assert "purged team:data-platform" in applied
    assert "team:ops: no longer declared; teams have no archived state" in applied
    assert db.execute("SELECT name FROM metastore.teams ORDER BY name").fetchall() == [("ops",), ("stray",)]
    entries = db.execute("SELECT address, action, author_email FROM reconciler.audit_log WHERE kind = 'team' "
                         "ORDER BY seq").fetchall()
    assert entries == [("team:data-platform", "create", TEST_AUTHOR[1]), ("team:ops", "create", TEST_AUTHOR[1]),
                       ("team:data-platform", "update", TEST_AUTHOR[1]), ("team:data-platform", "purge", TEST_AUTHOR[1])]
    assert "Audit log verified: 5 entries" in run("audit", "verify")
