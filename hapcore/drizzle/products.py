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
from hapcore.drizzle.chip_partials import Settings
from hapcore.drizzle.fits_stream import write_product_file
from hapcore.drizzle.footprint import s_region_from_bins
from hapcore.drizzle.grid import OutputGrid
from hapcore.drizzle.headers import hdrtab_bytes, product_headers
from hapcore.drizzle.inputs import exposure_keywords
from hapcore.drizzle.jobs import load_mask
from hapcore.drizzle.provenance import product_provenance
from hapcore.drizzle.ragged import combine_exposures, coverage_bins, exposure_rows
from hapcore.drizzle.sky import exposure_sky_levels
from hapcore.drizzle.trailer import format_drizzle_trailer, write_drizzle_trailer

if TYPE_CHECKING:  # the workspace imports nothing from here; a type only
    from hapcore.drizzle.workspace import DrizzleWorkspace

__all__ = [
    "WriteContext",
    "cr_lines",
    "final_settings",
    "sky_levels",
    "write_drizzle_product",
    "write_product",
    "write_product_arrays",
    "write_product_copy",
]

log = logging.getLogger(f"hapsvm.{__name__}")



def write_drizzle_product(path: str | os.PathLike, sci: np.ndarray, wht: np.ndarray,
                          ctx: np.ndarray, *, primary_header: fits.Header,
                          sci_header: fits.Header, hdrtab_hdu: bytes | None = None,
                          wht_header: fits.Header | None = None,
                          ctx_header: fits.Header | None = None) -> Path:
    """Write primary + SCI + WHT + CTX (+ HDRTAB) atomically.

    WHT and CTX get ``wht_header``/``ctx_header``, by default the WCS cards of ``sci_header``;
    ``hdrtab_hdu`` is the HDRTAB extension's bytes (`~hapcore.drizzle.headers.hdrtab_bytes`),
    appended after the images.
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
    path = Path(path)
    with atomic_output(path) as tmp, warnings.catch_warnings():
        # long copied values (D###DATA, WCSNAME lists) only lose their comments
        warnings.filterwarnings("ignore", message="Card is too long", category=VerifyWarning)
        fits.HDUList(hdus).writeto(tmp, overwrite=True)
        if hdrtab_hdu is not None:   # an extension is a whole number of blocks: appended
            with open(tmp, "ab") as fh:
                fh.write(hdrtab_hdu)
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
    """Combine the exposures' partials (`ExposurePartial`), write the product file with its
    headers, then its trailer."""
    fill = 0.0 if pars.final_fillval is None else float(pars.final_fillval)
    if product.haplevel == 1 and len(partials) == 1:
        return _write_streamed(ws, product, edps, partials[0], pars, fill=fill, level=level,
                               skies=skies, cr_lines=cr_lines, t0=t0)
    # as many threads as the workspace has workers: a fan-out runs its visits with one each
    sci, wht, ctx = combine_exposures(partials, ws.grid.shape, fillval=fill,
                                      threads=ws.n_workers)
    return write_product_arrays(ws, product, edps, sci, wht, ctx, pars, level=level,
                                used=[p.used for p in partials],
                                masks=[p.masks for p in partials],
                                skipped=[p.skipped for p in partials], skies=skies,
                                cr_lines=cr_lines, t0=t0)


def _headers(ws, product, edps, pars, *, used, masks, skies, wht=None, ctx=None,
             s_region=None, footprint_values=None):
    """The product's headers and HDRTAB, from one provenance."""
    inputs = [exposure_keywords(ws.svm_path(edp)) for edp in edps]
    provenance = product_provenance(
        inputs, product, pars=pars, output_scale=ws.grid.pixel_scale_arcsec,
        hap_names=[e.product_basename for e in edps], used=used, masks=masks, skies=skies)
    headers = product_headers(inputs, provenance, grid_wcs=ws.grid.wcs, wht=wht, ctx=ctx,
                              footprint=product.haplevel == 2, s_region=s_region,
                              footprint_values=footprint_values)
    return headers, hdrtab_bytes(inputs, provenance.drizzle)


def _write_streamed(ws, product, edps, partial, pars, *, fill, level, skies, cr_lines, t0):
    """A one-exposure product written row block by row block from its chips' partials
    (`hapcore.drizzle.fits_stream`): no grid-sized image in memory."""
    shape = ws.grid.shape
    s_region = s_region_from_bins(coverage_bins([partial], shape), ws.grid.wcs, shape)
    headers, table = _headers(ws, product, edps, pars, used=[partial.used],
                              masks=[partial.masks], skies=skies, s_region=s_region)
    nx = shape[1]
    loaded: dict = {}
    count = [0]

    def blocks(start, stop):
        # only the columns the chips reach in these rows are combined and written; the
        # chips' rows are copied where one chip reaches (the weighted mean of one), averaged
        # in float64 where two meet (`exposure_rows`), as `accumulate_rows` would
        x0, x1 = _columns(partial, start, stop, nx)
        sci, wht = exposure_rows(partial, start, stop, nx, loaded=loaded)
        sci, wht = sci[:, x0:x1], wht[:, x0:x1]
        covered = wht > 0
        count[0] += int(np.count_nonzero(covered))
        if fill != 0:
            sci = np.where(covered, sci, np.float32(fill))
        return sci, wht, covered.astype(np.int32), (x0, x1)

    y0, y1 = partial.rows
    path = write_product_file(ws.output_dir / product.drizzle_filename, shape, 1, blocks,
                              primary_header=headers.primary, sci_header=headers.sci,
                              wht_header=headers.wht, ctx_header=headers.ctx,
                              hdrtab_hdu=table,
                              row_blocks=[(a, min(y1, a + 256)) for a in range(y0, y1, 256)],
                              fill=fill)
    _finish(ws, product, path, edps, pars, level=level, covered=100.0 * count[0] / (
        shape[0] * shape[1]), used=[partial.used], skipped=[partial.skipped], skies=skies,
        cr_lines=cr_lines, t0=t0)
    return path


