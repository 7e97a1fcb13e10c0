"""Frozen pydantic models of the manifest kinds, their limits and normalisation, and addresses."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
    StrictBool,
    StrictInt,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError, core_schema

from reconciler.errors import ConfigurationError
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


class AddressKind(StrEnum):
    """The kinds of object an address can name."""

    STORAGE_TARGET = "storage-target"
    DATASET = "dataset"
    RECORD = "record"


@dataclass(frozen=True, order=True, slots=True)
class Address:
    """The one name of a catalog object: ``storage-target:<name>``, ``dataset:<slug>``,
    ``record:<namespace>/<key>`` (the key may contain ``/``, the namespace cannot)."""

    kind: AddressKind
    name: str

    @classmethod
    def storage_target(cls, name: str) -> Address:
        """The address of the storage target ``name``."""
        return cls(AddressKind.STORAGE_TARGET, name)

    @classmethod
    def dataset(cls, slug: str) -> Address:
        """The address of the dataset ``slug``."""
        return cls(AddressKind.DATASET, slug)

    @classmethod
    def record(cls, namespace: str, key: str) -> Address:
        """The address of the record ``key`` in ``namespace``."""
        return cls(AddressKind.RECORD, f"{namespace}/{key}")

    @classmethod
    def parse(cls, text: str) -> Address:
        """Read an address as users write it; raises ConfigurationError when malformed."""
        kind_text, sep, name = text.partition(":")
        kinds = ", ".join(k.value for k in AddressKind)
        if not sep or kind_text not in {k.value for k in AddressKind}:
            raise ConfigurationError(
                f"invalid address {text!r}: expected <kind>:<name> with kind one of {kinds}"
            )
        kind = AddressKind(kind_text)
        if kind is AddressKind.RECORD:
            namespace, slash, key = name.partition("/")
            if (
                not slash
                or not _valid(namespace, NAMESPACE_PATTERN, 128)
                or not _valid(key, RECORD_KEY_PATTERN, 256)
            ):
                raise ConfigurationError(f"invalid address {text!r}: expected record:<namespace>/<key>")
        elif kind is AddressKind.DATASET:
            if not _valid(name, DATASET_SLUG_PATTERN, 120, 3):
                raise ConfigurationError(f"invalid address {text!r}: expected dataset:<slug>")
        elif not _valid(name, STORAGE_TARGET_NAME_PATTERN, 120):
            raise ConfigurationError(f"invalid address {text!r}: expected storage-target:<name>")
        return cls(kind, name)

    @property
    def namespace(self) -> str:
        """A record address's namespace."""
        return self._record_parts()[0]

    @property
    def key(self) -> str:
        """A record address's key."""
        return self._record_parts()[1]

    def _record_parts(self) -> tuple[str, str]:
        if self.kind is not AddressKind.RECORD:
            raise ValueError(f"{self} is not a record address")
        namespace, _, key = self.name.partition("/")
        return namespace, key

    def __str__(self) -> str:
        return f"{self.kind.value}:{self.name}"


def folded(text: str) -> str:
    """``text`` with letter case and Unicode normalisation taken out (NFKC case folding).

    Identities are compared exactly, as the catalog compares them; two that differ here
    only look alike to people (``Sensor-1``/``sensor-1``, ``é`` composed or not), and the
    loader refuses such a pair in one tree.
    """
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


def _valid(text: str, pattern: str, max_length: int, min_length: int = 1) -> bool:
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
    if "datasetSlug" in metadata and not (isinstance(slug, str) and _valid(slug, DATASET_SLUG_PATTERN, 120, 3)):
        raise problem(
            f"must be a dataset slug (3 to 120 letters, digits, '.', '_' and '-'), got {describe(slug)}",
            "datasetSlug",
        )
    return metadata


def _not_null(value: Any) -> Any:
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


class _Base(BaseModel):
    """The one configuration every manifest model shares."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
    )


class _Kind(_Base):
    """A top-level manifest document: ``apiVersion`` and ``kind``."""

    api_version: Literal["reconciler/v1"] = API_VERSION

    @property
    def address(self) -> Address:
        """The address of the object this document declares."""
        raise NotImplementedError


class StorageTarget(_Kind):
    """Where a dataset's data lives: a row of timestore.storage_targets."""

    kind: Literal["StorageTarget"] = "StorageTarget"
    name: StorageTargetName = Field(description="Identity; the catalog id is st-<name>.")
    renamed_from: StorageTargetName | None = Field(
        default=None, description="The name it had: renames it in place (its id, and the datasets on it, stay)."
    )
    type: StorageTargetType = Field(description="The catalog's storage_targets.kind.")
    description: Description | None = None
    config: StorageConfig = Field(
        default_factory=dict,
        description="Free JSON object; string values may hold ${env:NAME}, resolved at plan/apply time.",
    )
    protect: StrictBool = Field(default=False, description="Never purged while true.")
    purge: StrictBool = Field(
        default=False,
        description="Delete it (needs apply --allow-purge; refused while a dataset uses it).",
    )

    @property
    def address(self) -> Address:
        """``storage-target:<name>``."""
        return Address.storage_target(self.name)


