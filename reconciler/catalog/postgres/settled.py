"""Files a plan need not read again: unchanged since the source's last apply, and every
object they declare still exactly as that apply left it.

The last apply of a source records each manifest file it read (``reconciler.applied_files``:
content digest, how many objects it declared, the reading rules). A later plan of the
same source passes over a file when, in one snapshot of the catalog:

- its bytes have that digest and were read by the same rules,
- the record is the source's latest applied run (any other apply, by an older release
  or of a saved or narrowed plan, makes every record stale),
- the file's objects are all records, as many as it declared, each managed by the
  source and naming the file, and
- each still holds every applied value, with an omitted ``deleted`` still false and
  its ``datasetSlug`` naming a dataset the catalog holds.

For such a file the full comparison would find nothing to do (``diff.unchanged`` for
every object, no broken link), so the plan leaves its objects out of the tree, the
live state and the applied state alike.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import psycopg
from psycopg import sql

from reconciler import __version__
from reconciler.core.plan import FileDigest
from reconciler.catalog.postgres.kinds.record import RECORD_IN_SYNC

# Bump when reading a byte-identical file could give other objects than before
# (manifest rules, defaults, how RecordSets merge).
READING_RULES: Final = f"reconciler {__version__}; rules 1"


_LATEST_RUN = """SELECT run_id FROM reconciler.runs WHERE source = %s AND outcome = 'applied'
                 ORDER BY finished_at DESC NULLS LAST, started_at DESC LIMIT 1"""

def last_applied_commit(conn: psycopg.Connection[Any], source: str) -> tuple[str | None, bool]:
    """The commit the source's latest applied run applied (None: never applied, or not from git),
    and whether that run applied the whole tree with nothing uncommitted (``runs.complete``)."""
    row = conn.execute(_LATEST_COMMIT, (source,)).fetchone()
    return (row[0], bool(row[1])) if row else (None, False)


_LATEST_COMMIT = """SELECT commit_sha, complete FROM reconciler.runs WHERE source = %s AND outcome = 'applied'
                    ORDER BY finished_at DESC NULLS LAST, started_at DESC LIMIT 1"""

_RECORDED = """SELECT path, digest, objects FROM reconciler.applied_files
               WHERE source = %s AND loader = %s AND run_id = %s"""

# Each object's verdict is computed before grouping (OFFSET 0 keeps the planner from
# carrying every jsonb document into the sort or hash of the GROUP BY).
_FILES_IN_SYNC = sql.SQL(
    """SELECT path, count(*), bool_and(ok) FROM (
           SELECT m.path,
                  r.id IS NOT NULL AND coalesce({in_sync}, false)
                  AND (m.applied ? 'deleted' OR r.deleted_at IS NULL)
                  AND (jsonb_typeof(m.applied->'metadata'->'datasetSlug') IS DISTINCT FROM 'string'
                       OR EXISTS (SELECT 1 FROM timestore.datasets d
                                  WHERE d.slug = m.applied->'metadata'->>'datasetSlug')) AS ok
           FROM reconciler.managed_objects m
           LEFT JOIN metastore.metastore_records r
                  ON m.kind = 'record' AND m.address = 'record:' || r.namespace || '/' || r.record_key
           WHERE m.source = %s AND m.path = ANY(%s)
           OFFSET 0) AS verdicts
       GROUP BY path"""
).format(in_sync=RECORD_IN_SYNC)


def settled_files(conn: psycopg.Connection[Any], source: str, files: Iterable[FileDigest]) -> dict[str, int]:
    """The files (path → objects declared) a plan of ``source`` may pass over, decided in the
    transaction ``conn`` is in (read it in the same snapshot as the rest of the state)."""
    latest = conn.execute(_LATEST_RUN, (source,)).fetchone()
    if latest is None:
        return {}
    recorded = {path: (digest, objects)
                for path, digest, objects in conn.execute(_RECORDED, (source, READING_RULES, latest[0]))}
    candidates = {f.path: recorded[f.path][1] for f in files if recorded.get(f.path, ("", 0))[0] == f.digest}
    if not candidates:
        return {}
    found = {path: (count, in_sync) for path, count, in_sync
             in conn.execute(_FILES_IN_SYNC, (source, list(candidates)))}
    return {path: objects for path, objects in candidates.items()
            if found.get(path, (0, True)) == (objects, True)}


_ASCII_UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def lookalikes_in(conn: psycopg.Connection[Any], source: str, paths: Collection[str],
                  folded: Collection[str]) -> list[str]:
    """Addresses the settled ``paths`` declare that may equal one of ``folded`` (addresses
    with letter case and Unicode normalisation taken out) once folded themselves: every
    ASCII address whose lower case is among them, and every address beyond ASCII (the
    caller folds those exactly). Lower case is taken by hand, whatever the collation."""
    if not paths:
        return []
    rows = conn.execute(
        """SELECT address FROM reconciler.managed_objects
           WHERE source = %s AND path = ANY(%s)
             AND (address ~ '[^\\x01-\\x7f]' OR translate(address, %s, %s) = ANY(%s))""",
        (source, list(paths), _ASCII_UPPER, _ASCII_UPPER.lower(), list(folded)))
    return [address for (address,) in rows]


def record_files(conn: psycopg.Connection[Any], source: str, run_id: str, files: Mapping[str, FileDigest]) -> None:
    """Replace the source's record of the files its last apply read (inside the apply)."""
    conn.execute("DELETE FROM reconciler.applied_files WHERE source = %s", (source,))
    rows = [(source, f.path, f.digest, f.objects, READING_RULES, run_id)
            for f in files.values() if f.objects is not None]
    if rows:
        with conn.cursor() as cur, cur.copy(
                "COPY reconciler.applied_files (source, path, digest, objects, loader, run_id) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
