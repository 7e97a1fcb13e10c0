"""The commit graph of a manifest tree between two points, with each commit's file changes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

# A file mode git uses for plain files (others — symbolic links, submodules — hold no manifest).
_FILE_MODES = frozenset({"100644", "100755"})
# The null object name git prints for "no file on this side".
_NULL = frozenset({"0" * 40, "0" * 64})
# log's per-commit header: fields separated by \x02, after a \x01 that opens each commit.
LOG_FORMAT = "%x01%H%x02%P%x02%aN%x02%aE%x02%aI%x02%cN%x02%cE%x02%cI%x02%s"


@dataclass(frozen=True, slots=True)
class FileChange:
    """One file that differs between a commit and one of its parents.

    ``before`` and ``after`` are blob names (None: no manifest file on that side — absent,
    or a symbolic link or submodule in its place).
    """

    path: str
    before: str | None
    after: str | None


@dataclass(frozen=True, slots=True)
class Commit:
    """A commit as attribution needs it: its parents, author, committer and subject."""

    sha: str
    parents: tuple[str, ...]
    author_name: str
    author_email: str
    authored_at: str  # ISO 8601 with offset
    committer_name: str
    committer_email: str
    committed_at: str
    subject: str


@dataclass
class History:
    """Commits from HEAD back to (not including) the excluded ones, newest first in graph
    order (a commit always before its parents), limited to one path of the repository.

    Parents are as history simplification leaves them: commits that do not touch the
    path are left out and their children point past them. ``changes`` of a non-merge
    commit come from the log; a merge's, per parent, are asked of git when first needed.
    """

    order: list[str]
    commits: dict[str, Commit]
    shallow: frozenset[str] = frozenset()
    _changes: dict[tuple[str, str], dict[str, FileChange]] = field(default_factory=dict)
    _diff: Callable[[str, str], list[FileChange]] | None = None

    def changes(self, commit: str, parent: str | None) -> Mapping[str, FileChange]:
        """Files that differ between ``parent`` (None: nothing, for a root commit) and ``commit``."""
        key = (commit, parent or "")
        found = self._changes.get(key)
        if found is None:
            if self._diff is None or parent is None:
                found = {}
            else:
                found = {change.path: change for change in self._diff(parent, commit)}
            self._changes[key] = found
        return found

    def inside(self, sha: str) -> bool:
        """Whether ``sha`` is one of the commits walked (not excluded, not beyond the path's history)."""
        return sha in self.commits


def parse_log(text: str, keep: Callable[[str], bool]) -> History:
    """Read ``git log -z --raw --no-renames --no-abbrev --parents --format=LOG_FORMAT``.

    NUL separates every item: each commit's header (opened by \\x01), then for a
    non-merge commit its raw entries, each ``:modes blobs status`` followed by the
    path. Paths ``keep`` refuses (not manifest files) are dropped.
    """
    order: list[str] = []
    commits: dict[str, Commit] = {}
    changes: dict[tuple[str, str], dict[str, FileChange]] = {}
    items = iter(text.split("\x00"))
    current: Commit | None = None
    for item in items:
        item = item.lstrip("\n")
        if item.startswith("\x01"):
            current = _header(item[1:])
            order.append(current.sha)
            commits[current.sha] = current
            if len(current.parents) <= 1:  # a merge's changes, per parent, are asked for when needed
                changes[(current.sha, current.parents[0] if current.parents else "")] = {}
        elif item.startswith(":") and current is not None:
            path = next(items, "")
            change = raw_change(item, path)
            if len(current.parents) <= 1 and keep(path):
                parent = current.parents[0] if current.parents else ""
                changes[(current.sha, parent)][path] = change
    return History(order, commits, _changes=changes)


def raw_change(meta: str, path: str) -> FileChange:
    """One ``:oldmode newmode oldblob newblob status`` entry of git's raw diff format."""
    old_mode, new_mode, old, new = meta[1:].split(" ", 4)[:4]
    return FileChange(path, _blob(old_mode, old), _blob(new_mode, new))


def parse_raw(text: str, keep: Callable[[str], bool]) -> list[FileChange]:
    """``git diff-tree -z --raw --no-renames`` output as file changes."""
    out = []
    items = iter(text.split("\x00"))
    for item in items:
        item = item.lstrip("\n")
        if item.startswith(":"):
            path = next(items, "")
            if keep(path):
                out.append(raw_change(item, path))
    return out


def _blob(mode: str, sha: str) -> str | None:
    return sha if mode in _FILE_MODES and sha not in _NULL else None


def _header(text: str) -> Commit:
    sha, parents, name, email, authored, cname, cemail, committed, subject = (text.split("\x02", 8) + [""] * 9)[:9]
    return Commit(sha, tuple(parents.split()), name, email, authored, cname, cemail, committed, subject)


def manifest_filter(prefix: str, suffixes: Iterable[str]) -> Callable[[str], bool]:
    """Which repository paths are manifest files of a tree at ``prefix`` (a directory, or one
    file): the loader's rule — the suffix, and no name under the tree starting with ``.``."""
    endings = tuple(suffixes)
    directory = prefix.rstrip("/")

    def keep(path: str) -> bool:
        if directory in ("", "."):
            rest = path
        elif path == directory:
            return True  # the tree is this one file
        elif path.startswith(directory + "/"):
            rest = path[len(directory) + 1:]
        else:
            return False
        return path.endswith(endings) and not any(part.startswith(".") for part in rest.split("/"))

    return keep
