"""``validate``: the manifest tree checked offline, and what to say about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.manifests import load_tree
from reconciler.manifests.report import summary, unresolved_lines, warning_line


@dataclass(frozen=True)
class Validated:
    """A valid tree, as ``validate`` reports it: warnings, the summary, and the links left for the plan."""

    warnings: tuple[str, ...]
    summary: str
    unresolved: tuple[str, ...]


def validate_tree(path: Path) -> Validated:
    """Load and check the tree at ``path``; a ManifestError lists every problem when it is invalid."""
    tree = load_tree(path)
    return Validated(tuple(warning_line(w) for w in tree.warnings), summary(tree), tuple(unresolved_lines(tree)))
