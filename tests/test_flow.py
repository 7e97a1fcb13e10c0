"""The whole plan/apply flow — a git tree, attribution, the diff, refusals, the transaction and the
audit chain — run against each catalog behind the port: in memory (the unit tier, no server) and
PostgreSQL (the integration tier). Both must behave alike wherever the port promises it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from reconciler.app.applying import apply_plan, check_refusals
from reconciler.core.audit import Entry
from reconciler.app.planning import make_plan
from reconciler.app.workspace import Workspace
from reconciler.catalog.memory import MemoryCatalog
from reconciler.catalog.port import Catalog, CatalogState
from reconciler.core.chain import GENESIS
from reconciler.core.checks import ApplyOptions
from reconciler.core.plan import Plan
from reconciler.core.policy import parse_policy
from reconciler.errors import ConfigurationError, ConflictError, Refusal

from .helpers import ALICE, BOB, CAROL, commit, write

STORAGE = """\
apiVersion: reconciler/v1
kind: StorageTarget
name: lake
type: s3
description: The lake
config: {bucket: readings, secretKey: "${env:LAKE_SECRET}"}
"""

DATASET = """\
apiVersion: reconciler/v1
kind: Dataset
slug: readings
name: Readings
storageTarget: lake
metadata: {unit: celsius}
"""

RECORDS = """\
apiVersion: reconciler/v1
kind: RecordSet
namespace: obs
defaults: {owner: team-obs, tags: [iot]}
records:
  - key: sensor-1
    metadata: {datasetSlug: readings}
  - key: sensor-2
  - key: sensor-3
