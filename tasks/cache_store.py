"""Cache records without Prefect (the direct engine), and the digest memo kept across runs.

:class:`TaskCache` reads and writes one record per task key in the cache directory
(``<output_dir>/.hapsvm-cache`` or ``--cache-dir``) in the format of Prefect's result records
(a JSON object whose ``result`` is the base64 of the cloudpickled return value, its
``metadata.storage_key`` the record's own path): the Prefect engine writes the same files under
the same keys (:func:`tasks.caching.task_cache_key`), so each engine reuses the other's records.
A record is honoured under the rules of :mod:`tasks.caching` (same key, outputs unchanged);
any other record is logged as discarded and recomputed.

:func:`load_digest_memo` / :func:`save_digest_memo` keep the file digests of a run
(:mod:`hapcore.digests`) in ``file-digests.json`` beside the records: a rerun in a new process
then hashes no unchanged input or product again (a full-frame visit has ~1.5 GB of them) --
only their ``stat`` is compared with the version each digest was made for.
"""

from __future__ import annotations

import base64
import datetime
import inspect
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hapcore.atomic import atomic_output
from hapcore.digests import file_version, memo_entries, remember_digests
from tasks.caching import outputs_still_valid, task_cache_key

__all__ = ["COMPLETED", "CACHED", "TaskCache", "bound_inputs", "DIGEST_MEMO",
           "load_digest_memo", "save_digest_memo"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: State names of a task run, as Prefect names them (the run log and ``stage_states`` use them).
COMPLETED, CACHED = "Completed", "Cached"

#: File of the digest memo in the cache directory.
DIGEST_MEMO = "file-digests.json"
_MEMO_FORMAT = 1

_SERIALIZER = {"type": "pickle", "picklelib": "cloudpickle", "picklelib_version": None}
_SIGNATURES: dict[Callable, inspect.Signature] = {}


def bound_inputs(fn: Callable, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """A call's arguments by parameter name, defaults included (as Prefect binds a task's
    parameters before it computes the cache key)."""
    signature = _SIGNATURES.get(fn)
    if signature is None:
        signature = _SIGNATURES[fn] = inspect.signature(fn)
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


class TaskCache:
    """The records of stage tasks in one cache directory (see the module docstring).

    Parameters
    ----------
    directory : Path
        The cache directory (made if missing).
    """

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)

    def record_path(self, key: str) -> Path:
        """Where the record of ``key`` lives."""
        return self.directory / key

    def lookup(self, key: str, name: str) -> tuple[bool, Any]:
        """``(True, value)`` for a valid record of ``key``, else ``(False, None)``; an invalid
        record (unreadable, under another record's name, outputs missing or changed) is logged
        as discarded and deleted."""
        path = self.record_path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return False, None
        except OSError as exc:
            data, why = None, f"cache record unreadable ({exc.__class__.__name__})"
        value = None
        if data is not None:
            try:
                value, why = self._decode(data, key)
            except Exception as exc:  # truncated, corrupted, or another serializer
                why = f"cache record unreadable ({exc.__class__.__name__})"
        if why is None:
            return True, value
        logger.info("%s: cached result discarded (%s); recomputing", name, why)
        path.unlink(missing_ok=True)
        return False, None

    @staticmethod
    def _decode(data: bytes, key: str) -> tuple[Any, str | None]:
        record = json.loads(data)
        metadata = record["metadata"]
        stored = metadata.get("storage_key")
        # a record is written under its key; one found under another name (renamed, or copied
        # over another record) is not this key's result
        if stored and Path(stored).name != key:
            return None, f"cache record was written as {Path(stored).name}, not under this key"
        expiration = metadata.get("expiration")
        if expiration and datetime.datetime.fromisoformat(expiration) < datetime.datetime.now(
                datetime.timezone.utc):
            return None, "cache record expired"
        serializer = metadata.get("serializer") or {}
        if serializer.get("type") != "pickle":
            raise ValueError(f"serializer {serializer.get('type')!r}")
        if serializer.get("picklelib", "cloudpickle") == "pickle":
            import pickle as picklelib
        else:
            import cloudpickle as picklelib
        value = picklelib.loads(base64.decodebytes(record["result"].encode("ascii")))
        return value, outputs_still_valid(value)

    def store(self, key: str, value: Any) -> Path:
        """Write the record of ``key`` (atomically: a killed run leaves no half record)."""
        import cloudpickle

        path = self.record_path(key)
        record = {"metadata": {"storage_key": str(path), "expiration": None,
                               "serializer": _SERIALIZER, "prefect_version": _prefect_version(),
                               "storage_block_id": None},
                  "result": base64.encodebytes(cloudpickle.dumps(value)).decode("ascii")}
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps(record, separators=(",", ":")), encoding="utf-8")
        return path

    def run(self, name: str, fn: Callable, args: Sequence[Any], kwargs: Mapping[str, Any], *,
            refresh: bool = False) -> tuple[Any, str]:
        """Call ``fn(*args, **kwargs)`` unless a valid record of its key exists.

        Parameters
        ----------
        name : str
            The task's name (part of the key).
        fn : callable
            The task's function.
        args, kwargs
            Its arguments.
        refresh : bool
            Recompute and overwrite the record (``--force``).

        Returns
        -------
        (value, state)
            The result, and ``"Cached"`` or ``"Completed"``.
        """
        key = task_cache_key(name, bound_inputs(fn, args, kwargs))
        if not refresh:
            hit, value = self.lookup(key, name)
            if hit:
                return value, CACHED
        value = fn(*args, **kwargs)
        self.store(key, value)
        return value, COMPLETED


def _prefect_version() -> str:
    # the field Prefect's records carry; the version is only informative there
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prefect")
    except PackageNotFoundError:
        return "0"


def load_digest_memo(cache_dir: Path) -> int:
    """Remember the digests a previous run saved in ``cache_dir``; returns how many were read.

    An unreadable memo is ignored (its files are hashed again)."""
    path = Path(cache_dir) / DIGEST_MEMO
    try:
        data = json.loads(path.read_bytes())
        if data.get("format") != _MEMO_FORMAT:
            return 0
        entries = [(tuple(entry[:5]), entry[5]) for entry in data["entries"]]
    except FileNotFoundError:
        return 0
    except Exception as exc:  # truncated or corrupted: a memo only saves time
        logger.debug("digest memo %s ignored (%s)", path, exc)
        return 0
    remember_digests(entries)
    return len(entries)


def save_digest_memo(cache_dir: Path) -> int:
    """Save the digests known in this process of files as they are now into ``cache_dir``
    (with those already saved there that still hold); returns how many were saved.

    Never raises: a memo that cannot be written only costs the next run some hashing.
    """
    path = Path(cache_dir) / DIGEST_MEMO
    candidates: dict[tuple, str] = {}
    try:
        old = json.loads(path.read_bytes())
        if old.get("format") == _MEMO_FORMAT:
            candidates.update((tuple(e[:5]), e[5]) for e in old["entries"])
    except Exception:  # absent or unreadable: start afresh
        pass
    candidates.update(memo_entries())
    current: dict[str, list] = {}
    for version, digest in candidates.items():
        name = version[0]
        if name in current:
            continue
        try:
            now = file_version(name)
        except OSError:
            continue
        if tuple(now) == tuple(version):
            current[name] = [*version, digest]
    try:
        with atomic_output(path) as tmp:
            tmp.write_text(json.dumps({"format": _MEMO_FORMAT,
                                       "entries": sorted(current.values())}),
                           encoding="utf-8")
    except OSError as exc:
        logger.debug("digest memo not saved in %s (%s)", cache_dir, exc)
        return 0
    return len(current)
