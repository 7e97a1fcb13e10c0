"""Reading blobs straight from git's object store through one long-lived ``git cat-file --batch``."""

from __future__ import annotations

import subprocess
from pathlib import Path
from types import TracebackType
from typing import IO

from reconciler.errors import ConfigurationError
from reconciler.git.command import environment, missing_git

# A blob larger than this is not read (the manifest loader refuses such files anyway).
MAX_BLOB_BYTES = 64 * 1024 * 1024


class BlobReader:
    """Blob contents by object name, one process for all of them (started on first use).

    Use as a context manager, or call ``close``; a blob is read once however often it
    is asked for only if the caller caches it (parsing is the caller's business). A name
    ``<commit>:<path>`` of a symbolic link reads the file it leads to inside the repository
    (git's ``--follow-symlinks``); one leading outside the repository, nowhere or in a loop
    reads as absent.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BlobReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def _started(self) -> tuple[IO[bytes], IO[bytes]]:
        if self._process is None:
            try:
                self._process = subprocess.Popen(
                    ["git", "--no-pager", "cat-file", "--batch", "--follow-symlinks"], cwd=self.root,
                    env=environment(),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
            except OSError as error:
                raise missing_git("cat-file", self.root, error) from None
        assert self._process.stdin is not None and self._process.stdout is not None
        return self._process.stdin, self._process.stdout

    def read(self, sha: str) -> bytes | None:
        """The blob's bytes; None when there is no such blob or it is over the size limit. ``sha``
        is an object name: a blob's, or ``<commit>:<path>`` (any path git can hold but a line break,
        which the batch protocol cannot carry)."""
        if "\n" in sha:
            return None
        stdin, stdout = self._started()
        try:
            stdin.write(sha.encode("utf-8", "surrogateescape") + b"\n")
            stdin.flush()
            header = stdout.readline()
        except (BrokenPipeError, ValueError):
            raise ConfigurationError(f"git cat-file stopped while reading {sha} in {self.root}") from None
        if header.endswith((b" missing\n", b" ambiguous\n")):
            return None  # "<name> missing": the name is given back as asked, spaces and all
        parts = header.split()
        if len(parts) == 2 and parts[0] in _UNFOLLOWED:
            # ``<commit>:<path>`` naming a symbolic link that leads outside the repository, nowhere,
            # in a loop or through a file: git says so and gives the name; there is no blob.
            _skip(stdout, int(parts[1]) + 1)
            return None
        if len(parts) != 3:
            if not header:
                raise ConfigurationError(f"git cat-file stopped while reading {sha} in {self.root}")
            return None  # "<name> missing" or "<name> ambiguous"
        kind, size = parts[1], int(parts[2])
        if kind != b"blob" or size > MAX_BLOB_BYTES:
            _skip(stdout, size + 1)
            return None
        return _read_exactly(stdout, size + 1)[:size]  # the content is followed by a newline

    def close(self) -> None:
        """Stop the process (idempotent)."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None
        try:
            process.stdin.close()
        except OSError:
            pass
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# What ``cat-file --batch --follow-symlinks`` answers for a link it cannot follow to a blob.
_UNFOLLOWED = frozenset({b"symlink", b"dangling", b"loop", b"notdir"})


def _skip(stream: IO[bytes], size: int) -> None:
    left = size
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            raise ConfigurationError("git cat-file ended in the middle of an object")
        left -= len(chunk)


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks = []
    left = size
    while left > 0:
        chunk = stream.read(left)
        if not chunk:
            raise ConfigurationError("git cat-file ended in the middle of an object")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)
