"""Read-only git facts for attribution: the work tree, HEAD, dirty paths and who last changed which lines."""

from __future__ import annotations

import functools
import os
import posixpath
import re
import shutil
import subprocess
import threading
from collections import Counter
from collections.abc import Callable, Container, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .errors import ConfigurationError

# Long enough for blame of a big file in a deep history; short enough that CI never hangs.
GIT_TIMEOUT_SECONDS = 120.0
# Blame is CPU- and IO-bound inside git; a few workers overlap it without thrashing.
BLAME_WORKERS = 2  # one per core here; four parallel blames pushed a large plan past 1.5 GB (docs/performance.md)

# Every git invocation, by subcommand. Tests read it to prove "one blame per file".
GIT_CALLS: Counter[str] = Counter()
_CALLS_LOCK = threading.Lock()

# We find the repository from the path we are given, never from a caller's git
# environment (a hook, say), which could point git at another repository or index.
_CALLER_REPOSITORY_VARIABLES = frozenset(
    {"GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR"}
)
_NO_WORK_TREE = ("not a git repository", "must be run in a work tree")
_SHA = re.compile(r"^[0-9a-f]{4,64}$")
_BLAME_HEADER = re.compile(r"^([0-9a-f]{40}|[0-9a-f]{64}) \d+ (\d+)(?: (\d+))?$")
_HUNK = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
# Two NULs open each commit record; NUL never occurs in git's text output otherwise.
_LOG_FORMAT = "%x00%x00%H%x00%P%x00%aN%x00%aE%x00%aI%x00"
_LOG_OPTIONS = (
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--no-renames",
    "--no-show-signature",
)


@dataclass(frozen=True)
class Author:
    """Who asked for a change: a commit's author, or the local user for uncommitted lines."""

    name: str
    email: str
    commit: str | None
    committed_at: datetime | None
    uncommitted: bool


@dataclass(frozen=True)
class Span:
    """Lines of a manifest file, 1-based and inclusive; ``path`` is absolute or relative to the root."""

    path: Path
    start_line: int
    end_line: int

    def __post_init__(self) -> None:
        if self.start_line < 1 or self.end_line < self.start_line:
            raise ValueError(f"invalid line span {self.start_line}-{self.end_line} in {self.path}")


@dataclass(frozen=True)
class Removal:
    """An object once defined in ``path`` at ``since_commit`` (at lines start..end, if known) and gone now."""

    path: Path
    since_commit: str | None
    start_line: int | None = None
    end_line: int | None = None

    def __post_init__(self) -> None:
        start, end = self.start_line, self.end_line
        if (start is None) != (end is None) or (
            start is not None and end is not None and not 1 <= start <= end
        ):
            raise ValueError(f"invalid line range {start}-{end} for {self.path}")


@dataclass(frozen=True)
class _Output:
    returncode: int
    stdout: str
    stderr: str


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _CALLER_REPOSITORY_VARIABLES}
    env.update(
        GIT_OPTIONAL_LOCKS="0",
        LC_ALL="C",
        GIT_LITERAL_PATHSPECS="1",
        GIT_TERMINAL_PROMPT="0",
        GIT_PAGER="cat",
    )
    return env


def _run_git(cwd: Path, subcommand: str, *args: str, ok: Container[int] = (0,)) -> _Output:
    """Run one read-only git command; any failure becomes a one-line ConfigurationError."""
    with _CALLS_LOCK:
        GIT_CALLS[subcommand] += 1
    command = ["git", "--no-pager", subcommand, *args]
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=_environment(),
            capture_output=True,
            text=False,
            check=False,
            timeout=GIT_TIMEOUT_SECONDS,
        )
    except subprocess.TimeoutExpired:
        raise ConfigurationError(
            f"git {subcommand} did not finish within {GIT_TIMEOUT_SECONDS:g} s in {cwd}"
        ) from None
    except OSError as error:
        if shutil.which("git") is None:
            raise ConfigurationError("git is not installed or not on PATH (needed for attribution)") from None
        raise ConfigurationError(f"cannot run git {subcommand} in {cwd}: {error.strerror}") from None
    output = _Output(
        done.returncode,
        done.stdout.decode("utf-8", errors="replace"),
        done.stderr.decode("utf-8", errors="replace"),
    )
    if output.returncode not in ok:
        raise _failure(cwd, subcommand, output)
    return output


