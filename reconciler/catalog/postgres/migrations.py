"""The migration runner: applies the SQL files in ``migrations/`` in order, once each, checksummed."""

from __future__ import annotations

import getpass
import hashlib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

import reconciler
from psycopg import sql

from reconciler.errors import DatabaseError, MigrationError
from reconciler.catalog.postgres.connection import connection, explain, translated

# The lock the timestore service takes around its own migrations; we hold it while
# a file of ours changes schema timestore so the two never interleave.
TIMESTORE_LOCK_KEY = "timestore:migrations"
# Serialises reconciler migration runs against each other.
RECONCILER_LOCK_KEY = "reconciler:migrations"
HISTORY_FAILED = "reading the migration history failed"

_FILE_NAME = re.compile(r"^(?P<version>\d{4,})_(?P<name>[a-z0-9_]+)\.sql$")
_TOUCHES_TIMESTORE = re.compile(r"\btimestore\s*\.", re.IGNORECASE)

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS reconciler;
CREATE TABLE IF NOT EXISTS reconciler.migration_history (
    version text PRIMARY KEY,
    filename text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text,
    execution_ms integer
);
"""


@dataclass(frozen=True)
class Migration:
    """One SQL file of the migrations directory."""

    version: str
    filename: str
    sql_text: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the file's text: an edited applied file is refused, not re-run."""
        return hashlib.sha256(self.sql_text.encode("utf-8")).hexdigest()

    @property
    def touches_timestore(self) -> bool:
        """Whether the file changes schema timestore (and so needs the service's lock)."""
        return bool(_TOUCHES_TIMESTORE.search(self.sql_text))


@dataclass(frozen=True)
class AppliedMigration:
    """One row of ``reconciler.migration_history``."""

    version: str
    filename: str
    checksum: str


def migrations_dir() -> Path:
    """Where the SQL files are: inside the installed wheel, else the source checkout."""
    package = Path(reconciler.__file__).resolve().parent  # the reconciler package's own directory
    for candidate in (package / "_data" / "migrations", package.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"the migrations directory is missing from this installation ({package})")


def load_migrations(directory: Path | None = None) -> list[Migration]:
    """Every migration file in ``directory``, ordered by version; bad names are refused."""
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _FILE_NAME.fullmatch(path.name)
        if not match:
            raise MigrationError(
                f"{path}: migration files are named NNNN_lowercase_name.sql"
            )
        found.append(Migration(match["version"], path.name, path.read_text(encoding="utf-8")))
    versions = [m.version for m in found]
    duplicates = sorted({v for v in versions if versions.count(v) > 1})
    if duplicates:
        raise MigrationError(f"{directory}: more than one migration numbered {', '.join(duplicates)}")
    return found


