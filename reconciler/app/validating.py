"""``validate``: the manifest tree checked offline, and what to say about it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reconciler.git.repository import GitRepository
from reconciler.manifests import load_tree
from reconciler.manifests.config import load_config
from reconciler.manifests.report import summary, unresolved_lines, warning_line


@dataclass(frozen=True)
class Validated:
    """A valid tree, as ``validate`` reports it: warnings, the summary, and the links left for the plan."""

    warnings: tuple[str, ...]
    summary: str
    unresolved: tuple[str, ...]


def validate_tree(path: Path) -> Validated:
    """Load and check the tree at ``path``; a ManifestError lists every problem when it is invalid.

    The repository's ``reconciler.yaml`` (source, policy, ui) is checked too, as plan and
    apply will read it: a broken one is a ConfigurationError here rather than in CI's apply.
    """
    repo = GitRepository.discover(path) if path.exists() else None
    if repo is not None:
        load_config(repo.root)
    tree = load_tree(path)
    return Validated(tuple(warning_line(w) for w in tree.warnings), summary(tree), tuple(unresolved_lines(tree)))
