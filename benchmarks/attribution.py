"""What attribution costs: the history walk's share of a plan and of a first apply, in one process.

    python benchmarks/attribution.py --records 100000 --datasets 1000 --commits 200 --runs 3
    python benchmarks/attribution.py --files 10000            # 10,000 one-record files

Builds the benchmark tree (benchmarks/tree.py) through a history of ``--commits``
commits by five people — the storage target and datasets first, then one commit per
record file adding it in a draft form (one record's ``unit`` is ``draft``), then
commits bringing files to their final form — so that the first apply attributes
every object over the whole history. Then, with the same calls ``reconciler plan``
and ``apply`` make, in this process:

- the first apply, timing the attribution inside it (``planning.attribute``);
- a commit changing 1% of the records spread over every file, and ``--runs`` plans
  of it: each plan's time, and the same plan's time less its attribution — the plan
  "without the history walk". The ratio of the medians is the walk's cost.

With ``--files N``: N files of one record each (a plain ``Record`` document),
committed in ``--commits`` commits, a 1% change, and the same figures: the walk reads
only the changed files, so its cost follows the changed objects, not the files.

The database is the embedded server in a temporary directory, or ``--database-url``
of a server where the benchmark may create and drop a database.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import tree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

PEOPLE = [("Ada Base", "ada@example.com"), ("Bo Change", "bo@example.com"), ("Cy Review", "cy@example.com"),
          ("Di Ops", "di@example.com"), ("Ed Data", "ed@example.com")]


def git(repo: Path, *args: str, author: tuple[str, str] | None = None) -> None:
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    if author is not None:
        env.update(GIT_AUTHOR_NAME=author[0], GIT_AUTHOR_EMAIL=author[1], GIT_COMMITTER_NAME=author[0],
                   GIT_COMMITTER_EMAIL=author[1])
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def commit(repo: Path, number: int, message: str) -> None:
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message, author=PEOPLE[number % len(PEOPLE)])


def draft(text: str) -> str:
    """A record file as first committed: its first record's unit still ``draft``."""
    head, marker, rest = text.partition("      unit: ")
    value, newline, tail = rest.partition("\n")
    return head + marker + "draft" + newline + tail if marker else text


def recordset_history(repo: Path, records: int, datasets: int, commits: int) -> int:
    """The benchmark tree at revision 0, reached through ``commits`` commits; returns how many."""
    root = repo / "manifests"
    files = list(tree.files(records, datasets, revision=0))
    record_files = [(p, t) for p, t in files if p.startswith("records/")]
    for relative, text in files:
        if not relative.startswith("records/"):
            path = root / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    made = 1
    commit(repo, made, "storage target and datasets")
    for relative, text in record_files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(draft(text), encoding="utf-8")
        made += 1
        commit(repo, made, f"add {relative}")
    for relative, text in record_files:
        (root / relative).write_text(text, encoding="utf-8")
        made += 1
        commit(repo, made, f"finish {relative}")
        if made >= commits:
            break
    for relative, text in record_files:  # anything the commit budget did not reach
        (root / relative).write_text(text, encoding="utf-8")
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, check=True, capture_output=True, text=True)
    if status.stdout.strip():
        made += 1
        commit(repo, made, "finish the rest")
    return made


def one_record(index: int, revision: int) -> str:
    unit = "kelvin" if revision and index % 100 == 0 else "celsius"
    return (f"apiVersion: reconciler/v1\nkind: Record\nnamespace: many\nkey: r-{index:06d}\n"
            f"owner: team-many\nmetadata: {{unit: {unit}, index: {index}}}\n")


