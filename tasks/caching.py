"""Caching that is right for files (issues #8, #18).

A stage's cache key is the digest of: the stage name, the code version (a hash of every source
file of ``hap_models``, ``hapcore`` and ``tasks``, of the packaged parameter sets in ``configs``,
and of the Python and science-library versions), its JSON-able inputs, the absolute location
of every ``Path`` in the inputs (directories included: the output directory is part of the key)
and the *content* of every input file (any ``Path`` to a file found anywhere in the inputs,
pydantic models included). A cache hit is honoured only if every output file the cached
:class:`~hap_models.stage.StageResult` lists still exists with the same content; otherwise the
record is dropped and the stage runs again. A record that cannot be read, or that is stored
under a name other than its own key (a file renamed or copied over another), is treated as a
miss and logged.

So one cache directory can serve several visits (``--cache-dir``), be copied to another output
directory or machine, or outlive an upgrade: a record is reused only for the same code, the
same input files at the same place, and the same output directory -- whose files it proves
are still there.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.utilities.hashing import hash_objects
from pydantic import BaseModel

from hap_models.stage import StageResult
from hapcore.digests import file_digest

__all__ = ["code_version", "iter_paths", "FileStagePolicy", "FILE_STAGE", "run_stage",
           "cache_storage"]

logger = logging.getLogger(f"hapsvm.{__name__}")

_PACKAGES = ("hap_models", "hapcore", "tasks")
#: Packaged data the stages read: the default parameter sets and tables.
_DATA = ("configs",)
_DATA_SUFFIXES = (".json", ".txt")
#: Distributions whose results are in the products (a cache made elsewhere, or before an
#: upgrade, with other versions of them is not reused).
_LIBRARIES = ("numpy", "scipy", "astropy", "photutils", "drizzle", "reproject", "scikit-image")

#: Task inputs that never change a cache key: those that describe the run, not the work, and
#: ``measured`` -- results of upstream cached tasks whose own keys are made of the consuming
#: task's other inputs (so they add nothing), and whose pickled form (astropy tables) is not
#: byte-stable across a cache round trip.
NOT_IN_KEY = frozenset({"force", "stage_timings", "timestamp", "measured"})


def _library_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "absent"


@lru_cache(maxsize=1)
def code_version() -> str:
    """Digest of what the results depend on besides the inputs: the package sources, the
    packaged parameter sets, the Python and science-library versions. Any change invalidates
    every cached stage."""
    import hap_models

    root = Path(hap_models.__file__).resolve().parents[1]
    h = hashlib.sha256()
    for package in _PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            h.update(source.relative_to(root).as_posix().encode())
            h.update(source.read_bytes())
    for package in _DATA:
        for data in sorted((root / package).rglob("*")):
            if data.suffix in _DATA_SUFFIXES and data.is_file():
                h.update(data.relative_to(root).as_posix().encode())
                h.update(data.read_bytes())
    h.update(f"python {sys.version_info.major}.{sys.version_info.minor}".encode())
    for name in _LIBRARIES:
        h.update(f"\n{name} {_library_version(name)}".encode())
    return h.hexdigest()[:16]


def iter_paths(value: Any, _depth: int = 0) -> Iterator[Path]:
    """Every ``Path`` inside a value (models, dicts, lists, tuples), depth-limited."""
    if _depth > 8:
        return
    if isinstance(value, Path):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from iter_paths(getattr(value, name, None), _depth + 1)
    elif isinstance(value, dict):
        for item in value.values():
            yield from iter_paths(item, _depth + 1)
    elif isinstance(value, (list, tuple, set)):
        for item in value:
            yield from iter_paths(item, _depth + 1)


def _outputs_still_valid(result: Any) -> str | None:
    """None if every output of a cached StageResult is unchanged, else why not."""
    if not isinstance(result, StageResult):
        return None
    for path, digest in result.outputs.items():
        p = Path(path)
        if not p.is_file():
            return f"{p.name} is missing"
        if file_digest(p) != digest:
            return f"{p.name} has changed"
    return None


@dataclass
class FileStagePolicy(CachePolicy):
    """Cache key from inputs + input-file contents + code version; stale records are dropped."""

    def compute_key(self, task_ctx, inputs: dict[str, Any], flow_parameters: dict[str, Any],
                    **kwargs: Any) -> str | None:
        files = sorted({p.resolve() for p in iter_paths(inputs) if p.is_file()})
        digests = [(str(p), file_digest(p)) for p in files]
        plain = {k: v for k, v in inputs.items() if k not in NOT_IN_KEY}
        # every path as the absolute place it names: a relative output directory given in two
        # working directories (one --cache-dir) names two places, so two keys; as text alone
        # the second run was served the first one's records, whose files are elsewhere
        places = sorted({str(p.resolve()) for p in iter_paths(plain)})
        key = hash_objects(task_ctx.task.name, code_version(), plain, places, digests,
                           raise_on_failure=True)
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
                    why = _outputs_still_valid(record.result)
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


def cache_storage(output_dir: Path, cache_dir: Path | None = None) -> Path:
    """Where cache records live: ``cache_dir``, else ``<output_dir>/.hapsvm-cache``."""
    path = Path(cache_dir) if cache_dir else Path(output_dir) / ".hapsvm-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_stage(stage: str, fn: Callable[..., Any], *args, outputs: Callable[[Any], list[Path]],
              **kwargs) -> StageResult:
    """Run a stage function and wrap its payload with the digests of the files it wrote."""
    start = time.perf_counter()
    payload = fn(*args, **kwargs)
    files = [Path(p).resolve() for p in outputs(payload)]
    return StageResult(stage=stage, payload=payload,
                       outputs={str(p): file_digest(p) for p in files if p.is_file()},
                       wall_s=time.perf_counter() - start)
