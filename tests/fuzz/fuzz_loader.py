"""Fuzz the manifest loader through the path ``reconciler validate`` takes, for a time budget.

Not part of the test suite (pytest collects only ``test_*.py``); run it from the
repository root with the package installed (``pip install -e ".[test]"``)::

    python tests/fuzz/fuzz_loader.py --minutes 60 --seed 1234 --out fuzz-out

Each input (made by ``loader_inputs.py``) is a small manifest tree written to a
temporary directory: the example manifests and the hostile corpus in ``tests/bad/``,
mutated (bit flips, YAML syntax inserted, pieces of files spliced together, raw
control characters, byte order marks, invalid UTF-8, escaped surrogates, very long
scalars, deep nesting), or documents built from ``schemas/manifest.schema.json``
with some fields made wrong.
A worker process loads each tree as ``validate`` does and renders what it would
print. The run saves under ``--out``, and counts, every input that

- raises anything but a ReconcilerError (a ManifestError for an invalid tree);
- gives output that cannot be printed (not valid UTF-8 text);
- loads differently the second time;
- yields a problem that names no file of the tree, or a line or column outside it;
- takes more than a few seconds, kills the worker, or makes it hold over 1.5 GiB.

``--replay DIR`` runs one saved input in this process and prints the outcome;
``--minimize DIR`` shrinks a saved input for as long as it fails the same way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import re
import resource
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from types import FrameType
from typing import Any, Final

from reconciler.errors import ManifestError, Problem, ReconcilerError
from reconciler.manifests import ManifestTree, load_tree
from reconciler.manifests.report import summary, unresolved_lines

# isort: split
# Beside this file: Python puts a script's directory first on sys.path.
from loader_inputs import Inputs, Tree, load_corpus, load_schema

ENVIRON: Final = {"CLICKHOUSE_PASSWORD": "pw", "X": "value", "HOST": "h\u00e9"}
SOFT_SECONDS: Final = 5.0  # per input, plus 2 s per MB of input
HARD_GRACE: Final = 5.0  # after the soft limit, for code that cannot be interrupted
MEMORY_LIMIT: Final = 1536 * 2**20  # peak resident memory of the worker
ADDRESS_SPACE: Final = 6 * 2**30
PROGRESS_EVERY: Final = 30.0
KEEP_PER_CRASH: Final = 5


# --- one input, as validate sees it -----------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What examining one input found: ``status`` is valid, invalid or crash; a crash
    has a kind, a signature that tells distinct crashes apart, and a report."""

    status: str
    kind: str = ""
    signature: str = ""
    report: str = ""


