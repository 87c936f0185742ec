"""Independent branches of a catalog step run side by side in two threads.

The point and segment branches of the detection (:func:`hapcore.catalogs.detection.detect_sources`)
and of a filter's measurements (:func:`hapcore.catalogs.stage.measure_filter_catalogs`, with its
exposure products' photometry for the cross-exposure check) share only read-only inputs; their numpy, scipy and photutils work releases the GIL for much of its
time, so a second thread uses the second core (3 x UVIS full frame: detection 12.1 -> 10 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_side_by_side"]


def run_side_by_side(branches: Sequence[Callable[[], None]], *, threads: int = 2) -> None:
    """Run ``branches`` (callables without arguments): with ``threads`` >= 2, all but the last
    one after the other in an extra thread while this thread runs the last one; else one after
    the other. An exception of any is raised here.

    Parameters
    ----------
    branches : sequence of callable
        Put the longest last: the others share the extra thread.
    threads : int, optional
    """
    if len(branches) >= 2 and threads > 1:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hapsvm-branch") as pool:
            others = [pool.submit(branch) for branch in branches[:-1]]
            branches[-1]()
            for future in others:
                future.result()
        return
    for branch in branches:
        branch()
