"""Where a plan's time goes, phase by phase, in one process (a companion to run.py's wall times).

    python benchmarks/phases.py TREE --database-url URL [--repeat 3]

Times, with the same calls ``reconciler plan`` makes: loading the tree into desired
state, reading the catalog, the diff, attribution, building the plan and rendering
it as text and as JSON; then counts how many records the diff passed over without
decoding them. Run it from the repository holding TREE, against a catalog the tree
was applied to (``python benchmarks/run.py --keep`` leaves both behind).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def timed(name: str, results: dict[str, list[float]], action: Callable[[], T]) -> T:
    """Run ``action``, adding its wall time to ``results[name]``."""
    start = time.perf_counter()
    value = action()
    results.setdefault(name, []).append(time.perf_counter() - start)
    return value


def one_plan(tree: Path, url: str, results: dict[str, list[float]]) -> dict[str, Any]:
    """One plan, phase by phase; returns what it found."""
    from reconciler.catalog.postgres.connection import connect
    from reconciler.catalog.postgres.reading import read_state
    from reconciler.manifests.desired import desired_state
    from reconciler.core.diff import diff, unchanged
    from reconciler.app.attribution import attribute
    from reconciler.core.checks import link_findings
    from reconciler.core.plan import Author, from_diff
    from reconciler.git.repository import GitRepository
    from reconciler.render.plan import render_json, render_text

    repo = GitRepository.discover(tree)
    state = timed("load tree + desired state", results,
                  lambda: desired_state(tree, environ=os.environ, resolve_env=True))

    def read() -> Any:
        with connect(url, autocommit=True) as conn:
            return read_state(conn)

    catalog = timed("read catalog", results, read)
    timed("link findings", results, lambda: link_findings(state.links, state.desired, catalog.live))
    result = timed("diff", results, lambda: diff(state.desired, catalog.live, catalog.applied, source="default"))
    attribution = timed("attribute (git)", results, lambda: attribute(
        repo, tree, result.changes, state.desired, None, Author("bench", "", None, applier=True)))
    plan = timed("build plan", results, lambda: from_diff(
        result, source="default", commit=repo.head() if repo else None, dirty=attribution.dirty,
        created_at=datetime.now(UTC).isoformat(timespec="seconds"), authors=attribution.authors,
        secrets=state.secrets))
    timed("render text", results, lambda: render_text(plan, color=False))
    timed("render json", results, lambda: render_json(plan))
    passed_over = sum(1 for address, want in state.desired.items()
                      if address in catalog.live and address in catalog.applied
                      and unchanged(want, catalog.live[address], catalog.applied[address]))
    return {"desired": len(state.desired), "live": len(catalog.live), "changes": len(result.changes),
            "bookkeeping": len(result.bookkeeping), "passed_over_without_decoding": passed_over}


def main() -> None:
    """Parse the options and print each phase's median."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tree", type=Path)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    found: dict[str, Any] = {}
    for _ in range(args.repeat):
        found = one_plan(args.tree, args.database_url, results)
    for name, seconds in results.items():
        print(f"{name:28s} {statistics.median(seconds):8.3f} s   runs: "
              + " ".join(f"{s:.3f}" for s in seconds))
    print(found)


if __name__ == "__main__":
    main()
