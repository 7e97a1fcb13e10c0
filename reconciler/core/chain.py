"""The hash chain's primitives, shared by the audit log's entries and its runs.

``hash = sha256(prev_hash + canonical(row))``; with a key (``RECONCILER_AUDIT_KEY``),
``mac = HMAC-SHA256(key, hash)`` beside it. Values are normalised so that what
PostgreSQL hands back re-serialises byte for byte (see reconciler/app/auditing.py).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from reconciler.core.canonical import canonical_json
from reconciler.errors import ConfigurationError

GENESIS = "0" * 64
KEY_VARIABLE = "RECONCILER_AUDIT_KEY"
MIN_KEY_LENGTH = 16  # characters: shorter keys are guessable

HASH = re.compile(r"^[0-9a-f]{64}$")


# The columns in their table order; reconciler.app.auditing.Entry has the same fields.
COLUMNS = (
    "seq", "recorded_at", "run_id", "source", "address", "kind", "action", "before", "after", "fields",
    "commit_sha", "author_name", "author_email", "uncommitted", "manifest_path", "manifest_line",
    "applier", "plan_digest", "prev_hash", "hash",
    # Added after the first version: hashed only when not null (see reconciler/app/auditing.py).
    "reason", "commit_date", "protect",
    "merge_commit", "pull_request", "ci_url", "applied_by", "changed_at", "evidence",
    "mac",  # computed from hash, so never part of it
)
LATER_COLUMNS = ("reason", "commit_date", "protect", "merge_commit", "pull_request", "ci_url", "applied_by",
                 "changed_at", "evidence")
UNHASHED = ("hash", "mac")
# Read as their text, so that the caller parses them the one way the hash was computed
# (and never through a json loader someone configured).
JSON_COLUMNS = ("before", "after", "applied_by")
# reconciler.runs as the runs chain covers it (reconciler.core.runs.Run has the same fields). The
# chain began with these columns: every one of them but hash and mac is hashed, null or not;
# a column added later would be hashed only when not null, as for the entries.
RUN_COLUMNS = (
    "seq", "run_id", "source", "applier", "commit_sha", "plan_digest", "started_at", "finished_at", "outcome",
    "counts", "message", "complete", "command", "applied_by", "ci_url", "entries", "first_entry", "prev_hash",
    "hash", "mac",
)
RUN_JSON_COLUMNS = ("counts", "applied_by")

@dataclass(frozen=True)
class Head:
    """The last entry and the last run of the log when an append starts, and the server's
    clock then (``started``: when the transaction began)."""

    seq: int
    hash: str | None
    mac: str | None
    run_seq: int
    run_hash: str | None
    run_mac: str | None
    now: datetime
    started: datetime


_UNCHANGED = frozenset({str, int, bool, type(None)})  # exact types plain() gives back as they are


def plain(value: Any) -> Any:
    """``value`` with integral floats as integers and tuples as lists (see reconciler/app/auditing.py)."""
    kind = type(value)
    if kind in _UNCHANGED:
        return value
    # Nearly every leaf is kept as it is (text, ints, finite fractional floats: ``x - x`` is 0
    # only when x is finite): checked inline rather than with a call each.
    if kind is dict:
        return {k if type(k) is str else str(k):
                v if type(v) in _UNCHANGED or (type(v) is float and v - v == 0 and not v.is_integer()) else plain(v)
                for k, v in value.items()}
    if kind is list or kind is tuple:
        return [v if type(v) in _UNCHANGED or (type(v) is float and v - v == 0 and not v.is_integer()) else plain(v)
                for v in value]
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be recorded in the audit log (JSON has no such number)")
        return int(Decimal(repr(value))) if value.is_integer() else float(value)
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    raise TypeError(f"a {type(value).__name__} cannot be recorded in the audit log")


def canonical(value: Any) -> str:
    """Canonical JSON text (``core/canonical.py``), refusing NaN and the infinities: the text hashed."""
    return canonical_json(value, allow_nan=False)


def utc_text(moment: datetime) -> str:
    """A timestamp as fixed-format UTC text with microseconds."""
    if moment.tzinfo is None:
        raise ValueError("audit timestamps must carry a time zone")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def chain_hash(prev_hash: str, body: str) -> str:
    """sha256 over the previous hash followed by the row's canonical text."""
    return hashlib.sha256((prev_hash + body).encode("utf-8")).hexdigest()


def mac_of(key: bytes | None, hash_: str) -> str | None:
    """HMAC-SHA256 of a row's hash under the audit key (None without a key)."""
    return None if key is None else hmac.new(key, hash_.encode("ascii"), hashlib.sha256).hexdigest()


def mac_matches(key: bytes, hash_: str, mac: str | None) -> bool:
    """Whether ``mac`` is the MAC of ``hash_`` under ``key`` (compared in constant time)."""
    return mac is not None and hmac.compare_digest(mac_of(key, hash_) or "", mac)


def audit_key(environ: Mapping[str, str]) -> bytes | None:
    """The key of the keyed chain, from ``RECONCILER_AUDIT_KEY``; None when it is not set."""
    text = environ.get(KEY_VARIABLE, "")
    if not text:
        return None
    if len(text) < MIN_KEY_LENGTH:
        raise ConfigurationError(f"{KEY_VARIABLE} is too short ({len(text)} characters; use at least "
                                 f"{MIN_KEY_LENGTH}, e.g. the output of `openssl rand -hex 32`)")
    return text.encode("utf-8")


def later_columns(body: dict[str, Any], names: tuple[str, ...]) -> None:
    """Columns added after a table's first version are hashed only when set (rows written before
    they existed hold null there, and must still verify); timestamps as ``utc_text``."""
    for name in names:
        value = body.get(name)
        if value is None:
            body.pop(name, None)
        elif isinstance(value, datetime):
            body[name] = utc_text(value)
        elif isinstance(value, Mapping):
            body[name] = plain(value)


def keyed_problem(what: str, seq: int, hash_: str | None, mac: str | None, key: bytes | None) -> str | None:
    """Why a row must not be appended after the newest ``what`` (``seq``, ``hash_``, ``mac``) with
    ``key``: once the log is keyed, every later row must be, with the same key. None: it may."""
    if mac is None or hash_ is None:
        return None
    if key is None:
        return f"the audit log is keyed ({what} {seq} carries a MAC) and {KEY_VARIABLE} is not set"
    if not mac_matches(key, hash_, mac):
        return (f"the newest {what} of the audit log ({seq}) does not carry the MAC of this {KEY_VARIABLE}: the "
                f"key is not the one the log was written with, or that {what} was not written by the reconciler")
    return None
