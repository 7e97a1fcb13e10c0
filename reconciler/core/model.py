"""The manifest models' shared vocabulary: limits, field types and their normalisation, the base of every
manifest document, and addresses. Each kind's own model lives in its module (core/kinds)."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictInt,
    StringConstraints,
    ValidationInfo,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from reconciler.core.service_rules import IAM_KEYS, js_trim, normalize_dataset_metadata, utf16_length

API_VERSION: Final = "reconciler/v1"

# Limits. They are the catalog services' own rules; docs/manifests.md lists them. Text
# lengths are counted as the services count them, in UTF-16 code units (service_rules.py).
STORAGE_TARGET_NAME_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"
DATASET_SLUG_PATTERN: Final = r"^[A-Za-z0-9._-]+$"
NAMESPACE_PATTERN: Final = r"^[A-Za-z0-9][A-Za-z0-9:._-]*$"
RECORD_KEY_PATTERN: Final = r"^[^\x00-\x1f\x7f]+$"
ENV_NAME_PATTERN: Final = r"^[A-Za-z_][A-Za-z0-9_]*$"
MAX_TAGS: Final = 128
MAX_TAG_LENGTH: Final = 64
MAX_SCOPES: Final = 16
MAX_SCOPE_LENGTH: Final = 128
MAX_JSON_DEPTH: Final = 64
# Python turns no integer of more digits into text (sys.int_max_str_digits), so neither a
# message nor JSON could show it.
MAX_INT_DIGITS: Final = 4300
TOO_MANY_DIGITS: Final = 10**MAX_INT_DIGITS
EXECUTION_KEYS: Final = ("backend", "options")

# What a pattern means, in words, for error messages.
PATTERN_HELP: Final[Mapping[str, str]] = {
    STORAGE_TARGET_NAME_PATTERN: "only letters, digits, '.', '_' and '-', and start with a letter or digit",
    DATASET_SLUG_PATTERN: "only letters, digits, '.', '_' and '-'",
    NAMESPACE_PATTERN: "only letters, digits, ':', '.', '_' and '-', and start with a letter or digit",
    RECORD_KEY_PATTERN: "no control characters",
}

StorageTargetType = Literal["clickhouse", "local", "s3", "gcs", "azure_blob"]
DatasetStatus = Literal["active", "inactive"]
RetentionMode = Literal["time", "size", "hybrid"]

# A reference to an environment variable inside a storage target's config: ${env:NAME}.
# "$${" stands for a literal "${".
_ENV_TOKEN = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)\}|\$\{")
_ENV_NAME = re.compile(ENV_NAME_PATTERN)

# Validation context the manifest loader passes: it has already checked that every
# value is plain JSON (string keys, finite numbers, bounded depth), so the models
# need not walk the free-form objects a second time.
TRUSTED_JSON: Final[Mapping[str, bool]] = {"trusted_json": True}


JsonPath = tuple[str | int, ...]


def format_path(path: tuple[Any, ...]) -> str:
    """``("records", 3, "tags")`` as ``records[3].tags``."""
    text = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def problem(message: str, *subpath: str | int) -> PydanticCustomError:
    """A validation error with its own message, located ``subpath`` below the field."""
    return problems([(subpath, message)])


def problems(
    found: Sequence[tuple[JsonPath, str]], *, keys: Sequence[tuple[JsonPath, str]] = ()
) -> PydanticCustomError:
    """One validation error standing for several problems below the field, each
    (subpath, message); ``keys`` are problems with the key at subpath itself (an
    unknown field). The manifest loader reports each at its own place."""
    entries = tuple((path, message, True) for path, message in keys) + tuple(
        (path, message, False) for path, message in found
    )
    subpath, message, _ = entries[0]
    where = f"{format_path(subpath)}: " if subpath else ""
    more = f" (and {len(entries) - 1} more)" if len(entries) > 1 else ""
    return PydanticCustomError(
        "reconciler",
        "{where}{message}{more}",
        {"where": where, "message": message, "more": more, "problems": entries},
    )


# --- addresses ----------------------------------------------------------------------------


@dataclass(frozen=True, order=True, slots=True)
class Address:
    """The one name of a catalog object: its kind's name and its identity, written
    ``<kind>:<identity>`` (``dataset:<slug>``, ``record:<namespace>/<key>``). The kinds
    (core/kinds) say which kinds there are and what an identity looks like;
    ``kinds.parse_address`` reads one as users write it."""

    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}"


def folded(text: str) -> str:
    """``text`` with letter case and Unicode normalisation taken out (NFKC case folding).

    Identities are compared exactly, as the catalog compares them; two that differ here
    only look alike to people (``Sensor-1``/``sensor-1``, ``é`` composed or not), and the
    loader refuses such a pair in one tree.
    """
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def valid_text(text: str, pattern: str, max_length: int, min_length: int = 1) -> bool:
    """Whether ``text`` is within the length limits (UTF-16 code units) and matches ``pattern``."""
    return min_length <= utf16_length(text) <= max_length and re.fullmatch(pattern, text) is not None


# --- JSON values --------------------------------------------------------------------------


def _check_json(value: Any, info: ValidationInfo) -> Any:
    """Refuse what JSON (and so the catalog's jsonb) cannot hold, for values built in Python."""
    if info.context and info.context.get("trusted_json"):
        return value
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(value, ())]
    while stack:
        item, path = stack.pop()
        if len(path) > MAX_JSON_DEPTH:
            raise problem(f"nesting deeper than {MAX_JSON_DEPTH} levels", *path)
        if isinstance(item, Mapping):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise problem(f"keys must be strings, got {describe(key)}", *path)
                stack.append((child, (*path, key)))
        elif isinstance(item, list | tuple):
            stack.extend((child, (*path, index)) for index, child in enumerate(item))
        elif isinstance(item, float) and not math.isfinite(item):
            raise problem(f"numbers must be finite, got {describe(item)}", *path)
        elif item is not None and not isinstance(item, str | int | float | bool):
            raise problem(f"not a JSON value: {type(item).__name__}", *path)
    return value


