"""The reconciler's benchmark: validate, plan and apply at N records against baselines measured alongside.

    python benchmarks/run.py --records 100000 --datasets 1000 --runs 3 --scaling \\
        --out benchmarks/results/latest.json
    python benchmarks/run.py --quick          # N=10,000, D=100, one run: a smoke check

Generates a tree of N records (RecordSets of 1,000, 20 namespaces) and D datasets
in a fresh, committed git repository, runs each step as the CLI in its own process
against a fresh database (the embedded server in a temporary directory, or
``--database-url`` of a server where it may create and drop databases), and
reports each step's median wall time and peak memory, the baselines (pyyaml's C
loader, a raw COPY of the same record rows, a per-row SELECT+INSERT script) and
the goals. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
import psycopg
import tree
from measure import StepRun, run_step
from psycopg import conninfo, sql

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
MEMORY_LIMIT_MB = 1e9 / 2**20  # 1 GB
SCALING_LIMIT = 11.0
AUTHORS = {0: ("Ada Base", "ada@example.com"), 1: ("Bo Change", "bo@example.com"),
           2: ("Cy Review", "cy@example.com"), 3: ("Di Ops", "di@example.com"), 4: ("Ed Data", "ed@example.com")}
HISTORY_COMMITS = 200
# The steps in the order they run, with the exit code each must end with.
STEPS = ("validate", "first_plan", "first_apply", "noop_plan", "change_plan", "change_apply", "two_file_plan")
PLAN_STEPS = ("first_plan", "noop_plan", "change_plan", "two_file_plan")
APPLY_STEPS = ("first_apply", "change_apply")


# --- the database --------------------------------------------------------------------------------


def _with_dbname(url: str, dbname: str) -> str:
    params = conninfo.conninfo_to_dict(url)
    params["dbname"] = dbname
    return conninfo.make_conninfo(**{k: v for k, v in params.items() if v is not None})


class Databases:
    """Benchmark databases on one server: created fresh, cloned from snapshots, dropped at the end."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.prefix = f"reconciler_bench_{uuid.uuid4().hex[:8]}"
        self.names: set[str] = set()

    def url(self, name: str) -> str:
        """The URL of database ``name``."""
        return _with_dbname(self.admin_url, name)

    def _admin(self, statement: sql.Composable) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(statement)

    def fresh(self, name: str, template: str | None = None) -> str:
        """Drop and recreate ``name`` (migrated, or a copy of ``template``); returns its URL."""
        full = f"{self.prefix}_{name}"
        self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(full)))
        create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(full))
        if template is not None:
            create = sql.SQL("{} TEMPLATE {}").format(create, sql.Identifier(f"{self.prefix}_{template}"))
        self._admin(create)
        self.names.add(full)
        url = self.url(full)
        if template is None:
            from reconciler.catalog.postgres.migrations import migrate

            migrate(url)
        return url

    def drop_all(self) -> None:
        """Drop every database this run created."""
        for name in sorted(self.names):
            self._admin(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.names.clear()

    def server_version(self) -> str:
        """The server's version string."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "unknown"


def scalar(url: str, query: str) -> Any:
    """The single value a query returns."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()  # type: ignore[arg-type]
    return row[0] if row else None


# --- the git repository --------------------------------------------------------------------------


def git(repo: Path, *args: str, author: tuple[str, str] | None = None) -> str:
    """Run a git command that sets up the benchmark's own repository."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1"}
    if author is not None:
        name, email = author
        env.update(GIT_AUTHOR_NAME=name, GIT_AUTHOR_EMAIL=email, GIT_COMMITTER_NAME=name,
                   GIT_COMMITTER_EMAIL=email)
    done = subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True)
    return done.stdout


def make_repository(root: Path, records: int, datasets: int) -> Path:
    """A fresh repository holding the generated tree at revision 0, reached through a history of
    about HISTORY_COMMITS commits by five people (``tree.history``): attribution walks it."""
    repo = root / "repo"
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    for number, (message, written) in enumerate(tree.history(records, datasets, HISTORY_COMMITS)):
        for relative, text in written.items():
            path = repo / "manifests" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", message, author=AUTHORS[number % len(AUTHORS)])
    return repo


def commit_two_files(repo: Path, records: int, datasets: int) -> int:
    """Commit revision 1 of two record files only; returns how many records it changes."""
    written = tree.two_files(records, datasets)
    for relative, text in written.items():
        (repo / "manifests" / relative).write_text(text, encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Recalibrate the sensors of two files", author=AUTHORS[2])
    return sum(1 for index in range(records) if tree.changed(index, 2) and not tree.changed(index, 1)
               and index // tree.RECORDS_PER_FILE < len(written))


def commit_change(repo: Path, records: int, datasets: int) -> int:
    """Commit revision 1 (1% of the records changed); returns how many files it touched."""
    touched = tree.write_tree(repo / "manifests", records, datasets, revision=1)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "Recalibrate 1% of the sensors", author=AUTHORS[1])
    return len(touched)


def git_wrapper(directory: Path, log: Path) -> Path:
    """A ``git`` that logs each invocation before running the real one: shows what a step asked git."""
    real = shutil.which("git")
    if real is None:
        raise SystemExit("git is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    wrapper = directory / "git"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> "{log}"\nexec "{real}" "$@"\n', encoding="utf-8")
    wrapper.chmod(0o755)
    return directory


def git_calls(log: Path) -> dict[str, int]:
    """Git subcommands logged by the wrapper since the log was last cleared."""
    if not log.exists():
        return {}
    counts: Counter[str] = Counter()
    for line in log.read_text(encoding="utf-8").splitlines():
        words = [w for w in line.split() if not w.startswith("-")]
        counts[words[0] if words else "?"] += 1
    return dict(sorted(counts.items()))


# --- one size --------------------------------------------------------------------------------------


@dataclass
class StepResult:
    """Every run of one step."""

    runs: list[StepRun] = field(default_factory=list)
    git_calls: dict[str, int] = field(default_factory=dict)

    @property
    def median(self) -> float:
        """Median wall time, seconds."""
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_mb(self) -> float:
        """The highest peak memory of any run, MiB."""
        return max(r.peak_mb for r in self.runs)

    def to_json(self) -> dict[str, Any]:
        """The step as the JSON report holds it."""
        return {"median_s": round(self.median, 3), "runs_s": [round(r.seconds, 3) for r in self.runs],
                "peak_rss_mb": round(self.peak_mb, 1),
                "median_cpu_s": round(statistics.median(r.cpu_seconds for r in self.runs), 3),
                "runs": [{**asdict(r), "seconds": round(r.seconds, 3), "cpu_seconds": round(r.cpu_seconds, 3),
                          "max_rss_mb": round(r.max_rss_mb, 1),
                          "peak_tree_rss_mb": round(r.peak_tree_rss_mb, 1)} for r in self.runs],
                "git_calls": self.git_calls}


class SizeRun:
    """Every step and baseline at one size (N records, D datasets)."""

    def __init__(self, records: int, datasets: int, runs: int, sample: int, databases: Databases,
                 workdir: Path, source: Path | None = None, profile: Path | None = None) -> None:
        self.records, self.datasets, self.runs, self.sample = records, datasets, runs, sample
        self.databases = databases
        self.workdir = workdir
        self.steps: dict[str, StepResult] = {name: StepResult() for name in STEPS}
        self.baselines: dict[str, list[dict[str, Any]]] = {"yaml_csafe": [], "raw_copy": [], "per_row": []}
        self.notes: dict[str, Any] = {}
        self.profile = profile
        self.latency_ms = 0.0
        self.latency: dict[str, Any] = {}
        self.git_log = workdir / "git-calls.log"
        bin_dir = git_wrapper(workdir / "bin", self.git_log)
        self.env = {k: v for k, v in os.environ.items() if k != "RECONCILER_DATABASE_URL"}
        self.env.update(NO_COLOR="1", PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                        RECONCILER_DEBUG="1")
        if source is not None:  # measure another checkout of the package (A/B of a proposed change)
            self.env["PYTHONPATH"] = str(source)
        for variable in ("GITHUB_ACTOR", "GITLAB_USER_LOGIN", "BUILDKITE_BUILD_CREATOR", "CIRCLE_USERNAME",
                         "BUILD_REQUESTEDFOR"):
            self.env.pop(variable, None)
        script = Path(sys.executable).with_name("reconciler")
        self.cli = [str(script)] if script.exists() else [sys.executable, "-m", "reconciler.cli"]

    def say(self, text: str) -> None:
        print(f"[N={self.records:,}] {text}", flush=True)

    def step(self, name: str, args: Sequence[str], expect: int = 0,
             before: Callable[[], None] | None = None) -> None:
        """Run one step ``self.runs`` times (``before`` each run, not timed)."""
        result = self.steps[name]
        for number in range(self.runs):
            if before is not None:
                before()
            self.git_log.unlink(missing_ok=True)
            run = run_step([*self.cli, *args], cwd=self.repo, env=self.env,
                           stdout=self.workdir / f"{name}.out", check=False)
            if run.returncode != expect:
                raise SystemExit(f"{name} exited {run.returncode}, expected {expect}; see the output of "
                                 f"{' '.join(args)} (RECONCILER_DEBUG is on)")
            result.runs.append(run)
            self.say(f"{name} run {number + 1}: {run.seconds:.2f} s (cpu {run.cpu_seconds:.2f} s), "
                     f"peak {run.peak_mb:.0f} MiB")
        result.git_calls = git_calls(self.git_log)
        if self.profile is not None:
            if before is not None:
                before()
            self.profile_step(name, args)

    def profile_step(self, name: str, args: Sequence[str]) -> None:
        """One more run of the step under py-spy (not timed): raw stacks and a summary of the hot frames."""
        self.profile.mkdir(parents=True, exist_ok=True)  # type: ignore[union-attr]
        stem = self.profile / f"n{self.records}-{name}"  # type: ignore[operator]
        spy = Path(sys.executable).with_name("py-spy")
        run_step([str(spy), "record", "--format", "raw", "--rate", "100", "--subprocesses", "--nonblocking", "--function",
                  "--output", f"{stem}.stacks", "--", *self.cli, *args], cwd=self.repo, env=self.env, check=False)
        stem.with_suffix(".top.txt").write_text(summarize_stacks(Path(f"{stem}.stacks")), encoding="utf-8")
        self.say(f"profiled {name}: {stem}.top.txt")

    def baseline_round(self, url: str) -> None:
        """Each baseline once, in its own process."""
        script = str(HERE / "baselines.py")
        commands = {
            "yaml_csafe": ["yaml", str(self.repo / "manifests")],
            "raw_copy": ["copy", url, str(self.records), str(self.datasets)],
            "per_row": ["per-row", url, str(self.records), str(self.datasets), str(self.sample)],
        }
        for name, args in commands.items():
            out = self.workdir / f"baseline-{name}.json"
            run = run_step([sys.executable, script, *args], cwd=HERE, stdout=out)
            figures = json.loads(out.read_text(encoding="utf-8"))
            figures["peak_rss_mb"] = round(run.peak_mb, 1)
            self.baselines[name].append(figures)
            shown = figures.get("scaled_seconds", figures["seconds"])
            self.say(f"baseline {name}: {shown:.2f} s" + (" (scaled)" if "scaled_seconds" in figures else ""))

    def run(self) -> None:
        """Generate, then measure every step and the baselines (before and after the steps)."""
        started = time.perf_counter()
        self.repo = make_repository(self.workdir, self.records, self.datasets)
        self.say(f"generated and committed {self.records:,} records and {self.datasets:,} datasets "
                 f"in {time.perf_counter() - started:.1f} s")
        url = self.databases.fresh("main")
        self.baseline_round(url)
        plan = ["plan", "manifests", "--database-url", url, "--detailed-exitcode"]
        apply = ["apply", "manifests", "--database-url", url, "--auto-approve"]
        self.step("validate", ["validate", "manifests"])
        self.step("first_plan", plan, expect=2)
        self.step("first_apply", apply, before=lambda: self.databases.fresh("main"))
        self.check_first_apply(url)
        self.databases.fresh("applied", template="main")
        self.step("noop_plan", plan, expect=0)
        self.notes["change_files_touched"] = commit_change(self.repo, self.records, self.datasets)
        self.step("change_plan", plan, expect=2)
        self.step("change_apply", apply, before=lambda: self.databases.fresh("main", template="applied"))
        self.check_change_apply(url)
        self.notes["two_file_records_changed"] = commit_two_files(self.repo, self.records, self.datasets)
        self.step("two_file_plan", plan, expect=2)
        self.baseline_round(url)
        if self.latency_ms:
            self.latency_round()

    def latency_round(self) -> None:
        """The first apply and the per-row script through a proxy adding ``latency_ms`` to every
        round trip (benchmarks/latency.py), counting the round trips each makes."""
        from latency import LatencyProxy

        url = self.databases.fresh("latency")
        proxy = LatencyProxy(url, self.latency_ms)
        proxy.start()
        try:
            at_first = self.repo / ".." / "at-first"
            if not at_first.exists():  # the tree as the first apply saw it
                git(self.repo.parent, "clone", "-q", str(self.repo), str(at_first))
                git(at_first, "checkout", "-q", "HEAD~2")
            proxy.reset()
            run = run_step([*self.cli, "apply", "manifests", "--database-url", proxy.url, "--auto-approve"],
                           cwd=at_first, env=self.env, stdout=self.workdir / "latency_apply.out", check=False)
            if run.returncode != 0:
                raise SystemExit(f"the apply through the latency proxy exited {run.returncode}")
            self.latency = {"latency_ms": self.latency_ms, "first_apply_s": round(run.seconds, 3),
                            "first_apply_round_trips": proxy.round_trips,
                            "first_apply_connections": proxy.connections}
            self.say(f"first apply with {self.latency_ms:g} ms latency: {run.seconds:.2f} s, "
                     f"{proxy.round_trips} round trips over {proxy.connections} connections")
            proxy.reset()
            out = self.workdir / "baseline-per-row-latency.json"
            run_step([sys.executable, str(HERE / "baselines.py"), "per-row", proxy.url, str(self.records),
                      str(self.datasets), str(self.sample)], cwd=HERE, stdout=out)
            figures = json.loads(out.read_text(encoding="utf-8"))
            self.latency.update(per_row_scaled_s=round(figures["scaled_seconds"], 3),
                                per_row_round_trips_per_record=round(proxy.round_trips / figures["rows"], 2))
            self.say(f"per-row script with {self.latency_ms:g} ms latency: {figures['scaled_seconds']:.1f} s (scaled)")
        finally:
            proxy.stop()

    def check_first_apply(self, url: str) -> None:
        """The first apply must have written every record and dataset."""
        records = scalar(url, "SELECT count(*) FROM metastore.metastore_records")
        datasets = scalar(url, "SELECT count(*) FROM timestore.datasets")
        audits = scalar(url, "SELECT count(*) FROM metastore.metastore_record_audits")
        if (records, datasets) != (self.records, self.datasets):
            raise SystemExit(f"first apply wrote {records} records and {datasets} datasets, expected "
                             f"{self.records} and {self.datasets}")
        self.notes["first_apply_rows"] = {"records": records, "datasets": datasets, "record_audits": audits}

    def check_change_apply(self, url: str) -> None:
        """The 1% change must have updated exactly the changed records."""
        updated = scalar(url, "SELECT count(*) FROM metastore.metastore_record_audits WHERE action = 'update'")
        expected = sum(1 for index in range(self.records) if tree.changed(index, 1))
        if updated != expected:
            raise SystemExit(f"change apply updated {updated} records, expected {expected}")
        self.notes["change_apply_updates"] = updated

    # --- figures ---

    def baseline(self, name: str) -> float:
        """Median of a baseline's runs (the per-row one scaled to N)."""
        key = "scaled_seconds" if name == "per_row" else "seconds"
        return statistics.median(b[key] for b in self.baselines[name])

    def ratios(self) -> dict[str, float]:
        """Every step against the baseline it is judged by."""
        copy = self.baseline("raw_copy")
        out = {f"{name}_vs_raw_copy": self.steps[name].median / copy for name in STEPS if name != "validate"}
        out["validate_vs_yaml_csafe"] = self.steps["validate"].median / self.baseline("yaml_csafe")
        out["per_row_vs_first_apply"] = self.baseline("per_row") / self.steps["first_apply"].median
        if self.latency:
            out["per_row_vs_first_apply_with_latency"] = (self.latency["per_row_scaled_s"]
                                                          / self.latency["first_apply_s"])
        return {k: round(v, 2) for k, v in out.items()}

    def goals(self) -> list[dict[str, Any]]:
        """The performance goals, each with its figure and whether it is met (docs/performance.md)."""
        r = self.ratios()
        goals = [
            ("first apply <= 8 x raw COPY", r["first_apply_vs_raw_copy"], "<=", 8.0),
            ("first plan <= 4 x raw COPY", r["first_plan_vs_raw_copy"], "<=", 4.0),
            ("1%-change plan <= 3 x raw COPY", r["change_plan_vs_raw_copy"], "<=", 3.0),
            ("two-file plan <= 1.5 x raw COPY", r["two_file_plan_vs_raw_copy"], "<=", 1.5),
            ("no-op plan <= 1.5 x raw COPY", r["noop_plan_vs_raw_copy"], "<=", 1.5),
        ]
        if self.latency:
            goals.append((f"per-row script / first apply, {self.latency_ms:g} ms latency >= 20",
                          r["per_row_vs_first_apply_with_latency"], ">=", 20.0))
        goals += [(f"{name} peak memory <= 1 GB (MiB)", round(self.steps[name].peak_mb, 1), "<=",
                   round(MEMORY_LIMIT_MB, 1)) for name in (*PLAN_STEPS, *APPLY_STEPS)]
        return [_goal(*g) for g in goals]

    def to_json(self) -> dict[str, Any]:
        """This size's figures as the JSON report holds them."""
        return {
            "records": self.records, "datasets": self.datasets, "runs": self.runs,
            "steps": {name: step.to_json() for name, step in self.steps.items()},
            "baselines": {name: {"median_s": round(self.baseline(name), 3), "runs": runs}
                          for name, runs in self.baselines.items()},
            "ratios": self.ratios(), "goals": self.goals(), "notes": self.notes, "latency": self.latency,
        }


def summarize_stacks(path: Path, shown: int = 40) -> str:
    """The frames holding the most samples (inclusive), from py-spy's collapsed stacks."""
    total = 0
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        samples = int(count)
        total += samples
        frames = [f for f in stack.split(";") if not f.startswith("process ") and "click/" not in f]
        for frame in set(frames):
            inclusive[frame] += samples
        if frames:
            own[frames[-1]] += samples
    lines = [f"{total} samples (100 per second). Inclusive share of the frames holding the most:"]
    lines += [f"{100 * n / max(total, 1):6.1f}%  {frame}" for frame, n in inclusive.most_common(shown)]
    lines += ["", "Own (self) share:"]
    lines += [f"{100 * n / max(total, 1):6.1f}%  {frame}" for frame, n in own.most_common(shown // 2)]
    return "\n".join(lines) + "\n"


def _goal(name: str, figure: float, op: str, limit: float) -> dict[str, Any]:
    ok = figure <= limit if op == "<=" else figure >= limit
    return {"goal": name, "figure": figure, "op": op, "limit": limit, "pass": ok}


# --- the report ------------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu": model,
            "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 1e9, 1),
            "loadavg_at_start": [round(x, 2) for x in os.getloadavg()]}


def source_commit() -> dict[str, Any]:
    """The reconciler commit measured, and whether its work tree had local changes."""
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def ask(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=PROJECT, env=env, capture_output=True, text=True, check=False)
        return done.stdout.strip()

    return {"sha": ask("rev-parse", "HEAD") or None,
            "dirty": bool(ask("status", "--porcelain", "--untracked-files=no", "--", "reconciler"))}


def print_summary(size: SizeRun) -> None:
    """The size's table: each step's median and peak, the baselines, ratios and goals."""
    print(f"\n== N = {size.records:,} records, D = {size.datasets:,} datasets, {size.runs} run(s)")
    print(f"{'step':14s} {'median s':>9s} {'runs s':>24s} {'cpu s':>7s} {'peak MiB':>9s}  git calls")
    for name, step in size.steps.items():
        runs = " ".join(f"{r.seconds:.2f}" for r in step.runs)
        cpu = statistics.median(r.cpu_seconds for r in step.runs)
        calls = ", ".join(f"{k} {v}" for k, v in step.git_calls.items())
        print(f"{name:14s} {step.median:9.2f} {runs:>24s} {cpu:7.2f} {step.peak_mb:9.0f}  {calls}")
    for name in size.baselines:
        label = f"{name} (scaled)" if name == "per_row" else name
        print(f"{'baseline ' + label:30s} {size.baseline(name):9.2f} s")
    print("ratios: " + ", ".join(f"{k} {v}" for k, v in size.ratios().items()))
    for goal in size.goals():
        mark = "PASS" if goal["pass"] else "MISS"
        print(f"  {mark}  {goal['goal']}: {goal['figure']} {goal['op']} {goal['limit']}")


def scaling(small: SizeRun, large: SizeRun) -> dict[str, Any]:
    """Each step's time at the large size over its time at the small one; with latency, the
    first apply's round trips at both sizes (they must not grow with N)."""
    factor = large.records / small.records
    ratios = {name: round(large.steps[name].median / small.steps[name].median, 2) for name in STEPS}
    limit = SCALING_LIMIT * factor / 10
    goals = [_goal(f"{name} time x{factor:g} records <= {limit:g} x", ratio, "<=", limit)
             for name, ratio in ratios.items()]
    out: dict[str, Any] = {"from": small.records, "to": large.records, "limit": limit, "ratios": ratios}
    if small.latency and large.latency:
        trips = (small.latency["first_apply_round_trips"], large.latency["first_apply_round_trips"])
        out["first_apply_round_trips"] = {"small": trips[0], "large": trips[1]}
        goals.append(_goal(f"first apply round trips at N ({trips[1]}) <= at N/10 ({trips[0]}) + 10%",
                           trips[1], "<=", round(trips[0] * 1.1, 1)))
    out["goals"] = goals
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options, run every size, print and save the report."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="N (default 100,000)")
    parser.add_argument("--datasets", type=int, default=1_000, help="D (default 1,000)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each step (default 3); the median is kept")
    parser.add_argument("--sample", type=int, default=2_000, help="rows of the per-row baseline (default 2,000)")
    parser.add_argument("--scaling", action="store_true", help="also measure at N/10, D/10 and check growth")
    parser.add_argument("--quick", action="store_true", help="smoke check: N=10,000, D=100, one run")
    parser.add_argument("--database-url", help="a server where the benchmark may create and drop databases "
                        "(default: the embedded server, in a temporary directory)")
    parser.add_argument("--out", type=Path, help="write the JSON report here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (repos, outputs)")
    parser.add_argument("--profile", type=Path, metavar="DIR", help="after measuring, run each step once more "
                        "under py-spy and write its stacks and hottest frames to DIR")
    parser.add_argument("--latency-ms", type=float, default=0.0, metavar="MS",
                        help="also run the first apply and the per-row script through a loopback proxy adding "
                        "MS to every round trip, counting the round trips (benchmarks/latency.py)")
    parser.add_argument("--source", type=Path, help="run the steps with the reconciler package found in this "
                        "directory (put first on PYTHONPATH), to measure a change side by side")
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.datasets, args.runs = 10_000, 100, 1
    sizes = [(args.records, args.datasets)]
    if args.scaling:
        sizes.insert(0, (max(1000, args.records // 10), max(10, args.datasets // 10)))

    report: dict[str, Any] = {"format": 1, "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
                              "command": " ".join(["python", "benchmarks/run.py", *(argv or sys.argv[1:])]),
                              "commit": source_commit(), "machine": machine(),
                              "source": str(args.source) if args.source else None}
    workdir = Path(tempfile.mkdtemp(prefix="reconciler-bench-"))
    server = None
    try:
        if args.database_url:
            admin_url = args.database_url
        else:
            from reconciler.catalog.postgres.embedded import start_embedded

            server = start_embedded(workdir / "pg" / ".reconciler")
            admin_url = str(server.get_uri(database="postgres"))
        databases = Databases(admin_url)
        report["database"] = {"embedded": server is not None, "server_version": databases.server_version()}
        done: list[SizeRun] = []
        try:
            for records, datasets in sizes:
                size = SizeRun(records, datasets, args.runs, min(args.sample, records), databases,
                               workdir / f"n{records}", args.source, args.profile)
                size.latency_ms = args.latency_ms
                size.run()
                print_summary(size)
                done.append(size)
        finally:
            databases.drop_all()
        report["sizes"] = [size.to_json() for size in done]
        report["main"] = done[-1].to_json()
        goals = list(done[-1].goals())
        if len(done) == 2:
            report["scaling"] = scaling(done[0], done[1])
            goals += report["scaling"]["goals"]
            print("\nscaling: " + ", ".join(f"{k} x{v}" for k, v in report["scaling"]["ratios"].items())
                  + f" (limit {report['scaling']['limit']:g})")
        report["goals"] = goals
        report["all_goals_pass"] = all(g["pass"] for g in goals)
        report["machine"]["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
            print(f"\nwrote {args.out}")
        print(f"goals: {sum(g['pass'] for g in goals)} of {len(goals)} met")
    finally:
        if server is not None:
            server.cleanup()
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
