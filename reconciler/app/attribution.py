"""Who asked for each planned change: uncommitted edits by content, then a walk of history by meaning.

The rule (docs/semantics.md, "Attribution"):

1. A change whose written fields differ between the working tree and HEAD (added,
   edited, deleted or untracked files alike, compared as parsed objects) is
   *uncommitted*: it names the applier, never a commit.
2. A change a commit asked for (reason ``manifest``) names the newest commit that
   changed what the object declares in the fields the change writes, walking from
   HEAD back to the commit this source last applied (the whole history on a first
   apply). Merges are transparent unless they made the value themselves.
3. A change no commit asked for (``drift``, ``secret``, ``adoption``) names the
   applier, with the commit that declares the value.

A shallow clone whose history stops before the walk ends cannot attribute: the
result says so, and apply refuses.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reconciler.core import ops
from reconciler.core.diff import Applied, Change, Desired, collector_paused, same, same_types
from reconciler.core.kinds.record import Record
from reconciler.git.attribution import Outcome, Target, Value, walk
from reconciler.git.history import Commit, History, manifest_filter
from reconciler.git.repository import GitRepository
from reconciler.core.plan import Author, Removal

# Parsed versions of files kept while walking (a file is usually read once or twice).
CACHED_BLOBS = 256
SUFFIXES = (".yaml", ".yml")
# RecordSet data files (recordsFile): read with the manifest naming them, never on their own.
DATA_SUFFIXES = (".jsonl", ".csv")


def declared_value(item: Desired) -> dict[str, Any]:
    """What an object declares, as attribution compares it: its fields as the manifest
    wrote them (``${env:…}`` unresolved), with ``protect`` and ``purge``."""
    return {**item.record, "protect": item.protect, "purge": item.purge}


def declared_value_of(applied: Applied) -> dict[str, Any]:
    """What an object declared when it was last applied, from the reconciler's record of it."""
    return {**dict(applied.fields), "protect": applied.protect, "purge": False}


def same_declared(fields: frozenset[str] | None, left: Value, right: Value) -> bool:
    """Whether two declared values agree on ``fields`` (None: on everything)."""
    if left is None or right is None:
        return left is None and right is None
    if fields is None and left == right and same_types(left, right):
        return True  # the common case, decided in one pass
    names = fields if fields is not None else set(left) | set(right)
    for name in names:
        if (name in left) != (name in right):
            return False
        if name in left and not same(name, left[name], right[name]):
            return False
    return True


@dataclass(frozen=True)
class Attribution:
    """Every change's author, and what stood in the way of attributing any of them."""

    authors: dict[str, Author] = field(default_factory=dict)
    removals: dict[str, Removal] = field(default_factory=dict)
    dirty: bool = False  # some declared object differs between the working tree and HEAD
    problem: str | None = None  # why attribution is impossible (a shallow clone), for the plan to say
    commits: dict[str, Commit] = field(default_factory=dict)  # every commit named, by sha


