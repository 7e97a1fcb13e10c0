"""YAML text to documents with positions: a fast path (yaml-rs, line scan) and a precise one (libyaml).

Values always come from yaml-rs, so a document means the same whichever path read
it. The fast path takes the line numbers of documents, top-level keys and
``records`` items from a scan of the lines, which it checks against the parsed
values. Any file the fast path is unsure of (anchors, tags, directives, deep
indentation, an unexpected layout, a value problem to locate) goes through the
precise path: libyaml's event stream, consumed one event at a time, which knows
the exact position of every node, refuses duplicate keys and foreign tags, and
stops at once on alias bombs and absurd nesting.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml
import yaml_rs

from reconciler.errors import Problem
from reconciler.core.model import MAX_INT_DIGITS, MAX_JSON_DEPTH, TOO_MANY_DIGITS, describe, format_path
from reconciler.manifests.layout import DocLayout, Span, scan_layout

MAX_FILE_BYTES: Final = 64 * 1024 * 1024
MAX_DEPTH: Final = MAX_JSON_DEPTH
MAX_ALIAS_NODES: Final = 100_000
_TOO_DEEP: Final = f"nesting deeper than {MAX_DEPTH} levels"

# Characters YAML does not allow raw in a stream (C0/C1 controls other than tab and
# line feed, the line separators YAML 1.1 and 1.2 disagree on, a BOM past the start,
# non-characters). They can still be written as escapes in double-quoted strings.
_FORBIDDEN = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
# Controls a mapping key must not contain once escapes are resolved.
_KEY_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
NUL_MESSAGE: Final = "text must not contain U+0000 (NUL), which the catalog cannot store"
# The fast path leaves to the precise one anything it cannot vouch for: tags,
# anchors and aliases, directives, explicit keys, deep indentation and long runs
# of compact nesting (yaml-rs must never see unbounded nesting: it recurses).
# Each regular expression runs only when a cheap substring test says it may match.
_TAG_OR_ANCHOR = re.compile(r"(?:^|[\s\[\]{},])[!&*]")
_EXPLICIT_KEY = re.compile(r"(?:^|[\s\[{,])\?(?:[ \t]|$)", re.MULTILINE)
_DEEP_INDENT = re.compile(r"^[ \t]{48}", re.MULTILINE)
_COMPACT_PAIR = re.compile(r"[-?][ \t]+[-?][ \t]")
_COMPACT_RUN = re.compile(r"(?:[-?][ \t]+){8}")
_RS_POSITION = re.compile(r"at line (\d+), column (\d+)")

_STANDARD_TAGS: Final = {
    "scalar": {None, "!"} | {f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "bool", "null")},
    "map": {None, "tag:yaml.org,2002:map"},
    "seq": {None, "tag:yaml.org,2002:seq"},
}
_EventParser: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

SCALAR: Final = "scalar"
MAP: Final = "map"
SEQ: Final = "seq"


class Node:
    """A node of the precise path: its kind, position and children (keys and values
    alternate for a mapping). An alias is the anchored node itself."""

    __slots__ = ("children", "column", "end_line", "height", "kind", "line", "size", "text")

    def __init__(self, kind: str, line: int, column: int, text: str | None = None) -> None:
        self.kind = kind
        self.line = line
        self.column = column
        self.end_line = line
        self.children: list[Node] = []
        self.text = text
        self.size = 1
        self.height = 1


@dataclass(slots=True)
class ParsedDocument:
    """One non-empty document: its value, its layout, and its node tree when precise."""

    value: Any
    layout: DocLayout
    node: Node | None = None


@dataclass(slots=True)
class ParsedFile:
    """The documents of one file, or the problems that stopped reading it."""

    path: str
    documents: list[ParsedDocument]
    problems: list[Problem]
    precise: bool


# --- reading a file -----------------------------------------------------------------------


def read_text(file: Path, display: str) -> tuple[str | None, Problem | None]:
    """The file's text, or the problem that prevents reading it (size, encoding)."""
    limit = f"{MAX_FILE_BYTES // 2**20} MiB" if MAX_FILE_BYTES % 2**20 == 0 else f"{MAX_FILE_BYTES:,} bytes"
    try:
        size = file.stat().st_size
        if size <= MAX_FILE_BYTES:
            with file.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)  # it may have grown since
            size = len(data)
        if size > MAX_FILE_BYTES:
            return None, Problem(display, 1, 1, f"file is {size:,} bytes; the limit is {limit}")
    except OSError as error:
        return None, Problem(display, 1, 1, f"cannot read file: {error.strerror or error}")
    return decode_text(data, display)


