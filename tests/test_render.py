"""Rendering plans and apply results, with plain values: no database, git or terminal."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from reconciler.core.diff import (
    changed_paths,
    Applied,
    Bookkeeping,
    Change,
    Desired,
    Finding,
    Live,
    Location,
    diff,
)
from reconciler.core.plan import Author, Plan, Removal, from_diff
from reconciler.render.plan import (
    NO_CHANGES,
    PURGE_TITLE,
    render_apply_result,
    render_apply_result_json,
    render_json,
    render_markdown,
    render_text,
)

SHA = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"
ADA = Author("Ada Lovelace", "ada@example.com", SHA)
LOC = Location("manifests/catalog.yaml", 12, 20)
ANSI = re.compile(r"\x1b\[[0-9;]*m")

DATASET: dict[str, Any] = {"name": "Readings", "description": None, "status": "active", "storageTarget": None,
           "metadata": {}, "retention": None}
RECORD: dict[str, Any] = {"owner": "team", "tags": [], "schemaHash": None, "metadata": {}, "deleted": False}


def kind_of(address: str) -> str:
    return address.split(":", 1)[0]


def change(address: str, action: str, before: Mapping[str, Any] | None = None,
           after: Mapping[str, Any] | None = None, fields: tuple[str, ...] | None = None,
           location: Location | None = LOC, desired: Mapping[str, Any] | None = None,
           protect: bool = False, drift: tuple[str, ...] = ()) -> Change:
    """A change as the diff would make it; ``fields`` defaults to the fields that differ."""
    if fields is None:
        keys = list((after or before or {}).keys())
        fields = tuple(k for k in keys if (before or {}).get(k) != (after or {}).get(k))
        if action == "purge":
            fields = ()
    if desired is None and action != "archive":
        desired = {"name": "x"}
    paths = fields if action == "create" else tuple(changed_paths(before, after, fields))
    return Change(address, kind_of(address), action, before, after, fields, desired, location,
                  None if action == "create" else "t1", protect, drift, paths)


def plan_of(*changes: Change, findings: tuple[Finding, ...] = (), unmanaged: tuple[str, ...] = (),
            authors: Mapping[str, Author] | None = None, bookkeeping: tuple[Bookkeeping, ...] = (),
            secrets: Mapping[str, Mapping[str, str]] | None = None,
            removals: Mapping[str, Removal] | None = None) -> Plan:
    return Plan(source="default", commit=SHA, dirty=False, created_at="2026-11-21T12:00:00Z",
                changes=changes, authors=dict(authors) if authors is not None else {c.address: ADA for c in changes},
                bookkeeping=bookkeeping, unmanaged=unmanaged, findings=findings, secrets=secrets or {},
                removals=dict(removals or {}))


def block(text: str, address: str) -> str:
    """The lines of one change in text output: its header and the indented lines under it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"  \S {re.escape(address)} \(", line))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("      ")), len(lines))
    return "\n".join(lines[start:end])


# --------------------------------------------------------------------------------------------- text


def test_create_shows_symbol_source_author_and_the_values_that_say_something() -> None:
    after = {**DATASET, "name": "Observatory readings", "metadata": {"unit": "celsius"}}
    text = render_text(plan_of(change("dataset:obs", "create", None, after, tuple(DATASET))))
    # status "active" is what every new dataset gets: it says nothing, and is not shown.
    assert block(text, "dataset:obs").splitlines() == [
        "  + dataset:obs (create)",
        "      source: manifests/catalog.yaml:12",
        "      author: Ada Lovelace <ada@example.com>, commit 1a2b3c4",
        '      name: "Observatory readings"',
        '      metadata: {"unit": "celsius"}',
    ]


def test_a_record_create_shows_deleted_only_when_it_is_created_deleted() -> None:
    live_record = {**RECORD, "owner": "team", "tags": ["iot"]}
    plain = change("record:obs/s-1", "create", None, live_record, tuple(RECORD))
    archived = change("record:obs/s-2", "create", None, {**live_record, "deleted": True}, tuple(RECORD))
    inactive = change("dataset:old", "create", None, {**DATASET, "status": "inactive"}, tuple(DATASET))
    text = render_text(plan_of(plain, archived, inactive))
    assert block(text, "record:obs/s-1").splitlines()[3:] == ['      owner: "team"', '      tags: ["iot"]']
    assert block(text, "record:obs/s-2").splitlines()[3:] == ['      owner: "team"', '      tags: ["iot"]',
                                                              "      deleted: true"]
    assert '      status: "inactive"' in block(text, "dataset:old")
    markdown = render_markdown(plan_of(plain, archived))
    assert markdown.count("`deleted`") == 1 and "`deleted`: `true`" in markdown


