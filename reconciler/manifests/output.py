"""Writing manifest files under one directory: every target checked first, no symbolic link
followed below it, nothing outside it, and each file whole or not at all. A file may be
rewritten only when it still holds what the caller read from it (an append)."""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from reconciler.errors import ConfigurationError
from reconciler.core.text import clean

# Directories are opened, never followed: a symbolic link where a directory or file
# should be fails the open (ELOOP or ENOTDIR) instead of leading elsewhere.
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# A file system without hard links: a new file is renamed into place after one more check.
_NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV})


@dataclass(frozen=True)
class Target:
    """One file to write: its path below the directory (``datasets/x.yaml``), as shown, and its text.

    ``expected``: the file exists and is rewritten with ``text`` only while it still holds
    exactly these bytes (what was read to compose ``text``, an append). ``replace``: an
    existing file may be replaced whatever it holds.
    """

    relative: str
    shown: Path
    text: str
    expected: bytes | None = None
    replace: bool = False

    @property
    def parts(self) -> tuple[str, ...]:
        return PurePosixPath(self.relative).parts


@dataclass(frozen=True)
class Checked:
    """The targets that passed, where the directory really is, and which targets exist already."""

    directory: Path  # the real location (symbolic links above it resolved once, and checked)
    targets: tuple[Target, ...]
    existing: tuple[Target, ...]

    def real(self, target: Target) -> Path:
        """Where ``target`` is written."""
        return self.directory.joinpath(*target.parts)


def check(directory: Path, texts: Mapping[str, str], *, boundary: Path | None,
          expected: Mapping[str, bytes] | None = None, replace: Collection[str] = ()) -> Checked:
    """Every target below ``directory`` checked before anything is written.

    Refuses, naming each one: a symbolic link where a file or directory is to be
    written (wherever it leads), a file where a directory is needed or a directory
    where a file goes, and — when ``directory`` lies inside ``boundary`` (the
    repository) — a directory that leads out of it through a symbolic link.
    ``expected`` and ``replace`` name targets that are appended to or replaced (Target).
    """
    expected = expected or {}
    for relative in texts:
        parts = PurePosixPath(relative).parts
        if not parts or any(part in ("", ".", "..") or "/" in part for part in parts):
            raise ValueError(f"not a plain relative path: {relative!r}")  # file names are made safe upstream
    escape = _escape(directory, boundary) if boundary is not None else None
    if escape is not None:
        link, leads = escape
        raise ConfigurationError(f"refusing to import into {clean(directory)}: {clean(link)} is a symbolic link "
                                 f"leading outside the repository (to {clean(leads)}); nothing was written")
    real = Path(os.path.realpath(directory))
    if real.exists() and not real.is_dir():
        raise ConfigurationError(f"refusing to import into {clean(directory)}: it is not a directory; nothing "
                                 "was written")
    targets = tuple(Target(relative, directory / relative, text, expected.get(relative), relative in replace)
                    for relative, text in texts.items())
    problems: list[str] = []
    existing = []
    for target in targets:
        found = _obstacle(directory, real, target)
        if found == "exists":
            existing.append(target)
        elif found:
            problems.append(found)
    if problems:
        raise ConfigurationError("refusing to write through symbolic links or over directories, even with "
                                 "--force (import never follows a link; remove them or choose another --out); "
                                 "nothing was written:\n  " + "\n  ".join(dict.fromkeys(problems)))
    return Checked(real, targets, tuple(existing))


