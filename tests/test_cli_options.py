"""Options where people type them: --debug, --verbose and --database-url before or after the
command's name; usage errors exit 1; shell completion scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from psycopg import conninfo

from reconciler.cli import cli

from .conftest import run_git
from .helpers import ALICE, commit, write

RECORDS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: obs
defaults: {owner: team-obs}
records:
  - key: sensor-1
  - key: sensor-2
"""


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False, prog_name="reconciler")
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize("args", [
    ("--debug", "validate", "no-such-tree"),
    ("validate", "no-such-tree", "--debug"),
    ("validate", "--debug", "no-such-tree"),
])
def test_debug_shows_the_traceback_before_or_after_the_command(args: tuple[str, ...]) -> None:
    code, _, err = _run(*args)
    assert code == 1
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().endswith("error: no-such-tree: no such file or directory")


def test_without_debug_there_is_one_line_and_no_traceback() -> None:
    code, _, err = _run("validate", "no-such-tree")
    assert code == 1 and err == "error: no-such-tree: no such file or directory\n"


def test_debug_from_the_environment() -> None:
    code, _, err = _run("validate", "no-such-tree", env={"RECONCILER_DEBUG": "1"})
    assert code == 1 and "Traceback (most recent call last)" in err


@pytest.mark.parametrize("where", ["before", "after", "environment"])
def test_the_database_url_is_taken_before_or_after_the_command(db_url: str, where: str) -> None:
    if where == "before":
        code, out, err = _run("--database-url", db_url, "audit", "log")
    elif where == "after":
        code, out, err = _run("audit", "log", "--database-url", db_url)
    else:
        code, out, err = _run("audit", "log", env={"RECONCILER_DATABASE_URL": db_url})
    assert code == 0, err
    assert out == "No audit log entries.\n" and err == ""  # the test's own catalog, migrated and empty


def test_the_same_url_given_twice_is_fine_and_two_different_ones_are_refused_unquoted(db_url: str) -> None:
    code, _, err = _run("--database-url", db_url, "audit", "log", "--database-url", db_url)
    assert code == 0, err
    other = conninfo.make_conninfo(db_url, password="hunter2-secret")
    code, out, err = _run("--database-url", other, "audit", "log", "--database-url", db_url)
    assert code == 1 and out == ""
    assert "--database-url is given before and after the command's name with different values" in err
    assert "hunter2" not in err and db_url not in err


def test_the_url_after_the_command_wins_over_the_environment(db_url: str) -> None:
    code, _, err = _run("audit", "log", "--database-url", db_url,
                        env={"RECONCILER_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none"})
    assert code == 0, err


def _applied_tree(git_repo: Path, db_url: str) -> None:
    write(git_repo, "manifests/records.yaml", RECORDS)
    commit(git_repo, ALICE, "records")
    code, _, err = _run("apply", str(git_repo / "manifests"), "--auto-approve", "--database-url", db_url)
    assert code == 0, err


@pytest.mark.parametrize("flag", [(), ("--verbose",), ("-v",)])
@pytest.mark.parametrize("before", [True, False])
def test_the_files_a_plan_passes_over_are_named_only_with_verbose(
        git_repo: Path, db_url: str, flag: tuple[str, ...], before: bool) -> None:
    _applied_tree(git_repo, db_url)
    command = ["plan", str(git_repo / "manifests"), "--database-url", db_url]
    code, out, err = _run(*flag, *command) if before else _run(*command, *flag)
    assert code == 0, err
    assert "No changes." in out
    line = "1 of 1 manifest files are unchanged since the last apply and every object in them is as applied"
    assert (line in err) is bool(flag), err
    if not flag:
        assert err == ""


def test_apply_names_the_files_it_passes_over_only_with_verbose(git_repo: Path, db_url: str) -> None:
    _applied_tree(git_repo, db_url)
    quiet = _run("apply", str(git_repo / "manifests"), "--auto-approve", "--database-url", db_url)
    loud = _run("apply", str(git_repo / "manifests"), "--auto-approve", "--database-url", db_url, "--verbose")
    assert quiet[0] == loud[0] == 0
    assert "not read again" not in quiet[2] and "not read again" in loud[2]


