"""Audit anchors kept as git notes: the one thing the reconciler ever writes into a repository.

A note lives under its own ref (``refs/notes/reconciler-audit``), never touches a branch,
the index or the work tree, and is pushed like any ref (``git push origin
refs/notes/reconciler-audit``). Several anchors on one commit are appended to its note.
"""

from __future__ import annotations

from reconciler.git.command import run_git
from reconciler.git.repository import GitRepository

NOTES_REF = "refs/notes/reconciler-audit"
# Who the notes commit names when git has no identity configured (a CI runner).
FALLBACK_IDENTITY = ("reconciler", "reconciler@localhost")


def add_note(repo: GitRepository, commit: str, text: str) -> None:
    """Append ``text`` to the anchor note of ``commit`` (a full sha)."""
    name, email = repo.user_identity()
    env = {}
    if name == "unknown" or email == "unknown":
        env = {"GIT_AUTHOR_NAME": FALLBACK_IDENTITY[0], "GIT_AUTHOR_EMAIL": FALLBACK_IDENTITY[1],
               "GIT_COMMITTER_NAME": FALLBACK_IDENTITY[0], "GIT_COMMITTER_EMAIL": FALLBACK_IDENTITY[1]}
    run_git(repo.root, "notes", "--ref", NOTES_REF, "append", "-m", text, commit, extra_env=env)


def read_notes(repo: GitRepository) -> list[tuple[str, str]]:
    """Every anchor note: (the commit it is on, its text), in the order git lists them."""
    listed = run_git(repo.root, "notes", "--ref", NOTES_REF, "list")
    out = []
    for line in listed.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            note, commit = parts
            out.append((commit, run_git(repo.root, "cat-file", "blob", note).stdout))
    return out
