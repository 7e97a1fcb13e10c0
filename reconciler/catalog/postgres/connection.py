"""Opening connections to the catalog: URL choice, password-free descriptions, clear failures."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from reconciler.errors import DatabaseError, DatabaseUnavailable
from reconciler.catalog.postgres.dsn import check_url

DATABASE_URL_ENV = "RECONCILER_DATABASE_URL"
CONNECT_TIMEOUT_SECONDS = 10

# Where a server setting in force came from (pg_settings.source), as an operator changes it.
_SETTING_SOURCES = {
    "client": "in the connection's options (the URL's options or PGOPTIONS)",
    "user": "on the database user (ALTER ROLE ... SET)",
    "database": "on the database (ALTER DATABASE ... SET)",
    "database user": "on the database user for this database (ALTER ROLE ... IN DATABASE ... SET)",
    "configuration file": "in the server's configuration file",
}


def describe(url: str) -> str:
    """The URL with its password removed, fit for messages and logs.

    Handles both URL and ``key=value`` connection strings; anything that cannot
    be parsed is shown only as ``<unparsable database URL>`` so a secret never leaks.
    """
    try:
        params = conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable database URL>"
    user = params.get("user")
    host = params.get("host") or "localhost"
    port = params.get("port")
    dbname = params.get("dbname") or user or ""
    who = f"{user}@" if user else ""
    if str(host).startswith("/"):  # a Unix socket directory, as the embedded server uses
        return f"postgresql://{who}/{dbname}?host={host}"
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql://{who}{where}/{dbname}"


def strip_password(text: str, url: str) -> str:
    """Remove the URL's password from a message a driver produced."""
    try:
        password = conninfo.conninfo_to_dict(url).get("password")
    except psycopg.ProgrammingError:
        return text
    if password:
        text = text.replace(str(password), "***")
    return text


def explain(error: psycopg.Error, conn: psycopg.Connection[Any] | None = None, url: str | None = None) -> str:
    """Why a statement failed, as one line without the password: the server's message and detail.

    A statement the server cancelled while a statement_timeout is in force is told as
    that timeout, with its value and where it is set when ``conn`` can still read them,
    so the operator knows which setting to raise.
    """
    if isinstance(error, psycopg.errors.IdleInTransactionSessionTimeout):
        return ("the server ended the session because it sat idle inside a transaction for longer than its "
                "idle_in_transaction_session_timeout; raise idle_in_transaction_session_timeout where it is set "
                "(the database user, the database, the URL's options or PGOPTIONS), or set it to 0 for the role "
                "that runs reconciler")
    if isinstance(error, psycopg.errors.QueryCanceled):
        timeout = _statement_timeout(conn)
        if timeout is None:
            return ("a statement ran longer than the server's statement_timeout; raise statement_timeout "
                    "where it is set (the database user, the database, the URL's options or PGOPTIONS)")
        value, source = timeout
        if value != "0":
            where = _SETTING_SOURCES.get(source, f"by {source}")
            return f"a statement ran longer than the server's statement_timeout of {value}, set {where}; raise it there"
    diag = error.diag
    text = " ".join((diag.message_primary or str(error) or type(error).__name__).split())
    if diag.message_detail:
        text += f" ({' '.join(diag.message_detail.split())})"
    return _without_password(text, conn, url)


def failure(doing: str, error: psycopg.Error, conn: psycopg.Connection[Any] | None = None,
            url: str | None = None) -> DatabaseError:
    """A driver error as one clear DatabaseError: ``<doing>: <why>`` (see ``explain``)."""
    return DatabaseError(f"{doing}: {explain(error, conn, url)}")


@contextmanager
def translated(doing: str, conn: psycopg.Connection[Any] | None = None, url: str | None = None) -> Iterator[None]:
    """Raise any driver error of the block as ``failure(doing, ...)``; other errors pass unchanged."""
    try:
        yield
    except psycopg.Error as error:
        raise failure(doing, error, conn, url) from None


def _statement_timeout(conn: psycopg.Connection[Any] | None) -> tuple[str, str] | None:
    """The statement_timeout in force on ``conn`` and where it was set; None when it cannot be read.

    Read in a transaction of its own, after the failed one was rolled back; a timeout too
    short even for this read leaves it unknown.
    """
    if conn is None or conn.closed or conn.broken:
        return None
    try:
        with conn.transaction():
            row = conn.execute("SELECT current_setting('statement_timeout'), source FROM pg_settings "
                               "WHERE name = 'statement_timeout'").fetchone()
    except psycopg.Error:
        return None
    return (str(row[0]), str(row[1])) if row else None


def _without_password(text: str, conn: psycopg.Connection[Any] | None, url: str | None) -> str:
    if url is not None:
        text = strip_password(text, url)
    if conn is not None:
        try:
            password = conn.info.password
        except psycopg.Error:
            password = None
        if password:
            text = text.replace(password, "***")
    return text


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection, or raise with one clear, password-free line.

    A malformed URL is a ConfigurationError naming the part that is wrong (never the
    text). The error raised carries no driver exception, not even as its context: the
    driver's messages may quote the URL, and a traceback (``--debug``) shows the chain.
    """
    check_url(url)
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    kwargs.setdefault("application_name", "reconciler")
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.ProgrammingError:
        message = ("invalid connection settings: PostgreSQL's driver refused them "
                   "(they are not shown, since they may hold a password)")
    except psycopg.OperationalError as error:
        message = f"cannot connect to {describe(url)}: {' '.join(strip_password(str(error), url).split())}"
    raise DatabaseUnavailable(message)


@contextmanager
def connection(url: str, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
    """A connection closed on exit (transactions are the caller's to manage)."""
    conn = connect(url, **kwargs)
    try:
        yield conn
    finally:
        conn.close()


def git_root(start: Path) -> Path | None:
    """The root of the git work tree holding ``start``, or None outside any repository."""
    here = start.resolve()
    if here.is_file():
        here = here.parent
    for candidate in (here, *here.parents):
        if (candidate / ".git").exists():
            return candidate
    return None


def resolve_database(url: str | None, anchor: Path,
                     announce: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """The catalog URL to use, and whether it is the embedded server.

    The URL given wins, then the environment's; with neither, the embedded server is
    started with its data under ``.reconciler/`` at the root of the git repository
    holding ``anchor`` (the manifest tree, or the working directory). Outside any
    repository there is no such root, and no other place every command would agree on
    (the tree's directory, the working directory): that is refused. ``announce`` is
    told when the embedded server is being created.
    """
    chosen = url or os.environ.get(DATABASE_URL_ENV)
    if chosen:
        check_url(chosen)  # before anything can quote it
        return chosen, False
    from reconciler.catalog.postgres.embedded import embedded_url  # started only when needed

    root = git_root(anchor)
    if root is None:
        raise DatabaseUnavailable(
            f"no database configured and {anchor} is not in a git repository, at whose root the embedded catalog "
            "keeps its data (.reconciler/); pass --database-url, set RECONCILER_DATABASE_URL, or run reconciler in "
            "the manifests' git repository (git init there first)")
    return embedded_url(root / ".reconciler", announce), True


def resolve_database_url(url: str | None, anchor: Path, announce: Callable[[str], None] | None = None) -> str:
    """The catalog URL to use (see ``resolve_database``)."""
    return resolve_database(url, anchor, announce)[0]