def applied_migrations(conn: psycopg.Connection[Any]) -> list[AppliedMigration]:
    """The history recorded in the catalog (empty when it has never been migrated)."""
    exists = conn.execute("SELECT to_regclass('reconciler.migration_history') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return []
    rows = conn.execute(
        "SELECT version, filename, checksum FROM reconciler.migration_history ORDER BY version"
    ).fetchall()
    return [AppliedMigration(*row) for row in rows]


def pending_migrations(
    available: Sequence[Migration], applied: Sequence[AppliedMigration]
) -> list[Migration]:
    """The files still to apply, after checking the history against the files.

    Refuses (MigrationError) when an applied file was edited since, or when the
    catalog records a migration this installation does not have (it is newer).
    """
    by_version = {m.version: m for m in available}
    problems: list[str] = []
    for done in applied:
        current = by_version.get(done.version)
        if current is None:
            problems.append(
                f"the catalog has migration {done.filename}, which this reconciler does not "
                "know: it was migrated by a newer release; upgrade reconciler"
            )
        elif current.checksum != done.checksum:
            problems.append(
                f"migration {current.filename} was edited after it was applied "
                f"(applied checksum {done.checksum[:12]}, file now {current.checksum[:12]}); "
                "restore the file and put the change in a new migration"
            )
    if problems:
        raise MigrationError("; ".join(problems))
    done_versions = {d.version for d in applied}
    return [m for m in available if m.version not in done_versions]


def render_pending_sql(pending: Sequence[Migration]) -> str:
    """The SQL a migrate run would execute, for pipelines that run migrations themselves."""
    if not pending:
        return "-- The catalog schema is up to date; nothing to apply.\n"
    parts = ["-- reconciler: pending migrations. Run each block in its own transaction.\n", _BOOTSTRAP]
    for migration in pending:
        parts.append(f"\n-- >>> {migration.filename} (sha256 {migration.checksum})\nBEGIN;\n")
        if migration.touches_timestore:
            parts.append(f"SELECT pg_advisory_xact_lock(hashtext('{TIMESTORE_LOCK_KEY}'));\n")
        parts.append(migration.sql_text.rstrip() + "\n")
        parts.append(
            "INSERT INTO reconciler.migration_history (version, filename, checksum, applied_by)\n"
            f"    VALUES ('{migration.version}', '{migration.filename}', '{migration.checksum}', current_user);\n"
            "COMMIT;\n"
        )
    return "".join(parts)


def _advisory_lock(conn: psycopg.Connection[Any], key: str, *, transaction: bool) -> None:
    func = "pg_advisory_xact_lock" if transaction else "pg_advisory_lock"
    conn.execute(sql.SQL("SELECT {}(hashtext(%s))").format(sql.Identifier(func)), (key,))


def _apply_one(conn: psycopg.Connection[Any], migration: Migration, applier: str) -> None:
    with conn.transaction():
        if migration.touches_timestore:
            _advisory_lock(conn, TIMESTORE_LOCK_KEY, transaction=True)
        started = conn.execute("SELECT clock_timestamp()").fetchone()
        conn.execute(migration.sql_text.encode("utf-8"))  # several statements: simple protocol
        conn.execute(
            """
            INSERT INTO reconciler.migration_history (version, filename, checksum, applied_by, execution_ms)
            VALUES (%s, %s, %s, %s,
                    (extract(epoch FROM clock_timestamp() - %s::timestamptz) * 1000)::integer)
            """,
            (migration.version, migration.filename, migration.checksum, applier, started[0] if started else None),
        )


def migrate(
    url: str,
    *,
    directory: Path | None = None,
    on_applied: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Bring the catalog up to date; returns the migrations applied (none the second time).

    Each file runs in its own transaction together with its history row, under the
    reconciler's migration lock (and the timestore service's lock for files that
    change schema timestore). A failing file rolls back alone and stops the run.
    """
    available = load_migrations(directory)
    applier = _applier()
    applied_now: list[Migration] = []
    with connection(url, autocommit=True) as conn:
        try:
            _advisory_lock(conn, RECONCILER_LOCK_KEY, transaction=False)
            conn.execute(_BOOTSTRAP.encode("utf-8"))
            pending = pending_migrations(available, applied_migrations(conn))
            for migration in pending:
                try:
                    _apply_one(conn, migration, applier)
                except psycopg.Error as error:
                    raise MigrationError(
                        f"migration {migration.filename} failed and was rolled back: {explain(error, conn, url)}"
                    ) from error
                applied_now.append(migration)
                if on_applied:
                    on_applied(migration)
        except psycopg.Error as error:
            raise DatabaseError(f"migrating the catalog failed: {explain(error, conn, url)}") from error
        finally:
            if not conn.closed and not conn.broken:
                conn.execute("SELECT pg_advisory_unlock_all()")
    return applied_now


def pending_sql(url: str, *, directory: Path | None = None) -> str:
    """The SQL of the migrations not yet applied to the catalog at ``url``; changes nothing."""
    available = load_migrations(directory)
    with connection(url, autocommit=True) as conn, translated(HISTORY_FAILED, conn, url):
        applied = applied_migrations(conn)
    return render_pending_sql(pending_migrations(available, applied))


def ensure_migrated(url: str) -> None:
    """Refuse to work on a catalog whose schema is behind this reconciler."""
    available = load_migrations()
    with connection(url, autocommit=True) as conn, translated(HISTORY_FAILED, conn, url):
        pending = pending_migrations(available, applied_migrations(conn))
    if pending:
        names = ", ".join(m.filename for m in pending)
        raise MigrationError(f"the catalog schema is not up to date (pending: {names}); run `reconciler migrate`")


def _applier() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"
