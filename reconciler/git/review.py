"""How each commit reached a branch: the merge commit that brought it, and its pull request number.

The branch's *first-parent line* is the sequence of commits it pointed at, newest first:
each commit's first parent is where the branch was before. A commit on that line reached
the branch as itself — pushed directly, or as a squash or rebase of a pull request; any
other commit was brought in by the oldest commit of that line that has it as an ancestor,
which is a merge. The number of the pull (GitHub, Bitbucket, Azure) or merge (GitLab) request
is read from that merge's message, or from a squash commit's ``(#N)``.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass

from reconciler.git.repository import GitRepository

# Merge messages as the hosting services write them, and the "(#N)" GitHub ends a squash
# commit's subject with.
_MERGE_MESSAGES = (
    re.compile(r"^Merge pull request #(\d+) from ", re.MULTILINE),  # GitHub
    re.compile(r"^See merge request \S*!(\d+)\s*$", re.MULTILINE),  # GitLab
    re.compile(r"\(pull request #(\d+)\)"),  # Bitbucket
    re.compile(r"^Merged PR (\d+):", re.MULTILINE),  # Azure Repos
)
_SQUASHED = re.compile(r"\(#(\d+)\)\s*$")


@dataclass(frozen=True)
class Review:
    """How one commit reached the branch."""

    sha: str
    merge_commit: str  # the first-parent commit it arrived through: a merge, or the commit itself
    pull_request: int | None  # the request it came through, when a message or the CI names one

    @property
    def merged(self) -> bool:
        """Brought in by a merge commit (rather than being on the first-parent line itself)."""
        return self.merge_commit != self.sha

    @property
    def direct(self) -> bool:
        """Reached the branch with neither a merge nor a request number: pushed straight to it."""
        return not self.merged and self.pull_request is None


def request_number(message: str, *, squash: bool) -> int | None:
    """The pull or merge request a merge message names (or, with ``squash``, a subject's ``(#N)``)."""
    for pattern in _MERGE_MESSAGES:
        found = pattern.search(message)
        if found:
            return _number(found.group(1))
    if squash:
        subject = message.split("\n", 1)[0]
        found = _SQUASHED.search(subject)
        if found:
            return _number(found.group(1))
    return None


def _number(text: str) -> int | None:
    value = int(text)
    return value if 0 < value < 2**31 else None


def reviews(repo: GitRepository, commits: Collection[str], ref: str, *,
            ci_request: int | None = None) -> dict[str, Review]:
    """How each of ``commits`` (full shas) reached ``ref``; commits ``ref`` does not reach are left out.

    ``ci_request`` is the request the CI run itself is for (its own variables): it names the
    request of a commit that reached ``ref`` without a merge that names one.
    """
    wanted = set(commits)
    if not wanted:
        return {}
    tip = repo.resolve(ref)
    if tip is None:
        return {}
    parents = repo.graph(tip)
    line = _first_parent_line(parents, tip)
    on_line = set(line)
    brought = _brought_by(parents, line, on_line, wanted)
    messages = repo.messages({brought.get(sha, sha) for sha in wanted if sha in parents})
    out: dict[str, Review] = {}
    for sha in sorted(wanted):
        if sha not in parents:
            continue
        merge = sha if sha in on_line else brought.get(sha, sha)
        number = request_number(messages.get(merge, ""), squash=merge == sha)
        if number is None and merge == sha:
            number = ci_request
        out[sha] = Review(sha, merge, number)
    return out


def _first_parent_line(parents: dict[str, tuple[str, ...]], tip: str) -> list[str]:
    """The first-parent line from ``tip`` back to the root, newest first."""
    line = []
    sha: str | None = tip
    while sha is not None and sha in parents:
        line.append(sha)
        sha = parents[sha][0] if parents[sha] else None
    return line


def _brought_by(parents: dict[str, tuple[str, ...]], line: list[str], on_line: set[str],
                wanted: set[str]) -> dict[str, str]:
    """For commits off the first-parent line, the oldest line commit (a merge) that reaches them.

    The line is walked oldest first; each merge claims the commits its other parents reach
    that no older merge claimed. Stops once every wanted commit is placed.
    """
    brought: dict[str, str] = {}
    left = {sha for sha in wanted if sha in parents and sha not in on_line}
    for merge in reversed(line):
        if not left:
            break
        stack = list(parents[merge][1:])
        while stack:
            sha = stack.pop()
            if sha in brought or sha in on_line:
                continue
            brought[sha] = merge
            left.discard(sha)
            stack.extend(parents.get(sha, ()))
    return brought
