"""Worker processes that never re-import the caller's main module.

Spawned workers normally re-run the parent's ``__main__`` to rebuild its namespace: from a
script without an ``if __name__ == "__main__":`` guard the pipeline would start again in every
worker ("An attempt has been made to start a new process before the current process has
finished its bootstrapping phase", ``BrokenProcessPool``), from ``python -`` or a notebook the
workers fail (``FileNotFoundError: '<stdin>'``). hapsvm's worker jobs are top-level functions of
its own modules, which the workers import by name, so the main module is never needed there:
:func:`worker_context` is a ``spawn`` context whose processes are started without it.

Spawn (a fresh interpreter), not fork: the caller may be running Prefect's threads.

A run that is interrupted (SIGTERM, Ctrl-C) stops its pools with :func:`stop_pool` instead of
waiting for their jobs. The workers ignore SIGINT from their first line on: Ctrl-C at a
terminal signals the whole process group, and is the run's to answer (without a traceback
from every worker).
"""

from __future__ import annotations

import io
import multiprocessing.context
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import popen_spawn_posix, reduction, spawn, util

__all__ = ["stop_pool", "worker_context"]

_MAIN_KEYS = ("init_main_from_name", "init_main_from_path")
# run by a worker before anything else (an initializer would come after its start-up imports)
_IGNORE_SIGINT = "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "


class _PopenWithoutMain(popen_spawn_posix.Popen):
    """``popen_spawn_posix.Popen`` whose preparation data leave out the main module and whose
    command ignores SIGINT first (the rest of ``_launch`` is CPython's, unchanged)."""

    def _launch(self, process_obj):
        from multiprocessing import resource_tracker

        tracker_fd = resource_tracker.getfd()
        self._fds.append(tracker_fd)
        prep_data = spawn.get_preparation_data(process_obj._name)
        for key in _MAIN_KEYS:
            prep_data.pop(key, None)
        fp = io.BytesIO()
        multiprocessing.context.set_spawning_popen(self)
        try:
            reduction.dump(prep_data, fp)
            reduction.dump(process_obj, fp)
        finally:
            multiprocessing.context.set_spawning_popen(None)

        parent_r = child_w = child_r = parent_w = None
        try:
            parent_r, child_w = os.pipe()
            child_r, parent_w = os.pipe()
            cmd = [_IGNORE_SIGINT + arg if isinstance(arg, str) and "spawn_main(" in arg
                   else arg
                   for arg in spawn.get_command_line(tracker_fd=tracker_fd, pipe_handle=child_r)]
            self._fds.extend([child_r, child_w])
            self.pid = util.spawnv_passfds(spawn.get_executable(), cmd, self._fds)
            self.sentinel = parent_r
            with open(parent_w, "wb", closefd=False) as f:
                f.write(fp.getbuffer())
        finally:
            fds_to_close = [fd for fd in (parent_r, parent_w) if fd is not None]
            self.finalizer = util.Finalize(self, util.close_fds, fds_to_close)
            for fd in (child_r, child_w):
                if fd is not None:
                    os.close(fd)


class _ProcessWithoutMain(multiprocessing.context.SpawnProcess):
    _start_method = "spawn"

    @staticmethod
    def _Popen(process_obj):
        return _PopenWithoutMain(process_obj)


class _ContextWithoutMain(multiprocessing.context.SpawnContext):
    Process = _ProcessWithoutMain


_CONTEXT = _ContextWithoutMain()


def worker_context() -> multiprocessing.context.BaseContext:
    """The multiprocessing context of hapsvm's worker pools (see the module docstring).

    Returns
    -------
    multiprocessing.context.BaseContext
        A ``spawn`` context; pass it as ``mp_context`` to
        :class:`concurrent.futures.ProcessPoolExecutor`.
    """
    return _CONTEXT


def stop_pool(pool: ProcessPoolExecutor) -> None:
    """Stop a worker pool now: cancel its queued jobs and end the running ones.

    For an interrupted run: a running job's partial outputs are scratch or temporary files,
    which the run removes, so waiting for it would only delay the stop by its whole duration.

    Parameters
    ----------
    pool : concurrent.futures.ProcessPoolExecutor
        The pool; unusable afterwards.
    """
    # the worker processes, read before shutdown forgets them (Python >= 3.14 has
    # terminate_workers() for this; 3.11 has only the attribute)
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        if process.is_alive():
            process.terminate()
    for process in processes:
        process.join(timeout=5)
