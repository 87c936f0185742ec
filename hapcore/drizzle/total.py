"""The total product as the combination of its filter products.

The total drizzles the exposures of its filters (those with >= 2 exposures) with its own
``final_*`` settings and skies, excluding the CR masks the filter products found. When, for
every filter it takes exposures from, it takes all of them with the settings that filter's
final drizzle used -- kernel, pixfrac, good bits, weight type, the same sky (to the 1e-4 e-/s the
partial drizzles of the stage have always been reused at) and the same CR masks -- its partial
drizzles are the filters' ones, and drizzle's weighted mean combines exactly: ``sci = sum(sci_f
wht_f) / sum(wht_f)``, ``wht = sum(wht_f)``, each filter's context bits moved to the total's
exposure order. The filter products are read back from their files, so a total made by a
resumed run (another process) is the same as one made right after its filters. A total of
one filter whose exposures it takes in the same order has that filter's images: they are copied
as they are (`hapcore.drizzle.products.write_product_copy`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from hapcore.drizzle.inputs import sci_extvers
from hapcore.drizzle.products import write_product_arrays, write_product_copy

__all__ = ["filter_skies", "total_from_filters"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Skies (e-/s) equal to this many decimals count as equal (the partials' reuse key before).
_SKY_DECIMALS = 4
_ROWS_PER_BLOCK = 512
_SETTINGS = ("final_kernel", "final_pixfrac", "final_bits", "final_wht_type")


def filter_skies(path: Path) -> dict[tuple[str, int], float] | None:
    """``{(HAPEXPNAME, EXTVER): sky (e-/s)}`` of a product, from its HDRTAB (MDRIZSKY is in
    the input's units: electrons unless its BUNIT is a rate)."""
    try:
        table = Table.read(path, hdu="HDRTAB")
    except (OSError, KeyError, ValueError):
        return None
    if not {"HAPEXPNAME", "EXTVER", "MDRIZSKY"} <= set(table.colnames):
        return None
    skies = {}
    for row in table:
        sky = float(row["MDRIZSKY"])
        bunit = str(row["BUNIT"]).strip().upper() if "BUNIT" in table.colnames else "ELECTRONS"
        if not bunit.endswith("/S"):
            exptime = float(row["EXPTIME"]) if "EXPTIME" in table.colnames else 0.0
            sky = sky / exptime if exptime > 0 else 0.0
        skies[(str(row["HAPEXPNAME"]).strip(), int(row["EXTVER"]))] = sky
    return skies


def _usable(ws, fdp, members, pars, skies) -> dict | None:
    """Chips used per member exposure when ``fdp``'s product serves the total, else None."""
    fpars = fdp.parameters.drizzle
    if len(members) != len(fdp.edp_list):
        return None
    if any(getattr(fpars, name) != getattr(pars, name) for name in _SETTINGS):
        return None
    path = ws.output_dir / fdp.drizzle_filename
    if not path.is_file():
        return None
    recorded = filter_skies(path)
    if recorded is None:
        return None
    did_cr = len(fdp.edp_list) >= 2 and fpars.cr_rejection_enabled
    used = {}
    for edp in members:
        chips = sorted(k for (name, k) in recorded if name == edp.product_basename)
        masks = ws.find_cr_masks(edp)
        if did_cr != bool(masks):
            return None
        sky = round(float(skies.get(edp.full_filename, 0.0)), _SKY_DECIMALS)
        if any(round(recorded[(edp.product_basename, k)], _SKY_DECIMALS) != sky
               for k in chips):
            return None
        used[edp.full_filename] = chips
    return used


def total_from_filters(ws, total, edps, pars, skies, *, cr_lines, t0=None) -> Path | None:
    """Write the total product from its filter products (see the module notes); None when
    some filter's product does not serve (the caller drizzles the total)."""
    used: dict[str, list[int]] = {}
    sources = []
    for fdp in total.fdp_list:
        members = [e for e in fdp.edp_list if e in edps]
        if not members:
            continue
        chips = _usable(ws, fdp, members, pars, skies)
        if chips is None:
            log.debug("%s: %s does not serve the total; drizzled", total.drizzle_filename,
                      fdp.drizzle_filename)
            return None
        used.update(chips)
        sources.append((ws.output_dir / fdp.drizzle_filename,
                        [edps.index(e) for e in fdp.edp_list]))
    if not sources:
        return None
    masks = []
    for edp in edps:
        cr = ws.find_cr_masks(edp)
        masks.append({str(k): (["cr"] if k in cr else []) for k in used[edp.full_filename]})
    skipped = [[k for k in sci_extvers(ws.svm_path(e)) if k not in used[e.full_filename]]
               for e in edps]
    log.debug("%s: the combination of %d filter products", total.drizzle_filename,
              len(sources))
    fill = 0.0 if pars.final_fillval is None else float(pars.final_fillval)
    record = {"level": "total", "used": [used[e.full_filename] for e in edps],
              "masks": masks, "skipped": skipped, "skies": skies, "cr_lines": cr_lines,
              "t0": t0}
    if len(sources) == 1 and sources[0][1] == list(range(len(edps))) and \
            _fill_of(total, sources[0][0]) == fill:
        # one filter, its exposures in the total's order: the total's images are its images
        return write_product_copy(ws, total, edps, sources[0][0], pars, **record)
    sci, wht, ctx = _combine(sources, ws.grid.shape, len(edps), fill)
    return write_product_arrays(ws, total, edps, sci, wht, ctx, pars, **record)


def _fill_of(total, path: Path) -> float | None:
    """The fill value of the filter product ``path`` (SCI of its uncovered pixels)."""
    for fdp in total.fdp_list:
        if path.name == fdp.drizzle_filename:
            value = fdp.parameters.drizzle.final_fillval
            return 0.0 if value is None else float(value)
    return None


def _combine(sources, shape, n_inputs, fillval):
    """SCI, WHT, CTX of the total from ``(filter product, total index of each of its
    exposures)``; see the module notes."""
    ny, nx = shape
    nplanes = (n_inputs - 1) // 32 + 1
    sci = np.full((ny, nx), fillval, np.float32) if fillval else np.zeros((ny, nx), np.float32)
    wht = np.zeros((ny, nx), np.float32)
    ctx = np.zeros((nplanes, ny, nx), np.int32)
    bits = ctx.view(np.uint32)
    hduls = [fits.open(path, memmap=True) for path, _ in sources]
    try:
        for start in range(0, ny, _ROWS_PER_BLOCK):
            stop = min(ny, start + _ROWS_PER_BLOCK)
            num = np.zeros((stop - start, nx))
            den = np.zeros((stop - start, nx))
            for hdul, (_, index) in zip(hduls, sources):
                w = np.asarray(hdul["WHT"].data[start:stop], np.float64)
                s = np.asarray(hdul["SCI"].data[start:stop], np.float64)
                num += np.where(w > 0, s * w, 0.0)
                den += w
                fctx = np.asarray(hdul["CTX"].data[start:stop], np.int32)  # native order
                fctx = fctx if fctx.ndim == 3 else fctx[None]
                for i, k in enumerate(index):
                    bit = (fctx[i // 32].view(np.uint32) >> np.uint32(i % 32)) & np.uint32(1)
                    bits[k // 32, start:stop] |= bit << np.uint32(k % 32)
            with np.errstate(invalid="ignore", divide="ignore"):
                sci[start:stop] = np.where(den > 0, num / np.where(den > 0, den, 1.0), fillval)
            wht[start:stop] = den
    finally:
        for hdul in hduls:
            hdul.close()
    return sci, wht, (ctx[0] if nplanes == 1 else ctx)
