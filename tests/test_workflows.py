"""The CI templates a team copies into its manifests repository, and the docs around them.

GitHub Actions cannot run here, so the workflows are checked by what can be checked
offline: they parse; they have the triggers, permissions, jobs and steps docs/ci.md
describes; they validate against the GitHub workflow JSON Schema (vendored by
``check-jsonschema``, when it is installed); every ``reconciler`` command line in
their scripts uses options the real CLI accepts; and their shell steps behave as
documented when run with bash against a stand-in ``reconciler`` (exit codes, outputs,
job summary), and their comment script against a stand-in GitHub API (with node).
The same goes for the GitLab example in docs/ci.md, the pre-commit hook, and the
error messages docs/operators.md explains.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml
from click.testing import CliRunner

from reconciler.cli import cli

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / ".github" / "workflows"
PLAN, APPLY, DRIFT = "reconciler-plan.yml", "reconciler-apply.yml", "reconciler-drift.yml"
SECRET = "${{ secrets.RECONCILER_DATABASE_URL }}"
PINNED = {
    "actions/checkout": "v4",
    "actions/setup-python": "v5",
    "actions/upload-artifact": "v4",
    "actions/github-script": "v7",
}
MARKER = "<!-- reconciler-plan -->"


# --- loading -------------------------------------------------------------------------------


def load_workflow(name: str) -> dict[str, Any]:
    """A workflow as a dict; PyYAML reads the key ``on`` as the boolean True (YAML 1.1)."""
    data = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict), name
    if True in data:
        data["on"] = data.pop(True)
    return data


def all_workflows() -> list[str]:
    return sorted(p.name for p in WORKFLOWS.glob("*.yml"))


def only_job(workflow: dict[str, Any]) -> dict[str, Any]:
    jobs = workflow["jobs"]
    assert len(jobs) == 1, f"expected one job, got {list(jobs)}"
    return next(iter(jobs.values()))


def steps_of(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job["steps"]]


def step_named(workflow: dict[str, Any], fragment: str) -> dict[str, Any]:
    found = [s for s in steps_of(workflow) if fragment.lower() in s.get("name", "").lower()]
    assert len(found) == 1, f"expected one step named like {fragment!r}, got {[s.get('name') for s in found]}"
    return found[0]


def step_id(workflow: dict[str, Any], identifier: str) -> dict[str, Any]:
    (found,) = [s for s in steps_of(workflow) if s.get("id") == identifier]
    return found


def index_of(workflow: dict[str, Any], step: dict[str, Any]) -> int:
    return next(i for i, s in enumerate(steps_of(workflow)) if s is step)


def uses(workflow: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in steps_of(workflow) if s.get("uses", "").split("@")[0] == action]


def doc(name: str) -> str:
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def gitlab_example() -> str:
    """The complete .gitlab-ci.yml of docs/ci.md (the yaml block that starts with its name)."""
    blocks = re.findall(r"^```yaml\n(.*?)^```$", doc("ci.md"), flags=re.DOTALL | re.MULTILINE)
    found = [b for b in blocks if b.startswith("# .gitlab-ci.yml")]
    assert len(found) == 1, "docs/ci.md must hold one yaml block starting with '# .gitlab-ci.yml'"
    return found[0]


# --- shell scripts: finding `reconciler` command lines -----------------------------------------

_PUNCTUATION = "();<>|&\n"
_KEYWORDS = {"then", "do", "else", "elif", "if", "while", "until", "!", "time", "{", "exec"}


def _without_heredocs_and_comments(script: str) -> str:
    """Blank out here-document bodies (their text is not shell) and whole-line comments."""
    out, end = [], None
    for line in script.split("\n"):
        if end is not None:
            out.append("")
            if line.strip() == end:
                end = None
            continue
        match = re.search(r"<<-?\s*['\"]?(\w+)['\"]?", line)
        if match:
            end = match.group(1)
        out.append("" if line.lstrip().startswith("#") else line)
    return "\n".join(out)


def shell_tokens(script: str) -> list[str]:
    """POSIX-ish tokens; newlines and operators come out as punctuation tokens."""
    lexer = shlex.shlex(_without_heredocs_and_comments(script).replace("\\\n", " "),
                        posix=True, punctuation_chars=_PUNCTUATION)
    lexer.whitespace = " \t\r"
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def _is_separator(token: str) -> bool:
    return (all(c in _PUNCTUATION for c in token) and not any(c in "<>" for c in token)
            and any(c in ";|&\n()" for c in token))


def _is_redirection(token: str) -> bool:
    return all(c in _PUNCTUATION for c in token) and any(c in "<>" for c in token)


def reconciler_commands(script: str) -> list[list[str]]:
    """Every ``reconciler ...`` command in a script: its words, redirections included."""
    tokens = shell_tokens(script)
    found: list[list[str]] = []
    at_command, i = True, 0
    while i < len(tokens):
        token = tokens[i]
        if _is_separator(token) or token in _KEYWORDS:
            at_command, i = True, i + 1
            continue
        if token.startswith("#"):  # a trailing comment: skip to the end of the line
            while i < len(tokens) and "\n" not in tokens[i]:
                i += 1
            continue
        if at_command and token == "reconciler":
            j = i + 1
            while j < len(tokens) and not _is_separator(tokens[j]) and not tokens[j].startswith("#"):
                j += 1
            found.append(tokens[i + 1 : j])
            i = j
            continue
        if not (at_command and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", token)):  # VAR=value cmd
            at_command = False
        i += 1
    return found


def split_redirections(words: list[str]) -> tuple[list[str], dict[str, str]]:
    """Arguments, and redirections as {"stdout"|"stderr"|operator: target}."""
    args: list[str] = []
    redirects: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if _is_redirection(word):
            fd = args.pop() if args and args[-1].isdigit() else "1"
            target = words[i + 1] if i + 1 < len(words) else ""
            name = {"1": "stdout", "2": "stderr"}.get(fd, fd) if word in (">", ">>") else word
            redirects[name] = target
            i += 2
            continue
        args.append(word)
        i += 1
    return args, redirects


def shell_arrays(script: str) -> dict[str, list[str]]:
    """Words put into bash arrays (``name=(...)``, ``name+=(...)``) or into ``"$@"`` by ``set --``."""
    arrays: dict[str, list[str]] = {}
    for name, body in re.findall(r"\b([A-Za-z_]\w*)\+?=\(([^)]*)\)", script):
        arrays.setdefault(name, []).extend(shlex.split(body))
    for line in script.splitlines():
        line = line.strip()
        if line.startswith("set --"):
            words = shlex.split(line.split(";")[0])[2:]
            arrays.setdefault("@", []).extend(w for w in words if w != "$@")
    return arrays


def expand_arrays(args: list[str], arrays: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for word in args:
        match = re.fullmatch(r"\$\{(\w+)\[@\]\}|\$(@)", word)
        if match:
            out.extend(arrays.get(match.group(1) or match.group(2), []))
        else:
            out.append(word)
    return out


def scripts_of(name: str) -> list[str]:
    return [s["run"] for s in steps_of(load_workflow(name)) if "run" in s]


def commands_in(name: str) -> list[list[str]]:
    return [c for script in scripts_of(name) for c in reconciler_commands(script)]


def test_the_shell_reader_finds_commands_and_ignores_the_rest() -> None:
    script = (
        "set +e\n"
        "# reconciler plan --in-a-comment\n"
        "echo 'reconciler plan --quoted'\n"
        "if reconciler validate \"$MANIFESTS\" > validate.txt 2>&1; then echo ok; fi\n"
        "X=1 reconciler plan --format markdown --out plan.json > plan.md 2> plan.err || code=$?\n"
        "python - <<'PY'\nprint('reconciler apply --in-a-heredoc')\nPY\n"
        "extra=(--allow-purge)\n"
        "reconciler apply --auto-approve \"${extra[@]}\" # reconciler apply --trailing\n"
    )
    found = reconciler_commands(script)
    assert [c[0] for c in found] == ["validate", "plan", "apply"]
    args, redirects = split_redirections(found[1])
    assert args == ["plan", "--format", "markdown", "--out", "plan.json"]
    assert redirects == {"stdout": "plan.md", "stderr": "plan.err"}
    assert expand_arrays(split_redirections(found[2])[0], shell_arrays(script)) == [
        "apply", "--auto-approve", "--allow-purge"]


# --- the real command line ---------------------------------------------------------------------


def _help(path: tuple[str, ...]) -> str:
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="reconciler")
    assert result.exit_code == 0, f"reconciler {' '.join(path)} --help failed: {result.output}"
    return result.output


def _options(help_text: str) -> set[str]:
    section = help_text.split("Options:", 1)[1].split("Commands:", 1)[0]
    return set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", section))


def _subcommands(help_text: str) -> set[str]:
    if "Commands:" not in help_text:
        return set()
    return set(re.findall(r"^  (\S+)", help_text.split("Commands:", 1)[1], flags=re.MULTILINE))


def _click_command(path: tuple[str, ...]) -> click.Command:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


def check_against_cli(args: list[str]) -> list[str]:
    """Problems with one ``reconciler`` command line (the words after ``reconciler``)."""
    problems: list[str] = []
    path: tuple[str, ...] = ()
    rest = list(args)
    help_text = _help(path)
    # Options of the groups come before their subcommand.
    while rest and isinstance(_click_command(path), click.Group):
        word = rest[0]
        if word.startswith("--"):
            if word.split("=", 1)[0] not in _options(help_text):
                problems.append(f"reconciler {' '.join(path)}: no option {word}")
            rest.pop(0)
            continue
        if word in _subcommands(help_text):
            path += (word,)
            rest.pop(0)
            help_text = _help(path)
            continue
        break
    if not path and rest:
        problems.append(f"no reconciler command {rest[0]!r}")
        return problems
    known = _options(help_text)
    command = _click_command(path)
    params = {opt: p for p in command.params for opt in getattr(p, "opts", [])}
    i = 0
    while i < len(rest):
        word = rest[i]
        i += 1
        if not word.startswith("--"):
            continue
        name, _, inline = word.partition("=")
        if name not in known:
            problems.append(f"reconciler {' '.join(path)}: no option {name} (its --help lists {sorted(known)})")
            continue
        param = params.get(name)
        if param is None or getattr(param, "is_flag", False) or getattr(param, "count", False):
            continue
        value = inline or (rest[i] if i < len(rest) else None)
        if not inline:
            i += 1
        if value is None or value.startswith("--"):
            problems.append(f"reconciler {' '.join(path)}: {name} needs a value")
        elif isinstance(param.type, click.Choice) and "$" not in value and value not in param.type.choices:
            problems.append(f"reconciler {' '.join(path)}: {name} {value!r} is not one of {param.type.choices}")
    return problems


def test_the_cli_check_catches_unknown_options_and_values() -> None:
    assert check_against_cli(["plan", "--format", "markdown", "--detailed-exitcode"]) == []
    assert check_against_cli(["--version"]) == []
    assert check_against_cli(["plan", "--auto-approve"])
    assert check_against_cli(["plan", "--format", "yaml"])
    assert check_against_cli(["apply", "--allow-mass-archive"])
    assert check_against_cli(["plna"])


@pytest.mark.parametrize("name", all_workflows())
def test_workflow_commands_use_only_options_the_cli_accepts(name: str) -> None:
    scripts = scripts_of(name)
    checked = 0
    for script in scripts:
        arrays = shell_arrays(script)
        for words in reconciler_commands(script):
            args = expand_arrays(split_redirections(words)[0], arrays)
            assert check_against_cli(args) == [], f"{name}: reconciler {' '.join(args)}"
            checked += 1
    assert checked >= 2, f"{name}: found only {checked} reconciler command(s); is the reader broken?"


def test_gitlab_example_commands_use_only_options_the_cli_accepts() -> None:
    example = yaml.safe_load(gitlab_example())
    checked = 0
    for job in example.values():
        if not isinstance(job, dict):
            continue
        script = "\n".join([*job.get("before_script", []), *job.get("script", [])])
        arrays = shell_arrays(script)
        for words in reconciler_commands(script):
            args = expand_arrays(split_redirections(words)[0], arrays)
            assert check_against_cli(args) == [], f".gitlab-ci.yml: reconciler {' '.join(args)}"
            checked += 1
    assert checked >= 6


def test_pre_commit_entry_is_a_real_command() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    for hook in hooks:
        words = shlex.split(hook["entry"])
        assert words[0] == "reconciler"
        assert check_against_cli(words[1:]) == []


# --- every workflow ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", [PLAN, APPLY, DRIFT])
def test_the_three_templates_exist_and_say_they_are_templates(name: str) -> None:
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    assert "TEMPLATE" in text.splitlines()[0] and ".ci/run" in text.splitlines()[0]


@pytest.mark.parametrize("name", all_workflows())
def test_actions_are_pinned_by_major_version(name: str) -> None:
    for step in steps_of(load_workflow(name)):
        if "uses" in step:
            action, _, version = step["uses"].partition("@")
            assert PINNED.get(action) == version, f"{name}: {step['uses']}"


@pytest.mark.parametrize("name", all_workflows())
def test_checkout_fetches_full_history_and_python_is_3_11(name: str) -> None:
    workflow = load_workflow(name)
    checkouts = uses(workflow, "actions/checkout")
    assert checkouts and all(s["with"]["fetch-depth"] == 0 for s in checkouts)
    assert all(s["with"].get("persist-credentials") is False for s in checkouts)
    pythons = uses(workflow, "actions/setup-python")
    assert pythons and all(str(s["with"]["python-version"]) == "3.11" for s in pythons)
    assert index_of(workflow, checkouts[0]) == 0


@pytest.mark.parametrize("name", all_workflows())
def test_reconciler_is_installed_only_from_the_repository_variable(name: str) -> None:
    workflow = load_workflow(name)
    # No default: a bare name such as reconciler==0.1.0 would install whatever an index
    # serves under that name (on the public index, an unrelated project).
    assert workflow["env"]["RECONCILER_PACKAGE"] == "${{ vars.RECONCILER_PACKAGE }}"
    install = step_named(workflow, "install reconciler")
    assert 'pip install' in install["run"] and '"$RECONCILER_PACKAGE"' in install["run"]
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    assert "reconciler==" not in text and "catalog-reconciler @ git+https://" in text


@pytest.mark.parametrize("name", all_workflows())
@pytest.mark.parametrize(("spec", "installs"), [
    ("catalog-reconciler @ git+https://git.example.com/platform/reconciler@v0.1.0", True),
    ("catalog-reconciler @ https://artifacts.example.com/catalog_reconciler-0.1.0-py3-none-any.whl", True),
    ("reconciler==0.1.0", False),
    ("catalog-reconciler==0.1.0", False),
    ("catalog-reconciler", False),
    ("catalog-reconciler @ ", False),
    ("", False),
])
def test_the_install_step_installs_a_direct_reference_and_refuses_a_bare_name(
        runner: Runner, name: str, spec: str, installs: bool) -> None:
    workflow = load_workflow(name)
    (runner.bin / "python").unlink()
    fake_python = runner.bin / "python"
    fake_python.write_text('#!/usr/bin/env bash\necho "python $*" >> "$FAKE_LOG"\n', encoding="utf-8")
    fake_python.chmod(0o755)
    install = step_named(workflow, "install reconciler")
    code, _, printed = runner.run(workflow, install, RECONCILER_PACKAGE=spec)
    if installs:
        assert code == 0, printed
        assert runner.calls() == [f"python -m pip install --disable-pip-version-check {spec}", "--version"]
    else:
        assert code == 1 and runner.calls() == []
        assert "::error::set the repository variable RECONCILER_PACKAGE" in printed


@pytest.mark.parametrize("name", all_workflows())
def test_the_database_url_comes_only_from_the_secret(name: str) -> None:
    workflow = load_workflow(name)
    text = (WORKFLOWS / name).read_text(encoding="utf-8")
    assert "postgresql://" not in text and "postgres://" not in text
    assert "--database-url" not in text
    for step in steps_of(workflow):
        commands = [split_redirections(c)[0] for c in reconciler_commands(step.get("run", ""))]
        if any(c and c[0] in ("plan", "apply", "migrate") for c in commands):
            assert step["env"]["RECONCILER_DATABASE_URL"] == SECRET, step["name"]
            # An empty secret must stop the job, not fall back to an empty embedded catalog.
            assert '-z "$RECONCILER_DATABASE_URL"' in step["run"] or any(
                '-z "$RECONCILER_DATABASE_URL"' in s.get("run", "") for s in steps_of(workflow)
                if index_of(workflow, s) < index_of(workflow, step))
    for key, value in workflow.get("env", {}).items():
        assert "secrets." not in str(value), f"{name}: secret {key} exposed to every step"


@pytest.mark.parametrize("name", all_workflows())
def test_jobs_have_timeouts_and_use_bash_with_pipefail(name: str) -> None:
    workflow = load_workflow(name)
    assert workflow["defaults"]["run"]["shell"] == "bash"
    for job in workflow["jobs"].values():
        assert 0 < job["timeout-minutes"] <= 120
        assert job["runs-on"] == "ubuntu-latest"


# --- plan on pull requests -----------------------------------------------------------------------


def test_plan_runs_on_pull_requests_touching_manifests() -> None:
    workflow = load_workflow(PLAN)
    assert set(workflow["on"]) == {"pull_request"}
    paths = workflow["on"]["pull_request"]["paths"]
    assert "manifests/**" in paths and "reconciler.yaml" in paths
    assert workflow["permissions"] == {"contents": "read", "pull-requests": "write"}


def test_plan_validates_plans_comments_uploads_then_fails() -> None:
    workflow = load_workflow(PLAN)
    validate, plan = step_named(workflow, "validate"), step_named(workflow, "plan against")
    comment, upload = uses(workflow, "actions/github-script"), uses(workflow, "actions/upload-artifact")
    fail = step_named(workflow, "fail on")
    assert len(comment) == 1 and len(upload) == 1
    order = [index_of(workflow, s) for s in (validate, plan, comment[0], upload[0], fail)]
    assert order == sorted(order)

    assert any(c[0] == "validate" for c in reconciler_commands(validate["run"]))
    (plan_command,) = reconciler_commands(plan["run"])
    args, redirects = split_redirections(plan_command)
    assert args[0] == "plan" and args[args.index("--format") + 1] == "markdown"
    assert args[args.index("--out") + 1] == "plan.json" and redirects["stdout"] == "plan.md"
    assert "--detailed-exitcode" not in args
    # A failing validate or plan must not stop the job before the comment: both record
    # their exit code and the last step fails the job.
    for step in (validate, plan):
        assert "set +e" in step["run"] and 'exitcode=$code' in step["run"]
    assert plan["if"] == "steps.validate.outputs.exitcode == '0'"
    for step in (comment[0], upload[0], fail):
        assert "!cancelled()" in step["if"]
    assert "steps.validate.outputs.exitcode" in fail["env"]["VALIDATE_EXIT"]
    assert "steps.plan.outputs.exitcode" in fail["env"]["PLAN_EXIT"]
    assert "exit 1" in fail["run"]

    script = comment[0]["with"]["script"]
    assert MARKER in script
    for call in ("listComments", "updateComment", "createComment", "paginate"):
        assert f"github.rest.issues.{call}" in script or f"github.{call}" in script
    artifact = upload[0]["with"]
    assert {"plan.json", "plan.md"} <= set(artifact["path"].split())
    assert artifact["if-no-files-found"] == "ignore"


# --- apply on the default branch -----------------------------------------------------------------


def test_apply_runs_on_pushes_to_the_default_branch_and_by_hand() -> None:
    workflow = load_workflow(APPLY)
    assert set(workflow["on"]) == {"push", "workflow_dispatch"}
    push = workflow["on"]["push"]
    assert push["branches"] == ["main"]
    assert "manifests/**" in push["paths"] and "reconciler.yaml" in push["paths"]
    assert workflow["permissions"] == {"contents": "read"}
    assert workflow["concurrency"] == {"group": "reconciler-apply", "cancel-in-progress": False}
    job = only_job(workflow)
    assert job["if"] == "github.ref == format('refs/heads/{0}', github.event.repository.default_branch)"
    assert job["environment"] == "reconciler-catalog"
    inputs = workflow["on"]["workflow_dispatch"]["inputs"]
    assert inputs["allow_purge"]["type"] == "boolean" and inputs["allow_purge"]["default"] is False


def test_apply_validates_migrates_applies_summarises_and_uploads() -> None:
    workflow = load_workflow(APPLY)
    validate, migrate = step_named(workflow, "validate"), step_named(workflow, "schema up to date")
    apply, summary = step_id(workflow, "apply"), step_named(workflow, "job summary")
    upload, fail = uses(workflow, "actions/upload-artifact"), step_named(workflow, "fail when")
    order = [index_of(workflow, s) for s in (step_id(workflow, "tip"), validate, migrate, apply, summary,
                                             upload[0], fail)]
    assert order == sorted(order)
    assert [c[0] for c in reconciler_commands(migrate["run"])] == ["migrate"]

    (words,) = reconciler_commands(apply["run"])
    args, redirects = split_redirections(words)
    assert args[:2] == ["apply", "$MANIFESTS"] and "--auto-approve" in args
    assert args[args.index("--format") + 1] == "json"
    assert redirects == {"stdout": "apply.json", "stderr": "apply.txt"}
    # Purges and mass archives are never allowed by a push, only by a run started by hand.
    assert "--allow-purge" not in args and "--allow-mass-archive" not in args
    assert apply["env"]["ALLOW_PURGE"] == "${{ inputs.allow_purge }}"

    assert '>> "$GITHUB_STEP_SUMMARY"' in summary["run"]
    assert {"apply.json", "apply.txt"} <= set(upload[0]["with"]["path"].split())
    assert "GITHUB_ACTOR" in (WORKFLOWS / APPLY).read_text(encoding="utf-8")


# --- drift on a schedule -------------------------------------------------------------------------


def test_drift_runs_hourly_with_detailed_exit_codes() -> None:
    workflow = load_workflow(DRIFT)
    assert set(workflow["on"]) == {"schedule", "workflow_dispatch"}
    (schedule,) = workflow["on"]["schedule"]
    minute, hour, *rest = schedule["cron"].split()
    assert minute.isdigit() and 0 <= int(minute) < 60 and hour == "*" and rest == ["*", "*", "*"]
    assert workflow["permissions"] == {"contents": "read"}
    step = step_named(workflow, "plan against")
    (words,) = reconciler_commands(step["run"])
    args, redirects = split_redirections(words)
    assert redirects == {"stdout": "drift.md", "stderr": "drift.err"}
    assert args[0] == "plan" and "--detailed-exitcode" in args
    assert args[args.index("--format") + 1] == "markdown"
    assert re.search(r"^\s*0\)", step["run"], re.MULTILINE) and re.search(r"^\s*2\)", step["run"], re.MULTILINE)
    assert re.search(r"^\s*\*\)", step["run"], re.MULTILINE)


# --- the shell steps, run with bash against a stand-in reconciler --------------------------------

FAKE_RECONCILER = r"""#!/bin/sh
# Stand-in for reconciler: logs its arguments, prints $FAKE_STDOUT_<sub> / $FAKE_STDERR_<sub>,
# exits $FAKE_EXIT_<sub> (default 0).
echo "$*" >> "$FAKE_LOG"
case "$1" in --*) exit 0 ;; esac
eval "out=\${FAKE_STDOUT_$1:-}; err=\${FAKE_STDERR_$1:-}; code=\${FAKE_EXIT_$1:-0}"
[ -n "$out" ] && printf '%s\n' "$out"
[ -n "$err" ] && printf '%s\n' "$err" >&2
exit "$code"
"""



class Runner:
    """Runs one workflow step's script the way GitHub's `shell: bash` does."""

    def __init__(self, tmp: Path) -> None:
        self.work = tmp / "work"
        self.work.mkdir()
        self.bin = tmp / "bin"
        self.bin.mkdir()
        fake = self.bin / "reconciler"
        fake.write_text(FAKE_RECONCILER, encoding="utf-8")
        fake.chmod(0o755)
        (self.bin / "python").symlink_to(sys.executable)
        self.log = tmp / "reconciler.log"
        self.log.touch()
        self.summary = tmp / "summary.md"
        self.summary.touch()
        self.fake: dict[str, str] = {}

    def calls(self) -> list[str]:
        return self.log.read_text(encoding="utf-8").splitlines()

    def run(self, workflow: dict[str, Any], step: dict[str, Any],
            **env: str) -> tuple[int, dict[str, str], str]:
        output = self.work.parent / "github_output"
        output.write_text("", encoding="utf-8")
        environ = {
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.work.parent), "LANG": "C.UTF-8",
            "GITHUB_OUTPUT": str(output), "GITHUB_STEP_SUMMARY": str(self.summary),
            "GITHUB_SHA": "0123456789abcdef0123456789abcdef01234567", "GITHUB_ACTOR": "octocat",
            "GITHUB_REF_NAME": "main", "FAKE_LOG": str(self.log),
        }
        for key, value in {**workflow.get("env", {}), **step.get("env", {})}.items():
            if "${{" not in str(value):
                environ[key] = str(value)
        environ.update(self.fake)
        environ.update(env)
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
                              cwd=self.work, env=environ, capture_output=True, text=True, timeout=60,
                              check=False)
        outputs = dict(line.split("=", 1) for line in output.read_text(encoding="utf-8").splitlines()
                       if "=" in line)
        return done.returncode, outputs, done.stdout + done.stderr


@pytest.fixture
def runner(tmp_path: Path) -> Runner:
    return Runner(tmp_path)


def test_plan_steps_record_failures_and_the_last_step_fails_the_job(runner: Runner) -> None:
    workflow = load_workflow(PLAN)
    validate, plan, fail = (step_named(workflow, n) for n in ("validate", "plan against", "fail on"))

    runner.fake = {"FAKE_EXIT_validate": "1",
                   "FAKE_STDERR_validate": "manifests/a.yaml:3:7: unknown field 'x' (100%)\nerror: 1 problem"}
    code, outputs, printed = runner.run(workflow, validate)
    assert code == 0 and outputs == {"exitcode": "1"}
    assert "::error file=manifests/a.yaml,line=3,col=7::unknown field 'x' (100%25)" in printed
    assert "unknown field 'x'" in (runner.work / "validate.txt").read_text(encoding="utf-8")

    runner.fake = {"FAKE_EXIT_plan": "1", "FAKE_STDOUT_plan": "## Reconciler plan\n### ❌ Errors (1)",
                   "FAKE_STDERR_plan": ""}
    code, outputs, _ = runner.run(workflow, plan, RECONCILER_DATABASE_URL="postgresql://ro@db/catalog")
    assert code == 0 and outputs == {"exitcode": "1"}
    assert "### ❌ Errors (1)" in (runner.work / "plan.md").read_text(encoding="utf-8")
    assert runner.calls()[-1] == "plan manifests --format markdown --out plan.json"

    calls = len(runner.calls())
    code, outputs, _ = runner.run(workflow, plan, RECONCILER_DATABASE_URL="")
    assert code == 0 and outputs == {"exitcode": "1"} and len(runner.calls()) == calls
    assert "RECONCILER_DATABASE_URL is not set" in (runner.work / "plan.err").read_text(encoding="utf-8")

    for validate_exit, plan_exit, expected in (("0", "0", 0), ("0", "1", 1), ("1", "", 1), ("", "", 1)):
        code, _, printed = runner.run(workflow, fail, VALIDATE_EXIT=validate_exit, PLAN_EXIT=plan_exit)
        assert code == expected, (validate_exit, plan_exit, printed)


@pytest.mark.parametrize(("exit_code", "job_fails", "summary"), [
    ("0", False, "matches the manifests"),
    ("2", True, "drifted from the manifests"),
    ("1", True, "reconciler plan failed (exit 1)"),
])
def test_drift_step_maps_exit_codes(runner: Runner, exit_code: str, job_fails: bool, summary: str) -> None:
    workflow = load_workflow(DRIFT)
    step = step_named(workflow, "plan against")
    runner.fake = {"FAKE_EXIT_plan": exit_code, "FAKE_STDOUT_plan": "## Reconciler plan\n- `dataset:x` update",
                   "FAKE_STDERR_plan": "error: cannot connect" if exit_code == "1" else ""}
    code, _, _ = runner.run(workflow, step, RECONCILER_DATABASE_URL="postgresql://ro@db/catalog")
    assert (code != 0) is job_fails
    text = runner.summary.read_text(encoding="utf-8")
    assert summary in text
    if exit_code == "2":
        assert "- `dataset:x` update" in text
    assert runner.calls() == ["plan manifests --detailed-exitcode --format markdown"]
    code, _, printed = runner.run(workflow, step, RECONCILER_DATABASE_URL="")
    assert code == 1 and "RECONCILER_DATABASE_URL is not set" in printed


def test_drift_step_does_not_take_a_usage_error_for_drift(runner: Runner) -> None:
    # A usage error exits 1, as the real CLI does (tests/test_cli_options.py): exit 2 is drift only.
    workflow = load_workflow(DRIFT)
    runner.fake = {"FAKE_EXIT_plan": "1", "FAKE_STDERR_plan": "Error: No such option: --bogus"}
    code, _, printed = runner.run(workflow, step_named(workflow, "plan against"),
                                  RECONCILER_DATABASE_URL="postgresql://ro@db/catalog")
    text = runner.summary.read_text(encoding="utf-8")
    assert code == 1 and "reconciler plan failed (exit 1)" in text and "drifted" not in text
    assert "Error: No such option: --bogus" in text and "exited 1: Error: No such option" in printed
    assert "usage error also exits 2" not in (WORKFLOWS / DRIFT).read_text(encoding="utf-8")


def test_apply_steps_pass_flags_summarise_and_fail(runner: Runner) -> None:
    workflow = load_workflow(APPLY)
    apply = step_id(workflow, "apply")
    summary, fail = (step_named(workflow, n) for n in ("job summary", "fail when"))
    url = {"RECONCILER_DATABASE_URL": "postgresql://rw@db/catalog"}

    result = {"run_id": "run-1", "outcome": "applied", "summary": {"create": 1, "update": 0, "archive": 0,
              "restore": 0, "purge": 0}, "objects": [{"address": "dataset:a", "action": "create",
                                                      "outcome": "created"}]}
    runner.fake = {"FAKE_STDOUT_apply": json.dumps(result), "FAKE_STDERR_apply": "Plan: 1 to create"}
    code, outputs, _ = runner.run(workflow, apply, **url, ALLOW_PURGE="false", ALLOW_MASS_ARCHIVE="")
    assert code == 0 and outputs == {"exitcode": "0"}
    assert runner.calls()[-1] == "apply manifests --auto-approve --format json"
    assert json.loads((runner.work / "apply.json").read_text(encoding="utf-8")) == result
    code, _, _ = runner.run(workflow, summary, APPLY_EXIT="0")
    text = runner.summary.read_text(encoding="utf-8")
    assert code == 0 and "`run-1`: **applied**" in text and "| create | 1 |" in text
    assert "- created `dataset:a`" in text and "Plan: 1 to create" in text and "`octocat`" in text
    assert runner.run(workflow, fail, APPLY_EXIT="0")[0] == 0

    runner.fake = {"FAKE_EXIT_apply": "1", "FAKE_STDERR_apply": "error: apply refused; nothing was written:\n"
                   "  purge needs --allow-purge: dataset:old"}
    code, outputs, _ = runner.run(workflow, apply, **url, ALLOW_PURGE="true", ALLOW_MASS_ARCHIVE="7")
    assert code == 0 and outputs == {"exitcode": "1"}
    assert runner.calls()[-1] == "apply manifests --auto-approve --format json --allow-purge --allow-mass-archive 7"
    runner.summary.write_text("", encoding="utf-8")
    code, _, _ = runner.run(workflow, summary, APPLY_EXIT="1")
    text = runner.summary.read_text(encoding="utf-8")
    assert code == 0 and "Apply failed or was refused (exit 1)" in text and "purge needs --allow-purge" in text
    assert runner.run(workflow, fail, APPLY_EXIT="1")[0] == 1


def test_apply_skips_a_commit_that_is_no_longer_the_tip(runner: Runner) -> None:
    workflow = load_workflow(APPLY)
    step = step_id(workflow, "tip")

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=runner.work, check=True, capture_output=True, text=True,
                              env={**os.environ, "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@example.com",
                                   "GIT_COMMITTER_NAME": "a", "GIT_COMMITTER_EMAIL": "a@example.com"}
                              ).stdout.strip()

    git("init", "-q")
    git("commit", "-q", "--allow-empty", "-m", "one")
    first = git("rev-parse", "HEAD")
    git("update-ref", "refs/remotes/origin/main", first)
    assert runner.run(workflow, step)[:2] == (0, {"current": "true"})
    git("commit", "-q", "--allow-empty", "-m", "two")
    git("update-ref", "refs/remotes/origin/main", "HEAD")
    git("checkout", "-q", first)
    code, outputs, _ = runner.run(workflow, step)
    assert (code, outputs) == (0, {"current": "false"})
    assert "no longer the tip" in runner.summary.read_text(encoding="utf-8")
    # Every later step is skipped with it: directly, or because the apply step was skipped.
    for later in steps_of(workflow)[index_of(workflow, step) + 1:]:
        assert ("steps.tip.outputs.current == 'true'" in later["if"]
                or "steps.apply.outcome == 'success'" in later["if"]), later["name"]
    assert step_id(workflow, "apply")["if"] == "steps.tip.outputs.current == 'true'"


# --- the comment script, run with node against a stand-in GitHub API -----------------------------

NODE_HARNESS = r"""
const fs = require('fs');
const state = JSON.parse(fs.readFileSync(process.env.STATE, 'utf8'));
const save = () => fs.writeFileSync(process.env.STATE, JSON.stringify(state));
const context = {serverUrl: 'https://github.example', runId: 42, repo: {owner: 'o', repo: 'r'},
                 payload: {pull_request: {number: 7, head: {sha: 'abcdef0123456789'}}}};
