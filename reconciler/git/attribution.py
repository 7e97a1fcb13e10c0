"""Which commit made each object's declared value what it is: a walk of history by meaning.

Every object starts at HEAD with its declared value (None: not declared) and the file
that declares it. At each commit the value is compared with the commit's parents':
when a parent declares the same (as far as the fields that matter go), the value came
from that parent and the object moves on to it — a merge is transparent when its
value is one of its parents'. When no parent has it, this commit made it. Values are
compared as parsed objects, never as lines, so formatting-only edits and moves between
files change nothing, and RecordSet defaults count for every record they reach.

Objects are moved in groups by file: an object whose file a commit did not touch has
its parent's value without anything being read. Only the files a commit changed are
read (by blob, through the caller's cached ``declarations``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reconciler.git.history import Commit, FileChange, History

Value = Mapping[str, Any] | None
"""What an object declares (its fields, with ``protect`` and ``purge``); None when it is not declared."""

Declarations = Callable[[str, str], Mapping[str, Mapping[str, Any]]]
"""(blob name, path) → every object that version of the file declares: address → value."""

Same = Callable[[frozenset[str] | None, Value, Value], bool]
"""Whether two values agree on the given fields (None: on every field, and on being declared)."""


@dataclass(frozen=True, slots=True)
class Target:
    """An object to attribute: its value at the start commit, and where it is declared there."""

    address: str
    fields: frozenset[str] | None
    value: Value
    path: str | None


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the walk found for one object.

    ``found``: ``commit`` made the value (for an object no longer declared, the commit
    that removed it, from ``removed_from``); ``unchanged``: no walked commit changed it
    (it is as it was at the excluded commits); ``cut``: the walk reached the edge of a
    shallow clone first; ``never``: the object was not declared anywhere in the history.
    """

    kind: Literal["found", "unchanged", "cut", "never"]
    commit: Commit | None = None
    removed_from: str | None = None


@dataclass(slots=True)
class _State:
    target: Target
    value: Value
    path: str | None
    removed_from: str | None = None


class _ParentView:
    """What a parent declares in the files its commit changed, read only when asked.

    A file with companions (a RecordSet's data file, whose records also depend on the
    manifest naming it) counts as changed when a companion changed. A file ``versioned``
    holds (by default: one with companions) is read by ``<parent>:<path>``, an object name
    that gives its version at the parent, so that what it declares there can be worked out
    with the other files of the parent (a data file with the manifest naming it there)."""

    def __init__(self, changes: Mapping[str, FileChange], declarations: Declarations, parent: str = "",
                 companions: Mapping[str, tuple[str, ...]] | None = None,
                 versioned: Callable[[str], bool] | None = None) -> None:
        self.changes = changes
        self.declarations = declarations
        self.parent = parent
        self.companions = companions if companions is not None else {}
        self.versioned = versioned or self.companions.__contains__
        self._all: dict[str, tuple[Mapping[str, Any], str]] | None = None

    def touched(self, path: str) -> bool:
        """Whether what ``path`` declares may differ at the parent."""
        return path in self.changes or any(other in self.changes for other in self.companions.get(path, ()))

    def _before(self, path: str) -> Mapping[str, Mapping[str, Any]]:
        if self.versioned(path):
            return self.declarations(f"{self.parent}:{path}", path)
        change = self.changes.get(path)
        return self.declarations(change.before, path) if change is not None and change.before is not None else {}

    def value_of(self, state: _State) -> tuple[Value, str | None]:
        """The object's value at the parent, and the file declaring it there."""
        if state.path is not None and not self.touched(state.path):
            return state.value, state.path
        if state.path is not None:
            found = self._before(state.path).get(state.target.address)
            if found is not None:
                return found, state.path
        everywhere = self._everything()
        hit = everywhere.get(state.target.address)
        return (hit[0], hit[1]) if hit is not None else (None, None)

    def _everything(self) -> dict[str, tuple[Mapping[str, Any], str]]:
        if self._all is None:
            self._all = {}
            for path in sorted(self.changes):
                for address, value in self._before(path).items():
                    self._all.setdefault(address, (value, path))
        return self._all


Boundary = Callable[[str], Mapping[str, Value] | None]
"""For an excluded commit: what each target declares there, when the caller knows it without
reading the commit's files (None: not known)."""


