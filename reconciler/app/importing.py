"""Where import's files go in a tree that already has some: new files, documents appended to the
file import would write, or a new file beside it; a file the tree declares objects in is never
overwritten."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath
from typing import Any, Final

from reconciler.app.importer import ImportFile
from reconciler.app.workspace import Workspace
from reconciler.errors import ConfigurationError, ReconcilerError
from reconciler.manifests import output
from reconciler.manifests.emit import dump_documents
from reconciler.manifests.yamlread import MAX_FILE_BYTES
from reconciler.core.text import clean

# The largest file import appends to: what the loader reads (a bigger one gets a file beside it).
MAX_APPEND_BYTES: Final = MAX_FILE_BYTES


@dataclass(frozen=True)
class Placement:
    """What import writes, checked: each file new, appended to, beside another, or replaced."""

    checked: output.Checked
    appended: frozenset[str] = frozenset()  # relative paths whose file gets more documents
    beside: Mapping[str, str] = field(default_factory=dict)  # new relative path → the file it stands beside
    replaced: frozenset[str] = frozenset()

    def lines(self, written: Sequence[Path]) -> list[str]:
        """One line per file, in writing order: ``wrote X``, ``appended to X`` or ``wrote X (beside Y …)``."""
        out = []
        for target, shown in zip(self.checked.targets, written, strict=True):
            if target.relative in self.appended:
                out.append(f"appended to {clean(shown)}")
            elif target.relative in self.beside:
                out.append(f"wrote {clean(shown)} (beside {clean(self.beside[target.relative])}, which cannot take "
                           "more documents and stay as it is)")
            else:
                out.append(f"wrote {clean(shown)}")
        return out


def file_text(file: ImportFile, header: str) -> str:
    """The YAML of one import file: the header comment (and the variables to set), then its documents
    (a data file: its text, which has no place for a comment)."""
    if file.data is not None:
        return file.data
    return dump_documents(file.documents, header="\n\n".join(filter(None, (header, file.comment()))))


def place(files: Sequence[ImportFile], directory: Path, header: str, declared: Mapping[str, Any], *,
          tree: Path, boundary: Path, force: bool) -> Placement:
    """Decide, and check, where each file goes.

    A file that does not exist is written. One that exists and in which the tree declares
    objects, or that lies inside the tree, gets the new documents appended, when the file
    then reads back with every object it declared unchanged and the new ones added;
    otherwise the documents go to a new file beside it (``records/obs.2.yaml``). With
    ``force``, an existing file that declares no object of the tree is replaced. Any other
    existing file (outside the tree, declaring nothing) is refused, as it always was.
    """
    texts = {file.path: file_text(file, header) for file in files}
    first = output.check(directory, texts, boundary=boundary)
    holding = Counter(Path(item.location.path).resolve() for item in declared.values())
    inside = tree.resolve()
    final: dict[str, str] = dict(texts)
    expected: dict[str, bytes] = {}
    beside: dict[str, str] = {}
    replaced: set[str] = set()
    refused: list[str] = []
    by_path = {file.path: file for file in files}
    for target in first.existing:
        real = first.real(target)
        if not holding[real] and force:
            replaced.add(target.relative)
        elif not holding[real] and not real.is_relative_to(inside):
            refused.append(clean(target.shown))
        else:
            old = output.read(first, target, MAX_APPEND_BYTES)
            text = appended(old, texts[target.relative], str(target.shown), by_path[target.relative].addresses)
            if text is not None and old is not None:
                final[target.relative], expected[target.relative] = text, old
            else:
                name = _free_name(first, target.relative, final)
                final[name] = final.pop(target.relative)
                beside[name] = str(target.shown)
    if refused:
        raise ConfigurationError("refusing to overwrite existing files (pass --force to overwrite them): "
                                 + ", ".join(refused))
    checked = output.check(directory, final, boundary=boundary, expected=expected, replace=replaced)
    moved = [target for target in checked.existing if target.expected is None and not target.replace]
    if moved:
        raise ConfigurationError("files appeared while import was choosing where to write; nothing was written: "
                                 + ", ".join(clean(target.shown) for target in moved))
    return Placement(checked, frozenset(expected), beside, frozenset(replaced))


def appended(old: bytes | None, addition: str, display: str, adding: Collection[str]) -> str | None:
    """``old`` with ``addition`` appended as further YAML documents (in the file's own line
    endings), or None when the result would not read back as ``old``'s objects, unchanged,
    plus exactly the ``adding`` ones — or ``old`` is too big, not UTF-8, or not valid."""
    from reconciler.manifests.loader import load_bytes

    if old is None:
        return None
    try:
        text = old.decode("utf-8")
    except UnicodeDecodeError:
        return None
    newline = "\r\n" if "\r\n" in text else "\n"
    joined = text + ("" if not text or text.endswith("\n") else newline) + ("---\n" + addition).replace(
        "\n", newline)
    data = joined.encode("utf-8")
    if len(data) > MAX_APPEND_BYTES:
        return None
    before, after = load_bytes(old, display), load_bytes(data, display)
    if before.problems or after.problems:
        return None
    was, now = _declared(before.declared), _declared(after.declared)
    if was is None or now is None or set(was) & set(adding) or set(now) != set(was) | set(adding):
        return None
    return joined if all(now[address] == value for address, value in was.items()) else None


def _declared(items: Sequence[Any]) -> dict[str, Any] | None:
    """Each object's declared value by address; None when an address repeats."""
    from reconciler.app.attribution import declared_value
    from reconciler.manifests.desired import desired_of

    out: dict[str, Any] = {}
    for item in items:
        value = desired_of(item)
        if value.address in out:
            return None
        out[value.address] = declared_value(value)
    return out


