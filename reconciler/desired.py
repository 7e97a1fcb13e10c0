"""The manifest tree as the diff wants it: Desired values, secret templates and cross-links."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .diff import Desired, Location
from .errors import ManifestError, Problem
from .manifests import Declared, ManifestTree, load_tree
from .model import Dataset, Record, StorageTarget, env_references, iter_strings, substitute_env

# Manifest field → the diff's field, per kind (only fields the diff manages).
_FIELDS: dict[Any, dict[str, str]] = {
    StorageTarget: {"type": "type", "description": "description", "config": "config"},
    Dataset: {"name": "name", "description": "description", "status": "status",
              "storage_target": "storageTarget", "metadata": "metadata", "retention": "retention"},
    Record: {"owner": "owner", "tags": "tags", "schema_hash": "schemaHash", "metadata": "metadata",
             "deleted": "deleted"},
}
_KIND: dict[Any, str] = {StorageTarget: "storage-target", Dataset: "dataset", Record: "record"}


@dataclass(frozen=True)
class DesiredState:
    """What the tree asks for, ready for the diff."""

    desired: dict[str, Desired]
    secrets: dict[str, dict[str, str]]  # address → dotted path → the ${env:...} text the manifest wrote
    links: list[tuple[str, str, Location]]  # (from address, to address, where) the tree cannot resolve


def desired_state(root: Path, *, environ: Mapping[str, str], resolve_env: bool = True) -> DesiredState:
    """Load the tree and turn it into Desired values, resolving ``${env:...}`` when asked.

    An unset variable is reported like any other manifest problem, at the storage
    target's location, naming the variable.
    """
    tree = load_tree(root)
    desired: dict[str, Desired] = {}
    secrets: dict[str, dict[str, str]] = {}
    problems: list[Problem] = []
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
    return DesiredState(desired, secrets, _links(tree))


def _location(declared: Declared[Any]) -> Location:
    loc = declared.location
    return Location(loc.path, loc.line, loc.end_line, tuple(loc.also))


def _desired(declared: Declared[Any], environ: Mapping[str, str],
             resolve_env: bool) -> tuple[Desired, dict[str, str], list[tuple[str, str]]]:
    model = declared.model
    names = _FIELDS[type(model)]
    fields = {names[name]: _value(model, name) for name in model.model_fields_set if name in names}
    templates: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    recorded = None
    if isinstance(model, StorageTarget) and "config" in fields:
        recorded = dict(fields)
        fields["config"], templates, missing = _resolve(fields["config"], environ, resolve_env)
    address = str(model.address)
    return (Desired(address, _KIND[type(model)], fields, _location(declared),
                    protect=bool(getattr(model, "protect", False)), purge=bool(getattr(model, "purge", False)),
                    secret_paths=frozenset(templates), recorded=recorded if templates else None),
            templates, missing)


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
    resolved: Any = _copy(config)
    templates: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    for path, text in list(iter_strings(config)):
        names = env_references(text)
        if not names:
            continue
        dotted = ".".join(str(p) for p in path)
        templates["config." + dotted] = text
        unset = [n for n in names if n not in environ]
        missing += [(dotted, n) for n in unset]
        if resolve_env and not unset:
            _set(resolved, path, substitute_env(text, environ))
    return dict(resolved), templates, missing if resolve_env else []


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_copy(v) for v in value]
    return value


def _set(node: Any, path: tuple[str | int, ...], value: str) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _links(tree: ManifestTree) -> list[tuple[str, str, Location]]:
    return [(str(ref.source), str(ref.target), Location(ref.location.path, ref.location.line,
                                                         ref.location.end_line))
            for ref in tree.unresolved]
