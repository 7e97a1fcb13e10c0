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
from .errors import ManifestError, ReconcilerError
from .text import clean, clean_lines

F = TypeVar("F", bound=Callable[..., Any])


@dataclass
class AppContext:
    """Options shared by every command, given before the command's name or after it."""

    debug: bool = False
    verbose: bool = False
    database_url: str | None = None  # --database-url before the command's name


class _UserFacingError(click.ClickException):
    """A ReconcilerError dressed for click: one message, the error's own exit code."""

    def __init__(self, error: ReconcilerError) -> None:
        super().__init__(error.render())
        self.error = error
        self.exit_code = error.exit_code  # type: ignore[misc]  # click reads it per instance

    def show(self, file: Any = None) -> None:
        if isinstance(self.error, ManifestError):
            # One problem per line, exactly path:line:column: message (editors and CI
            # annotations parse them), then the count as the error line.
            for problem in self.error.problems:
                click.echo(str(problem), err=True)
            click.echo(f"error: {clean_lines(self.error.message)}", err=True)
            return
        # Values an error quotes are cleaned where it is composed; this keeps any that
        # were not from driving the terminal (the message's own line breaks stay).
        click.echo(f"error: {clean_lines(self.message)}", err=True)


class _Group(click.Group):
    """Maps every ReconcilerError to its exit code, in this one place.

    Usage errors exit 1 like every other error (click's default is 2), so that exit
    2 keeps one meaning: ``plan --detailed-exitcode`` found changes.
    """

    def main(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        kwargs["standalone_mode"] = False
        try:
            code = super().main(*args, **kwargs)
        except click.UsageError as error:
            error.show()
            sys.exit(1)
        except click.ClickException as error:
            error.show()
            sys.exit(error.exit_code)
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted; nothing was written.", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)

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


_DATABASE_HELP = ("PostgreSQL URL of the catalog (else env RECONCILER_DATABASE_URL). With neither, an embedded "
                  "server is started with its data under .reconciler/ at the root of the git repository.")
_DEBUG_HELP = "Show the full traceback when a command fails (env RECONCILER_DEBUG)."
_VERBOSE_HELP = "Say more on stderr: which manifest files a plan did not need to read again."


def _shared(ctx: click.Context) -> AppContext:
    found = ctx.find_object(AppContext)
    if found is None:  # a command invoked on its own, outside the group
        found = ctx.ensure_object(AppContext)
    return found


def _set_flag(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and param.name is not None:
        setattr(_shared(ctx), param.name, True)


def _database_url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The URL given after the command's name, else the one given before it (else None: the
    environment's, or the embedded server). Two different URLs are refused, without quoting
    either: the catalog an apply writes to is never a guess."""
    before = _shared(ctx).database_url
    if value is not None and before is not None and value != before:
        raise click.UsageError("--database-url is given before and after the command's name with different "
                               "values; give it once", ctx)
    return value if value is not None else before


def database_option(func: F) -> F:
    """The ``--database-url`` option every catalog command takes (also accepted before the
    command's name)."""
    return click.option("--database-url", metavar="URL", callback=_database_url, help=_DATABASE_HELP)(func)


def shared_options(func: F) -> F:
    """``--debug`` and ``--verbose`` after the command's name, as before it."""
    func = click.option("--verbose", "-v", is_flag=True, expose_value=False, callback=_set_flag,
                        help=_VERBOSE_HELP)(func)
    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_flag, help=_DEBUG_HELP)(func)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="reconciler")
@click.option("--debug", is_flag=True, envvar="RECONCILER_DEBUG", help=_DEBUG_HELP)
@click.option("--verbose", "-v", is_flag=True, help=_VERBOSE_HELP)
@click.option("--database-url", metavar="URL", help=_DATABASE_HELP)
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: bool, database_url: str | None) -> None:
    """Run a data platform's catalog from YAML manifests kept in git.

    Compare the manifests with the live PostgreSQL catalog, show the plan,
    and apply it with an audit entry for every change.

    --debug, --verbose and --database-url may be given before the command's
    name or after it.
    """
    ctx.obj = AppContext(debug=debug, verbose=verbose, database_url=database_url)