def test_update_shows_each_changed_path_old_to_new_and_removed_keys() -> None:
    before = {**DATASET, "metadata": {"unit": "kelvin", "old": 1, "tableName": "t"}}
    after = {**DATASET, "name": "Readings v2", "metadata": {"unit": "celsius", "tableName": "t", "new": True}}
    text = render_text(plan_of(change("dataset:obs", "update", before, after)))
    lines = block(text, "dataset:obs").splitlines()
    assert lines[0] == "  ~ dataset:obs (update)"
    assert lines[3:] == [
        '      name: "Readings" → "Readings v2"',
        "      metadata.new: (absent) → true",
        "      metadata.old: 1 → (removed)",
        '      metadata.unit: "kelvin" → "celsius"',
    ]
    assert "tableName" not in text  # unchanged keys are not shown


def test_nested_list_paths_and_protect_changes_are_shown() -> None:
    before = {**DATASET, "metadata": {"iam": {"readScopes": ["a"]}}}
    after = {**DATASET, "metadata": {"iam": {"readScopes": ["a", "b"]}}}
    text = render_text(plan_of(change("dataset:obs", "update", before, after, ("metadata", "protect"),
                                      protect=True)))
    assert '      metadata.iam.readScopes[1]: (absent) → "b"' in text
    assert "      protect: false → true" in text
    assert "  ~ dataset:obs (update, protected)" in text


def test_archive_of_a_removed_manifest_and_restore() -> None:
    archive = change("record:obs/s-1", "archive", RECORD, {**RECORD, "deleted": True},
                     location=Location("manifests/old.yaml", 3, 8))
    restore = change("dataset:back", "restore", {**DATASET, "status": "inactive"}, DATASET)
    gone = {"record:obs/s-1": Removal("manifests/old.yaml", "9f8e7d6c5b4a" * 3 + "9f8e", True)}
    text = render_text(plan_of(archive, restore, removals=gone))
    assert block(text, "record:obs/s-1").splitlines() == [
        "  - record:obs/s-1 (archive)",
        "      source: manifests/old.yaml:3 (manifest removed in 9f8e7d6)",
        "      author: Ada Lovelace <ada@example.com>, commit 1a2b3c4",
        "      deleted: false → true",
    ]
    # The file is still there: the plan says the object was removed from it, not that it is gone.
    edited = {"record:obs/s-1": Removal("manifests/old.yaml", "9f8e7d6c5b4a" * 3 + "9f8e", False)}
    text = render_text(plan_of(archive, restore, removals=edited))
    assert "      source: manifests/old.yaml:3 (removed from manifests/old.yaml in 9f8e7d6)" in text
    assert "manifest removed" not in text
    # The file was moved out of the tree (or to a name that is no manifest's): where to.
    moved = {"record:obs/s-1": Removal("manifests/old.yaml", "9f8e7d6c5b4a" * 3 + "9f8e", True,
                                     "attic/old.yaml")}
    text = render_text(plan_of(archive, restore, removals=moved))
    assert "      source: manifests/old.yaml:3 (moved to attic/old.yaml in 9f8e7d6)" in text
    assert "manifest removed" not in text
    # Nothing known about how it went (no git): no claim either way.
    assert "(no longer declared)" in render_text(plan_of(archive, restore))
    assert block(text, "dataset:back").splitlines()[0] == "  ↺ dataset:back (restore)"
    assert '      status: "inactive" → "active"' in text


def test_uncommitted_and_unknown_authors() -> None:
    a = change("dataset:a", "create", None, DATASET, tuple(DATASET))
    b = change("dataset:b", "create", None, DATASET, tuple(DATASET))
    text = render_text(plan_of(a, b, authors={"dataset:a": Author("Bob", "bob@x.org", None, True)}))
    assert "      author: Bob <bob@x.org> (uncommitted)" in block(text, "dataset:a")
    assert "      author: uncommitted" in block(text, "dataset:b")  # git could not say who


