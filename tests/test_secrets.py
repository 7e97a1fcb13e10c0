"""A value that came from ${env:...} is never shown again: not when the reference is removed or
changed, not in any output, saved file, export, or column of the reconciler's own tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pytest
from click.testing import CliRunner

from reconciler.cli import cli

from .helpers import ALICE, BOB, commit, invoke, write

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: warehouse
type: clickhouse
config: {{host: ch.internal, {password}}}
"""
SECRET = "s3cret-Pa55-word"
OTHER = "the-other-s3cret"


def everything_stored(db: psycopg.Connection[Any]) -> str:
    """Every row of every table in the reconciler schema, as text."""
    tables = [name for (name,) in db.execute(
        "SELECT quote_ident(table_name) FROM information_schema.tables WHERE table_schema = 'reconciler'")]
    return "\n".join(str(db.execute(f"SELECT t::text FROM reconciler.{table} t").fetchall())  # noqa: S608
                     for table in tables)


@pytest.mark.parametrize("edit", ["removed", "changed-reference"])
def test_a_secret_stays_hidden_after_its_reference_is_removed_or_changed(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        edit: str) -> None:
    monkeypatch.setenv("CH_PW", SECRET)
    write(git_repo, "manifests/storage.yaml", STORAGE.format(password="password: '${env:CH_PW}'"))
    commit(git_repo, ALICE, "warehouse")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    monkeypatch.delenv("CH_PW")  # the variable is gone too: the plan must not need it to hide the value
    if edit == "removed":
        write(git_repo, "manifests/storage.yaml", STORAGE.format(password="port: 9000"))
    else:
        monkeypatch.setenv("CH_PW_NEW", OTHER)
        write(git_repo, "manifests/storage.yaml", STORAGE.format(password="password: '${env:CH_PW_NEW}'"))
    commit(git_repo, BOB, "edit the warehouse config")
    seen: list[str] = []
    saved = tmp_path / "plan.json"
    for output in ("text", "json", "markdown"):
        result = invoke(git_repo, db_url, "plan", "--format", output, "--out", str(saved))
        assert result.exit_code == 0, result.output
        seen += [result.output, saved.read_text()]
    plan_text = seen[0]
    assert 'config.password: "***"' in plan_text
    assert "drift" not in plan_text  # the stored template and the live value differ: that is not drift
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 0, result.output
    seen.append(result.output)
    for args in (["audit", "log"], ["audit", "log", "--format", "json"], ["audit", "verify"]):
        seen.append(CliRunner().invoke(cli, [*args, "--database-url", db_url]).output)
    export = tmp_path / "audit.parquet"
    assert CliRunner().invoke(cli, ["audit", "export", str(export), "--database-url", db_url]).exit_code == 0
    with duckdb.connect() as con:
        seen.append(str(con.execute(f"SELECT * FROM read_parquet('{export}')").fetchall()))
    seen.append(everything_stored(db))
    text = "\n".join(seen)
    assert SECRET not in text
    assert OTHER not in text
    # And a later change of another key still shows the old path masked, never the value.
    write(git_repo, "manifests/storage.yaml", STORAGE.format(password="port: 9001")
          if edit == "removed" else STORAGE.format(password="password: '${env:CH_PW_NEW}', port: 1"))
    commit(git_repo, BOB, "another edit")
    later = invoke(git_repo, db_url, "plan", "--format", "json").output
    assert SECRET not in later and OTHER not in later