class _Parsed:
    """Objects declared by file versions read from git, parsed once each (a small LRU).

    A data file is named ``<commit>:<path>``: its records are what the manifest that names
    it declares from it at that commit. That manifest is the one the working tree has
    (``companions``: data file → manifest) or, where that one names no such file at the
    commit (both were moved or renamed since), a manifest of the tree at the commit that
    does, found by the data file's name; ``learn`` is told of each one found so."""

    def __init__(self, repo: GitRepository, companions: Mapping[str, str] | None = None, root: str = "",
                 keep: Callable[[str], bool] | None = None, learn: Callable[[str, str], None] | None = None) -> None:
        self.repo = repo
        self.reader = repo.blobs()
        self.companions = dict(companions or {})
        self.root = root
        self.keep = keep or (lambda path: True)
        self.learn = learn
        self.cache: OrderedDict[str, Mapping[str, Mapping[str, Any]]] = OrderedDict()

    def __call__(self, blob: str, path: str) -> Mapping[str, Mapping[str, Any]]:
        found = self.cache.get(blob)
        if found is not None:
            self.cache.move_to_end(blob)
            return found
        if path.endswith(DATA_SUFFIXES):
            commit, _, _ = blob.partition(":")
            found = self._data(commit, path) if commit != blob else {}
        else:
            data = self.reader.read(blob)
            found = _declarations(data, path) if data is not None else {}
        self.cache[blob] = found
        if len(self.cache) > CACHED_BLOBS:
            self.cache.popitem(last=False)
        return found

    def _data(self, commit: str, path: str) -> Mapping[str, Mapping[str, Any]]:
        """What the data file ``path`` declares at ``commit``, through the manifest naming it there."""
        def read(name: str) -> bytes | None:
            return self.reader.read(f"{commit}:{name}")

        manifest = self.companions.get(path)
        if manifest is not None:
            found = declared_from_data(read, manifest, path, self.root)
            if found or read(path) is None:
                return found
        elif read(path) is None:
            return {}
        name = path.rpartition("/")[2]
        for candidate in self.repo.files_mentioning(commit, name, SUFFIXES):
            if candidate != manifest and self.keep(candidate):
                found = declared_from_data(read, candidate, path, self.root)
                if found:
                    self.companions[path] = candidate
                    if self.learn is not None:
                        self.learn(path, candidate)
                    return found
        return {}

    def close(self) -> None:
        self.reader.close()


def declared_in(data: bytes, path: str) -> dict[str, Mapping[str, Any]]:
    """Every object one version of a file declares (valid documents only), by address, each as
    ``declared_value`` gives it: what ``audit verify --replay`` compares entries with."""
    return _declarations(data, path)


def declared_from_data(read: Callable[[str], bytes | None], manifest: str, path: str,
                       root: str = "") -> dict[str, Mapping[str, Any]]:
    """What the data file ``path`` declares through ``manifest``, both read by ``read`` (path →
    bytes, None: absent) from one version of the tree at ``root`` (repository-relative): the
    records of its lines that are valid, their RecordSet's defaults merged. Nothing when the
    manifest does not name it."""
    from reconciler.manifests.datapaths import VersionFiles
    from reconciler.manifests.loader import load_bytes

    data = read(manifest)
    if data is None:
        return {}
    result = load_bytes(data, manifest, data_files=VersionFiles(root, read))
    return _values([item for item in result.objects() if item.location.path == path])


def _declarations(data: bytes, path: str) -> dict[str, Mapping[str, Any]]:
    """Every object one version of a file declares (valid documents only), by address."""
    from reconciler.manifests.loader import load_bytes

    return _values(load_bytes(data, path).declared)


def _values(found: Sequence[Any]) -> dict[str, Mapping[str, Any]]:
    from reconciler.manifests.desired import desired_of, record_fields

    out: dict[str, Mapping[str, Any]] = {}
    for declared in found:
        model = declared.model
        if type(model) is Record:  # most objects: straight from the model, without a Desired value
            values = model.__dict__
            value = record_fields(model)
            value["protect"], value["purge"] = bool(values["protect"]), bool(values["purge"])
            out.setdefault(f"record:{values['namespace']}/{values['key']}", value)
        else:
            item = desired_of(declared)
            out.setdefault(item.address, declared_value(item))
    return out



def attribute(repo: GitRepository | None, tree: Path, changes: Sequence[Change], desired: Mapping[str, Desired],
              base: str | None, applier: Author, *, changed: Collection[str] | None = None,
              known: Mapping[str, Value] | None = None, head: str | None = None,
              data_files: Mapping[str, str] | None = None) -> Attribution:
    """The author of every change (see the module docstring); ``applier`` stands for whoever
    applies, for changes no commit asked for and uncommitted ones. ``desired`` is what the
    working tree declares (every file that differs from HEAD must have been read); ``changed``,
    the paths ``GitRepository.changed_paths`` gives for the tree, when the caller has them;
    ``known``, what each changed object declared at ``base`` when the caller knows it (a
    complete apply recorded it), so that the walk need not read ``base``'s files. ``head``:
    the commit ``desired`` was read from, when it is not the working tree (then nothing
    is uncommitted). ``data_files``: each RecordSet data file with the manifest naming it
    (repository-relative), whose records are walked with both files' history."""
    if repo is None or (head or repo.head()) is None:
        return Attribution({c.address: _uncommitted(applier) for c in changes}, dirty=True)
    return _Attributor(repo, tree, desired, applier, changed if head is None else (), known, head,
                       data_files).run(changes, base)


