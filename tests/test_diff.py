"""The pure diff, with plain values: no database, git or terminal."""

from __future__ import annotations

from typing import Any

from reconciler.core.diff import Applied, Desired, Live, Location, diff, same

LOC = Location("manifests/datasets.yaml", 3, 9)


def ds(slug: str = "readings", **fields: Any) -> Desired:
    return Desired(f"dataset:{slug}", "dataset", {"name": "Readings", **fields}, LOC,
                   protect=fields.pop("_protect", False) if "_protect" in fields else False)


def desired(address: str, kind: str, protect: bool = False, purge: bool = False, **fields: Any) -> Desired:
    return Desired(address, kind, fields, LOC, protect=protect, purge=purge)


def live(address: str, kind: str, token: str = "t1", **fields: Any) -> Live:
    base: dict[str, Any]
    if kind == "dataset":
        base = {"name": "Readings", "description": None, "status": "active", "storageTarget": None,
                "metadata": {}, "retention": None}
    elif kind == "record":
        base = {"owner": None, "tags": [], "schemaHash": None, "metadata": {}, "deleted": False}
    else:
        base = {"type": "clickhouse", "description": None, "config": {}}
    base.update(fields)
    return Live(address, kind, base, token, updated_at="2026-11-20T10:00:00.000Z", updated_by="svc@x")


def applied(address: str, kind: str, source: str = "default", protect: bool = False, **fields: Any) -> Applied:
    return Applied(address, kind, source, fields, protect=protect, commit="abc", path=LOC.path, line=3, end_line=9)


A = "dataset:readings"
R = "record:obs/sensor-1"


def test_create_when_not_in_catalog() -> None:
    result = diff({A: desired(A, "dataset", name="Readings")}, {}, {}, source="default")
    (change,) = result.changes
    assert change.action == "create" and change.before is None and change.against is None
    assert change.after == {"name": "Readings", "description": None, "status": "active",
                            "storageTarget": None, "metadata": {}, "retention": None}


def test_nothing_to_do_when_equal_and_already_managed() -> None:
    want = desired(A, "dataset", name="Readings")
    result = diff({A: want}, {A: live(A, "dataset")}, {A: applied(A, "dataset", name="Readings")},
                  source="default")
    assert result.changes == () and result.bookkeeping == () and result.findings == ()


def test_update_lists_changed_fields_only() -> None:
    want = desired(A, "dataset", name="Readings v2", description="Minute readings")
    result = diff({A: want}, {A: live(A, "dataset")}, {A: applied(A, "dataset", name="Readings")},
                  source="default")
    (change,) = result.changes
    assert change.action == "update"
    assert change.fields == ("name", "description")
    assert change.against == "t1"


def test_three_way_merge_keeps_foreign_keys_and_removes_dropped_ones() -> None:
    want = desired(A, "dataset", name="Readings", metadata={"unit": "celsius"})
    have = live(A, "dataset", metadata={"unit": "kelvin", "tableName": "readings_v1", "old": 1})
    done = applied(A, "dataset", name="Readings", metadata={"unit": "kelvin", "old": 1})
    (change,) = diff({A: want}, {A: have}, {A: done}, source="default").changes
    assert change.after is not None
    assert change.after["metadata"] == {"unit": "celsius", "tableName": "readings_v1"}
    assert change.fields == ("metadata",)


def test_foreign_keys_alone_never_make_a_diff() -> None:
    want = desired(A, "dataset", name="Readings", metadata={"unit": "celsius"})
    have = live(A, "dataset", metadata={"unit": "celsius", "tableName": "t", "timestampColumn": "ts"})
    done = applied(A, "dataset", name="Readings", metadata={"unit": "celsius"})
    assert diff({A: want}, {A: have}, {A: done}, source="default").changes == ()


def test_tags_compare_as_a_set_and_key_order_is_ignored() -> None:
    want = desired(R, "record", tags=["raw", "iot"], metadata={"b": 1, "a": {"y": 2, "x": 1}})
    have = live(R, "record", tags=["iot", "raw"], metadata={"a": {"x": 1, "y": 2}, "b": 1.0})
    done = applied(R, "record", tags=["raw", "iot"], metadata={"b": 1, "a": {"y": 2, "x": 1}})
    assert diff({R: want}, {R: have}, {R: done}, source="default").changes == ()


def test_true_is_not_one() -> None:
    assert not same("metadata", {"flag": True}, {"flag": 1})


def test_removed_manifest_archives_never_purges() -> None:
    result = diff({}, {A: live(A, "dataset")}, {A: applied(A, "dataset", name="Readings")}, source="default")
    (change,) = result.changes
    assert change.action == "archive"
    assert change.after is not None and change.after["status"] == "inactive"
    assert change.fields == ("status",)


