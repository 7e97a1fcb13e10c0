"""Checking the form of a database URL without ever showing it: which part is wrong, never its text.

A URL that cannot be parsed cannot have its password found and removed, and the
parser's own messages quote the text they stumbled on (often the password itself).
So the URL is checked here first, by the rules libpq parses it with, and a problem
is told by naming the part (scheme, host, port, password, query parameter 2, ...)
and what is wrong with it. A few forms libpq accepts are refused as well, because
they come from a password holding an unencoded ``@`` or ``/`` and would put part of
the password where the host, port or database name should be.
"""

from __future__ import annotations

import re
from typing import Final

from psycopg import conninfo, pq

from reconciler.errors import ConfigurationError

URI_PREFIXES: Final = ("postgresql://", "postgres://")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")
_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_HIDDEN = "the URL is not shown, since it may hold a password"
_ENCODE_HINT = "percent-encode '@' as %40 and '/' as %2F in a user name or password"

# What libpq's own refusal is about, by a fragment of its message (which is never shown),
# for a URL that passes the checks below and is still refused.
_LIBPQ_REASONS: Final = (
    ("percent-encoded", "a percent-encoding ('%' and two hex digits) is invalid or is %00"),
    ("spaces", "it contains a space; write it as %20"),
    ("IPv6", "an IPv6 host is malformed"),
    ("query parameter", "a query parameter is malformed or not a connection option"),
    ("invalid connection option", "a setting is not a connection option"),
    ("quoted string", "a quoted value has no closing quote"),
    ('missing "="', "a setting has no '='"),
)


def _options() -> frozenset[str]:
    return frozenset(option.keyword.decode() for option in pq.Conninfo.get_defaults())


def url_problem(url: str) -> str | None:
    """What is wrong with the form of ``url``, in words that quote none of it; None when it is fine."""
    if url.startswith(URI_PREFIXES):
        found = _uri_problem(url.split("://", 1)[1])
    else:
        scheme = _SCHEME.match(url)
        if scheme is not None:
            found = _scheme_problem(scheme.group(1))
        elif "=" not in url and url.strip():
            found = "it is neither a postgresql:// URL nor key=value settings"
        else:
            found = _settings_problem(url)
    if found is None:
        found = _libpq_problem(url)
    return found


def check_url(url: str) -> None:
    """Raise ConfigurationError saying which part of ``url`` is malformed, without quoting it."""
    found = url_problem(url)
    if found is not None:
        raise ConfigurationError(
            f"the database URL (--database-url or RECONCILER_DATABASE_URL) is malformed: {found}; {_HIDDEN}"
        )


def _scheme_problem(scheme: str) -> str:
    if scheme.lower() in ("postgresql", "postgres"):
        return "its scheme must be written in lower case: postgresql:// or postgres://"
    if scheme.lower().startswith(("postgresql+", "postgres+")):
        return ("its scheme names a driver (a SQLAlchemy-style dialect+driver://); "
                "write postgresql:// without the +driver part")
    return "its scheme is not postgresql:// or postgres://; only PostgreSQL catalogs are supported"


def _uri_problem(rest: str) -> str | None:
    """The URI after its ``postgresql://`` prefix, read the way libpq reads it."""
    at = rest.find("@", 0, _index(rest, "/"))
    if at != -1:
        user, colon, password = rest[:at].partition(":")
        found = _component_problem(user, "the user name") or (
            _component_problem(password, "the password") if colon else None)
        if found:
            return found
        rest = rest[at + 1:]
    before_query = rest[:_index(rest, "?")]
    if "@" in before_query:
        return f"an '@' appears where the host, port or database name should be; {_ENCODE_HINT}"
    found, index = _hosts_problem(rest)
    if found:
        return found
    if rest[index:index + 1] == "/":
        end = _index(rest, "?", index)
        found = _component_problem(rest[index + 1:end], "the database name")
        if found:
            return found
        index = end
    if rest[index:index + 1] == "?":
        return _query_problem(rest[index + 1:])
    return None


