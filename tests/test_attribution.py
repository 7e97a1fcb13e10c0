"""Attribution by meaning: real repositories with commits by named people, planned and applied
through the CLI; each change's author and reason checked in the plan JSON, the audit log and
the services' own audit rows."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import run_git
from .helpers import ALICE, BOB, CAROL, DAVE, EVE, FRANK, GRACE, LOCAL, apply, commit, invoke, plan_json, write

DATASET = """\
apiVersion: reconciler/v1
kind: Dataset
slug: obs
name: Observatory
description: Minute readings
"""

FLEET = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: fleet
defaults: {owner: team-fleet, tags: [fleet]}
records:
  - key: r1
    metadata: {unit: c}
  - key: r2
    metadata: {unit: k}
  - key: r3
"""


@pytest.fixture
def repo(git_repo: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty repository with a local identity (who applies, outside CI)."""
    for variable in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR", "CIRCLE_USERNAME",
                     "BUILD_REQUESTEDFOR"):
        monkeypatch.delenv(variable, raising=False)
    run_git(git_repo, "config", "user.name", LOCAL[0])
    run_git(git_repo, "config", "user.email", LOCAL[1])
    return git_repo


def changes(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["address"]: c for c in plan["changes"]}


def who(change: dict[str, Any]) -> tuple[str, str, bool]:
    """(email, reason, applier) of a planned change."""
    return change["author"]["email"], change["reason"], change["author"]["applier"]


def logged(db: psycopg.Connection[Any], address: str) -> list[tuple[Any, ...]]:
    """(action, author_email, commit_sha, reason, uncommitted) of every audit entry of ``address``."""
    return db.execute("SELECT action, author_email, commit_sha, reason, uncommitted FROM reconciler.audit_log "
                      "WHERE address = %s ORDER BY seq", (address,)).fetchall()


def last_logged(db: psycopg.Connection[Any], address: str) -> tuple[Any, ...]:
    return logged(db, address)[-1]


def dataset_actor(db: psycopg.Connection[Any], slug: str) -> str:
    row = db.execute("SELECT actor_id FROM timestore.dataset_access_audit WHERE dataset_slug = %s "
                     "ORDER BY created_at DESC LIMIT 1", (slug,)).fetchone()
    assert row is not None
    return str(row[0])


def record_actor(db: psycopg.Connection[Any], namespace: str, key: str) -> str:
    row = db.execute("SELECT actor FROM metastore.metastore_record_audits WHERE namespace = %s AND record_key = %s "
                     "ORDER BY id DESC LIMIT 1", (namespace, key)).fetchone()
    assert row is not None
    return str(row[0])


# --- the cases that used to name the wrong person ---------------------------------------------------


def test_a_deletion_only_edit_is_its_authors(repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "add obs")
    apply(repo, db_url)
    write(repo, "manifests/obs.yaml", DATASET.replace("description: Minute readings\n", ""))
    bob = commit(repo, BOB, "drop the description")
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert change["fields"] == ["description"]
    assert who(change) == (BOB[1], "manifest", False) and change["author"]["commit"] == bob
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("update", BOB[1], bob, "manifest", False)
    assert dataset_actor(db, "obs") == BOB[1]


def test_an_edit_of_recordset_defaults_is_its_authors_for_every_record(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "fleet")
    apply(repo, db_url)
    write(repo, "manifests/fleet.yaml", FLEET.replace("owner: team-fleet", "owner: team-logistics"))
    bob = commit(repo, BOB, "hand the fleet over")
    planned = changes(plan_json(repo, db_url))
    assert sorted(planned) == ["record:fleet/r1", "record:fleet/r2", "record:fleet/r3"]
    assert {who(c) for c in planned.values()} == {(BOB[1], "manifest", False)}
    apply(repo, db_url)
    assert last_logged(db, "record:fleet/r3") == ("update", BOB[1], bob, "manifest", False)
    assert record_actor(db, "fleet", "r3") == BOB[1]


def test_a_merge_is_transparent_each_branch_commit_names_its_author(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "fleet")
    apply(repo, db_url)
    run_git(repo, "checkout", "-q", "-b", "topic")
    write(repo, "manifests/fleet.yaml", FLEET.replace("  - key: r2\n    metadata: {unit: k}\n", ""))
    frank = commit(repo, FRANK, "retire r2")
    write(repo, "manifests/fleet.yaml", FLEET.replace("  - key: r2\n    metadata: {unit: k}\n", "")
          .replace("{unit: c}", "{unit: f}"))
    grace = commit(repo, GRACE, "r1 in fahrenheit")
    run_git(repo, "checkout", "-q", "main")
    run_git(repo, "merge", "-q", "--no-ff", "topic", "-m", "Merge pull request #7 from topic", author=DAVE)
    planned = changes(plan_json(repo, db_url))
    assert planned["record:fleet/r2"]["action"] == "archive"
    assert who(planned["record:fleet/r2"]) == (FRANK[1], "manifest", False)
    assert planned["record:fleet/r2"]["author"]["commit"] == frank
    assert who(planned["record:fleet/r1"]) == (GRACE[1], "manifest", False)
    apply(repo, db_url)
    assert last_logged(db, "record:fleet/r2") == ("archive", FRANK[1], frank, "manifest", False)
    assert last_logged(db, "record:fleet/r1") == ("update", GRACE[1], grace, "manifest", False)


def test_a_merge_that_makes_the_value_itself_names_the_merge(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs")
    apply(repo, db_url)
    run_git(repo, "checkout", "-q", "-b", "topic")
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Hourly readings"))
    commit(repo, FRANK, "hourly")
    run_git(repo, "checkout", "-q", "main")
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Daily readings"))
    commit(repo, GRACE, "daily")
    merge = _merge_resolving(repo, "topic", DATASET.replace("Minute readings", "Weekly readings"), DAVE)
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert who(change) == (DAVE[1], "manifest", False)  # neither parent had "Weekly readings"
    assert change["author"]["commit"] == merge
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("update", DAVE[1], merge, "manifest", False)


def _merge_resolving(repo: Path, branch: str, resolved: str, author: tuple[str, str]) -> str:
    """Merge ``branch`` with a conflict in manifests/obs.yaml, resolved to ``resolved``."""
    import subprocess

    subprocess.run(["git", "merge", "-q", "--no-ff", branch, "-m", "merge"], cwd=repo, capture_output=True,
                   check=False)
    write(repo, "manifests/obs.yaml", resolved)
    return commit(repo, author, "merge, resolved")


def test_a_squash_merge_names_the_squash_commit(repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "fleet")
    apply(repo, db_url)
    run_git(repo, "checkout", "-q", "-b", "topic")
    write(repo, "manifests/fleet.yaml", FLEET.replace("{unit: c}", "{unit: f}"))
    commit(repo, FRANK, "r1 in fahrenheit")
    run_git(repo, "checkout", "-q", "main")
    run_git(repo, "merge", "-q", "--squash", "topic")
    dave = commit(repo, DAVE, "Squashed: r1 in fahrenheit (#8)")
    planned = changes(plan_json(repo, db_url))
    assert sorted(planned) == ["record:fleet/r1"]
    change = planned["record:fleet/r1"]
    assert who(change) == (DAVE[1], "manifest", False) and change["author"]["commit"] == dave
    apply(repo, db_url)
    assert last_logged(db, "record:fleet/r1") == ("update", DAVE[1], dave, "manifest", False)


def test_order_is_the_historys_not_the_author_dates(repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs", date="2026-01-01T10:00:00+00:00")
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Carol's readings"))
    carol = commit(repo, CAROL, "carol", date="2026-03-01T10:00:00+00:00")
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs")[1:3] == (CAROL[1], carol)
    # A rebased commit keeps its older author date; it is still the newer change.
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Bob's readings"))
    bob = commit(repo, BOB, "bob (rebased)", date="2026-02-01T10:00:00+00:00")
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert who(change) == (BOB[1], "manifest", False) and change["author"]["commit"] == bob
    assert change["author"]["date"] == "2026-02-01T10:00:00+00:00"
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("update", BOB[1], bob, "manifest", False)
    date = db.execute("SELECT commit_date FROM reconciler.audit_log ORDER BY seq DESC LIMIT 1").fetchone()
    assert date is not None and date[0].isoformat() == "2026-02-01T10:00:00+00:00"


def test_a_cherry_pick_names_its_original_author(repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs")
    apply(repo, db_url)
    run_git(repo, "checkout", "-q", "-b", "topic")
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Eve's readings"))
    eve = commit(repo, EVE, "eve")
    run_git(repo, "checkout", "-q", "main")
    run_git(repo, "cherry-pick", eve, author=DAVE)  # Dave commits it; Eve stays the author
    picked = run_git(repo, "rev-parse", "HEAD").strip()
    planned = changes(plan_json(repo, db_url))
    assert sorted(planned) == ["dataset:obs"]
    change = planned["dataset:obs"]
    assert who(change) == (EVE[1], "manifest", False) and change["author"]["commit"] == picked != eve
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("update", EVE[1], picked, "manifest", False)


def test_a_revert_names_whoever_reverted(repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs")
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Bob's readings"))
    bob = commit(repo, BOB, "bob")
    apply(repo, db_url)
    run_git(repo, "revert", "--no-edit", bob, author=CAROL)
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert change["after"]["description"] == "Minute readings"
    assert who(change) == (CAROL[1], "manifest", False)
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs")[1] == CAROL[1]


def test_git_mv_then_a_removal_names_the_remover_and_says_what_happened(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "fleet")
    apply(repo, db_url)
    run_git(repo, "mv", "manifests/fleet.yaml", "manifests/fleet-renamed.yaml")
    commit(repo, DAVE, "rename the file")
    assert plan_json(repo, db_url)["changes"] == []  # a move changes nothing
    write(repo, "manifests/fleet-renamed.yaml", FLEET.replace("  - key: r3\n", ""))
    eve = commit(repo, EVE, "retire r3")
    change = changes(plan_json(repo, db_url))["record:fleet/r3"]
    assert change["action"] == "archive" and who(change) == (EVE[1], "manifest", False)
    assert change["removal"] == {"path": "manifests/fleet-renamed.yaml", "commit": eve, "file_removed": False}
    text = invoke(repo, db_url, "plan").output
    assert f"removed from manifests/fleet-renamed.yaml in {eve[:7]}" in text
    assert "manifest removed" not in text
    apply(repo, db_url)
    assert last_logged(db, "record:fleet/r3") == ("archive", EVE[1], eve, "manifest", False)


@pytest.mark.parametrize("destination", ["attic/fleet.yaml", "manifests/fleet.yaml.off"])
def test_a_file_moved_out_of_the_tree_says_where_it_went(
        repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path, destination: str) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "obs and fleet")
    apply(repo, db_url)
    (repo / destination).parent.mkdir(exist_ok=True)
    run_git(repo, "mv", "manifests/fleet.yaml", destination)
    dave = commit(repo, DAVE, "shelve the fleet")
    planned = changes(plan_json(repo, db_url))
    assert sorted(planned) == ["record:fleet/r1", "record:fleet/r2", "record:fleet/r3"]
    for change in planned.values():
        assert change["action"] == "archive" and who(change) == (DAVE[1], "manifest", False)
        assert change["removal"] == {"path": "manifests/fleet.yaml", "commit": dave, "file_removed": True,
                                     "moved_to": destination}
    text = invoke(repo, db_url, "plan").output
    assert text.count(f"(moved to {destination} in {dave[:7]})") == 3 and "manifest removed" not in text
    markdown = invoke(repo, db_url, "plan", "--format", "markdown").output
    assert "(moved to " in markdown and "manifest removed" not in markdown
    saved = tmp_path / "plan.json"
    assert invoke(repo, db_url, "plan", "--out", str(saved)).exit_code == 0
    assert json.loads(saved.read_text())["changes"][0]["removal"]["moved_to"] == destination
    result = invoke(repo, db_url, "apply", "--plan", str(saved))
    assert result.exit_code == 0, result.output
    for address in planned:
        assert last_logged(db, address) == ("archive", DAVE[1], dave, "manifest", False)


def test_a_file_renamed_in_the_tree_while_an_object_is_taken_out_names_the_new_file(
        repo: Path, db_url: str) -> None:
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "fleet")
    apply(repo, db_url)
    run_git(repo, "mv", "manifests/fleet.yaml", "manifests/vehicles.yaml")
    write(repo, "manifests/vehicles.yaml", FLEET.replace("  - key: r3\n", ""))
    eve = commit(repo, EVE, "rename, and retire r3")
    change = changes(plan_json(repo, db_url))["record:fleet/r3"]
    assert change["removal"] == {"path": "manifests/vehicles.yaml", "commit": eve, "file_removed": False}
    text = invoke(repo, db_url, "plan").output
    assert f"(removed from manifests/vehicles.yaml in {eve[:7]})" in text and "manifest removed" not in text


def test_an_object_moved_by_one_person_and_edited_by_another(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/a.yaml", DATASET)
    alice = commit(repo, ALICE, "obs in a.yaml")
    apply(repo, db_url)
    (repo / "manifests" / "a.yaml").unlink()
    write(repo, "manifests/b.yaml", "# moved here\n" + DATASET.replace("name: Observatory", "name: 'Observatory'"))
    commit(repo, BOB, "move obs to b.yaml, requoted")
    assert plan_json(repo, db_url)["changes"] == []  # moved and reformatted: nothing to do
    apply(repo, db_url)  # the move is recorded, not logged as a change
    write(repo, "manifests/b.yaml", DATASET.replace("Minute readings", "Carol's readings"))
    carol = commit(repo, CAROL, "carol edits it")
    planned = changes(plan_json(repo, db_url))
    assert sorted(planned) == ["dataset:obs"]
    change = planned["dataset:obs"]
    assert who(change) == (CAROL[1], "manifest", False) and change["author"]["commit"] == carol
    apply(repo, db_url)
    assert logged(db, "dataset:obs") == [("create", ALICE[1], alice, "manifest", False),
                                         ("update", CAROL[1], carol, "manifest", False)]


def test_a_deleted_file_is_the_deleters_and_the_plan_says_so(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    write(repo, "manifests/keep.yaml", DATASET.replace("slug: obs", "slug: kept"))
    commit(repo, ALICE, "two datasets")
    apply(repo, db_url)
    (repo / "manifests" / "obs.yaml").unlink()
    eve = commit(repo, EVE, "drop obs.yaml")
    planned = changes(plan_json(repo, db_url))
    assert sorted(planned) == ["dataset:obs"]
    change = planned["dataset:obs"]
    assert change["action"] == "archive" and who(change) == (EVE[1], "manifest", False)
    assert change["removal"] == {"path": "manifests/obs.yaml", "commit": eve, "file_removed": True}
    assert f"manifest removed in {eve[:7]}" in invoke(repo, db_url, "plan").output
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("archive", EVE[1], eve, "manifest", False)


# --- shallow clones ------------------------------------------------------------------------------------


def test_a_shallow_clone_cannot_attribute_plan_says_so_and_apply_refuses(
        repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs")
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, BOB, "fleet")
    clone = tmp_path / "ci-checkout"
    run_git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(clone))
    plan = plan_json(clone, db_url)
    assert "shallow clone" in plan["attribution_problem"] and "git fetch --unshallow" in plan["attribution_problem"]
    assert ALICE[1] not in json.dumps(plan) and BOB[1] not in json.dumps(plan)  # no silent guess
    text = invoke(clone, db_url, "plan").output
    assert text.count("Attribution impossible:") == 1
    refused = invoke(clone, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1 and "attribution is impossible" in refused.output
    assert db.execute("SELECT count(*) FROM timestore.datasets").fetchone() == (0,)
    # The whole history fetched: the same plan names both authors.
    run_git(clone, "fetch", "-q", "--unshallow")
    planned = changes(plan_json(clone, db_url))
    assert who(planned["dataset:obs"])[0] == ALICE[1] and who(planned["record:fleet/r1"])[0] == BOB[1]


def test_a_shallow_clone_that_reaches_the_last_applied_commit_attributes(
        repo: Path, db_url: str, tmp_path: Path) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs")
    apply(repo, db_url)
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Bob's readings"))
    bob = commit(repo, BOB, "bob")
    deep_enough = tmp_path / "depth-2"
    run_git(tmp_path, "clone", "-q", "--depth=2", f"file://{repo}", str(deep_enough))
    plan = plan_json(deep_enough, db_url)
    assert plan["attribution_problem"] is None
    assert changes(plan)["dataset:obs"]["author"]["commit"] == bob
    too_shallow = tmp_path / "depth-1"
    run_git(tmp_path, "clone", "-q", "--depth=1", f"file://{repo}", str(too_shallow))
    assert "which this source last applied" in plan_json(too_shallow, db_url)["attribution_problem"]


# --- uncommitted work --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["edit", "deleted-line", "deleted-file", "untracked-file", "staged"])
def test_uncommitted_changes_need_the_flag_and_name_the_applier(
        repo: Path, db_url: str, db: psycopg.Connection[Any], how: str) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    write(repo, "manifests/fleet.yaml", FLEET)
    alice = commit(repo, ALICE, "base")
    apply(repo, db_url)
    if how == "edit":
        write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Draft"))
    elif how == "deleted-line":
        write(repo, "manifests/obs.yaml", DATASET.replace("description: Minute readings\n", ""))
    elif how == "deleted-file":
        (repo / "manifests" / "obs.yaml").unlink()
    elif how == "untracked-file":
        write(repo, "manifests/new.yaml", DATASET.replace("slug: obs", "slug: brand-new"))
    else:
        write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Staged"))
        run_git(repo, "add", "manifests/obs.yaml")
    address = "dataset:brand-new" if how == "untracked-file" else "dataset:obs"
    plan = plan_json(repo, db_url)
    assert plan["dirty"] is True
    change = changes(plan)[address]
    assert change["author"]["uncommitted"] is True and change["author"]["commit"] is None
    assert change["author"]["email"] == LOCAL[1]  # the local identity, never the last commit's author
    refused = invoke(repo, db_url, "apply", "--auto-approve")
    assert refused.exit_code == 1 and "uncommitted" in refused.output
    apply(repo, db_url, "--allow-uncommitted")
    action, email, sha, reason, uncommitted = last_logged(db, address)
    assert (email, sha, uncommitted) == (LOCAL[1], None, True) and sha != alice
    if how != "deleted-file":
        assert dataset_actor(db, address.split(":")[1]) == LOCAL[1]


def test_a_formatting_only_uncommitted_edit_is_not_uncommitted(repo: Path, db_url: str) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ALICE, "obs")
    write(repo, "manifests/obs.yaml", "# a comment\n" + DATASET.replace("name: Observatory", 'name: "Observatory"'))
    plan = plan_json(repo, db_url)
    assert plan["dirty"] is False
    assert changes(plan)["dataset:obs"]["author"]["email"] == ALICE[1]


def test_a_gitignored_tree_is_dirty_and_every_change_uncommitted(repo: Path, db_url: str) -> None:
    write(repo, ".gitignore", "manifests/\n")
    commit(repo, ALICE, "ignore the manifests")
    write(repo, "manifests/obs.yaml", DATASET)
    plan = plan_json(repo, db_url)
    assert plan["dirty"] is True
    assert changes(plan)["dataset:obs"]["author"]["uncommitted"] is True


# --- changes no commit asked for --------------------------------------------------------------------

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: lake
type: s3
config: {bucket: lake, password: "${env:LAKE_PW}"}
"""


def test_a_rotated_secret_names_the_applier_with_reason_secret(
        repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LAKE_PW", "first")
    write(repo, "manifests/lake.yaml", STORAGE)
    alice = commit(repo, ALICE, "lake")
    apply(repo, db_url)
    monkeypatch.setenv("LAKE_PW", "rotated")
    monkeypatch.setenv("GITHUB_ACTOR", "rotation-bot")
    change = changes(plan_json(repo, db_url))["storage-target:lake"]
    assert change["reason"] == "secret" and change["author"]["applier"] is True
    assert change["author"]["name"] == "rotation-bot" and change["author"]["commit"] == alice
    assert change["drift"] == []
    apply(repo, db_url)
    row = db.execute("SELECT action, author_name, author_email, commit_sha, reason FROM reconciler.audit_log "
                     "ORDER BY seq DESC LIMIT 1").fetchone()
    assert row == ("update", "rotation-bot", "", alice, "secret")


def test_a_drift_revert_names_the_applier_with_reason_drift(
        repo: Path, db_url: str, db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    alice = commit(repo, ALICE, "obs")
    apply(repo, db_url)
    db.execute("UPDATE timestore.datasets SET name = 'Renamed by hand', updated_at = now() WHERE slug = 'obs'")
    monkeypatch.setenv("GITHUB_ACTOR", "nightly-drift")
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert (change["reason"], change["author"]["applier"], change["author"]["commit"]) == ("drift", True, alice)
    assert change["author"]["name"] == "nightly-drift"
    assert "whoever applies (reverts a change made outside git; value declared in commit" in \
        invoke(repo, db_url, "plan").output
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("update", "", alice, "drift", False)
    assert dataset_actor(db, "obs") == "nightly-drift"


def test_an_adoption_fix_names_the_applier_with_reason_adoption(
        repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO timestore.datasets (id, slug, name, description) "
               "VALUES ('ds-made-by-hand', 'obs', 'Observatory', 'made by ingestion')")
    write(repo, "manifests/obs.yaml", DATASET)
    alice = commit(repo, ALICE, "adopt obs")
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert (change["reason"], change["author"]["applier"], change["author"]["commit"]) == ("adoption", True, alice)
    apply(repo, db_url)
    assert last_logged(db, "dataset:obs") == ("update", LOCAL[1], alice, "adoption", False)


def test_a_change_asked_before_a_narrowed_apply_still_names_its_commit(repo: Path, db_url: str) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    write(repo, "manifests/fleet.yaml", FLEET)
    commit(repo, ALICE, "base")
    apply(repo, db_url)
    write(repo, "manifests/obs.yaml", DATASET.replace("Minute readings", "Bob's readings"))
    write(repo, "manifests/fleet.yaml", FLEET.replace("{unit: c}", "{unit: f}"))
    bob = commit(repo, BOB, "two edits")
    apply(repo, db_url, "--target", "record:fleet/r1")  # the dataset's edit is left for later
    write(repo, "README.md", "unrelated\n")
    commit(repo, CAROL, "docs")
    change = changes(plan_json(repo, db_url))["dataset:obs"]
    assert who(change) == (BOB[1], "manifest", False) and change["author"]["commit"] == bob


def test_a_commit_without_an_author_email_is_refused_at_plan(repo: Path, db_url: str,
                                                             db: psycopg.Connection[Any]) -> None:
    write(repo, "manifests/obs.yaml", DATASET)
    commit(repo, ("NoMail", ""), "no email")
    result = invoke(repo, db_url, "plan")
    assert result.exit_code == 1
    assert "has no author email" in result.output and "git commit --amend --author" in result.output
    assert invoke(repo, db_url, "apply", "--auto-approve").exit_code == 1
    assert db.execute("SELECT count(*) FROM timestore.dataset_access_audit").fetchone() == (0,)


# --- random histories ---------------------------------------------------------------------------------

PEOPLE = (ALICE, BOB, CAROL, DAVE, EVE)
NAMES = ("One", "Two", "Three")
DESCRIPTIONS = (None, "first", "second")


def _tree(slugs: list[str], state: dict[str, dict[str, str | None]], files: dict[str, int]) -> dict[str, str]:
    """The manifest files for ``state``: each dataset in the file ``files`` puts it in."""
    out: dict[str, list[str]] = {}
    for slug in slugs:
        lines = [f"apiVersion: reconciler/v1\nkind: Dataset\nslug: {slug}\nname: {state[slug]['name']}\n"]
        if state[slug]["description"] is not None:
            lines.append(f"description: {state[slug]['description']}\n")
        out.setdefault(f"manifests/part-{files[slug]}.yaml", []).append("".join(lines))
    return {name: "---\n".join(docs) for name, docs in out.items()}


_STEP = st.one_of(
    st.tuples(st.just("edit"), st.integers(0, 4), st.integers(0, 2), st.sampled_from(["name", "description"]),
              st.integers(0, 2)),
    st.tuples(st.just("move"), st.integers(0, 4), st.integers(0, 2), st.just(""), st.integers(0, 1)),
    st.tuples(st.just("apply"), st.just(0), st.just(0), st.just(""), st.just(0)),
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=10))
def test_random_histories_name_whoever_last_changed_each_field(
        db_url: str, tmp_path_factory: pytest.TempPathFactory, steps: list[tuple[str, int, int, str, int]]) -> None:
    """Random edits by random people, moves between files and applies in between: every
    planned change names the author of the newest commit that changed one of its fields
    (moves and no-op edits never count), in the plan and in the audit log."""
    repo = tmp_path_factory.mktemp("random") / "repo"
    repo.mkdir()
    run_git(repo, "init", "-q", "-b", "main")
    tag = repo.parent.name.replace("_", "-").lower()
    write(repo, "reconciler.yaml", f"source: {tag}\n")
    slugs = [f"{tag}-d{i}" for i in range(3)]
    state = {slug: {"name": "One", "description": None} for slug in slugs}
    files = dict.fromkeys(slugs, 0)
    for name, text in _tree(slugs, state, files).items():
        write(repo, name, text)
    commit(repo, ALICE, "start")
    apply(repo, db_url)
    applied = {slug: dict(fields) for slug, fields in state.items()}
    last: dict[tuple[str, str], tuple[int, str]] = {}
    for n, (kind, person, index, field_name, value) in enumerate(steps):
        slug = slugs[index]
        if kind == "apply":
            apply(repo, db_url)
            applied = {s: dict(fields) for s, fields in state.items()}
            continue
        if kind == "edit":
            new = NAMES[value] if field_name == "name" else DESCRIPTIONS[value]
            if state[slug][field_name] != new:
                last[(slug, field_name)] = (n, PEOPLE[person][1])
            state[slug][field_name] = new
        else:
            files[slug] = value
        for path in (repo / "manifests").glob("*.yaml"):
            path.unlink()
        for name, text in _tree(slugs, state, files).items():
            write(repo, name, text)
        commit(repo, PEOPLE[person], f"step {n}")
    plan = plan_json(repo, db_url)
    expected = {}
    for slug in slugs:
        moved = [f for f in ("name", "description") if state[slug][f] != applied[slug][f]]
        if moved:  # the newest commit that changed one of the fields the change writes
            expected[f"dataset:{slug}"] = max(last[(slug, f)] for f in moved)[1]
    planned = changes(plan)
    assert {address: (c["reason"], c["author"]["email"]) for address, c in planned.items()} == {
        address: ("manifest", email) for address, email in expected.items()}
    apply(repo, db_url)
    with psycopg.connect(db_url) as conn:
        for address, change in planned.items():
            row = conn.execute("SELECT author_email FROM reconciler.audit_log WHERE address = %s "
                               "ORDER BY seq DESC LIMIT 1", (address,)).fetchone()
            assert row == (change["author"]["email"],)
