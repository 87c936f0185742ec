"""Content digests of files, memoised per file version, for cache keys and output checks.

A digest is the SHA-256 of the file's bytes. Hashing a 170 MB FLC costs ~0.3 s, so digests are
remembered per (path, size, mtime, inode): a file touched without a content change is hashed
again and gives the same digest; a changed file gives a new one.
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

__all__ = ["file_digest", "clear_digest_memo"]

_MEMO: dict[tuple, str] = {}
_LOCK = threading.Lock()
_CHUNK = 8 * 1024 * 1024


def _version(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino)


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's content (memoised per file version)."""
    path = Path(path)
    version = _version(path)
    with _LOCK:
        cached = _MEMO.get(version)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    with _LOCK:
        _MEMO[version] = digest
    return digest


def clear_digest_memo() -> None:
    """Forget every memoised digest (tests that rewrite files within one mtime tick use it)."""
    with _LOCK:
        _MEMO.clear()
