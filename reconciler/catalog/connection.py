"""Opening connections to the catalog: URL choice, password-free descriptions, clear failures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import conninfo

from ..errors import DatabaseUnavailable

DATABASE_URL_ENV = "RECONCILER_DATABASE_URL"
CONNECT_TIMEOUT_SECONDS = 10


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


def connect(url: str, **kwargs: Any) -> psycopg.Connection[Any]:
    """Open a connection, or raise DatabaseUnavailable with one clear, password-free line."""
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_SECONDS)
    kwargs.setdefault("application_name", "reconciler")
    try:
        return psycopg.connect(url, **kwargs)
    except psycopg.ProgrammingError as error:
        raise DatabaseUnavailable(
            f"invalid database URL ({describe(url)}): {strip_password(str(error), url)}"
        ) from None
    except psycopg.OperationalError as error:
        reason = " ".join(strip_password(str(error), url).split())
        raise DatabaseUnavailable(f"cannot connect to {describe(url)}: {reason}") from None


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


def resolve_database(url: str | None, anchor: Path) -> tuple[str, bool]:
    """The catalog URL to use, and whether it is the embedded server.

    The URL given wins, then the environment's; with neither, the embedded server is
    started with its data under ``.reconciler/`` at the root of the git repository
    holding ``anchor`` (the manifest tree, or the working directory), or beside
    ``anchor`` when it is not in a repository.
    """
    chosen = url or os.environ.get(DATABASE_URL_ENV)
    if chosen:
        return chosen, False
    from .embedded import embedded_url  # started only when needed

    root = git_root(anchor) or (anchor.resolve() if anchor.is_dir() else anchor.resolve().parent)
    return embedded_url(root / ".reconciler"), True


def resolve_database_url(url: str | None, anchor: Path) -> str:
    """The catalog URL to use (see ``resolve_database``)."""
    return resolve_database(url, anchor)[0]
