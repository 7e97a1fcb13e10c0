"""What ``validate`` says about a valid tree: the summary line, its warnings, and the links left for the plan."""

from __future__ import annotations

from collections import defaultdict

from reconciler.errors import Problem
from reconciler.core import kinds
from reconciler.core.model import Address
from reconciler.core.text import clean
from reconciler.manifests.tree import ManifestTree, Reference


def _count(number: int, noun: str) -> str:
    return f"{number:,} {noun}{'' if number == 1 else 's'}"


def summary(tree: ManifestTree) -> str:
    """``Valid: 1 storage target, 4 datasets, 12 records in 3 files.``"""
    counts = [(tree.count(spec.name), spec) for spec in kinds.REGISTRY]
    declared = ", ".join(f"{n:,} {spec.noun if n == 1 else spec.plural}" for n, spec in counts)
    return f"Valid: {declared} in {_count(len(tree.files), 'file')}."


def unresolved_lines(tree: ManifestTree) -> list[str]:
    """One line per object the tree links to but does not declare, naming the first
    place that links to it and how many others do."""
    by_target: dict[Address, list[Reference]] = defaultdict(list)
    for reference in tree.unresolved:
        by_target[reference.target].append(reference)
    lines = []
    for target, references in sorted(by_target.items()):
        first = min(references, key=lambda reference: reference.location.order())
        others = len(references) - 1
        also = f" and {_count(others, 'other object')}" if others else ""
        lines.append(
            clean(f"{first.location}: {target} (linked from {first.source}{also}) is not declared in ")
            + "the tree; plan will check it against the catalog."
        )
    return lines


def warning_line(warning: Problem) -> str:
    """``path:line:column: warning: message``, on one line."""
    return f"{clean(warning.path)}:{warning.line}:{warning.column}: warning: {clean(warning.message)}"
