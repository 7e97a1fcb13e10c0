"""Text from manifests, the catalog or git never reaches the terminal raw: every command escapes it.

One helper (reconciler/core/text.py) escapes control characters for every printer; these
tests put such characters where a user's data can hold them (file names, record keys,
metadata values, mapping keys) and read every line a command prints.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner, Result

from reconciler.cli import cli
from reconciler.core.text import clean, clean_lines
from tests.conftest import run_git

# Anything a terminal or a log reader acts on rather than shows (line feeds aside, which
# separate the lines a command prints).
RAW = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
HEAD = "apiVersion: reconciler/v1\n"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_clean_escapes_every_control_character_and_nothing_else() -> None:
    assert clean("a\x1b[31mb\rc\nd\te\x00f\x7fg\x85h\x9bi") == "a\\x1b[31mb\\x0dc\\x0ad\\x09e\\x00f\\x7fg\\x85h\\x9bi"
    assert clean("line\u2028sep\u2029para\u202eright\u2066iso") == "line\\u2028sep\\u2029para\\u202eright\\u2066iso"
    assert clean("é ü 日本 😀 ${env:X} \\x1b") == "é ü 日本 😀 ${env:X} \\x1b"
    assert clean(42) == "42"
    assert clean_lines("one\x1b[2J\ntwo\r\n") == "one\\x1b[2J\ntwo\\x0d\n"


def test_validate_escapes_file_names_and_quoted_text_in_problems_and_link_lines(tmp_path: Path) -> None:
    tree = tmp_path / "m"
    tree.mkdir()
    (tree / "evil\x1b[2J.yaml").write_text(HEAD + "kind: Dataset\nslug: abc\nname: A\n\"col\u202eor\": 1\n")
    invalid = run("validate", str(tree))
    assert invalid.exit_code == 1 and not RAW.search(invalid.output)
    assert invalid.stderr.splitlines() == [
        f"{tree}/evil\\x1b[2J.yaml:5:1: unknown field 'col\\u202eor'",
        "error: 1 problem in the manifest tree"]

    (tree / "evil\x1b[2J.yaml").unlink()
    (tree / "r.yaml").write_text(HEAD + "kind: Record\nnamespace: obs\nkey: \"k\\u2028forged\\x9b\"\n"
                                 "metadata: {datasetSlug: elsewhere}\n")
    valid = run("validate", str(tree))
    assert valid.exit_code == 0 and not RAW.search(valid.output)
    assert "(linked from record:obs/k\\u2028forged\\x9b) is not declared in the tree" in valid.stdout


@pytest.fixture
def repo(git_repo: Path) -> Path:
    (git_repo / "manifests" / "r.yaml").write_text(
        HEAD + "kind: Record\nnamespace: obs\nkey: \"k\\x9b31m\\u2028forged\"\nowner: me\n"
        "metadata: {note: \"red\\x9b31m\\u2029para\", \"k\u202eey\": 1}\n")
    run_git(git_repo, "add", "-A")
    run_git(git_repo, "commit", "-q", "-m", "a record with awkward text")
    return git_repo


def test_plan_and_apply_escape_values_addresses_and_refusals(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    tree = str(repo / "manifests")
    plan = run("plan", tree, "--database-url", db_url)
    assert plan.exit_code == 0 and not RAW.search(plan.output)
    assert "+ record:obs/k\\x9b31m\\u2028forged (create)" in plan.stdout
    assert "metadata: {\"note\": \"red\\x9b31m\\u2029para\", \"k\\u202eey\": 1}" in plan.stdout

    # An uncommitted edit: the refusal names the object, escaped.
    (repo / "manifests" / "r.yaml").write_text((repo / "manifests" / "r.yaml").read_text() + "tags: [x]\n")
    refused = run("apply", tree, "--database-url", db_url, "--auto-approve")
    assert refused.exit_code == 1 and not RAW.search(refused.output)
    assert "uncommitted changes (commit them, or pass --allow-uncommitted): record:obs/k\\x9b31m\\u2028forged" \
        in refused.stderr

    applied = run("apply", tree, "--database-url", db_url, "--auto-approve", "--allow-uncommitted")
    assert applied.exit_code == 0 and not RAW.search(applied.output)
    assert "created record:obs/k\\x9b31m\\u2028forged" in applied.stdout
    log = run("audit", "log", "--database-url", db_url)
    assert log.exit_code == 0 and not RAW.search(log.output)
    assert "create record:obs/k\\x9b31m\\u2028forged" in log.stdout


def test_a_stale_plan_conflict_names_objects_escaped(
        repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    tree = str(repo / "manifests")
    saved = tmp_path / "plan.json"
    assert run("plan", tree, "--database-url", db_url, "--out", str(saved)).exit_code == 0
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner) VALUES (%s, %s, 'x')",
               ("obs", "k\x9b31m\u2028forged"))
    conflict = run("apply", tree, "--database-url", db_url, "--plan", str(saved), "--auto-approve")
    assert conflict.exit_code == 1 and not RAW.search(conflict.output)
    assert "record:obs/k\\x9b31m\\u2028forged" in conflict.stderr
