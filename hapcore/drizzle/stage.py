"""The drizzle stage's entry points: filter (with its exposures), exposure and total products.

Public API (no Prefect here; each task of :mod:`tasks.drizzle` opens a workspace, calls one of
these, and closes it)::

    with open_detector_workspace(total, output_dir=output_dir, n_workers=2) as ws:
        drizzle_filter_with_exposures(fdp, workspace=ws)   # CR masks persisted in ws.work_dir
    with open_detector_workspace(total, output_dir=output_dir, n_workers=2) as ws:
        drizzle_total_product(total, workspace=ws)          # excludes the filters' CR pixels

Resuming: `open_detector_workspace` keeps pixel maps, CR masks and final partial drizzles in
``output_dir/.hapsvm-work/drizzle-<detector>-<grid fingerprint>/``; a workspace opened later
(another task, another process) on the same folder finds them, so after a kill only unfinished
products need drizzling. Every product also gets its ``_trl.txt`` trailer (inputs, parameters,
CR statistics; `hapcore.drizzle.trailer`).

Inputs are the SVM copies ``output_dir/<ExposureProduct.full_filename>`` written by the
alignment stage; they are only ever opened read-only. Intermediate arrays (separately drizzled
images, medians) live in a per-workspace scratch folder deleted when the workspace closes:
nothing is written into an input or an SVM copy (drizzlepac writes CR flags into its copies'
DQ, §12.1).

Work is spread over ``n_workers`` processes per exposure (the drizzle C kernel holds the GIL and
astropy.wcs is not thread-safe). Pixel maps are computed once per chip and memory-mapped by all
workers. Cosmic rays: `hapcore.drizzle.cr_passes.find_cosmic_rays`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

from hapcore.drizzle.cr_passes import combine_static, find_cosmic_rays
from hapcore.drizzle.jobs import PartialJob, drizzle_partial
from hapcore.drizzle.products import (
    WriteContext,
    cr_lines,
    final_jobs,
    sky_levels,
    write_product,
)
from hapcore.drizzle.workspace import DrizzleWorkspace, prepare_pixel_maps

__all__ = ["drizzle_exposure_product", "drizzle_filter_product", "drizzle_filter_with_exposures",
           "drizzle_total_product", "start_exposure_products", "total_inputs"]

log = logging.getLogger(f"hapsvm.{__name__}")

_EXPOSURE_CR_LINE = "none (exposure products are drizzled without CR masks)"


@dataclass(frozen=True)
class _ExposureProductJob:
    edp: object
    partial: PartialJob
    context: WriteContext
    skies: dict


def _exposure_product(job: _ExposureProductJob) -> Path:
    """A whole exposure product in a worker: its partial drizzle, then `write_product` (as
    `drizzle_exposure_product` does in-process); the partial is deleted after (no other
    product uses the exposure products' settings without CR masks)."""
    t0 = time.perf_counter()
    partial = drizzle_partial(job.partial)
    try:
        return write_product(job.context, job.edp, [job.edp], [partial],
                             job.edp.parameters.drizzle, level="exposure", skies=job.skies,
                             cr_lines=[_EXPOSURE_CR_LINE], t0=t0)
    finally:
        for kind in ("sci", "wht"):
            Path(partial[kind]).unlink(missing_ok=True)


def _exposure_job(edp, ws: DrizzleWorkspace) -> _ExposureProductJob:
    pars = edp.parameters.drizzle
    skies, _ = sky_levels(ws, [edp], pars, static=False)
    (job,) = final_jobs(ws, [edp], pars, skies, use_cr=False)
    job = replace(job, out_stem=ws.scratch / f"exposure-{edp.product_basename}")
    return _ExposureProductJob(edp, job, WriteContext(ws.grid, ws.output_dir), skies)


def drizzle_exposure_product(edp, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle one exposure (HAPLEVEL 1) onto the detector grid with its own parameters, in
    this process (`start_exposure_products` runs the same job in the workers).

    Uses the exposure's ``final_*`` parameters (``resetbits`` 0: no CR masks applied).
    """
    return _exposure_product(_exposure_job(edp, workspace))


def start_exposure_products(edps, *, workspace: DrizzleWorkspace) -> dict:
    """Start exposure products as background jobs (`DrizzleWorkspace.submit_background`).

    They need nothing from the other products, so workers make them while this process works
    alone (medians, writing the filter product). The caller owns the returned futures
    (``{exposure file name: future}``) and collects each with
    `DrizzleWorkspace.background_result` before it closes the workspace.
    """
    return {edp.full_filename: workspace.submit_background(_exposure_product,
                                                           _exposure_job(edp, workspace))
            for edp in edps}


def drizzle_filter_product(fdp, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle a filter product with the full AstroDrizzle sequence of its parameters.

    Static mask, sky, separate drizzle, median/minmed, blot, driz_cr and the final drizzle
    with the CR masks (persisted in the workspace for the total product). A filter with a single
    exposure (or parameters with the CR steps off) gets no CR rejection, which is logged.
    """
    ws = workspace
    edps = list(fdp.edp_list)
    pars = fdp.parameters.drizzle
    t0 = time.perf_counter()
    do_cr = pars.cr_rejection_enabled and len(edps) >= 2
    skies, stats = sky_levels(ws, edps, pars, static=pars.static and do_cr)
    static_files = {}
    if pars.static and do_cr:
        static_files = combine_static(ws, fdp, stats)
    why = ""
    if not do_cr:
        why = "single exposure" if len(edps) < 2 else "CR steps disabled by its parameters"
        log.info("%s: no cosmic-ray rejection (%s)", fdp.drizzle_filename, why)
    else:
        find_cosmic_rays(ws, fdp, edps, pars, skies, static_files)
    # final partials persist in work_dir: the total product reuses those with its settings
    partials = ws.partials(final_jobs(ws, edps, pars, skies, use_cr=do_cr), persist=True)
    lines = cr_lines(ws, edps, computed=True) if do_cr else [f"none ({why})"]
    path = write_product(ws, fdp, edps, partials, pars, level="filter", skies=skies,
                         cr_lines=lines, t0=t0)
    log.debug("%s: %.1f s", path.name, time.perf_counter() - t0)
    return path


def drizzle_filter_with_exposures(fdp, *, workspace: DrizzleWorkspace) -> list[Path]:
    """A filter product and its exposure products: one unit of work, in spec order.

    The pixel maps of the filter's exposures are prepared first (in parallel), then the
    exposure products are started in the workers' idle time and the filter product is drizzled
    here; the exposure products are collected before this returns.

    Returns
    -------
    list of Path
        ``[filter product, exposure product, ...]``.
    """
    ws = workspace
    edps = list(fdp.edp_list)
    prepare_pixel_maps(edps, workspace=ws)
    futures = start_exposure_products(edps, workspace=ws)
    try:
        written = [drizzle_filter_product(fdp, workspace=ws)]
        written += [ws.background_result(futures.pop(e.full_filename)) for e in edps]
    finally:
        for future in futures.values():
            future.cancel()
    return written


def total_inputs(total) -> list:
    """Members of filters with >= 2 exposures, or all exposures if every filter has one (§5.2)."""
    multi = [e for f in total.fdp_list if len(f.edp_list) >= 2 for e in f.edp_list]
    return multi if multi else [e for f in total.fdp_list for e in f.edp_list] or \
        list(total.edp_list)


def drizzle_total_product(total, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle the total (detection) product; CR pixels found by the filter products are
    excluded.

    The CR masks are those the filter products persisted in the workspace's ``work_dir``
    (`open_detector_workspace`). A filter that should have masks but has none is warned about
    (its cosmic rays reach the total).
    """
    ws = workspace
    t0 = time.perf_counter()
    edps = total_inputs(total)
    pars = total.parameters.drizzle
    skies, _ = sky_levels(ws, edps, pars, static=False)
    applied = 0
    for fdp in total.fdp_list:
        members = [e for e in fdp.edp_list if e in edps]
        if not members:
            continue
        expect = len(fdp.edp_list) >= 2 and fdp.parameters.drizzle.cr_rejection_enabled
        for edp in members:
            masks = ws.find_cr_masks(edp)
            for extver, file in masks.items():
                applied += 1
                ws.cr_masks[(edp.full_filename, extver)] = file
                log.debug("%s: CR mask of %s[SCI,%d]: %s", total.drizzle_filename,
                          edp.full_filename, extver, file.name)
            if expect and not masks:
                log.warning("%s: no CR mask for %s (filter product %s not drizzled?); its "
                            "cosmic rays are not excluded", total.drizzle_filename,
                            edp.full_filename, fdp.drizzle_filename)
    log.info("%s: %d inputs, %d chip CR masks applied", total.drizzle_filename, len(edps),
             applied)
    partials = ws.partials(final_jobs(ws, edps, pars, skies, use_cr=True), persist=True)
    return write_product(ws, total, edps, partials, pars, level="total", skies=skies,
                         cr_lines=cr_lines(ws, edps, computed=False), t0=t0)
