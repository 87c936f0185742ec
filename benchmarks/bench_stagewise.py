"""``runsinglehap`` with a per-stage account: wall, CPU and peak process-tree RSS of every stage.

Usage (same arguments as ``runsinglehap``)::

    python benchmarks/bench_stagewise.py --stages-json S.json -o OUT --refcat REFCAT POLLER

It wraps the visit runner of both engines (``flows.visit.VisitRunner.__call__``): around every stage it
records the wall time, the CPU time of this process plus its reaped children
(``getrusage``) and the largest sum of RSS over this process and all its descendants (sampled
every 0.1 s with psutil). The run itself is the ordinary ``runsinglehap`` (exit code included).
The engine's own costs (with Prefect: its imports and the temporary local API) are reported as
``prefect+other`` = end-to-end minus the stages.

RSS does not count the drizzle scratch kept on the tmpfs (``/dev/shm/hapsvm-drizzle-<pid>-*``)
while no process maps it, and counts it once per process that does. So a second figure,
``peak_tree_memory_tmpfs_once_mb``, sums over the tree the RSS less its shared-memory part
(``RssShmem``) plus the scratch files' allocated size: the tmpfs counted exactly once.
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
        self.overall_tmpfs_once = 0.0
        self.peak_tmpfs_once = 0.0
        self.period = period
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def sample(self) -> float:
        total = 0
        for p in self._procs():
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
        return total / 2**20

    def _procs(self) -> list:
        try:
            return [self.proc, *self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc]

    def sample_tmpfs_once(self) -> float:
        """Summed RSS without its shared-memory part, plus this tree's tmpfs scratch (MB)."""
        total, pids = 0, []
        for p in self._procs():
            pids.append(p.pid)
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    fields = dict(line.split(":", 1) for line in f if ":" in line)
                total += (int(fields["VmRSS"].split()[0])
                          - int(fields.get("RssShmem", "0 kB").split()[0])) * 1024
            except (OSError, KeyError, ValueError):
                pass
        for pid in pids:
            for folder in Path("/dev/shm").glob(f"hapsvm-drizzle-{pid}-*"):
                for f in folder.rglob("*"):
                    try:
                        total += f.lstat().st_blocks * 512
                    except OSError:
                        pass
        return total / 2**20

    def _run(self):
        while not self._stop.is_set():
            v = self.sample()
            self.peak = max(self.peak, v)
            self.overall = max(self.overall, v)
            once = self.sample_tmpfs_once()
            self.peak_tmpfs_once = max(self.peak_tmpfs_once, once)
            self.overall_tmpfs_once = max(self.overall_tmpfs_once, once)
            self._stop.wait(self.period)

    def reset(self):
        self.peak = self.sample()
        self.peak_tmpfs_once = self.sample_tmpfs_once()

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
        label = kwargs.get("label") or stage_task.name
        rss.reset()
        w0, c0 = time.perf_counter(), _cpu()
        try:
            return original(self, stage_task, *args, **kwargs)
        finally:
            stages.append({"stage": label, "wall_s": round(time.perf_counter() - w0, 2),
                           "cpu_s": round(_cpu() - c0, 2),
                           "peak_tree_rss_mb": round(max(rss.peak, rss.sample()), 1),
                           "peak_tree_memory_tmpfs_once_mb": round(rss.peak_tmpfs_once, 1)})

    svm.VisitRunner.__call__ = recording
    w0, c0 = time.perf_counter(), _cpu()
    code = runsinglehap_main(argv)
    wall, cpu = time.perf_counter() - w0, _cpu() - c0
    rss.stop()
    if out_json:
        out_json.write_text(json.dumps({
            "exit_code": code, "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "peak_tree_rss_mb": round(rss.overall, 1),
            "peak_tree_memory_tmpfs_once_mb": round(rss.overall_tmpfs_once, 1), "stages": stages,
            "prefect_and_other_s": round(wall - sum(s["wall_s"] for s in stages), 2),
        }, indent=1))
    return code


if __name__ == "__main__":
    sys.exit(main())
