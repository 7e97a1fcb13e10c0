"""The docs' shell examples, run: every fenced shell block in docs/ and the README that can run
offline runs here, as written, in a fresh repository against the test catalog (the README's
quickstart against its own embedded one), and its output is compared where the doc shows it.

A block that cannot run offline (it installs from an index, talks to an object store, or runs
for minutes to hours) is listed in NOT_RUN with the reason, and what of it can still be
checked is: the options of every ``reconciler`` command, and those of the scripts it names.
Command synopses (``reconciler audit log [--address A] ...``) are checked against the CLI's
options too. A new shell block fails ``test_every_shell_example_is_run_or_says_why_not``
until it is given a runner below or a reason in NOT_RUN.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from tests.test_workflows import check_against_cli, reconciler_commands, split_redirections

ROOT = Path(__file__).resolve().parent.parent
SHELLS = frozenset({"sh", "bash", "shell", "console"})
_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})(?P<lang>[^\s`]*)[^`]*$")
_SYNOPSIS = re.compile(r"\[(?:--|[A-Z])")  # [--option ...] or [PATH]
EXAMPLE_AUTHOR = {"GIT_AUTHOR_NAME": "Docs Example", "GIT_AUTHOR_EMAIL": "docs@example.com",
                  "GIT_COMMITTER_NAME": "Docs Example", "GIT_COMMITTER_EMAIL": "docs@example.com"}


@dataclass(frozen=True)
class Block:
    """One fenced code block of a markdown file, its indentation taken off."""

    path: str  # relative to the repository root
    line: int  # of the opening fence
    language: str
    text: str

    @property
    def key(self) -> str:
        """``file: first line``: names the block wherever it moves in its file."""
        first = next((line.strip() for line in self.text.splitlines() if line.strip()), "")
        return f"{self.path}: {first}"

    @property
    def synopsis(self) -> bool:
        lines = [line for line in self.text.splitlines() if line.strip()]
        return self.language in ("", "sh", "text") and bool(_SYNOPSIS.search(self.text)) and bool(lines) \
            and lines[0].startswith("reconciler ") \
            and all(line.startswith(("reconciler ", " ", "\t")) for line in lines)  # continuation lines


def _blocks_of(path: Path) -> Iterator[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            i += 1
            continue
        indent, fence = opening.group("indent"), opening.group("fence")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].startswith(indent) and lines[j][len(indent):].rstrip() == fence):
            body.append(lines[j][len(indent):] if lines[j].startswith(indent) else lines[j].lstrip())
            j += 1
        yield Block(str(path.relative_to(ROOT)), i + 1, opening.group("lang"), "\n".join(body) + "\n")
        i = j + 1


def all_blocks() -> list[Block]:
    """Every fenced block of README.md and docs/*.md."""
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [block for path in files for block in _blocks_of(path)]


def shell_examples() -> dict[str, Block]:
    return {b.key: b for b in all_blocks() if b.language in SHELLS and not b.synopsis}


# --- what is not run, and why --------------------------------------------------------------------

NOT_RUN: dict[str, str] = {
    "README.md: python3 -m venv .venv && . .venv/bin/activate && pip install -e \".[test]\" && pytest":
        "it is this test suite, which .ci/run runs",
    "README.md: pip install \"catalog-reconciler @ git+https://<host>/<org>/reconciler@v0.1.0\"":
        "installs from a remote repository (tests/test_wheel.py installs a wheel built from this one)",
    "docs/auditing.md: reconciler audit anchor --file anchor.json":
        "copies the anchor to an object store (tests/test_auditor.py takes and checks file anchors)",
    "docs/performance.md: python benchmarks/run.py --records 100000 --datasets 1000 --runs 3 --scaling "
    "--latency-ms 1 \\":
        "a benchmark that runs for minutes to hours",
    "docs/performance.md: python benchmarks/attribution.py --records 100000 --datasets 1000 --commits 200 "
    "--runs 3 \\": "a benchmark that runs for hours",
    "docs/pre-commit.md: pip install pre-commit   # or pipx install pre-commit":
        "installs from the package index, as pre-commit then does for the hook's environment",
    "docs/reliability.md: python tests/fuzz/fuzz_loader.py --minutes 60 [--seed N] [--out DIR]   "
    "# default DIR: fuzz-out": "fuzzes for an hour",
    "docs/reliability.md: RECONCILER_KILL_RECORDS=20000 RECONCILER_KILL_ROUNDS=4 pytest tests/test_apply_kill.py "
    "-k killed -s -q": "kill trials on a bigger apply, minutes long (the suite runs the small ones)",
}


# --- running -------------------------------------------------------------------------------------


def _environment(home: Path, **extra: str) -> dict[str, str]:
    """A newcomer's shell: this project's reconciler and python first on PATH, no catalog
    configured unless ``extra`` says so, a home of its own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECONCILER_", "_RECONCILER_"))}
    env.update(EXAMPLE_AUTHOR, HOME=str(home), PATH=f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}",
               NO_COLOR="1")
    env.update(extra)
    return env


def _sandbox(tmp_path: Path, *, example_tree: bool = True) -> Path:
    """A fresh git repository laid out as a clone of this one: the example manifests (or an empty
    tree) and the schemas, committed."""
    repo = tmp_path / "clone"
    repo.mkdir()
    env = _environment(tmp_path)
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True, env=env)
    if example_tree:
        shutil.copytree(ROOT / "manifests", repo / "manifests")
    else:
        (repo / "manifests").mkdir()
    shutil.copytree(ROOT / "schemas", repo / "schemas")
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", "a clone"], cwd=repo, check=True, env=env)
    return repo


def _bash(script: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "--noprofile", "--norc", "-euo", "pipefail", "-c", script], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300, check=False)


def _console(block: Block, cwd: Path, env: dict[str, str]) -> None:
    """Run each ``$ command`` of a console block and compare what it prints (stdout and stderr, in
    order) with the lines the block shows after it."""
    steps: list[tuple[str, list[str]]] = []
    for line in block.text.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        else:
            steps[-1][1].append(line)
    for command, shown in steps:
        done = subprocess.run(["bash", "--noprofile", "--norc", "-c", command + " 2>&1"], cwd=cwd, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stdout
        assert done.stdout.splitlines() == shown, f"{block.key}: printed\n{done.stdout}"


def _applied(tmp_path: Path, db_url: str) -> tuple[Path, dict[str, str]]:
    repo = _sandbox(tmp_path)
    env = _environment(tmp_path, RECONCILER_DATABASE_URL=db_url)
    done = _bash("reconciler apply --auto-approve", repo, env)
    assert done.returncode == 0, done.stderr
    return repo, env


def run_quickstart(block: Block, tmp_path: Path, db_url: str) -> None:
    """The README's quickstart in a fresh clone, against the embedded catalog it creates. The
    install before it needs the package index; the test environment has reconciler installed."""
    install = "python3 -m venv .venv && . .venv/bin/activate && pip install . && "
    assert block.text.startswith(install)
    repo = _sandbox(tmp_path)
    env = _environment(tmp_path)
    done = _bash(block.text[len(install):], repo, env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"Creating the embedded catalog in {repo.resolve() / '.reconciler'}" in done.stderr
    assert "Apply complete: " in done.stdout
    # "Run reconciler apply --auto-approve a second time and it changes nothing."
    again = _bash("reconciler apply --auto-approve", repo, env)
    assert again.returncode == 0 and again.stdout.splitlines()[-1] == "Apply complete: nothing to do."
    assert again.stderr == ""


def run_completion(block: Block, tmp_path: Path, db_url: str) -> None:
    repo = _sandbox(tmp_path)
    done = _bash(block.text, repo, _environment(tmp_path))
    assert done.returncode == 0, done.stderr
    for script, marker in ((".reconciler-complete.bash", "_reconciler_completion"),
                           (".reconciler-complete.zsh", "#compdef reconciler"),
                           (".config/fish/completions/reconciler.fish", "complete --no-files --command reconciler")):
        assert marker in (tmp_path / script).read_text(encoding="utf-8")


def run_schema(block: Block, tmp_path: Path, db_url: str) -> None:
    repo = _sandbox(tmp_path)
    done = _bash(block.text, repo, _environment(tmp_path))
    assert done.returncode == 0, done.stderr
    generated = (repo / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")
    assert generated == (ROOT / "schemas" / "manifest.schema.json").read_text(encoding="utf-8")


def run_verify_against_head(block: Block, tmp_path: Path, db_url: str) -> None:
    repo, env = _applied(tmp_path, db_url)
    verified = _bash("reconciler audit verify", repo, env)
    first = verified.stdout.splitlines()[0] if verified.stdout else ""
    head = first.split("head ")[-1].strip()
    assert verified.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}", head), verified.stdout
    done = _bash(block.text, repo, {**env, "PREVIOUS_HEAD": head})
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "The expected head is the current head."


def run_exports(block: Block, tmp_path: Path, db_url: str) -> None:
    repo, env = _applied(tmp_path, db_url)
    done = _bash(block.text, repo, env)
    assert done.returncode == 0, done.stderr
    entries = psycopg.connect(db_url).execute("SELECT count(*) FROM reconciler.audit_log").fetchone()
    assert entries is not None and entries[0] > 0
    runs = psycopg.connect(db_url).execute("SELECT count(*) FROM reconciler.runs").fetchone()
    assert runs is not None
    lines = done.stdout.splitlines()
    assert lines[:3] == [f"Exported {entries[0]} entries to {name}" for name in ("audit.parquet", "audit.csv", "audit.out")]
    assert lines[3:] == [f"Exported {entries[0]} entries to audit.parquet",
                         f"Exported {runs[0]} run{'' if runs[0] == 1 else 's'} to runs.parquet"]
    assert (repo / "runs.parquet").read_bytes().startswith(b"PAR1")
    assert (repo / "audit.parquet").read_bytes().startswith(b"PAR1")
    assert (repo / "audit.csv").read_text(encoding="utf-8").startswith("seq,")
    assert (repo / "audit.out").read_text(encoding="utf-8").startswith("seq,")


# What docs/import.md's example catalog holds: a storage target with a credential in its
# config, a dataset on it, and 120 records of one namespace, none of them managed.
_INGESTED = [
    """INSERT INTO timestore.storage_targets (id, name, kind, config) VALUES
       ('st-warm-s3', 'warm-s3', 's3', '{"bucket": "obs-warm", "secretAccessKey": "wJalrXUtnFEMI-example"}')""",
    """INSERT INTO timestore.datasets (id, slug, name, default_storage_target_id) VALUES
       ('ds-readings', 'observatory-readings', 'Observatory readings', 'st-warm-s3')""",
    """INSERT INTO metastore.metastore_records (namespace, record_key, owner, metadata)
       SELECT 'observatory', 'sensor-' || lpad(n::text, 4, '0'), 'team-observatory',
              '{"datasetSlug": "observatory-readings"}'::jsonb
       FROM generate_series(1, 120) AS n""",
]


def run_import(block: Block, tmp_path: Path, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for statement in _INGESTED:
            conn.execute(statement)
    repo = _sandbox(tmp_path, example_tree=False)
    _console(block, repo, _environment(tmp_path, RECONCILER_DATABASE_URL=db_url))
    assert _bash("reconciler validate", repo, _environment(tmp_path)).returncode == 0


RUNNERS: dict[str, Callable[[Block, Path, str], None]] = {
    "README.md: python3 -m venv .venv && . .venv/bin/activate && pip install . && reconciler validate && "
    "reconciler plan && reconciler apply --auto-approve": run_quickstart,
    "README.md: _RECONCILER_COMPLETE=bash_source reconciler > ~/.reconciler-complete.bash   "
    "# then in ~/.bashrc: . ~/.reconciler-complete.bash": run_completion,
    "docs/manifests.md: python -m reconciler.manifests.schema > schemas/manifest.schema.json": run_schema,
    "docs/auditing.md: reconciler audit verify --expect-head \"$PREVIOUS_HEAD\"": run_verify_against_head,
    "docs/auditing.md: reconciler audit export audit.parquet                        # Parquet (the default)":
        run_exports,
    "docs/import.md: $ reconciler import": run_import,
}


# --- the tests -----------------------------------------------------------------------------------


def test_every_shell_example_is_run_or_says_why_not() -> None:
    found = shell_examples()
    assert len(found) >= 12, f"found only {len(found)} shell examples; is the reader broken?"
    unclassified = sorted(set(found) - set(RUNNERS) - set(NOT_RUN))
    assert not unclassified, "run these in tests/test_docs.py, or say in NOT_RUN why not:\n" + "\n".join(unclassified)
    stale = sorted((set(RUNNERS) | set(NOT_RUN)) - set(found))
    assert not stale, "no longer in the docs:\n" + "\n".join(stale)
    assert not set(RUNNERS) & set(NOT_RUN)


@pytest.mark.parametrize("key", sorted(RUNNERS))
def test_the_shell_example_runs_as_written(key: str, tmp_path: Path, db_url: str) -> None:
    RUNNERS[key](shell_examples()[key], tmp_path, db_url)


def _synopsis_args(line: str) -> list[str]:
    """A synopsis line as arguments: brackets and ``...`` dropped, ``a|b`` taken as ``a``."""
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("...", " "))
    return [word.split("|")[0] if "|" in word and not word.startswith("--") else word for word in words[1:]]


def test_every_reconciler_command_in_the_docs_uses_only_real_options() -> None:
    checked = 0
    for block in all_blocks():
        if block.synopsis:
            joined: list[str] = []  # an indented line continues the synopsis above it
            for line in (line for line in block.text.splitlines() if line.strip()):
                if line.startswith(("reconciler ",)) or not joined:
                    joined.append(line)
                else:
                    joined[-1] += " " + line.strip()
            lines = [_synopsis_args(line) for line in joined]
        elif block.language in SHELLS:
            script = "\n".join(line[2:] if line.startswith("$ ") else line for line in block.text.splitlines()
                               if block.language != "console" or line.startswith("$ "))
            lines = [split_redirections(words)[0] for words in reconciler_commands(script)]
        else:
            continue
        for args in lines:
            problems = check_against_cli(args)
            assert problems == [], f"{block.path}:{block.line}: reconciler {' '.join(args)}: {problems}"
            checked += 1
    assert checked >= 10


def test_the_scripts_long_examples_name_accept_the_options_they_are_shown_with() -> None:
    for key, block in shell_examples().items():
        if key not in NOT_RUN:
            continue
        for line in block.text.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if len(words) < 2 or words[0] != "python" or not words[1].endswith(".py"):
                continue
            script = ROOT / words[1]
            assert script.is_file(), f"{block.path}:{block.line}: no {words[1]}"
            shown = {word for word in words[2:] if word.startswith("--")}
            usage = subprocess.run([sys.executable, str(script), "--help"], cwd=ROOT, capture_output=True,
                                   text=True, timeout=120, check=False)
            assert usage.returncode == 0, usage.stderr
            unknown = sorted(option for option in shown if option not in usage.stdout)
            assert not unknown, f"{block.path}:{block.line}: {words[1]} has no {unknown}"
    kill = ROOT / "tests" / "test_apply_kill.py"
    assert all(name in kill.read_text(encoding="utf-8") for name in ("RECONCILER_KILL_RECORDS",
                                                                    "RECONCILER_KILL_ROUNDS", "killed"))
