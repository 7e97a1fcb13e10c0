"""Catalog objects no source manages → manifest documents that adopt them exactly (pure, no I/O)."""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Final

import orjson
from pydantic import BaseModel, ValidationError

from reconciler.core.credentials import credential_in, looks_secret
from reconciler.manifests.desired import _desired  # the plan's own model → Desired translation: the check cannot drift from it
from reconciler.core import kinds
from reconciler.core.kinds.base import key_sorted
from reconciler.core.kinds.dataset import SERVICE_METADATA_KEYS
from reconciler.core.diff import Applied, Desired, Live, diff
from reconciler.errors import ConfigurationError
from reconciler.manifests.messages import translate
from reconciler.manifests.tree import Declared, Location
from reconciler.manifests.yamlread import value_problems
from reconciler.core.model import (
    API_VERSION,
    env_references,
    folded,
    format_path,
    iter_strings,
)
from reconciler.core.text import clean

__all__ = ["SERVICE_METADATA_KEYS", "ImportFile", "ImportResult", "Secret", "file_name", "key_sorted", "looks_secret",
           "plan_import", "select"]

_NOT_ALNUM = re.compile(r"[^A-Z0-9]")
# Longest environment variable name import makes up (a deep config path would make a long one).
VARIABLE_LENGTH: Final = 96
_NOT_FILE_SAFE = re.compile(r"[^A-Za-z0-9._-]")
# Where the check pretends an imported object is declared; only the diff sees it.
_NOWHERE = Location("<import>", 1, 1, 1)


@dataclass(frozen=True)
class Secret:
    """A config value written as ``${env:VARIABLE}`` instead of its value, and why it looked secret."""

    address: str
    path: str  # config.<dotted path>
    variable: str
    why: str = "its key names a secret"

    def note(self) -> str:
        """``VARIABLE: storage-target:NAME config.PATH (why)``, safe to print and to write in a comment."""
        return f"{self.variable}: {clean(self.address)} {clean(self.path)} ({self.why})"


@dataclass(frozen=True)
class ImportFile:
    """One file to write: its path below the output directory and its documents, in order."""

    path: str
    documents: tuple[dict[str, Any], ...]
    addresses: tuple[str, ...]
    secrets: tuple[Secret, ...] = ()  # the variables its documents refer to
    data: str | None = None  # a RecordSet's data file (recordsFile): its text; documents are then empty

    def comment(self) -> str:
        """The lines a file with ``${env:...}`` references opens with: every variable to set."""
        if not self.secrets:
            return ""
        return "\n".join(["Credentials are not written in this file. Before plan or apply, set each of these",
                          "environment variables to the value the catalog holds at the path named:",
                          *(f"  {secret.note()}" for secret in self.secrets)])


