"""Where a document's objects are: line spans found by scanning lines, checked against the parsed value.

In block style, the keys of a document's top-level mapping are exactly its lines
that start at column 1 (other than comments and document markers), and the items
of its ``records`` sequence are exactly the lines that start with ``-`` at the
sequence's indentation: YAML requires everything else inside them to be indented
further, block scalars included. The scan relies on nothing more, and gives up
(returns None, so the caller takes the precise path) whenever the lines do not
look like that or do not match the keys and the number of records parsed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_KEY = re.compile(
    r"""(?:(?P<plain>[^\s#"'\-?:,\[\]{}&*!|>%@`][^:#]*?)|"(?P<dq>[^"\\]*)"|'(?P<sq>[^']*)')"""
    r"[ \t]*:(?:[ \t]|$)"
)
_BLOCK_SCALAR_HEADER = re.compile(r"(?:^|[ \t])[|>][-+1-9]{0,2}[ \t]*(?:#.*)?$")


@dataclass(frozen=True, slots=True)
class Span:
    """Lines ``line``..``end_line`` (1-based, inclusive); ``column`` where the node starts."""

    line: int
    column: int
    end_line: int


@dataclass(frozen=True, slots=True)
class DocLayout:
    """A document's span, the spans of its top-level keys (key line to end of value),
    and the spans of the items of its top-level ``records`` sequence."""

    span: Span
    keys: Mapping[str, Span]
    items: tuple[Span, ...]


class _Unsure(Exception):
    """The lines do not have the shape the scan relies on."""


def scan_layout(lines: list[str], first: int, last: int, value: dict[str, Any]) -> DocLayout | None:
    """The layout of the document in ``lines[first:last]`` whose parsed value is ``value``,
    or None when the scan cannot be sure of it."""
    try:
        top, dashes = _top_level(lines, first, last)
        if not top or [key for _, key, _ in top] != list(value):
            return None
        keys: dict[str, Span] = {}
        items: tuple[Span, ...] = ()
        for index, (line, key, rest) in enumerate(top):
            stop = top[index + 1][0] if index + 1 < len(top) else last
            keys[key] = Span(line + 1, 1, _end(lines, line, stop) + 1)
            if key == "records":
                items = _records(lines, line, stop, rest, value["records"], dashes)
            elif any(line < dash < stop for dash in dashes):
                raise _Unsure
        end = _end(lines, top[0][0], last)
        return DocLayout(Span(top[0][0] + 1, 1, end + 1), keys, items)
    except _Unsure:
        return None


def _top_level(lines: list[str], first: int, last: int) -> tuple[list[tuple[int, str, str]], list[int]]:
    """The top-level key lines (index, key, text after the colon) and the lines at
    column 1 that start with ``-``."""
    top: list[tuple[int, str, str]] = []
    dashes: list[int] = []
    skip = ("", " ", "\t", "#")
    for index in [i for i in range(first, last) if lines[i][:1] not in skip]:
        text = lines[index]
        if text[0] == "-" and text[1:2] in ("", " ", "\t"):
            dashes.append(index)
            continue
        if text.startswith("---") and text[3:4] in ("", " ", "\t"):
            if _has_content(text[3:]):
                raise _Unsure
            continue
        match = _KEY.match(text)
        if match is None:
            raise _Unsure
        key = match.group("plain")
        if key is None:
            key = match.group("dq") if match.group("dq") is not None else match.group("sq")
        top.append((index, key, text[match.end() :]))
    return top, dashes


def _records(
    lines: list[str], line: int, stop: int, rest: str, records: Any, dashes: list[int]
) -> tuple[Span, ...]:
    """The spans of the items of the block sequence under the ``records:`` key."""
    if not isinstance(records, list):
        return ()
    if _has_content(rest):
        if rest.split("#", 1)[0].strip() == "[]" and not records:
            return ()
        raise _Unsure
    start = _next_content(lines, line + 1, stop)
    if start is None:
        raise _Unsure
    text = lines[start]
    indent = len(text) - len(text.lstrip(" "))
    if text[indent : indent + 1] != "-" or text[indent + 1 : indent + 2] not in ("", " ", "\t"):
        raise _Unsure
    if indent == 0:
        starts = [dash for dash in dashes if line < dash < stop]
    else:
        starts = _item_lines(lines, line + 1, stop, indent)
        if any(line < dash < stop for dash in dashes):
            raise _Unsure
    if len(starts) != len(records):
        raise _Unsure
    spans = []
    for index, begin in enumerate(starts):
        end = _end(lines, begin, starts[index + 1] if index + 1 < len(starts) else stop)
        spans.append(_item_span(lines, begin, end, indent))
    return tuple(spans)


def _item_lines(lines: list[str], first: int, stop: int, indent: int) -> list[int]:
    """Lines that start with ``-`` at ``indent``: the items of the sequence. Nothing
    else can start a line there, and the caller checks the count against the value."""
    prefix = " " * indent + "-"
    after = indent + 1
    return [
        index
        for index in range(first, stop)
        if lines[index].startswith(prefix) and lines[index][after : after + 1] in ("", " ", "\t")
    ]


def _item_span(lines: list[str], begin: int, end: int, indent: int) -> Span:
    """Where an item's node starts: after ``- `` on its line, or on the next content line."""
    text = lines[begin]
    column = indent + 1
    while column < len(text) and text[column] in " \t":
        column += 1
    if column < len(text) and text[column] != "#":
        return Span(begin + 1, column + 1, end + 1)
    following = _next_content(lines, begin + 1, end + 1)
    if following is None:
        return Span(begin + 1, indent + 1, end + 1)
    text = lines[following]
    return Span(following + 1, len(text) - len(text.lstrip(" \t")) + 1, end + 1)


def _has_content(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and not stripped.startswith("#")


def _next_content(lines: list[str], first: int, stop: int) -> int | None:
    for index in range(first, stop):
        if _has_content(lines[index]):
            return index
    return None


def last_content(lines: list[str], first: int, stop: int) -> tuple[int, list[str]]:
    """The last line in ``[first, stop)`` with content (not blank, not a comment; the
    line ``first`` if none) and the comment lines skipped to find it."""
    skipped: list[str] = []
    for index in range(stop - 1, first, -1):
        stripped = lines[index].strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            skipped.append(stripped)
            continue
        return index, skipped
    return first, skipped


def _end(lines: list[str], first: int, stop: int) -> int:
    """The last content line of the node starting at ``first``. A skipped ``#`` line
    could be the end of a block scalar or of a multi-line quoted string (then it
    holds the closing quote); only the precise path can tell."""
    end, skipped = last_content(lines, first, stop)
    if skipped and (
        any("'" in text or '"' in text for text in skipped)
        or any(_BLOCK_SCALAR_HEADER.search(lines[i]) for i in range(first, end + 1))
    ):
        raise _Unsure
    return end