class Finding(Exception):
    """A property the loaded tree or its problems must have, and does not."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind


class _Timeout(BaseException):
    """Raised by the alarm in the worker; not an Exception, so no handler swallows it."""


def _alarm(signum: int, frame: FrameType | None) -> None:
    raise _Timeout


def shown(root: Path) -> tuple[str, ManifestTree | None, tuple[Problem, ...]]:
    """What ``reconciler validate ROOT`` prints, with the loaded tree or the problems."""
    try:
        tree = load_tree(root)
    except ManifestError as error:
        lines = [str(problem) for problem in error.problems] + [f"error: {error.message}"]
        return "\n".join(lines), None, tuple(error.problems)
    except ReconcilerError as error:
        return f"error: {error.render()}", None, ()
    return "\n".join([summary(tree), *unresolved_lines(tree)]), tree, ()


def write_tree(tree: Tree, base: Path) -> Path:
    """Write ``tree`` as ``base/t`` (replacing what was there); the root to load, relative
    to ``base``, the working directory."""
    directory = base / "t"
    if directory.exists():
        shutil.rmtree(directory)
    for name, data in tree.files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return Path("t") / tree.root if tree.root else Path("t")


def examine(tree: Tree, base: Path) -> Outcome:
    """Load ``tree`` as validate does, twice, and check what comes out."""
    root = write_tree(tree, base)
    try:
        return check(tree, root)
    except Finding as finding:
        detail = str(finding)
        return Outcome("crash", finding.kind, f"{finding.kind}: {_normalized(detail)}", detail)
    except _Timeout:
        return _crash("hang", traceback.format_exc())
    except MemoryError:
        return _crash("memory", traceback.format_exc())
    except Exception:  # noqa: BLE001 -- anything but a ReconcilerError is what the run looks for
        return _crash("exception", traceback.format_exc())


def check(tree: Tree, root: Path) -> Outcome:
    """The checks on one input; raises Finding for a property that does not hold."""
    text, loaded, problems = shown(root)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise Finding("render", f"output cannot be printed as UTF-8: {error}\n{text!a}") from None
    again, reloaded, _ = shown(root)
    if again != text or reloaded != loaded:
        raise Finding("nondeterministic", f"a second load differs:\n{text!a}\n---\n{again!a}")
    placed(problems, tree)
    if loaded is None:
        return Outcome("invalid")
    try:
        resolved = load_tree(root, resolve_env=True, environ=ENVIRON)
    except ManifestError as error:
        placed(tuple(error.problems), tree)
        return Outcome("valid")
    before = [(item.address, item.location) for item in loaded.objects()]
    after = [(item.address, item.location) for item in resolved.objects()]
    if before != after:
        raise Finding("resolve", f"resolving references changed the objects: {before!a} != {after!a}")
    return Outcome("valid")


def placed(problems: tuple[Problem, ...], tree: Tree) -> None:
    """Each problem names a manifest file of the tree and a line and column inside it."""
    texts = {f"t/{name}": _lines(data) for name, data in tree.files.items() if _loaded(name, tree.root)}
    for problem in problems:
        lines = texts.get(problem.path)
        if lines is None:
            raise Finding("position", f"{problem!s:.300}: names no manifest file of the tree")
        if not 1 <= problem.line <= len(lines):
            raise Finding("position", f"{problem!s:.300}: line outside the file's {len(lines)} lines")
        width = len(lines[problem.line - 1])
        if not 1 <= problem.column <= width + 1:
            raise Finding("position", f"{problem!s:.300}: column outside the line's {width} characters")


def _loaded(name: str, root: str) -> bool:
    if root:
        return name == root
    return name.endswith((".yaml", ".yml")) and not any(part.startswith(".") for part in name.split("/"))


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "replace")
    text = text.removeprefix("\ufeff")
    return text.replace("\r\n", "\n").split("\n")  # a CR alone breaks no line: the loader refuses it


def _crash(kind: str, report: str) -> Outcome:
    """A crash whose signature is its exception type and the innermost frame of ours."""
    frames = [line.strip() for line in report.splitlines() if line.strip().startswith('File "')]
    ours = [frame for frame in frames if "/reconciler/" in frame] or frames or ["(no frame)"]
    where = re.sub(r'File ".*?/((?:reconciler|site-packages)/[^"]*)", line \d+, in', r"\1", ours[-1])
    last = report.strip().splitlines()[-1] if report.strip() else kind
    return Outcome("crash", kind, f"{kind}: {last.split(':', 1)[0]} at {where}", report)


def _normalized(detail: str) -> str:
    """A finding's first line with the particulars (names, numbers, quoted text) taken out."""
    first = detail.splitlines()[0] if detail else ""
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first.split(": ", 1)[-1] if first.startswith("t/") else first)
    return re.sub(r"0x[0-9a-f]+|\d+", "N", first)[:160]


# --- the worker process -----------------------------------------------------------------------