def _columns(partial, start: int, stop: int, nx: int) -> tuple[int, int]:
    """Columns ``(x0, x1)`` holding every chip of ``partial`` in grid rows ``start:stop``."""
    lo, hi = nx, 0
    for chip in partial.chips:
        ranges = chip.ranges
        a, b = max(start, ranges.y0) - ranges.y0, min(stop, ranges.y1) - ranges.y0
        if b <= a:
            continue
        used = ranges.stops[a:b] > ranges.starts[a:b]
        if used.any():
            lo = min(lo, int(ranges.starts[a:b][used].min()))
            hi = max(hi, int(ranges.stops[a:b][used].max()))
    return (lo, hi) if hi > lo else (0, 0)


def write_product_arrays(ws, product, edps, sci, wht, ctx, pars, *, level: str, used, masks,
                         skipped, skies: dict | None = None, cr_lines: list[str] | None = None,
                         t0: float | None = None) -> Path:
    """Write a product from its SCI, WHT and CTX images (`write_product`'s second half).

    ``used``, ``masks``, ``skipped``: per input exposure, the chips drizzled, the masks their
    weights excluded (``{str(extver): names}``) and the chips left out.
    """
    # the product's provenance, built once: every header and the HDRTAB are written from it
    headers, table = _headers(ws, product, edps, pars, used=used, masks=masks, skies=skies,
                              wht=wht, ctx=ctx)
    path = write_drizzle_product(ws.output_dir / product.drizzle_filename, sci, wht, ctx,
                                 primary_header=headers.primary, sci_header=headers.sci,
                                 hdrtab_hdu=table, wht_header=headers.wht,
                                 ctx_header=headers.ctx)
    covered = 100.0 * float(np.count_nonzero(wht)) / max(int(wht.size), 1)
    _finish(ws, product, path, edps, pars, level=level, covered=covered, used=used,
            skipped=skipped, skies=skies, cr_lines=cr_lines, t0=t0)
    return path


def write_product_copy(ws, product, edps, source: Path, pars, *, level: str, used, masks,
                       skipped, skies: dict | None = None, cr_lines: list[str] | None = None,
                       t0: float | None = None) -> Path:
    """Write a product whose images are those of the product file ``source`` (same grid, same
    inputs in the same order): they are copied as they are, and the footprint keywords and
    S_REGION, which depend on them alone, are taken from its header."""
    with fits.open(source, memmap=True) as hdul:
        primary = hdul[0].header
        footprint = {k: primary[k] for k in _FOOTPRINT_KEYWORDS if k in primary}
        headers, table = _headers(ws, product, edps, pars, used=used, masks=masks, skies=skies,
                                  s_region=primary.get("S_REGION", ""),
                                  footprint_values=footprint)
        sci, wht, ctx = hdul["SCI"].data, hdul["WHT"].data, hdul["CTX"].data
        covered = [0]

        def blocks(start, stop):
            block = wht[start:stop]
            covered[0] += int(np.count_nonzero(block))
            return sci[start:stop], block, ctx[..., start:stop, :]

        path = write_product_file(ws.output_dir / product.drizzle_filename, ws.grid.shape,
                                  1 if ctx.ndim == 2 else ctx.shape[0], blocks,
                                  primary_header=headers.primary, sci_header=headers.sci,
                                  wht_header=headers.wht, ctx_header=headers.ctx,
                                  hdrtab_hdu=table)
    _finish(ws, product, path, edps, pars, level=level,
            covered=100.0 * covered[0] / (ws.grid.shape[0] * ws.grid.shape[1]), used=used,
            skipped=skipped, skies=skies, cr_lines=cr_lines, t0=t0)
    return path


#: Primary keywords `hapcore.drizzle.footprint.footprint_keywords` computes.
_FOOTPRINT_KEYWORDS = ("NPIXFRAC", "MEANEXPT", "MEDEXPT", "MEANNEXP", "MEDNEXP", "MEANWHT",
                       "MEDWHT")


def _finish(ws, product, path, edps, pars, *, level, covered, used, skipped, skies, cr_lines,
            t0) -> None:
    """Log the product and write its trailer."""
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
                 "sky": skies.get(e.full_filename, 0.0), "used": list(u or []),
                 "skipped": list(k or [])} for e, u, k in zip(edps, used, skipped)],
        parameters=_parameter_dict(pars), cr_lines=cr_lines or [],
        elapsed_s=None if t0 is None else time.perf_counter() - t0)
    write_drizzle_trailer(ws.output_dir / product.trl_filename, trailer)


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


def final_settings(ws, edp, pars, skies, *, use_cr: bool) -> Settings:
    """The final drizzle's settings of one exposure (``final_*``; its CR masks if asked)."""
    return Settings(kernel=pars.final_kernel, pixfrac=float(pars.final_pixfrac),
                    good_bits=int(pars.final_bits), wht_type=pars.final_wht_type,
                    sky=float(skies.get(edp.full_filename, 0.0)),
                    cr_files=({k: (f,) for k, f in ws.find_cr_masks(edp).items()}
                              if use_cr else {}))


@dataclass(frozen=True)
class WriteContext:
    """What `write_product` uses of a workspace, picklable for a worker."""

    grid: OutputGrid
    output_dir: Path

    def svm_path(self, edp) -> Path:
        return self.output_dir / edp.full_filename