def decode_text(data: bytes, display: str) -> tuple[str | None, Problem | None]:
    """The bytes of a manifest file as text, or the problem that prevents it (encoding)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # Lines and columns as every other problem counts them: after a BOM, LF and CRLF
        # breaking lines (a CR alone is no line break; the loader refuses it).
        head = data[: error.start].removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
        line = head.count(b"\n") + 1
        column = len(head[head.rfind(b"\n") + 1 :].decode("utf-8", "replace")) + 1
        return None, Problem(
            display,
            line,
            column,
            f"file is not valid UTF-8: byte 0x{data[error.start]:02x} at offset {error.start}",
        )
    return text, None


def parse_text(text: str, path: str, *, precise: bool = False) -> ParsedFile:
    """Parse every document of ``text``; ``path`` is only used in problems."""
    text = _normalize(text)
    problems = _forbidden_characters(text, path)
    if problems:
        return ParsedFile(path, [], problems, precise=False)
    lines = text.split("\n")
    if precise or needs_precise(text):
        return _parse_precise(text, lines, path)
    escapes = _may_escape(text)
    documents: list[ParsedDocument] = []
    for first, last in _document_ranges(text, lines):
        chunk = text if (first, last) == (0, len(lines)) else "\n".join(lines[first:last])
        try:
            value = yaml_rs.loads(chunk, parse_datetime=False)
        except (yaml_rs.YAMLDecodeError, ValueError, TypeError):  # TypeError: a key that is a collection
            return _parse_precise(text, lines, path)
        if value is None:
            continue
        layout = scan_layout(lines, first, last, value) if isinstance(value, dict) else None
        if layout is None or next(value_problems(value, escapes), None) is not None:
            return _parse_precise(text, lines, path)
        documents.append(ParsedDocument(value, layout))
    return ParsedFile(path, documents, [], precise=False)


def needs_precise(text: str) -> bool:
    """Whether ``text`` holds anything the fast path leaves to the precise one."""
    if ("!" in text or "&" in text or "*" in text) and _TAG_OR_ANCHOR.search(text):
        return True
    if text.startswith("%") or "\n%" in text:
        return True
    if "?" in text and _EXPLICIT_KEY.search(text):
        return True
    if text.startswith(" " * 48) or "\n" + " " * 48 in text or ("\t" in text and _DEEP_INDENT.search(text)):
        return True
    maybe_pair = "- -" in text or "- ?" in text or "-  " in text or "-\t" in text or "?" in text
    return maybe_pair and _COMPACT_PAIR.search(text) is not None and _COMPACT_RUN.search(text) is not None


def _may_escape(text: str) -> bool:
    """Whether a key could hold a control character, or a string U+0000: only via an
    escape (or, for a key, a tab)."""
    return "\\" in text or "\t" in text


def _normalize(text: str) -> str:
    """The text without a leading BOM and with CRLF line endings made LF.

    A carriage return alone stays, for ``_forbidden_characters`` to refuse: YAML takes it
    for a line break, git (and so attribution) does not, and the two would count lines apart.
    """
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    return text


def _lone_carriage_return(text: str, path: str) -> Problem | None:
    """The first carriage return not followed by a line feed (after CRLF became LF), if any."""
    index = text.find("\r")
    if index == -1:
        return None
    line, column = _position(text, index)
    count = text.count("\r")
    more = f" ({count:,} in this file)" if count > 1 else ""
    return Problem(path, line, column, f"carriage return (CR) without a line feed{more}; use LF or CRLF "
                   "line endings")


def _forbidden_characters(text: str, path: str) -> list[Problem]:
    lone = _lone_carriage_return(text, path)
    problems = [lone] if lone is not None else []
    for match in _FORBIDDEN.finditer(text):
        line, column = _position(text, match.start())
        char = match.group()
        problems.append(
            Problem(
                path,
                line,
                column,
                f"character U+{ord(char):04X} is not allowed in YAML; "
                "write it as an escape in a double-quoted string",
            )
        )
        if len(problems) == 10:
            break
    return problems


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def _document_ranges(text: str, lines: list[str]) -> list[tuple[int, int]]:
    """Line ranges of the documents: a ``---`` line starts one, a ``...`` line ends one."""
    ranges = []
    start = 0
    for line, marker in _markers(text):
        ranges.append((start, line))
        start = line if marker == "---" else line + 1
    ranges.append((start, len(lines)))
    return [(first, last) for first, last in ranges if last > first]


def _markers(text: str) -> list[tuple[int, str]]:
    """The document marker lines (``---`` or ``...`` at column 1), by line index."""
    positions = []
    for marker in ("---", "..."):
        if text.startswith(marker):
            positions.append(0)
        index = text.find("\n" + marker)
        while index != -1:
            positions.append(index + 1)
            index = text.find("\n" + marker, index + 1)
    found = []
    line = previous = 0
    for position in sorted(positions):
        line += text.count("\n", previous, position)
        previous = position
        if text[position + 3 : position + 4] in ("", " ", "\t", "\n"):
            found.append((line, text[position : position + 3]))
    return found


# --- checks on values ---------------------------------------------------------------------


def value_problems(value: Any, escapes: bool) -> Iterator[tuple[tuple[Any, ...], bool, str]]:
    """What JSON and the catalog cannot hold, as (path, at_key, message): non-string keys,
    non-finite numbers, nesting deeper than MAX_DEPTH, and, when the text may hold escapes
    (``escapes``; a raw control character is refused before parsing), keys with control
    characters and strings holding U+0000, which no PostgreSQL text or jsonb value can store."""
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 1, ())]
    while stack:
        item, depth, path = stack.pop()
        if type(item) is not dict and type(item) is not list:
            continue
        if depth > MAX_DEPTH:
            yield path, False, _TOO_DEEP
            continue
        pairs = item.items() if type(item) is dict else enumerate(item)
        for key, child in pairs:
            if type(item) is dict:
                if type(key) is not str:
                    yield (*path, key), True, f"keys must be strings, got {describe(key)}"
                elif escapes and _KEY_CONTROL.search(key):
                    bad = _KEY_CONTROL.search(key)
                    assert bad is not None
                    yield (
                        (*path, key),
                        True,
                        f"key {key!r} contains the control character U+{ord(bad.group()):04X}",
                    )
            kind = type(child)
            if kind is dict or kind is list:
                stack.append((child, depth + 1, (*path, key)))
            elif kind is float and not math.isfinite(child):
                yield (*path, key), False, f"numbers must be finite, got {describe(child)}"
            elif kind is int and abs(child) >= TOO_MANY_DIGITS:
                yield (*path, key), False, f"numbers must have at most {MAX_INT_DIGITS:,} digits"
            elif escapes and kind is str and "\x00" in child:
                yield (*path, key), False, f"{format_path((*path, key))}: {NUL_MESSAGE}"


# --- the precise path ---------------------------------------------------------------------


class _Stop(Exception):
    """Raised inside the event loop to stop reading a file at once."""


def _parse_precise(text: str, lines: list[str], path: str) -> ParsedFile:
    roots, problems = compose(text, lines, path)
    if problems:
        return ParsedFile(path, [], problems, precise=True)
    try:
        whole = yaml_rs.loads(text, parse_datetime=False)
    except (yaml_rs.YAMLDecodeError, ValueError) as error:
        return ParsedFile(path, [], [_rs_problem(error, path)], precise=True)
    values = whole if len(roots) > 1 else [whole] if roots else []
    if not isinstance(values, list) or len(values) != len(roots):
        problem = Problem(path, 1, 1, "the YAML parsers disagree on the number of documents")
        return ParsedFile(path, [], [problem], precise=True)
    escapes = _may_escape(text)
    documents = []
    for root, value in zip(roots, values, strict=True):
        if value is None:
            continue
        for value_path, at_key, message in value_problems(value, escapes):
            node, key = locate(root, value, value_path)
            where = key if at_key and key is not None else node
            problems.append(Problem(path, where.line, where.column, message))
        documents.append(ParsedDocument(value, layout_of(root), root))
    return ParsedFile(path, documents, problems, precise=True)


def _rs_problem(error: Exception, path: str) -> Problem:
    message = str(error)
    match = _RS_POSITION.search(message)
    line, column = (int(match.group(1)), int(match.group(2))) if match else (1, 1)
    detail = [part for part in message.splitlines() if part.strip()]
    return Problem(path, line, column, f"YAML error: {detail[-1] if detail else message}")


def compose(text: str, lines: list[str], path: str) -> tuple[list[Node], list[Problem]]:
    """Every document's node tree, read event by event (never recursively)."""
    composer = _Composer(lines, path)
    parser = _EventParser(text)
    try:
        while True:
            event = parser.get_event()
            if isinstance(event, yaml.StreamEndEvent):
                break
            composer.feed(event)
    except _Stop:
        pass
    except yaml.MarkedYAMLError as error:
        composer.problems.append(_too_deep(text, lines, path, error) or _syntax_problem(error, path, lines))
    except yaml.YAMLError as error:
        composer.problems.append(Problem(path, 1, 1, f"YAML error: {error}"))
    finally:
        parser.dispose()
    return composer.documents, composer.problems