def _hosts_problem(rest: str) -> tuple[str | None, int]:
    """Problems in the comma-separated ``host[:port]`` list, and where the list ends."""
    index, count = 0, 0
    while True:
        count += 1
        what = "the host" if count == 1 and "," not in rest[:_index(rest, "/")] else f"host {count}"
        if rest[index:index + 1] == "[":
            close = rest.find("]", index)
            if close == -1:
                return f"{what} opens an IPv6 address with '[' but has no closing ']'", index
            index = close + 1
            if index < len(rest) and rest[index] not in ":/?,":
                return f"{what}: an IPv6 address in [] must be followed by ':', '/', '?', ',' or the end", index
        else:
            end = index
            while end < len(rest) and rest[end] not in ":/?,":
                end += 1
            found = _component_problem(rest[index:end], what)
            if found:
                return found, index
            index = end
        if rest[index:index + 1] == ":":
            end = index + 1
            while end < len(rest) and rest[end] not in "/?,":
                end += 1
            port = rest[index + 1:end]
            if port and not (port.isascii() and port.isdigit()):
                return f"the port of {what} is not a number; {_ENCODE_HINT}", index
            index = end
        if rest[index:index + 1] != ",":
            return None, index
        index += 1


def _query_problem(query: str) -> str | None:
    options = _options()
    for number, parameter in enumerate(query.split("&"), start=1):
        what = f"query parameter {number}"
        if parameter.count("=") != 1:
            return f"{what} must be one key=value pair (it has {parameter.count('=')} '=')"
        key, value = parameter.split("=")
        found = _component_problem(key, f"the name of {what}") or _component_problem(value, f"the value of {what}")
        if found:
            return found
        name = _decoded(key)
        if name not in options and not (name == "ssl" and _decoded(value) == "true"):
            return f"{what} is not a libpq connection option"
    return None


def _component_problem(text: str, what: str) -> str | None:
    """Percent-encoding and spaces in one part of a URI, as libpq decodes it."""
    if _PERCENT.search(text):
        return f"{what} has a '%' not followed by two hex digits (write a literal '%' as %25)"
    if "%00" in text:
        return f"{what} holds %00, which is not allowed"
    if " " in text:
        return f"{what} contains a space; percent-encode it as %20"
    return None


def _decoded(text: str) -> str:
    return re.sub(r"%([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), text)


def _settings_problem(text: str) -> str | None:
    """``key=value`` settings, read the way libpq reads them."""
    options = _options()
    index, number = 0, 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return None
        number += 1
        start = index
        while index < len(text) and text[index] != "=" and not text[index].isspace():
            index += 1
        key = text[start:index]
        while index < len(text) and text[index].isspace():
            index += 1
        if text[index:index + 1] != "=":
            return f"setting {number} has no '=' (a value holding spaces must be in single quotes: password='...')"
        index += 1
        while index < len(text) and text[index].isspace():
            index += 1
        index, closed = _value_end(text, index)
        if not closed:
            return f"the value of setting {number} opens a single quote and never closes it"
        if key not in options:
            return f"setting {number} is not a libpq connection option"


def _value_end(text: str, index: int) -> tuple[int, bool]:
    """Where the value starting at ``index`` ends, and whether its quotes (if any) are closed."""
    quoted = text[index:index + 1] == "'"
    if quoted:
        index += 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if quoted and char == "'":
            return index + 1, True
        if not quoted and char.isspace():
            break
        index += 1
    return min(index, len(text)), not quoted


def _libpq_problem(url: str) -> str | None:
    """libpq's verdict, for what the checks above do not cover; its message is never shown."""
    try:
        conninfo.conninfo_to_dict(url)
    except Exception as error:  # noqa: BLE001 - any refusal: its text may quote the password
        reason = str(error)
        for fragment, words in _LIBPQ_REASONS:
            if fragment in reason:
                return words
        return "PostgreSQL's connection-string parser refused it"
    return None


def _index(text: str, char: str, start: int = 0) -> int:
    """Where ``char`` first occurs in ``text`` from ``start``, else the end of ``text``."""
    found = text.find(char, start)
    return len(text) if found == -1 else found
