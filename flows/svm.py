"""The per-visit flow and ``run_hap_processing`` (drizzlepac's ``hapsequencer`` entry point).

Run a visit from the shell with ``python -m flows.svm POLLER [options]`` (same options as
``runsinglehap``). Stages run as Prefect tasks on the local ephemeral API when no
``PREFECT_API_URL`` is set, so no server has to be started.

Exit codes: see :class:`hap_models.errors.ExitCode` (0 success, 1 error, 65 no viable data).
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path

from prefect import flow

from hap_models.errors import ExitCode, HapError, HapInputError
from hap_models.run_options import VisitOptions, VisitResult
from hapcore.atomic import write_text_atomic
from flows.artifacts import StageProgress, publish_visit_artifacts
from flows.options import read_environment
from flows.stages import catalog_stage
from flows.stages import drizzle_stage, finish_drizzle_work
from flows.stages import quality_stage
from flows.visit_log import VisitLog
from hap_models.stage import StageResult
from tasks.align import align_detector_task
from tasks.caching import cache_storage
from tasks.manifest import write_manifest_task
from tasks.obset import build_product_tree_task, interpret_obset_input_task
from tasks.quality import QUALITY_GROUPS

__all__ = ["svm_visit", "run_hap_processing", "main"]

logger = logging.getLogger(f"hapsvm.{__name__}")


def _check_options(poller_file: Path, options: VisitOptions) -> None:
    """Fail early, in one line, on options that name missing or clashing files."""
    if options.input_custom_pars_file is not None and not options.input_custom_pars_file.is_file():
        raise HapInputError(f"-c {options.input_custom_pars_file}: parameter file not found")
    if (options.input_custom_pars_file is not None and options.output_custom_pars_file is not None
            and options.input_custom_pars_file.resolve() == options.output_custom_pars_file.resolve()):
        raise HapInputError(
            f"{options.output_custom_pars_file}: input and output custom parameter files must differ")


def _write_total_trailers(totals, log_part: Path | None, output_dir: Path) -> list[str]:
    """Each total product's trailer gets the run log so far appended to what the drizzle stage
    wrote there (drizzlepac appends the run log to the total trailer too)."""
    text = log_part.read_text(encoding="utf-8") if log_part and log_part.exists() else ""
    names = []
    for total in totals:
        trailer = output_dir / total.trl_filename
        drizzle_part = trailer.read_text(encoding="utf-8") if trailer.exists() else ""
        marker = "\n# ---- run log ----\n"
        drizzle_part = drizzle_part.split(marker)[0]
        write_text_atomic(trailer, drizzle_part + marker + text)
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
        # called directly (a deployment, the fan-out flow): this run keeps its own .log file
        with VisitLog(options.output_dir / (Path(poller_file).stem + ".log"),
                      level=options.log_level) as visit_log:
            return _process_visit(Path(poller_file), options, visit_log.part_path)
    return _process_visit(Path(poller_file), options, log_part)


def _process_visit(poller_file: Path, options: VisitOptions, log_part: Path) -> VisitResult:
    output_dir = options.output_dir
    logger.info("hapsvm single-visit processing of %s into %s", poller_file, output_dir)
    _check_options(poller_file, options)
    _remove_incomplete_files(output_dir)
    # read by the entry point; a deployment starts this flow directly: then it is read here, once
    options = read_environment(options, os.environ)
    refcat, quality_on = options.refcat_path, options.quality_enabled
    progress = StageProgress(poller_file.stem, n_stages=2)
    run = _Stages(options, progress)
    tree = run(interpret_obset_input_task, poller_file, _poller_exposures(poller_file)).payload
    totals = run(build_product_tree_task, tree, options.input_custom_pars_file,
                 options.output_custom_pars_file, options.use_defaults_configs,
                 options.log_level).payload
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
        alignment_notes.append(f"{det.upper()}: {aligned.payload.summary}")
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
        logger.info("%s: %d filter product(s), %d exposure(s), %d grism/prism exposure(s)",
                    total.product_basename, len(total.fdp_list), len(total.edp_list),
                    len(total.grism_edp_list))
        for product in total.all_products():
            logger.debug("  product %s (HAPLEVEL %d) -> %s", product.product_basename,
                         product.haplevel, product.drizzle_filename)

    products += _write_total_trailers(totals, log_part, output_dir)
    finish_drizzle_work(output_dir)
    manifest = write_manifest_task(output_dir / tree.manifest_name, products)
    logger.info("stages: %s", ", ".join(f"{k} {v}" for k, v in run.states.items()))
    progress.close()
    result = VisitResult(poller_file=poller_file, output_dir=output_dir, manifest=manifest,
                         products=products, detectors=tree.detectors,
                         n_exposures=sum(len(t.edp_list) + len(t.grism_edp_list) for t in totals),
                         n_rejected=len(tree.rejected), stage_states=run.states)
    publish_visit_artifacts(result, alignment_summary="; ".join(alignment_notes),
                            catalog_counts=_catalog_counts(output_dir, products),
                            timings=run.timings)
    return result


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


def run_hap_processing(input_filename, diagnostic_mode=False, use_defaults_configs=True,
                       input_custom_pars_file=None, output_custom_pars_file=None,
                       phot_mode="both", log_level=logging.INFO, *, output_dir=None,
                       refcat=None, force=False, cache_dir=None, n_workers=2,
                       fail_stage=None, online_catalog=False, quality=False) -> int:
    """Run the per-visit flow on a poller file and return an exit code (never raises, never exits).

    Parameters follow drizzlepac's ``hapsequencer.run_hap_processing``; ours: ``output_dir``
    (default: the current directory), ``refcat`` (a local astrometric reference catalog),
    ``force`` (recompute every stage), ``cache_dir`` (cache records; default
    ``<output_dir>/.hapsvm-cache``), ``n_workers`` (processes for heavy stages) and ``fail_stage``
    (testing: make the named stage fail).

    Returns
    -------
    int
        0 success, 1 error, 65 no viable data (:class:`hap_models.errors.ExitCode`).
    """
    poller_file = Path(input_filename).resolve()
    out = Path(output_dir).resolve() if output_dir is not None else Path.cwd()
    log_path = out / (poller_file.stem + ".log")
    try:
        options = VisitOptions(
            output_dir=out, diagnostic_mode=diagnostic_mode,
            use_defaults_configs=use_defaults_configs,
            input_custom_pars_file=(Path(input_custom_pars_file).resolve()
                                    if input_custom_pars_file else None),
            output_custom_pars_file=(Path(output_custom_pars_file).resolve()
                                     if output_custom_pars_file else None),
            phot_mode=phot_mode, log_level=int(log_level),
            refcat=Path(refcat).resolve() if refcat else None, force=force,
            cache_dir=Path(cache_dir).resolve() if cache_dir else None, n_workers=n_workers,
            fail_stage=fail_stage, online_catalog=online_catalog, quality=quality)
    except Exception as exc:  # pydantic ValidationError: report the first problem in one line
        errors = exc.errors() if hasattr(exc, "errors") else [{"loc": ("options",), "msg": str(exc)}]
        first = errors[0]
        logger.error("invalid option %s: %s", ".".join(map(str, first["loc"])), first["msg"])
        return int(ExitCode.ERROR)

    code = ExitCode.OK
    with VisitLog(log_path, level=options.log_level) as visit_log:
        try:
            # the environment is read here, once, before the flow starts
            options = read_environment(options, os.environ)
            result = svm_visit(poller_file, options, visit_log.part_path)
            logger.info("visit done: %d product file(s) listed in %s", len(result.products),
                        result.manifest.name if result.manifest else "no manifest")
        except HapError as exc:
            logger.error("%s", exc)
            code = exc.exit_code
        except Exception:
            logger.exception("unexpected failure while processing %s", poller_file)
            code = ExitCode.ERROR
        logger.info("return value: %d", int(code))
    return int(code)


def main(argv: list[str] | None = None) -> int:
    """``python -m flows.svm POLLER [options]``: same options as ``runsinglehap``."""
    from flows.runsinglehap import main as runsinglehap_main

    return runsinglehap_main(argv, prog="python -m flows.svm")


if __name__ == "__main__":
    sys.exit(main())
