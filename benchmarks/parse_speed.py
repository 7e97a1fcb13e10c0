"""Measures manifest parsing speed on generated RecordSet files (run: python benchmarks/parse_speed.py).

Prints, for a 1,000-record file, the throughput of the candidate parsers and of
the loader's two paths, then the time to load whole trees of 1,000, 10,000 and
100,000 records (files of 1,000 records each).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
import yaml_rs

from reconciler.manifests import load_tree
from reconciler.manifests.yamlread import parse_text


def recordset(count: int, namespace: str = "observatory", offset: int = 0) -> str:
    """A RecordSet document of ``count`` records with nested metadata and tags."""
    lines = [
        "apiVersion: reconciler/v1",
        "kind: RecordSet",
        f"namespace: {namespace}",
        "defaults:",
        "  owner: team-observatory",
        "  tags: [iot, raw]",
        "records:",
    ]
    for n in range(offset, offset + count):
        lines += [
            f"  - key: sensor-{n:06d}",
            f"    schemaHash: sha256-{n:08x}abcdef",
            f'    tags: [iot, "zone-{n % 7}", calibrated]',
            "    metadata:",
            "      datasetSlug: observatory-readings",
            "      unit: celsius",
            f'      location: {{lat: {45 + n / 1000:.4f}, lon: {7 + n / 2000:.4f}, site: "site-{n % 13}"}}',
            "      calibration:",
            f"        offset: {n % 5 - 2}.25",
            "        factor: 1.0",
            f'        lastChecked: "2024-0{n % 9 + 1}-1{n % 9}"',
            "      channels:",
            "        - {name: temp, precision: 2}",
            "        - {name: humidity, precision: 1}",
        ]
    return "\n".join(lines) + "\n"


def best_of(runs: int, action: Callable[[], Any]) -> float:
    """The fastest of ``runs`` timings of ``action``, in seconds."""
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def parsers(text: str) -> None:
    """Throughput of each way of reading one file."""
    megabytes = len(text.encode()) / 1e6
    candidates: dict[str, Callable[[], Any]] = {
        "pyyaml pure SafeLoader load": lambda: yaml.load(text, Loader=yaml.SafeLoader),
        "pyyaml CSafeLoader load (libyaml)": lambda: yaml.load(text, Loader=yaml.CSafeLoader),
        "yaml-rs loads (values only)": lambda: yaml_rs.loads(text, parse_datetime=False),
        "reconciler fast path (values + lines)": lambda: parse_text(text, "bench.yaml"),
        "reconciler precise path (libyaml events)": lambda: parse_text(text, "bench.yaml", precise=True),
    }
    print(f"one file of 1,000 records, {megabytes:.2f} MB")
    for name, action in candidates.items():
        seconds = best_of(1 if "pure" in name else 5, action)
        print(f"  {name:42s} {seconds * 1000:8.1f} ms  {megabytes / seconds:6.2f} MB/s")


def trees(sizes: list[int]) -> None:
    """Whole-tree load times."""
    for total in sizes:
        with tempfile.TemporaryDirectory() as directory:
            root = Path(directory)
            for index in range(0, total, 1000):
                (root / f"records-{index // 1000:03d}.yaml").write_text(recordset(1000, offset=index))
            seconds = best_of(3, lambda root=root: load_tree(root))
            print(f"  load_tree {total:7,d} records: {seconds:6.2f} s")


def main() -> None:
    """Run the measurements."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="*", default=[1_000, 10_000, 100_000])
    arguments = parser.parse_args()
    parsers(recordset(1000))
    trees(arguments.sizes)


if __name__ == "__main__":
    main()
