"""``runsinglehap`` with a per-stage account: wall, CPU and peak process-tree RSS of every stage.

Usage (same arguments as ``runsinglehap``)::

    python benchmarks/bench_stagewise.py --stages-json S.json -o OUT --refcat REFCAT POLLER

It wraps the visit runner of both engines (``flows.visit.VisitRunner.__call__``): around every stage it
records the wall time, the CPU time of this process plus its reaped children
(``getrusage``) and the largest sum of RSS over this process and all its descendants (sampled
every 0.1 s with psutil). The run itself is the ordinary ``runsinglehap`` (exit code included).
The engine's own costs (with Prefect: its imports and the temporary local API) are reported as
``prefect+other`` = end-to-end minus the stages.
"""

from __future__ import annotations

import json
import resource
import sys
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class TreeRSS:
    """Samples the summed RSS of this process tree; ``reset()`` starts a new peak."""

    def __init__(self, period=0.1):
        self.proc = psutil.Process()
        self.peak = 0.0
        self.overall = 0.0
        self.period = period
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> float:
        total = 0
        try:
            procs = [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            procs = [self.proc]
        for p in procs:
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _run(self):
        while not self._stop.is_set():
            v = self.sample()
            self.peak = max(self.peak, v)
            self.overall = max(self.overall, v)
            self._stop.wait(self.period)

    def reset(self):
        self.peak = self.sample()

    def stop(self):
        self._stop.set()


def _cpu() -> float:
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    out_json = None
    if "--stages-json" in argv:
        i = argv.index("--stages-json")
        out_json = Path(argv[i + 1])
        del argv[i:i + 2]

    import flows.visit as svm
    from flows.runsinglehap import main as runsinglehap_main

    rss = TreeRSS()
    stages: list[dict] = []
    original = svm.VisitRunner.__call__

    def recording(self, stage_task, *args, **kwargs):
        label = kwargs.get("label", stage_task.name)
        rss.reset()
        w0, c0 = time.perf_counter(), _cpu()
        try:
            return original(self, stage_task, *args, **kwargs)
        finally:
            stages.append({"stage": label, "wall_s": round(time.perf_counter() - w0, 2),
                           "cpu_s": round(_cpu() - c0, 2),
                           "peak_tree_rss_mb": round(max(rss.peak, rss.sample()), 1)})

    svm.VisitRunner.__call__ = recording
    w0, c0 = time.perf_counter(), _cpu()
    code = runsinglehap_main(argv)
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    rss.stop()
    if out_json:
        out_json.write_text(json.dumps({
            "exit_code": code, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_tree_rss_mb": round(rss.overall, 1), "stages": stages,
            "prefect_and_other_s": round(wall - sum(s["wall_s"] for s in stages), 2),
        }, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
