"""Manifest tree to models: finds the files, validates every document, and collects every problem at once."""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from pydantic import ValidationError

from reconciler.core import kinds
from reconciler.core.diff import collector_paused
from reconciler.core.service_rules import METASTORE_MAX_PATH_SEGMENT, utf16_length
from reconciler.errors import ConfigurationError, ManifestError, Problem
from reconciler.core.model import (
    API_VERSION,
    TRUSTED_JSON,
    Address,
    Document,
    JsonPath,
    describe,
    env_references,
    folded,
    iter_strings,
    resolve_env,
)
from reconciler.manifests.datafile import RecordRows, declared_from_file
from reconciler.manifests.datapaths import DataFiles, DiskFiles, VersionFiles, is_data_file
from reconciler.manifests.messages import RawProblem, at, translate
from reconciler.manifests.servable import unservable
from reconciler.manifests.tree import Declared, Later, Location, ManifestTree, Reference
from reconciler.manifests.yamlread import (
    MAX_FILE_BYTES,
    ParsedDocument,
    ParsedFile,
    decode_text,
    locate,
    parse_text,
    read_text,
)

SUFFIXES: Final = (".yaml", ".yml")


def load_tree(
    root: Path,
    *,
    resolve_env: bool = False,
    environ: Mapping[str, str] | None = None,
    skip: Collection[str] = (),
    check_env: bool = False,
) -> ManifestTree:
    """Load and validate every manifest under ``root`` (a directory, or one file).

    With ``resolve_env``, ``${env:NAME}`` references in storage target configs are
    replaced by the variables' values from ``environ`` (default: the process
    environment), and an unset variable is a problem. With ``check_env`` instead, the
    references are kept as written and an unset variable is still a problem, at the
    value that names it. Raises ManifestError listing every problem in the tree, or
    ConfigurationError when ``root`` does not exist. Files named (as shown) in ``skip``
    are listed but not read: a plan passes over files it knows are unchanged
    (catalog/settled.py).
    """
    files, problems = discover(root)
    env = dict(os.environ if environ is None else environ) if resolve_env or check_env else None
    substitute = resolve_env
    data = DiskFiles(root)
    results = ((display, load_file(file, display, env, substitute=substitute, data_files=data))
               for file, display in files if display not in skip)
    return _tree_of(_display(root), tuple(display for _, display in files), results, problems, data.read_paths)


def load_versions(root: str, files: Iterable[tuple[str, bytes]],
                  check_env: Mapping[str, str] | None = None, links: Mapping[str, str] | None = None,
                  other: Callable[[str], bytes | None] | None = None) -> ManifestTree:
    """Load and validate a tree from file contents read elsewhere (a commit in git's history):
    (path as shown, bytes) of each manifest file, in order, and of the data files RecordSets
    name (``recordsFile``). Every problem is reported, as ``load_tree`` reports it; with
    ``check_env``, an unset ``${env:NAME}`` too (references are kept as written). ``links``:
    the symbolic links of that version (path → target), followed as on disk; ``other`` reads
    a file not among ``files`` that a link leads to (None: none is read)."""
    every = list(files)
    listed = [(display, data) for display, data in every if not is_data_file(display)]
    contents = {display: data for display, data in every if is_data_file(display)}

    def lookup(path: str) -> bytes | None:
        return contents[path] if path in contents else other(path) if other is not None else None

    return load_listed(root, listed, lookup, check_env, links)


def load_listed(root: str, listed: list[tuple[str, bytes]], lookup: Callable[[str], bytes | None],
                check_env: Mapping[str, str] | None = None, links: Mapping[str, str] | None = None) -> ManifestTree:
    """``load_versions`` of manifest files, with ``lookup`` giving the bytes of a data file by
    its path (None: no such file)."""
    data = VersionFiles(root, lookup, links)
    results = ((display, load_bytes(content, display, check_env, data_files=data)) for display, content in listed)
    return _tree_of(root, tuple(display for display, _ in listed), results, [], data.read_paths)