class RetentionRules(_Base):
    """retention.rules: the two known limits; other keys are kept as given."""

    model_config = ConfigDict(extra="allow")

    max_age_hours: PositiveInt | None = Field(default=None, description="Delete data older than this.")
    max_total_bytes: PositiveInt | None = Field(default=None, description="Keep at most this many bytes.")


class Retention(_Base):
    """A dataset's retention policy; keys other than the known ones are kept as given."""

    model_config = ConfigDict(extra="allow")

    mode: RetentionMode | None = Field(default=None, description="Which rules apply: time, size or both.")
    rules: RetentionRules | None = None
    delete_grace_minutes: NonNegativeInt | None = Field(
        default=None, description="Minutes between marking data for deletion and deleting it."
    )
    cold_storage_after_hours: PositiveInt | None = Field(
        default=None, description="Move data to cold storage after this many hours."
    )
    metadata: JsonObject | None = Field(
        default=None, description="Free JSON object (the timestore ignores a policy whose metadata is not one)."
    )

    def as_policy(self) -> dict[str, Any]:
        """The policy as the catalog stores it (camelCase, unset keys left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Dataset(_Kind):
    """A dataset: a row of timestore.datasets and its retention policy."""

    kind: Literal["Dataset"] = "Dataset"
    slug: DatasetSlug = Field(description="Identity.")
    renamed_from: DatasetSlug | None = Field(
        default=None, description="The slug it had: renames it in place (same id, partitions and history)."
    )
    name: DatasetName
    description: Description | None = None
    status: DatasetStatus = Field(default="active", description="inactive means archived.")
    storage_target: StorageTargetName | None = Field(
        default=None, description="Name of the dataset's default StorageTarget."
    )
    metadata: DatasetMetadata = Field(
        default_factory=dict,
        description=(
            "Free JSON object; iam holds readScopes and writeScopes (trimmed, de-duplicated); "
            "execution is null or {backend, options}."
        ),
    )
    retention: Retention | None = None
    protect: StrictBool = Field(default=False, description="Never archive or purge while true.")
    purge: StrictBool = Field(default=False, description="Hard-delete (needs apply --allow-purge).")

    @property
    def address(self) -> Address:
        """``dataset:<slug>``."""
        return Address.dataset(self.slug)


class Record(_Kind):
    """A metastore record: a row of metastore.metastore_records."""

    kind: Literal["Record"] = "Record"
    namespace: Namespace = Field(description="Identity, with key; cannot contain '/'.")
    key: RecordKey = Field(description="Identity, with namespace; may contain '/'.")
    owner: Owner | None = None
    tags: Tags = Field(default=(), description="Trimmed and de-duplicated.")
    schema_hash: SchemaHash | None = None
    metadata: RecordMetadata = Field(
        default_factory=dict,
        description="Free JSON object; datasetSlug links the record to a dataset.",
    )
    deleted: StrictBool = Field(default=False, description="Soft-deleted (archived).")
    protect: StrictBool = Field(default=False, description="Never archive or purge while true.")
    purge: StrictBool = Field(default=False, description="Hard-delete (needs apply --allow-purge).")

    @property
    def address(self) -> Address:
        """``record:<namespace>/<key>``."""
        return Address.record(self.namespace, self.key)

    @property
    def dataset_slug(self) -> str | None:
        """The dataset this record links to (``metadata.datasetSlug``), if any."""
        slug = self.metadata.get("datasetSlug")
        return slug if isinstance(slug, str) else None


class RecordDefaults(_Base):
    """RecordSet.defaults: any record field except namespace and key."""

    # Fields given explicitly as null: owner and schemaHash clear the default; the
    # others cannot be null.
    _NOT_NULL: ClassVar[tuple[str, ...]] = ("tags", "metadata", "deleted", "protect", "purge")

    owner: Owner | None = None
    tags: Tags | None = None
    schema_hash: SchemaHash | None = None
    metadata: RecordMetadata | None = None
    deleted: StrictBool | None = None
    protect: StrictBool | None = None
    purge: StrictBool | None = None

    @field_validator(*_NOT_NULL, mode="before")
    @classmethod
    def _refuse_null(cls, value: Any) -> Any:
        return _not_null(value)


class RecordItem(RecordDefaults):
    """One entry of RecordSet.records: a key and any record field except namespace."""

    key: RecordKey


def _check_records_file(value: str) -> str:
    """A relative path to a ``.jsonl`` or ``.csv`` file, written with ``/``; where it leads is
    checked by the loader (it must stay inside the tree)."""
    if not value or "\x00" in value or "\\" in value:
        raise problem(f"must be a relative path written with '/', got {describe(value)}")
    if value.startswith("/"):
        raise problem(f"must be relative to this manifest, got the absolute path {describe(value)}")
    if not value.endswith(RECORDS_FILE_SUFFIXES):
        raise problem(f"must name a .jsonl or .csv file, got {describe(value)}")
    return value


RECORDS_FILE_SUFFIXES: Final = (".jsonl", ".csv")
RecordsFile = Annotated[str, StringConstraints(strict=True), AfterValidator(_check_records_file)]


class RecordSet(_Kind):
    """Many records of one namespace, sharing defaults, in one document."""

    kind: Literal["RecordSet"] = "RecordSet"
    namespace: Namespace
    defaults: RecordDefaults = Field(
        default_factory=RecordDefaults,
        description=(
            "Merged under each record: its own fields win, metadata merges key by key, its tags replace."
        ),
    )
    records: tuple[RecordItem, ...] = Field(
        default=(), description="The records; give either records or recordsFile, not both."
    )
    records_file: RecordsFile | None = Field(
        default=None,
        description=(
            "A data file holding the records (.jsonl: one record object a line; .csv: columns key, owner, "
            "tags, schemaHash, deleted, protect, purge, metadata), relative to this manifest, inside the tree."
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> RecordSet:
        given = self.model_fields_set
        if "records" in given and "records_file" in given:
            raise problem("give either records or recordsFile, not both", "recordsFile")
        if "records" not in given and "records_file" not in given:
            raise problem("missing required field 'records' (or 'recordsFile', a data file of records)")
        return self

    def expand(self) -> tuple[Record, ...]:
        """The plain records this set declares.

        Each record starts from ``defaults``; a field the record gives wins, except
        ``metadata``, which is merged key by key (the record's keys win). ``tags``
        given by a record replace the defaults' tags.
        """
        base = {name: getattr(self.defaults, name) for name in self.defaults.model_fields_set}
        return tuple(self._merge(base, item) for item in self.records)

    def _merge(self, base: dict[str, Any], item: RecordItem) -> Record:
        fields = dict(base)
        for name in item.model_fields_set:
            value = getattr(item, name)
            if name == "metadata" and "metadata" in base:
                value = {**base["metadata"], **value}
            fields[name] = value
        return _construct_record(self.namespace, fields)


_RECORD_DEFAULTS: Final[Mapping[str, Any]] = {
    "api_version": API_VERSION,
    "kind": "Record",
    "owner": None,
    "tags": (),
    "schema_hash": None,
    "deleted": False,
    "protect": False,
    "purge": False,
}


def _construct_record(namespace: str, fields: dict[str, Any]) -> Record:
    """``Record.model_construct(namespace=namespace, **fields)`` for validated, normalised
    fields, without its per-field default lookups (a tenth of the time, which counts
    for a hundred thousand records). A test checks the two stay equal."""
    record = Record.__new__(Record)
    values = {**_RECORD_DEFAULTS, "metadata": {}, "namespace": namespace, **fields}
    object.__setattr__(record, "__dict__", values)
    object.__setattr__(record, "__pydantic_fields_set__", {"namespace", *fields})
    object.__setattr__(record, "__pydantic_extra__", None)
    object.__setattr__(record, "__pydantic_private__", None)
    return record


Manifest = StorageTarget | Dataset | Record | RecordSet
Declaration = StorageTarget | Dataset | Record

KINDS: Final[Mapping[str, type[StorageTarget] | type[Dataset] | type[Record] | type[RecordSet]]] = {
    "StorageTarget": StorageTarget,
    "Dataset": Dataset,
    "Record": Record,
    "RecordSet": RecordSet,
}


def field_names(model: type[BaseModel]) -> Sequence[str]:
    """The names a manifest uses for the fields of ``model`` (camelCase aliases)."""
    return [info.alias or name for name, info in model.model_fields.items()]