# --- migrate -------------------------------------------------------------------------------


@cli.command()
@database_option
@shared_options
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

    url = resolve_database_url(database_url, Path.cwd(), _announce)
    if print_sql:
        click.echo(pending_sql(url), nl=False)
        return
    applied = run_migrations(url, on_applied=lambda m: click.echo(f"applied {m.filename}", err=True))
    if applied:
        click.echo(f"Migrated {describe(url)}: {len(applied)} migration(s) applied.")
    else:
        click.echo(f"The catalog schema at {describe(url)} is up to date.")


# --- validate ------------------------------------------------------------------------------


@cli.command()
@click.argument(
    "path", required=False, default="manifests", type=click.Path(path_type=Path), metavar="[PATH]"
)
@shared_options
def validate(path: Path) -> None:
    """Check the manifest tree at PATH offline (default: manifests).

    Reads every *.yaml and *.yml file under PATH (a directory, or one file) and
    checks YAML syntax, duplicate keys, kinds and fields, limits, duplicate
    addresses and links inside the tree. Needs no database. Exits 0 with a
    summary when the tree is valid, or 1 listing every problem as
    path:line:column: message. Links to objects the tree does not declare are
    listed; plan checks them against the catalog.
    """
    from .manifests import load_tree
    from .manifests.report import summary, unresolved_lines

    tree = load_tree(path)  # a ManifestError lists every problem, one per line (_UserFacingError)
    click.echo(summary(tree))
    for line in unresolved_lines(tree):
        click.echo(line)


# --- plan and apply ------------------------------------------------------------------------

TREE_ARGUMENT = click.argument(
    "path", required=False, default="manifests", type=click.Path(path_type=Path), metavar="[PATH]"
)


def target_option(func: F) -> F:
    """The repeatable ``--target ADDRESS`` option."""
    return click.option(
        "--target",
        "targets",
        multiple=True,
        metavar="ADDRESS",
        help="Limit the plan to this object (storage-target:NAME, dataset:SLUG, record:NS/KEY). Repeatable.",
    )(func)


def signed_option(func: F) -> F:
    """The ``--require-signed-commits`` option."""
    return click.option(
        "--require-signed-commits",
        is_flag=True,
        help="Every change must come from a commit whose signature `git verify-commit` accepts.",
    )(func)


def _color(stream_is_tty: bool) -> bool:
    import os

    return stream_is_tty and "NO_COLOR" not in os.environ


def _progress(message: str) -> None:
    click.echo(f"... {message}", err=True)


def _announce(message: str) -> None:
    """A line on stderr before something slow that would otherwise pass in silence."""
    click.echo(message, err=True)


class _RecordBar:
    """A progress bar on stderr for staging many records; only on a terminal, only when long."""

    MINIMUM = 10_000

    def __init__(self) -> None:
        self.bar: Any = None
        self.shown = 0

    def __call__(self, done: int, total: int) -> None:
        if total < self.MINIMUM or not sys.stderr.isatty() or self.shown >= total:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="staging records", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(done - self.shown)
        self.shown = done
        if done >= total:
            self.bar.__exit__(None, None, None)
            self.bar = None


@cli.command()
@TREE_ARGUMENT
@database_option
@shared_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json", "markdown"]),
    default="text",
    show_default=True,
    help="How to print the plan: coloured text, the documented JSON, or markdown for a pull request.",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also save the plan as JSON to this file, for `reconciler apply --plan FILE`.",
)
@click.option(
    "--detailed-exitcode",
    is_flag=True,
    help="Exit 0 when there are no changes, 2 when there are changes, 1 on error.",
)
@target_option
@signed_option
def plan(
    path: Path,
    database_url: str | None,
    output_format: str,
    out: Path | None,
    detailed_exitcode: bool,
    targets: tuple[str, ...],
    require_signed_commits: bool,
) -> None:
    """Show what apply would change in the catalog (a dry run; writes nothing).

    Compares the manifest tree at PATH (default: manifests) with the live catalog.
    Objects in the catalog that no tree manages are listed and left alone. Exits 1
    when the plan has errors (broken links, protected objects, another source's
    objects).
    """
    from .engine import make_plan, open_workspace
    from .render import render_json, render_markdown, render_text

    workspace = open_workspace(path, database_url, _announce)
    result = make_plan(workspace, targets=targets, require_signed=require_signed_commits)
    _note_reused(result)
    if out is not None:
        _write_file(out, render_json(result))
    if output_format == "json":
        click.echo(render_json(result), nl=False)
    elif output_format == "markdown":
        click.echo(render_markdown(result, ui_base_url=workspace.ui_base_url), nl=False)
    else:
        click.echo(render_text(result, color=_color(sys.stdout.isatty())), nl=False)
    if result.errors:
        raise click.exceptions.Exit(1)
    if detailed_exitcode and result.has_changes:
        raise click.exceptions.Exit(2)