def test_removed_record_is_soft_deleted_and_archived_one_is_left_alone() -> None:
    (change,) = diff({}, {R: live(R, "record")}, {R: applied(R, "record")}, source="default").changes
    assert change.action == "archive" and change.fields == ("deleted",)
    assert diff({}, {R: live(R, "record", deleted=True)}, {R: applied(R, "record")}, source="default").changes == ()


def test_protected_object_removed_from_the_tree_is_an_error_not_an_archive() -> None:
    result = diff({}, {A: live(A, "dataset")}, {A: applied(A, "dataset", protect=True)}, source="default")
    assert result.changes == ()
    (finding,) = result.findings
    assert finding.severity == "error" and "protected" in finding.message


def test_protect_blocks_archive_until_an_apply_has_lifted_it() -> None:
    blocked = diff({A: desired(A, "dataset", protect=True, name="Readings", status="inactive")},
                   {A: live(A, "dataset")}, {A: applied(A, "dataset", protect=True, name="Readings")},
                   source="default")
    assert blocked.changes == () and blocked.findings[0].severity == "error"
    # The same commit lifting protection does not make the archive possible: the stored flag decides.
    same_commit = diff({A: desired(A, "dataset", protect=False, name="Readings", status="inactive")},
                       {A: live(A, "dataset")}, {A: applied(A, "dataset", protect=True, name="Readings")},
                       source="default")
    assert same_commit.changes == ()
    assert "lift protection first" in same_commit.findings[0].message
    # Once an apply has lifted it, the archive goes through.
    allowed = diff({A: desired(A, "dataset", protect=False, name="Readings", status="inactive")},
                   {A: live(A, "dataset")}, {A: applied(A, "dataset", protect=False, name="Readings")},
                   source="default")
    (change,) = allowed.changes
    assert change.action == "archive"


def test_purge_planned_only_when_asked_and_not_protected() -> None:
    (change,) = diff({A: desired(A, "dataset", purge=True, name="Readings")}, {A: live(A, "dataset")},
                     {A: applied(A, "dataset")}, source="default").changes
    assert change.action == "purge" and change.after is None
    both = diff({A: desired(A, "dataset", purge=True, protect=True, name="Readings")},
                {A: live(A, "dataset")}, {A: applied(A, "dataset")}, source="default")
    assert both.changes == () and both.findings[0].severity == "error"


def test_restore_when_tree_says_active_again() -> None:
    (change,) = diff({A: desired(A, "dataset", name="Readings")}, {A: live(A, "dataset", status="inactive")},
                     {A: applied(A, "dataset", name="Readings")}, source="default").changes
    assert change.action == "restore" and change.fields == ("status",)


def test_unmanaged_objects_are_listed_and_untouched() -> None:
    result = diff({}, {A: live(A, "dataset")}, {}, source="default")
    assert result.changes == () and result.unmanaged == (A,)


def test_adopting_an_unmanaged_object_shows_only_what_changes() -> None:
    have = live(A, "dataset", description="made by ingestion", metadata={"tableName": "t"})
    result = diff({A: desired(A, "dataset", name="Readings", metadata={"unit": "c"})}, {A: have}, {},
                  source="default")
    (change,) = result.changes
    assert change.fields == ("metadata",)  # description not declared: left as it is
    assert change.after is not None and change.after["metadata"] == {"tableName": "t", "unit": "c"}
    as_is = diff({A: desired(A, "dataset", name="Readings")}, {A: have}, {}, source="default")
    assert as_is.changes == () and [b.reason for b in as_is.bookkeeping] == ["adopt"]


def test_another_sources_object_is_never_touched_and_declaring_it_is_an_error() -> None:
    other = applied(A, "dataset", source="team-b")
    assert diff({}, {A: live(A, "dataset")}, {A: other}, source="team-a") == diff({}, {}, {}, source="x")
    result = diff({A: desired(A, "dataset", name="X")}, {A: live(A, "dataset")}, {A: other}, source="team-a")
    assert result.changes == ()
    assert "managed by source 'team-b'" in result.findings[0].message


def test_drift_is_reported_with_who_and_when_and_reverted() -> None:
    want = desired(A, "dataset", name="Readings")
    have = live(A, "dataset", name="Renamed by hand")
    (change,) = diff({A: want}, {A: have}, {A: applied(A, "dataset", name="Readings")}, source="default").changes
    assert change.drift == ("name",) and change.after is not None and change.after["name"] == "Readings"
    (finding,) = diff({A: want}, {A: have}, {A: applied(A, "dataset", name="Readings")}, source="default").findings
    assert finding.severity == "drift" and "svc@x" in finding.message and "2026-11-20" in finding.message


