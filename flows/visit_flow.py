"""The per-visit Prefect flow ``svm-visit``: every stage of one visit as cached tasks.

:func:`svm_visit` is started by :func:`flows.svm.run_hap_processing` (``runsinglehap``,
``python -m flows.svm``, ``hapsvm run``) once the inputs have passed :mod:`flows.preflight`, by
the fan-out flow, and by deployments (``deployment.yaml``). Stages run as Prefect tasks on the
local ephemeral API when no ``PREFECT_API_URL`` is set, so no server has to be started.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from prefect import flow

from hap_models.errors import NotAlignedError, HapError
from hap_models.run_options import VisitOptions, VisitResult
from hapcore.atomic import write_text_atomic
from flows.artifacts import StageProgress, publish_visit_artifacts
from flows.options import read_environment
from flows.stages import catalog_stage
from flows.stages import drizzle_stage, finish_drizzle_work
from flows.stages import quality_stage
from flows.preflight import (
    check_custom_pars_options,
)
from flows.run_lock import OutputDirLock
from flows.visit_log import FILE_ONLY, VisitLog
from hap_models.stage import StageResult
from tasks.align import align_detector_task
from tasks.caching import cache_storage
from tasks.manifest import write_manifest_task
from tasks.obset import build_product_tree_task, interpret_obset_input_task
from tasks.quality import QUALITY_GROUPS

__all__ = ["svm_visit"]

logger = logging.getLogger(f"hapsvm.{__name__}")


_RUN_LOG_MARKER = "\n# ---- run log ----\n"


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


class _Stages:
    """Runs stage tasks with this visit's cache settings and records how each one ended."""

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

    def __init__(self, options: VisitOptions, progress: StageProgress | None = None):
        self.options = options
        self.storage = cache_storage(options.output_dir, options.cache_dir)
        self.states: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self.peaks: dict[str, float] = {}
        self.progress = progress

    def __call__(self, stage_task, *args, **kwargs) -> StageResult:
        name = stage_task.name
        label = kwargs.pop("label", name)
        self._maybe_inject_failure(name, label)
        configured = stage_task.with_options(result_storage=self.storage,
                                             refresh_cache=self.options.force)
        if self.progress is not None:
            self.progress.stage_started(label)
        state = configured(*args, return_state=True, **kwargs)
        self.states[label] = state.name
        result = state.result()
        self.timings[label] = float(getattr(result, "wall_s", 0.0) or 0.0)
        self.peaks[label] = _peak_rss_mb()
        if self.progress is not None:
            self.progress.stage_done(label, state.name, self.timings[label])
        return result


@flow(name="svm-visit", flow_run_name="visit-{poller_file.stem}", log_prints=False)
def svm_visit(poller_file: Path, options: VisitOptions, log_part: Path | None = None) -> VisitResult:
    """Process one visit: parse, product tree and parameters, alignment; write the manifest.

    Every stage is a cached task (:mod:`tasks.caching`): a rerun recomputes only what changed.
    """
    if log_part is None:
        # called directly (a deployment, the fan-out flow): this run keeps its own .log file,
        # and takes the output directory's lock first, as run_hap_processing does
        with OutputDirLock(options.output_dir), VisitLog(
                options.output_dir / (Path(poller_file).stem + ".log"),
                level=options.log_level) as visit_log:
            return _process_visit(Path(poller_file), options, visit_log.part_path)
    return _process_visit(Path(poller_file), options, log_part)


def _process_visit(poller_file: Path, options: VisitOptions, log_part: Path) -> VisitResult:
    output_dir = options.output_dir
    logger.info("hapsvm single-visit processing of %s into %s", poller_file, output_dir)
    check_custom_pars_options(options)      # the entry points checked more; a deployment not
    _remove_incomplete_files(output_dir)
    # read by the entry point; a deployment starts this flow directly: then it is read here, once
    options = read_environment(options, os.environ)
    refcat, quality_on = options.refcat_path, options.quality_enabled
    progress = StageProgress(poller_file.stem, n_stages=2)
    run = _Stages(options, progress)
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
    recomputed = any(state != "Cached" for state in run.states.values())
    products += _write_total_trailers(totals, log_part, output_dir, recomputed=recomputed)
    finish_drizzle_work(output_dir)
    manifest = write_manifest_task(output_dir / tree.manifest_name, products)
    # every stage's state in the log file; the console gets the counts
    logger.info("stages: %s", ", ".join(f"{k} {v}" for k, v in run.states.items()),
                extra=FILE_ONLY)
    cached = sum(state == "Cached" for state in run.states.values())
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