def _tree_of(root: str, shown: tuple[str, ...], results: Iterable[tuple[str, FileResult]],
             problems: list[Problem], data_files: Mapping[str, str]) -> ManifestTree:
    entries: list[_Entry] = []
    warnings: list[Problem] = []
    with collector_paused():  # the loaded tree stays alive: no cycle worth rescanning
        for _, result in results:
            problems.extend(result.problems)
            warnings.extend(result.warnings)
            found: list[_Entry] = [(item.address, item.location, item) for item in result.declared]
            found += [(address, location, None) for address, location in result.claims]
            found += _block_entries(result.blocks)
            entries.extend(sorted(found, key=lambda entry: (entry[1].path, entry[1].line, entry[1].column)))
        tree = _assemble(root, shown, entries, problems, warnings)
    if data_files:
        tree = replace(tree, data_files=tuple(sorted(data_files.items())))
    if problems:
        raise ManifestError(problems)
    return tree


# --- finding the files --------------------------------------------------------------------


def digest_of(file: Path) -> str | None:
    """sha256 of the file's bytes, hex, read in chunks; None when it cannot be read or is over
    the loader's size limit (the loader reports why, without reading it)."""
    try:
        if file.stat().st_size > MAX_FILE_BYTES:
            return None
        with file.open("rb") as stream:
            return hashlib.file_digest(stream, "sha256").hexdigest()
    except OSError:
        return None


def discover(root: Path) -> tuple[list[tuple[Path, str]], list[Problem]]:
    """The manifest files under ``root`` in sorted order, each with the path to show
    for it, and the problems met on the way (links leading outside the tree).

    Entries whose name starts with ``.`` are skipped. A symbolic link is followed
    when it stays inside the tree; a file reached twice is read once.
    """
    if not root.exists():
        kind = "broken symbolic link" if root.is_symlink() else "no such file or directory"
        raise ConfigurationError(f"{root}: {kind}")
    if not root.is_dir():
        return [(root, _display(root))], []
    walk = _Walk(root, root.resolve())
    walk.seen.add(walk.real_root)
    walk.directory(root, Path())
    return walk.files, walk.problems


