"""Saved plans are not trusted: apply --plan derives the plan again from git and the catalog and
applies it only when it is the saved plan change for change. Attacks through an edited file."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reconciler.errors import ConfigurationError
from reconciler.core.plan import Plan, canonical_json

from .helpers import ALICE, BOB, apply, commit, invoke, write

PROTECTED = """\
apiVersion: reconciler/v1
kind: Dataset
slug: crown-jewels
name: Crown jewels
protect: true
"""

TREE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: lake
type: s3
config: {bucket: lake}
---
apiVersion: reconciler/v1
kind: Dataset
slug: readings
name: Readings
storageTarget: lake
---
apiVersion: reconciler/v1
kind: RecordSet
namespace: fleet
defaults: {owner: team-fleet}
records:
  - key: r1
    metadata: {datasetSlug: readings}
  - key: r2
"""


def catalog_dump(db: psycopg.Connection[Any]) -> list[Any]:
    """Everything a write could change, to compare before and after a refused apply."""
    out = []
    for table in ("timestore.storage_targets", "timestore.datasets", "timestore.dataset_access_audit",
                  "metastore.metastore_records", "metastore.metastore_record_audits",
                  "reconciler.managed_objects", "reconciler.audit_log"):
        out.append(db.execute(f"SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) "  # noqa: S608
                              f"FROM {table} t").fetchone())
    return out


def resealed(data: dict[str, Any]) -> dict[str, Any]:
    """The edited plan with its digest recomputed, as the documented format lets anyone do."""
    body = {k: v for k, v in data.items() if k != "digest"}
    try:
        digest = Plan.from_json(body, check_digest=False).digest()
    except (ConfigurationError, KeyError, TypeError, ValueError):  # no longer a plan: any digest, it is refused
        digest = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
    return {**body, "digest": digest}


