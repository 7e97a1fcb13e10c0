"""The platform services' own rules for the values they store: how JavaScript measures and trims text, and how tags, scopes and dataset metadata are normalised.

The timestore and the metastore are TypeScript services: their request schemas
(zod) count a string's length in UTF-16 code units, as JavaScript's ``length``
does, and they trim with ``String.prototype.trim``. The manifest models, the diff,
apply's writer and the repository layer all go through this one module, so that
whatever the reconciler accepts and stores, the services accept back.
docs/architecture.md ("Sharing the catalog with the services") names the service
code each rule comes from.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any, Final

# The metastore's HTTP router (Fastify's default maxParamLength) refuses a path segment
# longer than this, counted after URL decoding in UTF-16 code units: a record whose
# namespace or key is longer can be stored but never read, updated or deleted by key
# through /records/:namespace/:key.
METASTORE_MAX_PATH_SEGMENT: Final = 100

# What String.prototype.trim removes: ECMAScript's WhiteSpace and LineTerminator.
# Python's str.strip differs (it also strips U+001C..U+001F and U+0085, and keeps U+FEFF).
_JS_WHITESPACE: Final = (
    "\t\n\v\f\r \u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a"
    "\u2028\u2029\u202f\u205f\u3000\ufeff"
)

IAM_KEYS: Final = ("readScopes", "writeScopes")


def utf16_length(text: str) -> int:
    """``text.length`` in JavaScript: UTF-16 code units, so a character outside the Basic
    Multilingual Plane (an emoji, say) counts as 2."""
    if text.isascii():
        return len(text)
    return len(text) + sum(1 for char in text if ord(char) > 0xFFFF)


def js_trim(text: str) -> str:
    """``text.trim()`` in JavaScript."""
    return text.strip(_JS_WHITESPACE)


def normalize_tags(tags: Iterable[str] | None) -> list[str]:
    """Record tags as the metastore stores them: trimmed, blank ones dropped,
    de-duplicated with the first occurrence kept in place.

    The diff compares and the writers write through this one function, so a tag list
    given through the Python API never shows a perpetual diff.
    """
    seen: dict[str, None] = {}
    for tag in tags or ():
        trimmed = js_trim(tag)
        if trimmed:
            seen.setdefault(trimmed, None)
    return list(seen)


def dedupe_scopes(scopes: Iterable[Any]) -> list[str]:
    """An IAM scope list as the timestore stores it: strings trimmed, blank ones dropped,
    repeats dropped (first occurrence kept)."""
    return normalize_tags(scope for scope in scopes if isinstance(scope, str))


def normalize_dataset_metadata(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """Dataset metadata as the timestore stores what it is given (its metadata merge):

    - ``iam``: each scope list de-duplicated (``dedupe_scopes``), an empty list
      dropped, an empty ``iam`` (or ``iam: null``) removed;
    - ``execution``: ``null`` removes it; ``backend`` is trimmed and a blank one
      removes it; ``options`` is kept only when it is a non-empty mapping;
    - every other key as given.

    Limits are checked elsewhere (the manifest model); this only normalises.
    """
    result = dict(metadata)
    if "iam" in result:
        iam = result["iam"]
        if iam is None:
            del result["iam"]
        elif isinstance(iam, Mapping):
            kept: dict[str, Any] = {}
            for key in IAM_KEYS:
                scopes = iam.get(key)
                if isinstance(scopes, list | tuple):
                    clean = dedupe_scopes(scopes)
                    if clean:
                        kept[key] = clean
            if kept:
                result["iam"] = kept
            else:
                del result["iam"]
    if "execution" in result:
        execution = _normalize_execution(result["execution"])
        if execution is None:
            del result["execution"]
        else:
            result["execution"] = execution
    return result


def _normalize_execution(value: Any) -> dict[str, Any] | None:
    if not isinstance(value, Mapping):
        return None
    backend = value.get("backend")
    backend = js_trim(backend) if isinstance(backend, str) else ""
    if not backend:
        return None
    normalized: dict[str, Any] = {"backend": backend}
    options = value.get("options")
    if isinstance(options, Mapping) and options:
        normalized["options"] = dict(options)
    return normalized


def new_id(prefix: str) -> str:
    """A fresh text id ``<prefix>-<uuid4>``, the shape the services give their own rows."""
    return f"{prefix}-{uuid.uuid4()}"