def _free_name(checked: output.Checked, relative: str, taken: Collection[str]) -> str:
    """``records/obs.2.yaml`` (then ``.3``…): a name beside ``relative`` that neither exists nor
    is another file of this import (compared as a case-insensitive file system would)."""
    path = PurePosixPath(relative)
    used = {name.casefold() for name in taken}
    number = 2
    while True:
        candidate = str(path.with_name(f"{path.stem}.{number}{path.suffix}"))
        if candidate.casefold() not in used and not checked.directory.joinpath(candidate).exists() \
                and not checked.directory.joinpath(candidate).is_symlink():
            return candidate
        number += 1


def with_free_data_names(files: Sequence[ImportFile], directory: Path) -> list[ImportFile]:
    """The files, each RecordSet that names a data file moved with it to ``records/<ns>.N.*`` when
    either name is taken under ``directory``: the pair is written new, never appended to or
    split (a manifest written beside would still name the old data file)."""
    taken = {file.path.casefold() for file in files}
    out: list[ImportFile] = []
    moved: dict[str, str] = {}
    for file in files:
        reference = next((d.get("recordsFile") for d in file.documents if "recordsFile" in d), None)
        if file.data is not None or not isinstance(reference, str):
            continue
        stem, suffix = PurePosixPath(file.path), PurePosixPath(reference).suffix
        name, pair, number = file.path, str(stem.with_name(reference)), 1
        while _exists(directory, name, pair) or (number > 1 and {name.casefold(), pair.casefold()} & taken):
            number += 1
            name = str(stem.with_name(f"{stem.stem}.{number}.yaml"))
            pair = str(stem.with_name(f"{stem.stem}.{number}{suffix}"))
        if name != file.path:
            documents = tuple({**d, "recordsFile": PurePosixPath(pair).name} if "recordsFile" in d else d
                              for d in file.documents)
            moved[str(stem.with_name(reference))] = pair
            taken |= {name.casefold(), pair.casefold()}
            file = replace(file, path=name, documents=documents)
        out.append(file)
    for file in files:
        if file.data is not None:
            out.append(replace(file, path=moved.get(file.path, file.path)))
        elif not any("recordsFile" in d for d in file.documents):
            out.append(file)
    return sorted(out, key=lambda file: file.path)


def _exists(directory: Path, *relative: str) -> bool:
    return any((directory / path).exists() or (directory / path).is_symlink() for path in relative)


def import_tree(ws: Workspace, targets: Sequence[str], directory: Path | None, *, force: bool,
                environ: Mapping[str, str], say: Callable[[str], None], warn: Callable[[str], None],
                records_format: str = "yaml") -> str:
    """Write manifests for the catalog objects no source manages (or only ``targets``) under
    ``directory`` (default: the tree's ``imported/``), placed beside what the tree holds.
    ``say`` is told of each file written, ``warn`` of each object left out and each environment
    variable to set; returns the summary line."""
    from reconciler.app.importer import plan_import
    from reconciler.core.checks import check_address
    from reconciler.manifests.desired import desired_state

    for target in targets:
        check_address(target)
    declared = desired_state(ws.tree, environ=environ, resolve_env=False).desired
    with ws.catalog.reading() as reader:
        catalog = reader.state("", ())
    result = plan_import(catalog.live, catalog.applied, declared, targets, records_format)
    for address, reason in result.skipped:
        warn(f"warning: skipped {clean(address)}: {clean(reason)}")
    if not result.candidates:
        return "Nothing to import: every catalog object is managed."
    if not result.files:
        raise ReconcilerError(f"nothing imported: none of the {len(result.candidates)} unmanaged object(s) "
                              "can be written as a manifest (see the warnings above)")
    directory = directory if directory is not None else ws.tree / "imported"
    catalog_name = "the embedded catalog (.reconciler/)" if ws.catalog.embedded else ws.database
    header = (f"Imported by reconciler import from {clean(catalog_name)} on "
              f"{datetime.now(UTC).date().isoformat()}; review before committing.")
    boundary = ws.repo.root if ws.repo is not None else ws.tree
    files = with_free_data_names(result.files, directory) if records_format != "yaml" else list(result.files)
    placement = place(files, directory, header, declared, tree=ws.tree, boundary=boundary, force=force)
    for line in placement.lines(output.write(placement.checked, replace=False)):
        say(line)
    for secret in result.secrets:
        warn(f"warning: {clean(secret.address)}: {clean(secret.path)} is written as ${{env:{secret.variable}}}; "
             f"set {secret.variable} to its value before plan or apply")
    return result.summary(clean(directory))
