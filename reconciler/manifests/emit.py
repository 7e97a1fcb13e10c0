"""Writes manifest documents as block-style YAML that reads back to the same values."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from pydantic import BaseModel

# A string is written plain only when no YAML reader could take it for anything
# else: it starts with a letter, holds no indicator, and is no keyword.
_PLAIN = re.compile(r"^[A-Za-z](?:[A-Za-z0-9_./ -]*[A-Za-z0-9_./-])?$")
_KEYWORDS: Final = frozenset(["true", "false", "yes", "no", "on", "off", "y", "n", "null", "nan", "inf"])
# Characters a reader refuses raw; inside a double-quoted string they become escapes.
_ESCAPE = re.compile("[\x7f-\x9f\u2028\u2029\ufeff\ufffe\uffff]")
_FIRST_FIELDS: Final = ("apiVersion", "kind")


def to_document(model: BaseModel) -> dict[str, Any]:
    """A manifest model as the document that declares it: camelCase keys,
    ``apiVersion`` and ``kind`` first, fields left at their default omitted."""
    data = model.model_dump(mode="json", by_alias=True, exclude_defaults=True)
    head = {key: getattr(model, name) for key, name in (("apiVersion", "api_version"), ("kind", "kind"))}
    return {**head, **{key: value for key, value in data.items() if key not in _FIRST_FIELDS}}


def dump_documents(documents: Iterable[Mapping[str, Any]], *, header: str = "") -> str:
    """YAML text of ``documents`` separated by ``---``, after an optional comment ``header``."""
    parts = ["".join(_lines(document, 0)) for document in documents]
    prefix = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return prefix + "---\n".join(parts)


def scalar(value: Any) -> str:
    """One scalar in a form every YAML 1.2 reader takes back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"cannot write the non-finite number {value!r}")
        text = repr(value)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(value, str):
        if _PLAIN.fullmatch(value) and value.lower() not in _KEYWORDS:
            return value
        quoted = json.dumps(value, ensure_ascii=False)
        return _ESCAPE.sub(lambda match: f"\\u{ord(match.group()):04x}", quoted)
    raise TypeError(f"cannot write a {type(value).__name__} as YAML")


def _lines(value: Mapping[str, Any] | Sequence[Any], indent: int) -> Iterable[str]:
    pad = " " * indent
    if isinstance(value, Mapping):
        for key, child in value.items():
            yield from _entry(f"{pad}{scalar(key)}:", child, indent + 2)
    else:
        for child in value:
            if isinstance(child, Mapping) and child:
                # "- " then the mapping's first key on the same line.
                nested = list(_lines(child, indent + 2))
                yield f"{pad}- {nested[0][indent + 2 :]}"
                yield from nested[1:]
            else:
                yield from _entry(f"{pad}-", child, indent + 2)


def _entry(lead: str, value: Any, indent: int) -> Iterable[str]:
    if isinstance(value, Mapping | list | tuple) and value:
        yield lead + "\n"
        yield from _lines(value, indent)
    elif isinstance(value, Mapping):
        yield lead + " {}\n"
    elif isinstance(value, list | tuple):
        yield lead + " []\n"
    else:
        yield f"{lead} {scalar(value)}\n"
