"""Files: writing them so that a crash never leaves a half-written one behind, and naming their content."""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
from pathlib import Path


def atomic_write(path: str | Path, text: str) -> None:
    """Replace `path` with `text` atomically: temp file in the same directory, fsync, rename.

    A reader (or a crash at any point) sees either the old file or the new one, never a mix.
    """
    path = Path(path)
    if path.is_dir():  # before making a temp file beside it, which would name the wrong file in the error
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.fchmod(fd, path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~current_umask())
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as e:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if (
            isinstance(e, OSError) and e.errno and e.filename != str(path)
        ):  # a full disk fails in write(): name the file
            raise type(e)(e.errno, e.strerror, str(path)) from e
        raise


def current_umask() -> int:
    """The process umask (reading it means setting it, so set it straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def git_blob_sha(data: bytes) -> str:
    """The sha git (and GitHub's API) gives a file with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
