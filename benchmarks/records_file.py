"""Measures loading records from a data file against the same records in YAML (run: python benchmarks/records_file.py).

One tree holds a RecordSet whose N records (default 100,000) are written under
``records:``; the other holds the same RecordSet naming a JSON Lines file with the
same records, one compact object a line, as ``reconciler import --records-format
jsonl`` writes them (a CSV tree is timed too). Each tree is loaded with ``load_tree``
several times, alternating, and the medians are printed with their ratio, so both
figures come from the same run on the same machine. Both trees must declare equal
records, which is checked first.

Two more figures put the load in its place: what a plan does with the tree before it
reads the catalog (``load_tree`` and ``desired_from``, which builds every record's
model: the work a data file's rows put off until something reads them), and what
decoding the JSON Lines file alone costs (reading it, ``orjson.loads`` of each line
with the garbage collector paused, as the loader does, and the collection that pause
owes), the floor under any load that checks every value.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from parse_speed import recordset  # noqa: E402  (the same generated records parse_speed.py times)

import orjson  # noqa: E402

from reconciler.app.importer import records_text  # noqa: E402
from reconciler.core.diff import collector_paused  # noqa: E402
from reconciler.manifests import load_tree  # noqa: E402
from reconciler.manifests.desired import desired_from  # noqa: E402
from reconciler.manifests.yamlread import parse_text  # noqa: E402

HEADER = "apiVersion: reconciler/v1\nkind: RecordSet\nnamespace: observatory\n" \
         "defaults:\n  owner: team-observatory\n  tags: [iot, raw]\n"


def items(count: int) -> list[dict[str, Any]]:
    """The records ``parse_speed.recordset`` writes, as record items (read back from its YAML)."""
    document = parse_text(recordset(count), "bench.yaml").documents[0].value
    return list(document["records"])


def build(root: Path, count: int) -> dict[str, Path]:
    """Three trees of the same records: YAML, JSON Lines and CSV."""
    trees = {name: root / name for name in ("yaml", "jsonl", "csv")}
    for tree in trees.values():
        tree.mkdir()
    (trees["yaml"] / "records.yaml").write_text(recordset(count))
    records = items(count)
    for kind in ("jsonl", "csv"):
        (trees[kind] / "records.yaml").write_text(HEADER + f"recordsFile: records.{kind}\n")
        (trees[kind] / f"records.{kind}").write_text(records_text(records, kind))
    return trees


def decode_only(data_file: Path) -> None:
    """Read and decode every line of a JSON Lines file, as the loader's bulk road does, no check."""
    with collector_paused():
        lines = data_file.read_bytes().split(b"\n")
        if lines[-1] == b"":
            lines.pop()
        values = list(map(orjson.loads, lines))
    gc.collect(0)  # the collection the pause owes, run while the values are alive, as after a load
    del values


def timed(action: Callable[[], Any]) -> float:
    gc.collect()
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    """Build the trees, check they agree, time them, print medians and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=5)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory:
        trees = build(Path(directory), arguments.records)
        sizes = {name: sum(f.stat().st_size for f in tree.iterdir()) / 1e6 for name, tree in trees.items()}
        loaded = {name: load_tree(tree) for name, tree in trees.items()}
        values = {name: {str(r.address): r.model.__dict__ for r in tree.records} for name, tree in loaded.items()}
        assert values["yaml"] == values["jsonl"] == values["csv"], "the three trees declare different records"
        del loaded, values
        times: dict[tuple[str, str], list[float]] = {}
        for _ in range(arguments.runs):
            for name, tree in trees.items():
                times.setdefault(("load_tree", name), []).append(timed(lambda tree=tree: load_tree(tree)))
            for name in ("yaml", "jsonl"):
                times.setdefault(("load_tree + desired_from", name), []).append(
                    timed(lambda tree=trees[name]: desired_from(load_tree(tree), environ={})))
            times.setdefault(("decoding alone", "jsonl"), []).append(
                timed(lambda: decode_only(trees["jsonl"] / "records.jsonl")))
    print(f"{arguments.records:,} records, {arguments.runs} runs each, alternating "
          f"(Python {sys.version.split()[0]})")
    medians = {key: statistics.median(runs) for key, runs in times.items()}
    for (step, name), runs in times.items():
        print(f"  {step:26s} {name:5s} {sizes[name]:6.1f} MB  median {medians[step, name]:6.2f} s  "
              f"(runs: {', '.join(f'{t:.2f}' for t in runs)})")
    for step, name in (("load_tree", "jsonl"), ("load_tree", "csv"), ("load_tree + desired_from", "jsonl")):
        print(f"  {step}: yaml / {name}: {medians[step, 'yaml'] / medians[step, name]:.1f}x")
    print(f"  load_tree yaml / decoding alone: {medians['load_tree', 'yaml'] / medians['decoding alone', 'jsonl']:.1f}x")


if __name__ == "__main__":
    main()
