"""The drizzle stage's entry points: filter (with its exposures), exposure and total products.

Public API (no Prefect here; each task of :mod:`tasks.drizzle` opens a workspace, calls one of
these, and closes it)::

    with open_detector_workspace(total, output_dir=output_dir, n_workers=2) as ws:
        drizzle_filter_with_exposures(fdp, workspace=ws)   # CR masks persisted in ws.work_dir
    with open_detector_workspace(total, output_dir=output_dir, n_workers=2) as ws:
        drizzle_total_product(total, workspace=ws)          # excludes the filters' CR pixels

Each chip is drizzled once per filter (the separate drizzle of the cosmic-ray rejection); the
filter's final drizzle and its exposure products follow from it by the pixels that differ
(`hapcore.drizzle.cr_passes`, `hapcore.drizzle.chip_partials`). The total product is the
weighted combination of its filters' products when it drizzles their exposures with the same
settings (`hapcore.drizzle.total`), else drizzled.

Resuming: `open_detector_workspace` keeps the compressed CR masks in
``output_dir/.hapsvm-work/drizzle-<detector>-<grid fingerprint>/``; a workspace opened later
(another task, another process) on the same folder finds them, and the total product reads the
filter products, so after a kill only unfinished products need drizzling. Every product also
gets its ``_trl.txt`` trailer (inputs, parameters, CR statistics; `hapcore.drizzle.trailer`).

Inputs are the SVM copies ``output_dir/<ExposureProduct.full_filename>`` written by the
alignment stage; they are only ever opened read-only. Intermediate arrays (partial drizzles,
medians) live in a per-workspace scratch folder (on a tmpfs where there is one) deleted when
the workspace closes: nothing is written into an input or an SVM copy (drizzlepac writes CR
flags into its copies' DQ, §12.1).

Work is spread over ``n_workers`` processes per exposure (the drizzle C kernel holds the GIL and
astropy.wcs is not thread-safe).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from hapcore.digests import remember_digests
from hapcore.drizzle.chip_partials import Settings
from hapcore.drizzle.cr_passes import (
    combine_static,
    find_cosmic_rays,
    separate_settings,
)
from hapcore.drizzle.inputs import sci_extvers
from hapcore.drizzle.jobs import PartialJob, drizzle_partials
from hapcore.drizzle.product_jobs import (
    ExposureProductJob,
    exposure_product,
    write_exposure_product,
)
from hapcore.drizzle.products import (
    WriteContext,
    cr_lines,
    final_settings,
    sky_levels,
    write_product,
)
from hapcore.drizzle.single_exposure_cr import (
    SingleExposureCRJob,
    flag_single_exposure_chip,
)
from hapcore.drizzle.total import total_from_filters
from hapcore.drizzle.total_partials import (
    load_total_partials,
    remove_total_partials,
    total_partial_key,
    total_partial_stem,
)
from hapcore.drizzle.workspace import DrizzleWorkspace

__all__ = ["drizzle_exposure_product", "drizzle_filter_product", "drizzle_filter_with_exposures",
           "drizzle_total_product", "total_inputs"]

log = logging.getLogger(f"hapsvm.{__name__}")

_EXPOSURE_CR_LINE = "none (exposure products are drizzled without CR masks)"


def _exposure_job(edp, ws: DrizzleWorkspace, *, base=None,
                  base_settings: Settings | None = None) -> ExposureProductJob:
    pars = edp.parameters.drizzle
    skies, _ = sky_levels(ws, [edp], pars, static=False)
    settings = final_settings(ws, edp, pars, skies, use_cr=False)
    return ExposureProductJob(edp=edp, context=WriteContext(ws.grid, ws.output_dir),
                              settings=settings, skies=skies,
                              stem=ws.scratch / f"exposure-{edp.product_basename}",
                              cr_line=_EXPOSURE_CR_LINE, base=base, base_settings=base_settings)


def drizzle_exposure_product(edp, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle one exposure (HAPLEVEL 1) onto the detector grid with its own parameters, in
    this process.

    Uses the exposure's ``final_*`` parameters (``resetbits`` 0: no CR masks applied).
    """
    return exposure_product(_exposure_job(edp, workspace))


