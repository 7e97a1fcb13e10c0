"""Records kept in a RecordSet's data file (JSON Lines or CSV): reading each line and validating it.

A RecordSet with ``recordsFile:`` takes its records from a file beside the manifest.
Each line of a ``.jsonl`` file (each row of a ``.csv`` file) is one item of ``records:``
and goes through the same validation; a problem is reported at the data file's line
and column. The RecordSet's ``defaults`` apply as they do to ``records:``.

Loading is the bulk path, so a line takes a fast road when it can: orjson decodes it,
and a line that serialises back to exactly its own bytes holds no duplicate key; its
fields are accepted by plain checks that admit only values the model would accept
unchanged. Anything else (escapes, non-ASCII text, nulls, an unknown field, an error)
is decided by the standard library's decoder and the pydantic model, which say what
is wrong and where. Where the file is, and whether it may be read, is datapaths.py's.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson
from pydantic import TypeAdapter, ValidationError

from reconciler.core.model import (
    MAX_INT_DIGITS,
    MAX_JSON_DEPTH,
    MAX_TAG_LENGTH,
    MAX_TAGS,
    TRUSTED_JSON,
    describe,
)
from reconciler.core.kinds.record import Record, RecordItem, RecordSet, construct_record
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
    declared: list[Declared[Record]]
    problems: list[Problem]


def load_records(recordset: RecordSet, path: str, data: bytes) -> Loaded:
    """The records ``data`` (the file at ``path``) declares for ``recordset``, defaults merged."""
    if len(data) > MAX_FILE_BYTES:
        return Loaded(path, [], [Problem(path, 1, 1, f"file is {len(data):,} bytes; the limit is "
                                         f"{MAX_FILE_BYTES // 2**20} MiB")])
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
    base = {name: getattr(recordset.defaults, name) for name in recordset.defaults.model_fields_set}
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
    if type(key) is not str or not 0 < len(key) <= 256 or not key.isascii() or not key.isprintable():
        return None
    out = value.copy()
    owner = value.get("owner", _ABSENT)
    if owner is not _ABSENT and (type(owner) is not str or not 0 < len(owner) <= 256 or not owner.isascii()):
        return None
    schema_hash = out.pop("schemaHash", _ABSENT)
    if schema_hash is not _ABSENT:
        if type(schema_hash) is not str or not 6 <= len(schema_hash) <= 256 or not schema_hash.isascii():
            return None
        out["schema_hash"] = schema_hash
    tags = value.get("tags", _ABSENT)
    if tags is not _ABSENT:
        if type(tags) is not list or len(tags) > MAX_TAGS:
            return None
        for tag in tags:
            # Python strips every character JavaScript's trim does (and more): a stripped ASCII tag is trimmed.
            if type(tag) is not str or not 0 < len(tag) <= MAX_TAG_LENGTH or not tag.isascii() or tag.strip() != tag:
                return None
        out["tags"] = tuple(dict.fromkeys(tags))
    metadata = value.get("metadata", _ABSENT)
    if metadata is not _ABSENT and (type(metadata) is not dict or (
            "datasetSlug" in metadata and not _plain_slug(metadata["datasetSlug"]))):
        return None
    for name in _BOOLEANS:
        if type(value.get(name, False)) is not bool:
            return None
    return out


_SLUG: Final = re.compile(r"[A-Za-z0-9._-]{3,120}")


def _plain_slug(slug: Any) -> bool:
    return type(slug) is str and _SLUG.fullmatch(slug) is not None


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
                       ) -> tuple[list[Declared[Record]], list[RawProblem], list[Problem]]:
    """The records of a RecordSet that names ``recordsFile``: (records, problems with the
    reference itself, at the manifest's ``recordsFile`` value; problems in the data file)."""
    assert recordset.records_file is not None
    try:
        path, data = files.read(manifest, recordset.records_file)
    except DataFileError as error:
        return [], [(("recordsFile",), "node", str(error))], []
    loaded = load_records(recordset, path, data)
    return loaded.declared, [], loaded.problems
