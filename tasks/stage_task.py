"""A stage task: a plain function with its task name, run name and cache policy.

Every task of ``tasks/`` is declared with :func:`stage_task`. The object it makes is the
function (calling it calls the function; ``.fn`` is the function, as on a Prefect task) plus
what either engine needs to run it:

* the direct engine (:class:`flows.stages.DirectRunner`) calls ``.fn``, through its
  :class:`~tasks.cache_store.TaskCache` when the task is ``cached``;
* the Prefect engine runs ``.prefect``, the Prefect task built on first use (the cache policy
  :data:`tasks.caching.FILE_STAGE`, or ``NO_CACHE``).

So importing ``tasks`` imports no Prefect, and no science module either (each task imports the
``hapcore`` entry points it calls when it runs): a run whose every task is a cache hit never
loads them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["StageTask", "stage_task"]

_BUILD_LOCK = threading.Lock()


class StageTask:
    """One unit of work of a stage (see the module docstring).

    Parameters
    ----------
    fn : callable
        The task's function.
    name : str
        The task's name: Prefect's task name, part of the cache key.
    task_run_name : str, optional
        Prefect's run-name template (``"align-{total.detector}"``).
    cached : bool
        Content-keyed cache (:mod:`tasks.caching`); False: always run.
    """

    def __init__(self, fn: Callable, *, name: str, task_run_name: str | None = None,
                 cached: bool = True):
        functools.update_wrapper(self, fn)
        self.fn = fn
        self.name = name
        self.task_run_name = task_run_name
        self.cached = cached
        self._prefect = None

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"StageTask({self.name!r}, cached={self.cached})"

    @property
    def prefect(self):
        """The Prefect task of this function (built, importing Prefect, on first use)."""
        if self._prefect is None:
            with _BUILD_LOCK:
                if self._prefect is None:
                    from prefect import task
                    from prefect.cache_policies import NO_CACHE

                    from tasks.prefect_cache import FILE_STAGE

                    options: dict[str, Any] = {"name": self.name,
                                               "cache_policy": FILE_STAGE if self.cached
                                               else NO_CACHE}
                    if self.task_run_name:
                        options["task_run_name"] = self.task_run_name
                    self._prefect = task(self.fn, **options)
        return self._prefect

    def with_options(self, **options: Any):
        """The Prefect task with other options (:meth:`prefect.Task.with_options`)."""
        return self.prefect.with_options(**options)

    def __reduce__(self):
        # pickled by reference, as a module-level name (its Prefect task is rebuilt there)
        return self.__qualname__


def stage_task(*, name: str, task_run_name: str | None = None,
               cached: bool = True) -> Callable[[Callable], StageTask]:
    """Declare a stage task (decorator; arguments as :class:`StageTask`'s)."""
    def wrap(fn: Callable) -> StageTask:
        return StageTask(fn, name=name, task_run_name=task_run_name, cached=cached)
    return wrap
