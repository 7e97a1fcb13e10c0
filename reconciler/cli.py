"""The click command line: the only place that prints, prompts or exits."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from reconciler import __version__
from reconciler.errors import ManifestError, ReconcilerError
from reconciler.core.text import clean, clean_lines

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
    from reconciler.app.workspace import migrate_catalog, pending_migrations

    if print_sql:
        click.echo(pending_migrations(database_url, Path.cwd(), _announce), nl=False)
        return
    where, applied = migrate_catalog(database_url, Path.cwd(), _announce,
                                     on_applied=lambda name: click.echo(f"applied {name}", err=True))
    if applied:
        click.echo(f"Migrated {where}: {len(applied)} migration(s) applied.")
    else:
        click.echo(f"The catalog schema at {where} is up to date.")


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
    listed; plan checks them against the catalog. Values the platform's services
    accept but cannot serve back (a record key longer than the metastore's API
    takes in a URL) are warnings, path:line:column: warning: message; they do not
    change the exit code.
    """
    from reconciler.app.validating import validate_tree

    # A ManifestError lists every problem, one per line (_UserFacingError).
    checked = validate_tree(path)
    for line in checked.warnings:
        click.echo(line, err=True)
    click.echo(checked.summary)
    for line in checked.unresolved:
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


def full_option(func: F) -> F:
    """``--full``: print every change, however many there are."""
    return click.option(
        "--full", is_flag=True,
        help=("Print every change. Without it, more than 50 changes of one kind and action show the first 20 "
              "and how many more (errors, drift and purges are always shown whole; --format json lists "
              "everything)."),
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
@full_option
@target_option
@signed_option
def plan(
    path: Path,
    database_url: str | None,
    output_format: str,
    out: Path | None,
    detailed_exitcode: bool,
    full: bool,
    targets: tuple[str, ...],
    require_signed_commits: bool,
) -> None:
    """Show what apply would change in the catalog (a dry run; writes nothing).

    Compares the manifest tree at PATH (default: manifests) with the live catalog.
    Objects in the catalog that no tree manages are listed and left alone. Exits 1
    when the plan has errors (broken links, protected objects, another source's
    objects).
    """
    from reconciler.app.planning import make_plan
    from reconciler.app.workspace import open_workspace
    from reconciler.render.plan import render_json, render_markdown, render_text

    workspace = open_workspace(path, database_url, _announce)
    result = make_plan(workspace, targets=targets, require_signed=require_signed_commits)
    _note_reused(result)
    _note_no_bus(result)
    if out is not None:
        _write_file(out, render_json(result))
    if output_format == "json":
        click.echo(render_json(result), nl=False)
    elif output_format == "markdown":
        click.echo(render_markdown(result, ui_base_url=workspace.ui_base_url, full=full), nl=False)
    else:
        click.echo(render_text(result, color=_color(sys.stdout.isatty()), full=full), nl=False)
    if result.errors:
        raise click.exceptions.Exit(1)
    if detailed_exitcode and result.has_changes:
        raise click.exceptions.Exit(2)


def _note_no_bus(plan: Any) -> None:
    """Say once, on stderr, that record changes will not be announced when no event bus is configured."""
    import os

    from reconciler.app.events import no_bus_note

    note = no_bus_note([change.kind for change in plan.changes], os.environ)
    if note:
        click.echo(note, err=True)


def _note_reused(plan: Any) -> None:
    """With --verbose, say on stderr how many files the plan did not need to read again."""
    if plan.reused_files and _shared(click.get_current_context()).verbose:
        click.echo(f"{plan.reused_files:,} of {len(plan.files):,} manifest files are "
                   "unchanged since the last apply and every object in them is as applied: not read again",
                   err=True)


def _write_file(path: Path, text: str) -> None:
    from reconciler.errors import ConfigurationError

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
@full_option
@target_option
@signed_option
@click.pass_context
def apply(
    ctx: click.Context,
    path: Path,
    database_url: str | None,
    plan_file: Path | None,
    auto_approve: bool,
    allow_purge: bool,
    allow_uncommitted: bool,
    allow_mass_archive: int | None,
    lock_timeout: float,
    output_format: str,
    full: bool,
    targets: tuple[str, ...],
    require_signed_commits: bool,
) -> None:
    """Plan, confirm, and apply the manifest tree at PATH to the catalog.

    Everything is written in one transaction, with an audit entry for every
    change, or nothing is. Without --auto-approve it asks first, and refuses when
    there is no terminal to ask on.
    """
    from reconciler.app.applying import apply_plan, check_refusals
    from reconciler.app.planning import make_plan
    from reconciler.app.saved import load_plan_file, rederive
    from reconciler.app.workspace import open_workspace
    from reconciler.core.checks import ApplyOptions
    from reconciler.render.plan import render_apply_result, render_apply_result_json, render_text

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
    _note_no_bus(result)
    options = ApplyOptions(allow_purge, allow_uncommitted, allow_mass_archive, lock_timeout)
    human = output_format == "text"
    click.echo(render_text(result, color=_color(sys.stdout.isatty() if human else sys.stderr.isatty()), full=full),
               nl=False, err=not human)
    check_refusals(workspace, result, options)
    if (result.has_changes or result.bookkeeping) and plan_file is None:
        if not auto_approve:
            if not sys.stdin.isatty():
                from reconciler.errors import ReconcilerError

                raise ReconcilerError(
                    "apply refused: no terminal to confirm on and --auto-approve not given; nothing was written"
                )
            if not click.confirm("Apply these changes to the catalog?", err=True):
                click.echo("Apply cancelled; nothing was written.", err=True)
                raise click.exceptions.Exit(1)
    outcome = apply_plan(workspace, result, options, progress=_progress, advance=_RecordBar(),
                         command=_invocation(ctx))
    if human:
        click.echo(render_apply_result(outcome.to_json(), color=_color(sys.stdout.isatty()), full=full), nl=False)
    else:
        click.echo(render_apply_result_json(outcome.to_json()), nl=False)
    if outcome.events is not None and (outcome.events.delivered or outcome.events.pending):
        click.echo(outcome.events.describe(), err=True)


def _invocation(ctx: click.Context) -> str:
    """How the command was invoked, for the runs chain: the command, its argument and every option
    given, in a canonical order, never the database URL (it may hold a password)."""
    import shlex

    words = ["reconciler", ctx.info_name or ""]
    for param in ctx.command.params:
        name = param.name or ""
        value = ctx.params.get(name)
        if name == "database_url" or ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT):
            continue
        if isinstance(param, click.Argument):
            words.append(shlex.quote(str(value)))
            continue
        flag = max(param.opts, key=len)
        for item in value if isinstance(value, tuple) else (value,):
            if item is True:
                words.append(flag)
            elif item is not False and item is not None:
                words += [flag, shlex.quote(str(item))]
    return " ".join(words)


