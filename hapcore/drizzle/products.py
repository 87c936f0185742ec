"""Writing drizzled products: combine the partial drizzles, headers, HDRTAB, trailer."""

from __future__ import annotations

import logging
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from hapcore.atomic import atomic_output
from hapcore.drizzle.grid import OutputGrid
from hapcore.drizzle.headers import hdrtab, product_headers
from hapcore.drizzle.provenance import product_provenance
from hapcore.drizzle.inputs import exposure_keywords
from hapcore.drizzle.jobs import PartialJob, load_mask, load_partial
from hapcore.drizzle.kernel import combine_partials
from hapcore.drizzle.sky import exposure_sky_levels
from hapcore.drizzle.trailer import format_drizzle_trailer, write_drizzle_trailer

if TYPE_CHECKING:  # the workspace imports nothing from here; a type only
    from hapcore.drizzle.workspace import DrizzleWorkspace

__all__ = ["write_drizzle_product", "sky_levels", "write_product", "cr_lines", "final_jobs",
           "WriteContext"]

log = logging.getLogger(f"hapsvm.{__name__}")



def write_drizzle_product(path: str | os.PathLike, sci: np.ndarray, wht: np.ndarray,
                          ctx: np.ndarray, *, primary_header: fits.Header,
                          sci_header: fits.Header, hdrtab_hdu: fits.BinTableHDU | None = None,
                          wht_header: fits.Header | None = None,
                          ctx_header: fits.Header | None = None) -> Path:
    """Write primary + SCI + WHT + CTX (+ HDRTAB) atomically.

    WHT and CTX get ``wht_header``/``ctx_header``, by default the WCS cards of ``sci_header``.
    """
    wcs_cards = {k: sci_header[k] for k in sci_header if k.startswith(("CRPIX", "CRVAL", "CD",
                                                                       "PC", "CDELT", "CTYPE",
                                                                       "CUNIT", "RADESYS",
                                                                       "EQUINOX", "WCSAXES",
                                                                       "LONPOLE", "LATPOLE",
                                                                       "MJDREF"))}
    hdus = [fits.PrimaryHDU(header=primary_header)]
    hdus.append(fits.ImageHDU(np.asarray(sci, np.float32), header=sci_header, name="SCI"))
    for name, data, given in (("WHT", np.asarray(wht, np.float32), wht_header),
                              ("CTX", np.asarray(ctx, np.int32), ctx_header)):
        if given is None:
            header = fits.Header()
            header.update(wcs_cards)
        else:
            header = given
        hdus.append(fits.ImageHDU(data, header=header, name=name))
    for hdu in hdus[1:]:
        hdu.header["EXTVER"] = 1
    if hdrtab_hdu is not None:
        hdus.append(hdrtab_hdu)
    path = Path(path)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # long copied values (D###DATA, WCSNAME lists) only lose their comments
        warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
    return path


def sky_levels(ws: DrizzleWorkspace, edps, pars, *, static: bool) -> tuple[dict, dict]:
    if not pars.skysub and not static:
        return {e.full_filename: 0.0 for e in edps}, {}
    stats = ws.chip_stats(edps, pars, static=static)
    if not pars.skysub:
        return {e.full_filename: 0.0 for e in edps}, stats
    chip_skies = {name: list(s["sky"].values()) for name, s in stats.items()}
    return exposure_sky_levels(chip_skies, skymethod=pars.skymethod), stats


