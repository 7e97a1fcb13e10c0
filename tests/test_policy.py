"""Policy: scopes granted to commit authors; signed-commit checks; UI links in markdown plans."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.errors import ConfigurationError
from reconciler.manifests.config import load_config
from reconciler.core.policy import Grant, check, parse_policy
from tests.conftest import run_git
from tests.test_scenarios import ALICE, BOB, DATASETS, RECORDS, STORAGE, commit, invoke, write

POLICY = """\
source: observatory
ui: {baseUrl: "https://catalog.example.com/"}
policy:
  grants:
    - authors: ["alice@example.com"]
      scopes: [timestore:admin]
    - authors: ["*@example.com"]
      scopes: [metastore:write]
      namespaces: [observatory]
    - authors: ["carol@example.com"]
      scopes: [metastore:admin]
"""


def test_no_policy_means_no_restriction() -> None:
    assert check(None, [("dataset:x", "purge", "anyone@x")]) == []


def test_grants_by_author_pattern_scope_and_object() -> None:
    policy = parse_policy({"grants": [
        {"authors": ["*@team.example"], "scopes": ["metastore:write"], "namespaces": ["obs", "obs:*"]},
        {"authors": ["lead@team.example"], "scopes": ["metastore:admin"]},
        {"authors": ["ops@team.example"], "scopes": ["timestore:admin"], "datasets": ["observatory-*"]},
    ]}, "reconciler.yaml")
    allowed = [("record:obs/k", "create", "Dev@Team.Example"), ("record:obs:raw/k", "update", "dev@team.example"),
               ("record:other/k", "purge", "lead@team.example"), ("record:obs/k", "archive", "lead@team.example"),
               ("dataset:observatory-readings", "update", "ops@team.example")]
    assert check(policy, allowed) == []
    denied = check(policy, [
        ("record:other/k", "create", "dev@team.example"),      # namespace not granted
        ("record:obs/k", "archive", "dev@team.example"),       # soft delete needs metastore:delete
        ("record:obs/k", "purge", "dev@team.example"),         # purge needs metastore:admin
        ("dataset:billing", "update", "ops@team.example"),     # slug pattern not granted
        ("storage-target:ch", "create", "dev@team.example"),   # timestore:admin
    ])
    assert [(d.address, d.scope) for d in denied] == [
        ("record:other/k", "metastore:write"), ("record:obs/k", "metastore:delete"),
        ("record:obs/k", "metastore:admin"), ("dataset:billing", "timestore:admin"),
        ("storage-target:ch", "timestore:admin")]
    assert denied[2].message == ("policy: dev@team.example may not purge it: needs scope metastore:admin for "
                                 "namespace obs (reconciler.yaml policy)")


def test_admin_scope_implies_write_and_delete() -> None:
    grant = Grant(("a@x",), frozenset({"metastore:admin"}))
    assert all(grant.covers("a@x", s, "record", "ns/k") for s in ("metastore:write", "metastore:delete"))


@pytest.mark.parametrize("policy, message", [
    ({"grants": [{"authors": ["a@x"], "scopes": ["metastore:everything"]}]}, "unknown scope(s) metastore:everything"),
    ({"grants": [{"scopes": ["metastore:write"]}]}, "policy.grants[0].authors is required"),
    ({"grants": [{"authors": ["a@x"], "scopes": ["metastore:write"], "tables": ["x"]}]}, "unknown key(s) tables"),
    ({"grants": "everyone"}, "policy.grants must be a list"),
])
def test_policy_mistakes_are_clear_errors(tmp_path: Path, policy: dict[str, Any], message: str) -> None:
    (tmp_path / "reconciler.yaml").write_text(json.dumps({"source": "x", "policy": policy}))
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):
        load_config(tmp_path)


def test_plan_marks_denied_changes_and_apply_refuses(git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    (git_repo / "reconciler.yaml").write_text(POLICY)
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/observatory.yaml", RECORDS)
    commit(git_repo, ALICE, "alice sets up the catalog")
    first = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert first.exit_code == 0, first.output

    # Bob may write records of namespace observatory, but not datasets, deletes or purges.
    write(git_repo, "manifests/datasets.yaml", DATASETS.replace("name: Observatory events", "name: Bob's events"))
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("unit: kelvin", "unit: rankine")
          .split("  - key: sensor-0003")[0])
    commit(git_repo, BOB, "bob edits")
    planned = invoke(git_repo, db_url, "plan")
    assert planned.exit_code == 1
    assert ("dataset:observatory-events: policy: bob@example.com may not update it: needs scope timestore:admin "
            "for dataset observatory-events (reconciler.yaml policy)") in planned.output
    assert ("record:observatory/sensor-0003: policy: bob@example.com may not archive it: needs scope "
            "metastore:delete for namespace observatory") in planned.output
    assert "record:observatory/sensor-0002: policy" not in planned.output  # allowed
    refused = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1 and "apply refused; nothing was written" in refused.output
    assert db.execute("SELECT metadata->>'unit' FROM metastore.metastore_records WHERE record_key = 'sensor-0002'"
                      ).fetchone() == ("kelvin",)


def test_markdown_plan_links_to_the_platform_ui(git_repo: Path, db_url: str) -> None:
    (git_repo / "reconciler.yaml").write_text(POLICY)
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    write(git_repo, "manifests/records/observatory.yaml", RECORDS.replace("unit: celsius}", "unit: celsius, assetId: a/1}"))
    commit(git_repo, ALICE, "catalog")
    markdown = invoke(git_repo, db_url, "plan", "--format", "markdown").output
    assert "[dataset observatory-events](https://catalog.example.com/datasets/observatory-events)" in markdown
    assert "[dataset observatory-readings](https://catalog.example.com/datasets/observatory-readings)" in markdown
    assert "[asset a/1](https://catalog.example.com/assets/a%2F1)" in markdown


def _signing_repo(repo: Path, tmp_path: Path) -> None:
    key = tmp_path / "signing_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "alice", "-f", str(key)], check=True)
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"alice@example.com {(tmp_path / 'signing_key.pub').read_text().strip()}\n")
    for key_name, value in (("gpg.format", "ssh"), ("user.signingkey", str(key)),
                            ("gpg.ssh.allowedSignersFile", str(allowed))):
        run_git(repo, "config", key_name, value)


def test_require_signed_commits(git_repo: Path, db_url: str, tmp_path: Path) -> None:
    _signing_repo(git_repo, tmp_path)
    write(git_repo, "manifests/storage.yaml", STORAGE)
    run_git(git_repo, "add", "-A")
    run_git(git_repo, "commit", "-q", "-S", "-m", "signed", author=ALICE)
    signed = invoke(git_repo, db_url, "plan", "--require-signed-commits")
    assert signed.exit_code == 0, signed.output
    write(git_repo, "manifests/datasets.yaml", DATASETS)
    commit(git_repo, BOB, "not signed")
    unsigned = invoke(git_repo, db_url, "plan", "--require-signed-commits")
    assert unsigned.exit_code == 1
    assert "dataset:observatory-events: signed commits are required and commit" in unsigned.output
    assert "by bob@example.com has no valid signature" in unsigned.output
    assert "storage-target:primary-clickhouse: signed" not in unsigned.output
    refused = invoke(git_repo, db_url, "apply", "--auto-approve", "--require-signed-commits")
    assert refused.exit_code == 1
    assert invoke(git_repo, db_url, "plan").exit_code == 0  # without the flag the same tree plans fine
