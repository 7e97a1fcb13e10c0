"""The audit rows the platform's services write for each operation, as SQL shared by apply's writer and the repository layer.

One definition per shape, each the service's own (docs/architecture.md, "Sharing the
catalog with the services", names the service code):

- timestore ``dataset_access_audit``: the dataset snapshot of ``serializeDatasetForAudit``,
  ``fieldsChanged`` as ``diffDatasets`` computes it, and the metadata of a create, an
  update (PATCH), an archive and a purge;
- timestore ``lifecycle_audit_log``: ``admin.retention.updated`` with
  ``{datasetId, datasetSlug, policy, actor}``;
- metastore ``metastore_record_audits``: one row per change with the new and the
  previous state (``writeAuditEntry``), and a purge that deletes the key's rows and
  writes none (``hardDeleteRecord``).

Snapshots are built by the server from the rows themselves, in the statement that
changes them, so no writer restates a row's values, and the writer stays set-based.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from psycopg import sql

DATASET_CREATED: Final = "admin.dataset.created"
DATASET_UPDATED: Final = "admin.dataset.updated"
DATASET_ARCHIVED: Final = "admin.dataset.archived"
DATASET_PURGED: Final = "admin.dataset.purged"
RETENTION_UPDATED: Final = "admin.retention.updated"

RECORD_CREATED: Final = "create"
RECORD_UPDATED: Final = "update"
RECORD_DELETED: Final = "delete"
RECORD_RESTORED: Final = "restore"

# The fields diffDatasets compares, in its order: (the key in the audit row, the column).
DATASET_COMPARED: Final = (
    ("name", "name"),
    ("description", "description"),
    ("status", "status"),
    ("defaultStorageTargetId", "default_storage_target_id"),
    ("metadata", "metadata"),
)

Builder = Callable[[str], sql.Composable]


def _column(alias: str, column: str) -> sql.Composed:
    return sql.SQL("{}.{}").format(sql.Identifier(alias), sql.Identifier(column))


def js_timestamp(alias: str, column: str) -> sql.Composed:
    """A timestamptz as JSON.stringify writes the JavaScript Date the services read it
    into: UTC, milliseconds, ``Z`` (``2025-01-31T12:00:00.123Z``)."""
    return sql.SQL("""to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')""").format(
        _column(alias, column))


def dataset_snapshot(alias: str) -> sql.Composed:
    """The dataset row ``alias`` as ``serializeDatasetForAudit`` writes it."""
    pairs = [("id", "id"), ("slug", "slug"), ("name", "name"), ("description", "description"),
             ("status", "status"), ("writeFormat", "write_format"),
             ("defaultStorageTargetId", "default_storage_target_id"), ("metadata", "metadata")]
    parts = [sql.SQL("{}, {}").format(sql.Literal(key), _column(alias, column)) for key, column in pairs]
    parts.append(sql.SQL("'updatedAt', {}").format(js_timestamp(alias, "updated_at")))
    return sql.SQL("jsonb_build_object({})").format(sql.SQL(", ").join(parts))


# The timestore's PATCH cannot change a slug, so diffDatasets never names one; a rename is
# written as that PATCH with ``slug`` first in ``fieldsChanged``, so the row says what changed.
RENAME_COMPARED: Final = (("slug", "slug"), *DATASET_COMPARED)


def fields_changed(before: str, after: str, compared: tuple[tuple[str, str], ...] = DATASET_COMPARED
                   ) -> sql.Composed:
    """``diffDatasets(before, after)``: the keys of the compared fields whose values
    differ, in its order, as a JSON array (metadata compared as JSON, keys unordered)."""
    cases = [sql.SQL("CASE WHEN {} IS DISTINCT FROM {} THEN {} END").format(
        _column(before, column), _column(after, column), sql.Literal(key)) for key, column in compared]
    return sql.SQL("to_jsonb(array_remove(ARRAY[{}]::text[], NULL))").format(sql.SQL(", ").join(cases))


def created_metadata(alias: str) -> sql.Composed:
    """POST /admin/datasets: the request as ``createAuditRequestSnapshot`` records it (every
    field, defaults filled in), the new dataset, no idempotency key, ``created: true``."""
    request = sql.SQL(", ").join(
        sql.SQL("{}, {}").format(sql.Literal(key), _column(alias, column))
        for key, column in [("slug", "slug"), ("name", "name"), ("description", "description"),
                            ("status", "status"), ("writeFormat", "write_format"),
                            ("defaultStorageTargetId", "default_storage_target_id"), ("metadata", "metadata")])
    return sql.SQL(
        "jsonb_build_object('request', jsonb_build_object({request}), 'dataset', {dataset}, "
        "'idempotencyKey', NULL, 'created', true)").format(request=request, dataset=dataset_snapshot(alias))