def _too_deep(text: str, lines: list[str], path: str, error: yaml.MarkedYAMLError) -> Problem | None:
    """Our nesting problem, at the level past MAX_DEPTH, when libyaml stopped at a limit of its own.

    libyaml (bundled with PyYAML from 6.0.3) refuses nesting past a limit of its own
    (1,000 levels) while it scans ahead, which in flow style (``[[[[...``) it does before
    handing over the first events: this reader never sees the level at which it would
    stop. The text before the place libyaml stopped nests no deeper than its limit, so it
    is read again, and its events reach the level past MAX_DEPTH.
    """
    mark = error.problem_mark
    if mark is None or "nesting depth" not in (error.problem or "") or mark.line >= len(lines):
        return None
    cut = sum(len(line) + 1 for line in lines[: mark.line]) + mark.column
    if not 0 < cut < len(text):
        return None
    _, problems = compose(text[:cut], lines, path)
    deep = [problem for problem in problems if problem.message == _TOO_DEEP]
    if deep:
        return deep[0]
    line, column = _in_text(mark, lines)
    return Problem(path, line, column, _TOO_DEEP)


def _syntax_problem(error: yaml.MarkedYAMLError, path: str, lines: list[str]) -> Problem:
    mark = error.problem_mark or error.context_mark
    line, column = _in_text(mark, lines) if mark else (1, 1)
    message = f"YAML syntax error: {error.problem or error.context}"
    context = error.context_mark
    if error.problem and error.context and context is not None:
        context_line, context_column = _in_text(context, lines)
        message += f" ({error.context} at line {context_line}, column {context_column})"
    return Problem(path, line, column, message)


