"""Atomic file replacement: the one way fedstat writes a file that a reader may open at any time.

Data goes to ``<path>.tmp`` next to the destination; the temporary file is flushed and fsynced,
then renamed over ``path`` (and, with ``sync_dir``, the directory is fsynced so the rename itself
survives a crash). On any exception the temporary file is removed and the exception re-raised, so
a reader sees the old file or the new one, never half of one.

- :func:`atomic_path`: a context manager yielding the temporary path, for writers that open the
  file themselves (pgenlib, matplotlib, gzip);
- :func:`atomic_write_bytes` and :func:`atomic_write_text`: whole contents at once, or a text
  file written in chunks or by a callable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

__all__ = ["atomic_path", "atomic_write_bytes", "atomic_write_text", "fsync_dir"]


def fsync_dir(directory: str | Path) -> None:
    """fsync a directory, so that a rename in it is durable."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: How a temporary file is created: a new regular file (never one already there, never through a
#: symbolic link), closed on exec.
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)


def _create(tmp: Path, file_mode: int | None) -> int:
    """A descriptor of a new ``tmp`` (a stale one from a crash is removed first)."""
    tmp.unlink(missing_ok=True)
    return os.open(tmp, _CREATE, 0o666 if file_mode is None else file_mode)


def _commit(tmp: Path, path: Path, sync_dir: bool) -> None:
    os.replace(tmp, path)
    if sync_dir:
        fsync_dir(path.parent)


@contextmanager
def atomic_path(
    path: str | Path, *, file_mode: int | None = None, sync_dir: bool = False, tmp: str | Path | None = None
) -> Iterator[Path]:
    """Yield ``<path>.tmp`` to write; on a clean exit fsync it and rename it over ``path``.

    For writers that open the file themselves (pgenlib, matplotlib, gzip); whole contents are
    better written with :func:`atomic_write_bytes` / :func:`atomic_write_text`, which write
    through the descriptor that created the file.

    Parameters
    ----------
    path : destination.
    file_mode : permission bits to create the temporary file with (e.g. ``0o600`` for a private
        key): it never exists with wider ones. None: the writer creates it (the process umask).
    sync_dir : also fsync the directory after the rename.
    tmp : the temporary file, in the destination's directory; None: ``<path>.tmp``. A name of its
        own for writers that may race for the same destination.
    """
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp") if tmp is None else Path(tmp)
    try:
        if file_mode is not None:
            os.close(_create(tmp, file_mode))
        yield tmp
        _fsync_file(tmp)
        _commit(tmp, path, sync_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def _atomic_fd(path: str | Path, file_mode: int | None, sync_dir: bool) -> Iterator[int]:
    """A descriptor of a new ``<path>.tmp``; on a clean exit fsynced, closed and renamed over ``path``."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    fd = _create(tmp, file_mode)
    try:
        try:
            yield fd
            os.fsync(fd)
        finally:
            os.close(fd)
        _commit(tmp, path, sync_dir)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | Path, data: bytes, *, file_mode: int | None = None, sync_dir: bool = False) -> Path:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`); returns ``path``."""
    with _atomic_fd(path, file_mode, sync_dir) as fd:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    return Path(path)


def atomic_write_text(
    path: str | Path,
    write: Callable[[TextIO], None] | Iterable[str],
    *,
    file_mode: int | None = None,
    sync_dir: bool = False,
) -> Path:
    """Write a UTF-8 text file (``\\n`` line ends) atomically; returns ``path``.

    ``write`` is either an iterable of string chunks, or a callable taking the open text file.
    """
    with _atomic_fd(path, file_mode, sync_dir) as fd:
        fh = os.fdopen(os.dup(fd), "w", encoding="utf-8", newline="\n")
        with fh:
            if callable(write):
                write(fh)
            else:
                for chunk in write:
                    fh.write(chunk)
    return Path(path)
