"""U+0000 in any string of a manifest is refused by validate, plan and apply, at its own place.

PostgreSQL's text and jsonb cannot hold it, so such a tree used to pass validate and plan
and then fail the apply with a database error and no file or line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from reconciler.cli import cli
from tests.test_scenarios import ALICE, commit, invoke, write

# Every way YAML writes U+0000 in a double-quoted string.
ESCAPES = {"backslash-0": "\\0", "x00": "\\x00", "u0000": "\\u0000", "U00000000": "\\U00000000"}
MESSAGE = "text must not contain U+0000 (NUL), which the catalog cannot store"

TREE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: primary-clickhouse
type: clickhouse
description: "ClickHouse{nul}cluster"
config: {{host: "ch{nul}.internal", "key{nul}": 1}}
---
apiVersion: reconciler/v1
kind: Dataset
slug: observatory-readings
name: "Observatory{nul}readings"
storageTarget: primary-clickhouse
metadata: {{unit: "c{nul}"}}
---
apiVersion: reconciler/v1
kind: Record
namespace: observatory
key: sensor-0001
owner: "team{nul}observatory"
tags: [iot, "raw{nul}"]
metadata: {{datasetSlug: observatory-readings, "{nul}unit": celsius}}
---
apiVersion: reconciler/v1
kind: RecordSet
namespace: fleet
defaults: {{owner: team-fleet, metadata: {{fleet: "north{nul}"}}}}
records:
  - key: truck-1
    schemaHash: "sha256-{nul}abcdef"
"""
EXPECTED = [
    f"5:14: description: {MESSAGE}",
    f"6:16: config.host: {MESSAGE}",
    "6:{key_column}: key 'key\\x00' contains the control character U+0000",  # after the escape in config.host
    f"11:7: name: {MESSAGE}",
    f"13:18: metadata.unit: {MESSAGE}",
    f"19:8: owner: {MESSAGE}",
    f"20:13: tags[1]: {MESSAGE}",
    "21:47: key '\\x00unit' contains the control character U+0000",
    f"26:49: defaults.metadata.fleet: {MESSAGE}",
    f"29:17: records[0].schemaHash: {MESSAGE}",
]


def expected(nul: str, tree: Path) -> list[str]:
    """The problems as printed for the file in ``tree`` whose escapes are ``nul``."""
    return [f"{tree / 'catalog.yaml'}:{line.replace('{key_column}', str(31 + len(nul)))}" for line in EXPECTED]


@pytest.mark.parametrize("escape", list(ESCAPES))
def test_validate_refuses_nul_in_every_kind_of_string_and_key_at_its_place(escape: str, tmp_path: Path) -> None:
    tree = tmp_path / "manifests"
    tree.mkdir()
    (tree / "catalog.yaml").write_text(TREE.format(nul=ESCAPES[escape]), encoding="utf-8")
    result = CliRunner().invoke(cli, ["validate", str(tree)])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [*expected(ESCAPES[escape], tree), "error: 10 problems in the manifest tree"]


def catalog_rows(db: psycopg.Connection[Any]) -> tuple[Any, ...]:
    row = db.execute("""SELECT (SELECT count(*) FROM timestore.storage_targets),
                               (SELECT count(*) FROM timestore.datasets),
                               (SELECT count(*) FROM metastore.metastore_records),
                               (SELECT count(*) FROM reconciler.managed_objects),
                               (SELECT count(*) FROM reconciler.audit_log)""").fetchone()
    assert row is not None
    return tuple(row)


@pytest.mark.parametrize("command", [["plan"], ["apply", "--auto-approve"]])
def test_plan_and_apply_refuse_it_before_touching_the_catalog(
        command: list[str], git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/catalog.yaml", TREE.format(nul="\\0"))
    commit(git_repo, ALICE, "catalog with NUL characters")
    result = invoke(git_repo, db_url, *command)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [*expected("\\0", git_repo / "manifests"),
                                          "error: 10 problems in the manifest tree"]
    assert "apply failed" not in result.output and "Traceback" not in result.output
    assert catalog_rows(db) == (0, 0, 0, 0, 0)