const core = {info: () => {}};
const github = {
  paginate: async (method, args) => { state.listed.push(args.issue_number); return state.comments; },
  rest: {issues: {
    listComments: 'listComments',
    updateComment: async (args) => { state.comments.find((c) => c.id === args.comment_id).body = args.body; save(); },
    createComment: async (args) => {
      const c = {id: state.comments.length + 1, user: {type: 'Bot'}, body: args.body, html_url: 'u'};
      state.comments.push(c); save(); return {data: c}; },
  }},
};
(async () => { SCRIPT })().then(save, (e) => { console.error(e); process.exit(1); });
"""


def test_the_comment_is_created_once_then_updated(tmp_path: Path) -> None:
    step = uses(load_workflow(PLAN), "actions/github-script")[0]
    harness = tmp_path / "harness.js"
    harness.write_text(NODE_HARNESS.replace("SCRIPT", step["with"]["script"]), encoding="utf-8")
    state = tmp_path / "state.json"
    quoted = {"id": 1, "user": {"type": "User"}, "body": f"{MARKER}\nquoted by a person", "html_url": "h"}
    state.write_text(json.dumps({"comments": [quoted], "listed": []}), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()

    def post(validate: str, plan: str) -> list[dict[str, Any]]:
        subprocess.run(["node", str(harness)], cwd=work, check=True, timeout=60,
                       env={**os.environ, "STATE": str(state), "VALIDATE_EXIT": validate, "PLAN_EXIT": plan})
        return list(json.loads(state.read_text(encoding="utf-8"))["comments"])

    (work / "plan.md").write_text("## Reconciler plan\nfirst", encoding="utf-8")
    comments = post("0", "0")
    assert len(comments) == 2 and comments[1]["body"].startswith(MARKER + "\n## Reconciler plan\nfirst")
    assert "abcdef0" in comments[1]["body"] and "actions/runs/42" in comments[1]["body"]

    (work / "plan.md").write_text("## Reconciler plan\nsecond", encoding="utf-8")
    (work / "plan.err").write_text("error: `bad` thing", encoding="utf-8")
    comments = post("0", "1")
    assert len(comments) == 2 and "second" in comments[1]["body"] and "first" not in comments[1]["body"]
    assert "error: `bad` thing" in comments[1]["body"] and comments[0] == quoted

    (work / "validate.txt").write_text("manifests/a.yaml:1:1: unknown field 'x'", encoding="utf-8")
    comments = post("1", "")
    assert "manifests are invalid" in comments[1]["body"] and "unknown field 'x'" in comments[1]["body"]

    (work / "plan.md").write_text("x" * 200_000, encoding="utf-8")
    comments = post("0", "0")
    assert len(comments[1]["body"]) <= 65_536 and comments[1]["body"].startswith(MARKER)


# --- JSON Schemas, offline -----------------------------------------------------------------------


def _check_jsonschema(*args: str) -> subprocess.CompletedProcess[str]:
    import check_jsonschema  # noqa: F401  (a test dependency; its vendored schemas work offline)
    return subprocess.run([sys.executable, "-m", "check_jsonschema", *args], capture_output=True, text=True,
                          timeout=120, check=False)


def test_workflows_validate_against_the_github_workflow_schema(tmp_path: Path) -> None:
    files = [str(WORKFLOWS / name) for name in all_workflows()]
    for schema in ("vendor.github-workflows", "custom.github-workflows-require-timeout"):
        done = _check_jsonschema("--builtin-schema", schema, *files)
        assert done.returncode == 0, done.stdout + done.stderr
    # The validator really validates: a job without runs-on and a misspelt key fail.
    broken = tmp_path / "broken.yml"
    broken.write_text((WORKFLOWS / DRIFT).read_text(encoding="utf-8")
                      .replace("runs-on:", "run-on:"), encoding="utf-8")
    assert _check_jsonschema("--builtin-schema", "vendor.github-workflows", str(broken)).returncode != 0


def test_gitlab_example_validates_against_the_gitlab_ci_schema(tmp_path: Path) -> None:
    example = tmp_path / ".gitlab-ci.yml"
    example.write_text(gitlab_example(), encoding="utf-8")
    done = _check_jsonschema("--builtin-schema", "vendor.gitlab-ci", str(example))
    assert done.returncode == 0, done.stdout + done.stderr
    example.write_text(gitlab_example().replace("resource_group:", "resource_groups:"), encoding="utf-8")
    assert _check_jsonschema("--builtin-schema", "vendor.gitlab-ci", str(example)).returncode != 0


# --- the GitLab example --------------------------------------------------------------------------


def test_gitlab_example_has_the_same_loop() -> None:
    example = yaml.safe_load(gitlab_example())
    assert example["variables"]["GIT_DEPTH"] == "0"
    plan, apply, drift = example["plan"], example["apply"], example["drift"]
    assert plan["rules"][0]["if"] == '$CI_PIPELINE_SOURCE == "merge_request_event"'
    assert "manifests/**/*" in plan["rules"][0]["changes"]
    plan_script = "\n".join(plan["script"])
    assert MARKER in plan_script and "PRIVATE-TOKEN" in plan_script and "/notes" in plan_script
    assert plan["artifacts"]["when"] == "always" and "plan.json" in plan["artifacts"]["paths"]
    plans = [split_redirections(c)[0] for c in reconciler_commands(plan_script)]
    assert any(c[0] == "plan" and c[c.index("--format") + 1] == "markdown" and "--out" in c for c in plans)
    assert apply["resource_group"] and apply["interruptible"] is False
    assert all("$CI_DEFAULT_BRANCH" in rule["if"] for rule in apply["rules"])
    applies = [split_redirections(c)[0] for c in reconciler_commands("\n".join(apply["script"]))]
    assert any(c[0] == "apply" and "--auto-approve" in c for c in applies)
    assert drift["rules"][0]["if"].startswith('$CI_PIPELINE_SOURCE == "schedule"')
    drifts = [split_redirections(c)[0] for c in reconciler_commands("\n".join(drift["script"]))]
    assert any(c[0] == "plan" and "--detailed-exitcode" in c for c in drifts)
    assert "GITLAB_USER_LOGIN" in doc("ci.md")


@pytest.mark.parametrize(("spec", "installs"), [
    ("catalog-reconciler @ git+https://git.example.com/platform/reconciler@v0.1.0", True),
    ("reconciler==0.1.0", False),
    ("", False),
])
def test_gitlab_example_installs_a_direct_reference_and_refuses_a_bare_name(
        runner: Runner, spec: str, installs: bool) -> None:
    example = yaml.safe_load(gitlab_example())
    assert "RECONCILER_PACKAGE" not in example["variables"]  # a CI/CD variable, never a default here
    (runner.bin / "python").unlink()
    fake_python = runner.bin / "python"
    fake_python.write_text('#!/usr/bin/env bash\necho "python $*" >> "$FAKE_LOG"\n', encoding="utf-8")
    fake_python.chmod(0o755)
    steps = [line for line in example[".reconciler"]["before_script"] if "git fetch" not in line]
    code, _, printed = runner.run({}, {"run": "\n".join(steps)}, RECONCILER_PACKAGE=spec)
    if installs:
        assert code == 0 and runner.calls() == [f"python -m pip install --quiet {spec}", "--version"], printed
    else:
        assert code == 1 and runner.calls() == [] and "RECONCILER_PACKAGE" in printed


# --- the pre-commit hook -------------------------------------------------------------------------


def test_pre_commit_hook_runs_validate_on_the_whole_tree() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text(encoding="utf-8"))
    (hook,) = [h for h in hooks if h["id"] == "reconciler-validate"]
    assert hook["entry"] == "reconciler validate"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is False
    files = re.compile(hook["files"])
    for path in ("manifests/datasets.yaml", "manifests/team/records.yml"):
        assert files.search(path), path
    for path in ("README.md", "manifests/notes.txt", "docs/manifests/x.yaml", "reconciler.yaml"):
        assert not files.search(path), path


def _doc_yaml_blocks(name: str) -> list[str]:
    return re.findall(r"^```yaml\n(.*?)^```$", doc(name), flags=re.DOTALL | re.MULTILINE)


def test_pre_commit_doc_examples() -> None:
    blocks = [yaml.safe_load(b) for b in _doc_yaml_blocks("pre-commit.md")]
    configs = [b for b in blocks if isinstance(b, dict) and "repos" in b]
    remote = [r for c in configs for r in c["repos"] if r["repo"] != "local"]
    assert remote and all(r["rev"] and r["hooks"][0]["id"] == "reconciler-validate" for r in remote)
    local = [r for c in configs for r in c["repos"] if r["repo"] == "local"]
    assert local and local[0]["hooks"][0]["entry"] == "reconciler validate"


def test_pre_commit_files_validate_with_pre_commits_own_schema(tmp_path: Path) -> None:
    from pre_commit import clientlib
    (hook,) = clientlib.load_manifest(str(ROOT / ".pre-commit-hooks.yaml"))
    assert hook["id"] == "reconciler-validate" and hook["pass_filenames"] is False
    for i, block in enumerate(_doc_yaml_blocks("pre-commit.md")):
        if block.startswith("repos:"):
            config = tmp_path / f"config-{i}.yaml"
            config.write_text(block, encoding="utf-8")
            clientlib.load_config(str(config))


# --- docs/operators.md -------------------------------------------------------------------------

# The modules whose refusals and errors docs/operators.md explains, one by one.
DOCUMENTED_MODULES = (
    "reconciler/cli.py", "reconciler/catalog/postgres/catalog.py", "reconciler/app/importing.py", "reconciler/app/planning.py", "reconciler/app/applying.py", "reconciler/app/saved.py", "reconciler/core/checks.py", "reconciler/core/plan.py", "reconciler/core/diff.py",
    "reconciler/git/command.py", "reconciler/git/repository.py", "reconciler/git/objects.py",
    "reconciler/app/attribution.py", "reconciler/manifests/config.py", "reconciler/catalog/postgres/writer.py",
    "reconciler/catalog/postgres/kinds/storage_target.py",
    "reconciler/catalog/postgres/migrations.py", "reconciler/catalog/postgres/connection.py", "reconciler/catalog/postgres/embedded.py",
    "reconciler/app/importer.py", "reconciler/manifests/output.py", "reconciler/app/importing.py",
    "reconciler/app/auditing.py", "reconciler/core/chain.py", "reconciler/app/anchors.py", "reconciler/app/verification.py",
    "reconciler/app/events.py", "reconciler/bus/__init__.py", "reconciler/bus/proxy.py", "reconciler/bus/queue.py",
    "reconciler/catalog/postgres/locks.py", "reconciler/app/exporting.py", "reconciler/app/workspace.py",
    "reconciler/app/validating.py", "reconciler/core/policy.py", "reconciler/render/plan.py",
)
_ERROR_CALLS = {"ReconcilerError", "ConfigurationError", "DatabaseError", "DatabaseUnavailable", "MigrationError",
                "ConflictError", "Refusal", "LockTimeout", "UsageError", "AuditVerificationError", "EventDeliveryError"}


def _literal_pieces(node: ast.AST) -> Iterator[str]:
    """The constant text of a message expression (f-string parts, concatenations)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        yield node.value
    elif isinstance(node, ast.JoinedStr):
        for value in node.values:
            yield from _literal_pieces(value)
    elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        yield from _literal_pieces(node.left)
        yield from _literal_pieces(node.right)