# --- usage errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("args", [
    ("plan", "--bogus"),
    ("plan", "--format", "yaml"),
    ("plan", "--detailed-exitcode", "--bogus"),
    ("apply", "--plan", "no-such-plan.json"),
    ("apply", "--plan", "{plan}", "--target", "dataset:x"),
    ("no-such-command",),
    ("audit", "log", "--limit", "0"),
])
def test_usage_errors_exit_1_never_2(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Exit 2 means one thing: ``plan --detailed-exitcode`` found changes."""
    saved = tmp_path / "plan.json"
    saved.write_text("{}", encoding="utf-8")
    args = tuple(str(saved) if a == "{plan}" else a for a in args)
    code, out, err = _run(*args)
    assert code == 1, err
    assert out == ""
    assert err.startswith("Usage: reconciler") and "\nError: " in err


# --- shell completion ----------------------------------------------------------------------


def _reconciler(env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """The installed console script, as a shell runs it."""
    script = Path(sys.executable).parent / "reconciler"
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from reconciler.cli import main; main()"]
    return subprocess.run(command, env={**os.environ, **env}, cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize(("shell", "marker"), [
    ("bash", "complete -o nosort -F _reconciler_completion reconciler"),
    ("zsh", "#compdef reconciler"),
    ("fish", "complete --no-files --command reconciler"),
])
def test_the_completion_script_the_readme_names_is_produced(tmp_path: Path, shell: str, marker: str) -> None:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    assert f"_RECONCILER_COMPLETE={shell}_source reconciler" in readme
    done = _reconciler({"_RECONCILER_COMPLETE": f"{shell}_source"}, tmp_path)
    assert done.returncode == 0, done.stderr
    assert marker in done.stdout


def test_completion_completes_commands_and_options(tmp_path: Path) -> None:
    run_git(tmp_path, "init", "-q")  # in a repository, where a catalog could be started: none is
    commands = _reconciler({"_RECONCILER_COMPLETE": "bash_complete", "COMP_WORDS": "reconciler pl",
                            "COMP_CWORD": "1"}, tmp_path)
    assert commands.returncode == 0 and commands.stdout.split() == ["plain,plan"]
    options = _reconciler({"_RECONCILER_COMPLETE": "bash_complete", "COMP_WORDS": "reconciler apply --allow-p",
                           "COMP_CWORD": "2"}, tmp_path)
    assert options.stdout.split() == ["plain,--allow-purge"]
    values = _reconciler({"_RECONCILER_COMPLETE": "bash_complete", "COMP_WORDS": "reconciler plan --format m",
                          "COMP_CWORD": "3"}, tmp_path)
    assert values.stdout.split() == ["plain,markdown"]
    assert not (tmp_path / ".reconciler").exists()


def test_the_usage_errors_docs_operators_shows_are_printed_exactly_so(tmp_path: Path, db_url: str) -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "operators.md").read_text(encoding="utf-8")
    blocks = {block.rstrip("\n").rsplit("\n", 1)[-1]: block for block in
              (b for b in doc.split("```") if b.startswith("\nUsage: reconciler "))}
    saved = tmp_path / "plan.json"
    saved.write_text("{}", encoding="utf-8")
    runs = {
        "--target cannot be combined with --plan": ("apply", "--plan", str(saved), "--target", "dataset:x"),
        "--database-url is given before and after": ("--database-url", db_url, "plan", "--database-url",
                                                     db_url + " application_name=other"),
    }
    assert len(blocks) == len(runs)
    for fragment, args in runs.items():
        (last,) = [line for line in blocks if fragment in line]
        code, _, err = _run(*args)
        assert code == 1 and err == blocks[last].lstrip("\n"), err
