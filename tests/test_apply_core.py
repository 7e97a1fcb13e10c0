"""Apply on a real PostgreSQL, driven by plain desired values (the tree loader is tested elsewhere)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.services.datasets import get_dataset as _get_dataset
from reconciler.catalog.postgres.locks import lock_source, register_source
from reconciler.services.rows import DatasetRow
from reconciler.catalog.postgres.reading import read_state
from reconciler.core.diff import Desired, Location, diff
from reconciler.app.applying import apply_plan
from reconciler.app.workspace import Workspace
from reconciler.catalog.postgres.catalog import PostgresCatalog
from reconciler.core.checks import ApplyOptions
from reconciler.errors import Refusal
from reconciler.errors import ConflictError, LockTimeout
from reconciler.core.plan import Author, Plan, from_diff

from .helpers import dataset_snapshot

ALICE = Author("Alice", "alice@example.com", "a" * 40)


def get_dataset(db: psycopg.Connection[Any], slug: str) -> DatasetRow:
    row = _get_dataset(db, slug)
    assert row is not None
    return row


def loc(line: int = 1) -> Location:
    return Location("manifests/catalog.yaml", line, line + 4)


def st(name: str = "ch", **fields: Any) -> Desired:
    return Desired(f"storage-target:{name}", "storage-target", {"type": "clickhouse", **fields}, loc())


def ds(slug: str, protect: bool = False, purge: bool = False, **fields: Any) -> Desired:
    return Desired(f"dataset:{slug}", "dataset", {"name": slug.title(), **fields}, loc(10), protect, purge)


def rec(ns: str, key: str, protect: bool = False, purge: bool = False, **fields: Any) -> Desired:
    return Desired(f"record:{ns}/{key}", "record", fields, loc(20), protect, purge)


def make(db_url: str, objects: list[Desired], source: str = "default") -> Plan:
    with psycopg.connect(db_url, autocommit=True) as conn:
        state = read_state(conn)
    desired = {d.address: d for d in objects}
    result = diff(desired, state.live, state.applied, source=source)
    authors = {c.address: ALICE for c in result.changes}
    return from_diff(result, source=source, commit="a" * 40, dirty=False, created_at="2026-11-21T00:00:00Z",
                     authors=authors, secrets={})


def ws(db_url: str, source: str = "default") -> Workspace:
    return Workspace(Path("manifests"), None, source, PostgresCatalog(db_url))


def apply(db_url: str, objects: list[Desired], source: str = "default", **options: Any) -> Plan:
    plan = make(db_url, objects, source)
    apply_plan(ws(db_url, source), plan, ApplyOptions(**options))
    return plan


CATALOG = [
    st("ch", description="ClickHouse", config={"host": "ch.internal"}),
    ds("readings", storageTarget="ch", metadata={"iam": {"readScopes": ["timestore:read"]}},
       retention={"mode": "time", "rules": {"maxAgeHours": 720}}),
    rec("obs", "sensor-1", owner="team-obs", tags=["iot", "raw"], metadata={"datasetSlug": "readings"}),
    rec("obs", "sensor-2", owner="team-obs", metadata={"unit": "kelvin"}),
]


def test_first_apply_creates_everything_with_audit_rows(db_url: str, db: psycopg.Connection[Any]) -> None:
    plan = apply(db_url, CATALOG)
    assert plan.summary == {"create": 4, "update": 0, "archive": 0, "restore": 0, "purge": 0}
    assert db.execute("SELECT id, kind, config FROM timestore.storage_targets").fetchall() == [
        ("st-ch", "clickhouse", {"host": "ch.internal"})]
    row = db.execute("SELECT d.id, d.name, d.default_storage_target_id, d.metadata, r.policy FROM timestore.datasets d "
                     "JOIN timestore.dataset_retention_policies r ON r.dataset_id = d.id").fetchone()
    assert row is not None and row[0].startswith("ds-") and row[1:] == (
        "Readings", "st-ch", {"iam": {"readScopes": ["timestore:read"]}},
        {"mode": "time", "rules": {"maxAgeHours": 720}})
    assert db.execute("SELECT action, actor_id, success FROM timestore.dataset_access_audit").fetchall() == [
        ("admin.dataset.created", "alice@example.com", True)]
    assert db.execute("SELECT event_type FROM timestore.lifecycle_audit_log").fetchall() == [
        ("admin.retention.updated",)]
    records = db.execute("SELECT namespace, record_key, owner, tags, version, created_by, updated_by "
                         "FROM metastore.metastore_records ORDER BY record_key").fetchall()
    assert records == [("obs", "sensor-1", "team-obs", ["iot", "raw"], 1, "alice@example.com", "alice@example.com"),
                       ("obs", "sensor-2", "team-obs", [], 1, "alice@example.com", "alice@example.com")]
    audits = db.execute("SELECT record_key, action, actor, version FROM metastore.metastore_record_audits "
                        "ORDER BY record_key").fetchall()
    assert audits == [("sensor-1", "create", "alice@example.com", 1), ("sensor-2", "create", "alice@example.com", 1)]
    managed = db.execute("SELECT address, source FROM reconciler.managed_objects ORDER BY address").fetchall()
    assert [m[0] for m in managed] == sorted(d.address for d in CATALOG)


def test_second_apply_changes_nothing_and_writes_no_audit(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, CATALOG)
    counts = db.execute("SELECT (SELECT count(*) FROM timestore.dataset_access_audit),"
                        " (SELECT count(*) FROM metastore.metastore_record_audits),"
                        " (SELECT max(updated_at) FROM timestore.datasets)").fetchone()
    again = make(db_url, CATALOG)
    assert again.changes == () and again.bookkeeping == ()
    apply_plan(ws(db_url), again, ApplyOptions())
    assert counts == db.execute("SELECT (SELECT count(*) FROM timestore.dataset_access_audit),"
                                " (SELECT count(*) FROM metastore.metastore_record_audits),"
                                " (SELECT max(updated_at) FROM timestore.datasets)").fetchone()


def test_update_archive_restore_and_record_versions(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, CATALOG)
    step2 = [CATALOG[0], ds("readings", storageTarget="ch", description="Minute readings",
                            metadata={"iam": {"readScopes": ["timestore:read"]}},
                            retention={"mode": "time", "rules": {"maxAgeHours": 720}}),
             rec("obs", "sensor-1", owner="team-obs", tags=["iot"], metadata={"datasetSlug": "readings"})]
    before = get_dataset(db, "readings")
    plan = apply(db_url, step2)
    assert plan.summary == {"create": 0, "update": 2, "archive": 1, "restore": 0, "purge": 0}
    audit = db.execute("SELECT action, metadata FROM timestore.dataset_access_audit ORDER BY created_at").fetchall()
    (run_id,) = db.execute("SELECT run_id FROM reconciler.runs ORDER BY seq DESC LIMIT 1").fetchone() or ("",)
    # The services' shape, with the reconciler's run id in the free-form metadata.
    assert audit[-1] == ("admin.dataset.updated", {"before": dataset_snapshot(before),
                                                   "after": dataset_snapshot(get_dataset(db, "readings")),
                                                   "fieldsChanged": ["description"], "reconcilerRunId": run_id})
    rows = db.execute("SELECT record_key, tags, version, deleted_at IS NOT NULL FROM metastore.metastore_records "
                      "ORDER BY record_key").fetchall()
    assert rows == [("sensor-1", ["iot"], 2, False), ("sensor-2", [], 2, True)]
    last = db.execute("SELECT action, previous_version, version, previous_tags, tags FROM "
                      "metastore.metastore_record_audits WHERE record_key = 'sensor-1' ORDER BY id DESC").fetchone()
    assert last == ("update", 1, 2, ["iot", "raw"], ["iot"])
    deleted = db.execute("SELECT action, actor FROM metastore.metastore_record_audits WHERE record_key = 'sensor-2' "
                         "ORDER BY id DESC").fetchone()
    assert deleted == ("delete", "alice@example.com")
    # Declaring it again restores it.
    plan = apply(db_url, [*step2, CATALOG[3]])
    assert [(c.address, c.action) for c in plan.changes] == [("record:obs/sensor-2", "restore")]
    assert db.execute("SELECT version, deleted_at FROM metastore.metastore_records WHERE record_key = 'sensor-2'"
                      ).fetchone() == (3, None)


def test_ingestion_keys_survive_and_foreign_keys_are_kept(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, CATALOG)
    db.execute("UPDATE timestore.datasets SET metadata = metadata || '{\"tableName\": \"readings_v1\"}'")
    plan = make(db_url, CATALOG)
    assert plan.changes == ()
    changed = [CATALOG[0], ds("readings", storageTarget="ch", metadata={"owner": "obs"},
                              retention={"mode": "time", "rules": {"maxAgeHours": 720}})]
    apply(db_url, changed + CATALOG[2:])
    assert db.execute("SELECT metadata FROM timestore.datasets").fetchone() == (
        {"owner": "obs", "tableName": "readings_v1"},)


def test_drift_is_reverted(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, CATALOG)
    db.execute("UPDATE metastore.metastore_records SET owner = 'hand', version = version + 1, updated_by = 'bob@x' "
               "WHERE record_key = 'sensor-1'")
    plan = make(db_url, CATALOG)
    (change,) = plan.changes
    assert change.drift == ("owner",)
    assert any(f.severity == "drift" and "bob@x" in f.message for f in plan.findings)
    apply_plan(ws(db_url), plan, ApplyOptions())
    assert db.execute("SELECT owner, version FROM metastore.metastore_records WHERE record_key = 'sensor-1'"
                      ).fetchone() == ("team-obs", 3)


def test_stale_plan_is_refused_with_nothing_written(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, CATALOG)
    plan = make(db_url, [*CATALOG[:2], rec("obs", "sensor-1", owner="new-owner"), CATALOG[3]])
    db.execute("UPDATE metastore.metastore_records SET version = version + 1, updated_by = 'svc@x' "
               "WHERE record_key = 'sensor-1'")
    before = db.execute("SELECT count(*) FROM metastore.metastore_record_audits").fetchone()
    with pytest.raises(ConflictError, match=r"record:obs/sensor-1 changed since the plan by svc@x"):
        apply_plan(ws(db_url), plan, ApplyOptions())
    assert db.execute("SELECT owner FROM metastore.metastore_records WHERE record_key = 'sensor-1'"
                      ).fetchone() == ("team-obs",)
    assert before == db.execute("SELECT count(*) FROM metastore.metastore_record_audits").fetchone()


def test_create_refused_when_someone_created_it_meanwhile(db_url: str, db: psycopg.Connection[Any]) -> None:
    plan = make(db_url, CATALOG)
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key) VALUES ('obs', 'sensor-2')")
    with pytest.raises(ConflictError, match="record:obs/sensor-2 was created since the plan"):
        apply_plan(ws(db_url), plan, ApplyOptions())
    assert db.execute("SELECT count(*) FROM timestore.datasets").fetchone() == (0,)


def test_purge_needs_allow_purge_and_follows_the_services_purge(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, CATALOG)
    purge = [CATALOG[0], ds("readings", purge=True), rec("obs", "sensor-1", purge=True), CATALOG[3]]
    plan = make(db_url, purge)
    with pytest.raises(Refusal, match=r"purge needs --allow-purge: dataset:readings, record:obs/sensor-1"):
        apply_plan(ws(db_url), plan, ApplyOptions())
    assert db.execute("SELECT count(*) FROM timestore.datasets").fetchone() == (1,)
    apply_plan(ws(db_url), plan, ApplyOptions(allow_purge=True))
    assert db.execute("SELECT count(*) FROM timestore.datasets").fetchone() == (0,)
    assert db.execute("SELECT dataset_slug, action, dataset_id FROM timestore.dataset_access_audit "
                      "ORDER BY created_at").fetchall() == [
        ("readings", "admin.dataset.created", None), ("readings", "admin.dataset.purged", None)]
    # The metastore's purge: the key's audit rows go, none is written; the other record's stay.
    assert db.execute("SELECT action FROM metastore.metastore_record_audits WHERE record_key = 'sensor-1' "
                      "ORDER BY id").fetchall() == []
    assert db.execute("SELECT action FROM metastore.metastore_record_audits WHERE record_key = 'sensor-2' "
                      "ORDER BY id").fetchall() == [("create",)]
    # The reconciler's own audit log keeps the purge and the history before it.
    assert db.execute("SELECT action FROM reconciler.audit_log WHERE address = 'record:obs/sensor-1' "
                      "ORDER BY seq").fetchall() == [("create",), ("purge",)]
    assert db.execute("SELECT count(*) FROM reconciler.managed_objects WHERE address IN "
                      "('dataset:readings', 'record:obs/sensor-1')").fetchone() == (0,)


def test_protected_object_cannot_be_archived_after_its_manifest_is_removed(db_url: str) -> None:
    apply(db_url, [*CATALOG[:3], rec("obs", "sensor-2", protect=True, owner="team-obs")])
    plan = make(db_url, CATALOG[:3])
    assert plan.changes == ()
    assert [e.address for e in plan.errors] == ["record:obs/sensor-2"]
    with pytest.raises(Refusal, match="record:obs/sensor-2: its manifest was removed but it is protected"):
        apply_plan(ws(db_url), plan, ApplyOptions())


def test_mass_archive_breaker(db_url: str, db: psycopg.Connection[Any]) -> None:
    many = [rec("bulk", f"k{i:03}", owner="x") for i in range(60)]
    apply(db_url, many)
    plan = make(db_url, many[:50])  # 10 of 60 archived: > 10% and > 5
    with pytest.raises(Refusal, match="--allow-mass-archive 10"):
        apply_plan(ws(db_url), plan, ApplyOptions())
    with pytest.raises(Refusal):
        apply_plan(ws(db_url), plan, ApplyOptions(allow_mass_archive=9))
    apply_plan(ws(db_url), plan, ApplyOptions(allow_mass_archive=10))
    assert db.execute("SELECT count(*) FROM metastore.metastore_records WHERE deleted_at IS NOT NULL").fetchone() == (10,)


def test_sources_do_not_touch_each_others_objects(db_url: str, db: psycopg.Connection[Any]) -> None:
    apply(db_url, [rec("a", "one", owner="team-a")], source="team-a")
    plan_b = make(db_url, [rec("b", "two", owner="team-b")], source="team-b")
    assert [c.address for c in plan_b.changes] == ["record:b/two"]
    assert plan_b.unmanaged == ()  # team-a's record is neither unmanaged nor archived
    apply_plan(ws(db_url, "team-b"), plan_b, ApplyOptions())
    clash = make(db_url, [rec("a", "one", owner="team-b")], source="team-b")
    assert "managed by source 'team-a'" in clash.errors[0].message


def test_second_apply_of_the_same_source_times_out_naming_the_holder(db_url: str) -> None:
    holder = psycopg.connect(db_url, application_name="reconciler apply 1234abcd carol")
    register_source(holder, "default", 1)  # as an apply does, before its transaction
    with holder.transaction():
        lock_source(holder, "default", 1)
        plan = make(db_url, CATALOG)
        with pytest.raises(LockTimeout, match=r"another apply of source 'default' is running \(held by "
                                              r"reconciler apply 1234abcd carol"):
            apply_plan(ws(db_url), plan, ApplyOptions(lock_timeout=0.5))
    holder.close()


def test_two_concurrent_applies_serialise_and_the_loser_fails_cleanly(db_url: str, db: psycopg.Connection[Any]) -> None:
    plans = [make(db_url, CATALOG), make(db_url, CATALOG)]
    outcomes: list[str] = []

    def run(plan: Plan) -> None:
        try:
            apply_plan(ws(db_url), plan, ApplyOptions(lock_timeout=30))
            outcomes.append("applied")
        except ConflictError as error:
            outcomes.append(str(error))

    threads = [threading.Thread(target=run, args=(p,)) for p in plans]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[0] == "applied" and "was created since the plan" in sorted(outcomes)[1]
    assert db.execute("SELECT count(*) FROM metastore.metastore_records").fetchone() == (2,)
    assert db.execute("SELECT count(*) FROM metastore.metastore_record_audits").fetchone() == (2,)


def test_adopting_an_object_created_by_ingestion_keeps_its_id_and_foreign_keys(db_url: str,
                                                                               db: psycopg.Connection[Any]) -> None:
    db.execute("INSERT INTO timestore.storage_targets (id, name, kind) VALUES ('st-ch', 'ch', 'clickhouse')")
    db.execute("INSERT INTO timestore.datasets (id, slug, name, default_storage_target_id, metadata) "
               "VALUES ('ds-ingested', 'readings', 'Readings', 'st-ch', '{\"tableName\": \"t\"}')")
    db.execute("INSERT INTO timestore.dataset_manifests (id, dataset_id, version, status) "
               "VALUES ('dm-1', 'ds-ingested', 1, 'published')")
    plan = make(db_url, [st("ch"), ds("readings", storageTarget="ch", metadata={"owner": "obs"})])
    assert [(c.address, c.fields) for c in plan.changes] == [("dataset:readings", ("metadata",))]
    assert [b.address for b in plan.bookkeeping] == ["storage-target:ch"]
    apply_plan(ws(db_url), plan, ApplyOptions())
    assert db.execute("SELECT id, metadata FROM timestore.datasets").fetchone() == (
        "ds-ingested", {"tableName": "t", "owner": "obs"})
    assert db.execute("SELECT dataset_id FROM timestore.dataset_manifests").fetchone() == ("ds-ingested",)
    assert db.execute("SELECT count(*) FROM reconciler.managed_objects").fetchone() == (2,)
    assert make(db_url, [st("ch"), ds("readings", storageTarget="ch", metadata={"owner": "obs"})]).changes == ()


def test_a_namespace_holding_a_slash_is_never_mistaken_for_another_record(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    # The metastore allows "/" in a namespace; an address cannot hold one (record:<ns>/<key>).
    db.execute("INSERT INTO metastore.metastore_records (namespace, record_key, owner) VALUES ('a/b', 'c', 'svc')")
    plan = make(db_url, [rec("a", "b/c", owner="team")])
    assert [(c.address, c.action) for c in plan.changes] == [("record:a/b/c", "create")]
    assert plan.unmanaged == ()
    apply_plan(ws(db_url), plan, ApplyOptions())
    assert db.execute("SELECT namespace, record_key, owner FROM metastore.metastore_records ORDER BY namespace"
                      ).fetchall() == [("a", "b/c", "team"), ("a/b", "c", "svc")]


def test_apply_reports_record_progress(db_url: str) -> None:
    many = [rec("bulk", f"k{i:05}", owner="x") for i in range(5_000)]
    seen: list[tuple[int, int]] = []
    apply_plan(ws(db_url), make(db_url, many), ApplyOptions(), advance=lambda done, total: seen.append((done, total)))
    assert seen == [(2_000, 5_000), (4_000, 5_000), (5_000, 5_000)]


def test_record_progress_ends_once_on_a_multiple_of_the_step(db_url: str) -> None:
    many = [rec("bulk", f"k{i:05}", owner="x") for i in range(4_000)]
    seen: list[tuple[int, int]] = []
    apply_plan(ws(db_url), make(db_url, many), ApplyOptions(), advance=lambda done, total: seen.append((done, total)))
    assert seen == [(2_000, 4_000), (4_000, 4_000)]


def test_dataset_audit_payloads_have_the_shape_the_repository_layer_writes(
        db_url: str, db: psycopg.Connection[Any]) -> None:
    from reconciler.services.datasets import create_dataset

    apply(db_url, CATALOG)
    with psycopg.connect(db_url) as conn:
        create_dataset(conn, slug="by-ingestion", name="By ingestion", actor="svc@x")
    created = dict(db.execute("SELECT dataset_slug, metadata FROM timestore.dataset_access_audit "
                              "WHERE action = 'admin.dataset.created'").fetchall())
    ours, theirs = created["readings"], created["by-ingestion"]
    # The services' shape; the reconciler adds its run id, so each row can be matched with its log.
    assert set(ours) == set(theirs) | {"reconcilerRunId"} == {"request", "dataset", "idempotencyKey", "created",
                                                              "reconcilerRunId"}
    assert (ours["reconcilerRunId"],) == db.execute("SELECT run_id FROM reconciler.runs").fetchone()
    assert set(ours["dataset"]) == set(theirs["dataset"]) and set(ours["request"]) == set(theirs["request"])
    assert ours["dataset"] == dataset_snapshot(get_dataset(db, "readings"))
    assert ours["request"] == {"slug": "readings", "name": "Readings", "description": None, "status": "active",
                               "writeFormat": "clickhouse", "defaultStorageTargetId": "st-ch",
                               "metadata": {"iam": {"readScopes": ["timestore:read"]}}}
    assert ours["created"] is True and ours["idempotencyKey"] is None
    apply(db_url, [CATALOG[0], ds("readings", purge=True)], allow_purge=True)
    (purged,) = db.execute("SELECT metadata FROM timestore.dataset_access_audit "
                           "WHERE action = 'admin.dataset.purged'").fetchone() or (None,)
    assert purged["dataset"]["slug"] == "readings"
    assert purged["retentionPolicy"] == {"mode": "time", "rules": {"maxAgeHours": 720}}
