"""Anchors: the audit log's head kept outside the database, so that a log cut short is detected.

An anchor names how many entries and runs the log held when it was taken and the hash of
the newest of each. It is one JSON line::

    {"reconciler_audit_anchor": 1, "entries": 42, "head": "<hash>", "runs": 9, "runs_head": "<hash>",
     "taken_at": "2026-01-08T10:00:00.123456Z"}

kept in a file (a CI artefact) or in a git note on the applied commit (under
``refs/notes/reconciler-audit``, pushed with the repository). ``audit verify`` checks that
the log still holds entry ``entries`` with hash ``head`` and run ``runs`` with hash
``runs_head``: entries appended later are fine, a truncated or rewritten log is not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reconciler.catalog.postgres import audit_log
from reconciler.core.chain import GENESIS, HASH, utc_text
from reconciler.errors import ConfigurationError
from reconciler.git import notes
from reconciler.git.repository import GitRepository

VERSION = 1
MARK = "reconciler_audit_anchor"


@dataclass(frozen=True)
class Anchor:
    """The heads of both chains at one moment, and where the anchor was read from."""

    entries: int
    head: str
    runs: int
    runs_head: str
    taken_at: str
    where: str = ""

    def text(self) -> str:
        """The anchor as its one JSON line."""
        return json.dumps({MARK: VERSION, "entries": self.entries, "head": self.head, "runs": self.runs,
                           "runs_head": self.runs_head, "taken_at": self.taken_at}, sort_keys=False)


def take(url: str) -> Anchor:
    """The heads of the log at ``url`` now (one snapshot)."""
    with audit_log.snapshot(url, "reconciler audit anchor") as conn:
        entry = conn.execute("SELECT seq, hash FROM reconciler.audit_log ORDER BY seq DESC LIMIT 1").fetchone()
        run = conn.execute("SELECT seq, hash FROM reconciler.runs WHERE seq IS NOT NULL "
                           "ORDER BY seq DESC LIMIT 1").fetchone()
        now = conn.execute("SELECT clock_timestamp()").fetchone()
    assert now is not None
    return Anchor(entry[0] if entry else 0, entry[1] if entry else GENESIS, run[0] if run else 0,
                  run[1] if run else GENESIS, utc_text(now[0]))


def applied_commit(url: str, repo: GitRepository) -> str | None:
    """The commit of the newest applied run that this repository has (the one to note the anchor on)."""
    with audit_log.snapshot(url, "reconciler audit anchor") as conn:
        rows = conn.execute("SELECT commit_sha FROM reconciler.runs WHERE outcome = 'applied' "
                            "AND commit_sha IS NOT NULL ORDER BY seq DESC NULLS LAST, started_at DESC LIMIT 20"
                            ).fetchall()
    for (sha,) in rows:
        if repo.commit_exists(sha):
            return repo.resolve(sha)
    return None


def write_file(path: Path, anchor: Anchor) -> None:
    """Write the anchor to ``path`` (replacing it): one line, for a CI artefact."""
    try:
        path.write_text(anchor.text() + "\n", encoding="utf-8")
    except OSError as error:
        raise ConfigurationError(f"cannot write {path}: {error.strerror or error}") from None


def write_note(repo: GitRepository, commit: str, anchor: Anchor) -> None:
    """Append the anchor to the git note of ``commit``."""
    notes.add_note(repo, commit, anchor.text())


def read_file(path: Path) -> list[Anchor]:
    """Every anchor in a file (one a line; other lines are ignored)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigurationError(f"cannot read anchor file {path}: {getattr(error, 'strerror', None) or error}"
                                 ) from None
    found = parse(text, str(path))
    if not found:
        raise ConfigurationError(f"{path} holds no audit anchor (written by `reconciler audit anchor --file`)")
    return found


def read_notes(repo: GitRepository) -> list[Anchor]:
    """Every anchor in the repository's notes (``refs/notes/reconciler-audit``)."""
    found = []
    for commit, text in notes.read_notes(repo):
        found += parse(text, f"the git note on {commit[:12]}")
    return found


def parse(text: str, where: str) -> list[Anchor]:
    """The anchors in ``text``; a line that looks like one but is not valid is refused, naming ``where``."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{") or MARK not in line:
            continue
        try:
            data: Any = json.loads(line)
            anchor = Anchor(int(data["entries"]), str(data["head"]), int(data["runs"]), str(data["runs_head"]),
                            str(data["taken_at"]), where)
        except (ValueError, KeyError, TypeError):
            raise ConfigurationError(f"{where} holds a damaged audit anchor: {line[:120]}") from None
        if data.get(MARK) != VERSION or not (HASH.fullmatch(anchor.head) and HASH.fullmatch(anchor.runs_head)) \
                or anchor.entries < 0 or anchor.runs < 0:
            raise ConfigurationError(f"{where} holds a damaged audit anchor: {line[:120]}")
        found.append(anchor)
    return found
