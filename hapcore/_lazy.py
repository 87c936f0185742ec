"""Lazy re-exports for the stage sub-packages' ``__init__`` (PEP 562).

Importing one light module of a stage (``hapcore.align.refcat``, say) must not import the whole
stage: each sub-package names its entry points and their modules, imported on first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, exports: Mapping[str, str]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package`` exporting ``{name: module}`` lazily."""
    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(exports[name]), name)

    def __dir__() -> list[str]:
        return sorted([*exports, "__all__"])

    return __getattr__, __dir__