def _failure(cwd: Path, subcommand: str, output: _Output) -> ConfigurationError:
    lines = [line.strip() for line in output.stderr.splitlines() if line.strip()]
    reason = lines[0] if lines else "no message"
    return ConfigurationError(f"git {subcommand} failed in {cwd} (exit {output.returncode}): {reason}")


@dataclass(frozen=True)
class _BlameCommit:
    sha: str
    name: str
    email: str
    author_time: int
    author_tz: str
    committer_time: int

    def author(self) -> Author:
        return Author(self.name, self.email, self.sha, _from_epoch(self.author_time, self.author_tz), False)


@functools.lru_cache(maxsize=4096)
def _from_epoch(seconds: int, tz: str) -> datetime:
    """A git timestamp with its ``+hhmm`` offset as an aware datetime."""
    match = re.fullmatch(r"([+-])(\d\d)(\d\d)", tz)
    offset = timedelta(0)
    if match:
        offset = timedelta(hours=int(match[2]), minutes=int(match[3]))
        offset = -offset if match[1] == "-" else offset
    return datetime.fromtimestamp(seconds, timezone(offset))


@dataclass(frozen=True)
class _Blame:
    """One file's blame: the commit of each line (index 0 is line 1) and what blame said of each commit."""

    path: str
    line_commits: tuple[str, ...]
    commits: dict[str, _BlameCommit]

    def author_of(self, span: Span, newest: Callable[[Sequence[str]], str] | None = None) -> Author | None:
        """The latest commit among the span's lines; None when any of them is uncommitted.

        Commits made within the same second tie on time; ``newest`` then picks the
        one the others are ancestors of (see ``GitRepository.newest``).
        """
        count = len(self.line_commits)
        if span.start_line > count:
            raise ConfigurationError(
                f"{self.path}:{span.start_line}-{span.end_line}: beyond the end of the file ({count} lines)"
            )
        # A parser's end mark may point just past the last line; those lines do not exist to blame.
        shas = set(self.line_commits[span.start_line - 1 : span.end_line])
        if any(_is_uncommitted(sha) for sha in shas):
            return None
        latest = max(
            (self.commits[sha] for sha in shas),
            key=lambda c: (c.author_time, c.committer_time, c.sha),
        )
        tied = sorted(
            sha for sha in shas
            if (self.commits[sha].author_time, self.commits[sha].committer_time)
            == (latest.author_time, latest.committer_time)
        )
        if len(tied) > 1 and newest is not None:
            latest = self.commits[newest(tied)]
        return latest.author()


def _is_uncommitted(sha: str) -> bool:
    return sha.strip("0") == ""


def _parse_blame(path: str, text: str) -> _Blame:
    """Parse ``git blame --incremental`` output (``--porcelain`` reads the same way).

    Each group of lines from one commit has a header ``<sha> <orig> <final> <count>``,
    followed by the commit's ``key value`` lines (all of them at its first group, then
    ``filename``); groups come in any order. ``--porcelain`` gives a header per line
    (the count only on a group's first), then the line itself after a tab. Splitting
    on ``\\n`` alone keeps a stray ``\\r`` or form feed inside a manifest line from
    being taken for a line break.
    """
    by_line: dict[int, str] = {}
    fields: dict[str, dict[str, str]] = {}
    current: dict[str, str] | None = None
    for line in text.split("\n"):
        if not line or line.startswith("\t"):
            continue
        header = _BLAME_HEADER.match(line)
        if header:
            first = int(header[2])
            for number in range(first, first + int(header[3] or 1)):
                by_line[number] = header[1]
            current = fields.setdefault(header[1], {})
        elif current is not None:
            key, _, value = line.partition(" ")
            current.setdefault(key, value)
    line_commits = tuple(by_line[n] for n in sorted(by_line))
    if sorted(by_line) != list(range(1, len(by_line) + 1)):
        raise ConfigurationError(f"git blame of {path} gave output that could not be read")
    commits = {sha: _blame_commit(sha, f) for sha, f in fields.items() if not _is_uncommitted(sha)}
    return _Blame(path, line_commits, commits)