def walk(history: History, targets: Sequence[Target], declarations: Declarations, same: Same,
         boundary: Boundary | None = None, companions: Mapping[str, tuple[str, ...]] | None = None,
         versioned: Callable[[str], bool] | None = None) -> dict[str, Outcome]:
    """Attribute each target, starting from the newest commit of ``history``; ``companions``:
    the files whose change also changes what a file declares, and ``versioned``, the files
    read by commit and path (``_ParentView``).

    The history is limited to the tree's path, so HEAD itself is left out when it did
    not touch the tree; its newest listed ancestor then declares what HEAD declares.
    ``boundary`` tells, for an excluded parent, what the targets declare there; a
    commit whose parent is such a commit is then decided without reading that parent.
    """
    out: dict[str, Outcome] = {}
    if not history.order:  # no walked commit touched the tree
        return {target.address: Outcome("unchanged") for target in targets}
    pending: dict[str, dict[str | None, list[_State]]] = {}
    start = pending.setdefault(history.order[0], {})
    for target in targets:
        start.setdefault(target.path, []).append(_State(target, target.value, target.path))
    for sha in history.order:
        groups = pending.pop(sha, None)
        if groups:
            _visit(history, history.commits[sha], groups, declarations, same, pending, out, boundary, companions,
                   versioned)
    for groups in pending.values():  # only reachable if the graph were inconsistent
        for states in groups.values():
            for state in states:
                out.setdefault(state.target.address, Outcome("never"))
    return out


def _visit(history: History, commit: Commit, groups: dict[str | None, list[_State]], declarations: Declarations,
           same: Same, pending: dict[str, dict[str | None, list[_State]]], out: dict[str, Outcome],
           boundary: Boundary | None = None, companions: Mapping[str, tuple[str, ...]] | None = None,
           versioned: Callable[[str], bool] | None = None) -> None:
    if commit.sha in history.shallow:
        for states in groups.values():
            for state in states:
                out[state.target.address] = Outcome("cut")
        return
    if not commit.parents:
        for states in groups.values():
            for state in states:
                out[state.target.address] = (Outcome("found", commit, state.removed_from)
                                             if state.value is not None else Outcome("never"))
        return
    remaining = groups
    for parent in commit.parents:
        known = boundary(parent) if boundary is not None and not history.inside(parent) else None
        if known is not None:
            remaining = _settle(remaining, known, same, out)
        else:
            view = _ParentView(history.changes(commit.sha, parent), declarations, parent, companions, versioned)
            remaining = _pass_to(parent, remaining, view, history, same, pending, out)
        if not remaining:
            return
    for states in remaining.values():
        for state in states:
            out[state.target.address] = Outcome("found", commit, state.removed_from)


def _pass_to(parent: str, groups: dict[str | None, list[_State]], view: _ParentView, history: History,
             same: Same, pending: dict[str, dict[str | None, list[_State]]],
             out: dict[str, Outcome]) -> dict[str | None, list[_State]]:
    """Move every state whose value the parent has to the parent; return the others."""
    inside = history.inside(parent)
    into = pending.setdefault(parent, {}) if inside else None
    left: dict[str | None, list[_State]] = {}
    for path, states in groups.items():
        if path is not None and not view.touched(path):  # the file is as the parent has it
            _arrive(into, path, states, out)
            continue
        for state in states:
            value, where = view.value_of(state)
            if same(state.target.fields, state.value, value):
                _arrive(into, where, [_State(state.target, value, where, state.removed_from)], out)
            else:
                if state.value is None and value is not None and state.removed_from is None:
                    state.removed_from = where
                left.setdefault(path, []).append(state)
    if into is not None and not into:
        del pending[parent]
    return left


def _settle(groups: dict[str | None, list[_State]], known: Mapping[str, Value], same: Same,
            out: dict[str, Outcome]) -> dict[str | None, list[_State]]:
    """Compare with an excluded parent whose values are known: the same value there means no
    walked commit changed it; return the states the parent does not explain."""
    left: dict[str | None, list[_State]] = {}
    for path, states in groups.items():
        for state in states:
            value = known.get(state.target.address)
            if same(state.target.fields, state.value, value):
                out[state.target.address] = Outcome("unchanged")
            else:
                left.setdefault(path, []).append(state)
    return left


def _arrive(into: dict[str | None, list[_State]] | None, path: str | None, states: list[_State],
            out: dict[str, Outcome]) -> None:
    if into is None:  # the parent is excluded: nothing walked changed these
        for state in states:
            out[state.target.address] = Outcome("unchanged")
    else:
        into.setdefault(path, []).extend(states)