def updated_metadata(before: str, after: str, compared: tuple[tuple[str, str], ...] = DATASET_COMPARED
                     ) -> sql.Composed:
    """PATCH /admin/datasets/:id: both snapshots in full and ``fieldsChanged``."""
    return sql.SQL("jsonb_build_object('before', {}, 'after', {}, 'fieldsChanged', {})").format(
        dataset_snapshot(before), dataset_snapshot(after), fields_changed(before, after, compared))


def archived_metadata(before: str, after: str) -> sql.Composed:
    """POST /admin/datasets/:id/archive: both snapshots, no reason, not idempotent (a
    dataset already inactive is never archived again)."""
    return sql.SQL("jsonb_build_object('before', {}, 'after', {}, 'reason', NULL, 'idempotent', false)").format(
        dataset_snapshot(before), dataset_snapshot(after))


def purged_metadata(alias: str) -> sql.Composed:
    """The timestore has no purge of its own: the row carries the deleted dataset the way
    its created row does (``dataset``), and the retention policy that goes with it."""
    return sql.SQL(
        "jsonb_build_object('dataset', {}, 'retentionPolicy', "
        "(SELECT p.policy FROM timestore.dataset_retention_policies p WHERE p.dataset_id = {}))").format(
        dataset_snapshot(alias), _column(alias, "id"))


# The reconciler's run id, added to the free-form JSON of every row it writes (the services
# read their own keys and ignore others), so each row can be matched with the reconciler's
# log; absent (``%(run_id)s`` null) for writes of the repository layer.
_RUN_TAG: Final = sql.SQL("jsonb_strip_nulls(jsonb_build_object('reconcilerRunId', %(run_id)s::text))")


def tagged(metadata: sql.Composable) -> sql.Composed:
    """``metadata`` with the run id added (parameter ``run_id``, null: nothing added)."""
    return sql.SQL("({}) || {}").format(metadata, _RUN_TAG)


_DATASET_AUDIT_INSERT = sql.SQL(
    "INSERT INTO timestore.dataset_access_audit "
    "(id, dataset_id, dataset_slug, actor_id, action, success, metadata, created_at)")


def dataset_event(key_column: str, action: str, metadata: Builder) -> sql.Composed:
    """One successful ``dataset_access_audit`` row ``action`` about the dataset whose
    ``key_column`` is ``%(key)s``, its metadata built from the row as it is now.

    Parameters: ``audit_id`` (``da-<uuid4>``), ``actor``, ``key``, ``run_id``. ``created_at`` is
    ``clock_timestamp()``, so rows written in one transaction keep their order.
    """
    return sql.SQL(
        "{insert} SELECT %(audit_id)s, d.id, d.slug, %(actor)s, {action}, true, {metadata}, clock_timestamp() "
        "FROM timestore.datasets d WHERE d.{key} = %(key)s").format(
        insert=_DATASET_AUDIT_INSERT, action=sql.Literal(action), metadata=tagged(metadata("d")),
        key=sql.Identifier(key_column))


def dataset_update(key_column: str, assignments: sql.Composable,
                   compared: tuple[tuple[str, str], ...] = DATASET_COMPARED) -> sql.Composed:
    """Change the dataset whose ``key_column`` is ``%(key)s`` and audit it, in one statement.

    ``assignments`` set columns of ``d`` (qualify column references on the right with
    ``d.``); ``updated_at`` moves forward by at least a millisecond (the services'
    concurrency token). The audit row is the timestore's PATCH (``admin.dataset.updated``
    with both snapshots and ``fieldsChanged``), or, with ``%(archived)s`` true, its
    archive (``admin.dataset.archived``). Parameters: those of ``assignments``, and
    ``key``, ``audit_id``, ``actor``, ``archived``, ``run_id``. ``compared``: the fields
    ``fieldsChanged`` names (``RENAME_COMPARED`` for a rename).
    """
    return sql.SQL(
        """WITH b AS (SELECT * FROM timestore.datasets WHERE {key} = %(key)s),
                a AS (UPDATE timestore.datasets AS d SET {assignments},
                          updated_at = GREATEST(clock_timestamp(), d.updated_at + interval '1 millisecond')
                      FROM b WHERE d.id = b.id RETURNING d.*)
           {insert}
           SELECT %(audit_id)s, a.id, a.slug, %(actor)s,
                  CASE WHEN %(archived)s THEN {archived_action} ELSE {updated_action} END, true,
                  CASE WHEN %(archived)s THEN {archived} ELSE {updated} END, clock_timestamp()
           FROM a JOIN b ON b.id = a.id""").format(
        key=sql.Identifier(key_column), assignments=assignments, insert=_DATASET_AUDIT_INSERT,
        archived_action=sql.Literal(DATASET_ARCHIVED), updated_action=sql.Literal(DATASET_UPDATED),
        archived=tagged(archived_metadata("b", "a")), updated=tagged(updated_metadata("b", "a", compared)))


