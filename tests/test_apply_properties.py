"""Property tests of apply on a real PostgreSQL: random small catalogs, random out-of-band edits.

Each test has a migrated database of its own (the db_url fixture), emptied before every example.
Desired values are built directly (the manifest loader is tested elsewhere); the
out-of-band edits are plain SQL, written the way the platform's services and
ingestion write: they bump a record's version, move a dataset's updated_at, and add
their own keys to JSON objects. Foreign keys (ones the reconciler never owns) all
start with ``ing_``; the keys manifests use never do.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler.catalog.postgres.reading import read_state
from reconciler.core.diff import Desired, Location, diff, same
from reconciler.app.applying import apply_plan
from reconciler.app.workspace import Workspace
from reconciler.catalog.postgres.catalog import PostgresCatalog
from reconciler.core.checks import ApplyOptions
from reconciler.core.plan import Author, Plan, from_diff
from .helpers import js_trimmed

AUTHOR = Author("Prop Tester", "prop@example.com", "c" * 40)
SOURCE = "default"
FOREIGN = "ing_"
SERVICE_ACTOR = "svc@platform.example"

TARGET_NAMES = ("alpha", "beta")
SLUGS = ("ds-one", "ds-two", "ds-three")
RECORD_IDS = tuple((ns, key) for ns in ("ns-a", "ns-b") for key in ("k1", "k2", "k3", "k4"))
# Objects only ingestion ever creates: never declared, so always unmanaged.
INGESTED_SLUG = "made-by-ingestion"
INGESTED_RECORD = ("ingest", "made-by-ingestion")

# No "explain" phase: re-running a failing case under coverage tracing costs minutes here.
PROPERTY_SETTINGS = settings(max_examples=25, deadline=None,
                             phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink),
                             suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                    HealthCheck.too_slow])


# --- an empty catalog per example ------------------------------------------------------------

CATALOG_TABLES = """SELECT format('%I.%I', schemaname, tablename) FROM pg_tables
                    WHERE schemaname IN ('timestore', 'metastore', 'reconciler')
                      AND tablename <> 'migration_history'"""


@contextmanager
def empty_catalog(url: str) -> Iterator[str]:
    """The test's migrated database with every row of every catalog table removed.

    Examples share the test's database (cloning one per example costs most of a second
    on the embedded server); emptying it takes milliseconds. Triggers and foreign keys
    are off for that one transaction (session_replication_role; the test user is a
    superuser), so the append-only audit log is emptied too.
    """
    with psycopg.connect(url, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        for (table,) in conn.execute(CATALOG_TABLES).fetchall():
            conn.execute(sql.SQL("DELETE FROM {}").format(sql.SQL(table)))
    yield url


# --- driving plan and apply with plain Desired values ------------------------------------------


def workspace(url: str) -> Workspace:
    return Workspace(Path("manifests"), None, SOURCE, PostgresCatalog(url))


def plan_for(url: str, objects: Sequence[Desired]) -> Plan:
    with psycopg.connect(url, autocommit=True) as conn:
        state = read_state(conn)
    result = diff({d.address: d for d in objects}, state.live, state.applied, source=SOURCE)
    authors = {c.address: AUTHOR for c in result.changes}
    return from_diff(result, source=SOURCE, commit="c" * 40, dirty=False, created_at="2026-11-21T00:00:00Z",
                     authors=authors, secrets={})


def apply_desired(url: str, objects: Sequence[Desired]) -> Plan:
    """Plan and apply, as an operator who reviewed the plan would (mass archives allowed)."""
    plan = plan_for(url, objects)
    assert plan.errors == (), plan.errors
    destructive = sum(1 for c in plan.changes if c.action in ("archive", "purge"))
    apply_plan(workspace(url), plan, ApplyOptions(allow_mass_archive=destructive))
    return plan


def describe_plan(plan: Plan) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return [(c.address, c.action, c.fields, c.paths) for c in plan.changes]


# --- strategies -----------------------------------------------------------------------------

TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)  # PostgreSQL text has no NUL
NONEMPTY_TEXT = TEXT.filter(lambda s: js_trimmed(s) != "")
LEAVES = (st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
          | st.floats(allow_nan=False, allow_infinity=False) | TEXT)
JSON = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(TEXT, inner, max_size=3), max_leaves=6)
MANAGED_KEYS = st.sampled_from(("unit", "tier", "x", "nested", "Owner", "a.b", ""))
FOREIGN_KEYS = st.sampled_from(tuple(FOREIGN + k for k in ("tableName", "timestampColumn", "createdBy",
                                                            "rows")))
METADATA = st.dictionaries(MANAGED_KEYS, JSON, max_size=4)
FOREIGN_METADATA = st.dictionaries(FOREIGN_KEYS, JSON, max_size=2)
# Duplicates, any order, and any text (quotes, backslashes, braces, commas, "NULL", spaces).
TAGS = st.lists(st.sampled_from(("iot", "raw", "a", "NULL", 'q"uo\\te', "{x,y}")) | TEXT.filter(bool), max_size=6)
# What ingestion writes under its own keys, as JSON text: any JSON value, and numbers a
# double cannot hold (PostgreSQL keeps them exactly; so must anyone who rewrites them).
FOREIGN_VALUES = JSON.map(json.dumps) | st.sampled_from(
    ("0.1000000000000000000000001", "123456789012345678901234567890.5", "1e-400", "100.10",
     "12345678901234567890123"))


@st.composite
def retention(draw: st.DrawFn) -> dict[str, Any]:
    policy: dict[str, Any] = {}
    if draw(st.booleans()):
        policy["mode"] = draw(st.sampled_from(("time", "size", "hybrid")))
    if draw(st.booleans()):
        rules: dict[str, Any] = {}
        if draw(st.booleans()):
            rules["maxAgeHours"] = draw(st.integers(1, 10**6))
        if draw(st.booleans()):
            rules["maxTotalBytes"] = draw(st.integers(1, 2**50))
        if draw(st.booleans()):
            rules["tier"] = draw(JSON)
        policy["rules"] = rules
    if draw(st.booleans()):
        policy["deleteGraceMinutes"] = draw(st.integers(0, 10**4))
    if draw(st.booleans()):
        policy["coldStorageAfterHours"] = draw(st.integers(1, 10**4))
    if draw(st.booleans()):
        policy["note"] = draw(JSON)
    return policy


def _location(line: int) -> Location:
    return Location("manifests/catalog.yaml", line, line + 5)


@st.composite
def catalogs(draw: st.DrawFn) -> list[Desired]:
    """≤ 2 storage targets, ≤ 3 datasets, ≤ 6 records in 1–2 namespaces, random fields set."""
    out: list[Desired] = []
    line = 1
    targets = draw(st.lists(st.sampled_from(TARGET_NAMES), unique=True, max_size=2))
    for name in targets:
        fields: dict[str, Any] = {"type": draw(st.sampled_from(("clickhouse", "local", "s3", "gcs",
                                                                 "azure_blob")))}
        if draw(st.booleans()):
            fields["description"] = draw(st.none() | TEXT)
        if draw(st.booleans()):
            fields["config"] = draw(METADATA)
        out.append(Desired(f"storage-target:{name}", "storage-target", fields, _location(line)))
        line += 10
    for slug in draw(st.lists(st.sampled_from(SLUGS), unique=True, max_size=3)):
        fields = {"name": draw(NONEMPTY_TEXT)}  # the only field a Dataset manifest must set
        if draw(st.booleans()):
            fields["description"] = draw(st.none() | TEXT)
        if draw(st.booleans()):
            fields["status"] = draw(st.sampled_from(("active", "inactive")))
        if draw(st.booleans()):
            fields["storageTarget"] = draw(st.none() | st.sampled_from(targets)) if targets else None
        if draw(st.booleans()):
            fields["metadata"] = draw(METADATA)
        if draw(st.booleans()):
            fields["retention"] = draw(st.none() | retention())
        out.append(Desired(f"dataset:{slug}", "dataset", fields, _location(line)))
        line += 10
    namespaces = draw(st.lists(st.sampled_from(("ns-a", "ns-b")), unique=True, min_size=1, max_size=2))
    ids = draw(st.lists(st.sampled_from([r for r in RECORD_IDS if r[0] in namespaces]), unique=True,
                        max_size=6))
    for namespace, key in ids:
        fields = {}
        if draw(st.booleans()):
            fields["owner"] = draw(st.none() | NONEMPTY_TEXT)
        if draw(st.booleans()):
            fields["tags"] = draw(TAGS)
        if draw(st.booleans()):
            fields["schemaHash"] = draw(st.none() | TEXT.filter(lambda s: len(s) >= 6))
        if draw(st.booleans()):
            fields["metadata"] = draw(METADATA)
        if draw(st.booleans()):
            fields["deleted"] = draw(st.booleans())
        out.append(Desired(f"record:{namespace}/{key}", "record", fields, _location(line)))
        line += 10
    return out


INDEX = st.integers(0, 9)
EDITS = st.one_of(
    # Ingestion and the services add their own keys.
    st.tuples(st.just("dataset-foreign"), INDEX, FOREIGN_KEYS, FOREIGN_VALUES),
    st.tuples(st.just("record-foreign"), INDEX, FOREIGN_KEYS, FOREIGN_VALUES),
    st.tuples(st.just("retention-foreign"), INDEX, FOREIGN_KEYS, FOREIGN_VALUES),
    # Someone changes a managed field (drift), as the services write it.
    st.tuples(st.just("dataset-name"), INDEX, NONEMPTY_TEXT),
    st.tuples(st.just("dataset-description"), INDEX, st.none() | TEXT),
    st.tuples(st.just("dataset-status"), INDEX),
    st.tuples(st.just("dataset-storage-target"), INDEX, INDEX),
    st.tuples(st.just("dataset-metadata-key"), INDEX, INDEX, JSON),
    st.tuples(st.just("dataset-metadata-drop"), INDEX, INDEX),
    st.tuples(st.just("retention-key"), INDEX, INDEX, JSON),
    st.tuples(st.just("record-owner"), INDEX, st.none() | NONEMPTY_TEXT),
    st.tuples(st.just("record-tags"), INDEX, TAGS),
    st.tuples(st.just("record-schema-hash"), INDEX, st.none() | TEXT.filter(lambda s: len(s) >= 6)),
    st.tuples(st.just("record-metadata-key"), INDEX, INDEX, JSON),
    st.tuples(st.just("record-soft-delete"), INDEX),
    st.tuples(st.just("record-restore"), INDEX),
    # Ingestion creates objects of its own (some of which a later tree may adopt).
    st.tuples(st.just("insert-record"), st.sampled_from((*RECORD_IDS, INGESTED_RECORD)), FOREIGN_METADATA,
              st.none() | NONEMPTY_TEXT, TAGS),
    st.tuples(st.just("insert-dataset"), st.sampled_from((*SLUGS, INGESTED_SLUG)), NONEMPTY_TEXT,
              FOREIGN_METADATA),
)
FOREIGN_EDITS = st.one_of(
    st.tuples(st.just("dataset-foreign"), INDEX, FOREIGN_KEYS, FOREIGN_VALUES),
    st.tuples(st.just("record-foreign"), INDEX, FOREIGN_KEYS, FOREIGN_VALUES),
    st.tuples(st.just("retention-foreign"), INDEX, FOREIGN_KEYS, FOREIGN_VALUES),
    st.tuples(st.just("insert-record"), st.sampled_from((*RECORD_IDS, INGESTED_RECORD)), FOREIGN_METADATA,
              st.none() | NONEMPTY_TEXT, TAGS),
    st.tuples(st.just("insert-dataset"), st.sampled_from((*SLUGS, INGESTED_SLUG)), NONEMPTY_TEXT,
              FOREIGN_METADATA),
)


# --- out-of-band edits, in SQL ---------------------------------------------------------------

_BUMP_DATASET = "updated_at = GREATEST(clock_timestamp(), updated_at + interval '1 millisecond')"
_BUMP_RECORD = f"version = version + 1, updated_at = clock_timestamp(), updated_by = '{SERVICE_ACTOR}'"


def _pick(rows: Sequence[Any], index: int) -> Any:
    return rows[index % len(rows)] if rows else None


def _owned_keys(value: Any) -> list[str]:
    return sorted(k for k in (value or {}) if not k.startswith(FOREIGN))


def perform(conn: psycopg.Connection[Any], edit: tuple[Any, ...]) -> None:
    """Make one out-of-band edit as the services or ingestion would (no-op if it has no target)."""
    op = edit[0]
    slugs = [r[0] for r in conn.execute("SELECT slug FROM timestore.datasets ORDER BY slug")]
    records = conn.execute("SELECT id FROM metastore.metastore_records ORDER BY namespace, record_key").fetchall()
    slug = _pick(slugs, edit[1]) if isinstance(edit[1], int) else None
    record = _pick(records, edit[1])[0] if records and isinstance(edit[1], int) else None
    if op == "dataset-foreign" and slug:
        conn.execute("UPDATE timestore.datasets SET metadata = metadata || jsonb_build_object(%s::text, %s::jsonb), "
                     f"{_BUMP_DATASET} WHERE slug = %s", (edit[2], edit[3], slug))
    elif op == "record-foreign" and record:
        conn.execute("UPDATE metastore.metastore_records SET metadata = metadata || "
                     f"jsonb_build_object(%s::text, %s::jsonb), {_BUMP_RECORD} WHERE id = %s", (edit[2], edit[3], record))
    elif op == "retention-foreign" and slug:
        _upsert_policy(conn, slug, "{" + json.dumps(edit[2]) + ": " + edit[3] + "}")
    elif op == "dataset-name" and slug:
        conn.execute(f"UPDATE timestore.datasets SET name = %s, {_BUMP_DATASET} WHERE slug = %s", (edit[2], slug))
    elif op == "dataset-description" and slug:
        conn.execute(f"UPDATE timestore.datasets SET description = %s, {_BUMP_DATASET} WHERE slug = %s",
                     (edit[2], slug))
    elif op == "dataset-status" and slug:
        conn.execute("UPDATE timestore.datasets SET status = CASE status WHEN 'active' THEN 'inactive' "
                     f"ELSE 'active' END, {_BUMP_DATASET} WHERE slug = %s", (slug,))
    elif op == "dataset-storage-target" and slug:
        targets = [None, *(r[0] for r in conn.execute("SELECT id FROM timestore.storage_targets ORDER BY id"))]
        conn.execute(f"UPDATE timestore.datasets SET default_storage_target_id = %s, {_BUMP_DATASET} "
                     "WHERE slug = %s", (_pick(targets, edit[2]), slug))
    elif op in ("dataset-metadata-key", "dataset-metadata-drop") and slug:
        row = conn.execute("SELECT metadata FROM timestore.datasets WHERE slug = %s", (slug,)).fetchone()
        key = _pick(_owned_keys(row[0] if row else None), edit[2])  # only keys a tree set: drift, not a new owner
        if key is not None and op == "dataset-metadata-key":
            conn.execute(f"UPDATE timestore.datasets SET metadata = metadata || %s, {_BUMP_DATASET} "
                         "WHERE slug = %s", (Jsonb({key: edit[3]}), slug))
        elif key is not None:
            conn.execute(f"UPDATE timestore.datasets SET metadata = metadata - %s, {_BUMP_DATASET} "
                         "WHERE slug = %s", (key, slug))
    elif op == "retention-key" and slug:
        row = conn.execute("SELECT p.policy FROM timestore.dataset_retention_policies p JOIN timestore.datasets d "
                           "ON d.id = p.dataset_id WHERE d.slug = %s", (slug,)).fetchone()
        key = _pick(_owned_keys(row[0]), edit[2]) if row else None
        if key is not None:
            _upsert_policy(conn, slug, json.dumps({key: edit[3]}))
    elif op == "record-owner" and record:
        conn.execute(f"UPDATE metastore.metastore_records SET owner = %s, {_BUMP_RECORD} WHERE id = %s",
                     (edit[2], record))
    elif op == "record-tags" and record:
        conn.execute(f"UPDATE metastore.metastore_records SET tags = %s, {_BUMP_RECORD} WHERE id = %s",
                     (list(dict.fromkeys(edit[2])), record))  # the service de-duplicates
    elif op == "record-schema-hash" and record:
        conn.execute(f"UPDATE metastore.metastore_records SET schema_hash = %s, {_BUMP_RECORD} WHERE id = %s",
                     (edit[2], record))
    elif op == "record-metadata-key" and record:
        row = conn.execute("SELECT metadata FROM metastore.metastore_records WHERE id = %s", (record,)).fetchone()
        key = _pick(_owned_keys(row[0] if row else None), edit[2])
        if key is not None:
            conn.execute(f"UPDATE metastore.metastore_records SET metadata = metadata || %s, {_BUMP_RECORD} "
                         "WHERE id = %s", (Jsonb({key: edit[3]}), record))
    elif op == "record-soft-delete" and record:
        conn.execute(f"UPDATE metastore.metastore_records SET deleted_at = clock_timestamp(), {_BUMP_RECORD} "
                     "WHERE id = %s AND deleted_at IS NULL", (record,))
    elif op == "record-restore" and record:
        conn.execute(f"UPDATE metastore.metastore_records SET deleted_at = NULL, {_BUMP_RECORD} "
                     "WHERE id = %s AND deleted_at IS NOT NULL", (record,))
    elif op == "insert-record":
        (namespace, key), metadata, owner, tags = edit[1:]
        conn.execute("INSERT INTO metastore.metastore_records (namespace, record_key, metadata, owner, tags, "
                     "created_by, updated_by) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                     "ON CONFLICT (namespace, record_key) DO NOTHING",
                     (namespace, key, Jsonb(metadata), owner, list(dict.fromkeys(tags)), SERVICE_ACTOR,
                      SERVICE_ACTOR))
    elif op == "insert-dataset":
        new_slug, name, metadata = edit[1:]
        conn.execute("INSERT INTO timestore.datasets (id, slug, name, metadata) VALUES (%s, %s, %s, %s) "
                     "ON CONFLICT (slug) DO NOTHING", (f"ds-{uuid.uuid4()}", new_slug, name, Jsonb(metadata)))


def _upsert_policy(conn: psycopg.Connection[Any], slug: str, keys: str) -> None:
    """Merge keys (a JSON object's text) into the dataset's policy, as the timestore service does."""
    conn.execute(
        """INSERT INTO timestore.dataset_retention_policies AS p (dataset_id, policy, updated_at)
           SELECT id, %s::jsonb, clock_timestamp() FROM timestore.datasets WHERE slug = %s
           ON CONFLICT (dataset_id) DO UPDATE SET policy = p.policy || EXCLUDED.policy,
               updated_at = GREATEST(clock_timestamp(), p.updated_at + interval '1 millisecond')""",
        (keys, slug))


# --- reading the catalog back ----------------------------------------------------------------


def catalog_rows(conn: psycopg.Connection[Any]) -> dict[str, dict[str, Any]]:
    """Every storage target, dataset (with its policy) and record, by address, as plain dicts."""
    out: dict[str, dict[str, Any]] = {}
    for name, row in conn.execute("SELECT name, to_jsonb(t) FROM timestore.storage_targets t"):
        out[f"storage-target:{name}"] = row
    for slug, row, target, policy, policy_row in conn.execute(
            """SELECT d.slug, to_jsonb(d), st.name, p.policy, to_jsonb(p)
               FROM timestore.datasets d
               LEFT JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id
               LEFT JOIN timestore.dataset_retention_policies p ON p.dataset_id = d.id"""):
        out[f"dataset:{slug}"] = {**row, "target_name": target, "policy": policy, "policy_row": policy_row}
    for namespace, key, row in conn.execute(
            "SELECT namespace, record_key, to_jsonb(r) FROM metastore.metastore_records r"):
        out[f"record:{namespace}/{key}"] = row
    return out


def owned(value: Any) -> dict[str, Any]:
    """A JSON object without the keys ingestion and the services own."""
    return {k: v for k, v in (value or {}).items() if not k.startswith(FOREIGN)}


def assert_catalog_matches(conn: psycopg.Connection[Any], objects: Sequence[Desired]) -> None:
    """Every declared object is in the catalog with every field its manifest sets."""
    rows = catalog_rows(conn)
    for desired in objects:
        row = rows.get(desired.address)
        assert row is not None, f"{desired.address} is not in the catalog"
        fields = desired.fields
        where = desired.address
        if desired.kind == "storage-target":
            assert row["kind"] == fields["type"], where
            if "description" in fields:
                assert row["description"] == fields["description"], where
            if "config" in fields:
                assert same("config", row["config"], fields["config"]), (where, row["config"])
        elif desired.kind == "dataset":
            assert row["name"] == fields["name"], where
            assert row["status"] == fields.get("status", "active"), where
            if "description" in fields:
                assert row["description"] == fields["description"], where
            if "storageTarget" in fields:
                assert row["target_name"] == fields["storageTarget"], where
            assert same("metadata", owned(row["metadata"]), fields.get("metadata") or {}), (where, row["metadata"])
            assert same("retention", owned(row["policy"]), fields.get("retention") or {}), (where, row["policy"])
            if not fields.get("retention") and not row["policy"]:
                assert row["policy_row"] is None or fields.get("retention") == {}, where
        else:
            assert (row["deleted_at"] is not None) == bool(fields.get("deleted", False)), where
            if "owner" in fields:
                assert row["owner"] == fields["owner"], where
            if "schemaHash" in fields:
                assert row["schema_hash"] == fields["schemaHash"], where
            if "tags" in fields:  # stored trimmed as JavaScript trims, without empty or repeated tags (SPEC §2)
                expected = {js_trimmed(t) for t in fields["tags"]} - {""}
                assert set(row["tags"]) == expected, (where, row["tags"])
            assert same("metadata", owned(row["metadata"]), fields.get("metadata") or {}), (where, row["metadata"])


def assert_converged(url: str, objects: Sequence[Desired]) -> None:
    again = plan_for(url, objects)
    assert describe_plan(again) == [], "apply did not converge: the next plan still has changes"
    assert again.bookkeeping == (), [(b.address, b.reason) for b in again.bookkeeping]
    assert again.errors == ()


def managed_addresses(conn: psycopg.Connection[Any]) -> set[str]:
    return {r[0] for r in conn.execute("SELECT address FROM reconciler.managed_objects")}


SNAPSHOT_TABLES = ("timestore.storage_targets", "timestore.datasets", "timestore.dataset_retention_policies",
                   "timestore.dataset_access_audit", "timestore.lifecycle_audit_log",
                   "metastore.metastore_records", "metastore.metastore_record_audits",
                   "reconciler.managed_objects", "reconciler.audit_log")


def snapshot(conn: psycopg.Connection[Any]) -> dict[str, list[str]]:
    """Every row of every catalog and bookkeeping table, as text."""
    return {table: [r[0] for r in conn.execute(f"SELECT to_jsonb(t)::text FROM {table} t ORDER BY 1")]
            for table in SNAPSHOT_TABLES}


def _removed(objects: Sequence[Desired], mask: Sequence[bool]) -> set[str]:
    removable = [d.address for d in objects if d.kind in ("dataset", "record")]
    return {a for a, drop in zip(removable, mask) if drop}


# --- the properties --------------------------------------------------------------------------


@PROPERTY_SETTINGS
@given(objects=catalogs())
def test_apply_then_plan_converges_from_an_empty_catalog(db_url: str,
                                                         objects: list[Desired]) -> None:
    with empty_catalog(db_url) as url:
        first = apply_desired(url, objects)
        assert {c.action for c in first.changes} <= {"create"}
        assert_converged(url, objects)
        with psycopg.connect(url, autocommit=True) as conn:
            assert_catalog_matches(conn, objects)
            assert managed_addresses(conn) == {d.address for d in objects}


@PROPERTY_SETTINGS
@given(before=catalogs(), edits=st.lists(EDITS, max_size=8), objects=catalogs())
def test_apply_then_plan_converges_after_out_of_band_edits(db_url: str,
                                                           before: list[Desired], edits: list[tuple[Any, ...]],
                                                           objects: list[Desired]) -> None:
    with empty_catalog(db_url) as url, psycopg.connect(url, autocommit=True) as conn:
        apply_desired(url, before)
        for edit in edits:
            perform(conn, edit)
        managed = managed_addresses(conn)
        declared = {d.address for d in objects}
        untouched = {a: row for a, row in catalog_rows(conn).items() if a not in managed and a not in declared}
        apply_desired(url, objects)
        assert_converged(url, objects)
        assert_catalog_matches(conn, objects)
        rows = catalog_rows(conn)
        for address in sorted(managed - declared):  # removed from the tree: archived, never deleted
            kind = address.split(":", 1)[0]
            if kind == "dataset":
                assert rows[address]["status"] == "inactive", address
            elif kind == "record":
                assert rows[address]["deleted_at"] is not None, address
            else:
                assert address in rows
        for address, row in untouched.items():  # unmanaged and undeclared: never changed
            assert rows[address] == row, address
        assert managed_addresses(conn) == managed | declared


@PROPERTY_SETTINGS
@given(before=catalogs(), edits=st.lists(EDITS, max_size=6), objects=catalogs())
def test_applying_the_same_desired_twice_changes_nothing_the_second_time(
        db_url: str, before: list[Desired], edits: list[tuple[Any, ...]],
        objects: list[Desired]) -> None:
    with empty_catalog(db_url) as url, psycopg.connect(url, autocommit=True) as conn:
        apply_desired(url, before)
        for edit in edits:
            perform(conn, edit)
        apply_desired(url, objects)
        after_first = snapshot(conn)
        second = plan_for(url, objects)
        assert describe_plan(second) == [] and second.bookkeeping == ()
        result = apply_plan(workspace(url), second, ApplyOptions())
        assert result.outcome == "no-op" and result.objects == []
        assert snapshot(conn) == after_first  # no row changed, no audit row written anywhere


@PROPERTY_SETTINGS
@given(first=catalogs(), rounds=st.lists(st.tuples(st.lists(FOREIGN_EDITS, min_size=1, max_size=4), catalogs()),
                                         min_size=1, max_size=3))
def test_keys_the_reconciler_does_not_own_survive_every_later_apply(
        db_url: str, first: list[Desired],
        rounds: list[tuple[list[tuple[Any, ...]], list[Desired]]]) -> None:
    with empty_catalog(db_url) as url, psycopg.connect(url, autocommit=True) as conn:
        apply_desired(url, first)
        written: dict[tuple[str, str, str], str] = {}  # (address, column, key) → the JSON ingestion wrote
        for edits, objects in rounds:
            for edit in edits:
                perform(conn, edit)
            written.update(foreign_values(conn))
            apply_desired(url, objects)
            now = foreign_values(conn)
            for (address, column, key), value in sorted(written.items()):
                assert (address, column, key) in now, f"{address} {column}: key {key} was dropped"
                kept = conn.execute("SELECT %s::jsonb = %s::jsonb", (value, now[(address, column, key)])).fetchone()
                assert kept == (True,), (f"{address} {column}: key {key} changed from {value} "
                                         f"to {now[(address, column, key)]}")
            assert_converged(url, objects)


def foreign_values(conn: psycopg.Connection[Any]) -> dict[tuple[str, str, str], str]:
    """Every key ingestion or the services own, with its value as the catalog's JSON text."""
    rows = conn.execute(
        r"""SELECT 'dataset:' || d.slug, 'metadata', e.key, e.value::text
            FROM timestore.datasets d, jsonb_each(d.metadata) e WHERE e.key LIKE 'ing\_%'
            UNION ALL
            SELECT 'dataset:' || d.slug, 'retention', e.key, e.value::text
            FROM timestore.dataset_retention_policies p JOIN timestore.datasets d ON d.id = p.dataset_id,
                 jsonb_each(p.policy) e WHERE e.key LIKE 'ing\_%'
            UNION ALL
            SELECT 'record:' || r.namespace || '/' || r.record_key, 'metadata', e.key, e.value::text
            FROM metastore.metastore_records r, jsonb_each(r.metadata) e WHERE e.key LIKE 'ing\_%'""").fetchall()
    return {(address, column, key): value for address, column, key, value in rows}


@PROPERTY_SETTINGS
@given(objects=catalogs(), drop=st.lists(st.booleans(), min_size=9, max_size=9))
def test_archive_then_restore_round_trips_every_field(db_url: str,
                                                      objects: list[Desired], drop: list[bool]) -> None:
    removed = _removed(objects, drop)
    assume(removed)
    with empty_catalog(db_url) as url, psycopg.connect(url, autocommit=True) as conn:
        apply_desired(url, objects)
        first = catalog_rows(conn)
        audits_before = _audit_actions(conn)
        apply_desired(url, [d for d in objects if d.address not in removed])
        archived = catalog_rows(conn)
        for address in removed:
            if address.startswith("dataset:"):
                assert archived[address]["status"] == "inactive", address
            else:
                assert archived[address]["deleted_at"] is not None, address
            moving: tuple[str, ...] = ("status", "updated_at", "deleted_at", "version", "updated_by")
            assert _without(archived[address], moving) == _without(first[address], moving), address
        for address in first.keys() - removed:
            assert archived[address] == first[address], address
        apply_desired(url, objects)
        assert_converged(url, objects)
        restored = catalog_rows(conn)
        assert restored.keys() == first.keys()
        for address in sorted(first):
            moving = ("updated_at", "version", "updated_by") if address in removed else ()
            assert _without(restored[address], moving) == _without(first[address], moving), address
            if address in removed and address.startswith("record:"):
                assert restored[address]["version"] == first[address]["version"] + (
                    0 if first[address]["deleted_at"] else 2), address
        new_audits = _audit_actions(conn) - audits_before
        expected = set()
        for address in removed:
            was_archived = (first[address]["status"] == "inactive" if address.startswith("dataset:")
                            else first[address]["deleted_at"] is not None)
            if not was_archived:
                expected |= ({(address, "admin.dataset.archived"), (address, "admin.dataset.updated")}
                             if address.startswith("dataset:") else {(address, "delete"), (address, "restore")})
        assert new_audits == expected


def _without(row: dict[str, Any], names: Sequence[str]) -> dict[str, Any]:
    out = {k: v for k, v in row.items() if k not in names}
    if "policy_row" in out and out["policy_row"] is not None:
        out["policy_row"] = {k: v for k, v in out["policy_row"].items() if k != "updated_at"}
    return out


def _audit_actions(conn: psycopg.Connection[Any]) -> set[tuple[str, str]]:
    rows = conn.execute("SELECT 'dataset:' || dataset_slug, action FROM timestore.dataset_access_audit "
                        "UNION ALL SELECT 'record:' || namespace || '/' || record_key, action "
                        "FROM metastore.metastore_record_audits").fetchall()
    counted: dict[tuple[str, str], int] = {}
    for row in rows:
        counted[row] = counted.get(row, 0) + 1
    assert all(n == 1 or action in ("admin.dataset.updated", "update") for (_, action), n in counted.items())
    return set(counted)


@PROPERTY_SETTINGS
@given(objects=catalogs())
def test_record_tags_reach_the_catalog_trimmed_and_de_duplicated(db_url: str,
                                                                 objects: list[Desired]) -> None:
    """SPEC §2: the services keep tags trimmed and de-duplicated, and the reconciler follows them."""
    with empty_catalog(db_url) as url, psycopg.connect(url, autocommit=True) as conn:
        apply_desired(url, objects)
        for namespace, key, tags in conn.execute("SELECT namespace, record_key, tags FROM metastore.metastore_records"):
            assert tags == list(dict.fromkeys(js_trimmed(t) for t in tags)), (namespace, key, tags)
        for namespace, key, tags in conn.execute(
                "SELECT namespace, record_key, tags FROM metastore.metastore_record_audits"):
            assert tags == list(dict.fromkeys(js_trimmed(t) for t in tags)), (namespace, key, tags)
