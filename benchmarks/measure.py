"""Running one measured step in a subprocess: wall time, and peak memory including its children.

Two memory figures are taken for every step:

- ``max_rss_mb``: the kernel's peak resident set of the step's process or of any
  descendant it waited for (``ru_maxrss`` of ``wait4`` on the step, which folds in
  its reaped children: parse workers, git). It is the largest single process.
- ``peak_tree_rss_mb``: the largest sum of the resident sets of the step and all
  its live descendants, sampled every 100 ms with psutil: what processes running at
  the same time (parallel parse workers) hold together.

The reported peak is the larger of the two.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

SAMPLE_SECONDS = 0.1


@dataclass(frozen=True)
class StepRun:
    """One run of one step."""

    seconds: float
    cpu_seconds: float  # user + system time of the step and its reaped children (not the server's)
    max_rss_mb: float
    peak_tree_rss_mb: float
    returncode: int

    @property
    def peak_mb(self) -> float:
        """The step's peak memory: the larger of the two measurements."""
        return max(self.max_rss_mb, self.peak_tree_rss_mb)


class _Sampler(threading.Thread):
    """Polls the summed RSS of a process tree until told to stop."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            total = 0
            try:
                for process in [root, *root.children(recursive=True)]:
                    try:
                        total += process.memory_info().rss
                    except psutil.Error:
                        continue
            except psutil.Error:
                return
            self.peak = max(self.peak, total)
            self.done.wait(SAMPLE_SECONDS)


def run_step(command: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None,
             stdout: Path | None = None, check: bool = True) -> StepRun:
    """Run ``command`` to completion; raise with its stderr if it fails and ``check``."""
    out = open(stdout, "wb") if stdout is not None else subprocess.DEVNULL  # noqa: SIM115
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(list(command), cwd=cwd, env=dict(env) if env is not None else None,
                                   stdout=out, stderr=err)
        sampler = _Sampler(process.pid)
        sampler.start()
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        sampler.done.set()
        sampler.join()
        err.seek(0)
        errors = err.read()[-4000:].decode(errors="replace")
    process.returncode = os.waitstatus_to_exitcode(status)
    if out is not subprocess.DEVNULL:
        out.close()
    if check and process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {process.returncode}:\n{errors}")
    # ru_maxrss is in kilobytes on Linux.
    return StepRun(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, sampler.peak / 2**20,
                   process.returncode)
