"""A git work tree, asked only questions that change nothing in it."""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path

from reconciler.errors import ConfigurationError
from reconciler.git.command import Output, failure, run_git
from reconciler.git.history import LOG_FORMAT, FileChange, History, parse_log, parse_raw
from reconciler.git.objects import BlobReader

_NO_WORK_TREE = ("not a git repository", "must be run in a work tree")
_SHA = re.compile(r"^[0-9a-f]{4,64}$")
_FULL_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")


class GitRepository:
    """A git work tree, asked only questions that change nothing in it."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"GitRepository({str(self.root)!r})"

    @classmethod
    def discover(cls, start: Path) -> GitRepository | None:
        """The work tree holding ``start`` (a file or directory, existing or not); None outside git.

        A tree inside a submodule belongs to the submodule's own repository.
        """
        directory = start.absolute()
        while not directory.is_dir():
            if directory.parent == directory:
                return None
            directory = directory.parent
        output = run_git(directory, "rev-parse", "--show-toplevel", ok=(0, 128))
        if output.returncode != 0:
            if any(reason in output.stderr for reason in _NO_WORK_TREE):
                return None
            raise failure(directory, "rev-parse", output)
        return cls(Path(output.stdout.rstrip("\n")))

    def _git(self, subcommand: str, *args: str, ok: Container[int] = (0,), stdin: bytes | None = None) -> Output:
        return run_git(self.root, subcommand, *args, ok=ok, stdin=stdin)

    def relative(self, path: Path) -> str:
        """``path`` as git names it from the root: POSIX, relative, normalized.

        A relative ``path`` is taken from the working directory, as the user typed it.
        """
        absolute = Path(posixpath.normpath((Path.cwd() / path).as_posix()))
        for candidate in (absolute, absolute.resolve()):
            for root in (self.root, self.root.resolve()):
                try:
                    rest = candidate.relative_to(root).as_posix()
                except ValueError:
                    continue
                return "." if rest in ("", ".") else rest
        raise ConfigurationError(f"{path} is outside the git repository at {self.root}")

    def head(self) -> str | None:
        """The full sha of HEAD, or None on a branch with no commits yet."""
        output = self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}", ok=(0, 1, 128))
        return (output.stdout.strip() or None) if output.returncode == 0 else None

    def is_shallow(self) -> bool:
        """Whether this is a shallow clone, whose history ends early."""
        return self._git("rev-parse", "--is-shallow-repository").stdout.strip() == "true"

    def shallow_commits(self) -> frozenset[str]:
        """The commits a shallow clone has without their parents (empty for a full clone)."""
        if not self.is_shallow():
            return frozenset()
        name = self._git("rev-parse", "--git-path", "shallow").stdout.strip()
        path = Path(name) if Path(name).is_absolute() else self.root / name
        try:
            return frozenset(line.strip() for line in path.read_text(encoding="ascii").splitlines() if line.strip())
        except OSError:
            return frozenset()

    def commit_exists(self, sha: str) -> bool:
        """Whether ``sha`` (hex, possibly abbreviated if unambiguous) names a commit in this repository."""
        if not _SHA.fullmatch(sha.lower()):
            return False
        output = self._git("cat-file", "-e", f"{sha}^{{commit}}", ok=(0, 1, 128))
        return output.returncode == 0

    def default_branch(self) -> str:
        """The ref recorded commits must be reachable from: origin/HEAD when the clone has it, else HEAD."""
        output = self._git("rev-parse", "--verify", "--quiet", "refs/remotes/origin/HEAD^{commit}", ok=(0, 1))
        return "origin/HEAD" if output.returncode == 0 else "HEAD"

    def is_ancestor(self, sha: str, ref: str) -> bool:
        """Whether commit ``sha`` is ``ref`` or one of its ancestors."""
        if not _SHA.fullmatch(sha.lower()):
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

    def verify_commits(self, shas: Iterable[str]) -> dict[str, bool]:
        """Whether each commit carries a signature git can verify (``git verify-commit``).

        Uses the repository's own signing configuration (GPG keyring, or
        ``gpg.ssh.allowedSignersFile`` for SSH signatures).
        """
        results: dict[str, bool] = {}
        for sha in sorted(set(shas)):
            if not _SHA.fullmatch(sha.lower()):
                results[sha] = False
                continue
            output = self._git("verify-commit", sha, ok=range(0, 256))
            results[sha] = output.returncode == 0
        return results

    # --- what the audit's checks read ----------------------------------------------------------

    def resolve(self, ref: str) -> str | None:
        """The full sha of the commit ``ref`` names; None when it names none."""
        if ref.startswith("-"):
            return None
        output = self._git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}",
                           ok=(0, 1, 128))
        return (output.stdout.strip() or None) if output.returncode == 0 else None

    def graph(self, tip: str) -> dict[str, tuple[str, ...]]:
        """Every commit ``tip`` reaches, with its parents (``tip`` first)."""
        if not _FULL_SHA.fullmatch(tip):
            raise ConfigurationError(f"not a full commit name: {tip!r}")
        output = self._git("rev-list", "--parents", tip)
        graph: dict[str, tuple[str, ...]] = {}
        for line in output.stdout.splitlines():
            sha, *parents = line.split()
            graph[sha] = tuple(parents)
        return graph

    def messages(self, shas: Iterable[str]) -> dict[str, str]:
        """The full message of each commit (full shas), read with one ``git log --no-walk``."""
        listed = sorted({sha for sha in shas if _FULL_SHA.fullmatch(sha)})
        if not listed:
            return {}
        output = self._git("log", "--no-walk=unsorted", "--stdin", "--no-color", "--format=%x01%H%x02%B",
                           stdin="\n".join(listed).encode("ascii") + b"\n")
        out = {}
        for item in output.stdout.split("\x01")[1:]:
            sha, _, message = item.partition("\x02")
            out[sha.strip()] = message
        return out

    def commit_facts(self, sha: str) -> tuple[str, str, str, tuple[str, ...]] | None:
        """A commit's author name, author email, author date (ISO 8601) and parents; None when unknown."""
        if not _SHA.fullmatch(sha.lower()):
            return None
        output = self._git("show", "-s", "--no-color", "--format=%aN%x00%aE%x00%aI%x00%P", sha, "--",
                           ok=(0, 128))
        if output.returncode != 0:
            return None
        name, email, date, parents = (output.stdout.rstrip("\n").split("\x00") + ["", "", "", ""])[:4]
        return name, email, date, tuple(parents.split())

    def blob_at(self, commit: str, path: str) -> str | None:
        """The blob name of ``path`` at ``commit`` (a plain file only); None when there is none."""
        if not _FULL_SHA.fullmatch(commit):
            return None
        output = self._git("ls-tree", "-z", "--full-tree", commit, "--", path, ok=(0, 128))
        for entry in output.stdout.split("\x00"):
            meta, _, found = entry.partition("\t")
            parts = meta.split()
            if found == path and len(parts) == 3 and parts[1] == "blob" and parts[0] in ("100644", "100755"):
                return parts[2]
        return None

    def files_mentioning(self, commit: str, text: str, suffixes: Sequence[str]) -> list[str]:
        """The files at ``commit`` whose name ends in one of ``suffixes`` and whose content holds
        ``text`` (fixed string), by path from the root."""
        if not _FULL_SHA.fullmatch(commit) or not text:
            return []
        output = self._git("grep", "-l", "-z", "-I", "-F", "-e", text, commit, ok=(0, 1))
        prefix = f"{commit}:"
        found = (path[len(prefix):] if path.startswith(prefix) else path for path in output.stdout.split("\x00"))
        return [path for path in found if path.endswith(tuple(suffixes))]

    # --- what attribution reads ---------------------------------------------------------------

    def changed_paths(self, pathspec: str) -> set[str]:
        """Paths under ``pathspec`` whose working-tree content differs from HEAD: modified (staged
        or not), deleted, untracked and ignored files, each by its path from the root."""
        output = self._git("status", "--porcelain=v1", "-z", "--untracked-files=all", "--ignored=traditional",
                           "--no-renames", "--", pathspec)
        paths: set[str] = set()
        for entry in output.stdout.split("\x00"):
            if len(entry) > 3:
                paths.add(entry[3:])
        return paths

    def tree_files(self, commit: str, pathspec: str, keep: Callable[[str], bool]) -> dict[str, str]:
        """The manifest files under ``pathspec`` at ``commit``: path → blob name."""
        output = self._git("ls-tree", "-r", "-z", "--full-tree", commit, "--", pathspec)
        files = {}
        for entry in output.stdout.split("\x00"):
            meta, _, path = entry.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "blob" and parts[0] in ("100644", "100755") and keep(path):
                files[path] = parts[2]
        return files

    def tree_links(self, commit: str, pathspec: str) -> dict[str, str]:
        """The symbolic links under ``pathspec`` at ``commit``: path → what the link holds (its
        target, as written)."""
        output = self._git("ls-tree", "-r", "-z", "--full-tree", commit, "--", pathspec)
        links = {}
        for entry in output.stdout.split("\x00"):
            meta, _, path = entry.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[0] == "120000":
                links[path] = parts[2]
        if not links:
            return {}
        with self.blobs() as reader:
            return {path: (reader.read(blob) or b"").decode("utf-8", "surrogateescape") for path, blob in links.items()}

    def tree_id(self, commit: str, pathspec: str) -> str | None:
        """The object name of what ``commit`` holds at ``pathspec`` (a tree, or a blob for one
        file); None when it holds nothing there. Equal names mean identical contents."""
        if not _FULL_SHA.fullmatch(commit):
            return None
        spec = commit if pathspec in ("", ".") else f"{commit}:{pathspec}"
        if pathspec in ("", "."):
            spec = f"{commit}^{{tree}}"
        output = self._git("rev-parse", "--verify", "--quiet", spec, ok=(0, 1, 128))
        return output.stdout.strip() or None if output.returncode == 0 else None

    def history(self, head: str, exclude: Sequence[str], pathspec: str, keep: Callable[[str], bool]) -> History:
        """Commits reachable from ``head`` and from none of ``exclude`` that touch ``pathspec``.

        Each non-merge commit comes with its changes to manifest files (``keep``); a
        merge's changes against each parent are read when first asked for.
        """
        for sha in (head, *exclude):
            if not _FULL_SHA.fullmatch(sha):
                raise ConfigurationError(f"not a full commit name: {sha!r}")
        revisions = [head, *(f"^{sha}" for sha in exclude)]
        output = self._git("log", "-z", "--raw", "--no-renames", "--no-abbrev", "--topo-order", "--parents",
                           "--no-color", "--no-ext-diff", "--no-textconv", "--no-show-signature",
                           f"--format={LOG_FORMAT}", *revisions, "--", pathspec)
        history = parse_log(output.stdout, keep)
        history.shallow = self.shallow_commits()

        def diff(parent: str, commit: str) -> list[FileChange]:
            raw = self._git("diff-tree", "-r", "-z", "--raw", "--no-renames", "--no-abbrev", "--no-ext-diff",
                            "--no-textconv", parent, commit, "--", pathspec)
            return parse_raw(raw.stdout, keep)

        history._diff = diff
        return history

    def moved_to(self, commit: str, path: str) -> str | None:
        """Where ``commit`` moved the file ``path``, by git's rename detection against its first
        parent over the whole repository (the destination may be anywhere); None when it did not."""
        if not _FULL_SHA.fullmatch(commit):
            return None
        output = self._git("diff-tree", "-r", "-z", "-M", "--name-status", "--no-ext-diff", "--no-textconv",
                           f"{commit}^1", commit, ok=(0, 128))
        if output.returncode != 0:
            return None  # a root commit moves nothing
        items = output.stdout.split("\x00")
        index = 0
        while index < len(items) and items[index]:
            status = items[index]
            if status[:1] in ("R", "C"):
                source, destination = items[index + 1:index + 3]
                if status[:1] == "R" and source == path:
                    return destination
                index += 3
            else:
                index += 2
        return None

    def blobs(self) -> BlobReader:
        """A reader of blob contents (one ``git cat-file --batch`` for all); close it after use."""
        return BlobReader(self.root)