def _in_text(mark: Any, lines: list[str]) -> tuple[int, int]:
    """A mark as 1-based line and column; libyaml's end of a file without a final line
    break is a line past it, shown as the end of the last line."""
    if mark.line >= len(lines):
        return len(lines), len(lines[-1]) + 1
    return mark.line + 1, mark.column + 1


class _Composer:
    """Builds node trees from events, checking keys, tags, aliases and depth as it goes."""

    def __init__(self, lines: list[str], path: str) -> None:
        self.lines = lines
        self.path = path
        self.documents: list[Node] = []
        self.problems: list[Problem] = []
        self.stack: list[Node] = []
        self.keys: list[dict[str, Node]] = []
        self.anchors: dict[str, Node] = {}
        self.expanded = 0
        self.root: Node | None = None

    def feed(self, event: Any) -> None:
        kind = type(event)
        if kind is yaml.ScalarEvent:
            self._scalar(event)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            self._start(event, MAP if kind is yaml.MappingStartEvent else SEQ)
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            self._end(event)
        elif kind is yaml.AliasEvent:
            self._alias(event)
        elif kind is yaml.DocumentStartEvent:
            self.anchors = {}
            self.root = None
        elif kind is yaml.DocumentEndEvent and self.root is not None:
            self.documents.append(self.root)

    def _fail(self, line: int, column: int, message: str, *, stop: bool = False) -> None:
        self.problems.append(Problem(self.path, line, column, message))
        if stop:
            raise _Stop

    def _scalar(self, event: Any) -> None:
        mark = event.start_mark
        node = Node(SCALAR, mark.line + 1, mark.column + 1, event.value)
        self._check_tag(event.tag, SCALAR, node)
        if event.value == "" and event.style is None and self._expects_value():
            key = self.stack[-1].children[-1]
            node.line, node.column, node.end_line = key.line, key.column, key.end_line
        else:
            end = event.end_mark
            end_line = end.line + 1 if end.column > 0 else end.line
            if event.style in ("|", ">"):
                while end_line > node.line and not self.lines[end_line - 1].strip():
                    end_line -= 1
            node.end_line = max(node.line, end_line)
        self._remember(event.anchor, node)
        self._attach(node)

    def _start(self, event: Any, kind: str) -> None:
        mark = event.start_mark
        if len(self.stack) >= MAX_DEPTH:
            self._fail(mark.line + 1, mark.column + 1, _TOO_DEEP, stop=True)
        node = Node(kind, mark.line + 1, mark.column + 1)
        node.text = event.anchor  # remembered when the collection ends
        node.end_line = -1 if event.flow_style else 0
        self._check_tag(event.tag, kind, node)
        self.stack.append(node)
        self.keys.append({})

    def _end(self, event: Any) -> None:
        node = self.stack.pop()
        self.keys.pop()
        children = node.children
        if node.end_line == -1:  # flow: ends at its closing bracket
            node.end_line = event.end_mark.line + 1
        else:
            node.end_line = max([node.line, *(child.end_line for child in children)])
        node.size = 1 + sum(child.size for child in children)
        node.height = 1 + max((child.height for child in children), default=0)
        anchor, node.text = node.text, None
        self._remember(anchor, node)
        self._attach(node)

    def _alias(self, event: Any) -> None:
        mark = event.start_mark
        target = self.anchors.get(event.anchor)
        if target is None:
            self._fail(
                mark.line + 1,
                mark.column + 1,
                f"alias *{event.anchor} has no anchor &{event.anchor} before it",
                stop=True,
            )
            return
        self.expanded += target.size
        if self.expanded > MAX_ALIAS_NODES:
            self._fail(
                mark.line + 1,
                mark.column + 1,
                f"aliases expand to more than {MAX_ALIAS_NODES:,} nodes",
                stop=True,
            )
        if len(self.stack) + target.height > MAX_DEPTH:
            self._fail(mark.line + 1, mark.column + 1, _TOO_DEEP, stop=True)
        self._attach(target, (mark.line + 1, mark.column + 1))

    def _check_tag(self, tag: str | None, kind: str, node: Node) -> None:
        if tag in _STANDARD_TAGS[kind]:
            return
        shown = (
            "!!" + tag[len("tag:yaml.org,2002:") :] if tag and tag.startswith("tag:yaml.org,2002:") else tag
        )
        self._fail(
            node.line,
            node.column,
            f"tag {shown} is not allowed here; only !!str, !!int, !!float, !!bool and !!null "
            "on scalars, !!map on mappings and !!seq on sequences",
        )

    def _remember(self, anchor: str | None, node: Node) -> None:
        if anchor is not None:
            self.anchors[anchor] = node

    def _expects_value(self) -> bool:
        return bool(self.stack) and self.stack[-1].kind == MAP and len(self.stack[-1].children) % 2 == 1

    def _attach(self, node: Node, alias: tuple[int, int] | None = None) -> None:
        """Add ``node`` to the collection being built (``alias``: where an alias of it is)."""
        if not self.stack:
            self.root = node
            return
        parent = self.stack[-1]
        is_key = parent.kind == MAP and len(parent.children) % 2 == 0
        if is_key and node.kind != SCALAR:  # yaml-rs cannot build such a mapping
            what = "a mapping" if node.kind == MAP else "a list"
            self._fail(*(alias or (node.line, node.column)), f"keys must be strings, got {what}")
        parent.children.append(node)
        if is_key and node.kind == SCALAR and node.text is not None:
            seen = self.keys[-1]
            first = seen.get(node.text)
            if first is not None:
                self._fail(
                    node.line, node.column, f"duplicate key {node.text!r} (first at line {first.line})"
                )
            else:
                seen[node.text] = node