def save(repo: Path, db_url: str, path: Path) -> dict[str, Any]:
    result = invoke(repo, db_url, "plan", "--out", str(path))
    assert result.exit_code in (0, 2), result.output
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_an_update_edited_into_a_purge_of_a_protected_dataset_is_refused(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    write(git_repo, "manifests/jewels.yaml", PROTECTED)
    commit(git_repo, ALICE, "protect the jewels")
    apply(git_repo, db_url)
    write(git_repo, "manifests/jewels.yaml", PROTECTED.replace("name: Crown jewels", "name: The crown jewels"))
    commit(git_repo, BOB, "rename")
    saved = tmp_path / "plan.json"
    data = save(git_repo, db_url, saved)
    (change,) = data["changes"]
    change.update(action="purge", protect=False, after=None, fields=[],
                  author={"name": "Mallory", "email": "mallory@example.com", "commit": data["commit"],
                          "uncommitted": False, "date": None, "applier": False})
    data["summary"] = {"create": 0, "update": 0, "archive": 0, "restore": 0, "purge": 1}
    saved.write_text(json.dumps(resealed(data)))
    before = catalog_dump(db)
    result = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--allow-purge")
    assert result.exit_code == 1, result.output
    assert "dataset:crown-jewels" in result.output and "nothing was written" in result.output
    assert catalog_dump(db) == before
    assert db.execute("SELECT count(*) FROM reconciler.audit_log WHERE author_email LIKE 'mallory%'"
                      ).fetchone() == (0,)


def test_an_archive_smuggled_in_for_an_unmanaged_dataset_is_refused(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    write(git_repo, "manifests/tree.yaml", TREE)
    commit(git_repo, ALICE, "tree")
    apply(git_repo, db_url)
    db.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES ('ds-ingested', 'ingested', 'Ingested')")
    write(git_repo, "manifests/tree.yaml", TREE.replace("name: Readings", "name: Readings v2"))
    commit(git_repo, BOB, "rename readings")
    saved = tmp_path / "plan.json"
    data = save(git_repo, db_url, saved)
    smuggled = copy.deepcopy(data["changes"][0])
    smuggled.update(address="dataset:ingested", action="archive", desired=None)
    data["changes"].append(smuggled)
    saved.write_text(json.dumps(resealed(data)))
    before = catalog_dump(db)
    result = invoke(git_repo, db_url, "apply", "--plan", str(saved))
    assert result.exit_code == 1
    assert catalog_dump(db) == before
    assert db.execute("SELECT status FROM timestore.datasets WHERE slug = 'ingested'").fetchone() == ("active",)
    assert db.execute("SELECT count(*) FROM reconciler.managed_objects WHERE address = 'dataset:ingested'"
                      ).fetchone() == (0,)


def test_a_saved_plan_is_applied_from_its_commit_without_a_prompt_after_head_moved(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any], tmp_path: Path) -> None:
    write(git_repo, "manifests/tree.yaml", TREE)
    alice = commit(git_repo, ALICE, "tree")
    saved = tmp_path / "plan.json"
    save(git_repo, db_url, saved)
    write(git_repo, "manifests/tree.yaml", TREE.replace("name: Readings", "name: Not reviewed"))
    commit(git_repo, BOB, "a later commit nobody reviewed")
    result = invoke(git_repo, db_url, "apply", "--plan", str(saved))  # no --auto-approve, no terminal
    assert result.exit_code == 0, result.output
    assert db.execute("SELECT name FROM timestore.datasets WHERE slug = 'readings'").fetchone() == ("Readings",)
    assert db.execute("SELECT DISTINCT commit_sha FROM reconciler.audit_log").fetchall() == [(alice,)]


def test_a_saved_plan_of_uncommitted_work_is_refused(git_repo: Path, db_url: str, tmp_path: Path) -> None:
    write(git_repo, "manifests/tree.yaml", TREE)
    commit(git_repo, ALICE, "tree")
    write(git_repo, "manifests/tree.yaml", TREE.replace("name: Readings", "name: Draft"))
    saved = tmp_path / "plan.json"
    save(git_repo, db_url, saved)
    result = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--allow-uncommitted")
    assert result.exit_code == 1 and "uncommitted changes, which git does not hold" in result.output


def _leaves(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(node, dict):
        return [leaf for key, value in node.items() for leaf in _leaves(value, (*path, key))]
    if isinstance(node, list):
        return [leaf for index, value in enumerate(node) for leaf in _leaves(value, (*path, index))] or [path]
    return [path]


def _incidental(path: tuple[Any, ...], data: dict[str, Any]) -> bool:
    """Parts apply neither uses nor records: when the plan was made, what it noticed in passing,
    and the name of whoever computed it (apply records whoever applies)."""
    if path[0] in ("created_at", "digest", "unmanaged", "findings"):
        return True
    if path[0] == "changes" and len(path) >= 4 and path[2] == "author" and path[3] in ("name", "email"):
        return bool(data["changes"][path[1]]["author"]["applier"])
    return False


def _edit(value: Any) -> Any:
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, str):
        return value + "x"
    if value is None:
        return "x"
    return [*value, "x"] if isinstance(value, list) else None


@pytest.fixture
def applied_then_changed(git_repo: Path, db_url: str, tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A saved plan with a create, an update, an archive and a protect move."""
    write(git_repo, "manifests/tree.yaml", TREE)
    commit(git_repo, ALICE, "tree")
    apply(git_repo, db_url)
    changed = TREE.replace("name: Readings", "name: Readings v2\nprotect: true").replace("  - key: r2\n", "") \
        + "---\napiVersion: reconciler/v1\nkind: Record\nnamespace: fleet\nkey: r3\nowner: someone\n"
    write(git_repo, "manifests/tree.yaml", changed)
    commit(git_repo, BOB, "several changes")
    saved = tmp_path / "plan.json"
    return saved, save(git_repo, db_url, saved)


def test_every_single_field_edit_of_a_saved_plan_is_refused_and_writes_nothing(
        git_repo: Path, db_url: str, applied_then_changed: tuple[Path, dict[str, Any]]) -> None:
    saved, original = applied_then_changed
    assert {c["action"] for c in original["changes"]} == {"create", "update", "archive"}
    paths = [p for p in _leaves(original) if not _incidental(p, original)]

    @settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.sampled_from(paths))
    def check(path: tuple[Any, ...]) -> None:
        data = copy.deepcopy(original)
        node: Any = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = _edit(node[path[-1]])
        saved.write_text(json.dumps(resealed(data)))
        with psycopg.connect(db_url, autocommit=True) as db:
            before = catalog_dump(db)
            result = invoke(git_repo, db_url, "apply", "--plan", str(saved), "--allow-purge")
            assert result.exit_code == 1, (path, result.output)
            assert catalog_dump(db) == before, path

    check()
    # The untouched file applies.
    saved.write_text(json.dumps(original))
    assert invoke(git_repo, db_url, "apply", "--plan", str(saved)).exit_code == 0


def test_protection_cannot_be_lifted_and_used_in_one_apply(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/jewels.yaml", PROTECTED)
    commit(git_repo, ALICE, "protect")
    apply(git_repo, db_url)
    for edit in ("protect: false\npurge: true\n", "protect: false\nstatus: inactive\n"):
        write(git_repo, "manifests/jewels.yaml", PROTECTED.replace("protect: true\n", edit))
        commit(git_repo, BOB, "lift and use in one go")
        result = invoke(git_repo, db_url, "apply", "--auto-approve", "--allow-purge")
        assert result.exit_code == 1, result.output
        assert "protected in the catalog" in result.output and "lift protection first" in result.output
        assert db.execute("SELECT status FROM timestore.datasets WHERE slug = 'crown-jewels'").fetchone() \
            == ("active",)
    # Lifting on its own, then archiving, works.
    write(git_repo, "manifests/jewels.yaml", PROTECTED.replace("protect: true\n", "protect: false\n"))
    commit(git_repo, BOB, "lift")
    apply(git_repo, db_url)
    write(git_repo, "manifests/jewels.yaml", PROTECTED.replace("protect: true\n", "status: inactive\n"))
    commit(git_repo, BOB, "archive")
    apply(git_repo, db_url)
    assert db.execute("SELECT status FROM timestore.datasets WHERE slug = 'crown-jewels'").fetchone() \
        == ("inactive",)


def test_a_protect_flag_cleared_by_hand_is_detected_and_refused(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/jewels.yaml", PROTECTED)
    commit(git_repo, ALICE, "protect")
    apply(git_repo, db_url)
    db.execute("UPDATE reconciler.managed_objects SET protect = false WHERE address = 'dataset:crown-jewels'")
    (git_repo / "manifests" / "jewels.yaml").unlink()
    commit(git_repo, BOB, "remove it")
    words = ("its stored protect flag is off, but the audit chain last recorded protect: true (entry 1); "
             "the flag was changed outside apply — set it back, or lift protection through a commit")
    # The plan fails as its apply will, in the same words, rather than showing a clean archive.
    plan = invoke(git_repo, db_url, "plan", "--format", "json")
    assert plan.exit_code == 1
    errors = [f for f in json.loads(plan.stdout)["findings"] if f["severity"] == "error"]
    assert [(f["address"], f["message"]) for f in errors] == [("dataset:crown-jewels", words)]
    text = invoke(git_repo, db_url, "plan")
    assert text.exit_code == 1 and f"dataset:crown-jewels: {words}" in text.output
    result = invoke(git_repo, db_url, "apply", "--auto-approve")
    assert result.exit_code == 1, result.output
    shown, refused = result.output.split("apply refused; nothing was written:")
    assert shown.count(words) == 1 and refused.count(words) == 1  # the plan's error, then the refusal once
    assert db.execute("SELECT status FROM timestore.datasets WHERE slug = 'crown-jewels'").fetchone() \
        == ("active",)


def test_target_pulls_in_what_it_needs_and_refuses_what_matches_nothing(
        git_repo: Path, db_url: str, db: psycopg.Connection[Any]) -> None:
    write(git_repo, "manifests/tree.yaml", TREE)
    commit(git_repo, ALICE, "tree")
    result = invoke(git_repo, db_url, "apply", "--auto-approve", "--target", "record:fleet/r1")
    assert result.exit_code == 0, result.output
    # The record's dataset and the dataset's storage target came along: nothing dangles.
    assert db.execute("SELECT d.slug, s.name FROM timestore.datasets d JOIN timestore.storage_targets s "
                      "ON s.id = d.default_storage_target_id").fetchall() == [("readings", "lake")]
    again = json.loads(invoke(git_repo, db_url, "plan", "--format", "json").stdout)
    assert [c["address"] for c in again["changes"]] == ["record:fleet/r2"]  # no drift left behind
    nothing = invoke(git_repo, db_url, "plan", "--target", "dataset:no-such-thing")
    assert nothing.exit_code == 1 and "--target matches nothing" in nothing.output


def test_a_saved_plan_the_schema_refuses_is_named_where_it_fails(
        git_repo: Path, db_url: str, tmp_path: Path) -> None:
    write(git_repo, "manifests/tree.yaml", TREE)
    commit(git_repo, ALICE, "tree")
    saved = tmp_path / "plan.json"
    data = save(git_repo, db_url, saved)
    data["changes"][0]["action"] = "delete"
    saved.write_text(json.dumps(resealed(data)))
    result = invoke(git_repo, db_url, "apply", "--plan", str(saved))
    assert result.exit_code == 1
    assert f"{saved} is not a reconciler plan: changes[0].action: 'delete' is not one of" in result.output
    assert "unexpected" not in result.output
