"""Text from the catalog, manifests or git made safe to print: one escaping rule for every printer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Final

# What a terminal or a log reader acts on instead of showing: C0 controls (line feed
# and carriage return included, so one value cannot start a line of its own), DEL, C1
# controls, the Unicode line and paragraph separators, and the bidirectional
# overrides and isolates that make text read in another order than it is stored.
_UNSAFE: Final = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
# The same without the line feed: for a message whose lines the program itself composed.
_UNSAFE_IN_LINES: Final = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def clean(value: Any) -> str:
    """``value`` as one printable line: every control character written as an escape
    (``\\x1b``, ``\\x0a``, ``\\u2028``), so catalog or manifest text cannot move the
    cursor, recolour the terminal, or forge a line of output."""
    text = str(value)
    return _UNSAFE.sub(_escape, text) if _UNSAFE.search(text) else text


def clean_lines(text: str) -> str:
    """A message of several lines with every control character but the line feed escaped.

    For the last step before printing a message the program composed line by line
    (each quoted value already passed through ``clean``): its own line breaks stay.
    """
    return _UNSAFE_IN_LINES.sub(_escape, text) if _UNSAFE_IN_LINES.search(text) else text


def either(words: Sequence[str]) -> str:
    """``a, b or c``: the words as a list of choices in a sentence."""
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"