JsonObject = Annotated[dict[str, Any], AfterValidator(_check_json)]


# --- normalisation shared by the kinds ----------------------------------------------------


def _clean_strings(
    values: Any, *, max_items: int, max_length: int, what: str, subpath: JsonPath = ()
) -> list[str]:
    """A list of short strings (tags, IAM scopes) checked as the services' request schemas
    check it, then normalised as they store it.

    The count and each entry's length (1 to ``max_length`` UTF-16 code units) are
    checked on the list as given, before trimming, as zod checks them; an entry that
    is only white space is refused too (the services would silently drop it). The
    result is trimmed and de-duplicated (``service_rules.normalize_tags``).
    """
    if not isinstance(values, list | tuple):
        raise problem(f"must be a list of {what}s, got {describe(values)}", *subpath)
    found: list[tuple[JsonPath, str]] = []
    for index, entry in enumerate(values):
        if not isinstance(entry, str):
            found.append(((*subpath, index), f"must be a string, got {describe(entry)}"))
            continue
        length = utf16_length(entry)
        if not 1 <= length <= max_length:
            message = f"each {what} must be 1 to {max_length} characters, got {length}{_units(entry, length)}"
            found.append(((*subpath, index), message))
        elif not js_trim(entry):
            found.append(((*subpath, index), f"each {what} must hold more than white space"))
    if len(values) > max_items:
        found.append((subpath, f"at most {max_items} {what}s, got {len(values)}"))
    if found:
        raise problems(found)
    seen: dict[str, None] = {}
    for entry in values:
        seen.setdefault(js_trim(entry), None)
    return list(seen)


# Added to a length in a message when it differs from the number of characters a reader sees.
_UTF16_NOTE: Final = (
    " (the platform's services count UTF-16 code units: a character outside the Basic Multilingual "
    "Plane, such as an emoji, counts as 2)"
)


def _units(text: str, length: int) -> str:
    return _UTF16_NOTE if length != len(text) else ""


def length_problem(text: str, min_length: int, max_length: int | None) -> str | None:
    """What is wrong with the length of ``text`` (UTF-16 code units, as the services
    count), or None when it is within the limits."""
    length = utf16_length(text)
    if length < min_length:
        if min_length == 1:
            return "must not be empty"
        return f"must be at least {min_length} characters, got {length}{_units(text, length)}"
    if max_length is not None and length > max_length:
        return f"must be at most {max_length} characters, got {length}{_units(text, length)}"
    return None


