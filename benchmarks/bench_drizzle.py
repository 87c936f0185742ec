"""Benchmark of the drizzle stage; prints one JSON object.

1. Pixel map of one full WFC3/UVIS chip (4096 x 2051, SIP order 4): exact per-pixel astropy map
   versus the interpolated map (default step 64), with the maximum difference.
2. The whole drizzle stage (`flows.stages.drizzle_stage`, the flow's tasks without Prefect) of a full-frame
   4-exposure WFC3/UVIS hapsim visit (1 filter: 1 filter + 4 exposure + 1 total product), wall
   time, CPU time (this process and its workers, user and system, from ``getrusage``; on a
   shared machine the wall time is noisy, the CPU time much less), load averages around the
   stage, and peak memory: the largest sum of RSS over this process and its descendants
   (sampled every 0.1 s, as ``bench_stagewise.py``), the same with shared-memory pages counted
   once (anonymous + file-backed RSS of every process plus the files of hapsvm's scratch on a
   tmpfs), and the older bound (this process plus ``workers`` times the largest worker).
3. With ``--compare REF_OUT``: the products against those of another run on the same visit
   (e.g. the committed code's): per-pixel SCI/WHT differences, coverage and context agreement,
   the cosmic-ray masks' agreement, and, against hapsim's truth, the fluxes of isolated stars in
   the filter product and the fraction of truth CR pixels left above 5 sigma
   (``bench_accuracy``'s ``cr_residual``).

Usage::

    python benchmarks/bench_drizzle.py [--workdir DIR] [--workers 2] [--poller FILE]
                                       [--true-wcs] [--compare REF_OUT]

``--poller`` drizzles an existing visit instead of simulating one (for example the reference
``uvis`` visit of ``run_benchmarks.py``: ``--poller /tmp/hapsvm-bench/uvis/visit/wfc3_xp1_01_input.out``).
With ``--workdir`` the products stay in ``DIR/out`` (the ``REF_OUT`` of a later comparison).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def _copies_with_input_wcs(total, out_dir: Path) -> None:
    """SVM copies = the inputs (the benchmark times drizzling, not alignment)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for edp in total.edp_list:
        shutil.copyfile(edp.input_path, out_dir / edp.full_filename)


#: WCS keywords replaced by the simulator's true WCS (``--true-wcs``)


def _copies_with_true_wcs(total, out_dir: Path, visit: Path) -> None:
    """SVM copies whose chips carry hapsim's true WCS (``truth_wcs/``): what a perfect
    alignment gives, so that the products can be compared with the truth (as
    ``tests/drizzle/test_drizzle.py`` does)."""
    from hapsim.distortion import write_true_wcs_copy

    out_dir.mkdir(parents=True, exist_ok=True)
    for edp in total.edp_list:
        write_true_wcs_copy(edp.input_path, out_dir / edp.full_filename, visit / "truth_wcs")


