"""The one exception tree of the reconciler; each error knows its exit code and how it reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from reconciler.core.text import clean


class ReconcilerError(Exception):
    """Root of every error the reconciler reports to its user.

    The CLI turns any of these into one clear message and ``exit_code``; nothing
    else in the package prints or exits.
    """

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def render(self) -> str:
        """The text shown to the user (without the ``error:`` prefix)."""
        return self.message


class ConfigurationError(ReconcilerError):
    """Bad command-line or configuration input (paths, URLs, files)."""


class DatabaseError(ReconcilerError):
    """The catalog database failed or refused a statement."""


class DatabaseUnavailable(DatabaseError):
    """No connection could be made to the catalog server."""


class MigrationError(DatabaseError):
    """The migration history disagrees with the migration files."""


class ConflictError(ReconcilerError):
    """An object changed since it was read (optimistic concurrency), or a write collided."""

    def __init__(self, message: str, *, address: str | None = None) -> None:
        super().__init__(message)
        self.address = address


class LockTimeout(ReconcilerError):
    """A lock apply needs (its source's, a row it touches, the audit log's) stayed held past ``--lock-timeout``."""


class Refusal(ReconcilerError):
    """Apply refused before writing anything; the message names every object that caused it."""


class AuditVerificationError(ReconcilerError):
    """The audit log does not verify; names the first bad entry and why."""

    def __init__(self, message: str, *, seq: int | None = None) -> None:
        super().__init__(f"audit log verification failed: {message}")
        self.seq = seq


class NotFoundError(ReconcilerError):
    """An object the caller named does not exist in the catalog."""


class EventDeliveryError(ReconcilerError):
    """The event bus did not take a platform event; ``sent`` of the batch went before it."""

    def __init__(self, message: str, *, sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class DuplicatePartitionError(ConflictError):
    """A manifest publish carried a partition the dataset already has."""


@dataclass(frozen=True, order=True)
class Problem:
    """One problem found in a manifest tree, located in its file."""

    path: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        # One line whatever the file's name or the quoted text holds: editors and CI
        # annotations read one problem a line.
        return f"{clean(self.path)}:{self.line}:{self.column}: {clean(self.message)}"


class ManifestError(ReconcilerError):
    """The manifest tree is invalid; carries every problem found, sorted by location."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems: Sequence[Problem] = sorted(set(problems))
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{count} {noun} in the manifest tree")

    def render(self) -> str:
        lines = [str(p) for p in self.problems]
        lines.append(self.message)
        return "\n".join(lines)


class DataFileError(ReconcilerError):
    """A RecordSet's ``recordsFile`` cannot be read (outside the tree, missing, unreadable); the
    loader reports it as a problem at the manifest's ``recordsFile`` value."""
