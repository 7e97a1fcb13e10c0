"""Set-based writes of a plan's changes, with the services' audit rows, inside the caller's transaction."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from reconciler.core.diff import same
from reconciler.errors import ConflictError, DatabaseError, LockTimeout, ReconcilerError
from reconciler.core.service_rules import normalize_tags
from reconciler.core.checks import check_unmoved, moved_since_plan
from reconciler.catalog.postgres import service_audit
from reconciler.core.service_rules import new_id
from reconciler.catalog.postgres.connection import explain
from reconciler.catalog.postgres.locks import describe_holder
from reconciler.catalog.postgres.reading import dataset_live, record_live, storage_target_live
from reconciler.catalog.port import Managed as Managed  # the values a backend writes
from reconciler.catalog.port import Write as Write


# --- re-checking -------------------------------------------------------------------------

# Who holds what the plan touches, as the holder lookups name a session.
_SESSION = sql.SQL(
    """SELECT a.application_name, a.usename, a.client_addr::text,
              to_char(a.xact_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
       FROM pg_stat_activity a WHERE a.pid = ANY(ARRAY({pids})) AND a.pid <> pg_backend_pid()
       ORDER BY a.xact_start LIMIT 1""")

# A session holding a catalog table in a mode that stops writes (a migration, LOCK TABLE).
_TABLE_HOLDER = _SESSION.format(pids=sql.SQL(
    """SELECT l.pid FROM pg_locks l
       JOIN pg_class c ON c.oid = l.relation
       JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE l.locktype = 'relation' AND l.granted
         AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
         AND n.nspname IN ('timestore', 'metastore', 'reconciler')
         AND l.mode IN ('ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock')"""))

# The session whose open transaction locked or changed a row the plan touches: a row's
# xmax is the transaction that last locked or updated it, and a running transaction holds
# the lock on its own id. (Rows locked by several sessions at once carry a multixact id
# instead, and are not traced.)
_ROW_HOLDER = _SESSION.format(pids=sql.SQL(
    """WITH touched AS (
           SELECT r.xmax::text AS xid FROM metastore.metastore_records r
           JOIN unnest(%(namespaces)s::text[], %(keys)s::text[]) AS k(namespace, record_key)
             ON r.namespace = k.namespace AND r.record_key = k.record_key
           UNION SELECT d.xmax::text FROM timestore.datasets d WHERE d.slug = ANY(%(slugs)s)
           UNION SELECT p.xmax::text FROM timestore.dataset_retention_policies p
                 JOIN timestore.datasets d ON d.id = p.dataset_id WHERE d.slug = ANY(%(slugs)s)
           UNION SELECT s.xmax::text FROM timestore.storage_targets s WHERE s.name = ANY(%(names)s)
           UNION SELECT m.xmax::text FROM reconciler.managed_objects m WHERE m.address = ANY(%(addresses)s))
       SELECT l.pid FROM pg_locks l
       WHERE l.locktype = 'transactionid' AND l.granted
         AND l.transactionid::text IN (SELECT xid FROM touched WHERE xid <> '0')"""))


def _row_holder(conn: psycopg.Connection[Any], addresses: Collection[str]) -> str:
    """The session holding a table or a row the plan touches, named as ``locks.describe_holder`` names it.

    Best effort, after the apply's transaction was rolled back: the tables are looked at
    first, since reading the rows would wait behind a session holding a whole table.
    """
    if conn.closed or conn.broken:
        return describe_holder(None)
    ids = {kind: [identity(a) for a in addresses if a.startswith(kind + ":")]
           for kind in ("record", "dataset", "storage-target")}
    params = {"namespaces": [i.split("/", 1)[0] for i in ids["record"]],
              "keys": [i.split("/", 1)[1] for i in ids["record"]],
              "slugs": ids["dataset"], "names": ids["storage-target"], "addresses": list(addresses)}
    try:
        with conn.transaction():
            conn.execute("SELECT set_config('lock_timeout', '1s', true)")
            row = conn.execute(_TABLE_HOLDER).fetchone() or conn.execute(_ROW_HOLDER, params).fetchone()
    except psycopg.Error:
        row = None
    return describe_holder(row)


_RECHECK = {
    "storage-target": (sql.SQL(
        """SELECT name, kind, description, config,
                  to_char(updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
           FROM timestore.storage_targets WHERE name = ANY(%s) FOR UPDATE"""), storage_target_live),
    "dataset": (sql.SQL(
        """SELECT d.slug, d.name, d.description, d.status, st.name, d.metadata, rp.policy,
                  to_char(d.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
                  to_char(rp.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')
           FROM timestore.datasets d
           LEFT JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id
           LEFT JOIN timestore.dataset_retention_policies rp ON rp.dataset_id = d.id
           WHERE d.slug = ANY(%s) FOR UPDATE OF d"""), dataset_live),
    "record": (sql.SQL(
        """SELECT r.namespace, r.record_key, r.owner, r.tags, r.schema_hash, r.metadata,
                  r.deleted_at IS NOT NULL, r.version,
                  to_char(r.updated_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'), r.updated_by
           FROM metastore.metastore_records r
           JOIN unnest(%s::text[], %s::text[]) AS k(namespace, record_key)
             ON r.namespace = k.namespace AND r.record_key = k.record_key
           FOR UPDATE OF r"""), record_live),
}


def identity(address: str) -> str:
    """The part of an address after ``kind:``."""
    return address.split(":", 1)[1]


def recheck(conn: psycopg.Connection[Any], expected: Mapping[str, tuple[str, str | None]],
            source: str) -> None:
    """Lock every object the plan touches and compare it with what the plan saw.

    ``expected`` maps address → (kind, token the plan saw; None = must not exist).
    Any difference raises one ConflictError naming every object that moved.
    """
    problems: list[str] = []
    for kind, (query, build) in _RECHECK.items():
        wanted = {a: t for a, (k, t) in expected.items() if k == kind}
        if not wanted:
            continue
        found = {}
        ids = [identity(a) for a in wanted]
        params = ([i.split("/", 1)[0] for i in ids], [i.split("/", 1)[1] for i in ids]) \
            if kind == "record" else (ids,)
        with conn.cursor() as cur:
            cur.execute(query, params)
            for row in cur:
                obj = build(row)
                found[obj.address] = obj
        problems += moved_since_plan(wanted, found)
    others = conn.execute(
        "SELECT address, source FROM reconciler.managed_objects WHERE address = ANY(%s) AND source <> %s",
        (list(expected), source),
    ).fetchall()
    check_unmoved(problems, others)


# --- storage targets -------------------------------------------------------------------------


_STORAGE_TARGET_COLUMNS = frozenset({"type", "description", "config"})


def write_storage_targets(conn: psycopg.Connection[Any], writes: Sequence[Write]) -> None:
    """Create or update storage targets (ids ``st-<name>``, as the service names its own).

    A change of ``protect`` alone is the reconciler's bookkeeping: the row (and its
    updated_at) is left alone. Purges are ``purge_storage_targets``, after the datasets.
    """
    upserts = [w for w in writes if w.action == "create"
               or (w.action != "purge" and _STORAGE_TARGET_COLUMNS & set(w.fields))]
    with conn.cursor() as cur:
        cur.executemany(
            """INSERT INTO timestore.storage_targets (id, name, kind, description, config)
               VALUES (%s, %s, %s, %s, %s)
               ON CONFLICT (name) DO UPDATE SET kind = EXCLUDED.kind, description = EXCLUDED.description,
                   config = EXCLUDED.config,
                   updated_at = GREATEST(clock_timestamp(), timestore.storage_targets.updated_at
                                         + interval '1 millisecond')""",
            [("st-" + identity(w.address), identity(w.address), _a(w, "type"), _a(w, "description"),
              Jsonb(_a(w, "config") or {})) for w in upserts],
        )


def purge_storage_targets(conn: psycopg.Connection[Any], writes: Sequence[Write]) -> None:
    """Delete storage targets marked for purge (after datasets, which may point at them).

    The plan refuses a purge while a dataset uses the target; one that started using it
    since makes the whole apply fail, naming it.
    """
    names = [identity(w.address) for w in writes if w.action == "purge"]
    if not names:
        return
    try:
        with conn.transaction():
            conn.execute("DELETE FROM timestore.storage_targets WHERE name = ANY(%s)", (names,))
    except psycopg.errors.ForeignKeyViolation:
        users = conn.execute(_STORAGE_TARGET_USERS, {"names": names}).fetchall()
        listed = ", ".join(f"dataset:{slug} ({why} storage-target:{name})" for name, slug, why in users)
        raise ConflictError(f"cannot purge storage target(s) {', '.join(names)}: datasets started using them "
                            f"since the plan: {listed or 'unknown'}; nothing was applied") from None


# Who uses the storage targets: as their default target, or with partitions stored there.
_STORAGE_TARGET_USERS = sql.SQL(
    """SELECT st.name, d.slug, 'points at' FROM timestore.datasets d
       JOIN timestore.storage_targets st ON st.id = d.default_storage_target_id WHERE st.name = ANY(%(names)s)
       UNION SELECT st.name, d.slug, 'has partitions on' FROM timestore.dataset_partitions p
       JOIN timestore.storage_targets st ON st.id = p.storage_target_id
       JOIN timestore.datasets d ON d.id = p.dataset_id WHERE st.name = ANY(%(names)s)
       ORDER BY 1, 2, 3""")


def _a(write: Write, name: str) -> Any:
    return (write.after or {}).get(name)


def metadata_patch(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> tuple[list[str], dict[str, Any]]:
    """The keys to drop from the live metadata and the keys to set, for ``(m - drop) || set``.

    Apply patches metadata in SQL rather than writing the merged object back, so keys
    the reconciler leaves alone keep their exact stored values (numbers beyond a
    float's precision included): they never travel through Python.
    """
    before, after = before or {}, after or {}
    drop = [key for key in before if key not in after]
    changed = {key: value for key, value in after.items()
               if key not in before or not same("metadata", before[key], value)}
    return drop, changed


def _metadata_patch(write: Write) -> tuple[list[str], Jsonb]:
    return _patch(metadata_patch((write.before or {}).get("metadata"), _a(write, "metadata")))


def _patch(patch: tuple[list[str], dict[str, Any]]) -> tuple[list[str], Jsonb]:
    return patch[0], Jsonb(patch[1])


# --- datasets --------------------------------------------------------------------------------

# The manifest fields that are columns of timestore.datasets (the rest, retention and
# protect, live elsewhere).
_DATASET_COLUMNS = frozenset({"name", "description", "status", "storageTarget", "metadata"})
_INSERT_DATASET = sql.SQL(
    """INSERT INTO timestore.datasets (id, slug, name, description, status, default_storage_target_id,
           metadata)
       VALUES (%s, %s, %s, %s, %s, (SELECT id FROM timestore.storage_targets WHERE name = %s), %s)""")
# Metadata is patched, not replaced (metadata_patch).
_UPDATE_DATASET = service_audit.dataset_update("slug", sql.SQL(
    """name = %(name)s, description = %(description)s, status = %(status)s,
       default_storage_target_id = (SELECT st.id FROM timestore.storage_targets st WHERE st.name = %(target)s),
       metadata = (d.metadata - %(drop)s::text[]) || %(set)s"""))
_DATASET_CREATED = service_audit.dataset_event("slug", service_audit.DATASET_CREATED,
                                               service_audit.created_metadata)
_DATASET_PURGED = service_audit.dataset_event("slug", service_audit.DATASET_PURGED, service_audit.purged_metadata)
_RETENTION_EVENT = service_audit.retention_event("slug")


def write_datasets(conn: psycopg.Connection[Any], writes: Sequence[Write], *, run_id: str | None = None) -> None:
    """Write dataset changes and, in the same transaction, the audit rows the timestore
    writes for the same operations (catalog/service_audit.py).

    Columns change only when a column field changed; a retention-only change writes
    the policy and its lifecycle row and leaves the dataset row (and its updated_at) alone.
    The audit rows carry ``run_id`` (as ``reconcilerRunId``) in their free-form JSON, so
    they can be matched with the reconciler's own log.
    """
    creates = [w for w in writes if w.action == "create"]
    column_changes = [w for w in writes if w.action in ("update", "archive", "restore")
                      and _DATASET_COLUMNS & set(w.fields)]
    purges = [w for w in writes if w.action == "purge"]
    with conn.cursor() as cur:
        cur.executemany(
            _INSERT_DATASET,
            [(new_id("ds"), identity(w.address), _a(w, "name"), _a(w, "description"), _a(w, "status"),
              _a(w, "storageTarget"), Jsonb(_a(w, "metadata") or {})) for w in creates],
        )
        cur.executemany(_DATASET_CREATED, [_audited(w, run_id) for w in creates])
        cur.executemany(_UPDATE_DATASET, [_dataset_update(w, run_id) for w in column_changes])
        _write_retention(cur, [w for w in writes if w.action != "purge"
                               and (w.action == "create" or "retention" in w.fields)], run_id)
        cur.executemany(_DATASET_PURGED, [_audited(w, run_id) for w in purges])
        cur.executemany("DELETE FROM timestore.datasets WHERE slug = %s",
                        [(identity(w.address),) for w in purges])


def _audited(write: Write, run_id: str | None) -> dict[str, Any]:
    return {"audit_id": new_id("da"), "actor": write.actor, "key": identity(write.address), "run_id": run_id}


def _dataset_update(write: Write, run_id: str | None) -> dict[str, Any]:
    drop, changed = _metadata_patch(write)
    # An archive that changes nothing but the status is the timestore's archive; one that
    # changes other columns too is a PATCH of them all (the archive endpoint changes only
    # the status), audited as an update.
    archived = write.action == "archive" and set(write.fields) & _DATASET_COLUMNS == {"status"}
    return {**_audited(write, run_id), "name": _a(write, "name"), "description": _a(write, "description"),
            "status": _a(write, "status"), "target": _a(write, "storageTarget"), "drop": drop, "set": changed,
            "archived": archived}


def _write_retention(cur: psycopg.Cursor[Any], writes: Sequence[Write], run_id: str | None = None) -> None:
    sets = [w for w in writes if _a(w, "retention") is not None]
    drops = [w for w in writes if _a(w, "retention") is None and w.action != "create"]
    # A new policy is written whole; an existing one is patched in SQL, like metadata, so
    # keys someone else owns keep their exact stored values.
    cur.executemany(
        """INSERT INTO timestore.dataset_retention_policies (dataset_id, policy, updated_at)
           SELECT id, %s, clock_timestamp() FROM timestore.datasets WHERE slug = %s
           ON CONFLICT (dataset_id) DO UPDATE
           SET policy = (timestore.dataset_retention_policies.policy - %s::text[]) || %s::jsonb,
               updated_at = clock_timestamp()""",
        [(Jsonb(_a(w, "retention")), identity(w.address),
          *_patch(metadata_patch((w.before or {}).get("retention"), _a(w, "retention")))) for w in sets],
    )
    cur.executemany(
        """DELETE FROM timestore.dataset_retention_policies
           WHERE dataset_id = (SELECT id FROM timestore.datasets WHERE slug = %s)""",
        [(identity(w.address),) for w in drops],
    )
    cur.executemany(_RETENTION_EVENT, [{"event_id": new_id("la"), "actor": w.actor, "key": identity(w.address),
                                        "run_id": run_id} for w in [*sets, *drops]])


# --- records ---------------------------------------------------------------------------------

_STAGE = sql.SQL(
    """CREATE TEMP TABLE reconciler_stage_records (
           action text NOT NULL, namespace text NOT NULL, record_key text NOT NULL, owner text,
           tags text[] NOT NULL, schema_hash text, metadata jsonb NOT NULL, deleted boolean NOT NULL,
           actor text NOT NULL, metadata_drop text[] NOT NULL DEFAULT '{}', steps smallint NOT NULL DEFAULT 1
       ) ON COMMIT DROP""")

_AUDIT_INSERT = sql.SQL("INSERT INTO metastore.metastore_record_audits ({})").format(
    service_audit.RECORD_AUDIT_COLUMNS)

# A record created already deleted leaves what the metastore leaves for a create then a
# delete: version 2, a create row at version 1 and a delete row from 1 to 2. The audit rows
# are ordered by record and version (the output's first and seventh columns).
_RECORD_CREATE = sql.SQL(
    """WITH ins AS (
           INSERT INTO metastore.metastore_records AS r (namespace, record_key, metadata, tags, owner,
                  schema_hash, version, deleted_at, created_by, updated_by)
           SELECT namespace, record_key, metadata, tags, owner, schema_hash,
                  CASE WHEN deleted THEN 2 ELSE 1 END, CASE WHEN deleted THEN now() END, actor, actor
           FROM reconciler_stage_records WHERE action = 'create'
           RETURNING r.*),
       created AS (
           SELECT id, namespace, record_key, metadata, tags, owner, schema_hash, 1 AS version, created_by,
                  deleted_at
           FROM ins)
       {insert}
       SELECT {created} FROM created c
       UNION ALL
       SELECT {deleted} FROM ins i JOIN created c ON c.id = i.id WHERE i.deleted_at IS NOT NULL
       ORDER BY 1, 7""").format(
    insert=_AUDIT_INSERT,
    created=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_CREATED), sql.SQL("c.created_by"),
                                              "c", None),
    deleted=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_DELETED), sql.SQL("i.created_by"),
                                              "i", "c"))

# Each change is one version and one audit row, with the action the metastore writes for
# it; an archive that also changes fields (steps = 2) is the metastore's update then its
# delete: two versions, and the state between them in both rows.
_RECORD_UPDATE = sql.SQL(
    """WITH prev AS (
           SELECT r.* FROM metastore.metastore_records r JOIN reconciler_stage_records s
             ON s.namespace = r.namespace AND s.record_key = r.record_key
           WHERE s.action IN ('update', 'archive', 'restore')),
       upd AS (
           UPDATE metastore.metastore_records r
           SET metadata = (r.metadata - s.metadata_drop) || s.metadata, tags = s.tags, owner = s.owner,
               schema_hash = s.schema_hash,
               deleted_at = CASE WHEN s.deleted THEN coalesce(r.deleted_at, now()) END,
               version = r.version + s.steps, updated_at = now(), updated_by = s.actor
           FROM reconciler_stage_records s
           WHERE s.namespace = r.namespace AND s.record_key = r.record_key
             AND s.action IN ('update', 'archive', 'restore')
           RETURNING r.*, s.action AS staged_action, s.actor AS staged_actor, s.steps),
       mid AS (
           SELECT id, namespace, record_key, metadata, tags, owner, schema_hash, version - 1 AS version
           FROM upd WHERE steps = 2)
       {insert}
       SELECT {one} FROM upd u JOIN prev p ON p.id = u.id WHERE u.steps = 1
       UNION ALL
       SELECT {first} FROM upd u JOIN prev p ON p.id = u.id JOIN mid m ON m.id = u.id
       UNION ALL
       SELECT {second} FROM upd u JOIN mid m ON m.id = u.id
       ORDER BY 1, 7""").format(
    insert=_AUDIT_INSERT,
    one=service_audit.record_audit_values(
        sql.SQL("CASE u.staged_action WHEN 'archive' THEN {} WHEN 'restore' THEN {} ELSE {} END").format(
            sql.Literal(service_audit.RECORD_DELETED), sql.Literal(service_audit.RECORD_RESTORED),
            sql.Literal(service_audit.RECORD_UPDATED)),
        sql.SQL("u.staged_actor"), "u", "p"),
    first=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_UPDATED), sql.SQL("u.staged_actor"),
                                            "m", "p"),
    second=service_audit.record_audit_values(sql.Literal(service_audit.RECORD_DELETED), sql.SQL("u.staged_actor"),
                                             "u", "m"))

_RECORD_PURGE = service_audit.purge_records(
    sql.SQL("SELECT namespace, record_key FROM reconciler_stage_records WHERE action = 'purge'"))

# The record fields an archive can change besides the deletion itself.
_RECORD_VALUES = frozenset({"owner", "tags", "schemaHash", "metadata"})

PROGRESS_EVERY = 2_000  # rows staged between two progress reports


def write_records(conn: psycopg.Connection[Any], writes: Sequence[Write],
                  on_rows: Callable[[int], None] | None = None) -> None:
    """Stage every record change with COPY, then write each action as one set-based statement.

    Each statement also writes the metastore's audit rows for the change, exactly as the
    metastore writes them for the same operations (catalog/service_audit.py), and bumps
    ``version`` by one per operation. A purge deletes the key's audit rows and writes
    none, as the metastore's purge does. The rows cross the wire once (the server copies
    them into the records and their audit rows); a statement whose action has no rows is
    not sent, as it would scan the staging table for nothing.
    """
    if not writes:
        return
    conn.execute(_STAGE)
    actions = set()
    with conn.cursor() as cur:
        with cur.copy("COPY reconciler_stage_records (action, namespace, record_key, owner, tags, "
                      "schema_hash, metadata, deleted, actor, metadata_drop, steps) FROM STDIN") as copy:
            for staged, w in enumerate(writes, start=1):
                if on_rows is not None and staged % PROGRESS_EVERY == 0:
                    on_rows(staged)
                actions.add(w.action)
                namespace, key = identity(w.address).split("/", 1)
                fields = w.after or w.before or {}
                # Creates carry the whole metadata; updates a patch (staged metadata = the keys to set).
                drop, changed = metadata_patch((w.before or {}).get("metadata"), fields.get("metadata")) \
                    if w.action != "create" else ([], fields.get("metadata") or {})
                steps = 2 if w.action == "archive" and _RECORD_VALUES & set(w.fields) else 1
                copy.write_row((w.action, namespace, key, fields.get("owner"),
                                text_array(normalize_tags(fields.get("tags"))), fields.get("schemaHash"),
                                json.dumps(changed), bool(fields.get("deleted")), w.actor, text_array(drop), steps))
        if on_rows is not None and len(writes) % PROGRESS_EVERY:
            on_rows(len(writes))
        for statement, wanted in ((_RECORD_CREATE, {"create"}), (_RECORD_UPDATE, {"update", "archive", "restore"}),
                                  (_RECORD_PURGE, {"purge"})):
            if actions & wanted:
                cur.execute(statement)
    conn.execute("DROP TABLE reconciler_stage_records")


def text_array(values: Sequence[str] | None) -> str:
    """A PostgreSQL text[] literal (``{"a","b"}``) for COPY: every element quoted, so any
    text is safe, and built without the driver's generic (per-element) array dumper."""
    if not values:
        return "{}"
    return "{" + ",".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "}"


# --- the reconciler's own bookkeeping ----------------------------------------------------------


# What an object archived because it is no longer declared was last applied as: its archived state.
_ARCHIVED_STATE = {"dataset": {"status": "inactive"}, "record": {"deleted": True}}


def write_managed(conn: psycopg.Connection[Any], rows: Sequence[Managed], forget: Sequence[str],
                  source: str, run_id: str, *, removed: Sequence[tuple[str, str]] = (),
                  commit: str | None = None) -> None:
    """Record what was applied (the next plan's "last applied"); forget purged objects.

    ``removed`` (address, kind) were archived because no manifest declares them any more:
    their last applied state becomes the archived one, so that declaring them again is a
    change the manifest asks for (a restore), as it is.

    Objects recorded for the first time go straight in with COPY; a row some source
    created meanwhile fails the apply as a concurrent writer. The others are staged
    and upserted, and only this source's rows are changed.
    """
    known = {address for (address,) in conn.execute(
        "SELECT address FROM reconciler.managed_objects WHERE address = ANY(%s)", ([m.address for m in rows],))}
    with conn.cursor() as cur:
        new = [m for m in rows if m.address not in known]
        if new:
            with cur.copy("COPY reconciler.managed_objects (address, kind, source, applied, protect, commit_sha, "
                          "path, line, end_line, run_id, secret_paths) FROM STDIN") as copy:
                for m in new:
                    copy.write_row((m.address, m.kind, source, json.dumps(m.applied), m.protect, m.commit, m.path,
                                    m.line, m.end_line, run_id, text_array(sorted(m.secret_paths))))
        again = [m for m in rows if m.address in known]
        if again:
            _update_managed(cur, again, source, run_id)
        if forget:
            cur.execute("DELETE FROM reconciler.managed_objects WHERE address = ANY(%s) AND source = %s",
                        (list(forget), source))
        for kind, state in _ARCHIVED_STATE.items():
            addresses = [address for address, of in removed if of == kind]
            if addresses:
                cur.execute(
                    """UPDATE reconciler.managed_objects SET applied = applied || %s, commit_sha = %s,
                           run_id = %s, applied_at = now(), declared = false
                       WHERE address = ANY(%s) AND source = %s""",
                    (Jsonb(state), commit, run_id, addresses, source))


def _update_managed(cur: psycopg.Cursor[Any], rows: Sequence[Managed], source: str, run_id: str) -> None:
    cur.execute(
        """CREATE TEMP TABLE reconciler_stage_managed (address text, kind text, applied jsonb,
               protect boolean, commit_sha text, path text, line integer, end_line integer,
               secret_paths text[]) ON COMMIT DROP""")
    with cur.copy("COPY reconciler_stage_managed FROM STDIN") as copy:
        for m in rows:
            copy.write_row((m.address, m.kind, json.dumps(m.applied), m.protect, m.commit, m.path,
                            m.line, m.end_line, text_array(sorted(m.secret_paths))))
    # A path that held a secret is remembered for good (its old value stays masked).
    cur.execute(
        """INSERT INTO reconciler.managed_objects AS m (address, kind, source, applied, protect,
               commit_sha, path, line, end_line, run_id, applied_at, secret_paths)
           SELECT address, kind, %s, applied, protect, commit_sha, path, line, end_line, %s, now(), secret_paths
           FROM reconciler_stage_managed
           ON CONFLICT (address) DO UPDATE SET applied = EXCLUDED.applied, protect = EXCLUDED.protect,
               declared = true,
               secret_paths = ARRAY(SELECT DISTINCT p FROM unnest(m.secret_paths || EXCLUDED.secret_paths) AS p
                                    ORDER BY p),
               commit_sha = EXCLUDED.commit_sha, path = EXCLUDED.path, line = EXCLUDED.line,
               end_line = EXCLUDED.end_line, run_id = EXCLUDED.run_id, applied_at = now()
           WHERE m.source = EXCLUDED.source""",
        (source, run_id),
    )
    cur.execute("DROP TABLE reconciler_stage_managed")


def translate(error: psycopg.Error, conn: psycopg.Connection[Any] | None = None, *,
              touched: Collection[str] = (), lock_timeout: float | None = None) -> ReconcilerError:
    """A database failure during apply, as one clear line, once the apply's transaction is rolled back.

    ``conn`` (the apply's connection) is used to name what the failure was about: the
    session holding a row of the ``touched`` objects when a lock wait ran out of the
    ``lock_timeout`` budget, or the statement_timeout in force when a statement was cancelled.
    """
    if isinstance(error, psycopg.errors.LockNotAvailable) and lock_timeout is not None:
        holder = _row_holder(conn, touched) if conn is not None else describe_holder(None)
        return LockTimeout(f"an object the plan touches is locked by another session ({holder}); "
                           f"gave up after {lock_timeout:g} s (--lock-timeout); nothing was applied")
    text = explain(error, conn)
    if isinstance(error, psycopg.errors.UniqueViolation):
        return ConflictError(f"a concurrent writer created the same object: {text}; nothing was applied")
    return DatabaseError(f"apply failed and was rolled back; nothing was applied: {text}")
