"""The manifest tree as the diff wants it: Desired values, secret templates and cross-links."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from reconciler.core.diff import Desired, Location, collector_paused
from reconciler.errors import ManifestError, Problem
from reconciler.manifests import Declared, ManifestTree, load_tree
from reconciler.core import kinds
from reconciler.core.kinds.record import Record
from reconciler.core.model import resolve_env as resolve_env_refs



@dataclass(frozen=True)
class DesiredState:
    """What the tree asks for, ready for the diff."""

    desired: dict[str, Desired]
    secrets: dict[str, dict[str, str]]  # address → dotted path → the ${env:...} text the manifest wrote
    links: list[tuple[str, str, Location]]  # (from address, to address, where) the tree cannot resolve
    data_files: tuple[tuple[str, str], ...] = ()  # (data file, the manifest naming it): recordsFile


def desired_state(root: Path, *, environ: Mapping[str, str], resolve_env: bool = True,
                  skip: Collection[str] = ()) -> DesiredState:
    """Load the tree and turn it into Desired values, resolving ``${env:...}`` when asked.

    An unset variable is reported like any other manifest problem, at the value that
    names it. Files in ``skip`` (as the loader shows them) are not read.
    """
    tree = load_tree(root, skip=skip, environ=environ, check_env=resolve_env)
    return desired_from(tree, environ=environ, resolve_env=resolve_env)


def desired_from(tree: ManifestTree, *, environ: Mapping[str, str], resolve_env: bool = True) -> DesiredState:
    """``desired_state`` of a tree already loaded (from the working tree, or from a commit).

    A tree loaded without ``check_env`` has had its variables checked by nobody: an unset
    one is then reported here, at its storage target's first line."""
    desired: dict[str, Desired] = {}
    secrets: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
    with collector_paused():
        for declared in tree.objects():
            item, templates, missing = _desired(declared, environ, resolve_env)
            desired[item.address] = item
            if templates:
                secrets[item.address] = templates
            problems += [Problem(declared.location.path, declared.location.line, declared.location.column,
                                 f"{item.address}: config.{path}: environment variable {name} is not set")
                         for path, name in missing]
    if problems:
        raise ManifestError(problems)
    return DesiredState(desired, secrets, _links(tree), tree.data_files)


def _location(declared: Declared[Any]) -> Location:
    loc = declared.location
    return Location(loc.path, loc.line, loc.end_line, tuple(loc.also))


def desired_of(declared: Declared[Any]) -> Desired:
    """One declared object as the diff sees it, ``${env:...}`` left unresolved."""
    return _desired(declared, {}, False)[0]


def _desired(declared: Declared[Any], environ: Mapping[str, str],
             resolve_env: bool) -> tuple[Desired, dict[str, str], list[tuple[str, str]]]:
    model = declared.model
    if type(model) is Record:
        return _record(declared), {}, []
    spec = kinds.BY_MODEL[type(model)]
    names = spec.attributes
    given = model.model_fields_set  # a set: its order varies from run to run, so the kind's order is kept
    fields = {out: _value(model, name) for name, out in names.items() if name in given}
    templates: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    recorded = None
    secret = spec.secret_field
    if secret is not None and secret in fields:
        recorded = dict(fields)
        fields[secret], templates, missing = _resolve(fields[secret], environ, resolve_env)
    address = str(declared.address)
    old = getattr(model, "renamed_from", None)
    return (Desired(address, spec.name, fields, _location(declared),
                    protect=bool(getattr(model, "protect", False)), purge=bool(getattr(model, "purge", False)),
                    secret_paths=frozenset(templates), recorded=recorded if templates else None,
                    renamed_from=None if old is None else spec.prefix + old),
            templates, missing)


# Records are most of a tree, so they take a direct path to the same values as the
# general one (manifest name → the diff's name, only the fields the manifest set).
_RECORD = kinds.BY_MODEL[Record]
_RECORD_FIELDS = tuple(_RECORD.attributes.items())


def record_fields(model: Record) -> dict[str, Any]:
    """A record's fields as the diff names them, only those the manifest set (tags as a list)."""
    values = model.__dict__
    given = model.model_fields_set
    return {out: (list(values[name]) if name == "tags" else values[name])
            for name, out in _RECORD_FIELDS if name in given}


def _record(declared: Declared[Any]) -> Desired:
    values = declared.model.__dict__
    fields = record_fields(declared.model)
    loc = declared.location
    location = Location(loc.path, loc.line, loc.end_line, tuple(loc.also))
    return Desired(f"{_RECORD.prefix}{values['namespace']}/{values['key']}", _RECORD.name, fields, location,
                   protect=bool(values["protect"]), purge=bool(values["purge"]))


def _value(model: Any, name: str) -> Any:
    value = getattr(model, name)
    if name == "retention":
        return value.as_policy() if value is not None else None
    if name == "tags":
        return list(value)
    return value


def _resolve(config: Mapping[str, Any], environ: Mapping[str, str],
             resolve_env: bool) -> tuple[dict[str, Any], dict[str, str], list[tuple[str, str]]]:
    """The config with ``${env:NAME}`` replaced; the templates by dotted path; unset names."""
    found = resolve_env_refs(config, environ, substitute=resolve_env)
    templates = {"config." + _dotted(path): text for path, text in found.templates.items()}
    missing = [(_dotted(path), name) for path, name in found.missing] if resolve_env else []
    return found.config, templates, missing


def _dotted(path: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in path)


def _links(tree: ManifestTree) -> list[tuple[str, str, Location]]:
    return [(str(ref.source), str(ref.target), Location(ref.location.path, ref.location.line,
                                                         ref.location.end_line))
            for ref in tree.unresolved]


def rebase(state: DesiredState, root: Path) -> DesiredState:
    """The same state with every location's path relative to ``root`` (the repository).

    Plans, blame and the reconciler's records then name a file the same way wherever
    the command runs from; paths outside ``root`` are kept as they are. Each file is
    resolved once, and objects whose path does not change are kept as they are.
    """
    relative: dict[str, str] = {}

    def moved(location: Location) -> Location:
        path = relative.get(location.path)
        if path is None:
            path = relative[location.path] = repo_relative(location.path, root)
        return location if path == location.path else replace(location, path=path)

    desired = {}
    for address, item in state.desired.items():
        location = moved(item.location)
        desired[address] = item if location is item.location else replace(item, location=location)
    links = [(source, target, moved(where)) for source, target, where in state.links]
    data_files = tuple((repo_relative(data, root), repo_relative(manifest, root)) for data, manifest in state.data_files)
    return DesiredState(desired, state.secrets, links, data_files)


def repo_relative(path: str, root: Path) -> str:
    """``path`` (relative to the working directory, or absolute) relative to ``root``."""
    absolute = Path(path).resolve()
    try:
        return absolute.relative_to(root.resolve()).as_posix()
    except ValueError:
        return path