def _note_reused(plan: Any) -> None:
    """With --verbose, say on stderr how many files the plan did not need to read again."""
    if plan.reused_files and _shared(click.get_current_context()).verbose:
        click.echo(f"{plan.reused_files:,} of {len(plan.files):,} manifest files are "
                   "unchanged since the last apply and every object in them is as applied: not read again",
                   err=True)


def _write_file(path: Path, text: str) -> None:
    from .errors import ConfigurationError

    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot write {path}: {error.strerror}") from None


@cli.command()
@TREE_ARGUMENT
@database_option
@shared_options
@click.option(
    "--plan",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help=("Apply exactly this saved plan (from `plan --out`), without a prompt: it is computed again from the "
          "tree at its commit (read from git) and the catalog now, and refused unless the two are the same."),
)
@click.option("--auto-approve", is_flag=True, help="Apply without asking for confirmation.")
@click.option("--allow-purge", is_flag=True, help="Allow hard deletes of objects whose manifest says purge: true.")
@click.option(
    "--allow-uncommitted",
    is_flag=True,
    help="Allow changes from lines not committed to git; they are recorded as uncommitted.",
)
@click.option(
    "--allow-mass-archive",
    type=click.IntRange(min=0),
    metavar="N",
    help="Allow a plan that archives or purges more than 10% of a kind; N must be the exact count.",
)
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help=(
        "How long to wait, in all, for another apply of the same source and then for locks other "
        "sessions hold on rows the plan touches (the re-check and the writes), and, on a budget of "
        "its own, for the audit log's append lock, before failing with nothing applied."
    ),
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="How to print the result: per-object lines, or JSON with each object's outcome.",
)
@target_option
@signed_option
def apply(
    path: Path,
    database_url: str | None,
    plan_file: Path | None,
    auto_approve: bool,
    allow_purge: bool,
    allow_uncommitted: bool,
    allow_mass_archive: int | None,
    lock_timeout: float,
    output_format: str,
    targets: tuple[str, ...],
    require_signed_commits: bool,
) -> None:
    """Plan, confirm, and apply the manifest tree at PATH to the catalog.

    Everything is written in one transaction, with an audit entry for every
    change, or nothing is. Without --auto-approve it asks first, and refuses when
    there is no terminal to ask on.
    """
    from .engine import (ApplyOptions, apply_plan, check_refusals, load_plan_file, make_plan, open_workspace,
                         rederive)
    from .render import render_apply_result, render_apply_result_json, render_text

    if plan_file is not None and targets:
        raise click.UsageError("--target cannot be combined with --plan (a saved plan is applied exactly)")
    workspace = open_workspace(path, database_url, _announce)
    if plan_file is not None:
        # The saved plan was the review: it is derived again from git and the catalog, applied
        # only if it is the same, and without a prompt (as terraform apply PLANFILE does).
        saved, written = load_plan_file(plan_file)
        result = rederive(workspace, saved, require_signed=require_signed_commits, written=written)
    else:
        result = make_plan(workspace, targets=targets, require_signed=require_signed_commits)
    _note_reused(result)
    options = ApplyOptions(allow_purge, allow_uncommitted, allow_mass_archive, lock_timeout)
    human = output_format == "text"
    click.echo(render_text(result, color=_color(sys.stdout.isatty() if human else sys.stderr.isatty())),
               nl=False, err=not human)
    check_refusals(workspace, result, options)
    if (result.has_changes or result.bookkeeping) and plan_file is None:
        if not auto_approve:
            if not sys.stdin.isatty():
                from .errors import ReconcilerError

                raise ReconcilerError(
                    "apply refused: no terminal to confirm on and --auto-approve not given; nothing was written"
                )
            if not click.confirm("Apply these changes to the catalog?", err=True):
                click.echo("Apply cancelled; nothing was written.", err=True)
                raise click.exceptions.Exit(1)
    outcome = apply_plan(workspace, result, options, progress=_progress, advance=_RecordBar())
    if human:
        click.echo(render_apply_result(outcome.to_json(), color=_color(sys.stdout.isatty())), nl=False)
    else:
        click.echo(render_apply_result_json(outcome.to_json()), nl=False)