class TreeMemory:
    """Peak memory of this process tree, sampled every ``period`` seconds.

    ``rss``: the summed RSS (what ``bench_stagewise.TreeRSS`` reports; shared pages count once
    per process that maps them). ``unique``: anonymous plus file-backed RSS of every process
    (``/proc/<pid>/status``) plus the bytes of hapsvm's scratch folders on ``/dev/shm``, so a
    tmpfs page counts once whether it is mapped by several processes or by none (the scratch
    folders of this tree's processes only: other runs on the machine have theirs).
    """

    def __init__(self, period: float = 0.1):
        import psutil

        self.proc = psutil.Process()
        self.period = period
        self.rss = self.unique = 0.0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _pids(self):
        import psutil

        try:
            return [self.proc.pid] + [p.pid for p in self.proc.children(recursive=True)]
        except psutil.Error:
            return [self.proc.pid]

    @staticmethod
    def _status(pid: int) -> dict:
        fields = {}
        try:
            with open(f"/proc/{pid}/status") as fh:
                for line in fh:
                    if line.startswith(("VmRSS", "RssAnon", "RssFile", "RssShmem")):
                        key, value = line.split(":")
                        fields[key] = int(value.split()[0]) * 1024
        except OSError:
            pass
        return fields

    @staticmethod
    def _shm_bytes(pids) -> int:
        """Bytes of this tree's scratch folders on /dev/shm (``hapsvm-drizzle-<pid>-*``; other
        runs on the machine have theirs)."""
        total = 0
        mine = tuple(f"/dev/shm/hapsvm-drizzle-{pid}-" for pid in pids)
        for root, _, files in os.walk("/dev/shm"):
            if not root.startswith(mine):
                continue
            for name in files:
                try:
                    total += os.stat(os.path.join(root, name)).st_blocks * 512
                except OSError:
                    pass
        return total

    def sample(self) -> tuple[float, float]:
        rss = unique = 0
        pids = self._pids()
        for pid in pids:
            s = self._status(pid)
            rss += s.get("VmRSS", 0)
            unique += s.get("RssAnon", 0) + s.get("RssFile", 0)
        return rss / 2**20, (unique + self._shm_bytes(pids)) / 2**20

    def _run(self):
        while not self._stop.is_set():
            rss, unique = self.sample()
            self.rss, self.unique = max(self.rss, rss), max(self.unique, unique)
            self._stop.wait(self.period)

    def stop(self):
        self._stop.set()
        self.thread.join()


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--poller", type=Path, default=None,
                        help="drizzle this visit's exposures instead of simulating a visit")
    parser.add_argument("--true-wcs", action="store_true",
                        help="SVM copies with hapsim's true WCS (products comparable with the "
                             "truth) instead of the input WCS")
    parser.add_argument("--compare", type=Path, default=None,
                        help="products of another run on the same visit to compare with")
    args = parser.parse_args(argv)

    import numpy as np

    import hapsim
    from flows.stages import DirectRunner, drizzle_stage
    from hap_models.stage import StageResult
    from hapcore.drizzle.grid import make_output_grid
    from hapcore.drizzle.pixmap import exact_pixmap, interpolated_pixmap
    from hapcore.obset.product_parameters import assign_product_parameters
    from hapcore.obset.tree import interpret_obset_input, parse_obset_tree
    from hapcore.wcs.files import read_chip_wcs

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench_drizzle_"))
    result: dict = {"workers": args.workers}
    t0 = time.perf_counter()
    if args.poller is None:
        sim = hapsim.simulate_visit(workdir / "in", detector="wfc3/uvis", filters={"f606w": 4},
                                    seed=7, overwrite=True)
        result["simulate_s"] = round(time.perf_counter() - t0, 2)
        poller = Path(sim.poller)
    else:
        poller = args.poller.resolve()
        result["poller"] = str(poller)
    cwd = os.getcwd()
    os.chdir(poller.parent)  # poller rows name files relative to the visit folder
    try:
        total = assign_product_parameters(parse_obset_tree(interpret_obset_input(
            str(poller))))[0]
    finally:
        os.chdir(cwd)
    first_exposure = total.edp_list[0].input_path

    chip = read_chip_wcs(first_exposure)[1]
    grid = make_output_grid([chip])
    t0 = time.perf_counter()
    exact = exact_pixmap(chip, grid.wcs)
    t_exact = time.perf_counter() - t0
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        approx = interpolated_pixmap(chip, grid.wcs)  # default step (64 px)
        times.append(time.perf_counter() - t0)
    result["pixmap"] = {"chip_shape": list(exact.shape[:2]), "exact_s": round(t_exact, 3),
                        "interpolated_s": round(min(times), 3),
                        "speedup": round(t_exact / min(times), 1),
                        "max_error_px": float(np.abs(approx - exact).max())}
    del exact, approx

    out = workdir / "out"
    if args.true_wcs:
        _copies_with_true_wcs(total, out, poller.parent)
    else:
        _copies_with_input_wcs(total, out)
    result["true_wcs"] = bool(args.true_wcs)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    load_before = [round(v, 2) for v in os.getloadavg()]
    memory = TreeMemory()
    cpu0 = _cpu_s()
    t0 = time.perf_counter()
    made = drizzle_stage(DirectRunner(), total, out, StageResult(stage="align"),
                         n_workers=args.workers)
    paths = [p for p in made.outputs if p.endswith(".fits")]
    stage = time.perf_counter() - t0
    cpu1 = _cpu_s()
    memory.stop()
    self_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    result["stage"] = {"products": len(paths), "wall_s": round(stage, 1),
                       "cpu_main_s": round(cpu1["self"] - cpu0["self"], 1),
                       "cpu_workers_s": round(cpu1["children"] - cpu0["children"], 1),
                       "cpu_user_s": round(cpu1["user"] - cpu0["user"], 1),
                       "cpu_sys_s": round(cpu1["sys"] - cpu0["sys"], 1),
                       "loadavg_before": load_before,
                       "loadavg_after": [round(v, 2) for v in os.getloadavg()],
                       "grid_shape": list(
                           __import__("hapcore.drizzle.grid", fromlist=["x"])
                           .build_detector_grid(total, out).shape),
                       "peak_tree_rss_mb": round(memory.rss),
                       "peak_tree_memory_shm_once_mb": round(memory.unique),
                       "peak_rss_main_mb": round(self_peak),
                       "peak_rss_largest_worker_mb": round(child_peak),
                       "peak_rss_bound_mb": round(self_peak + args.workers * child_peak),
                       "main_rss_before_stage_mb": round(rss_before / 1024)}
    if args.compare is not None:
        from bench_drizzle_compare import compare_products

        result["compare"] = compare_products(total, out, args.compare.resolve(), poller.parent)
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    json.dump(result, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return result


def _cpu_s() -> dict:
    """CPU seconds of this process and of its finished (pool) children, user and system."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"self": own.ru_utime + own.ru_stime,
            "children": children.ru_utime + children.ru_stime,
            "user": own.ru_utime + children.ru_utime, "sys": own.ru_stime + children.ru_stime}


if __name__ == "__main__":
    main()
