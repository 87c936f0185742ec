"""Alignment of a visit's exposures to each other and to an astrometric reference (spec §4).

The chain, for the direct exposures of one detector:

1. sources per chip (:mod:`hapcore.align.sources`), to the sky through each chip's full
   distortion-aware header WCS, then into one tangent plane about the visit centre;
2. relative alignment: exposure 0 is the reference; each other exposure is matched to the growing
   combined catalog and fitted (``mosaic_relgeom_list`` geometry, downgraded to a shift when the
   matches are too few for it);
3. the visit as one group fitted to the reference catalog (``match_relative_fit``), else every
   exposure separately (``match_2dhist_fit``, ``match_default_fit``); each fit judged by the
   acceptance tests of §4.6 *without* drizzlepac's bugs: the match count really has to reach the
   geometry's minimum, and the magnitude-correlation test uses the reference catalog's size;
   the fits are weighted by the reference catalog's position errors at the observation epoch
   (:func:`hapcore.align.fit.fit_linear_reference`; unweighted when the catalog has none);
4. fallback: relative-only solution (if the exposures could be aligned to each other), else the
   input WCS is kept. Processing always goes on; every decision is logged with its reason.

The outcome per exposure is a tangent-plane transform; :func:`corrected_chip_wcs` turns it into
new CRVAL/CD values per chip (SIP untouched). No file is written here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from hap_models.alignment import ChipWCS
from hapcore.align.fit import (
    FITGEOM_PARAMETERS,
    LinearFit,
    fit_linear_clipped,
    fit_linear_reference,
)
from hapcore.align.match import match_sources
from hapcore.align.sources import detect_chip_sources
from hapcore.wcs.files import chip_wcs, sci_extensions
from hapcore.wcs.tangent import from_tangent_plane_arcsec, tangent_plane_arcsec

__all__ = [
    "ChipCatalog",
    "ExposureCatalog",
    "ExposureTransform",
    "VisitAlignment",
    "read_chip_wcs_readonly",
    "detect_exposure_sources",
    "align_visit",
    "reference_variance",
    "corrected_chip_wcs",
    "fit_quality",
]

logger = logging.getLogger(f"hapsvm.{__name__}")

_GEOMETRY_ORDER = ("general", "rscale", "rshift", "shift")


@dataclass
class ChipCatalog:
    """Sources of one chip: pixel (0-based) and sky positions through the header WCS."""

    extver: int
    x: np.ndarray
    y: np.ndarray
    ra: np.ndarray
    dec: np.ndarray
    mag: np.ndarray


@dataclass
class ExposureCatalog:
    """Sources of all chips of one exposure."""

    rootname: str
    path: Path
    chips: list[ChipCatalog]
    fwhm_px: float
    n_cosmic_rays: int
    plate_scale: float
    epoch_mjd: float | None = None
    footprints: list = field(default_factory=list, repr=False)
    #: chips left out of the detection, with why (logged as warnings by the caller: the
    #: detection may run in a worker process, whose log records would be lost)
    skipped: dict[int, str] = field(default_factory=dict)

    @property
    def n_sources(self) -> int:
        return sum(len(c.x) for c in self.chips)

    def sky(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if not self.chips:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        return (np.concatenate([c.ra for c in self.chips]), np.concatenate([c.dec for c in self.chips]),
                np.concatenate([c.mag for c in self.chips]))


def read_chip_wcs_readonly(hdul: fits.HDUList) -> dict[int, WCS]:
    """Full (SIP and lookup-table) WCS of every SCI extension of an open file, keyed by EXTVER.

    The open-file form of :func:`hapcore.wcs.files.read_chip_wcs` (same construction)."""
    return {extver: chip_wcs(hdu.header, hdul)
            for extver, hdu in sorted(sci_extensions(hdul).items())}


def detect_exposure_sources(path: str | Path, *, fwhmpsf_arcsec: float, nsigma: float = 3.0,
                            threshold_scale: float = 1.1, box_size: int = 27, filter_size: int = 3,
                            max_sources_per_chip: int = 250) -> ExposureCatalog:
    """Detect the alignment sources of every chip of one exposure (file opened read-only)."""
    path = Path(path)
    chips: list[ChipCatalog] = []
    fwhms, n_cr, scale, footprints = [], 0, np.nan, []
    skipped: dict[int, str] = {}
    with fits.open(path, mode="readonly", memmap=True) as hdul:
        rootname = str(hdul[0].header.get("ROOTNAME", path.name.split("_")[0])).lower()
        epoch = hdul[0].header.get("EXPSTART")
        wcs_by_ver = read_chip_wcs_readonly(hdul)
        for extver, wcs in wcs_by_ver.items():
            sci = hdul["SCI", extver].data
            if not wcs.has_celestial:
                skipped[extver] = "no celestial WCS"
                continue
            if sci is not None:
                # one conversion from the file's byte order, for the checks and the detection
                sci = sci.astype(sci.dtype.newbyteorder("="), copy=False)
                footprints.append(wcs.calc_footprint(axes=sci.shape[::-1], undistort=True))
            if sci is None or not np.any(np.isfinite(sci) & (sci != 0)):
                skipped[extver] = "no data (all zero or NaN)"
                continue
            dq = hdul["DQ", extver].data if ("DQ", extver) in hdul else None
            if dq is not None and np.shape(dq) == np.shape(sci) and np.all(np.asarray(dq) != 0):
                skipped[extver] = "every pixel flagged in DQ"
                continue
            scale = float(np.mean([abs(s.to_value("deg")) for s in wcs.proj_plane_pixel_scales()])) * 3600.0
            found = detect_chip_sources(
                sci, dq, fwhm_px=fwhmpsf_arcsec / scale, nsigma=nsigma,
                threshold_scale=threshold_scale, box_size=box_size, filter_size=filter_size,
                max_sources=max_sources_per_chip)
            tab = found.table
            ra, dec = wcs.all_pix2world(np.asarray(tab["x"]), np.asarray(tab["y"]), 0)
            chips.append(ChipCatalog(extver, np.asarray(tab["x"]), np.asarray(tab["y"]),
                                     np.asarray(ra), np.asarray(dec), np.asarray(tab["mag"])))
            fwhms.append(found.fwhm_px)
            n_cr += found.n_cosmic_rays
    logger.debug("%s: %d alignment sources on %d chip(s), FWHM %.2f px, %d cosmic-ray peaks rejected",
                path.name, sum(len(c.x) for c in chips), len(chips),
                float(np.median(fwhms)) if fwhms else np.nan, n_cr)
    for extver, why in skipped.items():
        logger.debug("%s SCI,%d: %s, skipped for alignment", path.name, extver, why)
    return ExposureCatalog(rootname, path, chips, float(np.median(fwhms)) if fwhms else np.nan,
                           n_cr, scale, float(epoch) if epoch not in (None, "") else None,
                           footprints, skipped)


@dataclass
class ExposureTransform:
    """Tangent-plane correction of one exposure: ``new = matrix @ old + shift`` (arcsec)."""

    matrix: np.ndarray = field(default_factory=lambda: np.eye(2))
    shift: np.ndarray = field(default_factory=lambda: np.zeros(2))

    def then(self, fit_matrix: np.ndarray, fit_shift: np.ndarray) -> ExposureTransform:
        """This transform followed by another one."""
        return ExposureTransform(fit_matrix @ self.matrix, fit_matrix @ self.shift + fit_shift)

    def apply(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy) @ self.matrix.T + self.shift

    @property
    def is_identity(self) -> bool:
        return np.allclose(self.matrix, np.eye(2)) and np.allclose(self.shift, 0)


@dataclass
class ExposureFit:
    """Per-exposure figures recorded in the headers."""

    nmatches: int = 0
    rms_ra_mas: float = -1.0
    rms_dec_mas: float = -1.0
    fit_rms_mas: float = -1.0
    fitgeom: str | None = None
    relgeom: str = "N/A"
    relmatch: int = 0
    relrms_ra_mas: float = 0.0
    relrms_dec_mas: float = 0.0


@dataclass
class VisitAlignment:
    """Outcome for a detector: transforms per exposure, how they were obtained, and why."""

    ra0: float
    dec0: float
    transforms: dict[str, ExposureTransform]
    fits: dict[str, ExposureFit]
    fit_label: str | None            # "SVM" (absolute), "REL" (relative only) or None (kept)
    catalog: str | None
    method: str | None
    fitgeom: str | None
    fit_quality: int
    total_rms_mas: float
    nmatches: int
    relrefim: str
    reason: str
    fit_rotation_deg: float = 0.0
    fit_scale: float = 1.0
    fit_skew_deg: float = 0.0
    fit_shift_arcsec: tuple[float, float] = (0.0, 0.0)


def fit_quality(fit: LinearFit, *, src_mag: np.ndarray, ref_mag: np.ndarray, n_ref: int,
                min_matches: int, max_fit_limit_mas: float, max_fit_rms_mas: float,
                plate_scale: float) -> tuple[int, str]:
    """Fit quality 1 (best) .. 5 (invalid) and the reason, by the tests of spec §4.6 without
    its bugs (the minimum match count is enforced; the magnitude test uses the reference size).
    """
    n = fit.nmatches
    rms_mas = fit.rms * 1000.0
    if n < min_matches:
        return 5, f"{n} matches < {min_matches} needed for {fit.fitgeom}"
    if not np.isfinite(rms_mas) or rms_mas > max_fit_limit_mas:
        return 5, f"fit rms {rms_mas:.1f} mas > {max_fit_limit_mas:.0f} mas"
    r = float(np.hypot(*fit.shift))  # arcsec
    if not (n + 2) * 0.36 > 0.8 + (r / 10.0) ** 8:
        return 5, f"offset {r:.2f}\" too large for {n} matches (radial offset test)"
    compromised = False
    reason = "ok"
    if n < max(0.1 * min(1000, n_ref), 10):
        good = np.isfinite(src_mag) & np.isfinite(ref_mag)
        if good.sum() >= 3:
            corr = abs(np.corrcoef(src_mag[good], ref_mag[good])[0, 1])
            if not corr > 0.5:
                compromised = True
                reason = f"magnitudes of the {n} matches correlate poorly (|r| = {corr:.2f})"
        elif good.sum() < 1:
            compromised = True
            reason = "no finite magnitudes to check the matches"
    if rms_mas < max_fit_rms_mas:
        return (2 if compromised else 1), reason
    if not compromised and rms_mas <= 1000.0:
        return 3, reason
    return 4, reason


def _fit_with_downgrade(xy, uv, *, fitgeom: str, minimums: dict[str, int], min_fit_matches: int,
                        nclip: int = 3, variance: np.ndarray | None = None) -> LinearFit | None:
    """Fit with ``fitgeom``; with too few matches for it, fall back to simpler geometries.

    ``variance`` (per axis, arcsec^2, of each ``uv``): a weighted fit to reference positions
    (:func:`hapcore.align.fit.fit_linear_reference`).
    """
    start = _GEOMETRY_ORDER.index(fitgeom) if fitgeom in _GEOMETRY_ORDER else 1
    for geom in _GEOMETRY_ORDER[start:]:
        need = max(minimums.get(geom, min_fit_matches), min_fit_matches,
                   FITGEOM_PARAMETERS[geom] + 1)
        if len(xy) >= need:
            fit = (fit_linear_clipped(xy, uv, fitgeom=geom, nclip=nclip) if variance is None
                   else fit_linear_reference(xy, uv, variance, fitgeom=geom, nclip=nclip))
            if fit.nmatches >= need:
                return fit
    return None


def reference_variance(refcat) -> np.ndarray | None:
    """Variance per axis (arcsec^2) of every reference position, or None without errors.

    From ``RA_error`` and ``DEC_error`` (mas, at the observation epoch: proper-motion errors
    included by :func:`hapcore.align.refcat_read.standardize_reference_table`); rows without
    an error get the largest known one.
    """
    if "RA_error" not in refcat.colnames or "DEC_error" not in refcat.colnames:
        return None
    ra_err = np.asarray(refcat["RA_error"], float)
    dec_err = np.asarray(refcat["DEC_error"], float)
    variance = 0.5 * (ra_err ** 2 + dec_err ** 2) * 1e-6
    known = np.isfinite(variance) & (variance > 0)
    if not known.any():
        return None
    return np.where(known, variance, variance[known].max())


def _tp(cat: ExposureCatalog, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    ra, dec, mag = cat.sky()
    return tangent_plane_arcsec(ra, dec, ra0, dec0), mag


def _relative_alignment(catalogs, ra0, dec0, *, settings, relgeom_minimums, min_fit_matches):
    """Align exposures 1..N to exposure 0 (expanding the combined catalog); return transforms,
    per-exposure relative figures, the combined catalog (xy, mag) and how many were aligned."""
    transforms = {catalogs[0].rootname: ExposureTransform()}
    figures = {catalogs[0].rootname: ExposureFit()}
    ref_xy, ref_mag = _tp(catalogs[0], ra0, dec0)
    scale = catalogs[0].plate_scale
    n_aligned = 0
    for cat in catalogs[1:]:
        xy, mag = _tp(cat, ra0, dec0)
        match = match_sources(xy, ref_xy, searchrad=settings.searchrad * scale,
                              tolerance=settings.tolerance * scale, use2dhist=settings.use2dhist)
        fit = None
        if len(match) >= min_fit_matches:
            geom = next(iter(relgeom_minimums), "rscale")
            fit = _fit_with_downgrade(xy[match.src_index], ref_xy[match.ref_index], fitgeom=geom,
                                      minimums=relgeom_minimums, min_fit_matches=min_fit_matches)
        if fit is None:
            logger.warning("%s: only %d relative matches to %s: kept unaligned relative to it",
                           cat.rootname, len(match), catalogs[0].rootname)
            transforms[cat.rootname] = ExposureTransform()
            figures[cat.rootname] = ExposureFit()
            moved = xy
        else:
            n_aligned += 1
            transforms[cat.rootname] = ExposureTransform(fit.matrix, fit.shift)
            rx, ry = fit.rms_xy
            figures[cat.rootname] = ExposureFit(relgeom=fit.fitgeom, relmatch=fit.nmatches,
                                                relrms_ra_mas=rx * 1000, relrms_dec_mas=ry * 1000)
            logger.debug("%s: relative fit to %s: %s, %d matches, rms %.2f mas, shift (%.3f, %.3f)\"",
                        cat.rootname, catalogs[0].rootname, fit.fitgeom, fit.nmatches,
                        fit.rms * 1000, *fit.shift)
            moved = fit.apply(xy)
        unmatched = np.ones(len(xy), bool)
        unmatched[match.src_index] = False
        ref_xy = np.vstack([ref_xy, moved[unmatched]])
        ref_mag = np.concatenate([ref_mag, mag[unmatched]])
    return transforms, figures, ref_xy, ref_mag, n_aligned


def align_visit(catalogs: list[ExposureCatalog], refcat, params, *,
                catalog_name: str | None = None) -> VisitAlignment:
    """Align the exposures of one detector; see the module docstring for the chain.

    Parameters
    ----------
    catalogs : list of ExposureCatalog
        In processing order (the first is the relative reference).
    refcat : astropy Table or None
        Reference catalog with ``RA``, ``DEC``, ``mag`` at the epoch of the observation.
    params : AlignmentParameters
    catalog_name : str, optional
        Name recorded in WCSNAME (e.g. ``GAIADR3``).
    """
    flat = params.flattened()
    min_fit_matches = int(flat["min_fit_matches"])
    all_ra = np.concatenate([c.sky()[0] for c in catalogs]) if catalogs else np.zeros(0)
    all_dec = np.concatenate([c.sky()[1] for c in catalogs]) if catalogs else np.zeros(0)
    if len(all_ra) == 0:
        return _kept(catalogs, 0.0, 0.0, "no alignment sources were found in any exposure")
    vec = np.array([np.cos(np.radians(all_dec)) * np.cos(np.radians(all_ra)),
                    np.cos(np.radians(all_dec)) * np.sin(np.radians(all_ra)),
                    np.sin(np.radians(all_dec))]).mean(axis=1)
    ra0 = float(np.degrees(np.arctan2(vec[1], vec[0])) % 360.0)
    dec0 = float(np.degrees(np.arcsin(vec[2] / np.linalg.norm(vec))))
    scale = catalogs[0].plate_scale
    relrefim = catalogs[0].rootname

    methods = params.fit_methods(len(catalogs))
    if len(catalogs) > 1:
        transforms, figures, comb_xy, comb_mag, n_rel = _relative_alignment(
            catalogs, ra0, dec0, settings=params.match_relative_fit,
            relgeom_minimums=dict(params.run_align.mosaic_relgeom_list),
            min_fit_matches=min_fit_matches)
    else:
        transforms = {catalogs[0].rootname: ExposureTransform()}
        figures = {catalogs[0].rootname: ExposureFit()}
        comb_xy, comb_mag = _tp(catalogs[0], ra0, dec0)
        n_rel = 0

    fitgeom_minimums = dict(params.run_align.mosaic_fitgeom_list)
    reasons = []
    ref_ok = refcat is not None and len(refcat) > 0
    if not ref_ok:
        reasons.append(f"reference catalog {catalog_name} is empty or does not cover the visit"
                       if catalog_name else "no usable reference catalog")
    else:
        ref_xy = tangent_plane_arcsec(np.asarray(refcat["RA"], float),
                                      np.asarray(refcat["DEC"], float), ra0, dec0)
        ref_mag = np.asarray(refcat["mag"], float) if "mag" in refcat.colnames else np.full(len(refcat), np.nan)
        ref_var = reference_variance(refcat)
        for method in methods:
            settings = params.match_settings(method)
            geom = settings.fitgeom
            if method == "match_relative_fit":
                groups = [("visit", comb_xy, comb_mag, None)]
            else:
                groups = []
                for cat in catalogs:
                    xy, mag = _tp(cat, ra0, dec0)
                    groups.append((cat.rootname, xy, mag, cat.rootname))
            results = []
            failed = None
            for name, xy, mag, root in groups:
                start = transforms[root] if root else ExposureTransform()
                moved = start.apply(xy) if root else xy
                match = match_sources(moved, ref_xy, searchrad=settings.searchrad * scale,
                                      tolerance=settings.tolerance * scale,
                                      use2dhist=settings.use2dhist)
                fit = None
                if len(match) >= min_fit_matches:
                    fit = _fit_with_downgrade(
                        moved[match.src_index], ref_xy[match.ref_index], fitgeom=geom,
                        minimums=fitgeom_minimums, min_fit_matches=min_fit_matches,
                        variance=None if ref_var is None else ref_var[match.ref_index])
                if fit is None:
                    failed = f"{method}: {name}: {len(match)} matches, too few for any fit geometry"
                    break
                need = max(fitgeom_minimums.get(fit.fitgeom, min_fit_matches), min_fit_matches)
                quality, why = fit_quality(
                    fit, src_mag=mag[match.src_index][fit.mask],
                    ref_mag=ref_mag[match.ref_index][fit.mask], n_ref=len(ref_xy),
                    min_matches=need, max_fit_limit_mas=float(flat["max_fit_limit"]),
                    max_fit_rms_mas=float(flat["max_fit_rms"]), plate_scale=scale)
                if quality not in params.determine_fit_quality.good_fit_quality_values:
                    failed = f"{method}: {name}: fit rejected ({why})"
                    break
                results.append((name, root, fit, quality, why, match))
            if failed:
                logger.info("alignment to %s: %s", catalog_name, failed)
                reasons.append(failed)
                continue
            return _absolute(catalogs, ra0, dec0, transforms, figures, results, method,
                             catalog_name, relrefim)

    if n_rel > 0:
        reason = "; ".join(reasons) + "; relative alignment of the exposures kept"
        logger.warning("no a posteriori fit accepted: %s", reason)
        return VisitAlignment(ra0, dec0, transforms, figures, "REL", None, "match_relative_fit",
                              None, 5, -1.0, 0, relrefim, reason)
    reason = "; ".join(reasons) or "no fit possible"
    return _kept(catalogs, ra0, dec0, reason + "; input WCS kept")


def _kept(catalogs, ra0, dec0, reason) -> VisitAlignment:
    logger.warning("alignment: %s", reason)
    names = [c.rootname for c in catalogs]
    return VisitAlignment(ra0, dec0, {n: ExposureTransform() for n in names},
                          {n: ExposureFit() for n in names}, None, None, None, None, 5, -1.0, 0,
                          names[0] if names else "N/A", reason)


def _absolute(catalogs, ra0, dec0, transforms, figures, results, method, catalog_name, relrefim):
    final = {}
    total_n = 0
    rms_list = []
    for name, root, fit, quality, why, match in results:
        roots = [c.rootname for c in catalogs] if root is None else [root]
        rx, ry = fit.rms_xy
        for r in roots:
            final[r] = transforms[r].then(fit.matrix, fit.shift)
            f = figures[r]
            figures[r] = ExposureFit(nmatches=fit.nmatches, rms_ra_mas=rx * 1000,
                                     rms_dec_mas=ry * 1000, fit_rms_mas=fit.rms * 1000,
                                     fitgeom=fit.fitgeom, relgeom=f.relgeom, relmatch=f.relmatch,
                                     relrms_ra_mas=f.relrms_ra_mas, relrms_dec_mas=f.relrms_dec_mas)
        total_n += fit.nmatches
        rms_list.append(fit.rms * 1000)
        logger.info("alignment to %s (%s): %s: %s fit, %d matches, rms %.2f mas, rotation %.4f deg, "
                    "scale %.6f, shift (%.3f, %.3f)\", quality %d", catalog_name, method, name,
                    fit.fitgeom, fit.nmatches, fit.rms * 1000, fit.rotation_deg, fit.scale,
                    fit.shift[0], fit.shift[1], quality)
    first_fit = results[0][2]
    worst = max(r[3] for r in results)
    return VisitAlignment(ra0, dec0, final, figures, "SVM", catalog_name, method,
                          first_fit.fitgeom, worst, float(np.mean(rms_list)), total_n, relrefim,
                          f"{method} fit to {catalog_name} accepted",
                          fit_rotation_deg=first_fit.rotation_deg, fit_scale=first_fit.scale,
                          fit_skew_deg=first_fit.skew_deg,
                          fit_shift_arcsec=(float(first_fit.shift[0]), float(first_fit.shift[1])))


def corrected_chip_wcs(wcs: WCS, extver: int, transform: ExposureTransform, ra0: float,
                       dec0: float, *, grid: int = 12) -> ChipWCS:
    """New CRVAL and CD of a chip whose sky positions are moved by ``transform``.

    The chip's pixel grid is taken through the full header WCS, moved in the visit tangent plane,
    and the linear part of the WCS (CRVAL, CD; CRPIX and SIP kept) is solved for by least squares
    about the new CRVAL: exact for the rotations, scales and shifts an alignment produces.
    """
    ny, nx = wcs.pixel_shape[1], wcs.pixel_shape[0]
    crpix = wcs.wcs.crpix
    gy, gx = np.meshgrid(np.linspace(0, ny - 1, grid), np.linspace(0, nx - 1, grid), indexing="ij")
    px = np.column_stack([gx.ravel(), gy.ravel()])
    ra, dec = wcs.all_pix2world(px[:, 0], px[:, 1], 0)
    moved = transform.apply(tangent_plane_arcsec(ra, dec, ra0, dec0))
    new_ra, new_dec = from_tangent_plane_arcsec(moved, ra0, dec0)
    c_ra, c_dec = wcs.wcs.crval
    crval_moved = transform.apply(tangent_plane_arcsec([c_ra], [c_dec], ra0, dec0))
    crval_ra, crval_dec = from_tangent_plane_arcsec(crval_moved, ra0, dec0)
    crval = (float(crval_ra[0]), float(crval_dec[0]))
    # intermediate pixel coordinates: offsets from CRPIX after every distortion (SIP and tables);
    # astropy's pix2foc returns absolute 1-based focal-plane coordinates for 1-based input
    u = wcs.pix2foc(px + 1.0, 1) - crpix
    xi = tangent_plane_arcsec(new_ra, new_dec, *crval) / 3600.0
    cd_t, *_ = np.linalg.lstsq(u, xi, rcond=None)
    cd = cd_t.T
    return ChipWCS(extver=extver, crval=crval, crpix=(float(crpix[0]), float(crpix[1])),
                   cd=((float(cd[0, 0]), float(cd[0, 1])), (float(cd[1, 0]), float(cd[1, 1]))))