def _total_partials_to_derive(fdp, total, ws: DrizzleWorkspace, pars, skies, finals: dict,
                              static_files: dict) -> dict:
    """``{exposure file: (settings, stem)}`` of the total partials the filter's last CR pass
    derives (`hapcore.drizzle.total_partials`): only for a total of this filter's exposures
    alone, in the same order, whose final settings differ from the filter's (the total then
    cannot be the filter product's copy: WFC3/UVIS from 6 exposures, ``final_pixfrac`` 0.8)
    and follow from the separate drizzle's."""
    if total is None or getattr(total, "parameters", None) is None:
        return {}
    edps = list(fdp.edp_list)
    if [e.full_filename for e in total_inputs(total)] != [e.full_filename for e in edps]:
        return {}
    tpars = total.parameters.drizzle
    tskies, _ = sky_levels(ws, edps, tpars, static=False)
    out = {}
    for e in edps:
        settings = final_settings(ws, e, tpars, tskies, use_cr=False)
        if settings != finals[e.full_filename] and settings.derivable_from(
                separate_settings(e, pars, skies, static_files)):
            out[e.full_filename] = (settings, total_partial_stem(ws.work_dir, e.product_basename))
    return out


def _filter_product(fdp, ws: DrizzleWorkspace, *, with_exposures: bool, total=None):
    """The filter product; returns ``(path, final partials, their settings)`` (with the CR
    masks the partials exclude). With ``with_exposures`` the cosmic-ray pass also writes the
    exposure products that follow from the separate drizzles."""
    edps = list(fdp.edp_list)
    pars = fdp.parameters.drizzle
    t0 = time.perf_counter()
    do_cr = pars.cr_rejection_enabled and len(edps) >= 2
    skies, stats = sky_levels(ws, edps, pars, static=pars.static and do_cr)
    finals = {e.full_filename: final_settings(ws, e, pars, skies, use_cr=False) for e in edps}
    if do_cr:
        static_files = combine_static(ws, fdp, stats) if pars.static else {}
        exposures = {}
        for e in (edps if with_exposures else []):
            # made by the first pass from the separate drizzle when they follow from it (same
            # kernel); otherwise derived from the final partials afterwards (WFC3/IR: turbo
            # separate drizzles, square final and exposure drizzles)
            job = _exposure_job(e, ws)
            if job.settings.derivable_from(separate_settings(e, pars, skies, static_files)):
                exposures[e.full_filename] = job
        totals = _total_partials_to_derive(fdp, total, ws, pars, skies, finals, static_files)
        partials = find_cosmic_rays(ws, fdp, edps, pars, skies, static_files, finals, exposures,
                                    totals)
        # the final partials exclude the cosmic rays: their settings say so (`find_cr_masks`)
        finals = {e.full_filename: final_settings(ws, e, pars, skies, use_cr=True)
                  for e in edps}
        lines = cr_lines(ws, edps, computed=True)
    elif len(edps) == 1 and edps[0].crclean and pars.single_exposure_cr:
        _single_exposure_cosmic_rays(ws, edps[0], pars)
        finals = {e.full_filename: final_settings(ws, e, pars, skies, use_cr=True)
                  for e in edps}
        partials = drizzle_partials(ws, [PartialJob(
            path=ws.svm_path(e), grid=ws.grid, settings=finals[e.full_filename],
            stem=ws.scratch / f"final-{e.product_basename}") for e in edps])
        lines = [f"single exposure: L.A.Cosmic (sigclip {pars.single_exposure_cr_sigclip:g}, "
                 f"objlim {pars.single_exposure_cr_objlim:g})"] + cr_lines(ws, edps,
                                                                          computed=True)
    else:
        why = "single exposure" if len(edps) < 2 else "CR steps disabled by its parameters"
        log.info("%s: no cosmic-ray rejection (%s)", fdp.drizzle_filename, why)
        partials = drizzle_partials(ws, [PartialJob(
            path=ws.svm_path(e), grid=ws.grid, settings=finals[e.full_filename],
            stem=ws.scratch / f"final-{e.product_basename}") for e in edps])
        lines = [f"none ({why})"]
    path = write_product(ws, fdp, edps, partials, pars, level="filter", skies=skies,
                         cr_lines=lines, t0=t0)
    log.debug("%s: %.1f s", path.name, time.perf_counter() - t0)
    return path, partials, finals


def _single_exposure_cosmic_rays(ws: DrizzleWorkspace, edp, pars) -> None:
    """The cosmic-ray masks of a filter's only exposure (``crclean``), found on its own chips
    (`hapcore.drizzle.single_exposure_cr`), persisted and registered as driz_cr's are, so the
    filter's and the total's final drizzles exclude them."""
    chips = sci_extvers(ws.svm_path(edp))
    jobs = [SingleExposureCRJob(path=ws.svm_path(edp), extver=extver,
                                mask_file=ws.cr_mask_file(edp, extver),
                                good_bits=int(pars.final_bits),
                                sigclip=float(pars.single_exposure_cr_sigclip),
                                objlim=float(pars.single_exposure_cr_objlim)) for extver in chips]
    for job, (flagged, npix) in zip(jobs, ws.map(flag_single_exposure_chip, jobs)):
        ws.cr_masks[(edp.full_filename, job.extver)] = job.mask_file
        ws.cr_stats[(edp.full_filename, job.extver)] = (None, flagged, npix)
    log.info("%s: single exposure: %d cosmic-ray pixels found on its own (L.A.Cosmic)",
             edp.full_filename, sum(ws.cr_stats[(edp.full_filename, j.extver)][1] for j in jobs))


