"""The evidence beside each entry, piece by piece: who applies (CI or local), how a commit reached the
branch, what a plan sees changed outside git, and the keyed and chained runs."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from reconciler.app import auditing as audit
from reconciler.core.chain import audit_key, keyed_problem, mac_of
from reconciler.app.ci import ci_identity, local_identity
from reconciler.cli import cli
from reconciler.core.diff import Applied, Desired, Live, Location, diff
from reconciler.errors import ConfigurationError
from reconciler.git.repository import GitRepository
from reconciler.git.review import request_number, reviews

from .conftest import run_git
from .helpers import ALICE, BOB, CAROL, LOCAL, commit, invoke, plan_json, write

LOC = Location("manifests/obs.yaml", 1, 3)

# --- who applies --------------------------------------------------------------------------------------------


def test_github_actions_run_identifiers_beside_the_actor() -> None:
    found = ci_identity({"GITHUB_ACTOR": "bob-gh", "GITHUB_ACTOR_ID": "583231", "GITHUB_RUN_ID": "9101",
                         "GITHUB_RUN_ATTEMPT": "2", "GITHUB_REPOSITORY": "acme/catalog",
                         "GITHUB_SERVER_URL": "https://github.example.com", "GITHUB_REF": "refs/pull/31/merge",
                         "GITHUB_EVENT_NAME": "pull_request", "GITLAB_USER_LOGIN": "not-this-one"})
    assert found is not None
    assert (found.kind, found.actor, found.pull_request) == ("ci", "bob-gh", 31)
    assert found.url == "https://github.example.com/acme/catalog/actions/runs/9101/attempts/2"
    assert found.to_json() == {"kind": "ci", "actor": "bob-gh", "system": "github-actions", "actor_id": "583231",
                               "run_id": "9101", "run_attempt": "2", "repository": "acme/catalog",
                               "ref": "refs/pull/31/merge", "event": "pull_request"}


def test_gitlab_and_buildkite_run_identifiers() -> None:
    gitlab = ci_identity({"GITLAB_USER_LOGIN": "carol", "GITLAB_USER_EMAIL": "carol@example.com",
                          "CI_PIPELINE_ID": "77", "CI_JOB_ID": "901", "CI_MERGE_REQUEST_IID": "17",
                          "CI_JOB_URL": "https://gitlab.example.com/acme/catalog/-/jobs/901"})
    assert gitlab is not None and gitlab.url == "https://gitlab.example.com/acme/catalog/-/jobs/901"
    assert gitlab.pull_request == 17 and gitlab.to_json()["email"] == "carol@example.com"
    buildkite = ci_identity({"BUILDKITE_BUILD_CREATOR": "Dave", "BUILDKITE_BUILD_NUMBER": "12",
                             "BUILDKITE_BUILD_URL": "https://buildkite.com/acme/catalog/builds/12",
                             "BUILDKITE_JOB_ID": "0190", "BUILDKITE_PULL_REQUEST": "false"})
    assert buildkite is not None and buildkite.url == "https://buildkite.com/acme/catalog/builds/12#0190"
    assert buildkite.pull_request is None and "pull_request" not in buildkite.to_json()
    assert ci_identity({"GITHUB_ACTIONS": "true"}) is None  # no actor: not an identity to record
    assert local_identity("bob", "Bob", "unknown").to_json() == {"kind": "local", "actor": "bob", "os_user": "bob",
                                                                  "git_name": "Bob"}


def test_an_uncommitted_apply_names_the_local_git_identity_and_the_os_user_marked_local(
        git_repo: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR", "CIRCLE_USERNAME",
                 "BUILD_REQUESTEDFOR", "RECONCILER_AUDIT_KEY"):
        monkeypatch.delenv(name, raising=False)
    run_git(git_repo, "config", "user.name", LOCAL[0])
    run_git(git_repo, "config", "user.email", LOCAL[1])
    write(git_repo, "manifests/obs.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs\n")
    commit(git_repo, ALICE, "obs")
    write(git_repo, "manifests/obs.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs!\n")
    result = invoke(git_repo, db_url, "apply", "--auto-approve", "--allow-uncommitted")
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(CliRunner().invoke(cli, ["audit", "log", "--format", "json", "--database-url",
                                                   db_url]).stdout)
    user = getpass.getuser()
    assert (entry["author_name"], entry["author_email"], entry["uncommitted"], entry["applier"]) == (
        LOCAL[0], LOCAL[1], True, user)
    assert entry["applied_by"] == {"kind": "local", "actor": user, "os_user": user, "git_name": LOCAL[0],
                                   "git_email": LOCAL[1]}
    text = CliRunner().invoke(cli, ["audit", "log", "--database-url", db_url]).stdout
    assert f"  by        {LOCAL[0]} <{LOCAL[1]}>, no commit (uncommitted)" in text
    assert f"  applier   {user} (local: OS user {user}, git {LOCAL[1]}), run-" in text
    assert len(json.loads(CliRunner().invoke(cli, ["audit", "log", "--format", "json", "--applier", LOCAL[1],
                                                   "--database-url", db_url]).stdout)) == 1


# --- how a commit reached the branch ---------------------------------------------------------------------------


def test_merge_messages_and_squash_subjects_name_the_request() -> None:
    assert request_number("Merge pull request #12 from bob/retention\n\nKeep a week", squash=False) == 12
    assert request_number("Merge branch 'x' into 'main'\n\nSee merge request acme/catalog!17\n", squash=False) == 17
    assert request_number("Merged in feature (pull request #5)\n", squash=False) == 5
    assert request_number("Merged PR 99: shorter retention\n", squash=False) == 99
    assert request_number("Keep readings for a week (#41)\n", squash=True) == 41
    assert request_number("Keep readings for a week (#41)\n", squash=False) is None
    assert request_number("Merge branch 'main' into feature\n", squash=False) is None


def test_reviews_walk_the_first_parent_line(git_repo: Path) -> None:
    write(git_repo, "a.txt", "1\n")
    root = commit(git_repo, ALICE, "root")
    run_git(git_repo, "checkout", "-q", "-b", "feature")
    write(git_repo, "a.txt", "2\n")
    branch = commit(git_repo, BOB, "on a branch")
    run_git(git_repo, "checkout", "-q", "main")
    write(git_repo, "b.txt", "x\n")
    direct = commit(git_repo, CAROL, "pushed straight to main")
    run_git(git_repo, "merge", "-q", "--no-ff", "-m", "Merge pull request #7 from bob/feature", "feature",
            author=CAROL)
    merge = run_git(git_repo, "rev-parse", "HEAD").strip()
    write(git_repo, "c.txt", "y\n")
    squashed = commit(git_repo, BOB, "A squashed request (#8)")
    repo = GitRepository(git_repo)
    found = reviews(repo, [root, branch, direct, merge, squashed, "f" * 40], "HEAD")
    assert set(found) == {root, branch, direct, merge, squashed}  # an unknown commit is left out
    assert (found[branch].merge_commit, found[branch].pull_request, found[branch].direct) == (merge, 7, False)
    assert (found[direct].merge_commit, found[direct].pull_request, found[direct].direct) == (direct, None, True)
    assert (found[squashed].merge_commit, found[squashed].pull_request, found[squashed].direct) == (squashed, 8, False)
    assert found[merge].pull_request == 7 and found[merge].merge_commit == merge
    assert reviews(repo, [direct], "HEAD", ci_request=44)[direct].pull_request == 44


# --- what a plan sees changed outside git --------------------------------------------------------------------


def _record(owner: str, tags: list[str], deleted: bool = False, **extra: Any) -> Live:
    fields = {"owner": owner, "tags": tags, "schemaHash": None, "metadata": {}, "deleted": deleted}
    return Live("record:obs/s1", "record", fields, "2", updated_by=extra.get("by"), updated_at=extra.get("at"))


def test_a_hand_edit_a_commit_matches_is_observed_and_adopted() -> None:
    desired = Desired("record:obs/s1", "record", {"owner": "b"}, LOC)
    applied = Applied("record:obs/s1", "record", "default", {"owner": "a"})
    live = _record("b", [], by="eve@x", at="2026-03-06T10:00:00.000Z")
    result = diff({desired.address: desired}, {"record:obs/s1": live}, {"record:obs/s1": applied}, source="default")
    assert result.changes == () and [b.reason for b in result.bookkeeping] == ["refresh"]
    found = result.outside["record:obs/s1"]
    assert (found.fields, found.before, found.after, found.adopted) == (("owner",), {"owner": "a"}, {"owner": "b"},
                                                                         ("owner",))
    (finding,) = result.findings
    assert finding.message == ("owner changed outside git by eve@x at 2026-03-06T10:00:00.000Z; the tree now "
                               "declares the same value, so apply adopts it")


def test_a_field_left_to_its_default_counts_and_a_deleted_object_is_observed() -> None:
    desired = Desired("record:obs/s1", "record", {"owner": "a"}, LOC)
    applied = Applied("record:obs/s1", "record", "default", {"owner": "a"})
    archived = diff({desired.address: desired}, {"record:obs/s1": _record("a", [], deleted=True)},
                    {"record:obs/s1": applied}, source="default")
    (change,) = archived.changes
    assert (change.action, change.reason, change.drift) == ("restore", "drift", ("deleted",))
    assert archived.outside["record:obs/s1"].before == {"deleted": False}
    gone = diff({desired.address: desired}, {}, {"record:obs/s1": applied}, source="default")
    assert gone.changes[0].action == "create" and gone.outside["record:obs/s1"].after is None
    assert gone.findings[0].message == ("deleted outside git (the catalog does not record by whom); "
                                        "apply creates it again")


def test_a_retention_edit_is_dated_by_the_policy_not_the_dataset(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/obs.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs\n"
                                          "retention: {mode: time, rules: {maxAgeHours: 720}}\n")
    commit(git_repo, ALICE, "obs")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    db.execute("UPDATE timestore.dataset_retention_policies SET policy = '{\"mode\": \"time\", \"rules\": "
               "{\"maxAgeHours\": 24}}', updated_at = '2026-03-05T12:34:56.789Z'")
    (change,) = plan_json(git_repo, db_url)["changes"]
    assert change["outside"]["at"] == "2026-03-05T12:34:56.789Z"
    assert change["outside"]["evidence"] == "timestore.dataset_retention_policies updated_at"
    updated = db.execute("SELECT to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"') "
                         "FROM timestore.datasets").fetchone()
    assert updated is not None and updated[0] != change["outside"]["at"]
    assert ("retention changed outside git at 2026-03-05T12:34:56.789Z "
            "(timestore.dataset_retention_policies updated_at) (the catalog does not record by whom); "
            "apply reverts it") in invoke(git_repo, db_url, "plan").output


# --- the keyed chain -------------------------------------------------------------------------------------------


def test_the_key_is_checked_and_continuity_is_enforced() -> None:
    with pytest.raises(ConfigurationError, match="RECONCILER_AUDIT_KEY is too short"):
        audit_key({"RECONCILER_AUDIT_KEY": "short"})
    assert audit_key({}) is None
    key = audit_key({"RECONCILER_AUDIT_KEY": "x" * 32})
    assert key is not None
    assert keyed_problem("entry", 3, "a" * 64, None, None) is None  # an unkeyed log takes anything
    assert "is not set" in (keyed_problem("entry", 3, "a" * 64, mac_of(key, "a" * 64), None) or "")
    assert keyed_problem("entry", 3, "a" * 64, mac_of(key, "a" * 64), key) is None
    assert "not the one the log was written with" in (keyed_problem("entry", 3, "a" * 64, "b" * 64, key) or "")


def test_a_refused_run_is_chained_and_verify_checks_runs_against_entries(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECONCILER_AUDIT_KEY", "y" * 40)
    write(git_repo, "manifests/obs.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs\n")
    commit(git_repo, ALICE, "obs")
    assert invoke(git_repo, db_url, "apply", "--auto-approve").exit_code == 0
    write(git_repo, "manifests/obs.yaml", "apiVersion: reconciler/v1\nkind: Dataset\nslug: obs\nname: Obs 2\n")
    commit(git_repo, BOB, "rename it")
    with psycopg.connect(db_url) as holder:  # another apply of the source holds its lock
        holder.execute("SELECT 1 FROM reconciler.apply_locks WHERE name = 'source:default' FOR UPDATE")
        assert invoke(git_repo, db_url, "apply", "--auto-approve", "--lock-timeout", "0").exit_code == 1
    runs = db.execute("SELECT seq, outcome, entries, first_entry, mac IS NOT NULL FROM reconciler.runs "
                      "ORDER BY seq").fetchall()
    assert runs == [(1, "applied", 1, 1, True), (2, "failed", 0, 2, True)]
    assert audit.verify(db_url, key=audit_key({"RECONCILER_AUDIT_KEY": "y" * 40})).runs == 2
    # A run edited after the fact breaks the runs chain, named.
    db.execute("UPDATE reconciler.runs SET applier = 'someone-else' WHERE seq = 1")
    result = CliRunner().invoke(cli, ["audit", "verify", "--database-url", db_url])
    assert result.exit_code == 1 and "run 1 (run-" in result.output and "content changed" in result.output