def test_purges_are_listed_in_their_own_section_after_everything_else() -> None:
    purge = change("dataset:aaa-gone", "purge", DATASET, None)
    create = change("dataset:zzz-new", "create", None, DATASET, tuple(DATASET))
    text = render_text(plan_of(purge, create))
    assert text.index("dataset:zzz-new") < text.index(PURGE_TITLE) < text.index("  ! dataset:aaa-gone (purge)")
    assert text.count("dataset:aaa-gone") == 1
    assert "\n\n" + PURGE_TITLE + "\n\n" in text


def test_summary_line_is_exact_and_last() -> None:
    changes = [change(f"dataset:c{i}", "create", None, DATASET, tuple(DATASET)) for i in range(3)]
    changes.append(change("dataset:u", "update", DATASET, {**DATASET, "name": "N"}))
    text = render_text(plan_of(*changes))
    assert text.splitlines()[-1] == "Plan: 3 to create, 1 to update, 0 to archive, 0 to restore, 0 to purge."
    assert text.endswith("\n")


def test_no_changes_sentence_even_with_unmanaged_objects() -> None:
    text = render_text(plan_of(unmanaged=("dataset:made-by-ingestion",)))
    assert text.splitlines()[-1] == NO_CHANGES == "No changes. The catalog matches the manifests."
    assert "1 unmanaged object in the catalog is left alone:\n    dataset:made-by-ingestion\n" in text
    assert "--format json" not in text  # the whole list is there already


def test_no_changes_but_errors_is_not_called_a_match() -> None:
    error = Finding("dataset:p", "error", "it is protected (protect: true)", LOC)
    text = render_text(plan_of(findings=(error,)))
    assert NO_CHANGES not in text
    assert text.splitlines()[-1] == "Plan: 0 to create, 0 to update, 0 to archive, 0 to restore, 0 to purge."


def test_drift_is_a_warning_under_its_change() -> None:
    live = Live("dataset:obs", "dataset", {**DATASET, "name": "Hand edit"}, "t1",
                updated_at="2026-11-20T10:00:00.000Z", updated_by="svc@x")
    applied = Applied("dataset:obs", "dataset", "default", {"name": "Readings"})
    desired = Desired("dataset:obs", "dataset", {"name": "Readings"}, LOC)
    result = diff({"dataset:obs": desired}, {"dataset:obs": live}, {"dataset:obs": applied}, source="default")
    plan = from_diff(result, source="default", commit=SHA, dirty=False, created_at="now",
                     authors={"dataset:obs": ADA}, secrets={})
    lines = block(render_text(plan), "dataset:obs").splitlines()
    assert lines[-2:] == [
        '      name: "Hand edit" → "Readings"',
        "      ! drift: name changed outside git by svc@x at 2026-11-20T10:00:00.000Z; apply reverts it",
    ]


def test_drift_by_nobody_known_says_so_plainly() -> None:
    live = Live("dataset:obs", "dataset", {**DATASET, "name": "Hand edit"}, "t1",
                updated_at="2026-11-20T10:00:00.000Z", updated_by=None)
    applied = Applied("dataset:obs", "dataset", "default", {"name": "Readings"})
    desired = Desired("dataset:obs", "dataset", {"name": "Readings"}, LOC)
    result = diff({"dataset:obs": desired}, {"dataset:obs": live}, {"dataset:obs": applied}, source="default")
    (finding,) = [f for f in result.findings if f.severity == "drift"]
    assert finding.message == ("name changed outside git at 2026-11-20T10:00:00.000Z (the catalog does not "
                               "record by whom); apply reverts it")
    assert "someone outside git" not in render_text(from_diff(
        result, source="default", commit=SHA, dirty=False, created_at="now", authors={"dataset:obs": ADA},
        secrets={}))


def test_errors_and_notes_blocks_at_the_end() -> None:
    findings = (Finding("dataset:p", "error", "it is protected", LOC),
                Finding("storage-target:old", "note", "no longer declared; left in place", None))
    text = render_text(plan_of(change("dataset:a", "create", None, DATASET, tuple(DATASET)), findings=findings))
    assert text.splitlines()[-7:] == [
        "Notes:",
        "  - storage-target:old: no longer declared; left in place",
        "",
        "Errors:",
        "  - dataset:p: it is protected (manifests/catalog.yaml:12)",
        "",
        "Plan: 1 to create, 0 to update, 0 to archive, 0 to restore, 0 to purge.",
    ]
    assert text.index("Notes:") < text.index("Errors:") < text.index("Plan: 1 to create")


