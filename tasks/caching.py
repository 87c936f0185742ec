"""Caching that is right for files (issues #8, #16, #18): the cache key of a stage task.

A stage's cache key (:func:`task_cache_key`) is the digest of: the task name, the code version
(a hash of every source file of ``hap_models``, ``hapcore`` and ``tasks``, of the packaged
parameter sets in ``configs``, and of the Python and science-library versions), its inputs
(:data:`NOT_IN_KEY` aside), the absolute location of every ``Path`` in the inputs (directories
included: the output directory is part of the key) and the *content* of every input file (any
``Path`` to a file found anywhere in the inputs, pydantic models included). A cache hit is
honoured only if every output file the cached :class:`~hap_models.stage.StageResult` lists still
exists with the same content (:func:`outputs_still_valid`); otherwise the record is dropped and
the stage runs again. A record that cannot be read, or that is stored under a name other than
its own key (a file renamed or copied over another), is treated as a miss and logged.

So one cache directory can serve several visits (``--cache-dir``), be copied to another output
directory or machine, or outlive an upgrade: a record is reused only for the same code, the
same input files at the same place, and the same output directory -- whose files it proves
are still there.

Both engines use these keys and one record format (Prefect's result records,
:mod:`tasks.cache_store`): the Prefect engine through :class:`FileStagePolicy` (a Prefect cache
policy, built on first use from :mod:`tasks.prefect_cache`), the direct engine through
:class:`tasks.cache_store.TaskCache`. A visit run by one engine is a cache hit for the other.

Importing this module imports no Prefect (the direct engine never loads it).
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import hashlib
import importlib.metadata
import json
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from functools import lru_cache
from pathlib import Path, PurePath
from typing import Any

from pydantic import BaseModel

from hap_models.stage import StageResult
from hapcore.digests import file_digest, file_digests

__all__ = ["code_version", "iter_paths", "NOT_IN_KEY", "stable_hash", "task_cache_key",
           "outputs_still_valid", "FileStagePolicy", "FILE_STAGE", "run_stage",
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


def __getattr__(name: str):
    # the Prefect cache policy is built (importing Prefect) only when the Prefect engine asks
    if name in ("FileStagePolicy", "FILE_STAGE"):
        import tasks.prefect_cache

        return getattr(tasks.prefect_cache, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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


def _qualified(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _canonical(value: Any) -> Any:
    """A JSON-able form of ``value`` that is the same for equal values in any process.

    Models and dataclasses carry their class name (two models with equal fields of different
    classes differ); dict keys that are not strings become sorted pairs. Raises TypeError for
    an object of no known form (see :func:`stable_hash`).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"__float__": repr(value)}
    if isinstance(value, PurePath):
        return {"__path__": str(value)}
    if isinstance(value, BaseModel):
        fields = {name: _canonical(getattr(value, name, None))
                  for name in type(value).model_fields}
        if value.model_extra:
            fields.update({name: _canonical(v) for name, v in value.model_extra.items()})
        return {"__model__": _qualified(type(value)), "fields": fields}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _canonical(v) for k, v in value.items()}}
        pairs = [[_canonical(k), _canonical(v)] for k, v in value.items()]
        return {"__pairs__": sorted(pairs, key=lambda p: json.dumps(p[0], sort_keys=True))}
    if isinstance(value, (list, tuple)):
        return [_canonical(v) for v in value]
    if isinstance(value, (set, frozenset)):
        items = [_canonical(v) for v in value]
        return {"__set__": sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, enum.Enum):
        return {"__enum__": _qualified(type(value)), "value": _canonical(value.value)}
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return {"__time__": value.isoformat()}
    if isinstance(value, bytes):
        return {"__bytes__": hashlib.sha256(value).hexdigest()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {"__dataclass__": _qualified(type(value)),
                "fields": {f.name: _canonical(getattr(value, f.name))
                           for f in dataclasses.fields(value)}}
    if type(value).__module__.split(".")[0] == "numpy":
        import numpy as np

        if isinstance(value, np.generic):
            return _canonical(value.item())
        if isinstance(value, np.ndarray):
            data = np.ascontiguousarray(value)
            return {"__ndarray__": [str(data.dtype), list(data.shape),
                                    hashlib.sha256(data.tobytes()).hexdigest()]}
    raise TypeError(f"no canonical form for {_qualified(type(value))}")


def _canonical_or_pickled(value: Any) -> Any:
    try:
        return _canonical(value)
    except TypeError as exc:
        # an object of no known form is keyed by its pickle, as Prefect's hash_objects falls
        # back to (stable for the same code and value, which is what a key needs)
        import cloudpickle

        logger.debug("cache key: %s; keyed by its pickle", exc)
        if isinstance(value, (list, tuple)):
            return [_canonical_or_pickled(v) for v in value]
        if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
            return {"__dict__": {k: _canonical_or_pickled(v) for k, v in value.items()}}
        return {"__pickle__": hashlib.sha256(cloudpickle.dumps(value)).hexdigest()}


def stable_hash(*objects: Any) -> str:
    """A digest of ``objects`` that is the same in every process for equal values (32 hex
    digits of a SHA-256 over their canonical JSON form)."""
    text = json.dumps([_canonical_or_pickled(o) for o in objects], sort_keys=True,
                      separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:32]


def task_cache_key(task_name: str, inputs: Mapping[str, Any]) -> str:
    """The cache key of one call of a stage task (see the module docstring).

    Parameters
    ----------
    task_name : str
        The task's name (``align-detector``, ...).
    inputs : mapping
        Its arguments by parameter name, defaults included (as Prefect binds them).

    Returns
    -------
    str
    """
    files = sorted({p.resolve() for p in iter_paths(inputs) if p.is_file()})
    digests = [(str(p), d) for p, d in zip(files, file_digests(files))]
    plain = {k: v for k, v in inputs.items() if k not in NOT_IN_KEY}
    # every path as the absolute place it names: a relative output directory given in two
    # working directories (one --cache-dir) names two places, so two keys; as text alone
    # the second run was served the first one's records, whose files are elsewhere
    places = sorted({str(p.resolve()) for p in iter_paths(plain)})
    return stable_hash(task_name, code_version(), plain, places, digests)


def outputs_still_valid(result: Any) -> str | None:
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
    files = [p for p in (Path(p).resolve() for p in outputs(payload)) if p.is_file()]
    return StageResult(stage=stage, payload=payload,
                       outputs={str(p): d for p, d in zip(files, file_digests(files))},
                       wall_s=time.perf_counter() - start)