def read(checked: Checked, target: Target, limit: int) -> bytes | None:
    """The bytes of an existing target (checked: no link leads to it), or None when it holds
    more than ``limit`` bytes."""
    fd = os.open(checked.real(target), os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as stream:
        data = stream.read(limit + 1)
    return data if len(data) <= limit else None


def _escape(directory: Path, boundary: Path) -> tuple[Path, Path] | None:
    """The symbolic link through which ``directory``, once inside ``boundary``, leaves it."""
    inside_of = boundary.resolve()
    path = directory if directory.is_absolute() else Path.cwd() / directory
    current = Path(path.anchor)
    inside = False
    for part in path.parts[1:]:
        current = current / part
        real = Path(os.path.realpath(current))
        if real.is_relative_to(inside_of):
            inside = True
        elif inside and current.is_symlink():
            return current, real
        else:
            inside = False  # left by "..", as typed: the user's choice of directory
    return None


def _obstacle(directory: Path, real: Path, target: Target) -> str | None:
    """What stands where ``target`` goes: a problem, ``"exists"`` for a file, or None."""
    parts = target.parts
    for depth in range(1, len(parts) + 1):
        shown = directory.joinpath(*parts[:depth])
        try:
            mode = os.lstat(real.joinpath(*parts[:depth])).st_mode
        except FileNotFoundError:
            return None
        except OSError as error:
            return f"{clean(shown)} ({error.strerror or error})"
        last = depth == len(parts)
        if stat.S_ISLNK(mode):
            leads = Path(os.path.realpath(real.joinpath(*parts[:depth])))
            where = "inside" if leads.is_relative_to(real) else "outside"
            return f"{clean(shown)} (a symbolic link to {clean(leads)}, {where} {clean(directory)})"
        if not last and not stat.S_ISDIR(mode):
            return f"{clean(shown)} (not a directory)"
        if last and stat.S_ISDIR(mode):
            return f"{clean(shown)} (a directory)"
        if last and not stat.S_ISREG(mode):
            return f"{clean(shown)} (not a regular file)"
    return "exists"


def write(checked: Checked, *, replace: bool) -> list[Path]:
    """Write every checked target, each through a temporary file renamed into place.

    Directories are created one level at a time and opened without following links;
    an existing file is replaced only with ``replace`` (or the target's own flag), and
    one a target appends to only while it still holds what was read. On a failure the
    files this call created are removed again, and the error names the file. Returns
    the targets' shown paths, in order.
    """
    created: list[tuple[int, str]] = []
    written: list[Path] = []
    try:
        with _directory(checked.directory) as root, _open_directories() as opened:
            try:
                for target in checked.targets:
                    parent = opened(root, target.parts[:-1])
                    if _place(parent, target.parts[-1], target.text.encode("utf-8"), replace or target.replace,
                              target.expected):
                        created.append((parent, target.parts[-1]))
                    written.append(target.shown)
            except OSError:
                for parent, name in created:  # while their directories are still open
                    with suppress(OSError):
                        os.unlink(name, dir_fd=parent)
                raise
    except OSError as error:
        failed = checked.targets[len(written)].shown if checked.targets else checked.directory
        kept = " (files it replaced or appended to stay so)" if len(created) < len(written) else ""
        raise ConfigurationError(f"cannot write {clean(failed)}: {error.strerror or error}; the files this "
                                 f"import created are removed again{kept}") from None
    return written


@contextmanager
def _directory(real: Path) -> Iterator[int]:
    """A descriptor of ``real`` (already resolved), creating what is missing one level at a time."""
    existing = real
    while not existing.exists():
        existing = existing.parent
    fd = os.open(existing, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    try:
        for part in real.relative_to(existing).parts:
            inner = _subdirectory(fd, part)
            os.close(fd)
            fd = inner
        yield fd
    finally:
        os.close(fd)


@contextmanager
def _open_directories() -> Iterator[_Opener]:
    """Subdirectory descriptors opened once for all targets, closed at the end."""
    opener = _Opener()
    try:
        yield opener
    finally:
        for fd in opener.fds.values():
            os.close(fd)


class _Opener:
    def __init__(self) -> None:
        self.fds: dict[tuple[str, ...], int] = {}

    def __call__(self, root: int, parts: Sequence[str]) -> int:
        fd = root
        for depth in range(1, len(parts) + 1):
            key = tuple(parts[:depth])
            if key not in self.fds:
                self.fds[key] = _subdirectory(fd, parts[depth - 1])
            fd = self.fds[key]
        return fd


def _subdirectory(parent: int, name: str) -> int:
    """Open (creating it if need be) the directory ``name`` in ``parent``, never through a link."""
    try:
        os.mkdir(name, 0o777, dir_fd=parent)
    except FileExistsError:
        pass
    return os.open(name, _DIRECTORY_FLAGS, dir_fd=parent)


def _place(parent: int, name: str, data: bytes, replace: bool, expected: bytes | None = None) -> bool:
    """Write ``data`` to a new hidden file beside ``name`` and move it into place; True when
    ``name`` did not exist before. Without ``replace`` an existing ``name`` is never touched;
    with ``expected``, it is replaced (keeping its permissions) only while it holds exactly
    those bytes."""
    temporary = f".{name}.{secrets.token_hex(6)}.tmp"  # hidden: the loader never reads it
    fd = os.open(temporary, _NEW_FILE_FLAGS, 0o666, dir_fd=parent)
    try:
        try:
            if expected is not None:
                with suppress(OSError):
                    os.fchmod(fd, stat.S_IMODE(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode))
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if expected is not None:
            if _content(parent, name) != expected:
                raise OSError(errno.EAGAIN, "it changed since import read it; run import again")
            return _move(parent, temporary, name, True)
        return _move(parent, temporary, name, replace)
    finally:
        with suppress(FileNotFoundError):  # moved into place: nothing left to remove
            os.unlink(temporary, dir_fd=parent)


def _move(parent: int, temporary: str, name: str, replace: bool) -> bool:
    if replace:
        new = not _exists(parent, name)
        os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)  # replaces a link, never follows it
    else:
        try:  # a hard link never replaces: the file appeared since the check, or it is refused
            os.link(temporary, name, src_dir_fd=parent, dst_dir_fd=parent, follow_symlinks=False)
        except OSError as error:
            if error.errno not in _NO_LINKS:
                raise
            if _exists(parent, name):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), name) from None
            os.rename(temporary, name, src_dir_fd=parent, dst_dir_fd=parent)
        new = True
    with suppress(OSError):  # not every file system syncs a directory; the rename stands either way
        os.fsync(parent)
    return new


def _content(parent: int, name: str) -> bytes | None:
    """What ``name`` in ``parent`` holds (never through a link); None when it is gone."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), dir_fd=parent)
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as stream:
        return stream.read()


def _exists(parent: int, name: str) -> bool:
    try:
        os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return False
    return True