# --- positions from nodes -----------------------------------------------------------------


def locate(root: Node, value: Any, path: tuple[Any, ...]) -> tuple[Node, Node | None]:
    """The node at ``path`` (keys and indexes into ``value``), or the deepest one that
    exists, and the key node naming it when it is a mapping value."""
    node, key_node = root, None
    for part in path:
        if node.kind == MAP and isinstance(value, dict):
            index = next((i for i, key in enumerate(value) if key == part and type(key) is type(part)), None)
            if index is None or 2 * index + 1 >= len(node.children):
                break
            key_node, node, value = node.children[2 * index], node.children[2 * index + 1], value[part]
        elif (
            node.kind == SEQ
            and isinstance(value, list)
            and isinstance(part, int)
            and 0 <= part < len(node.children)
        ):
            key_node, node, value = None, node.children[part], value[part]
        else:
            break
    return node, key_node


def layout_of(root: Node) -> DocLayout:
    """The layout of a document read by the precise path."""
    keys: dict[str, Span] = {}
    items: tuple[Span, ...] = ()
    if root.kind == MAP:
        children = root.children
        for index in range(0, len(children) - 1, 2):
            key, value = children[index], children[index + 1]
            if key.kind != SCALAR or key.text is None:
                continue
            keys.setdefault(key.text, Span(key.line, key.column, max(key.end_line, value.end_line)))
            if key.text == "records" and value.kind == SEQ:
                items = tuple(Span(item.line, item.column, item.end_line) for item in value.children)
    return DocLayout(Span(root.line, root.column, root.end_line), keys, items)
