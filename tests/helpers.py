"""Helpers the tests share: people, files in a repository, commits, and running the CLI."""

from __future__ import annotations

import json
import sys
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from reconciler.cli import cli

from .conftest import run_git

ALICE = ("Alice Anders", "alice@example.com")
BOB = ("Bob Berg", "bob@example.com")
CAROL = ("Carol Chen", "carol@example.com")
DAVE = ("Dave Dunn", "dave@example.com")
EVE = ("Eve Ekberg", "eve@example.com")
FRANK = ("Frank Fischer", "frank@example.com")
GRACE = ("Grace Gupta", "grace@example.com")
LOCAL = ("Dora Local", "dora@example.com")
TEST_AUTHOR = ("Test Author", "author@example.com")  # whom run_git commits as by default


def write(repo: Path, name: str, text: str) -> Path:
    """Write ``text`` to ``repo/name`` (parents created); returns the path."""
    path = repo / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def commit(repo: Path, author: tuple[str, str], message: str, *, date: str | None = None,
           all_files: bool = True) -> str:
    """Stage everything (unless ``all_files`` is false) and commit as ``author``; returns the sha.

    ``date`` sets both the author and committer dates (ISO 8601).
    """
    if all_files:
        run_git(repo, "add", "-A")
    args = ["commit", "-q", "--no-verify", "--allow-empty", "-m", message]
    if date is not None:
        args.append(f"--date={date}")
    run_git(repo, *args, author=author, extra_env={"GIT_COMMITTER_DATE": date} if date else None)
    return run_git(repo, "rev-parse", "HEAD").strip()


def invoke(repo: Path, db_url: str, command: str, *args: str, tree: str = "manifests",
           input: str | None = None) -> Result:
    """Run ``reconciler COMMAND <repo>/<tree> --database-url DB ARGS`` in-process."""
    return CliRunner().invoke(cli, [command, str(repo / tree), "--database-url", db_url, *args],
                              input=input, catch_exceptions=False)


def plan_json(repo: Path, db_url: str, *args: str, tree: str = "manifests") -> dict[str, Any]:
    """The plan as JSON; fails the test when plan fails (exit 0, or 2 for changes with --detailed-exitcode)."""
    result = invoke(repo, db_url, "plan", "--format", "json", *args, tree=tree)
    assert result.exit_code in ((0, 2) if "--detailed-exitcode" in args else (0,)), result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def apply(repo: Path, db_url: str, *args: str, tree: str = "manifests") -> Result:
    """``apply --auto-approve``; fails the test when apply fails."""
    result = invoke(repo, db_url, "apply", "--auto-approve", *args, tree=tree)
    assert result.exit_code == 0, result.output
    return result


# What JavaScript's String.prototype.trim removes, from the ECMAScript definition rather than
# from the package's own table: WhiteSpace (TAB, VT, FF, ZWNBSP and every Zs space) and
# LineTerminator (LF, CR, LS, PS).
JS_WHITESPACE = "\t\v\f\ufeff\n\r\u2028\u2029" + "".join(
    chr(c) for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Zs")


def js_trimmed(text: str) -> str:
    """``text.trim()`` as JavaScript (and so the platform's services) trims."""
    return text.strip(JS_WHITESPACE)


def js_iso(moment: datetime) -> str:
    """A timestamp as JavaScript's ``Date.prototype.toISOString`` writes it (what the
    timestore's JSON holds for a Date): UTC, milliseconds truncated, ``Z``."""
    utc = moment.astimezone(timezone.utc)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def dataset_snapshot(row: Any) -> dict[str, Any]:
    """A dataset row (catalog.rows.DatasetRow) as the timestore's ``serializeDatasetForAudit``
    writes it into audit metadata, worked out here independently of the package's SQL."""
    return {"id": row.id, "slug": row.slug, "name": row.name, "description": row.description, "status": row.status,
            "writeFormat": row.write_format, "defaultStorageTargetId": row.default_storage_target_id,
            "metadata": row.metadata, "updatedAt": js_iso(row.updated_at)}