def _blame_commit(sha: str, fields: dict[str, str]) -> _BlameCommit:
    return _BlameCommit(
        sha=sha,
        name=fields.get("author", ""),
        email=fields.get("author-mail", "").removeprefix("<").removesuffix(">"),
        author_time=int(fields.get("author-time", "0")),
        author_tz=fields.get("author-tz", "+0000"),
        committer_time=int(fields.get("committer-time", "0")),
    )


@dataclass(frozen=True)
class _Hunk:
    """One ``@@ -a,b +c,d @@`` of a zero-context diff: old lines a..a+b-1 became new lines c..c+d-1."""

    old_start: int
    old_count: int
    new_start: int
    new_count: int

    @property
    def old_end(self) -> int:
        return self.old_start + self.old_count - 1

    def touches(self, lo: int, hi: int) -> bool:
        if self.old_count:
            return self.old_start <= hi and self.old_end >= lo
        # A pure insertion goes after old line ``old_start``; only inside the range touches it.
        return lo <= self.old_start < hi

    def precedes(self, line: int) -> bool:
        return (self.old_end if self.old_count else self.old_start) < line


def _hunks(diff: str) -> tuple[_Hunk, ...]:
    found = []
    for line in diff.split("\n"):
        match = _HUNK.match(line)
        if match:
            found.append(
                _Hunk(
                    int(match[1]),
                    int(match[2]) if match[2] is not None else 1,
                    int(match[3]),
                    int(match[4]) if match[4] is not None else 1,
                )
            )
    return tuple(found)


def _follow(lo: int, hi: int, hunks: Sequence[_Hunk]) -> tuple[bool, tuple[int, int] | None]:
    """Carry the line range lo..hi through one file's diff.

    Returns whether the diff touched the range, and where the range is afterwards:
    its surviving lines plus any lines a touching hunk put in place of its lines,
    or None when every line was deleted and nothing replaced them.
    """

    def shifted(line: int) -> int:
        return line + sum(h.new_count - h.old_count for h in hunks if h.precedes(line))

    touching = [h for h in hunks if h.touches(lo, hi)]
    if not touching:
        return False, (shifted(lo), shifted(hi))
    ends = [end for h in touching if h.new_count for end in (h.new_start, h.new_start + h.new_count - 1)]
    first, last = lo, hi
    for hunk in hunks:  # git emits hunks in order and without overlap
        if hunk.old_count and hunk.old_start <= first <= hunk.old_end:
            first = hunk.old_end + 1
    for hunk in reversed(hunks):
        if hunk.old_count and hunk.old_start <= last <= hunk.old_end:
            last = hunk.old_start - 1
    if first <= last:
        ends += [shifted(first), shifted(last)]
    return True, ((min(ends), max(ends)) if ends else None)


def _trace_removal(
    commits: Sequence[_LogCommit], lo: int, hi: int
) -> tuple[_LogCommit | None, tuple[int, int] | None]:
    """Carry lo..hi through ``commits`` (oldest first).

    Returns the commit that deleted the range and None, or else the last commit that
    touched it (None if none did) and where the range stands at the last commit.
    """
    span, last_touch = (lo, hi), None
    for commit in commits:
        touched, after = _follow(*span, commit.hunks)
        last_touch = commit if touched else last_touch
        if after is None:
            return commit, None
        span = after
    return last_touch, span


@dataclass(frozen=True)
class _LogCommit:
    sha: str
    parents: tuple[str, ...]
    name: str
    email: str
    authored_at: datetime
    hunks: tuple[_Hunk, ...]

    def author(self) -> Author:
        return Author(self.name, self.email, self.sha, self.authored_at, False)


def _parse_log(text: str) -> list[_LogCommit]:
    commits = []
    for record in text.split("\x00\x00")[1:]:
        sha, parents, name, email, date, diff = record.split("\x00", 5)
        commits.append(
            _LogCommit(sha, tuple(parents.split()), name, email, datetime.fromisoformat(date), _hunks(diff))
        )
    return commits