def test_unmanaged_shows_count_and_first_ten() -> None:
    unmanaged = tuple(f"dataset:u{i:02d}" for i in range(13))
    text = render_text(plan_of(unmanaged=unmanaged))
    assert "13 unmanaged objects in the catalog are left alone:\n    dataset:u00\n" in text
    assert "dataset:u09" in text and "dataset:u10" not in text
    assert "    dataset:u09\n    … and 3 more (--format json lists them all)\n" in text


def test_markdown_points_to_the_json_only_when_the_unmanaged_list_is_cut() -> None:
    few = render_markdown(plan_of(unmanaged=("dataset:u1", "dataset:u2")))
    assert "2 unmanaged objects in the catalog are left alone.\n" in few and "JSON" not in few
    many = render_markdown(plan_of(unmanaged=tuple(f"dataset:u{i:02d}" for i in range(12))))
    assert "12 unmanaged objects in the catalog are left alone. The JSON plan lists them all." in many
    assert "- _… 2 more not shown_" in many


def test_every_rendering_lists_storage_targets_then_datasets_then_records() -> None:
    names = ["record:a/k", "dataset:b", "storage-target:c", "record:0/z", "dataset:a", "storage-target:zz"]
    want = {a: Desired(a, kind_of(a), {"name": "N"} if kind_of(a) == "dataset" else {"owner": "o"}
                       if kind_of(a) == "record" else {"type": "s3"}, LOC) for a in names}
    result = diff(want, {}, {}, source="default")
    plan = from_diff(result, source="default", commit=SHA, dirty=False, created_at="now",
                     authors={a: ADA for a in names}, secrets={})
    expected = ["storage-target:c", "storage-target:zz", "dataset:a", "dataset:b", "record:0/z", "record:a/k"]
    assert [c["address"] for c in plan.to_json()["changes"]] == expected
    text = render_text(plan)
    assert sorted(expected, key=lambda a: text.index(f" {a} (")) == expected
    markdown = render_markdown(plan)
    assert sorted(expected, key=lambda a: markdown.index(f"`{a}`")) == expected
    objects = [{"address": c.address, "action": c.action, "outcome": "created"} for c in plan.changes]
    applied = render_apply_result({"run_id": "run-1", "outcome": "applied", "objects": objects})
    assert [line.split()[1] for line in applied.splitlines()[:6]] == expected


def test_adopted_objects_are_named() -> None:
    entry = Bookkeeping("record:obs/s-1", "record", "adopt", {"owner": "team"}, LOC, False, "3")
    text = render_text(plan_of(bookkeeping=(entry,)))
    assert "  = record:obs/s-1" in text and text.splitlines()[-1] == NO_CHANGES


def test_colour_only_when_asked() -> None:
    plan = plan_of(change("dataset:a", "create", None, DATASET, tuple(DATASET)),
                   change("dataset:b", "purge", DATASET, None),
                   findings=(Finding("dataset:c", "error", "bad", None),))
    plain, coloured = render_text(plan), render_text(plan, color=True)
    assert "\x1b" not in plain
    assert "\x1b[32m  + dataset:a (create)\x1b[0m" in coloured
    assert f"\x1b[1;31m{PURGE_TITLE}\x1b[0m" in coloured
    assert ANSI.sub("", coloured) == plain
    assert "\x1b" not in render_markdown(plan) and "\x1b" not in render_json(plan)


def test_values_are_json_and_long_ones_are_cut_at_200_characters() -> None:
    kept = {f"k{i}": i for i in range(8)}
    before = {**DATASET, "metadata": kept}
    after = {**DATASET, "description": "x" * 500, "metadata": {**kept, "n": 5, "flag": True, "none": None}}
    text = render_text(plan_of(change("dataset:a", "update", before, after)))
    line = next(line for line in text.splitlines() if line.startswith("      description:"))
    new = line.split(" → ", 1)[1]
    assert len(new) == 200 and new.startswith('"xxx') and new.endswith("…")
    assert "      metadata.n: (absent) → 5" in text
    assert "      metadata.flag: (absent) → true" in text
    assert "      metadata.none: (absent) → null" in text


