"""Atomic file writing: a file appears complete under its final name, or not at all."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_output", "write_text_atomic", "new_file_mode"]


def _current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc), since
    the set-and-restore of ``os.umask`` briefly opens a window for other threads' files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def new_file_mode() -> int:
    """The mode a newly created file gets here: ``0o666`` less the umask (0644 under 022)."""
    return 0o666 & ~_current_umask()


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success rename it to ``path``, else remove it.

    Examples
    --------
    >>> with atomic_output(tmp / "x_drz.fits") as tmp_name:   # doctest: +SKIP
    ...     hdul.writeto(tmp_name)
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp makes the file 0600; a product must be readable like any other file the
        # user writes (the umask decides), also when it replaces an existing file
        os.chmod(tmp, new_file_mode())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename; return the path."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)
