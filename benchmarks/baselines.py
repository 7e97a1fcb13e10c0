"""The baselines the reconciler's figures are compared with; each run in its own process.

    python benchmarks/baselines.py yaml ROOT
    python benchmarks/baselines.py copy URL RECORDS DATASETS
    python benchmarks/baselines.py per-row URL RECORDS DATASETS SAMPLE

Each prints one JSON object with ``seconds``: the time of the work itself, not of
starting Python or building the rows in memory (so the baselines are as fast as
they can be, and the ratios against them are conservative).

- ``yaml``: pyyaml's C loader (libyaml) parses every manifest file of the tree.
- ``copy``: COPY of the tree's record rows (defaults merged, metadata as JSON)
  into a fresh scratch table shaped like metastore.metastore_records (same
  columns, defaults, primary key and unique (namespace, record_key)), then commit.
- ``per-row``: the naive script, on SAMPLE rows spread over the tree: for each
  record one SELECT (does it exist?) then one INSERT, autocommit off, one commit
  at the end. ``scaled_seconds`` is the time scaled linearly to RECORDS.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import tree
import yaml
from psycopg import sql

SCRATCH_SCHEMA = "bench_scratch"
_COLUMNS = sql.SQL("namespace, record_key, metadata, tags, owner, schema_hash, created_by, updated_by")
ACTOR = "bench@example.com"


def parse_tree(root: Path) -> dict[str, Any]:
    """Parse every *.yaml/*.yml file under ``root`` with yaml.CSafeLoader."""
    paths = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    start = time.perf_counter()
    documents = 0
    for path in paths:
        text = path.read_text(encoding="utf-8")
        documents += sum(1 for _ in yaml.load_all(text, Loader=yaml.CSafeLoader))
    return {"seconds": time.perf_counter() - start, "files": len(paths), "documents": documents}


def _table(name: str) -> sql.Identifier:
    return sql.Identifier(SCRATCH_SCHEMA, name)


def _scratch(conn: psycopg.Connection[Any], name: str) -> None:
    """A fresh, empty table shaped like metastore.metastore_records."""
    conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCRATCH_SCHEMA)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(_table(name)))
    conn.execute(sql.SQL("CREATE TABLE {} (LIKE metastore.metastore_records INCLUDING ALL)").format(_table(name)))
    conn.commit()


def _rows(records: int, datasets: int, every: int = 1) -> list[tuple[Any, ...]]:
    return [(r.namespace, r.key, json.dumps(r.metadata), r.tags, r.owner, r.schema_hash, ACTOR, ACTOR)
            for n, r in enumerate(tree.record_rows(records, datasets)) if n % every == 0]


def raw_copy(url: str, records: int, datasets: int) -> dict[str, Any]:
    """COPY every record row into a fresh scratch table, and commit."""
    rows = _rows(records, datasets)
    with psycopg.connect(url) as conn:
        _scratch(conn, "records_copy")
        start = time.perf_counter()
        with conn.cursor() as cur:
            with cur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(_table("records_copy"), _COLUMNS)) as copy:
                for row in rows:
                    copy.write_row(row)
        conn.commit()
        seconds = time.perf_counter() - start
        count = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(_table("records_copy"))).fetchone()
        conn.execute(sql.SQL("DROP TABLE {}").format(_table("records_copy")))
        conn.commit()
    return {"seconds": seconds, "rows": count[0] if count else 0}


def per_row(url: str, records: int, datasets: int, sample: int) -> dict[str, Any]:
    """One SELECT then one INSERT per record on a sample, one commit; scaled to ``records``."""
    rows = _rows(records, datasets, every=max(1, records // sample))[:sample]
    insert = sql.SQL("INSERT INTO {} ({}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)").format(
        _table("records_per_row"), _COLUMNS)
    select = sql.SQL("SELECT id, version FROM {} WHERE namespace = %s AND record_key = %s").format(
        _table("records_per_row"))
    with psycopg.connect(url) as conn:
        _scratch(conn, "records_per_row")
        start = time.perf_counter()
        with conn.cursor() as cur:
            for row in rows:
                cur.execute(select, (row[0], row[1]))
                if cur.fetchone() is None:
                    cur.execute(insert, row)
        conn.commit()
        seconds = time.perf_counter() - start
        conn.execute(sql.SQL("DROP TABLE {}").format(_table("records_per_row")))
        conn.commit()
    return {"seconds": seconds, "rows": len(rows), "scaled_seconds": seconds * records / len(rows)}


def main(argv: list[str]) -> None:
    """Run the baseline named by argv[0] and print its result as JSON."""
    kind, args = argv[0], argv[1:]
    if kind == "yaml":
        result = parse_tree(Path(args[0]))
    elif kind == "copy":
        result = raw_copy(args[0], int(args[1]), int(args[2]))
    elif kind == "per-row":
        result = per_row(args[0], int(args[1]), int(args[2]), int(args[3]))
    else:
        raise SystemExit(f"unknown baseline {kind!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