"""

SECRET = "s3cr3t-value-1234"
ENV = {"LAKE_SECRET": SECRET}


class Memory:
    """The in-memory catalog, and how someone outside the reconciler changes it."""

    def __init__(self) -> None:
        self.catalog = MemoryCatalog()

    def change_outside(self, address: str, field: str, value: Any) -> None:
        held = self.catalog.contents.objects[address]
        self.catalog.seed(address, held.kind, {**held.fields, field: value}, by="someone@example.com")

    def seed_dataset(self, slug: str, name: str) -> None:
        """A dataset made outside the reconciler: unmanaged."""
        self.catalog.seed(f"dataset:{slug}", "dataset", {"name": name, "description": None, "status": "active",
                                                         "storageTarget": None, "metadata": {}, "retention": None},
                          by="someone@example.com")

    def audit_rows(self) -> list[tuple[Any, ...]]:
        return list(self.catalog.contents.entries)

    def run_outcomes(self) -> list[str]:
        return [run[8] for run in self.catalog.contents.runs]


class Postgres:
    """A PostgreSQL catalog of the test's own, and how someone outside the reconciler changes it."""

    def __init__(self, url: str) -> None:
        from reconciler.catalog.postgres.catalog import PostgresCatalog

        self.url = url
        self.catalog = PostgresCatalog(url)

    def change_outside(self, address: str, field: str, value: Any) -> None:
        import psycopg

        assert address.startswith("record:") and field == "owner"
        namespace, key = address.removeprefix("record:").split("/")
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("UPDATE metastore.metastore_records SET owner = %s, version = version + 1, "
                         "updated_by = 'someone@example.com' WHERE namespace = %s AND record_key = %s",
                         (value, namespace, key))

    def seed_dataset(self, slug: str, name: str) -> None:
        """A dataset made outside the reconciler: unmanaged."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("INSERT INTO timestore.datasets (id, slug, name) VALUES (%s, %s, %s)",
                         (f"ds-{slug}", slug, name))

    def audit_rows(self) -> list[tuple[Any, ...]]:
        import psycopg

        from reconciler.catalog.postgres.audit_log import _SELECT_LIST
        from psycopg import sql

        with psycopg.connect(self.url, autocommit=True) as conn:
            query = sql.SQL("SELECT {} FROM reconciler.audit_log ORDER BY seq").format(_SELECT_LIST)
            return [tuple(row) for row in conn.execute(query)]

    def run_outcomes(self) -> list[str]:
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            return [o for (o,) in conn.execute("SELECT outcome FROM reconciler.runs ORDER BY started_at")]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> Iterator[Memory | Postgres]:
    if request.param == "memory":
        yield Memory()
    else:
        yield Postgres(request.getfixturevalue("db_url"))


def workspace(repo: Path, catalog: Catalog) -> Workspace:
    return Workspace(repo / "manifests", _repository(repo), "default", catalog)


def _repository(repo: Path) -> Any:
    from reconciler.git.repository import GitRepository

    return GitRepository.discover(repo / "manifests")


def plan(repo: Path, backend: Memory | Postgres, **kwargs: Any) -> Plan:
    return make_plan(workspace(repo, backend.catalog), environ=ENV, **kwargs)


def renamed_readings(old: str = "readings") -> str:
    """The dataset manifest renaming ``old`` to obs-readings, its other fields unchanged."""
    return DATASET.replace("slug: readings", f"slug: obs-readings\nrenamedFrom: {old}")


def apply(repo: Path, backend: Memory | Postgres, **options: Any) -> Plan:
    planned = plan(repo, backend)
    apply_plan(workspace(repo, backend.catalog), planned, ApplyOptions(**options), environ=ENV)
    return planned


def state(backend: Memory | Postgres) -> CatalogState:
    with backend.catalog.reading() as reader:
        return reader.state("default", ())


def actions(planned: Plan) -> dict[str, str]:
    return {c.address: c.action for c in planned.changes}


@pytest.fixture
def tree(git_repo: Path) -> Path:
    write(git_repo, "manifests/storage.yaml", STORAGE)
    write(git_repo, "manifests/datasets.yaml", DATASET)
    commit(git_repo, ALICE, "lake and readings")
    write(git_repo, "manifests/records.yaml", RECORDS)
    commit(git_repo, BOB, "sensors")
    return git_repo


def test_a_first_apply_creates_everything_and_names_each_commits_author(
        tree: Path, backend: Memory | Postgres) -> None:
    done = apply(tree, backend)
    assert actions(done) == {"storage-target:lake": "create", "dataset:readings": "create",
                             "record:obs/sensor-1": "create", "record:obs/sensor-2": "create",
                             "record:obs/sensor-3": "create"}
    live = state(backend).live
    assert live["record:obs/sensor-2"].fields["owner"] == "team-obs"
    assert live["dataset:readings"].fields["storageTarget"] == "lake"
    assert live["storage-target:lake"].fields["config"] == {"bucket": "readings", "secretKey": SECRET}
    entries = [Entry.from_row(*row) for row in backend.audit_rows()]
    assert {e.address: e.author_email for e in entries} == {
        "storage-target:lake": ALICE[1], "dataset:readings": ALICE[1], "record:obs/sensor-1": BOB[1],
        "record:obs/sensor-2": BOB[1], "record:obs/sensor-3": BOB[1]}
    # The chain: each entry's hash is computed from its body and the one before it.
    previous = GENESIS
    for entry in entries:
        assert entry.prev_hash == previous and entry.computed_hash() == entry.hash
        previous = entry.hash
    # The secret reached the catalog, and nothing the reconciler keeps.
    assert SECRET not in json.dumps([list(map(str, row)) for row in backend.audit_rows()])
    assert SECRET not in json.dumps(dict(state(backend).applied["storage-target:lake"].fields))
    assert backend.run_outcomes() == ["applied"]


def test_a_second_plan_finds_nothing_to_do(tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    again = plan(tree, backend)
    assert again.changes == () and again.bookkeeping == () and not again.errors


def test_edits_removals_and_returns_are_updates_archives_and_restores_by_their_authors(
        tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/records.yaml", RECORDS.replace("  - key: sensor-3\n", "")
          .replace("owner: team-obs", "owner: team-lab"))
    commit(tree, CAROL, "team-lab owns the sensors; sensor-3 retired")
    second = apply(tree, backend)
    assert actions(second) == {"record:obs/sensor-1": "update", "record:obs/sensor-2": "update",
                               "record:obs/sensor-3": "archive"}
    assert {a.email for a in second.authors.values()} == {CAROL[1]}
    assert state(backend).live["record:obs/sensor-3"].fields["deleted"] is True
    write(tree, "manifests/records.yaml", RECORDS.replace("owner: team-obs", "owner: team-lab"))
    commit(tree, ALICE, "sensor-3 is back")
    third = apply(tree, backend)
    assert actions(third) == {"record:obs/sensor-3": "restore"}
    assert third.author_of("record:obs/sensor-3").email == ALICE[1]
    assert state(backend).live["record:obs/sensor-3"].fields["deleted"] is False


def test_a_change_made_between_plan_and_apply_refuses_the_whole_apply(
        tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/records.yaml", RECORDS.replace("owner: team-obs", "owner: team-lab"))
    commit(tree, CAROL, "team-lab")
    planned = plan(tree, backend)
    backend.change_outside("record:obs/sensor-2", "owner", "intruder")
    before = state(backend).live
    with pytest.raises(ConflictError, match="record:obs/sensor-2 changed since the plan"):
        apply_plan(workspace(tree, backend.catalog), planned, ApplyOptions(), environ=ENV)
    after = state(backend).live
    assert {a: dict(o.fields) for a, o in after.items()} == {a: dict(o.fields) for a, o in before.items()}
    assert backend.run_outcomes() == ["applied", "refused"]


def test_a_purge_is_refused_without_its_flag_and_done_with_it(tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/records.yaml", RECORDS.replace("  - key: sensor-3\n", "  - key: sensor-3\n    purge: true\n"))
    commit(tree, BOB, "purge sensor-3")
    planned = plan(tree, backend)
    assert actions(planned) == {"record:obs/sensor-3": "purge"}
    with pytest.raises(Refusal, match="purge needs --allow-purge: record:obs/sensor-3"):
        check_refusals(workspace(tree, backend.catalog), planned, ApplyOptions())
    assert "record:obs/sensor-3" in state(backend).live
    apply_plan(workspace(tree, backend.catalog), planned, ApplyOptions(allow_purge=True), environ=ENV)
    assert "record:obs/sensor-3" not in state(backend).live
    assert "record:obs/sensor-3" not in state(backend).applied


def test_a_protected_object_is_not_archived(tree: Path, backend: Memory | Postgres) -> None:
    write(tree, "manifests/records.yaml", RECORDS.replace("  - key: sensor-3\n", "  - key: sensor-3\n    protect: true\n"))
    commit(tree, BOB, "protect sensor-3")
    apply(tree, backend)
    write(tree, "manifests/records.yaml", RECORDS.replace("  - key: sensor-3\n", ""))
    commit(tree, CAROL, "drop sensor-3")
    planned = plan(tree, backend)
    assert any(f.address == "record:obs/sensor-3" and f.severity == "error" for f in planned.findings)
    with pytest.raises(Refusal):
        apply_plan(workspace(tree, backend.catalog), planned, ApplyOptions(), environ=ENV)
    assert state(backend).live["record:obs/sensor-3"].fields["deleted"] is False


def test_a_failure_after_the_writes_leaves_the_catalog_as_it_was(tree: Path, backend: Memory | Postgres) -> None:
    key = {"RECONCILER_AUDIT_KEY": "k" * 32}
    first = plan(tree, backend)
    apply_plan(workspace(tree, backend.catalog), first, ApplyOptions(), environ={**ENV, **key})
    write(tree, "manifests/records.yaml", RECORDS.replace("owner: team-obs", "owner: team-lab"))
    commit(tree, CAROL, "team-lab")
    planned = plan(tree, backend)
    before = state(backend)
    # The log is keyed now: an apply without the key writes every change, then cannot append.
    with pytest.raises(ConfigurationError, match="nothing was applied"):
        apply_plan(workspace(tree, backend.catalog), planned, ApplyOptions(), environ=ENV)
    after = state(backend)
    assert {a: dict(o.fields) for a, o in after.live.items()} == {a: dict(o.fields) for a, o in before.live.items()}
    assert {a: dict(o.fields) for a, o in after.applied.items()} == \
        {a: dict(o.fields) for a, o in before.applied.items()}
    assert len(backend.audit_rows()) == len(first.changes)


def _verified(backend: Memory | Postgres) -> None:
    """The audit chain holds: every entry's hash from its body and the one before it."""
    previous = GENESIS
    for entry in (Entry.from_row(*row) for row in backend.audit_rows()):
        assert entry.prev_hash == previous and entry.computed_hash() == entry.hash
        previous = entry.hash


