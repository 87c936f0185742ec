"""A process-local registry of heavy objects shared by the tasks of one visit.

Tasks of a stage share things too big or too live for Prefect results (a drizzle workspace with
its worker pool, a detection with full-size arrays). They live here, keyed by a tuple whose first
item is the resolved output directory, so a visit's entries can be dropped together.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ProcessRegistry"]


class ProcessRegistry:
    """Thread-safe get-or-create store keyed by ``(output_dir, ...)`` tuples."""

    def __init__(self) -> None:
        self._items: dict[tuple, Any] = {}
        self._lock = threading.Lock()

    @staticmethod
    def root(output_dir: Path) -> str:
        """The key's first item for an output directory."""
        return str(Path(output_dir).resolve())

    def get(self, key: tuple, create: Callable[[], Any]) -> Any:
        """The entry of ``key``, made by ``create()`` on first use."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                item = create()
                self._items[key] = item
            return item

    def release(self, output_dir: Path, close: Callable[[Any], None] | None = None) -> None:
        """Drop every entry of an output directory, calling ``close`` on each first."""
        root = self.root(output_dir)
        with self._lock:
            for key in [k for k in self._items if k[0] == root]:
                item = self._items.pop(key)
                if close is not None:
                    close(item)
