"""The built wheel works on its own: installed into a fresh virtualenv, run from another directory."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import psycopg
import pytest

from reconciler import __version__

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv with the project installed from its wheel (not editable)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)],
        check=True,
        capture_output=True,
    )
    wheels = list(out.glob("*.whl"))
    assert [wheel.name for wheel in wheels] == [f"catalog_reconciler-{__version__}-py3-none-any.whl"]
    env_dir = out / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    pip = env_dir / "bin" / "pip"
    subprocess.run(
        [str(pip), "install", "--quiet", "--disable-pip-version-check", str(wheels[0])],
        check=True,
        capture_output=True,
    )
    return env_dir / "bin" / "reconciler"


def test_the_distribution_is_not_named_like_the_unrelated_project_on_the_public_index() -> None:
    """``reconciler`` on the public package index is someone else's project: nothing here may
    install it by that name (the distribution is catalog-reconciler; README, "Installing")."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == "catalog-reconciler"
    assert project["scripts"] == {"reconciler": "reconciler.cli:main"}
    texts = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / ".github" / "workflows").glob("*.yml"))]
    for path in texts:
        text = path.read_text(encoding="utf-8")
        found = re.findall(r"(?<![\w-])reconciler\s*[=<>~]=|(?:pip|pipx) (?:install|run) reconciler\b", text)
        assert not found, f"{path.relative_to(ROOT)} installs the unrelated project: {found}"


@pytest.mark.slow
def test_wheel_ships_migrations_and_runs_from_another_directory(
    installed_wheel: Path, empty_db: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    help_run = subprocess.run(
        [str(installed_wheel), "--help"], cwd=elsewhere, env=env, capture_output=True, text=True
    )
    assert help_run.returncode == 0, help_run.stderr
    assert "migrate" in help_run.stdout

    migrate_run = subprocess.run(
        [str(installed_wheel), "migrate", "--database-url", empty_db],
        cwd=elsewhere,
        env=env,
        capture_output=True,
        text=True,
    )
    assert migrate_run.returncode == 0, migrate_run.stderr
    assert "migration(s) applied" in migrate_run.stdout
    with psycopg.connect(empty_db) as conn:
        tables = conn.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema IN ('timestore', 'metastore')"
        ).fetchone()
    assert tables == (11,)
    # The installed package found its migrations inside itself, not in this checkout.
    site = installed_wheel.parent.parent / "lib"
    assert list(site.glob("python*/site-packages/reconciler/_data/migrations/0001_timestore.sql"))


@pytest.mark.slow
def test_wheel_migrates_its_embedded_catalog_with_no_server_configured(
    installed_wheel: Path, tmp_path: Path
) -> None:
    repo = tmp_path / "team-repo"
    (repo / "manifests").mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECONCILER_")}
    runs = [
        subprocess.run(
            [str(installed_wheel), "migrate"], cwd=repo / "manifests", env=env, capture_output=True, text=True
        )
        for _ in range(2)
    ]
    assert runs[0].returncode == 0, runs[0].stderr
    assert "migration(s) applied" in runs[0].stdout
    assert runs[1].returncode == 0, runs[1].stderr
    assert "is up to date" in runs[1].stdout
    # Data under .reconciler/ at the repository root, and git ignores it.
    assert (repo / ".reconciler" / "pgdata" / "PG_VERSION").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True)
    assert status.stdout == ""