def many_files_history(repo: Path, files: int, commits: int) -> int:
    root = repo / "manifests" / "many"
    root.mkdir(parents=True)
    per_commit = -(-files // commits)
    made = 0
    for start in range(0, files, per_commit):
        for index in range(start, min(files, start + per_commit)):
            (root / f"r-{index:06d}.yaml").write_text(one_record(index, 0), encoding="utf-8")
        made += 1
        commit(repo, made, f"records {start}..")
    return made


def change_many(repo: Path, files: int) -> None:
    for index in range(0, files, 100):
        (repo / "manifests" / "many" / f"r-{index:06d}.yaml").write_text(one_record(index, 1), encoding="utf-8")
    commit(repo, 1, "1% of the records change")


class Timer:
    """Wraps ``planning.attribute`` to add up the time spent in it."""

    def __init__(self) -> None:
        from reconciler.app import planning as engine

        self.engine = engine
        self.inner: Callable[..., Any] = engine.attribute
        self.spent = 0.0

    def __enter__(self) -> Timer:
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.spent += time.perf_counter() - start

        self.engine.attribute = timed  # type: ignore[assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        self.engine.attribute = self.inner  # type: ignore[assignment]


def database(url: str | None, work: Path) -> Iterator[str]:
    import psycopg

    server = None
    if url is None:
        from reconciler.catalog.postgres.embedded import start_embedded

        server = start_embedded(work / ".reconciler")
        url = str(server.get_uri(database="postgres"))
    name = f"bench_attr_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')  # a fixed, generated name
    from psycopg import conninfo

    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = name
    target = conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})
    from reconciler.catalog.postgres.migrations import migrate

    migrate(target)
    try:
        yield target
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if server is not None:
            server.cleanup()


def measure(repo: Path, url: str, runs: int, change: Callable[[], None]) -> dict[str, Any]:
    from reconciler.app.applying import apply_plan
    from reconciler.app.planning import make_plan
    from reconciler.app.workspace import open_workspace
    from reconciler.core.checks import ApplyOptions

    os.chdir(repo)
    workspace = open_workspace(Path("manifests"), url)
    with Timer() as timer:
        start = time.perf_counter()
        plan = make_plan(workspace)
        apply_plan(workspace, plan, ApplyOptions(allow_mass_archive=None))
        first_apply = time.perf_counter() - start
    first = {"seconds": round(first_apply, 2), "attribution_seconds": round(timer.spent, 2),
             "attribution_share": round(timer.spent / first_apply, 3), "changes": len(plan.changes)}
    change()
    totals, without = [], []
    for _ in range(runs):
        with Timer() as timer:
            start = time.perf_counter()
            plan = make_plan(workspace)
            total = time.perf_counter() - start
        totals.append(total)
        without.append(total - timer.spent)
    authors = sorted({plan.author_of(c.address).email for c in plan.changes})
    return {"first_apply": first,
            "change_plan": {"seconds": [round(t, 2) for t in totals],
                            "without_walk_seconds": [round(t, 2) for t in without],
                            "median": round(statistics.median(totals), 2),
                            "median_without_walk": round(statistics.median(without), 2),
                            "ratio": round(statistics.median(totals) / statistics.median(without), 3),
                            "changes": len(plan.changes), "authors": authors}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--datasets", type=int, default=1_000)
    parser.add_argument("--commits", type=int, default=200)
    parser.add_argument("--files", type=int, help="instead: this many one-record files")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--database-url")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    out = args.out.resolve() if args.out else None  # the measurement runs from inside the repository
    with tempfile.TemporaryDirectory(prefix="reconciler-attribution-") as work_dir:
        work = Path(work_dir)
        repo = work / "repo"
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        started = time.perf_counter()
        if args.files:
            made = many_files_history(repo, args.files, args.commits)
            change: Callable[[], None] = lambda: change_many(repo, args.files)  # noqa: E731
            shape = {"files": args.files, "commits": made}
        else:
            made = recordset_history(repo, args.records, args.datasets, args.commits)

            def change() -> None:
                tree.write_tree(repo / "manifests", args.records, args.datasets, revision=1)
                commit(repo, 1, "Recalibrate 1% of the sensors")

            shape = {"records": args.records, "datasets": args.datasets, "commits": made}
        print(f"history of {made} commits built in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        for url in database(args.database_url, work):
            report = {"shape": shape, **measure(repo, url, args.runs, change)}
    text = json.dumps(report, indent=2)
    print(text)
    if out is not None:
        out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