class GitRepository:
    """A git work tree, asked only questions that change nothing in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"GitRepository({str(self.root)!r})"

    @classmethod
    def discover(cls, start: Path) -> GitRepository | None:
        """The work tree holding ``start`` (a file or directory, existing or not); None outside git."""
        directory = start.absolute()
        while not directory.is_dir():
            if directory.parent == directory:
                return None
            directory = directory.parent
        output = _run_git(directory, "rev-parse", "--show-toplevel", ok=(0, 128))
        if output.returncode != 0:
            if any(reason in output.stderr for reason in _NO_WORK_TREE):
                return None
            raise _failure(directory, "rev-parse", output)
        return cls(Path(output.stdout.rstrip("\n")))

    def _git(self, subcommand: str, *args: str, ok: Container[int] = (0,)) -> _Output:
        return _run_git(self.root, subcommand, *args, ok=ok)

    def _relative(self, path: Path) -> str:
        """``path`` as git names it from the root: POSIX, relative, normalized."""
        if not path.is_absolute():
            return posixpath.normpath(path.as_posix())
        for resolve in (False, True):
            try:
                candidate = path.resolve() if resolve else path
                return posixpath.normpath(candidate.relative_to(self.root).as_posix())
            except ValueError:
                continue
        raise ConfigurationError(f"{path} is outside the git repository at {self.root}")

    def head(self) -> str | None:
        """The full sha of HEAD, or None on a branch with no commits yet."""
        output = self._git("rev-parse", "--verify", "--quiet", "HEAD", ok=(0, 1))
        return (output.stdout.strip() or None) if output.returncode == 0 else None

    def is_shallow(self) -> bool:
        """Whether this is a shallow clone, where history ends early and old lines blame to its boundary."""
        return self._git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"

    def is_dirty(self, paths: Sequence[Path]) -> bool:
        """Whether anything under ``paths`` is staged, modified, deleted or untracked (ignored files aside).

        An empty sequence names no path and so is never dirty; pass ``[repo.root]`` for the whole tree.
        """
        if not paths:
            return False
        pathspecs = [self._relative(path) for path in paths]
        output = self._git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--", *pathspecs)
        return bool(output.stdout)

    def commit_exists(self, sha: str) -> bool:
        """Whether ``sha`` (hex, possibly abbreviated if unambiguous) names a commit in this repository."""
        if not _SHA.match(sha.lower()):
            return False
        output = self._git("cat-file", "-e", f"{sha}^{{commit}}", ok=(0, 1, 128))
        return output.returncode == 0

    # --- for `audit verify --git` (issue 5) ---

    def default_branch(self) -> str:
        """The ref recorded commits must be reachable from: origin/HEAD when the clone has it, else HEAD."""
        output = self._git("rev-parse", "--verify", "--quiet", "refs/remotes/origin/HEAD^{commit}", ok=(0, 1))
        return "origin/HEAD" if output.returncode == 0 else "HEAD"

    def is_ancestor(self, sha: str, ref: str) -> bool:
        """Whether commit ``sha`` is ``ref`` or one of its ancestors."""
        if not _SHA.match(sha.lower()):
            return False
        output = self._git("merge-base", "--is-ancestor", sha, ref, ok=(0, 1, 128))
        return output.returncode == 0

    def user_identity(self) -> tuple[str, str]:
        """``user.name`` and ``user.email`` from git config, each ``"unknown"`` when unset."""
        output = self._git("config", "-z", "--get-regexp", r"^user\.(name|email)$", ok=(0, 1))
        values: dict[str, str] = {}
        for entry in output.stdout.split("\x00"):
            key, _, value = entry.partition("\n")
            if value.strip():
                values[key.lower()] = value.strip()  # the last value wins, as in git config --get
        return values.get("user.name", "unknown"), values.get("user.email", "unknown")

    def newest(self, shas: Sequence[str]) -> str:
        """Of commits that tie on time, the one that descends from the others.

        ``git merge-base --independent`` keeps the commits no other one reaches; when
        history leaves several (parallel branches), the greatest sha decides, so the
        answer is at least stable.
        """
        unique = sorted(set(shas))
        if len(unique) == 1:
            return unique[0]
        output = self._git("merge-base", "--independent", *unique, ok=(0, 1))
        heads = sorted(line.strip() for line in output.stdout.splitlines() if line.strip())
        return heads[-1] if heads else unique[-1]

    def latest(self, authors: Sequence[Author]) -> Author:
        """The newest of several authors of one object: uncommitted first, then by time and ancestry."""
        for author in authors:
            if author.uncommitted:
                return author
        def moment(a: Author) -> float:
            return a.committed_at.timestamp() if a.committed_at else 0.0
        top = max(moment(a) for a in authors)
        tied = {a.commit: a for a in authors if moment(a) == top and a.commit}
        if len(tied) > 1:
            return tied[self.newest(list(tied))]
        return max(authors, key=moment)

    def verify_commits(self, shas: Iterable[str]) -> dict[str, bool]:
        """Whether each commit carries a signature git can verify (``git verify-commit``).

        Uses the repository's own signing configuration (GPG keyring, or
        ``gpg.ssh.allowedSignersFile`` for SSH signatures).
        """
        results: dict[str, bool] = {}
        for sha in sorted(set(shas)):
            if not _SHA.match(sha.lower()):
                results[sha] = False
                continue
            output = self._git("verify-commit", sha, ok=range(0, 256))
            results[sha] = output.returncode == 0
        return results

    def _uncommitted(self) -> Author:
        name, email = self.user_identity()
        return Author(name, email, None, None, True)

    def attribute(self, spans: Iterable[Span]) -> dict[Span, Author]:
        """The author of each span: the latest commit among its lines, or uncommitted.

        Each file is blamed once, on its working-tree content, however many spans it
        holds; several files are blamed in parallel. Files git does not track, and
        every file in a repository without commits, are uncommitted as a whole.
        """
        by_file: dict[str, list[Span]] = {}
        relative: dict[Path, str] = {}
        for span in spans:
            name = relative.get(span.path)
            if name is None:
                name = relative[span.path] = self._relative(span.path)
            by_file.setdefault(name, []).append(span)
        if not by_file:
            return {}
        tracked = self._tracked(list(by_file)) if self.head() is not None else set()
        blames = self._blame_files([path for path in by_file if path in tracked])
        authors: dict[Span, Author] = {}
        uncommitted: Author | None = None
        for path, file_spans in by_file.items():
            blame = blames.get(path)
            for span in file_spans:
                author = blame.author_of(span, self.newest) if blame is not None else None
                if author is None:
                    uncommitted = uncommitted or self._uncommitted()
                    author = uncommitted
                authors[span] = author
        return authors

    def _tracked(self, paths: Sequence[str]) -> set[str]:
        output = self._git("ls-files", "-z", "--", *paths)
        return {name for name in output.stdout.split("\x00") if name}

    def _blame_files(self, paths: Sequence[str]) -> dict[str, _Blame]:
        if len(paths) <= 1:
            return {path: self._blame(path) for path in paths}
        with ThreadPoolExecutor(max_workers=min(BLAME_WORKERS, len(paths))) as pool:
            return dict(zip(paths, pool.map(self._blame, paths), strict=True))

    def _blame(self, path: str) -> _Blame:
        # No revision: blame the working tree, so uncommitted lines come out as all zeros.
        return _parse_blame(path, self._git("blame", "--incremental", "--", path).stdout)

    def removal_author(
        self,
        path: Path,
        since_commit: str | None,
        start_line: int | None = None,
        end_line: int | None = None,
    ) -> Author | None:
        """Who removed an object defined in ``path`` at ``since_commit``; see ``removal_authors``."""
        removal = Removal(path, since_commit, start_line, end_line)
        return self.removal_authors([removal])[removal]

    def removal_authors(self, removals: Iterable[Removal]) -> dict[Removal, Author | None]:
        """Who removed each object, with one ``git log`` per file and ``since_commit``, however many objects.

        With the lines, ``git log -p -U0 --first-parent since..HEAD -- path`` carries each
        line range forward commit by commit: the commit that deletes its last line removed
        the object. If none did and the working tree changes the range as it stands at
        HEAD, the removal is uncommitted; else the last commit that touched the range.
        Without the lines (or when no commit touched them), the latest commit since
        ``since_commit`` that touched the file, or uncommitted if there is none and the
        file has uncommitted changes. With no known ``since_commit``: uncommitted if the
        file has uncommitted changes, else the latest commit that touched the file. A merge
        found on the first-parent line is narrowed to the latest commit it brought in that
        touched the file. None when nothing can be said.
        """
        groups: dict[tuple[str, str | None], list[Removal]] = {}
        for removal in removals:
            groups.setdefault((self._relative(removal.path), removal.since_commit), []).append(removal)
        if not groups:
            return {}
        uncommitted = functools.cache(self._uncommitted)
        if self.head() is None:  # with no commit at all, no removal can be committed
            return {removal: uncommitted() for members in groups.values() for removal in members}
        authors: dict[Removal, Author | None] = {}
        for (path, since), members in groups.items():
            known = since is not None and self.commit_exists(since)
            group = _RemovalGroup(self, path, since if known else None, uncommitted)
            authors.update((removal, group.author(removal)) for removal in members)
        return authors

    def _log(self, path: str, revisions: str, *, patch: bool, limit: int | None = None) -> list[_LogCommit]:
        """Commits along the first-parent line that changed ``path``, oldest first."""
        options = [*_LOG_OPTIONS, "--first-parent", "-m", f"--format={_LOG_FORMAT}"]
        options += ["-p", "-U0"] if patch else []
        options += [f"--max-count={limit}"] if limit is not None else []
        output = self._git("log", *options, revisions, "--", path)
        return list(reversed(_parse_log(output.stdout)))

    def _working_hunks(self, path: str) -> tuple[_Hunk, ...]:
        """How the working tree (staged or not) differs from HEAD in ``path``."""
        options = ("-U0", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames")
        return _hunks(self._git("diff", *options, "HEAD", "--", path).stdout)

    def _commit_author(self, commit: _LogCommit, path: str) -> Author:
        """The commit's author; for a merge, the latest commit it brought in that touched the file."""
        if len(commit.parents) < 2:
            return commit.author()
        options = [*_LOG_OPTIONS, "--no-merges", "--max-count=1", f"--format={_LOG_FORMAT}"]
        output = self._git("log", *options, f"{commit.sha}^1..{commit.sha}", "--", path)
        brought = _parse_log(output.stdout)
        return brought[0].author() if brought else commit.author()


