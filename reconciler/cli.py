"""The click command line: the only place that prints, prompts or exits."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import ReconcilerError

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """Options shared by every command."""

    debug: bool = False


class _UserFacingError(click.ClickException):
    """A ReconcilerError dressed for click: one message, the error's own exit code."""

    def __init__(self, error: ReconcilerError) -> None:
        super().__init__(error.render())
        self.exit_code = error.exit_code

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.message}", err=True)


class _Group(click.Group):
    """Maps every ReconcilerError to its exit code, in this one place."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ReconcilerError as error:
            if _debug(ctx):
                traceback.print_exc()
            raise _UserFacingError(error) from error
        except (click.exceptions.Exit, click.ClickException, click.Abort, KeyboardInterrupt):
            raise
        except Exception as error:  # an unforeseen failure: still one line unless --debug
            if _debug(ctx):
                traceback.print_exc()
            raise _UserFacingError(
                ReconcilerError(
                    f"unexpected {type(error).__name__}: {error} (run with --debug for the traceback)"
                )
            ) from error


def _debug(ctx: click.Context) -> bool:
    obj = ctx.find_object(AppContext)
    return bool(obj and obj.debug)


def database_option(func: F) -> F:
    """The ``--database-url`` option every catalog command takes."""
    return click.option(
        "--database-url",
        envvar="RECONCILER_DATABASE_URL",
        metavar="URL",
        help=(
            "PostgreSQL URL of the catalog (env RECONCILER_DATABASE_URL). With neither, "
            "an embedded server is started with its data under .reconciler/ at the root "
            "of the git repository."
        ),
    )(func)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option(
    "--debug",
    is_flag=True,
    envvar="RECONCILER_DEBUG",
    help="Show the full traceback when a command fails.",
)
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Run a data platform's catalog from YAML manifests kept in git.

    Compare the manifests with the live PostgreSQL catalog, show the plan,
    and apply it with an audit entry for every change.
    """
    ctx.obj = AppContext(debug=debug)


# --- migrate -------------------------------------------------------------------------------


@cli.command()
@database_option
@click.option(
    "--sql",
    "print_sql",
    is_flag=True,
    help="Print the SQL of the pending migrations instead of applying them; changes nothing.",
)
def migrate(database_url: str | None, print_sql: bool) -> None:
    """Bring the catalog schema up to date.

    Applies the pending SQL migrations in order, each in its own transaction,
    and records each file's checksum. Safe to run on a catalog the platform's
    services created, and a no-op when nothing is pending.
    """
    from .catalog.connection import describe, resolve_database_url
    from .catalog.migrations import migrate as run_migrations
    from .catalog.migrations import pending_sql

    url = resolve_database_url(database_url, Path.cwd())
    if print_sql:
        click.echo(pending_sql(url), nl=False)
        return
    applied = run_migrations(url, on_applied=lambda m: click.echo(f"applied {m.filename}", err=True))
    if applied:
        click.echo(f"Migrated {describe(url)}: {len(applied)} migration(s) applied.")
    else:
        click.echo(f"The catalog schema at {describe(url)} is up to date.")


# --- validate ------------------------------------------------------------------------------


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="reconciler")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