def describe(value: Any) -> str:
    """A short description of a value for messages, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:37] + "...")
    if isinstance(value, float) and not math.isfinite(value):
        return ".nan" if math.isnan(value) else ".inf" if value > 0 else "-.inf"
    if isinstance(value, int) and abs(value) >= TOO_MANY_DIGITS:
        return f"a whole number of more than {MAX_INT_DIGITS:,} digits"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def _normalize_tags(value: Any) -> tuple[str, ...]:
    return tuple(_clean_strings(value, max_items=MAX_TAGS, max_length=MAX_TAG_LENGTH, what="tag"))


def _check_dataset_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    """Dataset metadata checked as the timestore's request schema checks it, then
    normalised as the timestore stores it (``service_rules.normalize_dataset_metadata``).

    ``iam`` is null or ``{readScopes?, writeScopes?}`` and nothing else; ``execution``
    is null or ``{backend, options?}`` and nothing else, with a non-blank ``backend``
    string and ``options`` a mapping. Every other key is free. (null removes the key,
    as it does in the timestore.)
    """
    found: list[tuple[JsonPath, str]] = []
    unknown: list[tuple[JsonPath, str]] = []
    if "iam" in metadata:
        _check_iam(metadata["iam"], found, unknown)
    if "execution" in metadata:
        _check_execution(metadata["execution"], found, unknown)
    if found or unknown:
        raise problems(found, keys=unknown)
    return normalize_dataset_metadata(metadata)


def _check_iam(iam: Any, found: list[tuple[JsonPath, str]], unknown: list[tuple[JsonPath, str]]) -> None:
    if iam is None:
        return  # the timestore reads null as "no IAM restrictions" and removes the key
    if not isinstance(iam, Mapping):
        found.append((("iam",), f"must be null or a mapping of {' and '.join(IAM_KEYS)}, got {describe(iam)}"))
        return
    expected = " or ".join(IAM_KEYS)
    unknown.extend((("iam", key), f"unknown field {key!r}; expected {expected}") for key in iam if key not in IAM_KEYS)
    for key in IAM_KEYS:
        if key not in iam:
            continue
        try:
            _clean_strings(iam[key], max_items=MAX_SCOPES, max_length=MAX_SCOPE_LENGTH, what="scope",
                           subpath=("iam", key))
        except PydanticCustomError as error:
            found.extend((path, message) for path, message, _ in (error.context or {})["problems"])


def _check_execution(execution: Any, found: list[tuple[JsonPath, str]],
                     unknown: list[tuple[JsonPath, str]]) -> None:
    if execution is None:
        return  # the timestore reads null as "no execution" and removes the key
    if not isinstance(execution, Mapping):
        found.append((("execution",), f"must be null or a mapping of backend and options, got {describe(execution)}"))
        return
    expected = " or ".join(EXECUTION_KEYS)
    unknown.extend((("execution", key), f"unknown field {key!r}; expected {expected}")
                   for key in execution if key not in EXECUTION_KEYS)
    backend = execution.get("backend")
    if "backend" not in execution:
        found.append((("execution",), "missing required field 'backend'"))
    elif not isinstance(backend, str):
        found.append((("execution", "backend"), f"must be a string, got {describe(backend)}"))
    elif not js_trim(backend):
        found.append((("execution", "backend"), "must name a backend, got only white space"
                      if backend else "must not be empty"))
    if "options" in execution and not isinstance(execution["options"], Mapping):
        found.append((("execution", "options"), f"must be a mapping, got {describe(execution['options'])}"))


def _check_env_refs(config: dict[str, Any]) -> dict[str, Any]:
    """Every ``${`` in a config string must start a well-formed ``${env:NAME}``."""
    found: list[tuple[JsonPath, str]] = []
    for path, text in iter_strings(config):
        for match in _ENV_TOKEN.finditer(text):
            token = match.group(0)
            if token == "$${":
                continue
            body = match.group("body")
            name = body[4:] if body is not None and body.startswith("env:") else None
            if body is None:
                found.append((path, "unclosed '${'; write '$${' for a literal '${'"))
            elif name is None or not _ENV_NAME.fullmatch(name):
                expected = f"expected ${{env:NAME}} with NAME matching {ENV_NAME_PATTERN}"
                found.append((path, f"malformed reference {token!r}: {expected}"))
    if found:
        raise problems(found)
    return config


def iter_strings(value: Any, path: JsonPath = ()) -> Iterator[tuple[JsonPath, str]]:
    """Every string value inside a JSON value, with its path (keys and list indexes)."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, child in value.items():
            yield from iter_strings(child, (*path, key))
    elif isinstance(value, list | tuple):
        for index, child in enumerate(value):
            yield from iter_strings(child, (*path, index))


def env_references(text: str) -> list[str]:
    """Names of the environment variables a config string refers to, in order."""
    return [
        m.group("body")[4:]
        for m in _ENV_TOKEN.finditer(text)
        if m.group("body") is not None and m.group(0) != "$${"
    ]


def substitute_env(text: str, environ: Mapping[str, str]) -> str:
    """Replace each ``${env:NAME}`` by its value and ``$${`` by ``${``; KeyError if unset."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        return environ[match.group("body")[4:]]

    return _ENV_TOKEN.sub(replace, text)


@dataclass(frozen=True)
class ResolvedConfig:
    """A storage target's config with its ``${env:NAME}`` references resolved.

    ``config`` is a copy with every reference whose variables are all set replaced by their
    values (``$${`` unescaped everywhere), or, without substitution, with the references
    kept as written; ``templates`` maps each path that names a variable to the text the
    manifest wrote; ``missing`` lists (path, name) for every unset variable, in order.
    """

    config: dict[str, Any]
    templates: dict[JsonPath, str]
    missing: list[tuple[JsonPath, str]]


def resolve_env(config: Mapping[str, Any], environ: Mapping[str, str], *, substitute: bool = True) -> ResolvedConfig:
    """Resolve the ``${env:NAME}`` references of a config: the one place they are resolved."""
    resolved: Any = _json_copy(config)
    templates: dict[JsonPath, str] = {}
    missing: list[tuple[JsonPath, str]] = []
    for path, text in list(iter_strings(config)):
        names = env_references(text)
        if not names:
            if "$${" in text:  # only the escape: a literal "${", no secret
                _json_set(resolved, path, substitute_env(text, environ))
            continue
        templates[path] = text
        unset = [name for name in names if name not in environ]
        missing += [(path, name) for name in unset]
        if substitute and not unset:
            _json_set(resolved, path, substitute_env(text, environ))
    return ResolvedConfig(dict(resolved), templates, missing)


def _json_copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_copy(v) for v in value]
    return value


def _json_set(node: Any, path: JsonPath, value: str) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def _check_dataset_slug_link(metadata: dict[str, Any]) -> dict[str, Any]:
    slug = metadata.get("datasetSlug")
    if "datasetSlug" in metadata and not (isinstance(slug, str) and valid_text(slug, DATASET_SLUG_PATTERN, 120, 3)):
        raise problem(
            f"must be a dataset slug (3 to 120 letters, digits, '.', '_' and '-'), got {describe(slug)}",
            "datasetSlug",
        )
    return metadata


def not_null(value: Any) -> Any:
    """``value``, refused when it is null (for optional fields that must not be null when given)."""
    if value is None:
        raise problem("must not be null; leave the field out instead")
    return value


# --- field types --------------------------------------------------------------------------

# Patterns that admit only ASCII, where a length in UTF-16 code units is the number of characters.
_ASCII_PATTERNS: Final = frozenset({STORAGE_TARGET_NAME_PATTERN, DATASET_SLUG_PATTERN, NAMESPACE_PATTERN})
LENGTH_UNIT_COMMENT: Final = (
    "The length limits count UTF-16 code units, as the platform's services do: a character outside "
    "the Basic Multilingual Plane (an emoji, say) counts as 2. A JSON Schema validator counts it as 1, "
    "so it accepts some strings near the limit that reconciler validate refuses."
)


@dataclass(frozen=True, slots=True)
class TextLimits:
    """The limits of a text field, checked as the platform's services check them: the
    length in UTF-16 code units (``service_rules.utf16_length``), then the pattern.

    Used as ``Annotated[str, StringConstraints(strict=True), TextLimits(...)]``; the JSON
    Schema gets minLength, maxLength and pattern, and a note on the unit.
    """

    min_length: int
    max_length: int | None = None
    pattern: str | None = None

    def check(self, value: str) -> str:
        """``value`` unchanged, or a validation error saying what is wrong."""
        wrong = length_problem(value, self.min_length, self.max_length)
        if wrong is None and self.pattern is not None and re.fullmatch(self.pattern, value) is None:
            wrong = f"must contain {PATTERN_HELP[self.pattern]}, got {describe(value)}"
        if wrong is not None:
            raise problem(wrong)
        return value

    def __get_pydantic_core_schema__(self, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self.check, handler(source))

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema.update(self.json_schema())
        return json_schema

    def json_schema(self) -> dict[str, Any]:
        """minLength, maxLength, pattern and, where the unit matters, the note on it."""
        out: dict[str, Any] = {"minLength": self.min_length} if self.min_length else {}
        if self.max_length is not None:
            out["maxLength"] = self.max_length
        if self.pattern is not None:
            out["pattern"] = self.pattern
        if self.max_length is not None and self.pattern not in _ASCII_PATTERNS:
            out["$comment"] = LENGTH_UNIT_COMMENT
        return out


StorageTargetName = Annotated[
    str, StringConstraints(strict=True), TextLimits(1, 120, STORAGE_TARGET_NAME_PATTERN)
]
DatasetSlug = Annotated[str, StringConstraints(strict=True), TextLimits(3, 120, DATASET_SLUG_PATTERN)]
Namespace = Annotated[str, StringConstraints(strict=True), TextLimits(1, 128, NAMESPACE_PATTERN)]
RecordKey = Annotated[str, StringConstraints(strict=True), TextLimits(1, 256, RECORD_KEY_PATTERN)]
Description = Annotated[str, StringConstraints(strict=True), TextLimits(0, 1000)]
DatasetName = Annotated[str, StringConstraints(strict=True), TextLimits(1, 160)]
Owner = Annotated[str, StringConstraints(strict=True), TextLimits(1, 256)]
SchemaHash = Annotated[str, StringConstraints(strict=True), TextLimits(6, 256)]
PositiveInt = Annotated[StrictInt, Field(gt=0)]
NonNegativeInt = Annotated[StrictInt, Field(ge=0)]

_TAG_SCHEMA = {
    "maxItems": MAX_TAGS,
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_LENGTH, "$comment": LENGTH_UNIT_COMMENT},
}
Tags = Annotated[
    tuple[str, ...],
    BeforeValidator(_normalize_tags),
    Field(json_schema_extra=_TAG_SCHEMA),
]
RecordMetadata = Annotated[
    dict[str, Any],
    AfterValidator(_check_json),
    AfterValidator(_check_dataset_slug_link),
    Field(
        json_schema_extra={
            "properties": {
                "datasetSlug": {
                    "type": "string",
                    "minLength": 3,
                    "maxLength": 120,
                    "pattern": DATASET_SLUG_PATTERN,
                }
            }
        }
    ),
]
_SCOPES_SCHEMA = {
    "type": "array",
    "maxItems": MAX_SCOPES,
    "items": {"type": "string", "minLength": 1, "maxLength": MAX_SCOPE_LENGTH, "$comment": LENGTH_UNIT_COMMENT},
}
_EXECUTION_SCHEMA = {
    "anyOf": [
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["backend"],
            "properties": {
                "backend": {"type": "string", "minLength": 1, "pattern": "\\S"},
                "options": {"type": "object"},
            },
        },
        {"type": "null"},
    ]
}
DatasetMetadata = Annotated[
    dict[str, Any],
    AfterValidator(_check_json),
    AfterValidator(_check_dataset_metadata),
    Field(
        json_schema_extra={
            "properties": {
                "iam": {
                    "anyOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {key: _SCOPES_SCHEMA for key in IAM_KEYS},
                        },
                        {"type": "null"},
                    ]
                },
                "execution": _EXECUTION_SCHEMA,
            }
        }
    ),
]
StorageConfig = Annotated[dict[str, Any], AfterValidator(_check_json), AfterValidator(_check_env_refs)]


# --- models -------------------------------------------------------------------------------


class Base(BaseModel):
    """The one configuration every manifest model shares."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class Document(Base):
    """A top-level manifest document: ``apiVersion`` and ``kind``; each kind's model
    (core/kinds) is one, and so is a document that declares many objects (a RecordSet)."""

    api_version: Literal["reconciler/v1"] = API_VERSION

    @property
    def address(self) -> Address:
        """The address of the object this document declares."""
        raise NotImplementedError



def field_names(model: type[BaseModel]) -> Sequence[str]:
    """The names a manifest uses for the fields of ``model`` (camelCase aliases)."""
    return [info.alias or name for name, info in model.model_fields.items()]
