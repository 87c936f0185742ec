"""Header keywords and the HDRTAB table of drizzled products (spec §2.2).

Pure functions from input headers and output arrays to `astropy.io.fits.Header` objects; the file
is written by `hapcore.drizzle.stage`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs import WCS
from scipy import ndimage

__all__ = [
    "DELETED_KEYWORDS",
    "PHOT_KEYWORDS",
    "footprint_keywords",
    "s_region_from_weight",
    "product_headers",
    "hdrtab",
]

#: Removed from product headers by drizzlepac's header rules.
DELETED_KEYWORDS = ("IPPPSSOO", "ASN_ID", "ASN_MTYP", "ASN_TAB", "GYROMODE", "SUNANGLE",
                    "MOONANGL", "EXPFLAG", "LINENUM", "QUALCOM1", "QUALCOM2", "QUALCOM3")
#: Moved from the primary header to SCI,1.
PHOT_KEYWORDS = ("PHOTMODE", "PHOTFLAM", "PHOTFNU", "PHOTZPT", "PHOTPLAM", "PHOTBW")

_HDRTAB_KEYS = ("ROOTNAME", "EXPNAME", "FILTER", "FILTER1", "FILTER2", "DETECTOR", "EXPTIME",
                "EXPSTART", "EXPEND", "PHOTFLAM", "PHOTPLAM", "WCSNAME", "CCDGAIN")


def footprint_keywords(ctx: np.ndarray, wht: np.ndarray,
                       exptimes: Sequence[float]) -> dict[str, float]:
    """NPIXFRAC, MEANEXPT/MEDEXPT, MEANNEXP/MEDNEXP, MEANWHT/MEDWHT from context and weight.

    ``ctx`` has one bit per input exposure, in the order of ``exptimes``.

    The exposure count and time of a pixel depend only on its context value, so with up to
    `_MAX_HISTOGRAM_BITS` inputs they come from a histogram of the context values (a few
    distinct values instead of per-pixel float64 images; ~10x faster on a UVIS mosaic). The
    medians are then exact; the mean exposure time is summed in a different order (float64
    rounding, ~1e-16 relative).
    """
    n = len(exptimes)
    if ctx.ndim == 2 and 0 < n <= _MAX_HISTOGRAM_BITS:
        values = ctx.view(np.uint32) & np.uint32((1 << n) - 1)  # bits of no input don't count
        counts = np.zeros(1 << n, np.int64)
        for start in range(0, values.shape[0], 256):
            # in row blocks: bincount makes an intp copy of what it counts
            counts += np.bincount(values[start:start + 256].ravel(), minlength=1 << n)
        counts[0] = 0
        ncov = int(counts.sum())
        if ncov == 0:
            return dict(_EMPTY_FOOTPRINT)
        present = np.nonzero(counts)[0]
        weights = counts[present]
        nexp = np.zeros(present.size, np.int64)
        expt = np.zeros(present.size, np.float64)
        for k, exptime in enumerate(exptimes):
            bit = (present >> k) & 1
            nexp += bit
            expt += bit * float(exptime)  # the per-pixel sum, in the same order
        w = wht[values != 0]
        return {"NPIXFRAC": ncov / int(values.size),
                "MEANEXPT": float(np.dot(weights, expt) / ncov),
                "MEDEXPT": _weighted_median(expt, weights),
                "MEANNEXP": float(np.dot(weights, nexp) / ncov),
                "MEDNEXP": _weighted_median(nexp.astype(np.float64), weights),
                "MEANWHT": float(w.mean()), "MEDWHT": float(np.median(w))}
    planes = ctx if ctx.ndim == 3 else ctx[None]
    nexp = np.zeros(planes.shape[1:], np.int32)
    expt = np.zeros(planes.shape[1:], np.float64)
    for k, exptime in enumerate(exptimes):
        bit = (planes[k // 32] >> (k % 32)) & 1
        nexp += bit
        expt += bit * float(exptime)
    covered = nexp > 0
    if not covered.any():
        return dict(_EMPTY_FOOTPRINT)
    w = wht[covered]
    return {"NPIXFRAC": float(covered.mean()),
            "MEANEXPT": float(expt[covered].mean()), "MEDEXPT": float(np.median(expt[covered])),
            "MEANNEXP": float(nexp[covered].mean()), "MEDNEXP": float(np.median(nexp[covered])),
            "MEANWHT": float(w.mean()), "MEDWHT": float(np.median(w))}


#: Inputs up to which `footprint_keywords` works from a histogram of context values.
_MAX_HISTOGRAM_BITS = 20
_EMPTY_FOOTPRINT = {"NPIXFRAC": 0.0, "MEANEXPT": 0.0, "MEDEXPT": 0.0, "MEANNEXP": 0.0,
                    "MEDNEXP": 0.0, "MEANWHT": 0.0, "MEDWHT": 0.0}


def _weighted_median(values: np.ndarray, counts: np.ndarray) -> float:
    """``np.median`` of ``values`` repeated ``counts`` times (``values`` ascending or not)."""
    order = np.argsort(values, kind="stable")
    v, c = values[order], np.cumsum(counts[order])
    total = int(c[-1])
    lo = v[np.searchsorted(c, (total - 1) // 2, side="right")]
    hi = v[np.searchsorted(c, total // 2, side="right")]
    # np.median averages the two middle elements the same way (mean of two float64 values)
    return float(np.mean([lo, hi]))


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull (counter-clockwise) of 2-D points, monotone chain."""
    pts = np.unique(points, axis=0)
    if len(pts) < 3:
        return pts

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in pts[::-1]:
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def s_region_from_weight(wht: np.ndarray, wcs: WCS, *, bin_size: int = 16) -> str:
    """``POLYGON ICRS ...`` per disjoint illuminated region (hull of the region, first vertex
    repeated), from the weight map binned by ``bin_size``; '' when nothing is illuminated."""
    ny, nx = wht.shape
    by, bx = -(-ny // bin_size), -(-nx // bin_size)
    padded = np.zeros((by * bin_size, bx * bin_size), bool)
    padded[:ny, :nx] = wht > 0
    binned = padded.reshape(by, bin_size, bx, bin_size).any(axis=(1, 3))
    labels, n = ndimage.label(binned)
    polygons = []
    for k in range(1, n + 1):
        yy, xx = _row_extremes(labels == k)
        # corners of the occupied bins, in output pixels; the hull's vertices are among the
        # corners of each row's first and last bin (those between lie on a segment joining
        # them), so only those go to the hull: the same polygon from ~100x fewer points
        cx = np.concatenate([xx, xx + 1, xx, xx + 1]) * bin_size - 0.5
        cy = np.concatenate([yy, yy, yy + 1, yy + 1]) * bin_size - 0.5
        cx = np.clip(cx, -0.5, nx - 0.5)
        cy = np.clip(cy, -0.5, ny - 0.5)
        hull = _hull(np.column_stack([cx, cy]))
        ra, dec = wcs.wcs_pix2world(hull[:, 0], hull[:, 1], 0)
        ra, dec = np.r_[ra, ra[0]], np.r_[dec, dec[0]]
        polygons.append("POLYGON ICRS " + " ".join(f"{a:.7f} {d:.7f}" for a, d in zip(ra, dec)))
    return " ".join(polygons)


def _row_extremes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, columns)`` of the first and the last True pixel of every row that has one."""
    rows = np.nonzero(mask.any(axis=1))[0]
    sub = mask[rows]
    first = np.argmax(sub, axis=1)
    last = mask.shape[1] - 1 - np.argmax(sub[:, ::-1], axis=1)
    return np.concatenate([rows, rows]), np.concatenate([first, last])


def _iso(mjd: float | None) -> str:
    return Time(mjd, format="mjd").isot if mjd else ""


def product_headers(*, input_headers: Sequence[dict], product, grid_wcs: WCS, sci: np.ndarray,
                    wht: np.ndarray, ctx: np.ndarray, filename: str, drizpars: str,
                    footprint: bool, extra: dict | None = None):
    """Primary and SCI headers of a product.

    Parameters
    ----------
    input_headers : sequence of dict
        ``{"primary": Header, "sci": Header}`` of each input exposure (SVM copy), in order.
    product : HAPProduct
        The product (``haplevel``, ``filters``, ``product_basename``).
    footprint : bool
        Add NPIXFRAC/MEAN*/MED* (filter and total products).

    Returns
    -------
    primary, sci_header : `~astropy.io.fits.Header`
    """
    first = input_headers[0]["primary"]
    primary = fits.Header()
    for card in first.cards:
        if card.keyword in ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "NEXTEND", "COMMENT",
                            "HISTORY", "") or card.keyword in DELETED_KEYWORDS \
                or card.keyword in PHOT_KEYWORDS:
            continue
        primary.append(card, end=True)
    exptimes = [float(h["primary"].get("EXPTIME", 0.0)) for h in input_headers]
    starts = [h["primary"].get("EXPSTART") for h in input_headers if h["primary"].get("EXPSTART")]
    ends = [h["primary"].get("EXPEND") for h in input_headers if h["primary"].get("EXPEND")]
    rootnames = [str(h["primary"].get("ROOTNAME", "")).strip().lower() for h in input_headers]
    expstart = float(min(starts)) if starts else None
    expend = float(max(ends)) if ends else None
    primary["ROOTNAME"] = (filename.rsplit("_", 1)[0], "rootname of the observation set")
    primary["FILENAME"] = (filename, "name of file")
    primary["HAPLEVEL"] = (int(product.haplevel), "Classification level of this product")
    primary["EXPTIME"] = (float(sum(exptimes)), "total exposure time (s) of the inputs")
    primary["TEXPTIME"] = (float(sum(exptimes)), "total exposure time (s) of the inputs")
    if expstart is not None:
        primary["EXPSTART"] = (expstart, "exposure start time (MJD), earliest input")
        primary["DATE-BEG"] = (_iso(expstart), "start of the earliest input (ISO)")
    if expend is not None:
        primary["EXPEND"] = (expend, "exposure end time (MJD), latest input")
        primary["DATE-END"] = (_iso(expend), "end of the latest input (ISO)")
    primary["NUMEXP"] = (len(set(rootnames)), "number of input exposures")
    primary["NDRIZIM"] = (len(input_headers), "number of drizzled input images")
    if product.haplevel == 1:
        primary["IPPPSSOO"] = (";".join(rootnames), "rootnames of the inputs")
    if type(product).__name__ == "TotalProduct":
        primary["FILTER"] = ("detection", "total (detection) product")
    primary["EQUINOX"] = (float(first.get("EQUINOX", input_headers[0]["sci"].get("EQUINOX",
                                                                               2000.0))), "")
    if first.get("PR_INV_L") is not None:
        primary["PINAME"] = (first["PR_INV_L"], "last name of principal investigator")
    primary["S_REGION"] = s_region_from_weight(wht, grid_wcs)
    if footprint:
        for key, value in footprint_keywords(ctx, wht, exptimes).items():
            primary[key] = value
    primary["DRIZPARS"] = (drizpars, "trailer file with the drizzle parameters")
    for key, value in (extra or {}).items():
        primary[key] = value

    sci_header = fits.Header()
    sci_header["BUNIT"] = ("ELECTRONS/S", "brightness units")
    for key in PHOT_KEYWORDS:
        for source in (input_headers[0]["sci"], first):
            if key in source:
                sci_header[key] = (source[key], source.comments[key])
                break
    sci_header.update(grid_wcs.to_header())
    wcsnames = sorted({str(h["sci"].get("WCSNAME", "")).strip() for h in input_headers} - {""})
    sci_header["WCSNAME"] = (";".join(wcsnames) if wcsnames else "DRZWCS",
                             "WCS solution(s) of the inputs")
    for k, h in enumerate(input_headers, start=1):
        sci_header[f"D{k:03d}DATA"] = (f"{h.get('filename', rootnames[k - 1])}[sci]", "")
    return primary, sci_header


def hdrtab(input_headers: Sequence[dict], hap_names: Sequence[str]) -> fits.BinTableHDU:
    """The HDRTAB extension: one row of per-input keywords each, plus HAPEXPNAME."""
    rows = {key: [] for key in _HDRTAB_KEYS}
    for h in input_headers:
        merged = fits.Header(h["primary"], copy=True)
        merged.update(h["sci"])
        for key in _HDRTAB_KEYS:
            value = merged.get(key, "")
            rows[key].append(value)
    table = Table()
    for key, values in rows.items():
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            table[key] = np.asarray(values, np.float64)
        else:
            table[key] = np.asarray([str(v) for v in values], dtype="U68")
    width = max([51] + [len(n) for n in hap_names])
    table["HAPEXPNAME"] = np.asarray(list(hap_names), dtype=f"U{width}")
    hdu = fits.table_to_hdu(table)
    hdu.name = "HDRTAB"
    return hdu