def test_dropping_a_field_that_was_applied_clears_it() -> None:
    want = desired(R, "record", metadata={})
    have = live(R, "record", owner="team-a")
    (change,) = diff({R: want}, {R: have}, {R: applied(R, "record", owner="team-a", metadata={})},
                     source="default").changes
    assert change.fields == ("owner",) and change.after is not None and change.after["owner"] is None


def test_dropped_retention_is_removed() -> None:
    want = desired(A, "dataset", name="Readings")
    have = live(A, "dataset", retention={"mode": "time", "rules": {"maxAgeHours": 5}})
    done = applied(A, "dataset", name="Readings", retention={"mode": "time", "rules": {"maxAgeHours": 5}})
    (change,) = diff({A: want}, {A: have}, {A: done}, source="default").changes
    assert change.fields == ("retention",) and change.after is not None and change.after["retention"] is None


def test_bookkeeping_refresh_when_tree_matches_a_hand_made_change() -> None:
    want = desired(A, "dataset", name="New")
    result = diff({A: want}, {A: live(A, "dataset", name="New")}, {A: applied(A, "dataset", name="Old")},
                  source="default")
    assert result.changes == () and [b.reason for b in result.bookkeeping] == ["refresh"]


# --- purging a storage target ---------------------------------------------------------------

ST = "storage-target:cold"


def test_a_storage_target_with_partitions_of_a_remaining_dataset_is_not_purged() -> None:
    want = {ST: desired(ST, "storage-target", purge=True, type="s3"),
            A: desired(A, "dataset", name="Readings", storageTarget="hot")}
    have = {ST: live(ST, "storage-target", type="s3"), A: live(A, "dataset", storageTarget="hot"),
            "storage-target:hot": live("storage-target:hot", "storage-target")}
    result = diff(want, have, {}, source="default", stored_on={ST: ["dataset:readings", "dataset:gone"]})
    assert [c.address for c in result.changes] == []
    assert [(f.address, f.severity, f.message) for f in result.findings] == [
        (ST, "error", "cannot be purged while datasets use it: dataset:gone, dataset:readings (partitions stored "
                      "on it); point them at another storage target, or purge them, first")]


def test_datasets_purged_or_moved_away_in_the_same_plan_do_not_hold_a_storage_target() -> None:
    moved, purged = "dataset:moved", "dataset:purged"
    want = {ST: desired(ST, "storage-target", purge=True, type="s3"),
            moved: desired(moved, "dataset", name="Readings", storageTarget="hot"),
            purged: desired(purged, "dataset", purge=True, name="Readings")}
    have = {ST: live(ST, "storage-target", type="s3"), moved: live(moved, "dataset", storageTarget="cold"),
            purged: live(purged, "dataset", storageTarget="cold"),
            "storage-target:hot": live("storage-target:hot", "storage-target")}
    result = diff(want, have, {}, source="default", stored_on={ST: [purged]})
    # Storage targets first, then datasets, then records: the one order of every rendering.
    assert [(c.address, c.action) for c in result.changes] == [(ST, "purge"), (moved, "update"),
                                                               (purged, "purge")]
    assert [f for f in result.findings if f.severity == "error"] == []


def test_changes_bookkeeping_and_unmanaged_come_by_kind_then_address() -> None:
    names = ["record:a/k", "dataset:zz", "storage-target:aa", "dataset:aa", "storage-target:zz", "record:0/k"]
    want = {a: desired(a, a.partition(":")[0], name="N") for a in names}
    others = ("record:x/y", "dataset:x", "storage-target:x")
    have = {a: live(a, a.partition(":")[0]) for a in others}
    result = diff(want, have, {}, source="default")
    assert [c.address for c in result.changes] == ["storage-target:aa", "storage-target:zz", "dataset:aa",
                                                   "dataset:zz", "record:0/k", "record:a/k"]
    assert list(result.unmanaged) == ["storage-target:x", "dataset:x", "record:x/y"]


def test_a_purge_masks_config_values_the_last_apply_wrote_from_the_environment() -> None:
    want = {ST: desired(ST, "storage-target", purge=True, type="s3")}
    have = {ST: live(ST, "storage-target", type="s3", config={"key": "s3cret", "list": ["a", "b"], "bucket": "x"})}
    done = {ST: applied(ST, "storage-target", type="s3",
                        config={"key": "${env:KEY}", "list": ["a", "pre-${env:B}"], "bucket": "x"})}
    [change] = diff(want, have, done, source="default").changes
    assert change.action == "purge"
    assert change.before is not None and change.before["config"] == {"key": "***", "list": ["a", "***"], "bucket": "x"}