def _uncommitted(applier: Author) -> Author:
    return Author(applier.name, applier.email, None, True, applier=True)


def _walk_fields(change: Change) -> frozenset[str] | None:
    """The declared fields whose history decides who asked for the change (None: all of them)."""
    if change.op is ops.Create or change.desired is None:
        return None  # a new object, or a removed one: being declared at all is what counts
    if change.op is ops.Purge:
        return frozenset({"purge"})
    names = change.asked if change.reason == "manifest" else change.fields
    return frozenset(names)


def _written_fields(change: Change) -> frozenset[str] | None:
    """The declared fields whose uncommitted edit would change what the change writes."""
    if change.op is ops.Create or change.desired is None:
        return None
    if change.op is ops.Purge:
        return frozenset({"purge"})
    return frozenset(change.fields)


class _Attributor:
    """One plan's attribution against one repository."""

    def __init__(self, repo: GitRepository, tree: Path, desired: Mapping[str, Desired], applier: Author,
                 changed: Collection[str] | None, known: Mapping[str, Value] | None = None,
                 head: str | None = None, data_files: Mapping[str, str] | None = None) -> None:
        self.repo, self.desired, self.applier, self.known = repo, desired, applier, known
        self._trees: dict[str, str | None] = {}
        self._moves: dict[tuple[str, str], str | None] = {}
        self.head = head or repo.head() or ""
        self.pathspec = repo.relative(tree)
        self.keep = manifest_filter(self.pathspec, SUFFIXES + DATA_SUFFIXES)
        if changed is None:
            changed = repo.changed_paths(self.pathspec)
        self.data_files = dict(data_files or {})
        self.companions = {data: (manifest,) for data, manifest in self.data_files.items()}
        self.changed = {path for path in changed if self.keep(path)}
        # A data file's records change with the manifest naming it (its defaults, its namespace).
        self.changed |= {data for data, manifest in self.data_files.items() if manifest in self.changed}
        self.head_files = repo.tree_files(self.head, self.pathspec, self.keep)
        self.parsed = _Parsed(repo, self.data_files, self.pathspec, self.keep, self._learn)

    def _learn(self, data: str, manifest: str) -> None:
        """A data file found named by ``manifest`` in a commit (under a path the working tree no
        longer has): from then on its records change with that manifest too."""
        self.companions.setdefault(data, (manifest,))

    def run(self, changes: Sequence[Change], base: str | None) -> Attribution:
        # Old file versions are parsed while the whole tree is alive: a cyclic collection would
        # rescan all of it again and again (it tripled the walk's time at 100,000 records).
        try:
            with collector_paused():
                return self._run(changes, base)
        finally:
            self.parsed.close()

    def _at_head(self) -> dict[str, tuple[Mapping[str, Any], str]]:
        """What HEAD declares in the files the working tree changed: address → (value, path)."""
        out: dict[str, tuple[Mapping[str, Any], str]] = {}
        for path in sorted(self.changed):
            blob = f"{self.head}:{path}" if path in self.data_files else self.head_files.get(path)
            if blob is not None:
                for address, value in self.parsed(blob, path).items():
                    out.setdefault(address, (value, path))
        return out

    def _head_value(self, address: str, at_head: Mapping[str, tuple[Mapping[str, Any], str]]
                    ) -> tuple[Value, str | None]:
        hit = at_head.get(address)
        if hit is not None:
            return hit
        item = self.desired.get(address)
        if item is not None and item.location.path not in self.changed:
            return declared_value(item), item.location.path
        return None, None

    def _run(self, changes: Sequence[Change], base: str | None) -> Attribution:
        at_head = self._at_head()
        dirty = self._dirty(at_head)
        authors: dict[str, Author] = {}
        targets: list[tuple[Change, Target]] = []
        for change in changes:
            item = self.desired.get(change.address)
            if item is not None and item.location.path not in self.changed and change.address not in at_head:
                # Declared in a file HEAD has as it is: HEAD declares exactly this.
                targets.append((change, Target(change.address, _walk_fields(change), declared_value(item),
                                               item.location.path)))
                continue
            working = declared_value(item) if item is not None else None
            value, path = self._head_value(change.address, at_head)
            if not same_declared(_written_fields(change), working, value):
                authors[change.address] = _uncommitted(self.applier)
            else:
                targets.append((change, Target(change.address, _walk_fields(change), value, path)))
        asked = [(c, t) for c, t in targets if c.reason == "manifest"]
        shallow = self.repo.shallow_commits()
        known_base = base if base is not None and self.repo.commit_exists(base) else None
        problem = _shallow_problem(shallow, base, known_base) if asked else None
        found = self._walk([t for _, t in asked], [known_base] if known_base else [])
        # Changes no commit asked for are walked for the commit that declares their value; a change
        # asked for before the last applied commit (by a commit a narrowed apply left out) is
        # looked for in the whole history too.
        again = [t for c, t in targets if c.reason != "manifest"
                 or (known_base is not None and found.get(c.address, _NONE).kind == "unchanged")]
        if again:
            found.update(self._walk(again, []))
        commits: dict[str, Commit] = {}
        removals: dict[str, Removal] = {}
        for change, _ in targets:
            outcome = found.get(change.address, _NONE)
            if outcome.kind == "cut" and change.reason == "manifest":
                problem = problem or _SHALLOW
            authors[change.address] = self._author(change, outcome)
            if outcome.commit is not None:
                commits[outcome.commit.sha] = outcome.commit
            # Decided against the last apply's record, the file is the one it was applied from.
            removed_from = outcome.removed_from or (change.location.path if change.location else None)
            if change.desired is None and removed_from is not None and outcome.commit is not None:
                removals[change.address] = self._removal(removed_from, outcome.commit.sha)
        return Attribution(authors, removals, dirty, problem, commits)

    def _removal(self, path: str, commit: str) -> Removal:
        """How ``commit`` stopped declaring an object of ``path``: removed from the file, the file
        deleted, or the file moved (git's rename detection, asked once per file and commit) — out
        of the tree or to a name that is no manifest's, or renamed in the tree while the object
        was taken out of it."""
        if path in self.head_files or path in self.changed:
            return Removal(path, commit, False)
        key = (commit, path)
        if key not in self._moves:
            self._moves[key] = self.repo.moved_to(commit, path)
        destination = self._moves[key]
        if destination is None:
            return Removal(path, commit, True)
        if self.keep(destination):  # still a manifest of the tree: the object was taken out of it
            exists = destination in self.head_files or destination in self.changed
            return Removal(destination, commit, not exists)
        return Removal(path, commit, True, destination)

    def _walk(self, targets: Sequence[Target], exclude: Sequence[str]) -> dict[str, Outcome]:
        if not targets:
            return {}
        history: History = self.repo.history(self.head, list(exclude), self.pathspec, self.keep)
        boundary = self._boundary(exclude[0]) if self.known is not None and len(exclude) == 1 else None
        outcomes = walk(history, targets, self.parsed, same_declared, boundary, self.companions,
                        versioned=lambda path: path.endswith(DATA_SUFFIXES))
        if not exclude:  # with nothing excluded, "not changed by any commit" means never declared
            outcomes = {a: (o if o.kind != "unchanged" else _NONE) for a, o in outcomes.items()}
        return outcomes

    def _boundary(self, base: str) -> Callable[[str], Mapping[str, Value] | None]:
        """The known values at ``base``, for ``base`` and for any excluded commit whose tree
        (under the manifests' path) is the same as ``base``'s."""
        known = self.known or {}

        def values(sha: str) -> Mapping[str, Value] | None:
            if sha == base or (self._tree_of(sha) is not None and self._tree_of(sha) == self._tree_of(base)):
                return known
            return None

        return values

    def _tree_of(self, sha: str) -> str | None:
        if sha not in self._trees:
            self._trees[sha] = self.repo.tree_id(sha, self.pathspec)
        return self._trees[sha]

    def _author(self, change: Change, outcome: Outcome) -> Author:
        commit = outcome.commit
        if change.reason == "manifest" and commit is not None:
            return Author(commit.author_name, commit.author_email, commit.sha, False, date=commit.authored_at)
        if change.reason == "manifest" and outcome.kind == "cut":
            return Author("unknown", "unknown", None, False)  # the plan says why; apply refuses
        # No commit asked (drift, a rotated secret, an adoption), or none ever declared the value
        # (it was applied from uncommitted lines): whoever applies, with the commit that declares it.
        return Author(self.applier.name, self.applier.email, commit.sha if commit is not None else None, False,
                      applier=True)

    def _dirty(self, at_head: Mapping[str, tuple[Mapping[str, Any], str]]) -> bool:
        """Whether any declared object differs between the working tree and HEAD."""
        if not self.changed:
            return False
        in_changed = {address for address, item in self.desired.items() if item.location.path in self.changed}
        for address in in_changed | set(at_head):
            item = self.desired.get(address)
            working = declared_value(item) if item is not None else None
            if not same_declared(None, working, self._head_value(address, at_head)[0]):
                return True
        return False


