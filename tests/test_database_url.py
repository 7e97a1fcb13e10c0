"""A malformed database URL is refused by naming the part that is wrong, never by showing it.

Black box through the CLI (and the console script, for the traceback of ``--debug``):
whatever the URL, its password appears in no output, no exception message or argument,
and no chained exception.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from reconciler.catalog.postgres.connection import connect, resolve_database
from reconciler.catalog.postgres.dsn import url_problem
from reconciler.cli import cli
from reconciler.errors import ConfigurationError

# (URL, its password, what the message must say is wrong)
MALFORMED = {
    "ipv6-unclosed": ("postgresql://u:Secret@[::1:5432/db", "Secret",
                      "the host opens an IPv6 address with '[' but has no closing ']'"),
    "bad-percent": ("postgresql://u:Secret%zz@host/db", "Secret",
                    "the password has a '%' not followed by two hex digits"),
    "driver-scheme": ("postgresql+psycopg://app:Secret@host/db", "Secret",
                      "its scheme names a driver (a SQLAlchemy-style dialect+driver://)"),
    "other-database": ("mysql://u:pw@h/db", "pw", "its scheme is not postgresql:// or postgres://"),
    "space-in-password": ("postgresql://u:Sec ret@host/db", "Sec ret",
                          "the password contains a space; percent-encode it as %20"),
    "unencoded-at": ("postgresql://u:Se@cret@host/db", "Se@cret",
                     "an '@' appears where the host, port or database name should be"),
    "unencoded-slash": ("postgresql://u:Sec/ret@host/db", "Sec/ret",
                        "an '@' appears where the host, port or database name should be"),
    "settings-unquoted-space": ("host=h password=Sec ret dbname=db", "Sec ret",
                                "setting 3 has no '=' (a value holding spaces must be in single quotes"),
    "settings-unclosed-quote": ("host=h password='Sec ret", "Sec ret",
                                "the value of setting 2 opens a single quote and never closes it"),
}
COMMANDS = {"plan": ["plan", "{tree}"], "migrate-sql": ["migrate", "--sql"], "audit-verify": ["audit", "verify"]}


def fragments(url: str, password: str) -> list[str]:
    """Text that must not be shown: the password, its halves, and the URL after its scheme."""
    shown = [password, url, url.split("://", 1)[-1]]
    if len(password) >= 6:
        shown += [password[: len(password) // 2 + 1], password[len(password) // 2 - 1:]]
    return shown


def assert_hidden(text: str, url: str, password: str) -> None:
    for fragment in fragments(url, password):
        assert fragment not in text, f"{fragment!r} shown in:\n{text}"


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    (tmp_path / "manifests").mkdir()
    return tmp_path / "manifests"


@pytest.fixture(autouse=True)
def no_url_in_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("RECONCILER_DATABASE_URL", raising=False)
    monkeypatch.delenv("RECONCILER_DEBUG", raising=False)
    yield


@pytest.mark.parametrize("debug", [False, True], ids=["plain", "debug"])
@pytest.mark.parametrize("via", ["option", "environment"])
@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("case", list(MALFORMED))
def test_a_malformed_url_is_refused_without_showing_it(
        case: str, command: str, via: str, debug: bool, tree: Path) -> None:
    url, password, wrong = MALFORMED[case]
    args = [part.format(tree=tree) for part in COMMANDS[command]]
    env = {}
    if via == "option":
        args += ["--database-url", url]
    else:
        env["RECONCILER_DATABASE_URL"] = url
    result = CliRunner().invoke(cli, (["--debug"] if debug else []) + args, env=env)
    assert result.exit_code == 1, result.output
    assert "error: the database URL (--database-url or RECONCILER_DATABASE_URL) is malformed: " + wrong \
        in result.output
    assert "the URL is not shown, since it may hold a password" in result.output
    assert ("Traceback" in result.output) is debug
    assert_hidden(result.output, url, password)


@pytest.mark.parametrize("case", list(MALFORMED))
def test_the_debug_traceback_of_the_console_script_holds_no_part_of_it(case: str, tree: Path) -> None:
    url, password, wrong = MALFORMED[case]
    env = {**os.environ, "RECONCILER_DATABASE_URL": url, "RECONCILER_DEBUG": "1"}
    done = subprocess.run([sys.executable, "-m", "reconciler.cli", "plan", str(tree)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback (most recent call last)" in done.stderr and wrong in done.stderr
    assert_hidden(done.stdout + done.stderr, url, password)


def exception_chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    stack: list[BaseException | None] = [error]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        yield item
        stack += [item.__cause__, item.__context__]


@pytest.mark.parametrize("case", list(MALFORMED))
def test_no_exception_carries_it(case: str, tmp_path: Path) -> None:
    url, password, _ = MALFORMED[case]
    for attempt in (lambda: resolve_database(url, tmp_path), lambda: connect(url)):
        with pytest.raises(ConfigurationError) as raised:
            attempt()
        chain = list(exception_chain(raised.value))
        assert chain == [raised.value]  # nothing chained, not even a suppressed context
        assert_hidden(" ".join(str(e) + repr(e.args) for e in chain), url, password)


def test_a_connection_failure_names_the_server_but_not_the_password() -> None:
    result = CliRunner().invoke(cli, ["--debug", "audit", "verify", "--database-url",
                                      "postgresql://admin:pw-Hidden-42@127.0.0.1:9/catalog?connect_timeout=2"])
    assert result.exit_code == 1
    assert "error: cannot connect to postgresql://admin@127.0.0.1:9/catalog:" in result.output
    assert "pw-Hidden-42" not in result.output
    assert "During handling of the above exception" not in result.output  # the driver's error is not chained


@pytest.mark.parametrize("url", [
    "postgresql://u:p%40ss%2Fword@db.example.com:5433/catalog?sslmode=require&application_name=x%20y",
    "postgres://u@[::1]:5432,db2:5433/catalog?ssl=true",
    "postgresql:///catalog?host=/var/run/postgresql",
    "postgresql://",
    "host=db.example.com port=5432 dbname=catalog user=u password='with space' sslmode=prefer",
    "dbname = catalog",
])
def test_well_formed_urls_pass(url: str) -> None:
    assert url_problem(url) is None