class _RemovalGroup:
    """The removals from one file since one commit: git is asked once, lazily, for what they share."""

    def __init__(
        self, repo: GitRepository, path: str, since: str | None, uncommitted: Callable[[], Author]
    ) -> None:
        self.repo, self.path, self.since, self.uncommitted = repo, path, since, uncommitted
        self._authors: dict[str, Author] = {}

    def _commit_author(self, commit: _LogCommit) -> Author:
        # A merge costs one more git log to narrow; many objects removed by it share that.
        if commit.sha not in self._authors:
            self._authors[commit.sha] = self.repo._commit_author(commit, self.path)
        return self._authors[commit.sha]

    @functools.cached_property
    def commits(self) -> list[_LogCommit]:
        if self.since is None:
            return self.repo._log(self.path, "HEAD", patch=False, limit=1)
        # The patch is cheap (zero context, one file) and serves objects with and without lines.
        return self.repo._log(self.path, f"{self.since}..HEAD", patch=True)

    @functools.cached_property
    def working_hunks(self) -> tuple[_Hunk, ...]:
        return self.repo._working_hunks(self.path)

    @functools.cached_property
    def dirty(self) -> bool:
        return self.repo.is_dirty([Path(self.path)])

    def author(self, removal: Removal) -> Author | None:
        if self.since is None and self.dirty:
            return self.uncommitted()
        if self.since is not None and removal.start_line is not None and removal.end_line is not None:
            remover, at_head = _trace_removal(self.commits, removal.start_line, removal.end_line)
            if at_head is not None and _follow(*at_head, self.working_hunks)[0]:
                return self.uncommitted()
            if remover is not None:
                return self._commit_author(remover)
        if self.commits:
            return self._commit_author(self.commits[-1])
        return self.uncommitted() if self.since is not None and self.dirty else None