# --- audit ---------------------------------------------------------------------------------


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


@cli.group("audit")
def audit_group() -> None:
    """Read, verify and export the reconciler's audit log.

    Every applied change has one entry: when, what (before, after, fields), who
    asked for it (commit author), who applied it, and from which manifest. Entries
    form a hash chain, so changes to the log after the fact are detected.
    """


@audit_group.command("verify")
@database_option
@shared_options
@click.option(
    "--expect-head",
    metavar="HASH",
    help=(
        "A head hash kept outside the database (a CI log, a commit, an artefact). The log must "
        "still contain it: removing the newest entries is detected. Entries appended after it are fine."
    ),
)
@click.option(
    "--git",
    "git_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="PATH",
    help=(
        "Also check that every entry's commit is in the git repository at PATH and reachable "
        "from its default branch (origin/HEAD, else the current branch)."
    ),
)
def audit_verify(database_url: str | None, expect_head: str | None, git_path: Path | None) -> None:
    """Recompute the audit log's hash chain; exit 1 naming the first bad entry.

    Detects an entry that was changed, removed or reordered after it was written.
    Prints the head hash: keep it outside the database and pass it to a later
    --expect-head, so that a log cut short is detected too.
    """
    from .audit import catalog_url, verify
    from .errors import ConfigurationError
    from .git.repository import GitRepository

    repo = None
    if git_path is not None:
        repo = GitRepository.discover(git_path)
        if repo is None:
            raise ConfigurationError(f"--git {git_path} is not inside a git repository")
    result = verify(catalog_url(database_url, Path.cwd(), _announce), expect_head=expect_head, repo=repo)
    click.echo(f"Audit log verified: {_entries(result.entries)}, head {result.head}")
    if expect_head is not None:
        if result.after_anchor:
            click.echo(f"The expected head is entry {result.anchor_seq}; "
                       f"{_entries(result.after_anchor)} appended after it.")
        else:
            click.echo("The expected head is the current head.")
    if repo is not None:
        click.echo(f"All {result.commits} commit(s) are in {repo.root} and reachable from {result.ref}.")


@audit_group.command("log")
@database_option
@shared_options
@click.option("--address", metavar="ADDRESS", help="Only this object (e.g. dataset:observatory-readings).")
@click.option("--since", metavar="WHEN", help="Only entries recorded at or after this ISO date or time (UTC unless it says).")
@click.option("--author", metavar="EMAIL", help="Only changes whose commit author has this email.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One block per entry, or a JSON array with every column.",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N entries (the newest).")
def audit_log(database_url: str | None, address: str | None, since: str | None, author: str | None,
              output_format: str, limit: int | None) -> None:
    """List audit log entries, newest first: who asked for each value, and when."""
    from .audit import Filters, catalog_url, entries, parse_since, render_json, render_text

    filters = Filters(address, parse_since(since) if since is not None else None, author, limit)
    found = entries(catalog_url(database_url, Path.cwd(), _announce), filters)
    click.echo(render_json(found) if output_format == "json" else render_text(found), nl=False)


@audit_group.command("export")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@database_option
@shared_options
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["parquet", "csv"]),
    help="Parquet with typed columns (default), or CSV; without it a .csv FILE is written as CSV.",
)
def audit_export(file: Path, database_url: str | None, output_format: str | None) -> None:
    """Write every audit log entry to FILE for analysis (DuckDB, pandas, a warehouse).

    Parquet keeps the types: seq BIGINT, recorded_at TIMESTAMP WITH TIME ZONE,
    fields VARCHAR[], before/after JSON. See docs/auditing.md for queries.
    """
    from .audit import catalog_url, export, export_format

    count = export(catalog_url(database_url, Path.cwd(), _announce), file, export_format(file, output_format))
    click.echo(f"Exported {_entries(count)} to {file}")