@dataclass
class _Walk:
    """A walk of the tree's directories, depth first in name order."""

    root: Path
    real_root: Path
    files: list[tuple[Path, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    seen: set[Path] = field(default_factory=set)

    def directory(self, directory: Path, relative: Path) -> None:
        try:
            entries = sorted(os.scandir(directory), key=lambda entry: entry.name)
        except OSError as error:
            self._problem(relative, f"cannot read directory: {error.strerror or error}")
            return
        for entry in entries:
            if not entry.name.startswith("."):
                self._entry(Path(entry.path), relative / entry.name, entry)

    def _entry(self, path: Path, relative: Path, entry: os.DirEntry[str]) -> None:
        is_manifest = entry.name.endswith(SUFFIXES)
        if entry.is_symlink():
            try:
                real = path.resolve(strict=True)
            except (OSError, RuntimeError):
                if is_manifest:
                    self._problem(relative, "broken symbolic link")
                return
            is_dir = real.is_dir()
            if (is_dir or is_manifest) and not real.is_relative_to(self.real_root):
                self._problem(relative, f"symbolic link leads outside the manifest tree (to {real})")
                return
        else:
            is_dir = entry.is_dir(follow_symlinks=False)
            real = path.resolve() if is_dir or is_manifest else path
        if real in self.seen or not (is_dir or (is_manifest and real.is_file())):
            return
        self.seen.add(real)
        if is_dir:
            self.directory(path, relative)
        else:
            self.files.append((path, _display(self.root / relative)))

    def _problem(self, relative: Path, message: str) -> None:
        self.problems.append(Problem(_display(self.root / relative), 1, 1, message))


def _display(path: Path) -> str:
    """``path`` relative to the working directory when it is under it, else as given."""
    cwd = Path.cwd()
    absolute = Path(os.path.normpath(path if path.is_absolute() else cwd / path))
    try:
        return str(absolute.relative_to(cwd))
    except ValueError:
        return str(path)


# --- loading files ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FileResult:
    """What one file declares, the problems found in it, and the addresses its
    invalid documents still name (so that duplicates of them are reported too).
    The records of data files that took the bulk road are ``blocks``, kept as rows."""

    declared: list[Declared[Document]]
    problems: list[Problem]
    claims: list[tuple[Address, Location]] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    blocks: list[RecordRows] = field(default_factory=list)

    def objects(self) -> list[Declared[Document]]:
        """Everything the file declares, its data files' records included (built now)."""
        return [*self.declared, *(item for block in self.blocks for item in block)]


# An address declared at a location, by a valid document (with its declaration) or
# by an invalid one (None); or a data file's records kept as rows (their first line, no address).
_Entry = tuple["Address | None", Location, "Declared[Document] | RecordRows | None"]


def load_file(file: Path, display: str, environ: Mapping[str, str] | None = None, *,
              substitute: bool = True, data_files: DataFiles | None = None) -> FileResult:
    """Validate the documents of one file (``environ`` given: resolve ``${env:...}``, or
    without ``substitute`` only check that every variable named is set).

    The file is read by the fast path first; if any problem must be located, it is
    read again by the precise path, which knows where every node is.
    """
    text, problem = read_text(file, display)
    if text is None:
        assert problem is not None
        return FileResult([], [problem])
    return load_text(text, display, environ, substitute=substitute, data_files=data_files)


def load_bytes(data: bytes, display: str, check_env: Mapping[str, str] | None = None, *,
               data_files: DataFiles | None = None) -> FileResult:
    """``load_file`` for the content of a file read from elsewhere (a version in git's history);
    with ``check_env``, an unset ``${env:NAME}`` is a problem (references are kept). Without
    ``data_files``, a RecordSet's ``recordsFile`` is not read (it declares no records)."""
    if len(data) > MAX_FILE_BYTES:
        return FileResult([], [Problem(display, 1, 1, "file is over the size limit")])
    text, problem = decode_text(data, display)
    if text is None:
        assert problem is not None
        return FileResult([], [problem])
    return load_text(text, display, check_env, substitute=False, data_files=data_files)


def load_text(text: str, display: str, environ: Mapping[str, str] | None = None, *,
              substitute: bool = True, data_files: DataFiles | None = None) -> FileResult:
    """``load_file`` for text already read."""
    parsed = parse_text(text, display)
    if parsed.problems:
        return FileResult([], parsed.problems)
    checked = _validate(parsed, environ, substitute, data_files)
    if (checked.raw or checked.warned) and not parsed.precise:
        parsed = parse_text(text, display, precise=True)
        if parsed.problems:
            return FileResult([], parsed.problems)
        checked = _validate(parsed, environ, substitute, data_files)
    problems = [_locate(display, document, problem) for document, problem in checked.raw] + checked.ready
    claims = [
        claim for document in {id(d): d for d, _ in checked.raw}.values() for claim in _claims(display, document)
    ]
    warnings = [_locate(display, document, warning) for document, warning in checked.warned] + checked.ready_warnings
    return FileResult(checked.declared, problems, claims, warnings, checked.blocks)


_Located = list[tuple[ParsedDocument, RawProblem]]


@dataclass(slots=True)
class _Checked:
    """What the documents of one file declare (data files' records kept as rows apart), with
    their problems and warnings, still to be located in the file, and those already located in
    the data files the file names."""

    declared: list[Declared[Document]] = field(default_factory=list)
    blocks: list[RecordRows] = field(default_factory=list)
    raw: _Located = field(default_factory=list)
    warned: _Located = field(default_factory=list)
    ready: list[Problem] = field(default_factory=list)
    ready_warnings: list[Problem] = field(default_factory=list)


def _validate(parsed: ParsedFile, environ: Mapping[str, str] | None, substitute: bool = True,
              data_files: DataFiles | None = None) -> _Checked:
    """Every document of a parsed file, checked."""
    out = _Checked()
    for document in parsed.documents:
        found, problems = _document(parsed.path, document, environ, substitute, data_files, out.ready)
        out.raw.extend((document, problem) for problem in problems)
        if isinstance(found, RecordRows):  # a data file that took the bulk road: no problem in it
            out.blocks.append(found)
            if _maybe_unservable(found):
                _warn(out, document, found.records())
        else:
            out.declared.extend(found)
            if found and not problems:
                _warn(out, document, found)
    return out


def _warn(out: _Checked, document: ParsedDocument, found: Sequence[Declared[Document]]) -> None:
    """The warnings about what a valid document declares: a record of a data file's at its line
    there, the rest at their place in the document."""
    in_data_file = isinstance(document.value, dict) and "recordsFile" in document.value
    for warning in unservable(document.value, found):
        path = warning[0]
        if in_data_file and len(path) == 3 and path[0] == "records" and isinstance(path[1], int):
            where = found[path[1]].location
            out.ready_warnings.append(Problem(where.path, where.line, where.column, warning[2]))
        else:
            out.warned.append((document, warning))


def _maybe_unservable(rows: RecordRows) -> bool:
    """Whether ``unservable`` could find anything in records kept as rows (it looks at lengths)."""
    return utf16_length(rows.namespace) > METASTORE_MAX_PATH_SEGMENT or rows.longest_key() > METASTORE_MAX_PATH_SEGMENT


def _claims(path: str, document: ParsedDocument) -> list[tuple[Address, Location]]:
    """The addresses an invalid document still names clearly enough."""
    value = document.value
    if not isinstance(value, dict):
        return []
    span = document.layout.span
    whole = Location(path, span.line, span.column, span.end_line)
    spec = kinds.BY_MANIFEST_KIND.get(str(value.get("kind")))
    if spec is not None:
        address = _address(spec.address(value))
        return [(address, whole)] if address else []
    spec = kinds.BY_DOCUMENT.get(str(value.get("kind")))
    items = value.get(spec.plural) if spec is not None else None
    if spec is None or not isinstance(items, list):
        return []
    spans = document.layout.items if len(document.layout.items) == len(items) else None
    claims = []
    for index, item in enumerate(items):
        # The set names the first identity field (a namespace); each item the rest (its key).
        address = (_address(spec.address({**item, spec.identity[0]: value.get(spec.identity[0])}))
                   if isinstance(item, dict) else None)
        if address is not None:
            span = spans[index] if spans else span
            claims.append((address, Location(path, span.line, span.column, span.end_line)))
    return claims


def _address(text: str) -> Address | None:
    try:
        return kinds.parse_address(text)
    except ConfigurationError:
        return None


def _document(
    path: str, document: ParsedDocument, environ: Mapping[str, str] | None, substitute: bool = True,
    data_files: DataFiles | None = None, ready: list[Problem] | None = None,
) -> tuple[Sequence[Declared[Document]], list[RawProblem]]:
    value = document.value
    if not isinstance(value, dict):
        return [], [((), "node", f"a manifest document must be a mapping, got {describe(value)}")]
    problems = _header_problems(value)
    if problems:
        return [], problems
    kind = kinds.DOCUMENTS[value["kind"]]
    try:
        model = kind.model_validate(value, by_alias=True, by_name=False, context=TRUSTED_JSON)
    except ValidationError as error:
        return [], [raw for detail in error.errors(include_url=False) for raw in translate(detail, kind)]
    span = document.layout.span
    location = Location(path, span.line, span.column, span.end_line)
    if getattr(model, "records_file", None) is not None:
        if data_files is None:
            return [], []  # a version read without its data files: it declares none of their records
        records, problems, in_file = declared_from_file(model, path, data_files)
        if ready is not None:
            ready.extend(in_file)
        return records, problems
    spec = kinds.BY_DOCUMENT[value["kind"]]
    if spec.set_model is type(model):
        return _expand(path, document, model, location), []
    if spec.secret_field is not None and environ is not None:
        if not substitute:
            unset = _unset(model, spec.secret_field, environ)
            return ([], unset) if unset else ([Declared(model, location)], [])
        return _resolve(model, spec.secret_field, location, environ)
    return [Declared(model, location)], []


def _resolve(
    model: Document, secret_field: str, location: Location, environ: Mapping[str, str]
) -> tuple[list[Declared[Document]], list[RawProblem]]:
    """Replace ``${env:NAME}`` in the secret field (a storage target's config), remembering
    which paths are secret."""
    found = resolve_env(getattr(model, secret_field), environ)
    first: dict[JsonPath, str] = {}
    for path, name in found.missing:
        first.setdefault(path, name)
    if first:
        return [], [((secret_field, *path), "node",
                     at((secret_field, *path), f"environment variable {name} is not set"))
                    for path, name in first.items()]
    resolved = model.model_copy(update={secret_field: found.config})
    return [Declared(resolved, location, frozenset(found.templates))], []


def _unset(model: Document, secret_field: str, environ: Mapping[str, str]) -> list[RawProblem]:
    """An unset ``${env:NAME}`` in the secret field, each at the value that names it (the plan's
    words: the object, the path, the variable)."""
    address = str(model.address)
    problems: list[RawProblem] = []
    for path, text in iter_strings(getattr(model, secret_field)):
        where = (secret_field, *path)
        problems += [(where, "node", f"{address}: {at(where, f'environment variable {name} is not set')}")
                     for name in dict.fromkeys(env_references(text)) if name not in environ]
    return problems


def _block_entries(blocks: list[RecordRows]) -> list[_Entry]:
    """Entries for one file's data files kept as rows: one for all of a data file's records,
    where they sort as a run; one for each record where two sets of the file read the same data
    file (their records sort line by line, interleaved)."""
    shared = Counter(block.path for block in blocks)
    entries: list[_Entry] = []
    for block in blocks:
        if shared[block.path] > 1:
            entries += [(item.address, item.location, item) for item in block]
        else:
            entries.append((None, Location(block.path, 1, 1, len(block)), block))
    return entries


def _assemble(
    root: str, files: tuple[str, ...], entries: list[_Entry], problems: list[Problem],
    warnings: list[Problem],
) -> ManifestTree:
    """The tree of the first declaration of each address; later ones are problems."""
    entries = _settle_blocks(entries)
    first: dict[Address | RecordRows, _Entry] = {}
    for entry in entries:
        address, where, item = entry
        if isinstance(item, RecordRows):
            first[item] = entry  # _settle_blocks: none of its addresses is declared elsewhere
            continue
        assert address is not None
        earlier = first.setdefault(address, entry)
        if earlier is not entry:
            message = f"{address} is declared twice; first at {earlier[1]}"
            problems.append(Problem(where.path, where.line, where.column, message))
    lookalikes: dict[str, _Entry] = {}
    for key, entry in first.items():
        if isinstance(key, RecordRows):
            continue
        other = lookalikes.setdefault(folded(str(key)), entry)
        if other is not entry:
            where = entry[1]
            message = (f"{key} differs from {other[0]} (at {other[1]}) only by letter case or Unicode "
                       "normalisation; the catalog would keep them as two objects, so rename one")
            problems.append(Problem(where.path, where.line, where.column, message))
    kept = [declared for _, _, declared in first.values() if declared is not None]
    declared: dict[str, list[Declared[Document] | RecordRows]] = {name: [] for name in kinds.NAMES}
    for item in kept:
        declared[RecordRows.KIND if isinstance(item, RecordRows) else item.address.kind].append(item)
    present = _Present(first)
    return ManifestTree(
        root=root,
        files=files,
        declared={name: _sequence(items) for name, items in declared.items()},
        unresolved=Later(lambda: _sorted_references(_unresolved(kept, present))),
        warnings=tuple(sorted(set(warnings))),
    )


def _sorted_references(references: Iterable[Reference]) -> list[Reference]:
    """``sorted(references)``, with the order the dataclass defines spelled out as one tuple, so
    that a hundred thousand links sort in C rather than through generated ``__lt__`` calls."""
    with collector_paused():
        return sorted(references, key=_reference_order)


def _reference_order(reference: Reference) -> tuple[Any, ...]:
    return (reference.target.kind, reference.target.name, reference.source.kind, reference.source.name,
            *reference.location.order())


def _sequence(items: list[Declared[Document] | RecordRows]) -> Sequence[Declared[Document]]:
    """A kind's objects in order: a tuple, or where records are kept as rows, one built when read."""
    if not any(isinstance(item, RecordRows) for item in items):
        return tuple(items)  # type: ignore[arg-type]  # no rows among them

    def flat() -> Iterator[Declared[Document]]:
        for item in items:
            if isinstance(item, RecordRows):
                yield from item
            else:
                yield item

    return Later(flat, sum(len(item) if isinstance(item, RecordRows) else 1 for item in items))


def _settle_blocks(entries: list[_Entry]) -> list[_Entry]:
    """``entries`` with every data file kept as rows whose records would meet another declaration
    (the same address, or one that differs only by letter case or normalisation) turned into
    one entry per record, in its place, so that the problems are found and told as for any
    other; the rest stay as rows, none of their addresses declared anywhere else."""
    blocks = [entry for entry in entries if isinstance(entry[2], RecordRows)]
    if not blocks:
        return entries
    split: dict[int, tuple[str, set[str]]] = {}
    for entry in blocks:
        rows = entry[2]
        assert isinstance(rows, RecordRows)
        found = rows.folded_keys(str(Address(RecordRows.KIND, f"{rows.namespace}/")))
        if found is not None and len(set(found[1])) == len(rows):
            split[id(entry)] = (found[0], set(found[1]))
    others = [folded(str(address)) for address, _, item in entries if address is not None]
    others += [folded(str(item.address)) for entry in blocks if id(entry) not in split
               for item in entry[2]]  # type: ignore[union-attr]  # blocks hold RecordRows
    by_prefix: dict[str, list[int]] = {}
    for index, (prefix, _) in split.items():
        by_prefix.setdefault(prefix, []).append(index)
    settled = set(split)
    for index, (prefix, keys) in split.items():
        taken = {name[len(prefix):] for name in others if name.startswith(prefix)}
        taken.update(*(split[other][1] for other in by_prefix[prefix] if other != index))
        if not keys.isdisjoint(taken):
            settled.discard(index)
    out: list[_Entry] = []
    for entry in entries:
        rows = entry[2]
        if isinstance(rows, RecordRows) and id(entry) not in settled:
            out += [(item.address, item.location, item) for item in rows]
        else:
            out.append(entry)
    return out


class _Present:
    """Whether the tree declares an address: one of ``first`` or a record of its rows."""

    def __init__(self, first: Mapping[Address | RecordRows, _Entry]) -> None:
        self.first = first
        self.rows = [key for key in first if isinstance(key, RecordRows)]

    def __contains__(self, address: object) -> bool:
        return address in self.first or any(rows.declares(address) for rows in self.rows)


def _header_problems(value: dict[str, Any]) -> list[RawProblem]:
    problems: list[RawProblem] = []
    if "apiVersion" not in value:
        problems.append(((), "parent", "missing required field 'apiVersion'"))
    elif value["apiVersion"] != API_VERSION:
        problems.append(
            (
                ("apiVersion",),
                "node",
                f"apiVersion: unknown version {describe(value['apiVersion'])}; expected {API_VERSION}",
            )
        )
    if "kind" not in value:
        problems.append(((), "parent", "missing required field 'kind'"))
    elif not isinstance(value["kind"], str) or value["kind"] not in kinds.DOCUMENTS:
        expected = ", ".join(kinds.DOCUMENTS)
        problems.append(
            (("kind",), "node", f"kind: unknown kind {describe(value['kind'])}; expected one of {expected}")
        )
    return problems


def _expand(
    path: str, document: ParsedDocument, recordset: Any, location: Location
) -> list[Declared[Document]]:
    """The objects of a set document (a RecordSet's records), each located at its own item
    plus the set's other lines but its items (its ``namespace`` and ``defaults``)."""
    layout = document.layout
    spec = kinds.BY_DOCUMENT[document.value["kind"]]
    also = tuple((span.line, span.end_line) for key, span in layout.keys.items()
                 if key not in ("apiVersion", "kind", spec.plural))
    records = recordset.expand()
    if len(layout.items) != len(records):  # cannot happen: the layout was checked
        return [Declared(record, location) for record in records]
    return [
        Declared(record, Location(path, span.line, span.column, span.end_line, also))
        for record, span in zip(records, layout.items, strict=True)
    ]


def _locate(path: str, document: ParsedDocument, problem: RawProblem) -> Problem:
    value_path, where, message = problem
    assert document.node is not None
    node, key = locate(document.node, document.value, value_path)
    target = key if where == "key" and key is not None else node
    return Problem(path, target.line, target.column, message)


def _unresolved(declared: list[Declared[Document] | RecordRows], present: _Present
                ) -> Iterable[Reference]:
    """The links (``KindSpec.needs``) of each object to an object the tree does not declare
    (``present``: every address it declares)."""
    names = {spec.name: {field: attribute for attribute, field in spec.attributes.items()}
             for spec in kinds.REGISTRY}
    needs = {spec.name: spec.needs for spec in kinds.REGISTRY}
    for item in declared:
        if isinstance(item, RecordRows):
            yield from _rows_unresolved(item, present, needs[RecordRows.KIND])
            continue
        kind = item.address.kind
        for needed in needs[kind](_Fields(item.model, names[kind])):
            target = Address(*needed.split(":", 1))
            if target not in present:
                yield Reference(target, item.address, item.location)


def _rows_unresolved(rows: RecordRows, present: _Present,
                     needs: Callable[[Mapping[str, Any]], tuple[str, ...]]) -> Iterator[Reference]:
    """``_unresolved`` of records kept as rows: what each distinct dataset link needs is asked
    once, and no record is built (a link names its record's address and line)."""
    slugs = rows.dataset_slugs()
    missing: dict[str | None, list[Address]] = {}
    for slug in set(slugs) - {None}:
        needed = [Address(*text.split(":", 1)) for text in needs({"metadata": {"datasetSlug": slug}})]
        absent = [target for target in needed if target not in present]
        if absent:
            missing[slug] = absent
    for index, slug in enumerate(slugs):
        if slug in missing:
            source, where = rows.located(index)
            yield from (Reference(target, source, where) for target in missing[slug])


class _Fields(Mapping[str, Any]):
    """A declared model's managed fields under their manifest names, read when asked for."""

    __slots__ = ("_model", "_names")

    def __init__(self, model: Document, names: Mapping[str, str]) -> None:
        self._model = model
        self._names = names  # manifest name -> model attribute

    def __getitem__(self, name: str) -> Any:
        if name not in self._names:
            raise KeyError(name)
        return getattr(self._model, self._names[name])

    def get(self, name: str, default: Any = None) -> Any:  # Mapping's own goes through a KeyError
        attribute = self._names.get(name)
        return default if attribute is None else getattr(self._model, attribute)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)
