"""Safe file writes: unique temporary files, atomic replace, no writing through links.

Every file the package writes goes through these helpers:

- :func:`atomic_writer` / :func:`atomic_write` write to a unique temporary
  file in the target's own folder (``mkstemp``: unpredictable name, created
  with ``O_EXCL``), fsync it, then ``os.replace`` it onto the target. A crash
  leaves the old file (or none), never half a file; an existing symlink at the
  target is replaced by the new file, its target is never written.
- :func:`open_append` opens a file the package keeps appending to (a log, a
  resumable corpus) with ``O_NOFOLLOW``, so a symlink planted at that path
  is refused with a clear error instead of being written through.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write", "atomic_writer", "fsync_dir", "open_append", "refuse_symlink"]

_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk; a no-op where unsupported."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def refuse_symlink(path: str | os.PathLike, what: str = "file") -> None:
    """Raise ``ValueError`` when ``path`` is a symbolic link (the package never writes through one)."""
    if os.path.islink(path):
        raise ValueError(
            f"refusing to write the {what} {os.fspath(path)!r}: it is a symbolic link (to "
            f"{os.readlink(path)!r}); remove the link or choose another path"
        )


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w", *, encoding: str | None = "utf-8") -> Iterator[IO]:
    """A file object whose content replaces ``path`` atomically when the block ends without error.

    Parameters
    ----------
    path : path-like
        The target. Its folder is created when missing. A symlink at ``path``
        is replaced (the link itself), never written through.
    mode : {"w", "wb"}
        Text or binary.
    encoding : str or None
        Text encoding (ignored in binary mode).
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_writer mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, data: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_writer`); returns the path."""
    with atomic_writer(path, "wb" if isinstance(data, bytes) else "w", encoding=encoding) as fh:
        fh.write(data)
    return Path(path)


def open_append(path: str | os.PathLike, *, binary: bool = False, encoding: str = "utf-8") -> IO:
    """Open ``path`` for appending (created when missing), refusing a symlink at that path.

    Raises
    ------
    ValueError
        When ``path`` is a symbolic link.
    """
    refuse_symlink(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | _NOFOLLOW, 0o644)
    except OSError as err:
        if os.path.islink(path):  # created between the check and the open
            refuse_symlink(path)
        raise OSError(f"cannot open {os.fspath(path)!r} for appending: {err.strerror}") from err
    return os.fdopen(fd, "ab" if binary else "a", encoding=None if binary else encoding)
