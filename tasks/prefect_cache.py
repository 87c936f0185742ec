"""The Prefect cache policy of the stage tasks (the Prefect engine only; imports Prefect).

:class:`FileStagePolicy` computes the key of :func:`tasks.caching.task_cache_key` -- the key the
direct engine uses too -- and drops a record that no longer describes the files on disk
before Prefect looks it up (see :mod:`tasks.caching`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy

from tasks.caching import outputs_still_valid, task_cache_key

__all__ = ["FileStagePolicy", "FILE_STAGE"]

logger = logging.getLogger(f"hapsvm.{__name__}")


@dataclass
class FileStagePolicy(CachePolicy):
    """Cache key from inputs + input-file contents + code version; stale records are dropped."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        key = task_cache_key(task_ctx.task.name, inputs)
        store = getattr(task_ctx, "result_store", None)
        if key and store is not None:
            self._drop_if_stale(store, key, task_ctx.task.name)
        return key

    @staticmethod
    def _drop_if_stale(store, key: str, name: str) -> None:
        basepath = getattr(getattr(store, "result_storage", None), "basepath", None)
        raw = Path(basepath, key) if basepath else None
        try:
            exists = store.exists(key)
            why = None
            if exists:
                record = store.read(key)
                stored = getattr(record.metadata, "storage_key", None)
                # a record is written under its key; one found under another name (renamed,
                # or copied over another record) is not this key's result
                if stored and Path(stored).name != key:
                    why = f"cache record was written as {Path(stored).name}, not under this key"
                else:
                    why = outputs_still_valid(record.result)
        except Exception as exc:  # unreadable record
            exists, why = True, f"cache record unreadable ({exc.__class__.__name__})"
        if not exists and raw is not None and raw.exists():
            # Prefect reports a record it cannot decode as absent; say so, then recompute
            why = "cache record unreadable"
        if why is None:
            return
        logger.info("%s: cached result discarded (%s); recomputing", name, why)
        if raw is not None:
            raw.unlink(missing_ok=True)
        cache = getattr(store, "cache", None)
        if cache is not None:
            cache.pop(key, None)


#: The policy of every file-producing stage.
FILE_STAGE = FileStagePolicy()