def test_control_characters_cannot_reach_the_terminal() -> None:
    address = "record:obs/evil\x1b[2Jkey"
    text = render_text(plan_of(change(address, "create", None, {**RECORD, "owner": "a\x1b[31m"}, tuple(RECORD))))
    assert "\x1b" not in text
    assert "record:obs/evil\\x1b[2Jkey" in text


# --------------------------------------------------------------------------------------------- secrets


def secret_plan(live_config: Mapping[str, Any] | None) -> Plan:
    """A storage target whose config.password came from ${env:CH_PW}, resolved to "hunter2"."""
    address = "storage-target:ch"
    desired = Desired(address, "storage-target",
                      {"type": "clickhouse", "config": {"host": "ch2", "password": "hunter2"}}, LOC,
                      secret_paths=frozenset({"config.password"}))
    live = {}
    applied = {}
    if live_config is not None:
        live = {address: Live(address, "storage-target",
                              {"type": "clickhouse", "description": None, "config": dict(live_config)}, "t1")}
        applied = {address: Applied(address, "storage-target", "default",
                                    {"type": "clickhouse", "config": dict(live_config)})}
    result = diff({address: desired}, live, applied, source="default")
    entry = Bookkeeping("storage-target:ch2", "storage-target", "adopt",
                        {"type": "s3", "config": {"secret": "hunter2"}}, LOC, False, "t")
    result = type(result)(result.changes, (entry,), result.unmanaged, result.findings)
    return from_diff(result, source="default", commit=SHA, dirty=False, created_at="now",
                     authors={address: ADA},
                     secrets={address: {"config.password": "${env:CH_PW}"},
                              "storage-target:ch2": {"config.secret": "${env:S3_SECRET}"}})


def test_secrets_never_appear_in_any_output() -> None:
    for plan in (secret_plan(None), secret_plan({"host": "ch", "password": "hunter2"})):
        assert plan.changes and plan.changes[0].after is not None
        assert plan.changes[0].after["config"]["password"] == "hunter2"  # the value apply will write
        outputs = {"text": render_text(plan), "color": render_text(plan, color=True),
                   "json": render_json(plan), "markdown": render_markdown(plan)}
        for name, out in outputs.items():
            assert "hunter2" not in out, name
            if name != "json" and plan.changes[0].before is not None:
                continue  # the secret itself did not change: text shows only what did
            assert "${env:CH_PW}" in out, name
    update_text = render_text(secret_plan({"host": "ch", "password": "hunter2"}))
    assert "config.password" not in update_text  # same secret before and after: not a change
    assert '      config.host: "ch" → "ch2"' in update_text
    rotated = render_text(secret_plan({"host": "ch", "password": "old-secret"}))
    assert '      config.password: "***" → "${env:CH_PW}"' in rotated
    assert "old-secret" not in rotated


# --------------------------------------------------------------------------------------------- json


def test_render_json_is_the_plan_json() -> None:
    plan = plan_of(change("dataset:a", "create", None, DATASET, tuple(DATASET)))
    out = render_json(plan)
    assert out.endswith("}\n")
    assert json.loads(out) == plan.to_json()
    assert list(json.loads(out))[:2] == ["format_version", "source"]  # key order kept, not sorted


# --------------------------------------------------------------------------------------------- markdown


def sample_for_markdown() -> Plan:
    changes = [
        change("storage-target:ch", "create", None, {"type": "clickhouse", "description": None, "config": {}},
               ("type", "description", "config")),
        change("dataset:new", "create", None, DATASET, tuple(DATASET)),
        change("dataset:upd", "update", {**DATASET, "metadata": {"unit": "kelvin"}},
               {**DATASET, "metadata": {"unit": "celsius"}}, drift=("metadata",)),
        change("dataset:purged", "purge", DATASET, None),
        change("record:obs/s-1", "archive", RECORD, {**RECORD, "deleted": True}),
    ]
    findings = (Finding("dataset:bad", "error", "protect and purge are both true", LOC),
                Finding("dataset:upd", "drift", "metadata changed outside git by svc@x; apply reverts it", LOC),
                Finding("storage-target:old", "note", "no longer declared", None))
    return plan_of(*changes, findings=findings, unmanaged=("dataset:ingested",))


