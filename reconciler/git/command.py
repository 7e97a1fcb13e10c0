"""Running read-only git commands: a clean environment, bounded time, one-line failures."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Container, Mapping
from dataclasses import dataclass
from pathlib import Path

from reconciler.errors import ConfigurationError

# Long enough for a log of a deep history; short enough that CI never hangs.
GIT_TIMEOUT_SECONDS = 120.0

# We find the repository from the path we are given, never from a caller's git
# environment (a hook, say), which could point git at another repository or index.
_CALLER_REPOSITORY_VARIABLES = frozenset(
    {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR"}
)


@dataclass(frozen=True)
class Output:
    """What a git command printed (decoded as UTF-8, invalid bytes replaced) and its exit status."""

    returncode: int
    stdout: str
    stderr: str


def environment() -> dict[str, str]:
    """The environment git runs in: no caller repository, no locks taken, literal pathspecs, C locale."""
    env = {k: v for k, v in os.environ.items() if k not in _CALLER_REPOSITORY_VARIABLES}
    env.update(
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
        GIT_LITERAL_PATHSPECS="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_PAGER="cat",
    )
    return env


def run_git(cwd: Path, subcommand: str, *args: str, ok: Container[int] = (0,),
            stdin: bytes | None = None, extra_env: Mapping[str, str] | None = None) -> Output:
    """Run one git command (read-only, but for the audit anchor's note); any failure becomes a
    one-line ConfigurationError. ``extra_env`` is added to the environment git runs in."""
    command = ["git", "--no-pager", subcommand, *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env={**environment(), **(extra_env or {})},
            input=stdin,
            capture_output=True,
            check=False,
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise ConfigurationError(
            f"git {subcommand} did not finish within {GIT_TIMEOUT_SECONDS:g} s in {cwd}"
        ) from None
    except OSError as error:
        raise missing_git(subcommand, cwd, error) from None
    output = Output(
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )
    if output.returncode not in ok:
        raise failure(cwd, subcommand, output)
    return output


def missing_git(subcommand: str, cwd: Path, error: OSError) -> ConfigurationError:
    """Why git could not be started, as one line."""
    if shutil.which("git") is None:
        return ConfigurationError("git is not installed or not on PATH (needed for attribution)")
    return ConfigurationError(f"cannot run git {subcommand} in {cwd}: {error.strerror}")


def failure(cwd: Path, subcommand: str, output: Output) -> ConfigurationError:
    """A failed git command as one line: the first line git wrote on stderr."""
    lines = [line.strip() for line in output.stderr.splitlines() if line.strip()]
    reason = lines[0] if lines else "no message"
    return ConfigurationError(f"git {subcommand} failed in {cwd} (exit {output.returncode}): {reason}")
