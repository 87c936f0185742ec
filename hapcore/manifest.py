"""The visit manifest ``<instrument>_<ppp>_<obset>_manifest.txt``: one product file per line."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from hapcore.atomic import write_text_atomic

__all__ = ["write_manifest", "read_manifest"]


def write_manifest(path: str | os.PathLike, filenames: Iterable[str]) -> Path:
    """Write the manifest atomically; duplicate names are listed once, in first-seen order."""
    unique = list(dict.fromkeys(Path(f).name for f in filenames))
    return write_text_atomic(path, "".join(f"{name}\n" for name in unique))


def read_manifest(path: str | os.PathLike) -> list[str]:
    """Return the file names listed in a manifest."""
    return [ln.strip() for ln in Path(path).read_text().splitlines() if ln.strip()]