@dataclass(frozen=True)
class ImportResult:
    """What an import writes, what it left out and why, and the variables it needs."""

    candidates: tuple[str, ...]  # the unmanaged objects asked for
    files: tuple[ImportFile, ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()  # (address, reason)
    secrets: tuple[Secret, ...] = ()

    @property
    def imported(self) -> tuple[str, ...]:
        """Every address written, in file order."""
        return tuple(address for file in self.files for address in file.addresses)

    def counts(self) -> dict[str, int]:
        """Objects written per kind."""
        found = Counter(address.partition(":")[0] for address in self.imported)
        return {kind: found.get(kind, 0) for kind in kinds.NAMES}

    def summary(self, directory: str) -> str:
        """``Imported 1 storage target, 3 datasets, 120 records into DIR (5 files).``"""
        parts = [f"{n:,} {kinds.kind(kind).noun if n == 1 else kinds.kind(kind).plural}"
                 for kind, n in self.counts().items()]
        files = f"{len(self.files)} file" + ("" if len(self.files) == 1 else "s")
        return f"Imported {', '.join(parts)} into {directory} ({files})."


class _Skip(Exception):
    """An object whose values no valid manifest can express; the message says why."""


@dataclass
class _Draft:
    """One object's manifest before the check: its document and the model the loader would build."""

    address: str
    kind: str
    document: dict[str, Any]  # for a kind declared in sets (a record): its item in the set
    model: Any  # what the loader builds (a set's item, a RecordItem, until _expand)
    group: str = ""  # for a kind declared in sets: the set's identity field (a record's namespace)
    secrets: list[tuple[Secret, str]] = field(default_factory=list)  # with the live value


def select(live: Mapping[str, Live], applied: Mapping[str, Applied], declared: Mapping[str, Desired],
           targets: Sequence[str] = ()) -> tuple[str, ...]:
    """The unmanaged objects to import: all of them, or exactly ``targets``.

    Unmanaged means in the catalog, recorded by no source, and not declared in the
    tree (a declared object is adopted by the next apply already). A target that is
    not such an object is an error naming it; every such target is named at once.
    """
    if not targets:
        return tuple(sorted(a for a in live if a not in applied and a not in declared))
    problems = []
    for address in dict.fromkeys(targets):
        if address not in live:
            problems.append(f"{address} is not in the catalog")
        elif address in applied:
            problems.append(f"{address} is managed by source {applied[address].source!r}; "
                            "only unmanaged objects are imported")
        elif address in declared:
            where = declared[address].location
            problems.append(f"{address} is already declared in the tree ({where.path}:{where.line}); "
                            "the next apply adopts it")
    if problems:
        raise ConfigurationError("cannot import:\n  " + "\n  ".join(clean(p) for p in problems))
    return tuple(sorted(dict.fromkeys(targets)))


def plan_import(live: Mapping[str, Live], applied: Mapping[str, Applied], declared: Mapping[str, Desired],
                targets: Sequence[str] = (), records_format: str = "yaml") -> ImportResult:
    """Manifest documents for the unmanaged objects, each checked to adopt its object unchanged.

    Every document is validated as the loader validates it, then diffed against its
    live object as the plan would diff it; an object whose manifest would change
    anything (or not load, or break a link) is skipped with the reason. With ``records_format``
    ``jsonl`` or ``csv``, each namespace's records go to a data file beside its RecordSet.
    """
    candidates = select(live, applied, declared, targets)
    names = _Variables(_referenced(declared))
    drafts: list[_Draft] = []
    skipped: list[tuple[str, str]] = []
    for address in candidates:
        try:
            drafts.append(_draft(live[address], names, live, declared))
        except _Skip as reason:
            skipped.append((address, str(reason)))
    _expand(drafts)
    kept, refused = _check(drafts, live)
    skipped += refused
    kept, alike = _lookalikes(kept, declared)
    skipped += alike
    if records_format == "csv":
        kept, inexpressible = _csv_expressible(kept)
        skipped += inexpressible
    return ImportResult(candidates, _files(kept, records_format), tuple(sorted(skipped)),
                        tuple(secret for draft in kept for secret, _ in draft.secrets))


def _referenced(declared: Mapping[str, Desired]) -> set[str]:
    """The environment variables the tree's storage targets already refer to: not to be reused."""
    names: set[str] = set()
    for item in declared.values():
        secret = kinds.kind(item.kind).secret_field
        if secret is not None:
            for _, text in iter_strings(item.fields.get(secret) or {}):
                names.update(env_references(text))
    return names


# --- documents ------------------------------------------------------------------------------


def _draft(obj: Live, names: _Variables, live: Mapping[str, Live], declared: Collection[str]) -> _Draft:
    """The object's document as its kind drafts it (``KindSpec.draft``), checked as the loader checks it."""
    spec = kinds.kind(obj.kind)
    name = obj.address.partition(":")[2]
    if spec.draft is None:
        raise _Skip(f"import cannot write a {spec.noun}")
    document = spec.draft(name, obj.fields)
    for needed in spec.needs(obj.fields):
        if needed not in live and needed not in declared:
            raise _Skip(f"it refers to {needed}, which is neither in the catalog nor in the tree (the plan "
                        "would refuse the broken link)")
    if spec.set_model is not None:  # declared as an item of a set (a record of its namespace's RecordSet)
        return _item(spec, obj.address, name.partition("/")[0], document)
    if spec.secret_field is not None:
        return _with_secrets(spec, name, document, obj, names)
    _refuse_credentials(document, ("apiVersion", "kind", *spec.identity))
    return _Draft(obj.address, obj.kind, document, _validate(spec.model, document))


def _with_secrets(spec: kinds.KindSpec, name: str, document: dict[str, Any], obj: Live, names: _Variables) -> _Draft:
    """A draft whose secret field is written with every secret as an ${env:...} reference."""
    assert spec.secret_field is not None
    secrets: list[tuple[Secret, str]] = []
    config = _config(obj.fields[spec.secret_field] or {}, (), False, name, names, obj.address, secrets)
    if config:
        document[spec.secret_field] = config
    return _Draft(obj.address, obj.kind, document, _validate(spec.model, document), secrets=secrets)


def _config(value: Any, path: tuple[str | int, ...], secret: bool, target: str, names: _Variables,
            address: str, secrets: list[tuple[Secret, str]]) -> Any:
    """The config with sorted keys and every secret string replaced by an ${env:...} reference."""
    if isinstance(value, Mapping):
        return {key: _config(value[key], (*path, key), secret or looks_secret(key), target, names, address,
                             secrets) for key in sorted(value)}
    if isinstance(value, list):
        return [_config(item, (*path, index), secret, target, names, address, secrets)
                for index, item in enumerate(value)]
    shape = credential_in(value) if isinstance(value, str) and not secret else None
    if isinstance(value, str) and (secret or shape):
        variable = names.claim(target, path)
        why = f"it holds {shape}" if shape else "its key names a secret"
        secrets.append((Secret(address, "config." + format_path(path), variable, why), value))
        return "${env:" + variable + "}"
    if isinstance(value, str) and "${" in value:
        raise _Skip(f"config.{format_path(path)} holds '${{', which a manifest reads as an environment "
                    "variable reference")
    return value


def _item(spec: kinds.KindSpec, address: str, group: str, item: dict[str, Any]) -> _Draft:
    """The draft of an object declared as an item of a set (a record in its namespace's RecordSet)."""
    problem = _set_problem(spec.name, group)
    if problem:
        raise _Skip(problem)
    _refuse_credentials(item, spec.identity[1:])
    return _Draft(address, spec.name, item, _validate(spec.set_item_model, item), group=group)


def _refuse_credentials(document: Mapping[str, Any], identity: Collection[str]) -> None:
    """_Skip an object holding a credential-looking string outside a storage target's config:
    no other field can take its value from the environment, and none is written in clear."""
    for name, value in document.items():
        if name in identity:
            continue
        for path, text in iter_strings(value, (name,)):
            shape = credential_in(text)
            if shape:
                raise _Skip(f"{format_path(path)} looks like {shape}, and only a storage target's config can "
                            "take a value from the environment; import never writes a credential in clear "
                            "(take it out of the catalog object, or declare the object by hand)")


def _expand(drafts: Sequence[_Draft]) -> None:
    """Replace each set item draft (a record's RecordSet item) by the object its set expands to,
    as the loader does."""
    items: dict[tuple[str, str], list[_Draft]] = {}
    for draft in drafts:
        if kinds.kind(draft.kind).set_model is not None:
            items.setdefault((draft.kind, draft.group), []).append(draft)
    for (kind, name), group in items.items():
        spec = kinds.kind(kind)
        assert spec.set_model is not None
        found = spec.set_model.model_construct(**{spec.identity[0]: name, spec.plural: tuple(d.model for d in group)})
        for draft, model in zip(group, found.expand(), strict=True):
            draft.model = model


@lru_cache(maxsize=1024)
def _set_problem(kind: str, name: str) -> str | None:
    """Why no set of ``kind`` can be named ``name`` (a RecordSet its namespace), checked once per name."""
    spec = kinds.kind(kind)
    assert spec.set_model is not None
    try:
        _validate(spec.set_model, {"apiVersion": API_VERSION, "kind": spec.set_kind, spec.identity[0]: name,
                                   spec.plural: []})
    except _Skip as reason:
        return str(reason)
    return None


def _validate(model: type[BaseModel], document: Mapping[str, Any]) -> Any:
    """The model the manifest loader would build from ``document``, or _Skip with its first problem."""
    try:
        return model.model_validate(document, by_alias=True, by_name=False)
    except ValidationError as error:
        detail = error.errors(include_url=False)[0]
        raise _Skip(f"it cannot be written as a valid manifest: {translate(detail, model)[0][2]}") from None


class _Variables:
    """Environment variable names for secret config values: RECONCILER_<TARGET>_<KEY>, unique
    among themselves and apart from every variable the tree already refers to."""

    def __init__(self, taken: Collection[str] = ()) -> None:
        self.taken: set[str] = set(taken)

    def claim(self, target: str, path: Sequence[str | int]) -> str:
        # Only A-Z, 0-9 and _ (ASCII: the class has no other letters) after a fixed
        # first word, so the name always matches ENV_NAME_PATTERN.
        base = _NOT_ALNUM.sub("_", "_".join(["RECONCILER", target, *map(str, path)]).upper())
        base = base[:VARIABLE_LENGTH - 4]  # room for a _<n> suffix
        name, n = base, 1
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name


# --- the check ------------------------------------------------------------------------------


def _check(drafts: Sequence[_Draft], live: Mapping[str, Live]) -> tuple[list[_Draft], list[tuple[str, str]]]:
    """Keep the drafts the loader reads back and the plan adopts with no change (one diff for all)."""
    kept: list[_Draft] = []
    skipped: list[tuple[str, str]] = []
    environ = {secret.variable: value for draft in drafts for secret, value in draft.secrets}
    desired: dict[str, Desired] = {}
    for draft in drafts:
        problem = _yaml_problem(draft)
        if problem:
            skipped.append((draft.address, problem))
            continue
        assert isinstance(draft.model, kinds.kind(draft.kind).model), "set items are expanded before the check"
        desired[draft.address], _, _ = _desired(Declared(draft.model, _NOWHERE), environ, True)
        kept.append(draft)
    result = diff(desired, {a: live[a] for a in desired}, {}, source="import")
    refused = {c.address: f"no manifest can hold its {', '.join(c.paths or c.fields)} exactly as the catalog has it "
                          "(the plan would show a change)" for c in result.changes}
    refused.update({f.address: f.message for f in result.findings if f.severity == "error"})
    skipped += refused.items()
    return [d for d in kept if d.address not in refused], skipped


def _lookalikes(drafts: Sequence[_Draft], declared: Mapping[str, Desired]) -> tuple[list[_Draft],
                                                                                   list[tuple[str, str]]]:
    """Skip every draft whose address differs from another's — a draft's, or an object the tree
    declares — only by letter case or Unicode normalisation: the loader refuses such a pair in
    one tree, so writing both would block every plan of the source."""
    in_tree: dict[str, str] = {}
    for address in declared:
        in_tree.setdefault(folded(address), address)
    alike: dict[str, list[str]] = {}
    for draft in drafts:
        alike.setdefault(folded(draft.address), []).append(draft.address)
    kept, skipped = [], []
    for draft in drafts:
        key = folded(draft.address)
        twin = in_tree.get(key)
        others = [address for address in alike[key] if address != draft.address]
        it = "it" + _spelling(draft.address)
        if twin is not None:
            where = declared[twin].location
            skipped.append((draft.address, f"{it} differs from {twin}{_spelling(twin)}, which the tree declares "
                            f"({where.path}:{where.line}), only by letter case or Unicode normalisation, and the "
                            "loader refuses such a pair in one tree; rename it in the catalog, or delete it there "
                            "if it is a stray copy"))
        elif others:
            named = ", ".join(address + _spelling(address) for address in others)
            skipped.append((draft.address, f"{it} differs from {named} only by letter case "
                            "or Unicode normalisation, and the loader refuses such a pair in one tree; rename one "
                            "of them in the catalog (or delete the stray copy) and import again"))
        else:
            kept.append(draft)
    return kept, skipped


def _spelling(address: str) -> str:
    """`` (spelled dataset:cafe\\u0301)`` for an address with non-ASCII characters, else nothing:
    look-alikes that differ only by Unicode normalisation print the same."""
    if address.isascii():
        return ""
    return f" (spelled {address.encode('ascii', 'backslashreplace').decode('ascii')})"


def _yaml_problem(draft: _Draft) -> str | None:
    """What the loader would refuse in the YAML itself (nesting depth, control characters in keys)."""
    # A set's item (a record) sits two levels down in its set's document (the items list, the item).
    spec = kinds.kind(draft.kind)
    value: Any = {spec.plural: [draft.document]} if spec.set_model is not None else draft.document
    for path, at_key, message in value_problems(value, True):
        inner = path[2:] if spec.set_model is not None else path
        where = format_path(inner[:-1] if at_key else inner)
        return f"it cannot be written as YAML the loader reads: {where + ': ' if where else ''}{message}"
    return None


# --- files ----------------------------------------------------------------------------------


def _files(drafts: Iterable[_Draft], records_format: str = "yaml") -> tuple[ImportFile, ...]:
    """storage-targets.yaml; datasets/<slug>.yaml; records/<namespace>.yaml (one RecordSet each,
    its records in records/<namespace>.jsonl or .csv with a ``records_format`` of that name).

    Names that would clash on a case-insensitive file system share one file.
    """
    grouped: dict[str, tuple[str, list[dict[str, Any]], list[str], list[Secret]]] = {}
    data: dict[str, tuple[str, str]] = {}

    def add(path: str, document: dict[str, Any], addresses: list[str], secrets: Iterable[Secret] = ()) -> None:
        entry = grouped.setdefault(path.casefold(), (path, [], [], []))
        entry[1].append(document)
        entry[2].extend(addresses)
        entry[3].extend(secrets)

    by_kind: dict[str, list[_Draft]] = {kind: [] for kind in kinds.NAMES}
    for draft in drafts:
        by_kind[draft.kind].append(draft)
    for spec in kinds.REGISTRY:
        if spec.set_model is not None:
            _add_sets(spec, by_kind[spec.name], records_format, add, data)
            continue
        for draft in by_kind[spec.name]:
            path = spec.import_file or f"{spec.directory}/{file_name(draft.address.partition(':')[2])}"
            add(path, draft.document, [draft.address], (secret for secret, _ in draft.secrets))
    files = [ImportFile(path, tuple(documents), tuple(addresses), tuple(secrets))
             for path, documents, addresses, secrets in grouped.values()]
    files += [ImportFile(path, (), (), data=text) for path, text in data.values()]
    return tuple(sorted(files, key=lambda file: file.path))


def _add_sets(spec: kinds.KindSpec, drafts: Sequence[_Draft], records_format: str,
              add: Callable[..., None], data: dict[str, tuple[str, str]]) -> None:
    """One set document per set (a RecordSet per namespace) as ``<directory>/<name>.yaml``, its items
    sorted by their last identity field, in the document or (``records_format`` jsonl or csv) in a
    data file beside it."""
    sets: dict[str, list[_Draft]] = {}
    for draft in drafts:
        sets.setdefault(draft.group, []).append(draft)
    last = spec.identity[-1]
    for name in sorted(sets):
        items = sorted(sets[name], key=lambda d: d.document[last])
        document: dict[str, Any] = {"apiVersion": API_VERSION, "kind": spec.set_kind, spec.identity[0]: name}
        path = f"{spec.directory}/{file_name(name)}"
        if records_format == "yaml":
            document[spec.plural] = [d.document for d in items]
        else:
            data_path = path.removesuffix(".yaml") + "." + records_format
            document["recordsFile"] = data_path.rpartition("/")[2]
            data[data_path.casefold()] = (data_path, records_text([d.document for d in items], records_format))
        add(path, document, [d.address for d in items])


def records_text(items: Sequence[Mapping[str, Any]], records_format: str) -> str:
    """Record items as a data file: one compact JSON object a line, or CSV rows under a header of
    every column (an empty cell sets nothing; tags joined by ';'; metadata as JSON text)."""
    from reconciler.manifests.datafile import CSV_COLUMNS

    if records_format == "jsonl":
        return "".join(_json_line(item) + "\n" for item in items)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for item in items:
        writer.writerow([_cell(column, item.get(column)) for column in CSV_COLUMNS])
    return out.getvalue()


def _json_line(item: Mapping[str, Any]) -> str:
    try:  # orjson's compact form is what the loader's fast path reads back without a second look
        return orjson.dumps(item).decode()
    except TypeError:  # an integer beyond 64 bits
        return json.dumps(item, separators=(",", ":"), ensure_ascii=False)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if column == "tags":
        return ";".join(value)
    if column == "metadata":
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_expressible(drafts: Sequence[_Draft]) -> tuple[list[_Draft], list[tuple[str, str]]]:
    """The drafts a CSV row can hold: no tag with ';' (the separator)."""
    kept, skipped = [], []
    for draft in drafts:
        in_file = kinds.kind(draft.kind).set_model is not None  # only sets' items go to data files
        if in_file and any(";" in tag for tag in draft.document.get("tags", ())):
            skipped.append((draft.address, "a tag holds ';', which separates tags in a CSV records file; "
                                           "import it with --records-format jsonl or yaml"))
        else:
            kept.append(draft)
    return kept, skipped


def file_name(name: str) -> str:
    """A file name for a slug or namespace: ``:`` and the like become ``_``; never hidden."""
    stem = _NOT_FILE_SAFE.sub("_", name)
    return ("_" + stem if stem.startswith(".") else stem) + ".yaml"
