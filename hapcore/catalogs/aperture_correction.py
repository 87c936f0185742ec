"""Aperture correction measured on the filter product's own stars.

The point catalogs give aperture-2 magnitudes (0.15" on UVIS/WFC, 0.45" on IR) with the sky of
a nearby annulus (drizzlepac's convention; ``MagAp2`` stays uncorrected). The light a star
has outside aperture 2 -- and the part of it the annulus takes for sky -- is what an aperture
correction adds back: total magnitude = ``MagAp2`` + correction. The CI/aperture-correction
table (HLA/HSC 2016) holds one value per filter; on realistic PSFs it leaves total magnitudes
0.04-0.06 mag too faint, and it cannot follow the product's PSF (focus, drizzle kernel).

:func:`measure_aperture_correction` measures it instead:

1. **Stars.** Rows of the filter point catalog with no flag but 1 (unsaturated, not faint,
   covered; the CI may exceed the upper limit by ``CI_UPPER_MARGIN``: the limits are
   drizzlepac's, and a red filter's PSF puts every star just above them), aperture-2 S/N
   above ``min_snr``, a concentration index within ``ci_width`` of the candidates' median (compact galaxies inside the CI limits out),
   no other detection brighter than ``isolation`` of the star within the large aperture
   (plus one aperture-2 radius), no brighter detection within the sky annulus, and fully
   covered pixels in the large aperture.
2. **Curve of growth to a large radius.** Each star's light within ``radius_arcsec`` (1.0"
   on WFC3/UVIS and ACS/WFC, 1.5" on WFC3/IR: radii the handbooks tabulate, where 95 % of the
   light is inside, still small enough for the sky noise of a few hundred pixels), less a
   sky measured in a far annulus (2-3" on UVIS/WFC, 3-4" on IR; sigma-clipped median), over
   its catalog ``FluxAp2``: ``g = F(R) / FluxAp2``. ``FluxAp2`` is the catalog's own value,
   with its own sky convention, so the light its annulus removed is part of the correction.
   Stars whose ``g`` is not known to ``max_star_error`` (relative) do not count.
3. **Robust mean.** Iterative 3-sigma clipping about the weighted mean (the scatter of the
   stars is added to their errors when it exceeds them); the error is the larger of the
   formal one and the stars' scatter over sqrt(n).
4. **Radius to infinity.** The handbook encircled energy at ``R``
   (``configs/any/encircled_energy.json``: WFC3 ISR 2009-37/2009-38, ACS ISRs 2011-09/2012-01,
   interpolated in PHOTPLAM) gives the light beyond it; the PSF's own light in the far sky
   annulus (from the same table) is allowed for::

       correction = -2.5 log10(g / (EE(R) - A_R / A_sky * (EE(r_out) - EE(r_in))))

Fewer than ``min_stars`` good stars, or a detector without an EE table (ACS/HRC, ACS/SBC,
WFPC2), fall back to the CI-table value; :meth:`ApertureCorrection.metadata` says which.
"""

from __future__ import annotations

import functools
import json
import logging
from dataclasses import dataclass

import numpy as np