def _messages(source: str) -> Iterator[tuple[int, ast.AST]]:
    """Every message a module raises, reports as a plan error, or adds to a refusal."""
    tree = ast.parse(source)
    for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]:
        if function.name in ("_mass_archive", "_holder", "base_outside_history", "_shallow_problem"):
            for node in ast.walk(function):
                if isinstance(node, ast.Return) and node.value is not None:
                    for item in ast.walk(node.value):
                        if isinstance(item, ast.JoinedStr | ast.Constant):
                            yield node.lineno, item
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        owner = func.value.id if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else ""
        if name in _ERROR_CALLS:
            yield node.lineno, node.args[0]
        elif name == "error" and owner == "out" and len(node.args) >= 2:
            yield node.lineno, node.args[1]
        elif name == "Finding" and len(node.args) >= 3 and isinstance(node.args[1], ast.Constant) \
                and node.args[1].value == "error":
            yield node.lineno, node.args[2]
        elif name == "append" and owner in ("reasons", "problems"):
            yield node.lineno, node.args[0]


def _normal(text: str) -> str:
    return " ".join(text.split())


def test_operators_doc_explains_every_refusal_and_error() -> None:
    documented = _normal(doc("operators.md") + doc("policy.md"))  # policy.md explains the policy's own errors
    missing = []
    count = 0
    for module in DOCUMENTED_MODULES:
        for line, expression in _messages((ROOT / module).read_text(encoding="utf-8")):
            pieces = [_normal(p) for p in _literal_pieces(expression)]
            longest = max(pieces, key=len, default="")
            if len(longest) < 10:
                continue
            count += 1
            if longest not in documented:
                missing.append(f"{module}:{line}: {longest!r}")
    assert count >= 60, f"found only {count} messages; is the reader broken?"
    assert not missing, "explain these in docs/operators.md (Troubleshooting):\n" + "\n".join(missing)


def test_operators_doc_sections() -> None:
    text = doc("operators.md")
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    for heading in ("The daily loop", "Adopting existing objects", "Archiving, restoring and purging",
                    "Protection", "Drift", "Conflicts and stale plans", "The mass-archive breaker",
                    "Sources (`reconciler.yaml`)", "Policy (who may change what)", "Troubleshooting"):
        assert heading in headings, heading
    policy = text.split("## Policy (who may change what)", 1)[1].split("\n## ", 1)[0]
    assert "(policy.md)" in policy and len(policy.strip().splitlines()) == 1
    adopting = text.split("## Adopting existing objects", 1)[1].split("\n## ", 1)[0]
    if "import" in cli.commands:  # describe `reconciler import` only once it exists
        assert "`reconciler import`" in adopting and "upcoming" not in adopting
    else:
        assert "upcoming" in adopting


def test_docs_link_each_other() -> None:
    assert "(operators.md)" in doc("ci.md") or "(pre-commit.md)" in doc("ci.md")
    assert "(ci.md)" in doc("operators.md") and "(ci.md)" in doc("pre-commit.md")
    for name in (PLAN, APPLY, DRIFT):
        assert f"(../.github/workflows/{name})" in doc("ci.md")