def test_markdown_layout_errors_drift_purges_then_kinds() -> None:
    md = render_markdown(sample_for_markdown())
    order = ["## Reconciler plan", "| action | count |", "| create | 2 |", "| purge | 1 |",
             "### ❌ Errors (1)", "- ❌ `dataset:bad`: protect and purge are both true (`manifests/catalog.yaml:12`)",
             "### ⚠️ Drift (1)", "### 🛑 Destructive changes (1)", "`dataset:purged` **purge**",
             "### Storage targets (1)", "#### create (1)", "`storage-target:ch` **create**",
             "### Datasets (2)", "#### create (1)", "#### update (1)",
             "  - `metadata.unit`: `\"kelvin\"` → `\"celsius\"`", "  - ⚠️ drift: metadata changed outside git",
             "### Records (1)", "#### archive (1)", "`record:obs/s-1` **archive**", "  - `deleted`: `false` → `true`",
             "### Notes (1)", "### Unmanaged (1)", "- `dataset:ingested`",
             "**Plan: 2 to create, 1 to update, 1 to archive, 0 to restore, 1 to purge.**"]
    positions: list[int] = []
    for piece in order:
        positions.append(md.index(piece, positions[-1] if positions else 0))
    assert positions == sorted(positions)
    assert "Ada Lovelace &lt;ada@example.com&gt;, commit 1a2b3c4" in md
    assert md.count("dataset:purged") == 1  # purges only in their own section
    assert "<details>" not in md and "not shown" not in md


def test_markdown_no_changes() -> None:
    md = render_markdown(plan_of())
    assert md.rstrip().endswith(f"**{NO_CHANGES}**")
    assert "| create | 0 |" in md


def test_markdown_folds_groups_longer_than_twenty() -> None:
    creates = [change(f"record:obs/s-{i:03d}", "create", None, RECORD, tuple(RECORD)) for i in range(21)]
    updates = [change(f"record:obs/u-{i:03d}", "update", RECORD, {**RECORD, "owner": "b"}) for i in range(20)]
    md = render_markdown(plan_of(*creates, *updates))
    assert md.count("<details>") == 1
    details = md[md.index("<details>"):md.index("</details>")]
    assert "<summary>21 to create</summary>" in details
    assert "record:obs/s-020" in details and "record:obs/u-000" not in details
    assert "#### update (20)" in md


def test_markdown_escapes_text_and_survives_backticks_in_values() -> None:
    after = {**RECORD, "owner": "a`b``c", "metadata": {"x": "</details><script>"}}
    md = render_markdown(plan_of(change("record:obs/s-1", "create", None, after, tuple(RECORD)),
                                 authors={"record:obs/s-1": Author("<b>Eve</b>", "eve@x", SHA)}))
    assert "<b>" not in md and "&lt;b&gt;Eve&lt;/b&gt;" in md
    assert "```\"a`b``c\"```" in md
    assert "`{\"x\": \"</details><script>\"}`" in md  # inside code, not HTML


def huge_plan(changes: int = 20_000, purges: int = 30, errors: int = 25) -> Plan:
    items = [change(f"record:obs/sensor-{i:05d}", "create", None, {**RECORD, "metadata": {"unit": "celsius"}},
                    tuple(RECORD)) for i in range(changes - purges)]
    items += [change(f"dataset:old-{i:03d}", "purge", DATASET, None) for i in range(purges)]
    found = tuple(Finding(f"dataset:bad-{i:03d}", "error", "it is protected (protect: true)", LOC)
                  for i in range(errors))
    return plan_of(*items, findings=found, unmanaged=tuple(f"dataset:u{i}" for i in range(500)))