# --- import --------------------------------------------------------------------------------


@cli.command("import")
@TREE_ARGUMENT
@database_option
@shared_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="Write the manifests under DIR (default: PATH/imported).",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="ADDRESS",
    help="Import only this unmanaged object (storage-target:NAME, dataset:SLUG, record:NS/KEY). Repeatable.",
)
@click.option(
    "--force",
    is_flag=True,
    help=("Replace existing files that declare no object of the tree. Files the tree declares objects in "
          "are never replaced: new documents are appended to them, or written to a file beside them."),
)
def import_command(
    path: Path, database_url: str | None, out_dir: Path | None, targets: tuple[str, ...], force: bool
) -> None:
    """Write manifests for catalog objects that no source manages, so they can be adopted.

    Unmanaged objects are those in the catalog that no source has applied and the
    tree at PATH (default: manifests) does not declare. Writes storage-targets.yaml,
    datasets/<slug>.yaml and records/<namespace>.yaml under DIR. Once committed, the
    plan shows no change for them and the next apply records them as managed.
    Config values that look like credentials are written as ${env:...} references,
    with a warning naming each variable. Look-alike names the loader would refuse
    together are skipped. Into a tree that has these files already (an earlier import),
    the new documents are appended to them, or written beside them when appending could
    change what a file declares; a file the tree declares objects in is never replaced,
    and other existing files only with --force. Nothing is ever written through a
    symbolic link or outside DIR.
    """
    from datetime import UTC, datetime

    from .app.importing import place
    from .engine import check_address, open_workspace
    from .importer import plan_import
    from .manifests import output

    for target in targets:
        check_address(target)
    workspace = open_workspace(path, database_url, _announce)
    declared, catalog = _import_inputs(workspace)
    result = plan_import(catalog.live, catalog.applied, declared, targets)
    for address, reason in result.skipped:
        click.echo(f"warning: skipped {clean(address)}: {clean(reason)}", err=True)
    if not result.candidates:
        click.echo("Nothing to import: every catalog object is managed.")
        return
    if not result.files:
        raise ReconcilerError(f"nothing imported: none of the {len(result.candidates)} unmanaged object(s) "
                              "can be written as a manifest (see the warnings above)")
    directory = out_dir if out_dir is not None else path / "imported"
    catalog_name = "the embedded catalog (.reconciler/)" if workspace.embedded else workspace.database
    header = (f"Imported by reconciler import from {clean(catalog_name)} on "
              f"{datetime.now(UTC).date().isoformat()}; review before committing.")
    boundary = workspace.repo.root if workspace.repo is not None else path
    placement = place(result.files, directory, header, declared, tree=path, boundary=boundary, force=force)
    for line in placement.lines(output.write(placement.checked, replace=False)):
        click.echo(line)
    for secret in result.secrets:
        click.echo(f"warning: {clean(secret.address)}: {clean(secret.path)} is written as "
                   f"${{env:{secret.variable}}}; set {secret.variable} to its value before plan or apply", err=True)
    click.echo(result.summary(clean(directory)))


def _import_inputs(workspace: Any) -> tuple[Any, Any]:
    """What the tree declares (secrets left unresolved) and the catalog's state, for import."""
    import os

    from .catalog.state import read_catalog
    from .desired import desired_state

    declared = desired_state(workspace.tree, environ=os.environ, resolve_env=False).desired
    return declared, read_catalog(workspace.database_url, embedded=workspace.embedded)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="reconciler")


if __name__ == "__main__":  # pragma: no cover
    main()
