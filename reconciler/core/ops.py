"""The operations a plan can make on a catalog object: small frozen classes, one per operation (pure).

A plan's change names its operation by the JSON word (``"action": "create"``); the class
behind that word carries what the rest of the code asks of an operation (its word, the
past tense apply reports, whether it removes or deletes). Renderers and executors keep
registries keyed by these classes. Adding an operation: a class here (and a line in
``OPERATIONS``), its look in ``render/plan.py``, and its execution in the writers.

Adoption is not an operation: an object taken over is an ``Update`` whose reason is
``adoption`` (or, when nothing changes, bookkeeping the plan records).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Final


@dataclass(frozen=True)
class Operation:
    """One kind of change to one object."""

    name: ClassVar[str]  # the plan JSON's ``action``
    done: ClassVar[str]  # what apply reports it did: "created"
    removes: ClassVar[bool] = False  # takes the object out of use (archive, purge): the mass-archive breaker
    deletes: ClassVar[bool] = False  # deletes it for good (needs --allow-purge)
    keeps_declared: ClassVar[bool] = True  # leaves the object in the tree's shape (a dependency may need it)
    counted: ClassVar[bool] = True  # named in the closing counts of plan and apply even when none


@dataclass(frozen=True)
class Create(Operation):
    """The object does not exist: it is created."""

    name: ClassVar[str] = "create"
    done: ClassVar[str] = "created"


@dataclass(frozen=True)
class Update(Operation):
    """Managed fields change (or only protection does)."""

    name: ClassVar[str] = "update"
    done: ClassVar[str] = "updated"


@dataclass(frozen=True)
class Rename(Operation):
    """The object takes a new identity in place (``renamedFrom``): same id, so what refers
    to it by id keeps it; it may change managed fields in the same step."""

    name: ClassVar[str] = "rename"
    done: ClassVar[str] = "renamed"
    counted: ClassVar[bool] = False  # rare: "0 to rename" on every plan would be noise


@dataclass(frozen=True)
class Archive(Operation):
    """The object takes its kind's archived state (dataset inactive, record soft-deleted)."""

    name: ClassVar[str] = "archive"
    done: ClassVar[str] = "archived"
    removes: ClassVar[bool] = True
    keeps_declared: ClassVar[bool] = False


@dataclass(frozen=True)
class Restore(Operation):
    """An archived object comes back."""

    name: ClassVar[str] = "restore"
    done: ClassVar[str] = "restored"


@dataclass(frozen=True)
class Purge(Operation):
    """The object is deleted for good."""

    name: ClassVar[str] = "purge"
    done: ClassVar[str] = "purged"
    removes: ClassVar[bool] = True
    deletes: ClassVar[bool] = True
    keeps_declared: ClassVar[bool] = False


# In the order plans count and list them.
OPERATIONS: Final[tuple[type[Operation], ...]] = (Create, Update, Rename, Archive, Restore, Purge)
NAMES: Final[tuple[str, ...]] = tuple(op.name for op in OPERATIONS)
_BY_NAME: Final = {op.name: op for op in OPERATIONS}


def of(name: str) -> type[Operation]:
    """The operation the plan JSON calls ``name``; KeyError for a word no operation has."""
    return _BY_NAME[name]


def named(name: str) -> type[Operation] | None:
    """The operation called ``name``, or None (a word from a file no check vouched for)."""
    return _BY_NAME.get(name)