__all__ = ["ci_table_aperture_correction", "measured_aperture_correction", "ApertureCorrection", "EncircledEnergyTable", "encircled_energy_table",
           "measure_aperture_correction", "star_growth_ratios", "weighted_clipped_mean"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Flag of a CI above the upper limit (extended), not held against a candidate star.
FLAG_EXTENDED = 1
#: How far above the catalog's upper CI limit a candidate star may lie.
CI_UPPER_MARGIN = 0.15
#: Magnitudes per unit relative flux error: 2.5 / ln 10.
_MAG_PER_RELATIVE = 2.5 / np.log(10.0)


@dataclass(frozen=True)
class EncircledEnergyTable:
    """Handbook encircled energy of one detector (see ``configs/any/encircled_energy.json``)."""

    detector: str
    source: str
    radius_arcsec: float
    sky_annulus_arcsec: tuple[float, float]
    infinity_arcsec: float
    ee_uncertainty: float
    radii_arcsec: tuple[float, ...]
    wavelength_nm: tuple[float, ...]
    ee: tuple[tuple[float, ...], ...]
    filters: dict

    def at(self, radii, *, wavelength_nm=None, filter_name=None) -> np.ndarray:
        """EE at ``radii`` (arcsec) for a filter (its own row) or a wavelength (interpolated).

        Beyond the last tabulated radius EE rises linearly to 1 at ``infinity_arcsec``.
        """
        row = self.filters.get((filter_name or "").upper())
        if row is None:
            if wavelength_nm is None or not np.isfinite(wavelength_nm):
                raise ValueError(f"{self.detector}: no EE row for filter {filter_name!r} and no "
                                 "wavelength")
            row = [float(np.interp(wavelength_nm, self.wavelength_nm, values))
                   for values in self.ee]
        radii_tab = np.r_[self.radii_arcsec, self.infinity_arcsec]
        values = np.r_[row, 1.0]
        radii = np.asarray(radii, float)
        if np.any(radii < radii_tab[0] - 1e-9):
            raise ValueError(f"{self.detector}: EE below {radii_tab[0]}\" is not tabulated")
        return np.interp(radii, radii_tab, values)


@functools.lru_cache(maxsize=1)
def _ee_tables() -> dict:
    from configs import read_config_text

    raw = json.loads(read_config_text("any/encircled_energy.json"))
    tables = {}
    for key, entry in raw.items():
        if key.startswith("_"):
            continue
        tables[key] = EncircledEnergyTable(
            detector=key, source=entry["source"], radius_arcsec=float(entry["radius_arcsec"]),
            sky_annulus_arcsec=tuple(float(v) for v in entry["sky_annulus_arcsec"]),
            infinity_arcsec=float(entry["infinity_arcsec"]),
            ee_uncertainty=float(entry["ee_uncertainty"]),
            radii_arcsec=tuple(float(v) for v in entry["radii_arcsec"]),
            wavelength_nm=tuple(float(v) for v in entry["wavelength_nm"]),
            ee=tuple(tuple(float(v) for v in row) for row in entry["ee"]),
            filters={k.upper(): tuple(float(v) for v in row)
                     for k, row in entry.get("filters", {}).items()})
    return tables


def encircled_energy_table(instrument: str, detector: str) -> EncircledEnergyTable | None:
    """The EE table of ``instrument``/``detector`` (e.g. ``"WFC3", "UVIS"``), or None."""
    return _ee_tables().get(f"{str(instrument).upper()}_{str(detector).upper()}")


@dataclass(frozen=True)
class ApertureCorrection:
    """An aperture correction (mag; total = MagAp2 + ``value``) and how it was obtained.

    Attributes
    ----------
    value : float or None
        None when neither a measurement nor a table value exists.
    error : float or None
        Uncertainty (mag): statistical and EE-table terms in quadrature; None for table values.
    n_stars : int
        Stars used (0 for table values).
    radius_arcsec : float or None
        Radius the curve of growth was measured to.
    method : str
        ``"measured"`` or ``"table"``.
    note : str
        Why the table was used, or the EE source.
    """

    value: float | None
    error: float | None = None
    n_stars: int = 0
    radius_arcsec: float | None = None
    method: str = "table"
    note: str = ""

    def metadata(self) -> dict:
        """Catalog metadata keys. Only ``Aperture correction (mag)`` contains "aperture
        correction" (the others say "Aperture-correction"): readers that look for a key
        matching it find the value, never its error or the star count."""
        value = (round(float(self.value), 4) if self.value is not None
                 else "not available in the CI/aperture-correction table")
        meta = {"Aperture correction (mag)": value}
        if self.method == "measured":
            meta["Aperture-correction error (mag)"] = round(float(self.error), 4)
            meta["Aperture-correction stars"] = int(self.n_stars)
            meta["Aperture-correction radius (arcsec)"] = float(self.radius_arcsec)
            meta["Aperture-correction method"] = (
                f"measured: curve of growth of {self.n_stars} bright isolated stars from aperture "
                f"2 to {self.radius_arcsec:g}\" (far-annulus sky) over FluxAp2, then handbook "
                f"encircled energy at {self.radius_arcsec:g}\" ({self.note})")
        else:
            meta["Aperture-correction stars"] = int(self.n_stars)
            meta["Aperture-correction method"] = f"CI/aperture-correction table (fallback: {self.note})"
        return meta


def star_growth_ratios(data, x, y, flux2, *, radius, sky_annulus, valid=None,
                       epadu=None) -> tuple[np.ndarray, np.ndarray]:
    """Light within ``radius`` (sky from ``sky_annulus``) over ``flux2``, per star.

    Parameters
    ----------
    data : 2-D ndarray
        The product (e-/s).
    x, y : array_like
        0-based positions.
    flux2 : array_like
        Catalog aperture-2 fluxes (the denominators).
    radius : float
        Aperture radius (pixels).
    sky_annulus : tuple of float
        Inner and outer radius of the sky annulus (pixels).
    valid : 2-D bool ndarray, optional
        Usable pixels; a star with an unusable pixel in its aperture, or with less than half
        of its annulus usable, gets NaN.
    epadu : float or array_like, optional
        Electrons per data unit for the Poisson term of the error (none when not given).

    Returns
    -------
    ratio, error : ndarray
        NaN where not measurable. ``error`` holds the sky noise of the aperture and of the sky
        level, and the star's Poisson noise (the noise of ``flux2`` is not included).
    """
    from photutils.aperture import CircularAperture, aperture_photometry

    from hapcore.catalogs.photometry import annulus_pixel_stack, clipped_stats_rows

    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux2 = np.asarray(flux2, float)
    n = x.size
    if n == 0:
        return np.empty(0), np.empty(0)
    # one full-size copy (the image's own dtype): unusable pixels NaN, so an aperture touching
    # one sums to NaN
    masked = np.asarray(data)
    if valid is not None:
        masked = np.where(np.asarray(valid, bool), masked, np.nan)
    positions = np.column_stack([x, y])
    raw = np.asarray(aperture_photometry(masked, CircularAperture(positions, radius),
                                         method="exact")["aperture_sum"], float)
    area = np.pi * radius**2
    r_in, r_out = sky_annulus
    # in batches: a far annulus of 2-3" holds ~20000 UVIS pixels per star
    sky = np.full(n, np.nan)
    sky_std = np.full(n, np.nan)
    n_sky = np.zeros(n)
    box = (2 * int(np.ceil(r_out)) + 3) ** 2
    batch = max(1, int(4e6 // box))
    for start in range(0, n, batch):
        stop = min(n, start + batch)
        values = annulus_pixel_stack(masked, positions[start:stop], r_in, r_out)
        counts = np.isfinite(values).sum(axis=1)
        _, median, std, _ = clipped_stats_rows(values)
        sky[start:stop], sky_std[start:stop], n_sky[start:stop] = median, std, counts
    expected = np.pi * (r_out**2 - r_in**2)
    light = raw - area * sky
    variance = area * sky_std**2 * (1.0 + area / np.maximum(n_sky, 1.0))
    if epadu is not None:
        variance = variance + np.clip(light, 0.0, None) / np.asarray(epadu, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = light / flux2
        error = np.sqrt(variance) / flux2
    usable = np.isfinite(raw) & (n_sky >= 0.5 * expected) & np.isfinite(ratio) & (flux2 > 0)
    return np.where(usable, ratio, np.nan), np.where(usable, error, np.nan)


def weighted_clipped_mean(values, errors, *, nsigma=3.0, iterations=5) -> tuple[float, float, np.ndarray]:
    """Weighted mean with iterative ``nsigma`` clipping; returns (mean, error, kept mask).

    The stars' excess scatter (beyond their errors) is added to every error in quadrature
    (weights then do not let one very bright star decide alone); the error of the mean is the
    larger of the formal error and the robust scatter over sqrt(n).
    """
    values = np.asarray(values, float)
    errors = np.asarray(errors, float)
    keep = np.isfinite(values) & np.isfinite(errors) & (errors > 0)
    if not keep.any():
        return np.nan, np.nan, keep
    # first about the median (a bright outlier would pull a weighted mean away from the rest)
    v = values[keep]
    scale = max(1.4826 * float(np.median(np.abs(v - np.median(v)))),
                float(np.median(errors[keep])))
    first = keep & (np.abs(values - float(np.median(v))) <= nsigma * scale)
    keep = first if first.sum() >= 2 else keep
    extra = 0.0
    for _ in range(iterations):
        v, e = values[keep], errors[keep]
        mad = 1.4826 * float(np.median(np.abs(v - np.median(v)))) if v.size > 2 else 0.0
        extra = float(np.sqrt(max(mad**2 - float(np.median(e)) ** 2, 0.0)))
        w = 1.0 / (e**2 + extra**2)
        mean = float(np.sum(w * v) / np.sum(w))
        total = np.sqrt(errors**2 + extra**2)
        new = keep & (np.abs(values - mean) <= nsigma * np.maximum(total, mad))
        if new.sum() < 2 or np.array_equal(new, keep):
            keep = new if new.sum() >= 2 else keep
            break
        keep = new
    v, e = values[keep], errors[keep]
    w = 1.0 / (e**2 + extra**2)
    mean = float(np.sum(w * v) / np.sum(w))
    formal = float(1.0 / np.sqrt(np.sum(w)))
    scatter = (1.4826 * float(np.median(np.abs(v - np.median(v)))) / np.sqrt(v.size)
               if v.size > 2 else formal)
    return mean, max(formal, scatter), keep


def _select_stars(table, *, plate_scale, aperture_2, radius, sky_out, min_snr, isolation,
                  ci_width, ci_limits, max_stars) -> np.ndarray:
    x = np.asarray(table["X-Center"], float)
    y = np.asarray(table["Y-Center"], float)
    flux = np.asarray(table["FluxAp2"], float)
    error = np.asarray(table["FluxErrAp2"], float)
    ci = np.asarray(table["CI"], float)
    flags = np.asarray(table["Flags"], np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / error
        # flag 1 (CI above the limits) is allowed: the limits are drizzlepac's, and a PSF a
        # little broader than its (a red filter) puts every star just above them
        candidate = ((flags & ~FLAG_EXTENDED) == 0) & np.isfinite(x) & np.isfinite(y) & \
            (flux > 0) & (snr >= min_snr) & np.isfinite(ci)
        if ci_limits is not None:
            candidate &= (ci >= ci_limits[0]) & (ci <= ci_limits[1] + CI_UPPER_MARGIN)
    if candidate.sum() >= 3:
        reference = float(np.median(ci[candidate]))
        candidate &= np.abs(ci - reference) <= ci_width
    index = np.flatnonzero(candidate)
    if not index.size:
        return index
    # the brightest carry the weighted mean: a few hundred are plenty
    index = index[np.argsort(flux[index])[::-1][:max_stars]]
    from scipy.spatial import cKDTree

    # any other detection counts as a neighbour; saturated ones (flag 4) as infinitely bright
    finite = np.isfinite(x) & np.isfinite(y)
    others = np.flatnonzero(finite)
    brightness = np.where(np.isfinite(flux), flux, 0.0)
    brightness = np.where((flags & 4) != 0, np.inf, brightness)[others]
    tree = cKDTree(np.column_stack([x[others], y[others]]))
    r2 = aperture_2 / plate_scale
    near = tree.query_ball_point(np.column_stack([x[index], y[index]]), r=radius + r2)
    far = tree.query_ball_point(np.column_stack([x[index], y[index]]), r=sky_out + r2)
    keep = np.ones(index.size, bool)
    for k, (i, inner, outer) in enumerate(zip(index, near, far)):
        inner = [j for j in inner if others[j] != i]
        outer = [j for j in outer if others[j] != i]
        if any(brightness[j] > isolation * flux[i] for j in inner) or \
                any(brightness[j] > flux[i] for j in outer):
            keep[k] = False
    return index[keep]


def measure_aperture_correction(data, table, *, plate_scale, aperture_2, instrument, detector,
                                filter_name=None, photplam=None, valid=None, epadu=None,
                                table_value=None, ci_limits=None, min_stars=5, min_snr=50.0,
                                isolation=0.005, ci_width=0.1,
                                max_star_error=0.05, max_stars=300) -> ApertureCorrection:
    """Aperture correction of a filter product from its own bright isolated stars.

    Parameters
    ----------
    data : 2-D ndarray
        The filter product (e-/s).
    table : astropy.table.Table
        Its point catalog (``X-Center``, ``Y-Center``, ``FluxAp2``, ``FluxErrAp2``, ``CI``,
        ``Flags``), untrimmed.
    plate_scale : float
        Arcsec per pixel.
    aperture_2 : float
        Radius of aperture 2 (arcsec).
    instrument, detector : str
        Select the encircled-energy table.
    filter_name : str, optional
        A filter with its own EE row uses it.
    photplam : float, optional
        Pivot wavelength (Angstrom), for the EE interpolation.
    valid : 2-D bool ndarray, optional
        Usable pixels (e.g. weight > 0).
    epadu : float, optional
        Electrons per data unit (Poisson term of the star errors).
    table_value : float, optional
        The CI-table correction, used when too few stars are measured.
    ci_limits : tuple of float, optional
        The catalog's CI limits: candidates lie within them, or up to ``CI_UPPER_MARGIN``
        above (flag 1 is not held against a star).
    min_stars : int, optional
        Good stars needed for a measured value.
    min_snr : float, optional
        Aperture-2 S/N of a candidate.
    isolation : float, optional
        Brightest neighbour allowed within the large aperture, as a fraction of the star.
    ci_width : float, optional
        Largest CI difference from the candidates' median.
    max_star_error : float, optional
        Largest relative error of a star's growth ratio for it to count.
    max_stars : int, optional
        Only the brightest this many candidates are measured.

    Returns
    -------
    ApertureCorrection
    """
    def fallback(reason, n=0):
        log.info("aperture correction of %s: CI table value %s (%s)", filter_name, table_value,
                 reason)
        return ApertureCorrection(table_value, n_stars=n, method="table", note=reason)

    ee_table = encircled_energy_table(instrument, detector)
    if ee_table is None:
        return fallback(f"no encircled-energy table for {instrument}/{detector}")
    wavelength = photplam / 10.0 if photplam else None
    try:
        r_in, r_out = ee_table.sky_annulus_arcsec
        ee_r, ee_in, ee_out = ee_table.at([ee_table.radius_arcsec, r_in, r_out],
                                          wavelength_nm=wavelength, filter_name=filter_name)
    except ValueError as exc:
        return fallback(str(exc))
    if table is None or not len(table):
        return fallback("no point sources")
    radius = ee_table.radius_arcsec / plate_scale
    annulus = (r_in / plate_scale, r_out / plate_scale)
    stars = _select_stars(table, plate_scale=plate_scale, aperture_2=aperture_2, radius=radius,
                          sky_out=annulus[1], min_snr=min_snr, isolation=isolation,
                          ci_width=ci_width, ci_limits=ci_limits, max_stars=max_stars)
    if stars.size < min_stars:
        return fallback(f"{stars.size} bright isolated point-like star(s), {min_stars} needed",
                        stars.size)
    ratio, error = star_growth_ratios(
        data, np.asarray(table["X-Center"], float)[stars],
        np.asarray(table["Y-Center"], float)[stars],
        np.asarray(table["FluxAp2"], float)[stars], radius=radius, sky_annulus=annulus,
        valid=valid, epadu=epadu)
    good = np.isfinite(ratio) & (error <= max_star_error * np.abs(ratio))
    if good.sum() < min_stars:
        return fallback(f"{int(good.sum())} star(s) measured to {ee_table.radius_arcsec:g}\" "
                        f"within {100 * max_star_error:g}%, {min_stars} needed", int(good.sum()))
    mean, mean_error, kept = weighted_clipped_mean(ratio[good], error[good])
    n_used = int(kept.sum())
    if n_used < min_stars or not mean > 0:
        return fallback(f"{n_used} star(s) left after clipping, {min_stars} needed", n_used)
    # the PSF's own light in the far annulus, taken for sky, scaled to the aperture's area
    area_ratio = ee_table.radius_arcsec**2 / (r_out**2 - r_in**2)
    ee_effective = ee_r - area_ratio * (ee_out - ee_in)
    value = -2.5 * np.log10(mean / ee_effective)
    stat = _MAG_PER_RELATIVE * mean_error / mean
    system = _MAG_PER_RELATIVE * ee_table.ee_uncertainty / ee_r
    total_error = float(np.hypot(stat, system))
    log.info("aperture correction of %s: %+.4f +- %.4f mag from %d stars (growth %.4f +- %.4f "
             "to %g\", EE %.4f; table %s)", filter_name, value, total_error, n_used, mean,
             mean_error, ee_table.radius_arcsec, ee_effective, table_value)
    return ApertureCorrection(float(value), error=total_error, n_stars=n_used,
                              radius_arcsec=ee_table.radius_arcsec, method="measured",
                              note=f"EE {ee_r:.3f}, configs/any/encircled_energy.json")


def ci_table_aperture_correction(image) -> dict:
    """The CI-table aperture correction of a filter product, recorded so users can apply it:
    total magnitude = MagAp2 + ``Aperture correction (mag)`` (MagAp2 itself stays uncorrected,
    as in drizzlepac's catalogs)."""
    from hapcore.obset.parameters import lookup_ci_limits_from_table

    filters = [f for f in image.filter_names if f and f.lower() not in ("", "clear", "n/a")]
    row = None
    for name in filters:
        row = lookup_ci_limits_from_table(image.instrument, image.detector, name.lower())
        if row is not None:
            break
    if row is None:
        return {"Aperture correction (mag)": "not available in the CI/aperture-correction table"}
    return {"Aperture correction (mag)": float(row.ap_cor)}


def measured_aperture_correction(table, image, fcat, ci_limits) -> dict:
    """Metadata of the aperture correction measured on the filter product's own stars
    (:mod:`hapcore.catalogs.aperture_correction`; the CI table's value when too few)."""
    table_value = ci_table_aperture_correction(image)["Aperture correction (mag)"]
    filters = [f for f in image.filter_names if f and f.lower() not in ("", "clear", "n/a")]
    result = measure_aperture_correction(
        image.data, table, plate_scale=image.plate_scale, aperture_2=fcat.aperture_2,
        instrument=image.instrument, detector=image.detector,
        filter_name=filters[0] if filters else None, photplam=image.photplam,
        valid=image.weight > 0, epadu=image.epadu,
        table_value=table_value if isinstance(table_value, float) else None,
        ci_limits=ci_limits, min_stars=fcat.aperture_correction_min_stars,
        min_snr=fcat.aperture_correction_min_snr)
    return result.metadata()