def write_product(ws: DrizzleWorkspace, product, edps, partials, pars, *, level: str,
                  skies: dict | None = None, cr_lines: list[str] | None = None,
                  t0: float | None = None) -> Path:
    """Combine partials, write the product file with its headers, then its trailer."""
    fill = 0.0 if pars.final_fillval is None else float(pars.final_fillval)
    # only the partials' boxes are read and combined (the rest of the grid has no weight)
    sci, wht, ctx = combine_partials(
        [(load_partial(p, "sci").cropped, load_partial(p, "wht").cropped) for p in partials],
        fillval=fill, boxes=[p["box"] for p in partials], shape=ws.grid.shape)
    inputs = [exposure_keywords(ws.svm_path(edp)) for edp in edps]
    # the product's provenance, built once: every header and the HDRTAB are written from it
    provenance = product_provenance(
        inputs, product, pars=pars, output_scale=ws.grid.pixel_scale_arcsec,
        hap_names=[e.product_basename for e in edps], used=[p.get("used") for p in partials],
        masks=[p.get("masks") for p in partials], skies=skies)
    headers = product_headers(inputs, provenance, grid_wcs=ws.grid.wcs, wht=wht, ctx=ctx,
                              footprint=product.haplevel == 2)
    table = hdrtab(inputs, provenance.drizzle)
    path = write_drizzle_product(ws.output_dir / product.drizzle_filename, sci, wht, ctx,
                                 primary_header=headers.primary, sci_header=headers.sci,
                                 hdrtab_hdu=table, wht_header=headers.wht,
                                 ctx_header=headers.ctx)
    covered = 100.0 * float(np.mean(wht > 0))
    # exposure products are many and alike: their line is DEBUG, filter and total products INFO
    log.log(logging.DEBUG if level == "exposure" else logging.INFO,
            "%s: written (%d inputs, %.1f%% of the grid covered)", path.name, len(edps), covered)
    skies = skies or {}
    grid = ws.grid
    crval = grid.wcs.wcs.crval
    trailer = format_drizzle_trailer(
        product_filename=path.name, level=level,
        grid_description=(f"{grid.shape[1]} x {grid.shape[0]} px at "
                          f"{grid.pixel_scale_arcsec:.5f} arcsec/px, CRVAL {crval[0]:.6f} "
                          f"{crval[1]:.6f}, {covered:.1f}% covered (fingerprint "
                          f"{grid.fingerprint})"),
        inputs=[{"filename": e.full_filename, "exptime": e.exptime,
                 "sky": skies.get(e.full_filename, 0.0), "used": p.get("used", []),
                 "skipped": p.get("skipped", [])} for e, p in zip(edps, partials)],
        parameters=_parameter_dict(pars), cr_lines=cr_lines or [],
        elapsed_s=None if t0 is None else time.perf_counter() - t0)
    write_drizzle_trailer(ws.output_dir / product.trl_filename, trailer)
    return path


def _parameter_dict(pars) -> dict:
    if hasattr(pars, "model_dump"):
        return pars.model_dump(mode="json")
    return {k: v for k, v in vars(pars).items() if not k.startswith("_")}


def cr_lines(ws: DrizzleWorkspace, edps, *, computed: bool) -> list[str]:
    """One line per chip mask: flagged pixels (first pass / both passes) or applied count."""
    lines = []
    for edp in edps:
        for extver, file in ws.find_cr_masks(edp).items():
            stats = ws.cr_stats.get((edp.full_filename, extver))
            if stats is None:
                mask = load_mask(file)
                stats = (None, int(np.count_nonzero(mask)), int(mask.size))
            first, final, npix = stats
            head = f"{edp.full_filename}[SCI,{extver}]: {final} pixels"
            frac = f" ({100.0 * final / max(npix, 1):.3f}% of the chip)"
            if computed and first is not None:
                lines.append(f"{head} flagged{frac}; first pass {first}, second pass added "
                             f"{final - first}")
            else:
                lines.append(f"{head} excluded{frac} (mask {file.name})")
    return lines


def final_jobs(ws, edps, pars, skies, *, static_files=None, use_cr: bool) -> list[PartialJob]:
    jobs = []
    for edp in edps:
        cr_files = ws.find_cr_masks(edp) if use_cr else {}
        jobs.append(PartialJob(
            path=ws.svm_path(edp), grid=ws.grid, cache=ws.pixmap_cache,
            kernel=pars.final_kernel, pixfrac=pars.final_pixfrac, good_bits=pars.final_bits,
            wht_type=pars.final_wht_type, sky=float(skies.get(edp.full_filename, 0.0)),
            static_files=dict(static_files or {}), cr_files=cr_files))
    return jobs


@dataclass(frozen=True)
class WriteContext:
    """What `write_product` uses of a workspace, picklable for a worker."""

    grid: OutputGrid
    output_dir: Path

    def svm_path(self, edp) -> Path:
        return self.output_dir / edp.full_filename