def retention_event(key_column: str) -> sql.Composed:
    """The ``lifecycle_audit_log`` row PUT /admin/datasets/:id/retention writes, for the
    dataset whose ``key_column`` is ``%(key)s``: payload ``{datasetId, datasetSlug,
    policy, actor}`` with the policy as stored now (null once it was removed, which the
    timestore itself never does). Parameters: ``event_id`` (``la-<uuid4>``), ``actor``, ``key``,
    ``run_id`` (added as ``reconcilerRunId``; null: nothing added).
    """
    return sql.SQL(
        """INSERT INTO timestore.lifecycle_audit_log (id, dataset_id, manifest_id, event_type, payload, created_at)
           SELECT %(event_id)s, d.id, NULL, {event},
                  jsonb_build_object('datasetId', d.id, 'datasetSlug', d.slug, 'policy', p.policy,
                                     'actor', %(actor)s::text) || {run_tag},
                  clock_timestamp()
           FROM timestore.datasets d LEFT JOIN timestore.dataset_retention_policies p ON p.dataset_id = d.id
           WHERE d.{key} = %(key)s""").format(event=sql.Literal(RETENTION_UPDATED), key=sql.Identifier(key_column),
                                                run_tag=_RUN_TAG)


# --- records ---------------------------------------------------------------------------------

RECORD_AUDIT_COLUMNS: Final = sql.SQL(
    "record_id, namespace, record_key, action, actor, previous_version, version, metadata, previous_metadata, "
    "tags, previous_tags, owner, previous_owner, schema_hash, previous_schema_hash")

# Each audited column of a record with the type its NULL takes when there is no previous state.
_AUDITED: Final = (("version", "integer"), ("metadata", "jsonb"), ("tags", "text[]"), ("owner", "text"),
                   ("schema_hash", "text"))


def record_audit_values(action: sql.Composable, actor: sql.Composable, new: str,
                        previous: str | None) -> sql.Composed:
    """The values of one ``metastore_record_audits`` row, in ``RECORD_AUDIT_COLUMNS`` order,
    as ``writeAuditEntry`` fills them: the record's state after the change (row alias
    ``new``) and before it (``previous``; None for a create, whose previous values are NULL)."""
    values: list[sql.Composable] = [_column(new, "id"), _column(new, "namespace"), _column(new, "record_key"),
                                    action, actor]
    for column, type_name in _AUDITED:
        before = _column(previous, column) if previous else sql.SQL("NULL::{}").format(sql.SQL(type_name))
        # previous_version comes before version; every other previous_* after its column.
        values.extend([before, _column(new, column)] if column == "version" else [_column(new, column), before])
    return sql.SQL(", ").join(values)


def purge_records(targets: sql.Composable) -> sql.Composed:
    """Hard-delete records as ``hardDeleteRecord`` does: every ``metastore_record_audits``
    row of each key goes too, and none is written, so a key used again later starts a
    fresh history and no old version can be restored into it. ``targets`` is a query of
    ``(namespace, record_key)``. (The reconciler's own audit log keeps the purge and the
    history before it.)"""
    return sql.SQL(
        """WITH t AS ({targets}),
                history AS (DELETE FROM metastore.metastore_record_audits a USING t
                            WHERE a.namespace = t.namespace AND a.record_key = t.record_key)
           DELETE FROM metastore.metastore_records r USING t
           WHERE r.namespace = t.namespace AND r.record_key = t.record_key""").format(targets=targets)
