"""The loaded manifest tree: every declared object with where it is declared, and what it refers to."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from reconciler.core import kinds
from reconciler.core.kinds.dataset import Dataset
from reconciler.core.kinds.record import Record
from reconciler.core.kinds.storage_target import StorageTarget
from reconciler.core.model import Address, Document, JsonPath
from reconciler.errors import Problem

T = TypeVar("T", bound=Document, covariant=True)
V = TypeVar("V")


@dataclass(frozen=True, slots=True, order=True)
class Location:
    """Where an object is declared.

    ``path`` is the file as the user would type it (relative to the working
    directory when the file is under it); ``line``/``column`` is where the object's
    mapping starts and ``end_line`` its last line (1-based, inclusive). ``also``
    holds further line ranges that define the object: for a record of a
    RecordSet, the set's ``namespace`` and ``defaults`` lines.
    """

    path: str
    line: int
    column: int
    end_line: int
    also: tuple[tuple[int, int], ...] = ()

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"

    def order(self) -> tuple[Any, ...]:
        """The tuple this location sorts by (as ``<`` compares two), for sorting many at C speed."""
        return (self.path, self.line, self.column, self.end_line, self.also)

    @property
    def line_ranges(self) -> tuple[tuple[int, int], ...]:
        """Every (first, last) line range that defines the object, sorted and merged:
        what ``git blame -L`` should look at."""
        merged: list[tuple[int, int]] = []
        for first, last in sorted([(self.line, self.end_line), *self.also]):
            if merged and first <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], last))
            else:
                merged.append((first, last))
        return tuple(merged)


@dataclass(frozen=True, slots=True)
class Declared(Generic[T]):
    """One object of the tree: its model and its location.

    For a storage target loaded with ``resolve_env=True``, ``model.config`` holds
    the resolved values and ``secret_paths`` the config paths whose value came
    from an environment variable (to be masked in plans, logs and audit).
    """

    model: T
    location: Location
    secret_paths: frozenset[JsonPath] = frozenset()
    address: Address = field(init=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "address", self.model.address)


@dataclass(frozen=True, slots=True, order=True)
class Reference:
    """A link from ``source`` to ``target`` that the tree itself does not satisfy; the
    plan checks it against the catalog."""

    target: Address
    source: Address
    location: Location


class Later(Sequence[V]):
    """A sequence worked out the first time its items are read; its length may be known before
    (records kept as a data file's rows are built only when something reads them). Equal to
    any sequence of the same items, as the tuple it stands for would be."""

    __slots__ = ("_make", "_items", "_length")

    def __init__(self, make: Callable[[], Iterable[V]], length: int | None = None) -> None:
        self._make: Callable[[], Iterable[V]] | None = make
        self._items: tuple[V, ...] | None = None
        self._length = length

    def items(self) -> tuple[V, ...]:
        """Every item, worked out now if it was not yet."""
        if self._items is None:
            assert self._make is not None
            self._items, self._make = tuple(self._make()), None
        return self._items

    def __len__(self) -> int:
        return self._length if self._length is not None else len(self.items())

    @overload
    def __getitem__(self, index: int) -> V: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[V]: ...

    def __getitem__(self, index: int | slice) -> V | Sequence[V]:
        return self.items()[index]

    def __iter__(self) -> Iterator[V]:
        return iter(self.items())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (tuple, list, Later)):
            return self.items() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self.items()) if self._items is not None else f"Later(<{self._length} items, not yet read>)"


@dataclass(frozen=True)
class ManifestTree:
    """Every object a manifest tree declares, by kind (core/kinds), each kind's in file and
    document order."""

    root: str
    files: tuple[str, ...]
    declared: Mapping[str, Sequence[Declared[Document]]] = field(default_factory=dict)
    unresolved: Sequence[Reference] = ()  # sorted
    # Valid values the platform's services store but cannot serve back (manifests/servable.py).
    warnings: tuple[Problem, ...] = ()
    # The data files RecordSets read (recordsFile), each with the manifest that names it, as shown.
    data_files: tuple[tuple[str, str], ...] = ()
    _index: dict[Address, Declared[Document]] | None = field(init=False, repr=False, compare=False, default=None)

    def _lookup(self) -> Mapping[Address, Declared[Document]]:
        """Each object by address, built when first asked for (a load that only checks builds none)."""
        if self._index is None:
            object.__setattr__(self, "_index", {declared.address: declared for declared in self.objects()})
        assert self._index is not None
        return self._index

    def objects(self) -> Iterator[Declared[Document]]:
        """Every object, kind by kind in the registry's order (storage targets, datasets, records)."""
        for name in kinds.NAMES:
            yield from self.declared.get(name, ())

    def of(self, kind: str) -> Sequence[Declared[Any]]:
        """The objects of ``kind`` (its name: ``"dataset"``)."""
        return self.declared.get(kind, ())

    @property
    def storage_targets(self) -> Sequence[Declared[StorageTarget]]:
        """The storage targets."""
        return self.of(kinds.storage_target.SPEC.name)

    @property
    def datasets(self) -> Sequence[Declared[Dataset]]:
        """The datasets."""
        return self.of(kinds.dataset.SPEC.name)

    @property
    def records(self) -> Sequence[Declared[Record]]:
        """The records."""
        return self.of(kinds.record.SPEC.name)

    def get(self, address: Address) -> Declared[Document] | None:
        """The object declared at ``address``, if the tree declares it."""
        return self._lookup().get(address)

    def __contains__(self, address: object) -> bool:
        return address in self._lookup()

    def __len__(self) -> int:
        return sum(len(items) for items in self.declared.values())

    def count(self, kind: str) -> int:
        """How many objects of ``kind`` the tree declares."""
        return len(self.of(kind))