def test_a_renamed_dataset_and_storage_target_keep_their_objects_bookkeeping_and_history(
        tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/storage.yaml", STORAGE.replace("name: lake", "name: pond\nrenamedFrom: lake"))
    write(tree, "manifests/datasets.yaml", DATASET.replace("slug: readings", "slug: obs-readings\n"
                                                           "renamedFrom: readings")
          .replace("storageTarget: lake", "storageTarget: pond").replace("name: Readings", "name: Obs readings"))
    commit(tree, CAROL, "rename lake to pond, readings to obs-readings")
    planned = plan(tree, backend)
    assert not planned.errors
    assert actions(planned) == {"storage-target:pond": "rename", "dataset:obs-readings": "rename"}
    renamed = {c.address: c for c in planned.changes}
    assert renamed["dataset:obs-readings"].renamed_from == "dataset:readings"
    assert renamed["dataset:obs-readings"].fields == ("slug", "name")
    assert renamed["storage-target:pond"].fields == ("name",)
    assert planned.author_of("dataset:obs-readings").email == CAROL[1]
    assert planned.author_of("storage-target:pond").email == CAROL[1]
    # The record that links the old slug is named, so it can change in the same pull request.
    notes = [f.message for f in planned.findings if f.severity == "note" and f.address == "dataset:obs-readings"]
    assert len(notes) == 1 and "record:obs/sensor-1" in notes[0] and "datasetSlug: obs-readings" in notes[0]
    write(tree, "manifests/records.yaml", RECORDS.replace("datasetSlug: readings", "datasetSlug: obs-readings"))
    commit(tree, BOB, "sensor-1 follows the rename")
    planned = plan(tree, backend)
    assert actions(planned) == {"storage-target:pond": "rename", "dataset:obs-readings": "rename",
                                "record:obs/sensor-1": "update"}
    assert not [f for f in planned.findings if f.severity == "note"]
    assert planned.author_of("dataset:obs-readings").email == CAROL[1]
    apply_plan(workspace(tree, backend.catalog), planned, ApplyOptions(), environ=ENV)
    now = state(backend)
    assert "dataset:readings" not in now.live and "storage-target:lake" not in now.live
    assert now.live["dataset:obs-readings"].fields["name"] == "Obs readings"
    assert now.live["dataset:obs-readings"].fields["storageTarget"] == "pond"
    assert now.live["storage-target:pond"].fields["config"] == {"bucket": "readings", "secretKey": SECRET}
    assert set(now.applied) >= {"dataset:obs-readings", "storage-target:pond"}
    assert not {"dataset:readings", "storage-target:lake"} & set(now.applied)
    assert now.applied["storage-target:pond"].secret_paths == frozenset({"config.secretKey"})
    entries = [Entry.from_row(*row) for row in backend.audit_rows()]
    last = {e.address: e for e in entries[-3:]}
    assert last["dataset:obs-readings"].action == "rename"
    assert (last["dataset:obs-readings"].before or {})["slug"] == "readings"
    assert (last["dataset:obs-readings"].after or {})["slug"] == "obs-readings"
    _verified(backend)
    # Keeping renamedFrom is harmless, and so is removing it.
    again = plan(tree, backend)
    assert again.changes == () and again.bookkeeping == () and not again.errors
    write(tree, "manifests/storage.yaml", STORAGE.replace("name: lake", "name: pond"))
    write(tree, "manifests/datasets.yaml", DATASET.replace("slug: readings", "slug: obs-readings")
          .replace("storageTarget: lake", "storageTarget: pond").replace("name: Readings", "name: Obs readings"))
    commit(tree, ALICE, "renamedFrom served its purpose")
    after = plan(tree, backend)
    assert after.changes == () and not after.errors


def test_a_rename_is_refused_when_the_old_name_is_missing_elsewhere_or_the_new_one_is_taken(
        tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/datasets.yaml", renamed_readings("no-such-slug"))
    commit(tree, CAROL, "rename from nothing")
    missing = plan(tree, backend)
    assert [f.message for f in missing.errors] == [
        "cannot rename dataset:no-such-slug to dataset:obs-readings: dataset:no-such-slug does not exist in the "
        "catalog; remove renamedFrom to create dataset:obs-readings as a new object"]
    second = DATASET.replace("slug: readings", "slug: readings-copy")
    write(tree, "manifests/datasets.yaml", DATASET + "---\n" + second)
    commit(tree, CAROL, "a second dataset")
    apply(tree, backend)
    write(tree, "manifests/datasets.yaml", DATASET.replace("slug: readings", "slug: readings-copy\n"
                                                           "renamedFrom: readings"))
    commit(tree, CAROL, "rename onto a taken slug")
    taken = plan(tree, backend)
    assert any("dataset:readings-copy already exists in the catalog" in f.message for f in taken.errors)
    with pytest.raises(Refusal):
        apply_plan(workspace(tree, backend.catalog), taken, ApplyOptions(), environ=ENV)
    assert "dataset:readings" in state(backend).live


def test_a_rename_of_another_sources_object_is_refused(tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    other = Workspace(tree / "manifests", _repository(tree), "team-b", backend.catalog)
    write(tree, "manifests/datasets.yaml", renamed_readings())
    commit(tree, CAROL, "rename")
    planned = make_plan(other, environ=ENV)
    assert any(f.message.startswith("cannot rename dataset:readings to dataset:obs-readings: dataset:readings is "
                                    "managed by source 'default'") for f in planned.errors)


def test_a_protected_object_may_be_renamed_and_stays_protected(tree: Path, backend: Memory | Postgres) -> None:
    write(tree, "manifests/datasets.yaml", DATASET + "protect: true\n")
    commit(tree, ALICE, "protect readings")
    apply(tree, backend)
    write(tree, "manifests/datasets.yaml", DATASET.replace("slug: readings", "slug: obs-readings\n"
                                                           "renamedFrom: readings") + "protect: true\n")
    commit(tree, CAROL, "rename the protected dataset")
    planned = apply(tree, backend)
    assert actions(planned) == {"dataset:obs-readings": "rename"} and not planned.errors
    assert "dataset:obs-readings" in state(backend).live and "dataset:readings" not in state(backend).live
    # Its protection moved with it: taking the manifest out archives nothing.
    (tree / "manifests/datasets.yaml").unlink()
    write(tree, "manifests/records.yaml", RECORDS.replace("    metadata: {datasetSlug: readings}\n", ""))
    commit(tree, CAROL, "drop the dataset")
    dropped = plan(tree, backend)
    assert "dataset:obs-readings" not in actions(dropped)
    assert any(f.address == "dataset:obs-readings" and "protect" in f.message for f in dropped.findings)


def test_a_rename_needs_the_policy_on_the_old_name_as_well_as_the_new(
        tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/datasets.yaml", renamed_readings())
    commit(tree, CAROL, "take readings into obs-*")

    def planned_under(datasets: list[str]) -> Plan:
        grants = {"grants": [{"authors": ["*@example.com"], "scopes": ["timestore:admin", "metastore:write"],
                              "datasets": datasets}]}
        ws = Workspace(tree / "manifests", _repository(tree), "default", backend.catalog,
                       policy=parse_policy(grants, "reconciler.yaml"))
        return make_plan(ws, environ=ENV)

    # A grant on obs-* alone does not let its holder take readings over by renaming it into obs-*.
    taken = planned_under(["obs-*"])
    assert [(f.address, f.message) for f in taken.errors] == [
        ("dataset:obs-readings", "policy: carol@example.com may not rename it: needs scope timestore:admin for "
                                 "dataset readings (reconciler.yaml policy)")]
    with pytest.raises(Refusal):
        apply_plan(workspace(tree, backend.catalog), taken, ApplyOptions(), environ=ENV)
    assert [(f.address, f.message) for f in planned_under(["readings"]).errors] == [
        ("dataset:obs-readings", "policy: carol@example.com may not rename it: needs scope timestore:admin for "
                                 "dataset obs-readings (reconciler.yaml policy)")]
    both = planned_under(["obs-*", "readings"])
    assert not both.errors and actions(both) == {"dataset:obs-readings": "rename"}


def test_a_rename_of_an_unmanaged_object_adopts_it_under_its_new_name(
        tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    backend.seed_dataset("legacy-readings", "Legacy readings")
    assert "dataset:legacy-readings" in plan(tree, backend).unmanaged
    write(tree, "manifests/legacy.yaml", DATASET.replace("slug: readings", "slug: archive-readings\n"
                                                         "renamedFrom: legacy-readings")
          .replace("name: Readings", "name: Legacy readings"))
    commit(tree, CAROL, "adopt and rename the legacy dataset")
    planned = plan(tree, backend)
    renamed = {c.address: c for c in planned.changes}["dataset:archive-readings"]
    assert (renamed.action, renamed.reason, renamed.renamed_from) == ("rename", "adoption", "dataset:legacy-readings")
    apply_plan(workspace(tree, backend.catalog), planned, ApplyOptions(), environ=ENV)
    now = state(backend)
    assert "dataset:legacy-readings" not in now.live and now.applied["dataset:archive-readings"].source == "default"
    assert plan(tree, backend).changes == ()


def test_a_rename_can_be_the_target_of_a_plan_by_its_new_name(tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/datasets.yaml", renamed_readings())
    write(tree, "manifests/records.yaml", RECORDS.replace("key: sensor-2", "key: sensor-2\n    owner: else"))
    commit(tree, CAROL, "rename, and one more change")
    narrowed = plan(tree, backend, targets=("dataset:obs-readings",))
    assert actions(narrowed) == {"dataset:obs-readings": "rename"}
    apply_plan(workspace(tree, backend.catalog), narrowed, ApplyOptions(), environ=ENV)
    now = state(backend)
    assert "dataset:obs-readings" in now.live and "dataset:readings" not in now.live
    assert now.live["record:obs/sensor-2"].fields["owner"] == "team-obs"  # outside the target: untouched


def test_a_saved_rename_plan_applies_once_re_derived(tree: Path, backend: Memory | Postgres) -> None:
    apply(tree, backend)
    write(tree, "manifests/datasets.yaml", renamed_readings())
    commit(tree, CAROL, "rename")
    saved = Plan.from_json(json.loads(json.dumps(plan(tree, backend).to_json())))
    assert saved.changes[0].renamed_from == "dataset:readings"
    assert saved.digest() == plan(tree, backend).digest()
    apply_plan(workspace(tree, backend.catalog), saved, ApplyOptions(), environ=ENV)
    assert "dataset:obs-readings" in state(backend).live and "dataset:readings" not in state(backend).live