# --- audit ---------------------------------------------------------------------------------


def _entries(n: int) -> str:
    return f"{n} entry" if n == 1 else f"{n} entries"


@cli.group("audit")
def audit_group() -> None:
    """Read, verify, anchor and export the reconciler's audit log and its runs.

    Every applied change has one entry: when, what (before, after, fields), who
    asked for it (commit author, and the merge and pull request it came through),
    who applied it (with the CI run), from which manifest and which plan; a change
    made outside git that an apply observed has one too. Entries and runs form hash
    chains (keyed with RECONCILER_AUDIT_KEY), so changes to the log after the fact
    are detected.
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
    "--anchor",
    "anchor_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    metavar="FILE",
    help="An anchor written by `audit anchor --file`: the log must still hold the entry and run it names, "
         "with their hashes. Repeatable.",
)
@click.option(
    "--notes",
    "notes_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="PATH",
    help="Check every anchor kept in the git notes (refs/notes/reconciler-audit) of the repository at PATH.",
)
@click.option(
    "--git",
    "git_path",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    metavar="PATH",
    help=(
        "Also check that every entry's commit is in the git repository at PATH and reachable "
        "from its default branch (origin/HEAD, else the current branch), and list the commits that "
        "reached it without a merge or a pull request."
    ),
)
@click.option(
    "--replay",
    is_flag=True,
    help="With --git: hold every entry a commit asked for against that commit: it must declare the "
         "object with the values the entry recorded, and have the author it names.",
)
def audit_verify(database_url: str | None, expect_head: str | None, anchor_files: tuple[Path, ...],
                 notes_path: Path | None, git_path: Path | None, replay: bool) -> None:
    """Recompute the audit log's hash chains; exit 1 naming the first bad entry.

    Detects an entry or run that was changed, removed or reordered after it was
    written, entries no run accounts for, and (with RECONCILER_AUDIT_KEY set) any
    entry not written with the key. Prints the head hash: keep it outside the
    database (or use `audit anchor`) and pass it to a later --expect-head or
    --anchor, so that a log cut short is detected too.
    """
    import os

    from reconciler.app import anchors as anchoring
    from reconciler.app.auditing import catalog_url, verify
    from reconciler.app.workspace import repository_at
    from reconciler.core.chain import audit_key
    from reconciler.errors import ConfigurationError

    if replay and git_path is None:
        raise ConfigurationError("--replay needs --git PATH (the repository whose commits the entries name)")
    repo = repository_at(git_path, "--git") if git_path is not None else None
    given = [anchor for path in anchor_files for anchor in anchoring.read_file(path)]
    if notes_path is not None:
        found = anchoring.read_notes(repository_at(notes_path, "--notes"))
        if not found:
            raise ConfigurationError(f"--notes {notes_path}: the repository has no audit anchor notes "
                                     "(refs/notes/reconciler-audit); fetch them, or take one with `audit anchor --git`")
        given += found
    key = audit_key(os.environ)
    result = verify(catalog_url(database_url, Path.cwd(), _announce), expect_head=expect_head, repo=repo, key=key,
                    anchors=given, replay_git=replay)
    for line in _verified_lines(result, expect_head is not None, repo, key is not None):
        click.echo(line)


def _seqs(seqs: tuple[int, ...]) -> str:
    """Entry numbers, the first few of a long list and how many in all."""
    if len(seqs) == 1:
        return f"entry {seqs[0]}"
    shown = ", ".join(map(str, seqs[:6]))
    return f"entries {shown}" + (f", … ({len(seqs)} in all)" if len(seqs) > 6 else "")


def _verified_lines(result: Any, expected: bool, repo: Any, keyed: bool) -> list[str]:
    """What verify established, one fact a line."""
    lines = [f"Audit log verified: {_entries(result.entries)}, head {result.head}"]
    runs = f"Runs verified: {result.runs} run{'' if result.runs == 1 else 's'}, head {result.runs_head}; " + (
        "each holds exactly the entries it appended" if result.runs else "none recorded yet")
    if result.unchained_runs:
        runs += f" ({result.unchained_runs} recorded before the runs chain are not covered)"
    lines.append(runs)
    if result.keyed_from is not None:
        lines.append(f"Keyed from entry {result.keyed_from}: every entry since carries a MAC; " + (
            "each matches RECONCILER_AUDIT_KEY." if keyed else "set RECONCILER_AUDIT_KEY to check them (not checked)."))
    elif keyed:
        lines.append("RECONCILER_AUDIT_KEY is set, but no entry carries a MAC: the log was written without a key.")
    if expected:
        lines.append(f"The expected head is entry {result.anchor_seq}; {_entries(result.after_anchor)} appended "
                     "after it." if result.after_anchor else "The expected head is the current head.")
    if result.anchors:
        newest = max(result.anchors, key=lambda a: (a.entries, a.runs))
        lines.append(f"{len(result.anchors)} anchor(s) checked: the log still holds each anchored entry and run "
                     f"with its hash (the newest: entry {newest.entries}, run {newest.runs}, taken at "
                     f"{clean(newest.taken_at)}).")
    if repo is not None:
        lines.append(f"All {result.commits} commit(s) are in {repo.root} and reachable from {result.ref}.")
        if result.direct:
            lines.append(f"{len(result.direct)} commit(s) reached {result.ref} without a merge or a pull request "
                         "(pushed directly):")
            lines += [f"  {sha[:12]} ({_seqs(seqs)})" for sha, seqs in result.direct]
        else:
            lines.append(f"Every commit reached {result.ref} through a merge or a pull request.")
    if result.replayed is not None:
        skipped = result.replayed.skipped
        lines.append(f"Replayed {_entries(result.replayed.checked)} against git: each named commit declares the "
                     "values recorded, with the author named" + (
                         f" ({_entries(skipped)} uncommitted, with no commit to hold)." if skipped else "."))
    return lines


@audit_group.command("log")
@database_option
@shared_options
@click.option("--address", metavar="ADDRESS", help="Only this object (e.g. dataset:observatory-readings).")
@click.option("--since", metavar="WHEN", help="Only entries recorded at or after this ISO date or time (UTC unless it says).")
@click.option("--until", metavar="WHEN", help="Only entries recorded before this ISO date or time.")
@click.option("--author", metavar="EMAIL", help="Only changes whose commit author has this email.")
@click.option("--applier", metavar="NAME",
              help="Only entries applied by this actor (the CI actor, the CI account's email, a local git "
                   "email or OS user).")
@click.option("--run", "run_id", metavar="RUN_ID", help="Only the entries of this run (run-…).")
@click.option("--reason", type=click.Choice(["manifest", "drift", "secret", "adoption", "out-of-band"]),
              help="Only entries made for this reason.")
@click.option("--committed-since", metavar="WHEN", help="Only entries whose commit is dated at or after this.")
@click.option("--committed-until", metavar="WHEN", help="Only entries whose commit is dated before this.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One block per entry, or a JSON array with every column.",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N entries (the newest).")
def audit_log(database_url: str | None, address: str | None, since: str | None, until: str | None,
              author: str | None, applier: str | None, run_id: str | None, reason: str | None,
              committed_since: str | None, committed_until: str | None, output_format: str,
              limit: int | None) -> None:
    """List audit log entries, newest first: who asked for each value, and when."""
    from reconciler.app.auditing import Filters, catalog_url, entries, parse_time, render_json, render_text

    def moment(text: str | None, option: str) -> Any:
        return parse_time(text, option) if text is not None else None

    filters = Filters(address, moment(since, "--since"), author, limit, moment(until, "--until"), applier, run_id,
                      reason, moment(committed_since, "--committed-since"),
                      moment(committed_until, "--committed-until"))
    found = entries(catalog_url(database_url, Path.cwd(), _announce), filters)
    click.echo(render_json(found) if output_format == "json" else render_text(found), nl=False)


@audit_group.command("runs")
@database_option
@click.option("--source", metavar="NAME", help="Only the runs of this source.")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="One block per run, or a JSON array with every column.",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N runs (the newest).")
def audit_runs(database_url: str | None, source: str | None, output_format: str, limit: int | None) -> None:
    """List applies, newest first: outcome, who applied (with the CI run), command, commit, plan
    digest, changes per action, and the audit entries each appended."""
    from reconciler.app.auditing import catalog_url, runs
    from reconciler.render.runs import render_json, render_text

    found = runs(catalog_url(database_url, Path.cwd(), _announce), limit=limit, source=source)
    click.echo(render_json(found) if output_format == "json" else render_text(found), nl=False)


@audit_group.command("anchor")
@database_option
@click.option("--file", "file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Write the anchor to FILE (replacing it), e.g. for a CI artefact.")
@click.option("--git", "git_path", type=click.Path(exists=True, file_okay=False, path_type=Path), metavar="PATH",
              help="Add the anchor to the git note (refs/notes/reconciler-audit) of the applied commit in the "
                   "repository at PATH; push it with `git push origin refs/notes/reconciler-audit`.")
@click.option("--commit", "commit", metavar="REV",
              help="With --git: note this commit instead of the newest applied run's.")
def audit_anchor(database_url: str | None, file: Path | None, git_path: Path | None, commit: str | None) -> None:
    """Keep the audit log's head outside the database, for later `audit verify --anchor/--notes`.

    An anchor names how many entries and runs the log holds and the hash of the newest
    of each; verify then detects a log cut short or rewritten since.
    """
    from reconciler.app import anchors as anchoring
    from reconciler.app.auditing import catalog_url
    from reconciler.app.workspace import repository_at
    from reconciler.errors import ConfigurationError

    if file is None and git_path is None:
        raise ConfigurationError("say where to keep the anchor: --file FILE, --git PATH, or both")
    if commit is not None and git_path is None:
        raise click.UsageError("--commit needs --git PATH")
    url = catalog_url(database_url, Path.cwd(), _announce)
    anchor = anchoring.take(url)
    click.echo(f"Anchor: entry {anchor.entries} (head {anchor.head}), run {anchor.runs} (head {anchor.runs_head})")
    if file is not None:
        anchoring.write_file(file, anchor)
        click.echo(f"Wrote the anchor to {file}")
    if git_path is not None:
        repo = repository_at(git_path, "--git")
        target = repo.resolve(commit) if commit is not None else anchoring.applied_commit(url, repo) or repo.head()
        if target is None:
            raise ConfigurationError(f"--commit {commit!r} names no commit in {repo.root}" if commit is not None
                                     else f"{repo.root} has no commit to note the anchor on")
        anchoring.write_note(repo, target, anchor)
        click.echo(f"Added the anchor to the git note of commit {target[:12]} in {repo.root} "
                   "(refs/notes/reconciler-audit); push it: git push origin refs/notes/reconciler-audit")


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
@click.option("--runs", "runs_file", type=click.Path(dir_okay=False, path_type=Path), metavar="RUNS_FILE",
              help="Also write every run to RUNS_FILE, in the same format (join on run_id).")
def audit_export(file: Path, database_url: str | None, output_format: str | None, runs_file: Path | None) -> None:
    """Write every audit log entry to FILE for analysis (DuckDB, pandas, a warehouse).

    Parquet keeps the types: seq BIGINT, recorded_at TIMESTAMP WITH TIME ZONE,
    fields VARCHAR[], before/after JSON. See docs/auditing.md for queries.
    """
    from reconciler.app.auditing import catalog_url, export, export_format

    url = catalog_url(database_url, Path.cwd(), _announce)
    count = export(url, file, export_format(file, output_format))
    click.echo(f"Exported {_entries(count)} to {file}")
    if runs_file is not None:
        written = export(url, runs_file, export_format(runs_file, output_format), runs=True)
        click.echo(f"Exported {written} run{'' if written == 1 else 's'} to {runs_file}")


# --- events ---------------------------------------------------------------------------------


@cli.command("events")
@database_option
@shared_options
@click.option(
    "--deliver",
    is_flag=True,
    help=("Deliver the pending events, oldest first, to the event bus the environment configures, as the "
          "platform's services do: APPHUB_EVENT_PROXY_URL (with APPHUB_EVENT_PROXY_TOKEN) for the HTTP event "
          "proxy, else REDIS_URL (with APPHUB_EVENT_QUEUE_NAME) for the BullMQ ingress queue. Exits 1, with "
          "the rest still pending, when the bus does not take one."),
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="Without --deliver: one line per pending event, or JSON with each event's envelope as it will be sent.",
)
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help="Without --deliver: list only the N oldest pending events (the count is of all).")
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    metavar="SECONDS",
    help="With --deliver: how long to wait for another process (an apply) that is delivering events, "
         "before failing with the events still pending.",
)
def events_command(database_url: str | None, deliver: bool, output_format: str, limit: int | None,
                   lock_timeout: float) -> None:
    """List the platform events applies wrote and the bus has not taken yet; --deliver sends them.

    Every record change an apply makes is announced on the platform's event bus
    as the metastore announces its own (metastore.record.created, updated or
    deleted), with a stable id, the apply's run id as correlation id, in apply
    order. An apply writes them in its own transaction and sends them after its
    commit; those the bus did not take (it was down, the apply was killed) stay
    pending until the next apply or this command delivers them. A bus may
    receive an event twice (at least once), never under two ids.
    """
    import os

    from reconciler.app import events
    from reconciler.render.events import render_json, render_text

    catalog = events.open_catalog(database_url, Path.cwd(), _announce)
    if deliver:
        done = events.deliver_pending(catalog, os.environ, lock_timeout, progress=_progress)
        click.echo(done.describe())
        return
    found, total = events.pending_events(catalog, limit)
    click.echo(render_json(found, total) if output_format == "json" else render_text(found, total),
               nl=False)


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
@click.option(
    "--records-format",
    type=click.Choice(["yaml", "jsonl", "csv"]),
    default="yaml",
    show_default=True,
    help=("Where records go: yaml writes records/<namespace>.yaml with the records in it; jsonl and csv "
          "write the RecordSet there and its records to records/<namespace>.jsonl or .csv (recordsFile)."),
)
def import_command(
    path: Path, database_url: str | None, out_dir: Path | None, targets: tuple[str, ...], force: bool,
    records_format: str,
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
    import os

    from reconciler.app.importing import import_tree
    from reconciler.app.workspace import open_workspace
    from reconciler.core.checks import check_address

    for target in targets:  # before the catalog is opened
        check_address(target)
    workspace = open_workspace(path, database_url, _announce)
    click.echo(import_tree(workspace, targets, out_dir, force=force, environ=os.environ, say=click.echo,
                           warn=lambda line: click.echo(line, err=True), records_format=records_format))


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="reconciler")


if __name__ == "__main__":  # pragma: no cover
    main()