def test_markdown_of_a_20000_change_plan_stays_under_the_limit() -> None:
    plan = huge_plan()
    md = render_markdown(plan, full=True)  # every change competes for the size budget
    assert len(md) < 60_000
    assert "| create | 19970 |" in md and "| purge | 30 |" in md
    assert all(f"`dataset:bad-{i:03d}`" in md for i in range(25))  # errors complete
    assert all(f"`dataset:old-{i:03d}` **purge**" in md for i in range(30))  # purges complete
    shown = len(re.findall(r"^- `record:obs/sensor-\d+` \*\*create\*\*", md, flags=re.MULTILINE))
    assert 50 < shown < 19_970
    assert md.rstrip().endswith(
        f"… {19_970 - shown:,} more changes not shown; see the full plan in the JSON plan artifact.")
    assert "**Plan: 19970 to create, 0 to update, 0 to archive, 0 to restore, 30 to purge.**" in md
    if "### Unmanaged (500)" in md:  # what is left of the budget goes to the lower-priority lists
        assert re.search(r"- _… 4\d\d more not shown_\n\n\*\*Plan:", md)


def test_markdown_limit_holds_for_small_limits_and_custom_hint() -> None:
    plan = huge_plan(changes=2_000, purges=5, errors=3)
    for limit in (100_000, 20_000, 5_000, 2_000, 600):
        md = render_markdown(plan, limit=limit, full_plan_hint="the `plan.json` artifact of this run")
        assert len(md) < limit, limit
    md = render_markdown(plan, limit=5_000, full_plan_hint="the `plan.json` artifact of this run")
    assert "see the full plan in the `plan.json` artifact of this run." in md


def test_markdown_caps_field_lines_per_change() -> None:
    before = {**DATASET, "metadata": {f"k{i:02d}": 0 for i in range(30)}}
    after = {**DATASET, "metadata": {f"k{i:02d}": 1 for i in range(30)}}
    md = render_markdown(plan_of(change("dataset:wide", "update", before, after)))
    assert "`metadata.k19`" in md and "`metadata.k20`" not in md
    assert "  - … 10 more fields (see the JSON plan)" in md


# --------------------------------------------------------------------------------------------- apply results


def test_apply_result_lines_and_closing_summary() -> None:
    result = {"run_id": "run-42", "outcome": "applied",
              "summary": {"create": 3, "update": 1, "archive": 0, "restore": 0, "purge": 0},
              "objects": [{"address": f"dataset:d{i}", "action": "create", "outcome": "created"} for i in range(3)]
              + [{"address": "record:obs/s-1", "action": "update", "outcome": "updated"}]}
    text = render_apply_result(result)
    assert text.splitlines() == [
        "created dataset:d0", "created dataset:d1", "created dataset:d2", "updated record:obs/s-1",
        "Run run-42 (applied)",
        "Apply complete: 3 created, 1 updated, 0 archived, 0 restored, 0 purged.",
    ]
    coloured = render_apply_result(result, color=True)
    assert "\x1b[32mcreated dataset:d0\x1b[0m" in coloured and ANSI.sub("", coloured) == text
    assert json.loads(render_apply_result_json(result)) == result


def test_apply_result_with_nothing_to_do() -> None:
    result = {"run_id": "run-43", "outcome": "noop", "summary": dict.fromkeys(("create", "update"), 0),
              "objects": []}
    assert render_apply_result(result).splitlines()[-1] == "Apply complete: nothing to do."
    assert render_apply_result({"objects": []}) == "Apply complete: nothing to do.\n"


# --------------------------------------------------------------------------------------------- long runs fold


def long_plan(creates: int = 120, updates: int = 51, drifted: int = 90) -> Plan:
    """Many record creates and updates (one update carries drift), a few datasets, an error and a purge."""
    items = [change(f"record:obs/c-{i:04d}", "create", None, RECORD, tuple(RECORD)) for i in range(creates)]
    items += [change(f"record:obs/u-{i:04d}", "update", RECORD, {**RECORD, "owner": "b"},
                     drift=("owner",) if i == drifted else ()) for i in range(updates)]
    items += [change(f"dataset:d-{i:02d}", "create", None, DATASET, tuple(DATASET)) for i in range(50)]
    items += [change("dataset:gone", "purge", DATASET, None)]
    findings = (Finding("dataset:bad", "error", "protect and purge are both true", LOC),
                Finding(f"record:obs/u-{drifted:04d}", "drift", "owner changed outside git by svc@x", LOC))
    return plan_of(*sorted(items, key=lambda c: ({"dataset": 1, "record": 2}[c.kind], c.address)),
                   findings=findings)


