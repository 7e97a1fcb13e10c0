"""Where a RecordSet's data file (recordsFile) is: on disk inside the tree, or in one version of the tree in git."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Final, Protocol

from reconciler.core.kinds.record import RECORDS_FILE_SUFFIXES
from reconciler.errors import DataFileError
from reconciler.manifests.yamlread import MAX_FILE_BYTES

DATA_SUFFIXES: Final = RECORDS_FILE_SUFFIXES


class DataFiles(Protocol):
    """Where a loader finds the data files its manifests name."""

    def read(self, manifest: str, reference: str) -> tuple[str, bytes]:
        """(the data file's path as shown, its bytes) for ``reference`` written in ``manifest``
        (a path as the loader shows it); DataFileError when it cannot be read."""
        ...


def is_data_file(path: str) -> bool:
    """Whether ``path`` names a data file by its suffix (never read as a manifest)."""
    return path.endswith(DATA_SUFFIXES)


def _hidden_or_outside(relative: str) -> str | None:
    parts = relative.split("/")
    if relative == ".." or parts[0] == "..":
        return "leads outside the manifest tree"
    if any(part.startswith(".") for part in parts):
        return "names a hidden file or directory (the tree skips names starting with '.')"
    return None


class DiskFiles:
    """Data files on disk under ``root`` (the tree: a directory, or one file and its directory).

    A reference is relative to its manifest's directory; after ``..`` is resolved and
    symbolic links are followed it must still be inside the tree, as the tree's own
    walk requires of manifests (docs/manifests.md, "Records from data files")."""

    def __init__(self, root: Path) -> None:
        base = root if root.is_dir() else root.parent
        self.base = Path(os.path.abspath(base))
        self.real = base.resolve()
        self.read_paths: dict[str, str] = {}  # data file (as shown) → the manifest that named it

    def read(self, manifest: str, reference: str) -> tuple[str, bytes]:
        lexical = Path(os.path.normpath(os.path.join(os.path.abspath(os.path.dirname(manifest)), reference)))
        try:
            relative = lexical.relative_to(self.base).as_posix()
        except ValueError:
            raise DataFileError(f"recordsFile: {reference!r} leads outside the manifest tree") from None
        wrong = _hidden_or_outside(relative)
        if wrong is not None:
            raise DataFileError(f"recordsFile: {reference!r} {wrong}")
        try:
            real = lexical.resolve(strict=True)
        except (OSError, RuntimeError):
            raise DataFileError(f"recordsFile: no such file {reference!r}") from None
        if not real.is_relative_to(self.real):
            raise DataFileError(f"recordsFile: {reference!r} is a symbolic link that leads outside the "
                                f"manifest tree (to {real})")
        if not real.is_file():
            raise DataFileError(f"recordsFile: {reference!r} is not a file")
        try:
            with real.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as error:
            raise DataFileError(f"recordsFile: cannot read {reference!r}: {error.strerror or error}") from None
        shown = shown_path(lexical)
        self.read_paths[shown] = manifest
        return shown, data


class VersionFiles:
    """Data files of one version of the tree (a commit), by repository-relative path: ``lookup``
    gives a file's bytes (None: no such file); ``links``, the symbolic links of that version
    (path → target as written), which are followed as on disk: they must lead to a file
    inside the tree."""

    # Links followed one after another before a reference is taken for a loop.
    MAX_LINKS = 40

    def __init__(self, root: str, lookup: Callable[[str], bytes | None],
                 links: Mapping[str, str] | None = None) -> None:
        self.root = root.strip("/")
        self.lookup = lookup
        self.links = links or {}
        self.read_paths: dict[str, str] = {}

    def read(self, manifest: str, reference: str) -> tuple[str, bytes]:
        path = posixpath.normpath(posixpath.join(posixpath.dirname(manifest), reference))
        wrong = _hidden_or_outside(self._relative(path))
        if wrong is not None:
            raise DataFileError(f"recordsFile: {reference!r} {wrong}")
        path = self._followed(path, reference)  # shown as the file it leads to, as on disk (repo_relative)
        data = self.lookup(path)
        if data is None:
            raise DataFileError(f"recordsFile: no such file {reference!r}")
        self.read_paths[path] = manifest
        return path, data

    def _followed(self, path: str, reference: str) -> str:
        """``path`` with every symbolic link in it (the file, or a directory on the way) replaced
        by where it leads; DataFileError when one leads outside the tree, or in a loop."""
        hops = 0
        done: list[str] = []
        left = path.split("/")
        while left:
            here = "/".join([*done, left[0]])
            target = self.links.get(here)
            if target is None:
                done.append(left.pop(0))
                continue
            hops += 1
            if hops > self.MAX_LINKS:
                raise DataFileError(f"recordsFile: no such file {reference!r}")
            led = posixpath.normpath(posixpath.join(posixpath.dirname(here), target))
            if target.startswith("/") or self._relative(led).split("/")[0] == "..":
                raise DataFileError(f"recordsFile: {reference!r} is a symbolic link that leads outside the "
                                    f"manifest tree (to {target})")
            done, left = [], [*led.split("/"), *left[1:]]
        return "/".join(done)

    def _relative(self, path: str) -> str:
        """``path`` (repository-relative) relative to the tree, or ``..`` when it is outside."""
        base = "" if self.root in ("", ".") else posixpath.dirname(self.root) if is_manifest_name(self.root) \
            else self.root
        return path if not base else path[len(base) + 1:] if path.startswith(base + "/") else ".."


def is_manifest_name(path: str) -> bool:
    """Whether ``path`` names a manifest file by its suffix."""
    return path.endswith((".yaml", ".yml"))


def shown_path(path: Path) -> str:
    """``path`` relative to the working directory when it is under it (as the loader shows files)."""
    cwd = Path.cwd()
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)


# --- what a manifest file names, without loading it -------------------------------------------


def references(data: bytes) -> list[str] | None:
    """The ``recordsFile`` values a manifest file's RecordSets write, read without validating
    anything (a plan uses this to digest the files a manifest depends on); None when the file
    cannot be read that way (the loader will say why)."""
    if b"recordsFile" not in data:
        return []
    import yaml

    try:
        documents = list(yaml.load_all(data, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except (yaml.YAMLError, ValueError):
        return None
    found = [document.get("recordsFile") for document in documents
             if isinstance(document, dict) and document.get("kind") == "RecordSet" and "recordsFile" in document]
    return [item for item in found if isinstance(item, str)] if all(isinstance(item, str) for item in found) \
        else None
