"""``audit export``: the audit log (or its runs) written to Parquet or CSV, with typed columns."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from reconciler.core import runs as run_chain
from reconciler.catalog.postgres import audit_log
from reconciler.errors import ConfigurationError, ReconcilerError
from reconciler.render.audit import EXPORT_FORMATS, EXPORT_TYPES


def export_format(path: Path, chosen: str | None) -> str:
    """The format asked for, else the file's suffix (``.csv``), else Parquet."""
    if chosen is not None:
        return chosen
    return "csv" if path.suffix.lower() == ".csv" else "parquet"


def export(url: str, path: Path, fmt: str, *, runs: bool = False) -> int:
    """Write every entry (``runs``: every run) to ``path`` as Parquet (typed columns) or CSV;
    returns how many.

    PostgreSQL streams the rows as NDJSON into a temporary file beside ``path``; DuckDB
    converts it in one statement, into a temporary file renamed over ``path`` at the end.
    """
    if fmt not in EXPORT_FORMATS:
        raise ConfigurationError(f"unknown export format {fmt!r} (use {' or '.join(EXPORT_FORMATS)})")
    directory = path.resolve().parent
    if not directory.is_dir():
        raise ConfigurationError(f"cannot write {path}: {directory} is not a directory")
    try:
        with tempfile.TemporaryDirectory(prefix=".reconciler-export-", dir=directory) as work:
            ndjson = Path(work) / "audit.ndjson"
            with ndjson.open("wb") as out:
                count = audit_log.write_ndjson(url, out, runs=runs)
            staged = Path(work) / f"audit.{fmt}"
            _convert(ndjson, staged, fmt, run_chain.EXPORT_TYPES if runs else EXPORT_TYPES)
            os.replace(staged, path)
    except OSError as error:
        raise ConfigurationError(f"cannot write {path}: {error.strerror or error}") from None
    return count


def _convert(ndjson: Path, target: Path, fmt: str, types: dict[str, str]) -> None:
    import duckdb  # only the export needs it

    try:
        with duckdb.connect() as db:
            db.execute("SET TimeZone = 'UTC'")
            relation = db.read_json(str(ndjson), format="newline_delimited", columns=types)
            if fmt == "parquet":
                relation.write_parquet(str(target))
            else:
                # CSV has no lists: the changed fields become a JSON array, like before/after.
                columns = ", ".join("to_json(fields)::VARCHAR AS fields" if c == "fields" else f'"{c}"'
                                    for c in types)
                relation.project(columns).write_csv(str(target), header=True)
    except duckdb.Error as error:
        raise ReconcilerError(f"exporting the audit log with DuckDB failed: {error}") from None
