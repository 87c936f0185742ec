"""Content digests of files, memoised per file version, for cache keys and output checks.

A digest is the SHA-256 of the file's bytes. Hashing a 170 MB FLC costs ~0.3 s, so digests are
remembered per file version -- (path, size, mtime, ctime, inode): a file touched without a
content change is hashed again and gives the same digest; a changed file gives a new one. The
ctime is in the version because no user call can set it: a file rewritten in place with its
old size and mtime restored (``touch -d``) still counts as a new version.

:func:`memo_entries` and :func:`remember_digests` let a caller keep the memo across processes
(the cache layer stores it beside its records), so a rerun hashes no unchanged file again.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

__all__ = ["file_digest", "file_digests", "file_version", "clear_digest_memo", "memo_entries",
           "remember_digests"]

_MEMO: dict[tuple, str] = {}
_LOCK = threading.Lock()
_CHUNK = 8 * 1024 * 1024


def file_version(path: str | os.PathLike) -> tuple:
    """The version of a file a digest is remembered for: (absolute path, size, mtime_ns,
    ctime_ns, inode). Raises OSError when the file cannot be read."""
    path = Path(path)
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


_version = file_version


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


def file_digests(paths, *, threads: int = 2) -> list[str]:
    """:func:`file_digest` of every path, in order, hashed in ``threads`` threads.

    hashlib releases the GIL while it hashes a chunk: the stage products a task just wrote
    (a full-frame UVIS product is ~340 MB, ~0.25 s) are hashed side by side.
    """
    paths = list(paths)
    if threads <= 1 or len(paths) <= 1:
        return [file_digest(p) for p in paths]
    with ThreadPoolExecutor(min(threads, len(paths))) as pool:
        return list(pool.map(file_digest, paths))


def clear_digest_memo() -> None:
    """Forget every memoised digest (tests that rewrite files within one mtime tick use it)."""
    with _LOCK:
        _MEMO.clear()


def memo_entries() -> list[tuple[tuple, str]]:
    """Every remembered (file version, digest) pair (see :func:`file_version`)."""
    with _LOCK:
        return list(_MEMO.items())


def remember_digests(entries) -> None:
    """Remember digests computed elsewhere: ``(version, digest)`` pairs as
    :func:`memo_entries` gives them. A version is only ever looked up for a file whose current
    :func:`file_version` equals it, so an entry of a file changed since is never used."""
    with _LOCK:
        for version, digest in entries:
            _MEMO[tuple(version)] = str(digest)
