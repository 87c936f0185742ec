"""Two independent branches of a catalog step run side by side.

The point and segment branches of the detection (:func:`hapcore.catalogs.detection.detect_sources`)
and of a filter's measurements (:func:`hapcore.catalogs.stage.measure_filter_catalogs`) share
only read-only inputs; their numpy, scipy and photutils work releases the GIL for much of its
time, so a second thread uses the second core (3 x UVIS full frame: detection 12.1 -> 10 s).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_side_by_side"]


def run_side_by_side(branches: Sequence[Callable[[], None]], *, threads: int = 2) -> None:
    """Run ``branches`` (callables without arguments): two of them in two threads when
    ``threads`` >= 2, else one after the other; an exception of either is raised here.

    Parameters
    ----------
    branches : sequence of callable
        One or two branches; the first goes to the extra thread.
    threads : int, optional
    """
    if len(branches) == 2 and threads > 1:
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hapsvm-branch") as pool:
            first = pool.submit(branches[0])
            branches[1]()
            first.result()
        return
    for branch in branches:
        branch()