def test_text_folds_runs_of_more_than_fifty_of_one_kind_and_action() -> None:
    text = render_text(long_plan(drifted=40))
    shown = re.findall(r"^  \+ (record:obs/c-\d+) \(create", text, flags=re.MULTILINE)
    assert shown == [f"record:obs/c-{i:04d}" for i in range(20)]
    assert "  … 100 more records to create not shown (--full prints them all; --format json lists them all)\n" in text
    updates = re.findall(r"^  ~ (record:obs/u-\d+) \(update", text, flags=re.MULTILINE)
    assert updates == [f"record:obs/u-{i:04d}" for i in range(20)] + ["record:obs/u-0040"]  # drift always shown
    assert "! drift: owner changed outside git by svc@x" in block(text, "record:obs/u-0040")
    assert "  … 30 more records to update not shown" in text
    assert len(re.findall(r"^  \+ dataset:d-\d+ \(create", text, flags=re.MULTILINE)) == 50  # 50 is not long
    assert "datasets to create not shown" not in text
    assert "  ! dataset:gone (purge)" in text and "  - dataset:bad: protect and purge are both true" in text
    assert text.rstrip().endswith("Plan: 170 to create, 51 to update, 0 to archive, 0 to restore, 1 to purge.")
    # the fold lines close the records, after the last one shown
    assert text.index("record:obs/u-0040 (update") < text.index("… 100 more records") < text.index("… 30 more")


def test_text_with_full_shows_every_change_and_json_stays_complete() -> None:
    plan = long_plan()
    full = render_text(plan, full=True)
    assert "not shown" not in full
    assert len(re.findall(r"^  \+ record:obs/c-\d+ \(create", full, flags=re.MULTILINE)) == 120
    assert len(re.findall(r"^  ~ record:obs/u-\d+ \(update", full, flags=re.MULTILINE)) == 51
    assert len(json.loads(render_json(plan))["changes"]) == 222
    folded = render_text(plan)
    assert folded.splitlines()[-1] == full.splitlines()[-1]
    assert len(folded) < len(full) / 2


def test_markdown_folds_long_runs_and_points_to_full() -> None:
    md = render_markdown(long_plan(drifted=40))
    assert "#### create (120)" in md and "#### update (51)" in md
    creates = re.findall(r"^- `(record:obs/c-\d+)` \*\*create\*\*", md, flags=re.MULTILINE)
    assert creates == [f"record:obs/c-{i:04d}" for i in range(20)]
    assert "- _… 100 more not shown_ (`--full` prints them all; `--format json` lists them all)" in md
    updates = re.findall(r"^- `(record:obs/u-\d+)` \*\*update\*\*", md, flags=re.MULTILINE)
    assert updates == [f"record:obs/u-{i:04d}" for i in range(20)] + ["record:obs/u-0040"]
    assert "- _… 30 more not shown_" in md
    assert "### ❌ Errors (1)" in md and "### ⚠️ Drift (1)" in md and "`dataset:gone` **purge**" in md
    assert md.rstrip().endswith("… 130 more changes not shown; see the full plan in the JSON plan artifact.")
    full = render_markdown(long_plan(drifted=40), full=True)
    assert len(re.findall(r"^- `record:obs/c-\d+` \*\*create\*\*", full, flags=re.MULTILINE)) == 120
    assert "not shown" not in full


def test_apply_result_folds_long_runs_unless_full() -> None:
    objects = [{"address": f"record:obs/c-{i}", "action": "create", "outcome": "created"} for i in range(60)]
    objects += [{"address": f"record:obs/u-{i}", "action": "update", "outcome": "updated"} for i in range(5)]
    result = {"run_id": "run-44", "outcome": "applied", "summary": {"create": 60, "update": 5}, "objects": objects}
    lines = render_apply_result(result).splitlines()
    assert [line for line in lines if line.startswith("created ")] == [f"created record:obs/c-{i}" for i in range(20)]
    assert len([line for line in lines if line.startswith("updated ")]) == 5
    assert "… 40 more created not shown (--full prints them all; --format json lists them all)" in lines
    assert lines[-1] == "Apply complete: 60 created, 5 updated, 0 archived, 0 restored, 0 purged."
    full = render_apply_result(result, full=True).splitlines()
    assert len([line for line in full if line.startswith("created ")]) == 60 and not any("not shown" in x for x in full)
