"""One visit's processing, written once for both engines (no Prefect here).

:func:`process_visit` runs every stage of a visit -- parse, product tree and parameters, then
per detector alignment, drizzle and catalogs (:mod:`flows.stages`), the quality analysis, the
trailers, the manifest and the summary -- through a *visit runner*:

* the Prefect engine (:func:`flows.visit_flow.svm_visit`) passes
  :class:`flows.visit_flow._Stages`, which runs each task as a Prefect task run;
* the direct engine (:func:`flows.direct.run_visit`) passes
  :class:`flows.direct.DirectVisitRunner`, which calls each task's function in this process
  through the same cache keys and records.

Both are a :class:`VisitRunner`: failure injection (``fail_stage``), progress, and each task's
state, wall time and memory high-water mark are recorded here, the same way for both.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from flows.artifacts import StageProgress, publish_visit_artifacts
from flows.options import read_environment
from flows.preflight import check_custom_pars_options
from flows.stages import catalog_stage, drizzle_stage, finish_drizzle_work, quality_stage
from flows.visit_log import FILE_ONLY
from hap_models.errors import HapError, NotAlignedError
from hap_models.run_options import VisitOptions, VisitResult
from hap_models.stage import StageResult
from hapcore.atomic import write_text_atomic
from tasks.align import align_detector_task
from tasks.cache_store import CACHED, load_digest_memo, save_digest_memo
from tasks.caching import cache_storage
from tasks.manifest import write_manifest_task
from tasks.obset import build_product_tree_task, interpret_obset_input_task
from tasks.quality import QUALITY_GROUPS

__all__ = ["VisitRunner", "prepare_visit", "process_visit"]

logger = logging.getLogger(f"hapsvm.{__name__}")

_RUN_LOG_MARKER = "\n# ---- run log ----\n"


class VisitRunner:
    """What both engines' visit runners share (a mixin; see the module docstring).

    A subclass provides ``execute(stage_task, args, kwargs) -> (result, state)`` and
    ``call(stage_task, *args)`` (an uncached helper task), and calls :meth:`_init_visit`.

    Attributes
    ----------
    options : VisitOptions
    storage : Path
        The cache directory.
    states, timings, peaks : dict
        Per task label: final state (``Completed``/``Cached``), wall time (s), process
        memory high-water mark (MB).
    """

    def _init_visit(self, options: VisitOptions, progress: StageProgress | None) -> None:
        self.options = options
        self.storage = cache_storage(options.output_dir, options.cache_dir)
        self.states: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.progress = progress

    def execute(self, stage_task: Any, args: Sequence[Any],
                kwargs: Mapping[str, Any]) -> tuple[Any, str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _maybe_inject_failure(self, name: str, label: str) -> None:
        """Testing aid: ``fail_stage`` makes the first attempt at that stage fail (a marker file in
        the output directory remembers it), so a retry of the same run succeeds."""
        wanted = self.options.fail_stage
        if not wanted or not (wanted in (name, label) or label.startswith(f"{wanted}-")):
            return
        # one marker per requested stage: a stage made of several tasks fails only once
        marker = self.options.output_dir / f".hapsvm-injected-failure-{wanted}"
        if marker.exists():
            return
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        raise RuntimeError(f"injected failure in stage {label} (fail_stage option)")

    def __call__(self, stage_task: Any, *args: Any, label: str | None = None,
                 **kwargs: Any) -> StageResult:
        name = stage_task.name
        label = label or name
        self._maybe_inject_failure(name, label)
        if self.progress is not None:
            self.progress.stage_started(label)
        result, state = self.execute(stage_task, args, kwargs)
        self.states[label] = state
        self.timings[label] = float(getattr(result, "wall_s", 0.0) or 0.0)
        self.peaks[label] = _peak_rss_mb()
        if self.progress is not None:
            self.progress.stage_done(label, state, self.timings[label])
        return result


def _write_total_trailers(totals, log_part: Path | None, output_dir: Path, *,
                          recomputed: bool) -> list[str]:
    """Each total product's trailer gets the run log so far appended to what the drizzle stage
    wrote there (drizzlepac appends the run log to the total trailer too).

    The trailer keeps the log of the run that made the products: a run that recomputed nothing
    (``recomputed`` False: every stage a cache hit) leaves a trailer that has its run log as it
    is, so a rerun changes no byte of any product.
    """
    text = log_part.read_text(encoding="utf-8") if log_part and log_part.exists() else ""
    names = []
    for total in totals:
        trailer = output_dir / total.trl_filename
        existing = trailer.read_text(encoding="utf-8") if trailer.exists() else ""
        if recomputed or _RUN_LOG_MARKER not in existing:
            drizzle_part = existing.split(_RUN_LOG_MARKER)[0]
            write_text_atomic(trailer, drizzle_part + _RUN_LOG_MARKER + text)
        names.append(total.trl_filename)
    return names


def _product_order(total, output_dir: Path, aligned: StageResult, drizzled: StageResult,
                   cataloged: StageResult) -> list[str]:
    """Manifest order of drizzlepac (§3.4): per filter its product, trailer, then each exposure's
    product, SVM copy, headerlet, trailer; then the total; then the catalogs."""
    # products are the files at the top of the output directory (not the .hapsvm-work masks)
    written = {Path(p).name for r in (aligned, drizzled, cataloged) for p in r.outputs
               if Path(p).parent == Path(output_dir).resolve()}
    ordered: list[str] = []
    for fdp in total.fdp_list:
        ordered += [fdp.drizzle_filename, fdp.trl_filename]
        for edp in fdp.edp_list:
            ordered += [edp.drizzle_filename, edp.full_filename, edp.headerlet_filename,
                        edp.trl_filename]
    for gdp in total.grism_edp_list:
        ordered.append(gdp.full_filename)
    ordered.append(total.drizzle_filename)
    for product in [*total.fdp_list, total]:
        ordered += [product.point_cat_filename, product.segment_cat_filename]
    listed = [name for name in ordered if name in written]
    return listed + sorted(written - set(listed))


def _remove_incomplete_files(output_dir: Path) -> None:
    """Temporary files of a killed run (every output is written as ``.<name>.<random>.tmp`` and
    renamed when complete): never products, safe to delete before a new run writes."""
    if not output_dir.is_dir():
        return
    for stale in output_dir.glob(".*.tmp"):
        logger.info("removing %s, an incomplete file of an interrupted run", stale.name)
        stale.unlink(missing_ok=True)


def _peak_rss_mb() -> float:
    """High-water mark of resident memory so far (MB): this process or its largest child."""
    import resource

    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return round(usage / 1024.0, 1)


def _poller_exposures(poller_file: Path) -> list[Path]:
    """Files the poller names, located as the parser will (only for the parse stage's cache key)."""
    from hapcore.obset.poller import locate_exposure, read_poller_lines

    found = []
    for line in read_poller_lines(poller_file):
        try:
            found.append(locate_exposure(line))
        except HapError:
            pass        # the parse stage itself reports the missing file, in order
    return found


#: Science modules the stage tasks import when they run (:mod:`tasks.stage_task`).
_STAGE_MODULES = ("hapcore.obset.product_parameters", "hapcore.align.stage",
                  "hapcore.drizzle.stage", "hapcore.catalogs.stage")


def prepare_visit(poller_file: Path, options: VisitOptions) -> None:
    """Work of the first tasks that needs no Prefect API, done ahead while the temporary API
    server starts (:func:`flows.svm.run_hap_processing`): the digests of the poller and its
    exposures (the first task's cache key; ~0.3 s per full-frame exposure on a first run)
    and, unless the first task's record exists (a rerun, whose stages are most likely cache
    hits that need none of them), the imports of the stages' science modules. Never raises:
    whatever fails here is done, and reported, by the tasks themselves."""
    import importlib

    from tasks.cache_store import TaskCache, bound_inputs
    from tasks.caching import task_cache_key

    try:
        storage = cache_storage(options.output_dir, options.cache_dir)
        load_digest_memo(storage)
        args = (Path(poller_file), _poller_exposures(Path(poller_file)))
        key = task_cache_key(interpret_obset_input_task.name,
                             bound_inputs(interpret_obset_input_task.fn, args, {}))
        if options.force or not TaskCache(storage).record_path(key).is_file():
            for module in _STAGE_MODULES:
                importlib.import_module(module)
    except Exception:  # the tasks meet the same problem and report it
        logger.debug("preparing the visit ahead failed", exc_info=True)


def process_visit(poller_file: Path, options: VisitOptions, log_part: Path | None,
                  make_runner: Callable[[VisitOptions, StageProgress], VisitRunner]
                  ) -> VisitResult:
    """Process one visit with the runner ``make_runner(options, progress)`` builds.

    Every stage is a cached task (:mod:`tasks.caching`): a rerun recomputes only what changed.
    The digests of the files a run reads and writes are kept in the cache directory
    (:func:`tasks.cache_store.save_digest_memo`), so the next run hashes no unchanged file.
    """
    output_dir = options.output_dir
    logger.info("hapsvm single-visit processing of %s into %s", poller_file, output_dir)
    check_custom_pars_options(options)      # the entry points checked more; a deployment not
    _remove_incomplete_files(output_dir)
    # read by the entry point; a deployment starts this flow directly: then it is read here, once
    options = read_environment(options, os.environ)
    storage = cache_storage(output_dir, options.cache_dir)
    load_digest_memo(storage)
    try:
        return _run_stages(poller_file, options, log_part, make_runner)
    finally:
        # also after a failure: the digests of what was finished serve the resumed run
        save_digest_memo(storage)


def _run_stages(poller_file: Path, options: VisitOptions, log_part: Path | None,
                make_runner: Callable[[VisitOptions, StageProgress], VisitRunner]
                ) -> VisitResult:
    output_dir = options.output_dir
    refcat, quality_on = options.refcat_path, options.quality_enabled
    progress = StageProgress(poller_file.stem, n_stages=2)
    run = make_runner(options, progress)
    tree = run(interpret_obset_input_task, poller_file, _poller_exposures(poller_file)).payload
    totals = run(build_product_tree_task, tree, options.input_custom_pars_file,
                 options.output_custom_pars_file, options.use_defaults_configs).payload
    n_direct = sum(1 for t in totals if t.has_direct_exposures)
    n_drizzle = sum(len(t.fdp_list) + 1 for t in totals if t.has_direct_exposures)
    n_catalog = sum(len(t.fdp_list) for t in totals if t.has_direct_exposures)
    # per detector: align, catalog detection and writing; per filter a drizzle and a catalog
    # task, plus the total's drizzle
    progress.set_total(2 + 3 * n_direct + n_drizzle + n_catalog
                       + (len(QUALITY_GROUPS) + 1 if quality_on else 0))
    alignment_notes: list[str] = []
    aligned_all: list[StageResult] = []
    catalogs_all: list[StageResult] = []

    products: list[str] = []
    for total in totals:
        if not total.has_direct_exposures:
            continue
        det = total.detector
        online = (run.storage / "gaia") if options.online_catalog and refcat is None else None
        aligned = run(align_detector_task, total, output_dir, refcat, options.n_workers, online,
                      label=f"align-{det}")
        drizzled = drizzle_stage(run, total, output_dir, aligned, options.n_workers)
        cataloged = catalog_stage(run, total, output_dir, drizzled, options)
        products += _product_order(total, output_dir, aligned, drizzled, cataloged)
        alignment_notes.append(f"{det.upper()}: {aligned.payload.status}")
        aligned_all.append(aligned)
        catalogs_all.append(cataloged)

    direct = [t for t in totals if t.has_direct_exposures]
    if quality_on and direct:
        quality_stage(run, direct, output_dir, refcat, aligned_all, catalogs_all,
                      tree.manifest_name.removesuffix("_manifest.txt"),
                      hla_basepath=options.hla_classic_basepath,
                      hla_build_ver=options.hla_build_ver,
                      hla_local_dir=options.hla_classic_dir)

    for total in totals:
        logger.debug("%s: %d filter product(s), %d exposure(s), %d grism/prism exposure(s)",
                     total.product_basename, len(total.fdp_list), len(total.edp_list),
                     len(total.grism_edp_list))
        for product in total.all_products():
            logger.debug("  product %s (HAPLEVEL %d) -> %s", product.product_basename,
                         product.haplevel, product.drizzle_filename)

    counts = _catalog_counts(output_dir, products)
    alignment = {a.payload.detector.upper(): a.payload.status for a in aligned_all}
    unaligned = [a.payload.detector.upper() for a in aligned_all if not a.payload.aligned]
    _log_summary(direct, alignment, counts, run.timings, output_dir)
    recomputed = any(state != CACHED for state in run.states.values())
    products += _write_total_trailers(totals, log_part, output_dir, recomputed=recomputed)
    finish_drizzle_work(output_dir)
    manifest = run.call(write_manifest_task, output_dir / tree.manifest_name, products)
    # every stage's state in the log file; the console gets the counts
    logger.info("stages: %s", ", ".join(f"{k} {v}" for k, v in run.states.items()),
                extra=FILE_ONLY)
    cached = sum(state == CACHED for state in run.states.values())
    logger.info("%d stage task(s) computed, %d from the cache", len(run.states) - cached, cached)
    progress.close()
    result = VisitResult(poller_file=poller_file, output_dir=output_dir, manifest=manifest,
                         products=products, detectors=tree.detectors,
                         n_exposures=sum(len(t.edp_list) + len(t.grism_edp_list) for t in totals),
                         n_rejected=len(tree.rejected), alignment=alignment, unaligned=unaligned,
                         stage_states=run.states)
    publish_visit_artifacts(result, alignment_summary="; ".join(alignment_notes),
                            catalog_counts=counts, timings=run.timings)
    if options.require_alignment and unaligned:
        raise NotAlignedError("; ".join(f"{det}: {alignment[det]}" for det in unaligned)
                              + " (--require-alignment)")
    return result


def _log_summary(totals, alignment: dict[str, str], counts: dict[str, int],
                 timings: dict[str, float], output_dir: Path) -> None:
    """The run's last words: alignment per detector (a failed one as a WARNING, so that it shows
    at any log level), catalog rows per detector, time per stage."""
    for det, status in alignment.items():
        level = logging.INFO if status.startswith("aligned") else logging.WARNING
        logger.log(level, "%s: %s", det, status)
    for total in totals:
        rows = [f"{kind} {counts[name]}" for kind, name in
                (("point", total.point_cat_filename), ("segment", total.segment_cat_filename))
                if name in counts]
        if rows:
            logger.info("%s catalogs: %s rows (%d filter product(s))", total.detector.upper(),
                        ", ".join(rows), len(total.fdp_list))
    stages: dict[str, float] = {}
    for label, seconds in timings.items():
        stage = label.split("-")[0]
        stages[stage] = stages.get(stage, 0.0) + seconds
    logger.info("time per stage: %s (products in %s)",
                ", ".join(f"{k} {v:.1f} s" for k, v in stages.items()), output_dir)


def _catalog_counts(output_dir: Path, products: list[str]) -> dict[str, int]:
    """``Number of sources`` of every catalog written (read from the ECSV header only)."""
    counts = {}
    for name in products:
        if not name.endswith("-cat.ecsv"):
            continue
        for line in (output_dir / name).open(encoding="utf-8"):
            if not line.startswith("#"):
                break
            found = re.search(r"Number of sources:\s*(-?\d+)", line)
            if found:
                counts[name] = int(found.group(1))
                break
    return counts