def worker(conn: Connection, base: str) -> None:
    """Examine the trees the parent sends, one at a time, until it sends None."""
    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent
    signal.signal(signal.SIGALRM, _alarm)
    os.chdir(base)
    while True:
        message = conn.recv()
        if message is None:
            return
        tree, seconds = message
        try:
            signal.setitimer(signal.ITIMER_REAL, seconds)
            outcome = examine(tree, Path(base))
        except _Timeout:  # fired just as the input finished
            outcome = Outcome("valid")
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        if peak > MEMORY_LIMIT and outcome.status != "crash":
            outcome = Outcome("crash", "memory", "memory: peak over the limit", f"peak {peak:,} bytes")
        conn.send(outcome)
        if outcome.kind in ("memory", "hang"):
            return  # its memory or state is no longer trustworthy; the parent starts another


class Runner:
    """A worker process fed one tree at a time, started again whenever it dies or hangs."""

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="fuzz-loader-"))
        self.context = multiprocessing.get_context("fork")
        self.process: Any = None
        self.conn: Connection | None = None
        self.restarts = 0

    def run(self, tree: Tree) -> Outcome:
        """Examine ``tree`` in the worker, within its time limit."""
        if self.process is None or not self.process.is_alive():
            self.stop()
            self._start()
        assert self.conn is not None
        soft = SOFT_SECONDS + 2.0 * tree.size / 2**20
        try:
            self.conn.send((tree, soft))
        except OSError:  # it died between two inputs
            code = self.stop()
            return Outcome("crash", "died", f"died: exit {code}", f"the worker ended with exit code {code}")
        if not self.conn.poll(soft + HARD_GRACE):
            self.stop(kill=True)
            return Outcome("crash", "hang", "hang: no answer (stuck outside Python code)",
                           f"no answer in {soft + HARD_GRACE:.1f} s; the worker was killed")
        try:
            outcome: Outcome = self.conn.recv()
        except EOFError:
            code = self.stop()
            return Outcome("crash", "died", f"died: exit {code}", f"the worker ended with exit code {code}")
        if outcome.kind in ("memory", "hang"):
            self.stop()
        return outcome

    def _start(self) -> None:
        self.conn, child = self.context.Pipe()
        self.process = self.context.Process(target=worker, args=(child, str(self.base)), daemon=True)
        self.process.start()
        child.close()
        self.restarts += 1

    def stop(self, *, kill: bool = False) -> int | None:
        """End the worker (asking first, unless ``kill``) and return its exit code."""
        process, self.process = self.process, None
        if process is None:
            return None
        if not kill and process.is_alive() and self.conn is not None and not self.conn.poll():
            try:
                self.conn.send(None)
            except OSError:
                pass
            process.join(1.0)
        if process.is_alive():
            process.kill()
        process.join()
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        code: int | None = process.exitcode
        return code

    def close(self) -> None:
        """Stop the worker and remove its directory."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


# --- crashes kept on disk ---------------------------------------------------------------------


@dataclass
class Crash:
    """One distinct crash: its directory, how often it was met, its smallest input so far."""

    directory: Path
    count: int = 0
    smallest: int = -1
    first: Outcome = field(default_factory=lambda: Outcome("crash"))


class Crashes:
    """Distinct crashes by signature; the first inputs of each and its smallest are saved."""

    def __init__(self, out: Path, seed: int) -> None:
        self.out = out
        self.seed = seed
        self.found: dict[str, Crash] = {}

    def add(self, outcome: Outcome, tree: Tree, index: int) -> bool:
        """Record one crashing input; True when its signature is new."""
        crash = self.found.get(outcome.signature)
        new = crash is None
        if crash is None:
            crash = Crash(self.out / f"crash-{len(self.found) + 1:03}", first=outcome)
            self.found[outcome.signature] = crash
        crash.count += 1
        meta = {"signature": outcome.signature, "kind": outcome.kind, "root": tree.root,
                "seed": self.seed, "input": index, "bytes": tree.size}
        if crash.count <= KEEP_PER_CRASH:
            save(crash.directory / f"input-{crash.count}", tree, outcome, meta)
        if crash.smallest < 0 or tree.size < crash.smallest:
            crash.smallest = tree.size
            save(crash.directory / "smallest", tree, outcome, meta)
        return new

    def total(self) -> int:
        """Crashing inputs met, all signatures together."""
        return sum(crash.count for crash in self.found.values())


def save(directory: Path, tree: Tree, outcome: Outcome, meta: dict[str, Any]) -> None:
    """Write a crashing input as ``directory/tree/...`` with ``crash.json`` and ``report.txt``."""
    if directory.exists():
        shutil.rmtree(directory)
    (directory / "tree").mkdir(parents=True)
    for name, data in tree.files.items():
        path = directory / "tree" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (directory / "crash.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (directory / "report.txt").write_text(f"{outcome.signature}\n\n{outcome.report}\n", encoding="utf-8",
                                          errors="backslashreplace")


def load_saved(directory: Path) -> tuple[Tree, str]:
    """A saved input and the signature it crashed with."""
    meta = json.loads((directory / "crash.json").read_text(encoding="utf-8"))
    files = {
        path.relative_to(directory / "tree").as_posix(): path.read_bytes()
        for path in sorted((directory / "tree").rglob("*"))
        if path.is_file()
    }
    return Tree(files, meta["root"]), meta["signature"]


# --- the commands -----------------------------------------------------------------------------


def fuzz(minutes: float, seed: int, out: Path) -> int:
    """Generate and examine inputs for ``minutes``; 1 when anything crashed."""
    out.mkdir(parents=True, exist_ok=True)
    inputs = Inputs(random.Random(seed), load_corpus(), load_schema())
    crashes = Crashes(out, seed)
    runner = Runner()
    statuses = {"valid": 0, "invalid": 0, "crash": 0}
    started = time.monotonic()
    deadline, report_at = started + 60 * minutes, started + PROGRESS_EVERY
    print(f"fuzzing the manifest loader for {minutes:g} min, seed {seed}, crashes to {out}",
          file=sys.stderr, flush=True)
    try:
        while time.monotonic() < deadline:
            tree = inputs.tree()
            outcome = runner.run(tree)
            statuses[outcome.status] += 1
            if outcome.status == "crash" and crashes.add(outcome, tree, sum(statuses.values())):
                print(f"new crash {crashes.found[outcome.signature].directory.name}: {outcome.signature}",
                      file=sys.stderr)
            if time.monotonic() >= report_at:
                report_at += PROGRESS_EVERY
                print(progress(statuses, crashes, time.monotonic() - started), file=sys.stderr, flush=True)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        runner.close()
    elapsed = time.monotonic() - started
    print(final_summary(statuses, crashes, elapsed, seed))
    tried = sum(statuses.values())
    record = {
        "seed": seed,
        "minutes": round(elapsed / 60, 2),
        "inputs": tried,
        "per_second": round(tried / elapsed, 1),
        "statuses": statuses,
        "worker_starts": runner.restarts,
        "crashes": {c.directory.name: {"signature": s, "inputs": c.count} for s, c in crashes.found.items()},
    }
    (out / "summary.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return 1 if crashes.found else 0


def progress(statuses: dict[str, int], crashes: Crashes, elapsed: float) -> str:
    """One progress line: time, inputs, rate, share of valid trees, crashes."""
    tried = sum(statuses.values())
    valid = 100 * statuses["valid"] / max(tried, 1)
    return (f"[{int(elapsed // 60):02}:{int(elapsed % 60):02}] {tried:,} inputs, {tried / elapsed:,.0f}/s, "
            f"{valid:.0f}% valid trees; {len(crashes.found)} distinct crashes ({crashes.total()} inputs)")


def final_summary(statuses: dict[str, int], crashes: Crashes, elapsed: float, seed: int) -> str:
    """The closing report: figures, then each distinct crash and where its inputs are."""
    tried = sum(statuses.values())
    rate = tried / max(elapsed, 1e-9)
    lines = [
        (
            f"fuzz_loader: seed {seed}, {elapsed / 60:.1f} min, {tried:,} inputs ({rate:,.1f}/s): "
            f"{statuses['valid']:,} valid trees, {statuses['invalid']:,} invalid, "
            f"{statuses['crash']:,} crashing"
        ),
        f"distinct crashes: {len(crashes.found)}",
    ]
    for signature, crash in crashes.found.items():
        lines.append(f"  {crash.directory} ({crash.count} inputs, smallest {crash.smallest:,} bytes):")
        lines.append(f"    {signature}")
    return "\n".join(lines)


def replay(directory: Path) -> int:
    """Examine one saved input in this process and print the outcome; 1 when it crashes."""
    tree, signature = load_saved(directory)
    base = Path(tempfile.mkdtemp(prefix="fuzz-replay-"))
    os.chdir(base)
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, SOFT_SECONDS + 2.0 * tree.size / 2**20)
    try:
        outcome = examine(tree, base)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        shutil.rmtree(base, ignore_errors=True)
    print(f"saved as: {signature}\nnow:      {outcome.signature or outcome.status}\n\n{outcome.report}")
    return 1 if outcome.status == "crash" else 0


def minimize(directory: Path, budget: int = 20_000) -> int:
    """Shrink a saved input (files, then lines, then bytes) while it crashes the same way,
    and save the result as ``DIRECTORY/minimized``."""
    tree, signature = load_saved(directory)
    runner = Runner()
    runs = 0

    def same(candidate: Tree) -> bool:
        nonlocal runs
        runs += 1
        return runs <= budget and runner.run(candidate).signature == signature

    try:
        if not same(tree):
            print(f"{directory} does not crash as {signature!r} any more")
            return 1
        for name in [name for name in tree.files if name != tree.root]:
            others = {other: data for other, data in tree.files.items() if other != name}
            if others and same(Tree(others, tree.root)):
                del tree.files[name]
        for name in list(tree.files):
            tree.files[name] = shrink(
                tree.files[name], lambda data, name=name: same(Tree({**tree.files, name: data}, tree.root))
            )
        outcome = runner.run(tree)
    finally:
        runner.close()
    meta = {"signature": signature, "kind": outcome.kind, "root": tree.root, "bytes": tree.size}
    save(directory / "minimized", tree, outcome, meta)
    print(f"{directory / 'minimized'}: {tree.size:,} bytes after {runs:,} runs")
    for name, data in tree.files.items():
        print(f"  {name}: {data!r}")
    return 0


def shrink(data: bytes, keeps: Any) -> bytes:
    """Remove ever smaller runs of lines, then of bytes, while ``keeps(data)`` holds."""
    for split in (lambda d: d.splitlines(keepends=True), lambda d: [d[i : i + 1] for i in range(len(d))]):
        parts: list[bytes] = split(data)
        size = max(len(parts) // 2, 1)
        while parts:
            index = 0
            while index < len(parts):
                candidate = parts[:index] + parts[index + size :]
                if keeps(b"".join(candidate)):
                    parts = candidate
                else:
                    index += size
            if size == 1:
                break
            size //= 2
        data = b"".join(parts)
    return data


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run the fuzzer, a replay or a minimization."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=1.0, help="time budget (default 1)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the inputs (default: random)")
    parser.add_argument("--out", type=Path, default=Path("fuzz-out"), help="where crashing inputs go")
    parser.add_argument("--replay", type=Path, metavar="DIR", help="examine one saved input, print the outcome")
    parser.add_argument("--minimize", type=Path, metavar="DIR", help="shrink a saved input that crashes")
    args = parser.parse_args(argv)
    if args.replay:
        return replay(args.replay.resolve())
    if args.minimize:
        return minimize(args.minimize.resolve())
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    return fuzz(args.minutes, seed, args.out.resolve())


if __name__ == "__main__":
    sys.exit(main())
