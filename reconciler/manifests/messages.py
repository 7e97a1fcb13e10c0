"""Pydantic's validation errors told in a manifest's words: the field path, what is wrong, what was given."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, get_args

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from reconciler.core.model import PATTERN_HELP, describe, format_path

Where = Literal["key", "node", "parent"]
# A problem before it is located: the path of the value it is about (keys and
# indexes from the document's root), which part of the YAML to point at (the key
# naming that value, the value itself, or the mapping the value is missing from),
# and the message.
RawProblem = tuple[tuple[Any, ...], Where, str]


def at(path: tuple[Any, ...], message: str) -> str:
    """``message`` prefixed with the field it is about."""
    return f"{format_path(path)}: {message}" if path else message


def _length(error: ErrorDetails) -> int:
    value = error.get("input")
    return len(value) if isinstance(value, str | list | tuple | dict) else 0


_WHAT: Final[Mapping[str, Callable[[ErrorDetails, Mapping[str, Any]], str]]] = {
    "string_type": lambda e, c: f"must be a string, got {describe(e.get('input'))}",
    "bool_type": lambda e, c: f"must be true or false, got {describe(e.get('input'))}",
    "int_type": lambda e, c: f"must be a whole number, got {describe(e.get('input'))}",
    "int_from_float": lambda e, c: f"must be a whole number, got {describe(e.get('input'))}",
    "greater_than": lambda e, c: f"must be greater than {c['gt']}, got {describe(e.get('input'))}",
    "greater_than_equal": lambda e, c: f"must be at least {c['ge']}, got {describe(e.get('input'))}",
    "string_too_short": lambda e, c: (
        "must not be empty"
        if c["min_length"] == 1
        else f"must be at least {c['min_length']} characters, got {_length(e)}"
    ),
    "string_too_long": lambda e, c: f"must be at most {c['max_length']} characters, got {_length(e)}",
    "string_pattern_mismatch": lambda e, c: (
        "must contain "
        + PATTERN_HELP.get(c["pattern"], f"text matching {c['pattern']}")
        + f", got {describe(e.get('input'))}"
    ),
    "literal_error": lambda e, c: f"must be {c['expected']}, got {describe(e.get('input'))}",
    "dict_type": lambda e, c: f"must be a mapping, got {describe(e.get('input'))}",
    "model_type": lambda e, c: f"must be a mapping, got {describe(e.get('input'))}",
    "model_attributes_type": lambda e, c: f"must be a mapping, got {describe(e.get('input'))}",
    "list_type": lambda e, c: f"must be a list, got {describe(e.get('input'))}",
    "tuple_type": lambda e, c: f"must be a list, got {describe(e.get('input'))}",
    "too_long": lambda e, c: f"must have at most {c['max_length']} items, got {c.get('actual_length')}",
    "too_short": lambda e, c: f"must have at least {c['min_length']} items, got {c.get('actual_length')}",
}


def translate(error: ErrorDetails, model: type[BaseModel]) -> list[RawProblem]:
    """One pydantic error on a document validated as ``model``, as raw problems."""
    loc = tuple(error["loc"])
    kind = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    if kind == "reconciler":
        raw: list[RawProblem] = []
        for subpath, text, at_key in ctx["problems"]:
            path = (*loc, *subpath)
            raw.append((path, "key", at(path[:-1], text)) if at_key else (path, "node", at(path, text)))
        return raw
    if kind == "missing":
        return [(loc[:-1], "parent", at(loc[:-1], f"missing required field '{loc[-1]}'"))]
    if kind == "extra_forbidden":
        message = f"unknown field '{loc[-1]}'" + _suggestion(model, loc)
        return [(loc, "key", at(loc[:-1], message))]
    what = _WHAT.get(kind)
    message = what(error, ctx) if what else error["msg"][:1].lower() + error["msg"][1:]
    return [(loc, "node", at(loc, message))]


def _suggestion(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    owner = _model_at(model, loc[:-1])
    if owner is None or not isinstance(loc[-1], str):
        return ""
    names = [info.alias or name for name, info in owner.model_fields.items()]
    close = difflib.get_close_matches(loc[-1], names, n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


def _model_at(model: type[BaseModel], path: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that validates the mapping at ``path`` inside ``model``."""
    current = model
    for part in path:
        if isinstance(part, int):
            continue  # an index into a list: its item model was taken with the field
        field = next(
            (info for name, info in current.model_fields.items() if (info.alias or name) == part),
            None,
        )
        inner = _inner_model(field.annotation) if field is not None else None
        if inner is None:
            return None
        current = inner
    return current


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    pending = [annotation]
    while pending:
        candidate = pending.pop()
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        pending.extend(get_args(candidate))
    return None
