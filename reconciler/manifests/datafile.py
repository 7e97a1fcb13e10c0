"""Records kept in a RecordSet's data file (JSON Lines or CSV): reading each line and validating it.

A RecordSet with ``recordsFile:`` takes its records from a file beside the manifest.
Each line of a ``.jsonl`` file (each row of a ``.csv`` file) is one item of ``records:``
and goes through the same validation; a problem is reported at the data file's line
and column. The RecordSet's ``defaults`` apply as they do to ``records:``.

Loading is the bulk path, so it takes the fastest road the file allows. A JSON Lines
file whose every line is plain (compact JSON that orjson decodes and serialises back to
exactly its bytes, so no key is given twice; no escape; fields the model would accept
unchanged) is checked a column at a time over the whole file (``_bulk``), and its records
are kept as the decoded lines, their models built when first read (``RecordRows``). Any
other file is read line by line: a plain line by the same checks one record at a time,
anything else (escapes, non-ASCII text, nulls, an unknown field, an error) by the
standard library's decoder and the pydantic model, which say what is wrong and where.
Both roads accept exactly the same files and declare the same records (a test holds
them equal). Where the file is, and whether it may be read, is datapaths.py's.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from operator import eq, itemgetter
from typing import Any, ClassVar, Final, overload

import orjson
from pydantic import TypeAdapter, ValidationError

from reconciler.core.diff import collector_paused
from reconciler.core.model import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    TRUSTED_JSON,
    describe,
)
from reconciler.core.kinds.record import SPEC as RECORD, Record, RecordItem, RecordSet, construct_record, \
    dataset_slug_of
from reconciler.core.model import Address
from reconciler.errors import DataFileError, Problem
from reconciler.manifests.datapaths import DataFiles
from reconciler.manifests.messages import RawProblem, translate
from reconciler.manifests.tree import Declared, Location
from reconciler.manifests.yamlread import MAX_FILE_BYTES, NUL_MESSAGE, decode_text, value_problems

# The CSV columns, by the model's field name; tags are ';'-separated, metadata is JSON text.
CSV_COLUMNS: Final = ("key", "owner", "tags", "schemaHash", "deleted", "protect", "purge", "metadata")
_FIELD_NAMES: Final = {"key": "key", "owner": "owner", "tags": "tags", "schemaHash": "schema_hash",
                       "metadata": "metadata", "deleted": "deleted", "protect": "protect", "purge": "purge"}
_BOOLEANS: Final = ("deleted", "protect", "purge")
_ITEM: Final = TypeAdapter(RecordItem)


# --- records of a RecordSet ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Loaded:
    """What a data file declares: its records located at their lines, and its problems."""

    path: str
    declared: Sequence[Declared[Record]]  # a RecordRows when the file took the bulk road
    problems: list[Problem]


def load_records(recordset: RecordSet, path: str, data: bytes) -> Loaded:
    """The records ``data`` (the file at ``path``) declares for ``recordset``, defaults merged."""
    if len(data) > MAX_FILE_BYTES:
        return Loaded(path, [], [Problem(path, 1, 1, f"file is {len(data):,} bytes; the limit is "
                                         f"{MAX_FILE_BYTES // 2**20} MiB")])
    if path.endswith(".jsonl"):
        rows = _bulk(recordset, path, data)
        if rows is not None:
            return Loaded(path, rows, [])
    return load_lines(recordset, path, data)


def load_lines(recordset: RecordSet, path: str, data: bytes) -> Loaded:
    """``load_records`` a line at a time: the road that knows where every problem is."""
    text, problem = decode_text(data, path)
    if text is None:
        assert problem is not None
        return Loaded(path, [], [problem])
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    stray = _stray_character(text, path)
    if stray is not None:
        return Loaded(path, [], [stray])
    rows = _jsonl_rows(text, path) if path.endswith(".jsonl") else _csv_rows(text, path)
    base = _defaults(recordset)
    declared: list[Declared[Record]] = []
    problems: list[Problem] = []
    for row in rows:
        if isinstance(row, Problem):
            problems.append(row)
            continue
        fields, raw = _accepted(row.value, row.vouched)
        if raw:
            problems += [row.problem(path, item) for item in raw]
            continue
        assert fields is not None
        record = construct_record(recordset.namespace, _merge(base, fields))
        declared.append(Declared(record, Location(path, row.line, 1, row.end_line)))
    return Loaded(path, declared, problems)


def _defaults(recordset: RecordSet) -> dict[str, Any]:
    return {name: getattr(recordset.defaults, name) for name in recordset.defaults.model_fields_set}


def _merge(base: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    """A record's fields over the set's defaults, as ``RecordSet.expand`` merges them: a field
    the line gives wins, except metadata, merged key by key (the line's keys win)."""
    merged = dict(base)
    for name, value in fields.items():
        if name == "metadata" and "metadata" in base:
            value = {**base["metadata"], **value}
        merged[name] = value
    return merged


def _stray_character(text: str, path: str) -> Problem | None:
    """A raw U+0000 or a carriage return alone (git and the line numbers would disagree)."""
    for char, message in (("\x00", NUL_MESSAGE), ("\r", "a carriage return alone is not a line break here; "
                                                        "use LF or CRLF line endings")):
        index = text.find(char)
        if index != -1:
            line = text.count("\n", 0, index) + 1
            return Problem(path, line, index - (text.rfind("\n", 0, index) + 1) + 1, message)
    return None


@dataclass(slots=True)
class _Row:
    """One record's value as read, where it is, and how to find a field's column in it (a JSON
    line's text, or for a CSV row a function of the value path; only worked out for a problem)."""

    value: Any
    line: int
    end_line: int
    source: str | Callable[[tuple[Any, ...], bool], tuple[int, int]]
    vouched: bool = False  # decoded by the fast road: no escape, no duplicate key, within the limits

    def problem(self, path: str, raw: RawProblem) -> Problem:
        at_key = raw[1] == "key"
        if isinstance(self.source, str):
            line, column = _json_columns(self.source, self.line)(raw[0], at_key)
        else:
            line, column = self.source(raw[0], at_key)
        return Problem(path, line, column, raw[2])


# --- accepting one record's fields ----------------------------------------------------------


def _accepted(value: Any, vouched: bool) -> tuple[dict[str, Any] | None, list[RawProblem]]:
    """A record item's fields by model name (tags normalised), or the problems with it. Unless
    ``vouched``, the value is first checked for what JSON text can hold and the catalog cannot
    (U+0000, control characters in keys, nesting, digits), as the YAML reader checks it."""
    if not isinstance(value, dict):
        return None, [((), "node", f"a record must be a JSON object, got {describe(value)}")]
    if not vouched:
        walked: list[RawProblem] = [(path, "key" if at_key else "node", message) for path, at_key, message
                                    in value_problems(value, escapes=True)]
        if walked:
            return None, walked
    fast = _plain(value)
    if fast is not None:
        return fast, []
    try:
        item = _ITEM.validate_python(value, by_alias=True, by_name=False, context=TRUSTED_JSON)
    except ValidationError as error:
        return None, [raw for detail in error.errors(include_url=False) for raw in translate(detail, RecordItem)]
    return {name: getattr(item, name) for name in item.model_fields_set}, []


_FIELDS: Final = frozenset(_FIELD_NAMES)
_ABSENT: Final = object()


def _plain(value: Any) -> dict[str, Any] | None:
    """The fields of a record the model would accept unchanged (ASCII text within its limits,
    booleans, tags already trimmed), without the model; None when the model must decide.

    Straight-line on purpose: this runs once a line, and is most of a data file's load time."""
    if type(value) is not dict or not value.keys() <= _FIELDS:
        return None
    key = value.get("key")
    if type(key) is not str or not 0 < len(key) <= _KEY_LENGTH[1] or not key.isascii() or not key.isprintable():
        return None
    owner = value.get("owner", _ABSENT)
    if owner is not _ABSENT and (type(owner) is not str or not 0 < len(owner) <= _OWNER_LENGTH[1]
                                 or not owner.isascii()):
        return None
    schema_hash = value.get("schemaHash", _ABSENT)
    if schema_hash is not _ABSENT and (type(schema_hash) is not str or not _HASH_LENGTH[0] <= len(schema_hash)
                                       <= _HASH_LENGTH[1] or not schema_hash.isascii()):
        return None
    tags = value.get("tags", _ABSENT)
    if tags is not _ABSENT:
        if type(tags) is not list or len(tags) > MAX_TAGS:
            return None
        for tag in tags:
            # Python strips every character JavaScript's trim does (and more): a stripped ASCII tag is trimmed.
            if type(tag) is not str or not 0 < len(tag) <= MAX_TAG_LENGTH or not tag.isascii() or tag.strip() != tag:
                return None
    metadata = value.get("metadata", _ABSENT)
    if metadata is not _ABSENT and (type(metadata) is not dict or (
            "datasetSlug" in metadata and not _plain_slug(metadata["datasetSlug"]))):
        return None
    for name in _BOOLEANS:
        if type(value.get(name, False)) is not bool:
            return None
    return _normalised(value)


# The plain roads' bounds on a text field's length (the model's own limits are wider or equal).
_KEY_LENGTH: Final = (1, 256)
_OWNER_LENGTH: Final = (1, 256)
_HASH_LENGTH: Final = (6, 256)


def _normalised(value: dict[str, Any]) -> dict[str, Any]:
    """A plain record value's fields as the model holds them: by model name, tags de-duplicated."""
    out = value.copy()
    if "schemaHash" in out:
        out["schema_hash"] = out.pop("schemaHash")
    if "tags" in out:
        out["tags"] = tuple(dict.fromkeys(out["tags"]))
    return out


_SLUG: Final = re.compile(r"[A-Za-z0-9._-]{3,120}")


def _plain_slug(slug: Any) -> bool:
    return type(slug) is str and _SLUG.fullmatch(slug) is not None


# --- the bulk road: a whole JSON Lines file of plain lines, checked a column at a time --------


def _bulk(recordset: RecordSet, path: str, data: bytes) -> RecordRows | None:
    """The file's records when every line is plain, as ``_fast_json`` and ``_plain`` would find
    each one, checked over the whole file at once; None when any line is not (or the file is
    empty, or has a blank line): the line-by-line road then decides, and says where."""
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    if b"\r\n" in data:
        data = data.replace(b"\r\n", b"\n")
    body = data[:-1] if data.endswith(b"\n") else data
    if not body or b"\\" in body or b"\r" in body or b"\x00" in body or _too_deep(body):
        return None
    lines = body.split(b"\n")
    try:
        values = list(map(orjson.loads, lines))  # a blank line is no JSON: the line road skips it
    except orjson.JSONDecodeError:
        return None
    # A line that serialises back to its own bytes repeats no key (and has no space, no number
    # written otherwise). Compared one line at a time, so that no copy of the file is made.
    if not all(map(eq, map(orjson.dumps, values), lines)):
        return None
    return RecordRows(path, recordset.namespace, _defaults(recordset), values) if _all_plain(values) else None


# Everything but what opens a level of nesting, and line breaks.
_NOT_OPENING: Final = bytes(byte for byte in range(256) if byte not in b"{[\n")
_DEEP: Final = re.compile(rb"[^\n]{%d}" % (MAX_JSON_DEPTH + 1))


def _too_deep(body: bytes) -> bool:
    """Whether a line opens more objects and arrays than the deepest nesting allowed (so it might
    nest too deep: the line road says)."""
    return _DEEP.search(body.translate(None, _NOT_OPENING)) is not None


def _column(values: list[dict[str, Any]], name: str) -> list[Any]:
    """The values of field ``name``, of the records that give it."""
    try:
        return list(map(itemgetter(name), values))
    except KeyError:
        return [value[name] for value in values if name in value]


def _all_plain(values: list[Any]) -> bool:
    """``_plain`` of every value is not None: the same checks, a field at a time over all values.
    Text here is JSON without escapes, so it holds no character below U+0020 (JSON refuses them
    raw): of an ASCII text, the only character ``str.strip`` takes off is then a space."""
    if set(map(type, values)) != {dict}:
        return False
    given = set().union(*values)
    if "key" not in given or not given <= _FIELDS:
        return False
    field = {name: _column(values, name) for name in given}
    keys = field["key"]
    if len(keys) != len(values) or not _texts(keys, _KEY_LENGTH) or not "".join(keys).isprintable():
        return False
    if not _texts(field.get("owner", []), _OWNER_LENGTH) or not _texts(field.get("schemaHash", []), _HASH_LENGTH):
        return False
    tags = field.get("tags", [])
    if tags and (set(map(type, tags)) != {list} or max(map(len, tags)) > MAX_TAGS):
        return False
    every_tag = list(chain.from_iterable(tags))
    if not _texts(every_tag, (1, MAX_TAG_LENGTH)):
        return False
    joined = "\n".join(every_tag)
    if joined.startswith(" ") or joined.endswith(" ") or " \n" in joined or "\n " in joined:
        return False
    metadata = field.get("metadata", [])
    if metadata and set(map(type, metadata)) != {dict}:
        return False
    try:
        slugs = {item["datasetSlug"] for item in metadata if "datasetSlug" in item}  # few distinct, as a rule
    except TypeError:  # a list or an object: not a slug
        return False
    if not all(map(_plain_slug, slugs)):
        return False
    return all(set(map(type, field.get(name, []))) <= {bool} for name in _BOOLEANS)


def _texts(texts: list[Any], bounds: tuple[int, int]) -> bool:
    """Every one of ``texts`` is an ASCII string of a length within ``bounds`` (none: true)."""
    if not texts:
        return True
    try:
        joined = "".join(texts)
    except TypeError:  # not every one is a string
        return False
    return joined.isascii() and bounds[0] <= min(map(len, texts)) and max(map(len, texts)) <= bounds[1]


class RecordRows(Sequence[Declared[Record]]):
    """The records of a data file that took the bulk road, kept as its decoded lines (line N is
    item N - 1); each record's model and location are built the first time any is read, the
    same ones the line road builds. What the loader asks of every file (how many, their
    identities, their links, the lengths the services care about) it answers from the
    lines, so a load that only checks the tree builds no model."""

    KIND: ClassVar[str] = RECORD.name
    __slots__ = ("path", "namespace", "_base", "_values", "_built", "_keys")

    def __init__(self, path: str, namespace: str, base: dict[str, Any], values: list[dict[str, Any]]) -> None:
        self.path, self.namespace, self._base, self._values = path, namespace, base, values
        self._built: tuple[Declared[Record], ...] | None = None
        self._keys: frozenset[str] | None = None

    def __len__(self) -> int:
        return len(self._values)

    @overload
    def __getitem__(self, index: int) -> Declared[Record]: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[Declared[Record]]: ...

    def __getitem__(self, index: int | slice) -> Declared[Record] | Sequence[Declared[Record]]:
        return self.records()[index]

    def __iter__(self) -> Iterator[Declared[Record]]:
        return iter(self.records())

    def records(self) -> tuple[Declared[Record], ...]:
        """Every record, built now if it was not yet."""
        if self._built is None:
            path, namespace, base = self.path, self.namespace, self._base
            with collector_paused():
                self._built = tuple(
                    Declared(construct_record(namespace, _merge(base, _normalised(value))),
                             Location(path, line, 1, line))
                    for line, value in enumerate(self._values, start=1))
        return self._built

    def located(self, index: int) -> tuple[Address, Location]:
        """The address and location of the record of line ``index + 1``, without building it."""
        line = index + 1
        return Address(self.KIND, f"{self.namespace}/{self._values[index]['key']}"), Location(self.path, line, 1, line)

    def keys(self) -> list[str]:
        """Each record's key, in line order."""
        return [value["key"] for value in self._values]

    def declares(self, address: object) -> bool:
        """Whether one of these records is at ``address``."""
        if not isinstance(address, Address) or address.kind != self.KIND:
            return False
        namespace, _, key = address.name.partition("/")
        if namespace != self.namespace:
            return False
        if self._keys is None:
            self._keys = frozenset(self.keys())
        return key in self._keys

    def folded_keys(self, prefix: str) -> tuple[str, list[str]] | None:
        """``folded`` of each record's address, as (what every one starts with, the rest of
        each, in line order), for an address written ``prefix`` + key; None when that cannot
        be told key by key (a namespace that is not ASCII)."""
        if not prefix.isascii():
            return None
        return prefix.lower(), "\n".join(self.keys()).lower().split("\n")  # plain keys hold no line break

    def dataset_slugs(self) -> list[str | None]:
        """The dataset each record links to (its metadata's datasetSlug, defaults merged), in line order."""
        default = dataset_slug_of(self._base.get("metadata") or {})
        return [default if (metadata := value.get("metadata")) is None else dataset_slug_of(metadata, default)
                for value in self._values]

    def longest_key(self) -> int:
        """The length of the longest key (plain keys are ASCII: UTF-16 code units too)."""
        return max(map(len, self.keys()), default=0)


# --- JSON Lines -----------------------------------------------------------------------------


def _jsonl_rows(text: str, path: str) -> Iterator[_Row | Problem]:
    """Each non-blank line's value (blank lines are skipped), or the problem decoding it."""
    for number, line in enumerate(text.split("\n"), start=1):
        if not line or line.isspace():
            continue
        value = _fast_json(line)
        vouched = value is not _SLOW
        if not vouched:
            value, problem = _exact_json(line, path, number)
            if problem is not None:
                yield problem
                continue
        yield _Row(value, number, number, line, vouched)


_SLOW: Final = object()


def _fast_json(line: str) -> Any:
    """The line's value when orjson can vouch for it: it re-serialises to the same bytes (so no
    key was given twice), it holds no escape, and it is too short or too flat to break the
    limits on depth and digits. Else ``_SLOW``."""
    if "\\" in line or len(line) > MAX_INT_DIGITS or line.count("{") + line.count("[") > MAX_JSON_DEPTH:
        return _SLOW
    data = line.encode()
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError:
        return _SLOW
    return value if orjson.dumps(value) == data else _SLOW


class _Duplicate(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return out


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


_DECODER: Final = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant)


def _exact_json(line: str, path: str, number: int) -> tuple[Any, Problem | None]:
    """The line decoded by the standard library, refusing duplicate keys and NaN/Infinity."""
    try:
        return _DECODER.decode(line), None
    except json.JSONDecodeError as error:
        return None, Problem(path, number, error.colno, f"not valid JSON: {error.msg}")
    except _Duplicate as error:
        first = _key_column(line, (error.key,), True) or 1
        column = _key_column(line, (error.key,), True, first) or first
        return None, Problem(path, number, column, f"key {error.key!r} is given twice")
    except ValueError as error:  # NaN or Infinity, or an integer too long to convert
        return None, Problem(path, number, 1, f"not valid JSON: {error}")


def _json_columns(line: str, number: int) -> Callable[[tuple[Any, ...], bool], tuple[int, int]]:
    def columns(value_path: tuple[Any, ...], at_key: bool) -> tuple[int, int]:
        keys = tuple(part for part in value_path if isinstance(part, str))
        return number, (_key_column(line, keys, at_key) or 1) if keys else 1

    return columns


def _key_column(line: str, keys: tuple[str, ...], at_key: bool = False, start: int = 0) -> int | None:
    """The column where the value of the innermost of ``keys`` starts (``at_key``: where that key
    starts), each key looked for after the one before it: enough to point at the field; None
    when a key is not found."""
    found = None
    for key in keys:
        match = re.compile(re.escape(json.dumps(key, ensure_ascii=False)) + r"\s*:\s*").search(line, start)
        if match is None:
            return found
        start, found = match.end(), (match.start() if at_key else match.end()) + 1
    return found


# --- CSV --------------------------------------------------------------------------------------


def _csv_rows(text: str, path: str) -> Iterator[_Row | Problem]:
    """Each data row as a record value (empty cells left out), or the problem with it."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    last = 0
    lines = _Lines(text)
    try:
        for cells in reader:
            first, last = last + 1, reader.line_num
            if not cells or cells == [""]:
                continue
            starts = _Starts(lines, first, len(cells))
            if header is None:
                problems = _header_problems(cells, starts, path)
                yield from problems
                if problems:
                    return
                header = cells
                continue
            if len(cells) != len(header):
                yield Problem(path, first, 1, f"the row has {len(cells)} cells; the header has {len(header)}")
                continue
            yield _csv_row(header, cells, starts, first, last, path)
    except csv.Error as error:
        yield Problem(path, last + 1, 1, f"not valid CSV: {error}")
        return
    if header is None:
        yield Problem(path, 1, 1, f"a CSV records file needs a header row (columns: {', '.join(CSV_COLUMNS)})")


class _Lines:
    """Where each line of a text starts, found once, when a problem first needs it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._starts: list[int] | None = None

    def offset(self, line: int) -> int:
        if self._starts is None:
            self._starts = [0] + [match.end() for match in re.finditer("\n", self.text)]
        return self._starts[line - 1]


class _Starts:
    """(line, column) of each cell of a row, worked out only when asked (``_cell_starts``)."""

    def __init__(self, lines: _Lines, line: int, count: int) -> None:
        self.lines, self.line, self.count = lines, line, count
        self._found: list[tuple[int, int]] | None = None

    def __getitem__(self, index: int) -> tuple[int, int]:
        if self._found is None:
            self._found = _cell_starts(self.lines.text, self.lines.offset(self.line), self.line, self.count)
        return self._found[index]


def _header_problems(cells: list[str], starts: _Starts, path: str) -> list[Problem]:
    problems = []
    for index, name in enumerate(cells):
        line, column = starts[index]
        if name not in CSV_COLUMNS:
            problems.append(Problem(path, line, column, f"unknown column {name!r}; the columns are "
                                    f"{', '.join(CSV_COLUMNS)}"))
        elif cells.index(name) != index:
            problems.append(Problem(path, line, column, f"column {name!r} is given twice"))
    if "key" not in cells:
        problems.append(Problem(path, starts[0][0], 1, "the header has no 'key' column"))
    return problems


def _csv_row(header: list[str], cells: list[str], starts: _Starts, first: int, last: int,
             path: str) -> _Row | Problem:
    value: dict[str, Any] = {}
    for index, (name, cell) in enumerate(zip(header, cells, strict=True)):
        if cell == "":
            continue  # an empty cell sets nothing: the defaults apply
        line, column = starts[index]
        if name == "tags":
            value[name] = cell.split(";")
        elif name in _BOOLEANS:
            if cell not in ("true", "false"):
                return Problem(path, line, column, f"{name}: must be true or false, got {cell!r}")
            value[name] = cell == "true"
        elif name == "metadata":
            try:
                value[name] = _DECODER.decode(cell)
            except json.JSONDecodeError as error:
                return Problem(path, line, column, f"metadata: not valid JSON: {error.msg} "
                                                   f"(at character {error.pos + 1} of the cell)")
            except _Duplicate as error:
                return Problem(path, line, column, f"metadata: key {error.key!r} is given twice")
            except ValueError as error:
                return Problem(path, line, column, f"metadata: not valid JSON: {error}")
        else:
            value[name] = cell
    def columns(value_path: tuple[Any, ...], at_key: bool) -> tuple[int, int]:
        top = value_path[0] if value_path else None
        return starts[header.index(top)] if isinstance(top, str) and top in header else (first, 1)

    return _Row(value, first, last, columns)


def _cell_starts(text: str, offset: int, line: int, count: int) -> list[tuple[int, int]]:
    """(line, column) where each of a row's ``count`` cells starts, the row starting at ``offset``
    (line ``line``): a scan of the row's text that knows quoted cells (which may hold commas and
    line breaks)."""
    starts = [(line, 1)]
    quoted, column, index = False, 1, offset
    while index < len(text) and len(starts) < count:
        char = text[index]
        if char == '"':
            quoted = not quoted
        elif char == "," and not quoted:
            starts.append((line, column + 1))
        elif char == "\n":
            if not quoted:
                break
            line, column = line + 1, 0
        index += 1
        column += 1
    while len(starts) < count:
        starts.append(starts[-1])
    return starts


def declared_from_file(recordset: RecordSet, manifest: str, files: DataFiles
                       ) -> tuple[Sequence[Declared[Record]], list[RawProblem], list[Problem]]:
    """The records of a RecordSet that names ``recordsFile``: (records, problems with the
    reference itself, at the manifest's ``recordsFile`` value; problems in the data file)."""
    assert recordset.records_file is not None
    try:
        path, data = files.read(manifest, recordset.records_file)
    except DataFileError as error:
        return [], [(("recordsFile",), "node", str(error))], []
    loaded = load_records(recordset, path, data)
    return loaded.declared, [], loaded.problems