_NONE = Outcome("never")
_SHALLOW = ("this is a shallow clone and its history stops before the commits that asked for these changes; "
            "fetch the whole history (`git fetch --unshallow`, or fetch-depth: 0 in actions/checkout) and plan again")


def base_outside_history(repo: GitRepository | None, base: str | None, head: str | None, source: str,
                         tree: Path) -> str | None:
    """Why this tree cannot be planned against what its source last applied: that commit
    (``base``) is not in the tree's own history up to ``head``. None when it is, when the
    source never applied a commit, or when a shallow clone lacks it (attribution then says
    how to fetch the history).

    Planning on regardless would compare another repository's applied state with this
    tree — archiving everything the other one declares — or, from a branch behind the
    last apply, undo newer applied changes and name old commits for it.
    """
    if base is None:
        return None
    last = f"source {source!r} was last applied from commit {base[:12]}"
    if repo is None:
        return (f"{last} of a git repository, and {tree} is not in one; plan from a clone of that repository "
                "(a tree outside git cannot have a source of its own)")
    present = repo.commit_exists(base)
    if not present and repo.shallow_commits():
        return None
    if not present or head is None:
        return (f"{last}, which is not in this repository: another repository applies its tree as source "
                f"{source!r} to this catalog (or this repository's history was rewritten since). Give this tree "
                f"a source of its own: `source: <name>` in reconciler.yaml at the root of this repository "
                f"({repo.root}); see docs/operators.md, \"Sources\"")
    if not repo.is_ancestor(base, head):
        return (f"{last}, which this tree's history does not contain: commit {head[:12]} is behind it or on "
                "another branch. Merge or rebase onto it (git pull), then plan again")
    return None


def _shallow_problem(shallow: frozenset[str], base: str | None, known_base: str | None) -> str | None:
    """Why a shallow clone cannot attribute before walking: the last applied commit is not in it,
    or (on a first apply) the whole history is needed."""
    if not shallow:
        return None
    if base is None:
        return ("this is a shallow clone and a first apply needs the whole history to attribute every "
                "change; fetch it (`git fetch --unshallow`, or fetch-depth: 0 in actions/checkout) and plan again")
    if known_base is None:
        return (f"this is a shallow clone without commit {base[:12]}, which this source last applied; fetch "
                "the whole history (`git fetch --unshallow`, or fetch-depth: 0 in actions/checkout) and plan again")
    return None