def drizzle_filter_product(fdp, *, workspace: DrizzleWorkspace) -> Path:
    """Drizzle a filter product with the full AstroDrizzle sequence of its parameters.

    Static mask, sky, separate drizzle, median/minmed, blot, driz_cr and the final drizzle
    with the CR masks (persisted in the workspace for the total product). A filter with a single
    exposure (or parameters with the CR steps off) gets no CR rejection, which is logged.
    """
    path, partials, _ = _filter_product(fdp, workspace, with_exposures=False)
    for partial in partials:
        partial.remove()
    return path


def drizzle_filter_with_exposures(fdp, *, workspace: DrizzleWorkspace,
                                  total=None) -> list[Path]:
    """A filter product and its exposure products: one unit of work, in spec order.

    With cosmic-ray rejection the exposure products are made by its first pass, from the
    separate drizzles, when their kernel is the separate drizzle's; otherwise (and without
    cosmic-ray rejection) they are derived from the filter's final partials (or drizzled) in
    the workers while this process writes the filter product.

    With ``total`` (the detector's `TotalProduct`), a total of this filter's exposures alone
    whose final settings differ from the filter's gets its partials derived by the last CR
    pass (`hapcore.drizzle.total_partials`), for `drizzle_total_product`.

    Returns
    -------
    list of Path
        ``[filter product, exposure product, ...]``.
    """
    ws = workspace
    edps = list(fdp.edp_list)
    path, partials, finals = _filter_product(fdp, ws, with_exposures=True, total=total)
    try:
        missing = [(e, p) for e, p in zip(edps, partials) if e.full_filename not in ws.written]
        jobs = [_exposure_job(e, ws, base=p, base_settings=finals[e.full_filename])
                for e, p in missing]
        for (edp, _), (made, digests) in zip(missing, ws.map(write_exposure_product, jobs)):
            ws.written[edp.full_filename] = made
            remember_digests(digests)
    finally:
        for partial in partials:
            partial.remove()
    return [path] + [ws.written[e.full_filename] for e in edps]


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
    (its cosmic rays reach the total). When the total drizzles each filter's exposures as
    that filter did (same final settings and sky, the same CR masks), it is the combination of
    the filter products (`hapcore.drizzle.total.total_from_filters`). Otherwise it takes the
    partials its filter's CR pass derived for it, when they were saved with the keys of its
    own settings and masks (`hapcore.drizzle.total_partials`: a total of one filter drizzled
    with other final settings), else it drizzles every chip.
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
    lines = cr_lines(ws, edps, computed=False)
    path = total_from_filters(ws, total, edps, pars, skies, cr_lines=lines, t0=t0)
    if path is not None:
        return path
    settings = {e.full_filename: final_settings(ws, e, pars, skies, use_cr=False) for e in edps}
    stems = {e.full_filename: total_partial_stem(ws.work_dir, e.product_basename) for e in edps}
    saved = []
    for e in edps:
        masks = ws.find_cr_masks(e)
        found = load_total_partials(
            stems[e.full_filename], e.full_filename, sci_extvers(ws.svm_path(e)),
            lambda k, e=e, masks=masks: total_partial_key(settings[e.full_filename],
                                                          masks.get(k)))
        if found is None:
            break
        saved.append(found)
    try:
        if len(saved) == len(edps):
            log.debug("%s: the partials the filter's CR pass derived", total.drizzle_filename)
            return write_product(ws, total, edps, saved, pars, level="total", skies=skies,
                                 cr_lines=lines, t0=t0)
    finally:
        for stem in stems.values():
            remove_total_partials(stem)
    partials = drizzle_partials(ws, [PartialJob(
        path=ws.svm_path(e), grid=ws.grid,
        settings=final_settings(ws, e, pars, skies, use_cr=True),
        stem=ws.scratch / f"total-{e.product_basename}") for e in edps])
    try:
        return write_product(ws, total, edps, partials, pars, level="total", skies=skies,
                             cr_lines=lines, t0=t0)
    finally:
        for partial in partials:
            partial.remove()
