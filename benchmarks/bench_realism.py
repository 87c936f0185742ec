"""Realism scores of a processed visit against hapsim's truth (issue #15); hapsvm's or drizzlepac's files.

    python benchmarks/bench_realism.py VISIT_DIR PRODUCT_DIR [--label hapsvm] [--noise-from DIR] [--out F]

prints (or writes) one JSON object. Everything is computed from the files alone, identically for
both pipelines: the truth (``truth_sources.ecsv``, ``truth_wcs/``, ``visit_truth.json``, the
exposures' primary headers, ``truth_psf/<FILTER>.fits`` when hapsim wrote one) and the products
(``hst_*_total_*_dr[zc].fits`` and its ``_point-cat.ecsv`` / ``_segment-cat.ecsv``, and the same
for every filter product). ``run_benchmarks.py realism`` runs it on hapsim presets.

Definitions
-----------
Positions. Truth positions are taken at the visit's epoch: the exposure-time-weighted mean of the
exposures' mid-times, moved by the proper motions with ``hapsim.epochs.true_positions`` when the
truth has them. Angles are measured on the tangent plane of the field centre. Catalog rows are
placed by their RA/DEC; rows with non-finite or -9999 positions are counted (``n_bad_position``)
and left out.

Coverage. An exposure covers a sky position when the position falls on one of its chips (the TRUE
chip WCS, ``truth_wcs/``) at least ``margin`` native pixels inside the chip edge: 2 px for
detections (metrics 1-3), the catalog's sky-annulus outer radius + 2 px for aperture photometry
(4-5), the background annulus of metric 6 + 2 px for 6. "The >= 2-exposure area" is where at
least 2 exposures (any filter for the total catalogs; of the filter itself for per-filter
metrics) cover. Its area is also reported from the total product's CTX (pixels with >= 2 context
bits set), for comparison.

Match radius. ``R = max(0.1", 1.5 x the total product's pixel)``. A row matches a truth STAR
(any brightness) within ``R``; it matches a truth GALAXY (any brightness) when it lies inside the
galaxy's ellipse of semi-major axis ``max(2 r_eff, R)``, semi-minor
``max(2 r_eff (1 - ellipticity), R)``, position angle ``theta`` (east of north) -- detections
anywhere on a galaxy's visible body (off-centre peaks, deblended fragments) are real, not spurious.

1. ``spurious``: for the TOTAL point catalog and the TOTAL segment catalog, every row (whatever its
   Flags) inside the >= 2-exposure area that matches no truth source. ``fraction`` = unmatched /
   rows in the area; also the counts, the same among rows with HAP Flags < 5 where the total catalog
   has per-filter flags (a row is "good" when any filter gives it Flags < 5), and
   ``chance_match_fraction``: the fraction of random positions of the same area that the rule
   matches to some truth source (how many spurious rows the rule forgives by coincidence).
2. ``completeness_sn10``, per filter: truth stars in the filter's >= 2-exposure area with expected
   aperture-2 S/N >= 10 in that filter, except the "buried" ones (``n_buried_excluded``): stars
   that do not saturate themselves but fall on a pixel flagged saturated (DQ 256: another
   star's saturated core or bleed column) in all but at most one of the filter's exposures
   covering them -- their light is not in the data (they are also left out of 3); ``fraction`` = those with a TOTAL point-catalog row within
   ``R`` (``fraction_good``: and with Flags < 5 in the filter catalog). ``any``: stars with S/N >= 10
   in at least one filter. Expected S/N (e-/s): ``S = F * EE2(F)`` with ``F`` the truth count rate and
   ``EE2`` as in 4; ``N^2 = S / t + sigma2^2 * W_ref / W``, where ``t`` is the summed exposure time of
   the filter's exposures covering the star, ``sigma2`` the noise of FluxAp2 MEASURED in the filter
   product (robust std of the catalog's aperture-2 photometry -- same apertures, annulus and sky
   estimator -- at random empty positions: correlated noise included), ``W`` the product's WHT at
   the star (3x3 median) and ``W_ref`` the median WHT at the empty positions.
3. ``positions_sn20``: truth stars in the >= 2-exposure area with expected S/N >= 20 in at least one
   filter and a total point-catalog row within ``R``: median distance row - truth in product pixels
   and in mas, the median (RA cos Dec, Dec) offset in mas (the registration) and the number of such
   stars without a row within ``R``; the same for isolated ones (no truth source brighter than 10%
   of the star's flux within 0.5"). ``all.after_registration``: the median error left after the
   best similarity transform from the rows to the truth (a diagnostic: the centroids' own error,
   without the registration's, which a reference catalog of a few stars limits) and that
   transform's shift, rotation and scale.
4. ``photometry.<filter>.pulls``: robust std (1.4826 x MAD about the median) of
   ``(FluxAp2 - F * EE2(F)) / FluxErrAp2`` over isolated, unsaturated truth stars with expected
   S/N >= 10 matched (within ``R``) in the filter point catalog; also by S/N bin. ``EE2(F)`` is the
   share of a star's count rate F that the catalog's FluxAp2 is expected to hold: the encircled
   energy of the DRIZZLED star in aperture 2 minus what the catalog's local sky takes away (its
   annulus 0.25"-0.50" holds some of the star's light; sigma-clipped mode of the pixels touching
   it, ``hapcore.catalogs.photometry``). The star is rendered on native pixels exactly as hapsim
   renders it (PSF, stamp truncation and normalisation: ``MixturePSF`` / ``FilePSF``), each native
   pixel dropped onto the output grid through the linear map native -> output pixels (true chip
   CD, product CD, pixfrac; square kernel) and integrated by exact-overlap photometry, averaged
   over the output grid's phase exactly (``response_kernel``) and over 1024 Sobol phases of the
   star on the native grid. The annulus estimate is the catalog's estimator applied to the
   drizzled star's annulus pixels (64 sampled phases) plus Gaussian noise of the product's
   per-pixel rms: linear (the mean PSF light of those pixels) while the star's light in its
   brightest annulus pixel is below 0.5 rms, Monte Carlo above, so ``EE2`` depends on F / rms
   (``ee_ap2.at_flux_over_rms``; ~0.5% between faint and bright stars on UVIS). PSF: hapsim's
   Gaussian mixture when the visit used it (``visit_truth.json`` psf model ``gaussian``; its
   truncated stamps are reproduced exactly), else ``truth_psf/<filter>.fits`` (the
   pixel-integrated PSF hapsim rendered with), else empirical: the median FluxAp2 / F of bright
   (S/N >= 100) isolated unsaturated stars (``ee_ap2.source`` says which; the empirical ratio and
   ``empirical_over_model`` are always reported as a cross-check).
   Isolated: no other truth source whose count rate exceeds 10% of the star's expected FluxAp2 noise
   within the annulus outer radius + 0.2" (+ 2 r_eff for galaxies), and no saturating star within
   3" (or its bleed length). Unsaturated: the star's central pixel stays below half the full well
   in every exposure.
   ``pulls_aperture_light`` is the same against ``F * EE(aperture 2)``, the light aperture 2
   holds, for catalogs that clean their sky of the PSF's annulus light (hapsvm's
   ``annulus_light_correction``); ``photometry.<filter>.convention.primary`` names the one that
   applies (aperture_light only when the catalog's meta says so; the S/N always uses EE2).
5. ``photometry.<filter>.bias_sn50``: median of ``MagAp2 - (m_true - 2.5 log10 EE2(F))`` (the
   aperture magnitude expected for the star) over the stars of 4 with S/N >= 50
   (``bias_sn50_aperture_light``: with ``EE(aperture 2)``); ``total_mag``:
   median of ``MagAp2 + aperture correction - m_true`` when the catalog carries one (a column, or
   the meta key ``Aperture correction (mag)``), else skipped.
6. ``aperture_flux``, per filter: our own photutils photometry of the filter DRIZZLED image at the
   true positions of bright (expected S/N >= 100), unsaturated stars, in a radius 0.2" aperture
   (0.4" for WFC3/IR and WFPC2), minus the sigma-clipped median of the pixels (centres) of a 1.0"-1.5"
   annulus (1.2"-2.0" for IR/WFPC2), over ``F * EE(r)`` of the drizzled star model of 4 (aperture
   sum minus the model's own light in that annulus, a pixel-centre mean). Isolation: no truth source brighter than 0.05%
   of the star within r + 0.3", none brighter than 1% within the outer annulus radius + 0.3", no
   saturating star within 3"; WHT > 0 over the whole aperture. Reported: the median ratio, its
   standard error (1.2533 x robust std / sqrt n) and n; target |median - 1| <= 0.002.
7. ``galaxy_flux``, per filter segment catalog: ``FluxSegment / F`` for truth galaxies matched
   (nearest row inside the ellipse of 1 r_eff, at least ``R``) and isolated (no other truth source
   brighter than 2% of it within 3 (r_eff + r_eff_other) + 0.3"), in the filter's >= 2-exposure
   area; median over galaxies with S/N_gal >= 20 and >= 50, where
   ``S/N_gal = F / sqrt(F / t + sigma2^2 * max(1, A_gal / A2))``, ``A_gal = pi (2 r_eff)^2 (1 - e)``;
   ``median_ratio_rows_on_galaxy``: the same with FluxSegment summed over every row whose centre
   lies inside the galaxy's 2 r_eff ellipse (a galaxy shredded by the deblending, summed back) and
   ``median_rows_on_galaxy`` how many rows that is.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS
from scipy.spatial import cKDTree

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

FILTER_RE = re.compile(r"^hst_.*_(f\d+[a-z]+\d*)_[a-z0-9]{6}_dr[zc]\.fits$")
TOTAL_RE = re.compile(r"^hst_.*_total_[a-z0-9]{6}_dr[zc]\.fits$")
CONFIG_FILES = {"wfc3/uvis": "wfc3_uvis.json", "wfc3/ir": "wfc3_ir.json", "acs/wfc": "acs_wfc.json",
                "acs/hrc": "acs_hrc.json", "acs/sbc": "acs_sbc.json", "wfpc2": "wfpc2_pc.json"}
N_REALISATIONS = 64
SUBSAMPLE = 8
MISSING = -9999.0


# ----------------------------------------------------------------------------- small helpers

def _r(value, nd=4):
    if value is None:
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        return value
    return round(v, nd) if np.isfinite(v) else None


def _robust_std(values) -> float:
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(v - np.median(v))))


def _tangent(ra, dec, ra0, dec0):
    """Gnomonic projection, arcsec (xi east, eta north)."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    ra0, dec0 = np.radians(ra0), np.radians(dec0)
    cosc = np.sin(dec0) * np.sin(dec) + np.cos(dec0) * np.cos(dec) * np.cos(ra - ra0)
    xi = np.cos(dec) * np.sin(ra - ra0) / cosc
    eta = (np.cos(dec0) * np.sin(dec) - np.sin(dec0) * np.cos(dec) * np.cos(ra - ra0)) / cosc
    return np.degrees(xi) * 3600.0, np.degrees(eta) * 3600.0


def _col(table: Table, *names):
    """First column of `names` (case-insensitive) as float with -9999 -> NaN, or None."""
    lower = {c.lower(): c for c in table.colnames}
    for name in names:
        if name.lower() in lower:
            v = np.array(table[lower[name.lower()]], dtype=float)
            v[v <= MISSING + 0.5] = np.nan
            return v
    return None


def _flags_of(table: Table):
    lower = {c.lower(): c for c in table.colnames}
    if "flags" in lower:
        return np.asarray(table[lower["flags"]], dtype=np.int64)
    per_filter = [c for c in table.colnames if c.lower().startswith("flags_")]
    if per_filter:   # total catalog: a row is good when any filter gives it Flags < 5
        return np.min(np.column_stack([np.asarray(table[c], dtype=np.int64) for c in per_filter]),
                      axis=1)
    return None


def _popcount(ctx) -> np.ndarray:
    """Number of context bits set per pixel (2-D CTX, or 3-D for more than 32 inputs)."""
    ctx = np.asarray(ctx)
    planes = ctx if ctx.ndim == 3 else ctx[None]
    out = np.zeros(planes.shape[1:], dtype=np.int32)
    for plane in planes:
        x = plane.astype(np.uint32)
        x = x - ((x >> np.uint32(1)) & np.uint32(0x55555555))
        x = (x & np.uint32(0x33333333)) + ((x >> np.uint32(2)) & np.uint32(0x33333333))
        x = (x + (x >> np.uint32(4))) & np.uint32(0x0F0F0F0F)
        out += ((x * np.uint32(0x01010101)) >> np.uint32(24)).astype(np.int32)
    return out


def _spec(detector):
    from hapsim.detectors import get_detector, normalize_detector_name

    return get_detector(normalize_detector_name(detector))


def catalog_parameters(detector: str) -> dict:
    """Aperture radii, sky annulus and sky estimator of the catalogs (configs/, as drizzlepac)."""
    from configs import read_config_text

    params = dict(json.loads(read_config_text("any/catalog_generation.json"))["base"])
    name = CONFIG_FILES.get(detector)
    if name:
        params.update(json.loads(read_config_text(name)).get("catalog_generation", {}))
    return {"aperture_1": float(params["aperture_1"]), "aperture_2": float(params["aperture_2"]),
            "sky_in": float(params["skyannulus_arcsec"]),
            "sky_out": float(params["skyannulus_arcsec"]) + float(params["dskyannulus_arcsec"]),
            "salgorithm": str(params.get("salgorithm", "mode"))}


# ----------------------------------------------------------------------------- the visit

@dataclass
class Exposure:
    root: str
    path: Path
    filter: str
    exptime: float
    mid_mjd: float
    chips: list = field(default_factory=list)     # (astropy WCS, (ny, nx))
    extvers: list = field(default_factory=list)   # the SCI extension version of each chip


def _truth_chip_wcs(visit: Path, root: str, extver: int):
    hdr_path = visit / "truth_wcs" / f"{root}_sci{extver}.hdr"
    header = fits.Header.fromtextfile(str(hdr_path))
    shape = (int(header.get("NAXIS2", 0)), int(header.get("NAXIS1", 0)))
    fits_path = hdr_path.with_suffix(".fits")
    try:   # the complete truth (lookup tables included) where hapsim has it
        from hapsim import distortion

        if fits_path.exists() and hasattr(distortion, "truth_wcs"):
            return distortion.truth_wcs(fits_path), shape
    except Exception:  # noqa: BLE001, S110 - fall back to the SIP header
        pass
    return WCS(header), shape


def _filter_of(header) -> str:
    for key in ("FILTER", "FILTER1", "FILTER2", "FILTNAM1"):
        value = str(header.get(key, "")).strip()
        if value and not value.upper().startswith("CLEAR") and value.upper() != "N/A":
            return value.lower()
    return "unknown"


def load_exposures(visit: Path, summary: dict) -> list[Exposure]:
    names = summary.get("exposures") or sorted(p.name for p in visit.glob("*_fl[tc].fits"))
    out = []
    for name in names:
        path = visit / name
        h0 = fits.getheader(path, 0)
        root = str(h0.get("ROOTNAME", name.split("_")[0])).lower()
        t = float(h0["EXPTIME"])
        exp = Exposure(root, path, _filter_of(h0), t, float(h0.get("EXPSTART", 0.0)) + t / 2 / 86400)
        for hdr in sorted((visit / "truth_wcs").glob(f"{root}_sci*.hdr")):
            extver = int(hdr.stem.rsplit("sci", 1)[1])
            exp.chips.append(_truth_chip_wcs(visit, root, extver))
            exp.extvers.append(extver)
        out.append(exp)
    return out


def on_saturated_pixel(exposures: list[Exposure], ra, dec, bit: int = 256) -> np.ndarray:
    """(n_exposures, n) boolean: position i falls on a pixel flagged saturated (DQ ``bit``) in
    exposure k (nearest native pixel, true chip WCS)."""
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    out = np.zeros((len(exposures), ra.size), bool)
    ok = np.isfinite(ra) & np.isfinite(dec)
    for k, exp in enumerate(exposures):
        with fits.open(exp.path, memmap=True) as hdul:
            for (wcs, (ny, nx)), extver in zip(exp.chips, exp.extvers):
                if ("DQ", extver) not in hdul or hdul["DQ", extver].data is None:
                    continue
                with np.errstate(all="ignore"):
                    lx, ly = wcs.wcs_world2pix(ra, dec, 0)
                cand = ok & (lx > -300) & (ly > -300) & (lx < nx + 300) & (ly < ny + 300)
                if not cand.any():
                    continue
                with np.errstate(all="ignore"):
                    x, y = wcs.all_world2pix(ra[cand], dec[cand], 0, quiet=True, maxiter=30)
                ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
                inside = (ix >= 0) & (iy >= 0) & (ix < nx) & (iy < ny)
                dq = hdul["DQ", extver].data
                idx = np.flatnonzero(cand)[inside]
                out[k, idx] |= (np.asarray(dq[iy[inside], ix[inside]]).astype(np.int64) & bit) > 0
    return out


def chip_of(exposure: Exposure, ra, dec) -> np.ndarray:
    """Index (into ``exposure.chips``) of the chip each position falls on; -1 on none."""
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    out = np.full(ra.size, -1)
    ok = np.isfinite(ra) & np.isfinite(dec)
    for c, (wcs, (ny, nx)) in enumerate(exposure.chips):
        with np.errstate(all="ignore"):
            lx, ly = wcs.wcs_world2pix(ra, dec, 0)
        cand = ok & (out < 0) & (lx > -300) & (ly > -300) & (lx < nx + 300) & (ly < ny + 300)
        if not cand.any():
            continue
        with np.errstate(all="ignore"):
            x, y = wcs.all_world2pix(ra[cand], dec[cand], 0, quiet=True, maxiter=30)
        inside = (x >= -0.5) & (y >= -0.5) & (x <= nx - 0.5) & (y <= ny - 0.5)
        out[np.flatnonzero(cand)[inside]] = c
    return out


def coverage(exposures: list[Exposure], ra, dec, margin_px: float) -> np.ndarray:
    """(n_exposures, n) boolean: exposure k covers position i (margin native px inside a chip)."""
    ra, dec = np.atleast_1d(np.asarray(ra, float)), np.atleast_1d(np.asarray(dec, float))
    cov = np.zeros((len(exposures), ra.size), bool)
    ok = np.isfinite(ra) & np.isfinite(dec)
    for k, exp in enumerate(exposures):
        for wcs, (ny, nx) in exp.chips:
            # quick linear pre-selection, then the full distortion for candidates
            with np.errstate(all="ignore"):
                lx, ly = wcs.wcs_world2pix(ra, dec, 0)
            cand = ok & (lx > -300) & (ly > -300) & (lx < nx + 300) & (ly < ny + 300) & ~cov[k]
            if not cand.any():
                continue
            with np.errstate(all="ignore"):
                x, y = wcs.all_world2pix(ra[cand], dec[cand], 0, quiet=True, maxiter=30)
            inside = ((x >= margin_px - 0.5) & (y >= margin_px - 0.5)
                      & (x <= nx - 0.5 - margin_px) & (y <= ny - 0.5 - margin_px))
            idx = np.flatnonzero(cand)
            cov[k, idx[inside]] = True
    return cov


# ----------------------------------------------------------------------------- PSF model

class MixturePSF:
    """hapsim's Gaussian-mixture PSF, rendered exactly as ``hapsim.render.render_sources`` does:
    pixel-integrated stamps of half size 15 (40 for stars above ``bright_counts`` electrons),
    each normalised to the star's whole flux."""

    source = "hapsim_gaussian_mixture"

    def __init__(self, spec):
        from hapsim.psf import psf_for_detector
        from hapsim.render import render_sources

        self.psf = psf_for_detector(spec)
        defaults = {k: p.default for k, p in inspect.signature(render_sources).parameters.items()}
        self.halves = {"small": int(defaults.get("star_half_size", 15)),
                       "bright": int(defaults.get("bright_half_size", 40))}
        self.bright_counts = float(defaults.get("bright_counts", 3.0e5))
        self.key = ("mixture", tuple(self.psf.sigmas), tuple(self.psf.weights))

    def regime(self, electrons):
        return np.where(np.asarray(electrons) >= self.bright_counts, "bright", "small")

    @property
    def regimes(self):
        return list(self.halves)

    def stamp(self, dx, dy, regime, half=None):
        return self.psf.stamps([dx], [dy], self.halves[regime])[0]

    def stamps(self, dx, dy, regime, half=None):
        """As rendered: the regime's stamp size whatever ``half`` asks."""
        return self.psf.stamps(dx, dy, self.halves[regime])


class FilePSF:
    """``truth_psf/<filter>.fits``: the pixel-integrated, oversampled PSF hapsim rendered with
    (``PIXINTEG = T``; ``hapsim.psfio``). Stars are its stamps normalised to the whole modelled
    extent, as ``hapsim.render`` renders an optical PSF (core stamp + wings = the star's counts).
    Read with ``hapsim.psfio.read_psf_file`` when hapsim has it, else sampled here."""

    source = "truth_psf"

    def __init__(self, path: Path, spec, filt: str):
        self.path = path
        self.psf = None
        try:
            from hapsim.psfio import read_psf_file

            self.psf = read_psf_file(path, spec, filt.upper(), pixel_scale=spec.idcscale)
            self.max_half = self.psf.half_extent - 1
            self.decided_by = "hapsim.psfio.read_psf_file"
            # an optical or user PSF (core stamp + far wings) is rendered unnormalised: values
            # as in the file, whose every phase sums to 1 over the whole period (+ wings)
            model = str(fits.getheader(path).get("PSFMODEL", "")).strip().lower()
            self.unit_period = model not in ("", "gaussian")
        except ImportError:
            with fits.open(path) as hdul:
                hdu = next(h for h in hdul if h.data is not None and np.ndim(h.data) == 2)
                img = np.nan_to_num(np.asarray(hdu.data, float))
                oversamp = round(float(hdu.header.get("OVERSAMP", hdul[0].header.get("OVERSAMP", 1))))
            self.image, self.oversamp = img / img.sum() * oversamp ** 2, oversamp
            self.center = img.shape[0] // 2
            self.max_half = self.center // oversamp - 1
            self.decided_by = "sampled here (no hapsim.psfio)"
        self.unit_period = getattr(self, "unit_period", False)
        self.key = ("file", str(path))
        self._norm = {}

    def regime(self, electrons):
        return np.full(np.shape(electrons), "file", dtype=object)

    @property
    def regimes(self):
        return ["file"]

    def _stamp(self, dx, dy, half):
        if self.psf is not None:
            return self.psf.stamps([dx], [dy], half, normalize=False)[0]
        from scipy.ndimage import map_coordinates

        o = self.oversamp
        off = np.arange(-half, half + 1, dtype=float)
        gx, gy = np.broadcast_arrays(self.center + (off[None, :] - dx) * o,
                                     self.center + (off[:, None] - dy) * o)
        vals = map_coordinates(self.image, [gy.ravel(), gx.ravel()], order=1, cval=0.0)
        return vals.reshape(gx.shape)

    def stamp(self, dx, dy, regime, half=None):
        half = self.max_half if half is None else min(int(half), self.max_half)
        key = (round(dx, 6), round(dy, 6))
        if key not in self._norm:
            self._norm[key] = (1.0 if self.unit_period
                               else float(self._stamp(dx, dy, self.max_half).sum()))
        return self._stamp(dx, dy, half) / self._norm[key]

    def stamps(self, dx, dy, regime, half=None):
        return np.array([self.stamp(a, b, regime, half) for a, b in zip(dx, dy)])


def native_to_output_matrix(chip_wcs: WCS, out_wcs: WCS) -> np.ndarray:
    """2x2 map of native pixel offsets to output pixel offsets (true chip CD, product CD)."""
    cd_in = chip_wcs.pixel_scale_matrix
    cd_out = out_wcs.pixel_scale_matrix
    return np.linalg.solve(cd_out, cd_in)


def drizzle_star(native: np.ndarray, dx: float, dy: float, m_inv: np.ndarray, det_m: float,
                 pixfrac: float, half_out: int, ux: float, uy: float, k: int | None = None,
                 jitter=(0.5, 0.5)):
    """A star's native-pixel stamp dropped onto the output grid (square kernel, pixfrac).

    The star sits at (dx, dy) from the native stamp's central pixel centre and at (ux, uy) from
    the output stamp's central pixel centre; returns the output stamp (flux per output pixel).
    Each output pixel is integrated on k x k points; ``jitter`` (in [0, 1), per realisation)
    moves those points inside their cells so that the rasterisation of the drop edges is
    unbiased on average (it matters when the grids are aligned)."""
    k = SUBSAMPLE if k is None else k
    nh = native.shape[0] // 2
    n = (2 * half_out + 1) * k
    gx = (np.arange(n) + jitter[0]) / k - (half_out + 0.5)
    gy = (np.arange(n) + jitter[1]) / k - (half_out + 0.5)
    x = gx[None, :] - ux
    y = gy[:, None] - uy
    vx = m_inv[0, 0] * x + m_inv[0, 1] * y + dx
    vy = m_inv[1, 0] * x + m_inv[1, 1] * y + dy
    nx, ny = np.rint(vx), np.rint(vy)
    inside = ((np.abs(vx - nx) <= pixfrac / 2) & (np.abs(vy - ny) <= pixfrac / 2)
              & (np.abs(nx) <= nh) & (np.abs(ny) <= nh))
    val = np.zeros(vx.shape)
    val[inside] = native[ny[inside].astype(int) + nh, nx[inside].astype(int) + nh]
    val /= pixfrac ** 2 * det_m
    size = 2 * half_out + 1
    return val.reshape(size, k, size, k).mean(axis=(1, 3))


@dataclass
class StarModel:
    """The drizzled star of one PSF regime in one filter product (per unit flux)."""

    ee_ap2_raw: float
    ann_rows: np.ndarray          # (n_real, m): annulus pixel values, NaN outside
    area2: float
    ee6: float                    # aperture r6 minus the model's light in the bg annulus
    ee6_raw: float
    peak_native: float
    spread_ee_ap2: float
    n_phases: int = 0
    stderr_ee_ap2: float = 0.0
    _grid: np.ndarray = None
    _resp: np.ndarray = None
    _linear: float = 0.0
    _x_linear: float = 1.0

    def sky_response(self, salgorithm: str = "mode", seed: int = 0, n_noise: int = 16):
        """Expected catalog sky estimate / F as a function of F / (per-pixel rms).

        The annulus pixels of the drizzled star times F plus unit Gaussian noise, through the
        catalog's estimator (3-sigma clipped, ``clipped_stats_rows``); the estimate of the same
        noise alone is subtracted (common random numbers) and every noise draw is used with
        both signs (antithetic). Where the star's light in its brightest annulus pixel stays
        below 0.5 rms the estimator responds linearly -- its expectation moves by the mean PSF
        light of the annulus pixels (exchangeability) -- and that exact value is used (the
        Monte Carlo is noisy there); above, the Monte Carlo."""
        from hapcore.catalogs.photometry import clipped_stats_rows

        rng = np.random.default_rng(seed)
        rows = self.ann_rows
        base = np.repeat(rows, 2 * n_noise, axis=0)
        valid = np.isfinite(base)
        noise = rng.normal(size=(rows.shape[0] * n_noise, rows.shape[1]))
        noise = np.concatenate([noise, -noise]).reshape(2, rows.shape[0], n_noise, rows.shape[1])
        noise = noise.transpose(1, 0, 2, 3).reshape(base.shape)
        self._linear = float(np.nanmean(np.nanmean(rows, axis=1)))
        self._x_linear = 0.5 / float(np.nanmean(np.nanmax(rows, axis=1)))

        def estimate(values):
            mean, median, _, _ = clipped_stats_rows(np.where(valid, values, np.nan), sigma=3.0)
            return {"mode": 3 * median - 2 * mean, "median": median, "mean": mean}[salgorithm]

        zero = estimate(noise)
        signal = np.where(valid, base, 0.0)
        grid = np.logspace(0, 7, 29)
        self._grid = grid
        self._resp = np.array([float(np.mean(estimate(x * signal + noise) - zero)) / x
                               for x in grid])
        return self

    def sky_per_flux(self, flux_over_rms):
        x = np.asarray(flux_over_rms, float)
        out = np.interp(np.log10(np.clip(x, 1.0, self._grid[-1])), np.log10(self._grid), self._resp)
        return np.where(x < self._x_linear, self._linear, out)

    def ee_ap2(self, flux_over_rms):
        return self.ee_ap2_raw - self.area2 * self.sky_per_flux(flux_over_rms)


def response_kernel(m_mat: np.ndarray, pixfrac: float, r_in: float, r_out: float, *,
                    n_boxes: int = 2, k: int = 31):
    """G(c): the phase-averaged share of a native pixel's light, dropped with its centre at
    offset c (output pixels) from a star, that exact-overlap photometry counts in the region
    ``r_in <= r <= r_out`` (a disk when r_in = 0) of the drizzled image.

    The drop is the native pixel's parallelogram (``m_mat`` x pixfrac); the output grid adds its
    pixel (the value of a pixel is the mean light over it) and, for exact-overlap photometry of a
    pixelated image averaged over where the grid falls, a second box (``n_boxes = 2``; 1 for a
    pixel-centre sample such as a median over pixel centres). Computed once on a grid of k
    points per output pixel with 4 x 4 sub-samples per point; returns (G, half extent in
    output pixels, k)."""
    from scipy.ndimage import uniform_filter
    from scipy.signal import fftconvolve

    if k % 2 == 0:
        raise ValueError("k must be odd (centred box filters)")
    corners = m_mat @ (np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]).T * pixfrac / 2)
    reach = float(np.abs(corners).max()) + 0.5 * n_boxes + 0.5
    half = int(np.ceil(r_out + reach)) + 1
    n = 2 * half * k + 1
    u = (np.arange(n) - half * k) / k
    sub = ((np.arange(4) + 0.5) / 4 - 0.5) / k

    def supersampled(test):
        acc = np.zeros((n, n))
        for sy in sub:
            for sx in sub:
                acc += test(u[None, :] + sx, u[:, None] + sy)
        return acc / 16.0

    region = supersampled(lambda x, y: (np.hypot(x, y) <= r_out) & (np.hypot(x, y) >= r_in))
    m_inv = np.linalg.inv(m_mat)
    kh = int(np.ceil(np.abs(corners).max() * k)) + 1
    v = np.arange(-kh, kh + 1) / k
    drop = np.zeros((v.size, v.size))
    for sy in sub:
        for sx in sub:
            x, y = v[None, :] + sx, v[:, None] + sy
            a = m_inv[0, 0] * x + m_inv[0, 1] * y
            b = m_inv[1, 0] * x + m_inv[1, 1] * y
            drop += (np.abs(a) <= pixfrac / 2) & (np.abs(b) <= pixfrac / 2)
    drop /= drop.sum()
    pad = (n_boxes * k) // 2 + 1
    kern = np.pad(drop, pad)
    for _ in range(n_boxes):
        kern = uniform_filter(kern, size=k, mode="constant")
    kern /= kern.sum()
    g = fftconvolve(region, kern[::-1, ::-1], mode="same")
    return g, half, k


def _apply_kernel(stamps: np.ndarray, dx, dy, m_mat, kernel) -> np.ndarray:
    """Sum over native pixels of stamp x G(M (n - phase)) for every stamp."""
    from scipy.ndimage import map_coordinates

    g, half, k = kernel
    nh = stamps.shape[1] // 2
    off = np.arange(-nh, nh + 1, dtype=float)
    out = np.empty(len(stamps))
    for i, (st, a, b) in enumerate(zip(stamps, dx, dy)):
        nx, ny = off[None, :] - a, off[:, None] - b
        cx = m_mat[0, 0] * nx + m_mat[0, 1] * ny
        cy = m_mat[1, 0] * nx + m_mat[1, 1] * ny
        ix, iy = cx * k + half * k, cy * k + half * k
        use = (np.abs(cx) < half) & (np.abs(cy) < half) & (st != 0)
        vals = map_coordinates(g, [iy[use], ix[use]], order=1, mode="constant", cval=0.0)
        out[i] = float(np.sum(st[use] * vals))
    return out


def build_star_model(provider, regime, m_mat, pixfrac, out_scale, radii_arcsec: dict,
                     salgorithm: str, n_real: int | None = None) -> StarModel:
    """The drizzled star of one PSF regime. Encircled energies: the rendered star's native
    pixels through `response_kernel` (output-grid phase averaged exactly), averaged over
    16 x ``n_real`` Sobol phases of the star on the native grid. The catalog annulus' pixel
    values (for the sky-estimator response): ``n_real`` drizzled stamps (`drizzle_star`,
    random phases on both grids)."""
    from scipy.stats import qmc

    from hapcore.catalogs.photometry import annulus_pixel_stack

    n_real = N_REALISATIONS if n_real is None else n_real
    r2 = radii_arcsec["aperture_2"] / out_scale
    r_in, r_out = radii_arcsec["sky_in"] / out_scale, radii_arcsec["sky_out"] / out_scale
    r6 = radii_arcsec["r6"] / out_scale
    b1, b2 = radii_arcsec["bg6"][0] / out_scale, radii_arcsec["bg6"][1] / out_scale
    m_inv = np.linalg.inv(m_mat)
    det_m = abs(float(np.linalg.det(m_mat)))

    def reach(half_out):   # native pixels reaching the corners of an output stamp
        return int(np.ceil((half_out + 3) * np.sqrt(2) * np.abs(m_inv).max())) + 2

    k2 = response_kernel(m_mat, pixfrac, 0.0, r2)
    k6 = response_kernel(m_mat, pixfrac, 0.0, r6)
    kbg = response_kernel(m_mat, pixfrac, b1, b2, n_boxes=1, k=7)
    bg_area = np.pi * (b2 ** 2 - b1 ** 2)
    phases = qmc.Sobol(d=2, scramble=True, seed=12345).random(16 * n_real) - 0.5
    a2, a6, bg = [], [], []
    for start in range(0, len(phases), 256):
        dx, dy = phases[start:start + 256, 0], phases[start:start + 256, 1]
        st = provider.stamps(dx, dy, regime, reach(int(np.ceil(r6)) + 2))
        a2.append(_apply_kernel(st, dx, dy, m_mat, k2))
        a6.append(_apply_kernel(st, dx, dy, m_mat, k6))
        if start == 0:   # tiny; a few phases do
            stl = provider.stamps(dx[:16], dy[:16], regime, reach(int(np.ceil(b2)) + 2))
            bg.append(_apply_kernel(stl, dx[:16], dy[:16], m_mat, kbg) / bg_area)
    a2, a6, bg = np.concatenate(a2), np.concatenate(a6), np.concatenate(bg)
    # the catalog's annulus pixels, as the catalog sees them (both grids' phases sampled)
    half_a = int(np.ceil(r_out)) + 2
    rows = []
    for dx, dy, ux, uy, jx, jy in (qmc.Sobol(d=6, scramble=True, seed=777).random(n_real)
                                   - np.array([.5, .5, .5, .5, 0, 0])):
        native = provider.stamp(dx, dy, regime, reach(half_a))
        out = drizzle_star(native, dx, dy, m_inv, det_m, pixfrac, half_a, ux, uy, jitter=(jx, jy))
        rows.append(annulus_pixel_stack(out, np.array([(half_a + ux, half_a + uy)]), r_in, r_out)[0])
    model = StarModel(ee_ap2_raw=float(a2.mean()), ann_rows=np.asarray(rows), area2=np.pi * r2 ** 2,
                      ee6=float(a6.mean() - np.pi * r6 ** 2 * bg.mean()), ee6_raw=float(a6.mean()),
                      peak_native=float(provider.stamp(0.0, 0.0, regime, 3).max()),
                      spread_ee_ap2=float(a2.std()), n_phases=len(a2),
                      stderr_ee_ap2=float(a2.std() / np.sqrt(len(a2))))
    return model.sky_response(salgorithm)


# ----------------------------------------------------------------------------- products

def similarity_residuals(cat_xy, true_xy):
    """Best similarity transform (a, b, shift x, shift y: x' = a x - b y + sx, y' = b x + a y
    + sy) from catalog to truth positions, and the residual vectors it leaves (input units)."""
    a, b = np.asarray(cat_xy, float), np.asarray(true_xy, float)
    zeros, ones = np.zeros(len(a)), np.ones(len(a))
    design = np.vstack([np.column_stack([a[:, 0], -a[:, 1], ones, zeros]),
                        np.column_stack([a[:, 1], a[:, 0], zeros, ones])])
    target = np.r_[b[:, 0], b[:, 1]]
    p, *_ = np.linalg.lstsq(design, target, rcond=None)
    return p, (design @ p - target).reshape(2, -1).T


def _after_similarity(cat_xy: np.ndarray, true_xy: np.ndarray, scale: float) -> dict:
    """Position errors (mas) left after the best similarity transform (shift, rotation, scale)
    from catalog to truth positions (tangent-plane arcsec): the centroids' own error, without
    the registration's, which a reference catalog of a few stars limits (``deep``: 7 Gaia-like
    stars in the footprint, errors 1-10 mas at the visit's epoch)."""
    if len(cat_xy) < 3:
        return {"n": int(len(cat_xy))}
    p, left = similarity_residuals(cat_xy, true_xy)
    dist = np.hypot(left[:, 0], left[:, 1]) * 1000.0
    return {"median_error_mas": _r(np.median(dist), 2),
            "median_error_pix": _r(np.median(dist) / 1000.0 / scale, 4),
            "registration_shift_mas": [_r(-v * 1000.0, 2) for v in p[2:]],
            "registration_rotation_arcsec": _r(-np.degrees(np.arctan2(p[1], p[0])) * 3600.0, 3),
            "registration_scale_minus_1": float(f"{np.hypot(p[0], p[1]) - 1.0:.3g}")}


def _sky_positions(cat: Table):
    ra, dec = _col(cat, "RA"), _col(cat, "DEC")
    if ra is None or dec is None:
        return np.full(len(cat), np.nan), np.full(len(cat), np.nan)
    return ra, dec


def find_products(products: Path) -> dict:
    totals = sorted(p for p in products.glob("hst_*_dr[zc].fits") if TOTAL_RE.match(p.name))
    filters = {}
    for p in sorted(products.glob("hst_*_dr[zc].fits")):
        m = FILTER_RE.match(p.name)
        if m:
            filters[m.group(1)] = p
    return {"total": totals[0] if totals else None, "filters": filters}


def _cat_path(drz: Path, kind: str) -> Path:
    return drz.with_name(drz.name.rsplit("_", 1)[0] + f"_{kind}-cat.ecsv")


def _read_cat(path: Path):
    if not path.exists():
        return None
    return Table.read(path, format="ascii.ecsv")


@dataclass
class Product:
    path: Path
    sci: np.ndarray
    wht: np.ndarray
    ctx: np.ndarray | None
    wcs: WCS
    scale: float
    pixfrac: float
    header: fits.Header

    @classmethod
    def read(cls, path: Path, with_ctx=False):
        with fits.open(path, memmap=False) as h:
            sci = np.asarray(h["SCI"].data, float)
            wht = np.asarray(h["WHT"].data, np.float32)
            ctx = np.asarray(h["CTX"].data) if with_ctx and "CTX" in h else None
            wcs = WCS(h["SCI"].header)
            prim = h[0].header
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix))) * 3600)
        pixfrac = float(prim.get("D001PIXF", 1.0) or 1.0)
        return cls(path, sci, wht, ctx, wcs, scale, pixfrac, prim)

    def pix(self, ra, dec):
        x, y = self.wcs.all_world2pix(np.asarray(ra, float), np.asarray(dec, float), 0)
        return np.asarray(x), np.asarray(y)

    def wht_at(self, x, y, half=1):
        ny, nx = self.wht.shape
        xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
        out = np.zeros(np.size(x))
        ok = (xi >= half) & (yi >= half) & (xi < nx - half) & (yi < ny - half)
        for k in np.flatnonzero(ok):
            out[k] = np.median(self.wht[yi[k] - half:yi[k] + half + 1, xi[k] - half:xi[k] + half + 1])
        return out


# ----------------------------------------------------------------------------- the scorer

class Scorer:
    def __init__(self, visit: Path, products: Path, label: str | None = None,
                 noise_from: Path | None = None, register: bool = False):
        self.visit, self.products = Path(visit), Path(products)
        self.label = label
        self.noise_from = Path(noise_from) if noise_from else None
        self.summary = json.loads((self.visit / "visit_truth.json").read_text())
        self.detector = self.summary["detector"]
        self.spec = _spec(self.detector)
        self.native = float(self.spec.idcscale)
        self.params = catalog_parameters(self.detector)
        self.exposures = load_exposures(self.visit, self.summary)
        self.filters = sorted({e.filter for e in self.exposures})
        truth = Table.read(self.visit / "truth_sources.ecsv")
        self.truth = truth
        t_all = np.array([e.exptime for e in self.exposures])
        self.epoch_mjd = float(np.sum(t_all * [e.mid_mjd for e in self.exposures]) / t_all.sum())
        self.epoch_note = "truth positions as tabulated"
        ra, dec = np.asarray(truth["ra"], float), np.asarray(truth["dec"], float)
        if "pmra" in truth.colnames and "pmdec" in truth.colnames:
            try:
                from hapsim.epochs import true_positions

                ra, dec = true_positions(truth, self.epoch_mjd)
                self.epoch_note = (f"proper motions applied to MJD {self.epoch_mjd:.4f} "
                                   "(hapsim.epochs.true_positions)")
            except Exception as exc:  # noqa: BLE001
                self.epoch_note = f"proper motions not applied ({exc!r})"
        self.ra, self.dec = np.asarray(ra, float), np.asarray(dec, float)
        self.ra0, self.dec0 = float(np.median(self.ra)), float(np.median(self.dec))
        self.txy = np.column_stack(_tangent(self.ra, self.dec, self.ra0, self.dec0))
        self.is_star = np.asarray(truth["type"]) == "star"
        r_eff = np.asarray(truth["r_eff"], float) if "r_eff" in truth.colnames else np.zeros(len(truth))
        self.r_eff = np.where(np.isfinite(r_eff), r_eff, 0.0)
        ell = np.asarray(truth["ellipticity"], float) if "ellipticity" in truth.colnames else np.zeros(len(truth))
        self.ell = np.where(np.isfinite(ell), ell, 0.0)
        theta = np.asarray(truth["theta"], float) if "theta" in truth.colnames else np.zeros(len(truth))
        self.theta = np.where(np.isfinite(theta), theta, 0.0)
        self.tree = cKDTree(self.txy)
        self.prod = find_products(self.products)
        if self.prod["total"] is None:
            raise FileNotFoundError(f"no total drizzled product in {self.products}")
        self.total = Product.read(self.prod["total"], with_ctx=True)
        self.R = max(0.1, 1.5 * self.total.scale)
        self.models: dict = {}
        self.psf_info: dict = {}
        self.registration = self.register_truth() if register else None
        #: per-star values behind the medians and spreads (pulls, aperture-flux ratios, matched
        #: positions), for pooling several visits (benchmarks/pool_realism.py)
        self.samples: dict = {}

    # -- optional registration (a pipeline whose alignment failed) ---------------------------
    def register_truth(self, max_offset=3.0) -> dict:
        """Move the truth into the product's frame: an affine fit (tangent plane) of the total
        point catalog's rows on bright isolated truth stars, matched within ``max_offset`` arcsec
        and then iteratively within 0.3". Every metric is then computed in the pipeline's own
        frame: what its catalogs and images would score had its alignment succeeded. Coverage
        uses the moved positions too (off by the registration, ~1" at most, near chip edges)."""
        cat = _read_cat(_cat_path(self.prod["total"], "point"))
        if cat is None:
            return {"error": "no total point catalog"}
        _, _, cxy, ok = self.cat_xy(cat)
        rate = np.max([np.asarray(self.truth[c], float) for c in self.truth.colnames
                       if c.startswith("countrate_")], axis=0)
        stars = np.flatnonzero(self.is_star)
        bright = stars[np.argsort(-rate[stars])][:1000]
        # isolated: no truth source brighter than 10% of the star within max_offset
        cand = np.array([k for k in bright
                         if not any(j != k and rate[j] > 0.1 * rate[k]
                                    for j in self.tree.query_ball_point(self.txy[k], r=max_offset))],
                        dtype=int)[:300]
        ctree = cKDTree(cxy[ok])
        d, i = ctree.query(self.txy[cand], distance_upper_bound=max_offset)
        hit = np.isfinite(d)
        if hit.sum() < 6:
            return {"error": f"only {int(hit.sum())} bright isolated stars matched"}
        t, c = self.txy[cand[hit]], cxy[ok][i[hit]]
        shift = np.median(c - t, axis=0)
        coef = np.vstack([np.eye(2), shift])          # c = [t, 1] @ coef
        for radius in (1.0, 0.3, 0.3, 0.3):
            moved = np.column_stack([self.txy[cand], np.ones(len(cand))]) @ coef
            d, i = ctree.query(moved, distance_upper_bound=radius)
            hit = np.isfinite(d)
            if hit.sum() < 6:
                return {"error": f"registration lost its matches at {radius} arcsec"}
            a = np.column_stack([self.txy[cand[hit]], np.ones(int(hit.sum()))])
            coef, *_ = np.linalg.lstsq(a, cxy[ok][i[hit]], rcond=None)
        res = cxy[ok][i[hit]] - a @ coef
        m = coef[:2].T
        new = np.column_stack([self.txy, np.ones(len(self.txy))]) @ coef
        # back to RA/Dec (inverse gnomonic about ra0, dec0)
        xi, eta = np.radians(new[:, 0] / 3600.0), np.radians(new[:, 1] / 3600.0)
        ra0, dec0 = np.radians(self.ra0), np.radians(self.dec0)
        rho = np.hypot(xi, eta)
        cc = np.arctan(rho)
        with np.errstate(invalid="ignore", divide="ignore"):
            dec = np.where(rho > 0, np.arcsin(np.cos(cc) * np.sin(dec0)
                                             + eta * np.sin(cc) * np.cos(dec0) / rho), dec0)
        ra = ra0 + np.arctan2(xi * np.sin(cc), rho * np.cos(dec0) * np.cos(cc)
                              - eta * np.sin(dec0) * np.sin(cc))
        self.ra, self.dec = np.degrees(ra) % 360.0, np.degrees(dec)
        self.txy = np.column_stack(_tangent(self.ra, self.dec, self.ra0, self.dec0))
        self.tree = cKDTree(self.txy)
        self.epoch_note += "; REGISTERED to the product's frame (bench_realism --register)"
        return {"n_stars": int(hit.sum()), "shift_mas": [_r(v * 1000, 2) for v in coef[2]],
                "rotation_deg": _r(np.degrees(np.arctan2(m[1, 0] - m[0, 1], m[0, 0] + m[1, 1])), 6),
                "scale": _r(np.sqrt(abs(np.linalg.det(m))), 8),
                "residual_rms_mas": _r(np.sqrt(np.mean(np.sum(res ** 2, axis=1))) * 1000, 2)}

    # -- coverage ----------------------------------------------------------------------------
    def n_cover(self, ra, dec, margin_px, filt=None):
        exps = [e for e in self.exposures if filt is None or e.filter == filt]
        cov = coverage(exps, ra, dec, margin_px)
        t = np.array([e.exptime for e in exps])
        return cov.sum(axis=0), (cov * t[:, None]).sum(axis=0)

    # -- matching ----------------------------------------------------------------------------
    def match_any(self, xy: np.ndarray) -> np.ndarray:
        """Whether each position matches some truth source (stars within R, galaxies in their
        2 r_eff ellipse)."""
        xy = np.atleast_2d(xy)
        matched = np.zeros(len(xy), bool)
        if len(xy) == 0:
            return matched
        star_xy = self.txy[self.is_star]
        if len(star_xy):
            d, _ = cKDTree(star_xy).query(xy, distance_upper_bound=self.R)
            matched |= np.isfinite(d)
        gal = np.flatnonzero(~self.is_star)
        if len(gal):
            a = np.maximum(2 * self.r_eff[gal], self.R)
            b = np.maximum(2 * self.r_eff[gal] * (1 - self.ell[gal]), self.R)
            gtree = cKDTree(self.txy[gal])
            lists = gtree.query_ball_point(xy, r=float(a.max()))
            th = np.radians(self.theta[gal])
            ux, uy = np.sin(th), np.cos(th)   # major axis, east of north
            for i, cand in enumerate(lists):
                if matched[i] or not cand:
                    continue
                cand = np.asarray(cand)
                dxy = xy[i] - self.txy[gal[cand]]
                along = dxy[:, 0] * ux[cand] + dxy[:, 1] * uy[cand]
                across = -dxy[:, 0] * uy[cand] + dxy[:, 1] * ux[cand]
                if np.any((along / a[cand]) ** 2 + (across / b[cand]) ** 2 <= 1.0):
                    matched[i] = True
        return matched

    def cat_xy(self, cat):
        ra, dec = _sky_positions(cat)
        ok = np.isfinite(ra) & np.isfinite(dec)
        xy = np.full((len(cat), 2), np.nan)
        if ok.any():
            xy[ok] = np.column_stack(_tangent(ra[ok], dec[ok], self.ra0, self.dec0))
        return ra, dec, xy, ok

    # -- metric 1 ----------------------------------------------------------------------------
    def spurious(self, cat, name) -> dict:
        if cat is None:
            return {"error": f"no total {name} catalog"}
        ra, dec, xy, ok = self.cat_xy(cat)
        n_cov = np.zeros(len(cat), int)
        if ok.any():
            n_cov[ok] = self.n_cover(ra[ok], dec[ok], 2.0)[0]
        area = ok & (n_cov >= 2)
        matched = np.zeros(len(cat), bool)
        matched[area] = self.match_any(xy[area])
        unmatched = area & ~matched
        out = {"rows": len(cat), "n_bad_position": int((~ok).sum()),
               "rows_in_ge2_area": int(area.sum()), "spurious": int(unmatched.sum()),
               "fraction": _r(unmatched.sum() / area.sum()) if area.any() else None}
        flags = _flags_of(cat)
        if flags is not None:
            good = area & (flags < 5)
            out["rows_flags_lt5_in_area"] = int(good.sum())
            out["spurious_flags_lt5"] = int((good & ~matched).sum())
            out["fraction_flags_lt5"] = _r((good & ~matched).sum() / good.sum()) if good.any() else None
        return out

    def chance_match(self, n=4000, seed=3) -> float | None:
        rng = np.random.default_rng(seed)
        ny, nx = self.total.sci.shape
        x, y = rng.uniform(0, nx - 1, n * 2), rng.uniform(0, ny - 1, n * 2)
        ra, dec = self.total.wcs.all_pix2world(x, y, 0)
        n_cov = self.n_cover(ra, dec, 2.0)[0]
        sel = n_cov >= 2
        if sel.sum() < 50:
            return None
        xy = np.column_stack(_tangent(ra[sel][:n], dec[sel][:n], self.ra0, self.dec0))
        return _r(self.match_any(xy).mean())

    def area(self) -> dict:
        ny, nx = self.total.sci.shape
        step = max(1, int(np.sqrt(nx * ny / 60000.0)))
        yy, xx = np.mgrid[step // 2:ny:step, step // 2:nx:step]
        ra, dec = self.total.wcs.all_pix2world(xx.ravel().astype(float), yy.ravel().astype(float), 0)
        n_cov = self.n_cover(ra, dec, 2.0)[0]
        pix_area = (self.total.scale / 60.0) ** 2
        out = {"ge2_arcmin2_footprints": _r((n_cov >= 2).sum() * step * step * pix_area),
               "ge1_arcmin2_footprints": _r((n_cov >= 1).sum() * step * step * pix_area)}
        if self.total.ctx is not None:
            bits = _popcount(self.total.ctx)
            out["ge2_arcmin2_ctx"] = _r((bits >= 2).sum() * pix_area)
        return out

    # -- noise and PSF per filter ------------------------------------------------------------
    def filter_noise(self, filt, product: Product, n=3000, seed=7) -> dict:
        from photutils.aperture import CircularAnnulus, CircularAperture

        from hapcore.catalogs.photometry import iraf_style_photometry

        rng = np.random.default_rng(seed)
        ny, nx = product.sci.shape
        x, y = rng.uniform(0, nx - 1, 3 * n), rng.uniform(0, ny - 1, 3 * n)
        ra, dec = product.wcs.all_pix2world(x, y, 0)
        p = self.params
        margin = p["sky_out"] / self.native + 2
        n_cov = self.n_cover(ra, dec, margin, filt)[0]
        ok = (n_cov >= 2) & (product.wht_at(x, y) > 0)
        xy = np.column_stack(_tangent(ra, dec, self.ra0, self.dec0))
        mag = np.asarray(self.truth[f"abmag_{filt}"], float) if f"abmag_{filt}" in self.truth.colnames \
            else np.zeros(len(self.truth))
        near = np.zeros(len(x), bool)
        bright = mag < 28.0
        reach = p["sky_out"] + 0.2 + 2 * self.r_eff
        if bright.any():
            tree = cKDTree(self.txy[bright])
            lists = tree.query_ball_point(xy, r=float(reach[bright].max()))
            rb = reach[bright]
            txb = self.txy[bright]
            for i, cand in enumerate(lists):
                if cand:
                    d = np.hypot(*(xy[i] - txb[cand]).T)
                    near[i] = bool(np.any(d < rb[cand]))
        clean = ok & ~near
        mode = "away from truth sources (AB < 28)"
        use = clean
        if clean.sum() < 200:
            use, mode = ok, "all covered positions (too few clean ones; MAD is robust)"
        idx = np.flatnonzero(use)[:n]
        scale = product.scale
        pos = np.column_stack([x[idx], y[idx]])
        phot = iraf_style_photometry(
            [CircularAperture(pos, p["aperture_2"] / scale)],
            CircularAnnulus(pos, p["sky_in"] / scale, p["sky_out"] / scale), product.sci,
            bg_method=p["salgorithm"])
        flux = np.asarray(phot["flux_1"], float)
        return {"sigma_ap2": _robust_std(flux), "median_ap2": float(np.nanmedian(flux)),
                "rms_pixel": float(np.nanmedian(np.asarray(phot["sky_std"], float))),
                "wht_ref": float(np.median(product.wht_at(x[idx], y[idx]))),
                "n_positions": len(idx), "positions": mode}

    def psf_model_name(self) -> str:
        psf = self.summary.get("psf", "gaussian")
        model = psf.get("model") if isinstance(psf, dict) else psf
        return str(model or "gaussian").lower()

    def psf_file(self, filt):
        psf_dir = self.visit / "truth_psf"
        for name in (filt.lower(), filt.upper()):
            path = psf_dir / f"{name}.fits"
            if path.exists():
                return path
        hits = sorted(psf_dir.glob(f"{filt.lower()}_*mas.fits"))   # WFPC2: one per plate scale
        return hits[0] if hits else None

    def provider_for(self, filt):
        """hapsim's Gaussian mixture when the visit used it (the renderer's stamp truncation
        is reproduced exactly), else the truth PSF file, else None (empirical)."""
        model = self.psf_model_name()
        if model == "gaussian":
            return MixturePSF(self.spec)
        path = self.psf_file(filt)
        if path is not None:
            return FilePSF(path, self.spec, filt)
        return None

    def star_models(self, filt, product: Product, chip: int = 0, exposure=None):
        """The drizzled star models of a filter product for stars on chip ``chip`` (index
        into the exposure's chips; default the filter's first exposure): the native -> output
        map uses that chip's TRUE CD, whose plate scale differs between chips (UVIS: 0.0398"
        and 0.03945" in hapsim's truth, 0.9%: EE(0.2") 0.13% apart)."""
        provider = self.provider_for(filt)
        if provider is None:
            return None, {}
        exp = exposure if exposure is not None else next(e for e in self.exposures
                                                          if e.filter == filt)
        chip_wcs = exp.chips[min(chip, len(exp.chips) - 1)][0]
        m_mat = native_to_output_matrix(chip_wcs, product.wcs)
        radii = dict(self.params, r6=self.r6, bg6=self.bg6)
        key = (provider.key, tuple(np.round(m_mat.ravel(), 6)), product.pixfrac, product.scale)
        if key not in self.models:
            self.models[key] = {reg: build_star_model(provider, reg, m_mat, product.pixfrac,
                                                      product.scale, radii, self.params["salgorithm"])
                                for reg in provider.regimes}
        if chip:   # psf_info describes the first chip's model
            return provider, self.models[key]
        info = {"source": provider.source, "pixfrac": product.pixfrac,
                "native_to_output": [[_r(v, 5) for v in row] for row in m_mat]}
        if isinstance(provider, FilePSF):
            info.update({"file": str(provider.path.relative_to(self.visit)),
                         "read_by": provider.decided_by})
        self.psf_info[filt] = info
        return provider, self.models[key]

    @property
    def r6(self):
        return 0.4 if self.detector in ("wfc3/ir", "wfpc2") else 0.2

    @property
    def bg6(self):
        return (1.2, 2.0) if self.detector in ("wfc3/ir", "wfpc2") else (1.0, 1.5)

    # -- per-filter metrics (2, 4, 5, 6, 7) ----------------------------------------------------
    def filter_metrics(self, filt, drz: Path, total_cat) -> dict:
        product = Product.read(drz)
        noise_product = product
        if self.noise_from is not None:
            other = find_products(self.noise_from)["filters"].get(filt)
            if other is not None:
                noise_product = Product.read(other)
        noise = self.filter_noise(filt, noise_product)
        p = self.params
        exps = [e for e in self.exposures if e.filter == filt]
        rate = np.asarray(self.truth[f"countrate_{filt}"], float)
        mag_true = np.asarray(self.truth[f"abmag_{filt}"], float)
        provider, models = self.star_models(filt, product)
        out = {"product": drz.name, "n_exposures": len(exps),
               "exptime_s": float(sum(e.exptime for e in exps)),
               "pixel_scale_arcsec": _r(product.scale, 5), "noise": {
                   k: (_r(v, 6) if isinstance(v, float) else v) for k, v in noise.items()}}
        if self.noise_from is not None:
            out["noise"]["from"] = str(noise_product.path)

        # positions of every truth source in this product, coverage
        x, y = product.pix(self.ra, self.dec)
        m_det = 2.0
        m_phot = p["sky_out"] / self.native + 2
        n_det, t_det = self.n_cover(self.ra, self.dec, m_det, filt)
        n_phot, _ = self.n_cover(self.ra, self.dec, m_phot, filt)
        wht = product.wht_at(x, y)
        sigma2 = noise["sigma_ap2"] * np.sqrt(noise["wht_ref"] / np.where(wht > 0, wht, np.nan))
        rms_pix = noise["rms_pixel"]

        # expected EE2(F) per source: mixture of PSF regimes over the filter's exposures
        electrons = np.array([rate * e.exptime * self.spec.electrons_per_data_unit
                              if hasattr(self.spec, "electrons_per_data_unit") else rate * e.exptime
                              for e in exps])            # (n_exp, n)
        t_exp = np.array([e.exptime for e in exps])
        if models:
            ee2 = np.zeros(len(rate))
            ee2_raw = np.zeros(len(rate))
            ee6 = np.zeros(len(rate))
            peak = np.zeros(len(rate))
            for k, e in enumerate(exps):
                reg = provider.regime(electrons[k])
                on_chip = chip_of(e, self.ra, self.dec)     # -1 off the exposure: chip 0
                for c in range(len(e.chips)):
                    chip_models = models if c == 0 else self.star_models(filt, product, c, e)[1]
                    here = (on_chip == c) | ((on_chip < 0) & (c == 0))
                    for name, model in chip_models.items():
                        sel = here & (reg == name)
                        ee2[sel] += t_exp[k] * model.ee_ap2(rate[sel] / rms_pix)
                        ee2_raw[sel] += t_exp[k] * model.ee_ap2_raw
                        ee6[sel] += t_exp[k] * model.ee6
                        peak[sel] = np.maximum(peak[sel], model.peak_native)
            ee2 /= t_exp.sum()
            ee2_raw /= t_exp.sum()
            ee6 /= t_exp.sum()
            out["ee_ap2"] = {"source": provider.source,
                             **{f"raw_{name}": _r(m.ee_ap2_raw, 5) for name, m in models.items()},
                             **{f"sky_linear_{name}": _r(m.area2 * m._linear, 5)
                                for name, m in models.items()},
                             "at_flux_over_rms": {
                                 name: {f"1e{int(np.log10(v))}": _r(m.ee_ap2(v), 5)
                                        for v in (1e1, 1e3, 1e5)} for name, m in models.items()},
                             "phase_spread_raw": _r(max(m.spread_ee_ap2 for m in models.values()), 5),
                             "phases": {name: m.n_phases for name, m in models.items()},
                             "stderr_raw": _r(max(m.stderr_ee_ap2 for m in models.values()), 6),
                             "psf": self.psf_info.get(filt)}
            out["ee_r6"] = {name: _r(m.ee6, 5) for name, m in models.items()}
        else:
            ee2 = np.full(len(rate), np.nan)
            ee2_raw = np.full(len(rate), np.nan)
            ee6 = np.full(len(rate), np.nan)
            peak = np.full(len(rate), 0.2)   # conservative saturation guess without a PSF
            out["ee_ap2"] = {"source": "empirical"}
        sky_e = (self.spec.filter(filt.upper()).sky_rate + self.spec.dark_rate) * t_exp.max() \
            if hasattr(self.spec, "filter") else 0.0
        peak_e = np.max(electrons, axis=0) * peak + sky_e
        saturating = self.is_star & (np.max(electrons, axis=0) * peak + sky_e > self.spec.full_well)
        unsat = peak_e < 0.5 * self.spec.full_well

        def snr_of(ee):
            s = rate * ee
            with np.errstate(invalid="ignore", divide="ignore"):
                return s / np.sqrt(s / np.where(t_det > 0, t_det, np.nan) + sigma2 ** 2)

        # isolation against saturating stars (and their bleed)
        near_sat = np.zeros(len(rate), bool)
        for k in np.flatnonzero(saturating):
            bleed = float(np.max(electrons[:, k])) / self.spec.full_well * self.native / 2
            radius = max(3.0, bleed + 1.0)
            for j in self.tree.query_ball_point(self.txy[k], r=radius):
                if j != k:
                    near_sat[j] = True

        # empirical EE2 (cross-check, or the fallback)
        cat = _read_cat(_cat_path(drz, "point"))
        seg = _read_cat(_cat_path(drz, "segment"))
        out["rows"] = {"point": None if cat is None else len(cat),
                       "segment": None if seg is None else len(seg)}
        snr_rough = snr_of(np.where(np.isfinite(ee2), ee2, 0.8))
        iso_phot = self._isolated(rate, sigma2, p["sky_out"] + 0.2) & ~near_sat
        matched_idx = np.full(len(rate), -1)
        if cat is not None:
            _, _, cxy, cok = self.cat_xy(cat)
            if cok.any():
                ok_idx = np.flatnonzero(cok)
                d, i = cKDTree(cxy[cok]).query(self.txy, distance_upper_bound=self.R)
                hit = np.isfinite(d)
                matched_idx[hit] = ok_idx[i[hit]]
            flux2 = _col(cat, "FluxAp2")
            err2 = _col(cat, "FluxErrAp2")
            mag2 = _col(cat, "MagAp2")
            bright = (self.is_star & iso_phot & unsat & (n_phot >= 2) & (snr_rough >= 100)
                      & (matched_idx >= 0))
            if flux2 is not None and bright.sum() >= 3:
                emp = float(np.nanmedian(flux2[matched_idx[bright]] / rate[bright]))
                out["ee_ap2"]["empirical"] = _r(emp, 5)
                out["ee_ap2"]["n_empirical"] = int(bright.sum())
                if models:
                    out["ee_ap2"]["empirical_over_model"] = _r(
                        emp / float(np.median(ee2[bright])), 5)
                    out["ee_ap2"]["empirical_over_aperture_light"] = _r(
                        emp / float(np.median(ee2_raw[bright])), 5)
                else:
                    ee2 = np.full(len(rate), emp)
            elif not models:
                out["ee_ap2"]["empirical"] = None
                out["ee_ap2"]["note"] = "fewer than 3 bright isolated stars: no EE, no S/N"
        snr = snr_of(ee2)
        # buried: a star (not saturating itself) on another star's saturated core or bleed
        # column in all but at most one of its covering exposures -- its light is not in the
        # data; such stars are left out of completeness and positions (counted apart)
        exps = [e for e in self.exposures if e.filter == filt]
        covered = coverage(exps, self.ra, self.dec, m_det)
        n_clear = (covered & ~on_saturated_pixel(exps, self.ra, self.dec)).sum(axis=0)
        buried = self.is_star & ~saturating & (n_det >= 2) & (n_clear < 2)
        self._snr[filt] = np.where((n_det >= 2) & ~buried, snr, np.nan)
        self._n_det[filt] = n_det

        # 2. completeness (total point catalog rows within R)
        want = self.is_star & (n_det >= 2) & (snr >= 10) & ~buried
        comp = {"n_stars": int(want.sum()),
                "n_buried_excluded": int((self.is_star & (n_det >= 2) & (snr >= 10)
                                          & buried).sum())}
        if total_cat is not None and want.any():
            _, _, txy_c, tok = self.cat_xy(total_cat)
            d, _ = cKDTree(txy_c[tok]).query(self.txy[want], distance_upper_bound=self.R)
            comp["found"] = int(np.isfinite(d).sum())
            comp["fraction"] = _r(np.isfinite(d).mean())
            if cat is not None and "flags" in {c.lower() for c in cat.colnames}:
                flags = _flags_of(cat)
                good = (matched_idx[want] >= 0) & (flags[np.maximum(matched_idx[want], 0)] < 5)
                comp["fraction_good"] = _r(good.mean())
        out["completeness_sn10"] = comp

        # 4, 5. pulls and bias in the filter point catalog, against the two conventions
        phot = {}
        if cat is not None and flux2 is not None and err2 is not None and np.isfinite(ee2).any():
            sel = (self.is_star & iso_phot & unsat & (n_phot >= 2) & (snr >= 10)
                   & (matched_idx >= 0))
            rows = matched_idx[sel]
            says = self._annulus_light_note(cat)
            phot["convention"] = {
                "primary": "aperture_light" if says else "catalog_sky",
                "why": (f"catalog meta: {says}" if says else
                        "drizzlepac's: the PSF light in the sky annulus is taken for sky"),
                "catalog_sky": "expected FluxAp2 = F x EE2(F): aperture light minus the "
                               "catalog estimator's sky from the star's annulus light",
                "aperture_light": "expected FluxAp2 = F x EE(aperture 2): the light the aperture "
                                  "holds (catalogs that remove the PSF's annulus light)"}
            phot["n_saturated_excluded"] = int((self.is_star & ~unsat & (n_phot >= 2)
                                                & (snr >= 10)).sum())
            apcorr, where = self._apcorr(cat)
            for suffix, ee in (("", ee2), ("_aperture_light", ee2_raw)):
                if suffix and not np.isfinite(ee).any():
                    continue
                expect = rate[sel] * ee[sel]
                pull = (flux2[rows] - expect) / err2[rows]
                good = np.isfinite(pull) & (err2[rows] > 0)
                if not suffix:
                    self.samples.setdefault(filt, {})["pulls"] = pull[good]
                block = {"n": int(good.sum()), "robust_std": _r(_robust_std(pull[good])),
                         "median": _r(np.median(pull[good])) if good.any() else None}
                bins = {}
                for lo, hi in ((10, 30), (30, 100), (100, 1e9)):
                    b = good & (snr[sel] >= lo) & (snr[sel] < hi)
                    bins[f"{lo}-{int(hi) if hi < 1e9 else 'inf'}"] = {
                        "n": int(b.sum()),
                        "robust_std": _r(_robust_std(pull[b])) if b.sum() >= 3 else None,
                        "median": _r(np.median(pull[b])) if b.any() else None}
                block["by_snr"] = bins
                phot["pulls" + suffix] = block
                if mag2 is not None:
                    with np.errstate(invalid="ignore", divide="ignore"):
                        expected_mag = mag_true[sel] - 2.5 * np.log10(ee[sel])
                    dm = mag2[rows] - expected_mag
                    b50 = np.isfinite(dm) & (snr[sel] >= 50)
                    phot["bias_sn50" + suffix] = {
                        "n": int(b50.sum()),
                        "median_mag": _r(np.median(dm[b50])) if b50.any() else None,
                        "robust_std_mag": _r(_robust_std(dm[b50])) if b50.any() else None}
            if mag2 is not None:
                if apcorr is None:
                    phot["total_mag"] = {"skipped": "no aperture-corrected magnitude column or "
                                                    "'Aperture correction (mag)' meta key"}
                else:
                    ac = apcorr[rows] if np.ndim(apcorr) else apcorr
                    dt = mag2[rows] + ac - mag_true[sel]
                    bt = np.isfinite(dt) & (snr[sel] >= 50)
                    phot["total_mag"] = {"aperture_correction": where, "n": int(bt.sum()),
                                         "median_mag": _r(np.median(dt[bt])) if bt.any() else None}
        out["photometry"] = phot

        # 6. our own aperture photometry at the true positions
        out["aperture_flux"] = self._aperture_flux(filt, product, x, y, rate, snr, unsat, near_sat,
                                                   ee6, models)
        # 7. galaxies in the filter segment catalog
        out["galaxy_flux"] = self._galaxy_flux(seg, rate, sigma2, t_det, n_det)
        return out

    def _isolated(self, rate, sigma2, radius):
        """No other truth source brighter than 10% of the star's FluxAp2 noise within radius
        (+ 2 r_eff for galaxies)."""
        iso = np.ones(len(rate), bool)
        reach = radius + 2 * self.r_eff
        lists = self.tree.query_ball_point(self.txy, r=float(reach.max()))
        for i, cand in enumerate(lists):
            if not self.is_star[i]:
                continue
            cand = np.asarray([c for c in cand if c != i], int)
            if cand.size == 0:
                continue
            d = np.hypot(*(self.txy[cand] - self.txy[i]).T)
            close = d < np.where(self.is_star[cand], radius, reach[cand])
            thr = 0.1 * (sigma2[i] if np.isfinite(sigma2[i]) else 0.0)
            iso[i] = not np.any(close & (rate[cand] > thr))
        return iso

    @staticmethod
    def _annulus_light_note(cat):
        """A catalog meta line saying the sky was cleaned of the PSF's annulus light, if any."""
        for key, value in cat.meta.items():
            text = f"{key} {value}"
            if re.search(r"annulus[- ]light|psf[- ]aware|own (psf )?light.*(sky|annulus)", text,
                         re.IGNORECASE):
                return text[:200]
        return None

    @staticmethod
    def _apcorr(cat):
        for c in cat.colnames:
            if re.search(r"apcorr|ap_corr|aperture_?corr", c, re.IGNORECASE):
                return _col(cat, c), f"column {c}"
        for key, value in cat.meta.items():
            if re.search(r"aperture correction", str(key), re.IGNORECASE):
                try:
                    return float(value), f"meta '{key}' = {float(value)}"
                except (TypeError, ValueError):
                    pass
        return None, None

    def _aperture_flux(self, filt, product, x, y, rate, snr, unsat, near_sat, ee6, models) -> dict:
        from astropy.stats import sigma_clipped_stats
        from photutils.aperture import (
            CircularAnnulus,
            CircularAperture,
            aperture_photometry,
        )

        if not models:
            return {"skipped": "no PSF model (empirical EE only): the ratio would be 1 by construction"}
        scale = product.scale
        r6, (b1, b2) = self.r6, self.bg6
        margin = b2 / self.native + 2
        n_cov, _ = self.n_cover(self.ra, self.dec, margin, filt)
        # isolation for a 0.2 % measurement
        iso = np.ones(len(rate), bool)
        cand_all = self.is_star & (snr >= 100) & unsat & ~near_sat & (n_cov >= 2)
        lists = self.tree.query_ball_point(self.txy[cand_all], r=b2 + 0.3 + 2 * float(self.r_eff.max()))
        for i, cand in zip(np.flatnonzero(cand_all), lists):
            cand = np.asarray([c for c in cand if c != i], int)
            if cand.size == 0:
                continue
            d = np.hypot(*(self.txy[cand] - self.txy[i]).T) - 2 * self.r_eff[cand]
            bad = ((d < r6 + 0.3) & (rate[cand] > 5e-4 * rate[i])) | \
                  ((d < b2 + 0.3) & (rate[cand] > 1e-2 * rate[i]))
            iso[i] = not bad.any()
        sel = np.flatnonzero(cand_all & iso)
        ny, nx = product.sci.shape
        keep = []
        for i in sel:
            xi, yi = round(float(x[i])), round(float(y[i]))
            r = int(np.ceil(r6 / scale)) + 1
            if r <= xi < nx - r and r <= yi < ny - r and (product.wht[yi - r:yi + r + 1, xi - r:xi + r + 1] > 0).all():
                keep.append(i)
        keep = np.asarray(keep, int)
        if keep.size == 0:
            return {"n": 0, "radius_arcsec": r6, "background_annulus_arcsec": [b1, b2]}
        pos = np.column_stack([x[keep], y[keep]])
        phot = aperture_photometry(product.sci, CircularAperture(pos, r6 / scale), method="exact")
        sums = np.asarray(phot["aperture_sum"], float)
        bgs = []
        for mask in CircularAnnulus(pos, b1 / scale, b2 / scale).to_mask(method="center"):
            cut = mask.cutout(product.sci, fill_value=np.nan)
            w = mask.cutout(product.wht, fill_value=0.0)
            vals = cut[(mask.data > 0) & (w > 0) & np.isfinite(cut)]
            bgs.append(sigma_clipped_stats(vals, sigma=3.0, maxiters=5)[1] if vals.size > 20 else np.nan)
        flux = sums - np.pi * (r6 / scale) ** 2 * np.asarray(bgs)
        ratio = flux / (rate[keep] * ee6[keep])
        ok = np.isfinite(ratio)
        self.samples.setdefault(filt, {})["aperture_ratio"] = ratio[ok]
        n = int(ok.sum())
        med = float(np.median(ratio[ok])) if n else None
        se = 1.2533 * _robust_std(ratio[ok]) / np.sqrt(n) if n > 1 else None
        return {"radius_arcsec": r6, "background_annulus_arcsec": [b1, b2], "n": n,
                "median_ratio": _r(med, 5), "stderr": _r(se, 5),
                "robust_std": _r(_robust_std(ratio[ok]), 5) if n else None,
                "within_0.2pct": (None if med is None else bool(abs(med - 1) <= 0.002)),
                "model_ee": {name: _r(m.ee6, 5) for name, m in models.items()}}

    def _galaxy_flux(self, seg, rate, sigma2, t_det, n_det) -> dict:
        if seg is None:
            return {"error": "no filter segment catalog"}
        fseg = _col(seg, "FluxSegment", "FluxIso", "Flux_Segment")
        if fseg is None:
            return {"error": "no FluxSegment column"}
        _, _, sxy, sok = self.cat_xy(seg)
        gal = np.flatnonzero(~self.is_star & (n_det >= 2))
        if gal.size == 0 or not sok.any():
            return {"n": 0}
        stree = cKDTree(sxy[sok])
        sidx = np.flatnonzero(sok)
        a = np.maximum(self.r_eff[gal], self.R)
        d, j = stree.query(self.txy[gal], distance_upper_bound=float(a.max()))
        row = np.full(gal.size, -1)
        for k in range(gal.size):
            if np.isfinite(d[k]) and d[k] <= a[k]:
                row[k] = sidx[j[k]]
        # isolation
        iso = np.ones(gal.size, bool)
        for k, g in enumerate(gal):
            reach = 3 * (self.r_eff[g] + float(self.r_eff.max())) + 0.3
            cand = np.asarray([c for c in self.tree.query_ball_point(self.txy[g], r=reach) if c != g], int)
            if cand.size:
                dd = np.hypot(*(self.txy[cand] - self.txy[g]).T)
                lim = 3 * (self.r_eff[g] + self.r_eff[cand]) + 0.3
                iso[k] = not np.any((dd < lim) & (rate[cand] > 0.02 * rate[g]))
        area_g = np.pi * (2 * self.r_eff[gal]) ** 2 * (1 - self.ell[gal])
        area2 = np.pi * self.params["aperture_2"] ** 2
        with np.errstate(invalid="ignore", divide="ignore"):
            sn = rate[gal] / np.sqrt(rate[gal] / np.where(t_det[gal] > 0, t_det[gal], np.nan)
                                     + sigma2[gal] ** 2 * np.maximum(1, area_g / area2))
        ratio = np.where(row >= 0, fseg[np.maximum(row, 0)] / rate[gal], np.nan)
        # every row whose centre lies on the galaxy (its 2 r_eff ellipse): a shredded galaxy's
        # pieces summed, to tell deblending from flux errors
        th = np.radians(self.theta[gal])
        big_a = np.maximum(2 * self.r_eff[gal], self.R)
        big_b = np.maximum(2 * self.r_eff[gal] * (1 - self.ell[gal]), self.R)
        summed = np.full(gal.size, np.nan)
        n_pieces = np.zeros(gal.size, int)
        for k, cand in enumerate(stree.query_ball_point(self.txy[gal], r=big_a)):
            if row[k] < 0 or not cand:
                continue
            dxy = sxy[sidx[cand]] - self.txy[gal[k]]
            along = dxy[:, 0] * np.sin(th[k]) + dxy[:, 1] * np.cos(th[k])
            across = -dxy[:, 0] * np.cos(th[k]) + dxy[:, 1] * np.sin(th[k])
            on = (along / big_a[k]) ** 2 + (across / big_b[k]) ** 2 <= 1.0
            pieces = sidx[np.asarray(cand)[on]]
            n_pieces[k] = pieces.size
            summed[k] = np.nansum(fseg[pieces]) / rate[gal[k]]
        out = {"n_galaxies_in_area": int(gal.size), "n_matched": int((row >= 0).sum()),
               "n_isolated_matched": int(((row >= 0) & iso).sum())}
        for lim in (20, 50):
            s = iso & (row >= 0) & (sn >= lim) & np.isfinite(ratio)
            n_all = int((iso & (sn >= lim)).sum())
            out[f"sn{lim}"] = {"n": int(s.sum()), "n_isolated": n_all,
                               "median_ratio": _r(np.median(ratio[s])) if s.any() else None,
                               "robust_std": _r(_robust_std(ratio[s])) if s.sum() > 2 else None,
                               "median_ratio_rows_on_galaxy": _r(np.median(summed[s])) if s.any() else None,
                               "median_rows_on_galaxy": _r(np.median(n_pieces[s]), 1) if s.any() else None}
        return out

    # -- metric 3 ------------------------------------------------------------------------------
    def positions(self, total_cat) -> dict:
        if total_cat is None or not self._snr:
            return {"error": "no total point catalog"}
        snr_max = np.nanmax(np.column_stack([np.nan_to_num(v, nan=-1) for v in self._snr.values()]),
                            axis=1)
        n_cov, _ = self.n_cover(self.ra, self.dec, 2.0)
        want = self.is_star & (snr_max >= 20) & (n_cov >= 2)
        _, _, cxy, cok = self.cat_xy(total_cat)
        d, i = cKDTree(cxy[cok]).query(self.txy[want], distance_upper_bound=self.R)
        hit = np.isfinite(d)
        idx = np.flatnonzero(want)
        rate_ref = np.zeros(len(self.truth))
        for f in self.filters:
            rate_ref = np.maximum(rate_ref, np.asarray(self.truth[f"countrate_{f}"], float))
        iso = np.ones(len(idx), bool)
        for k, s in enumerate(idx):
            cand = [c for c in self.tree.query_ball_point(self.txy[s], r=0.5) if c != s]
            iso[k] = not any(rate_ref[c] > 0.1 * rate_ref[s] for c in cand)
        out = {"n_stars": int(want.sum()), "n_without_row": int((~hit).sum())}
        for name, sel in (("all", hit), ("isolated", hit & iso)):
            if not sel.any():
                out[name] = {"n": 0}
                continue
            dxy = (cxy[cok][i[sel]] - self.txy[idx[sel]]) * 1000.0    # mas
            dist = np.hypot(dxy[:, 0], dxy[:, 1])
            out[name] = {"n": int(sel.sum()),
                         "median_error_mas": _r(np.median(dist), 2),
                         "median_error_pix": _r(np.median(dist) / 1000.0 / self.total.scale, 4),
                         "median_offset_mas": [_r(v, 2) for v in np.median(dxy, axis=0)],
                         "rms_error_mas": _r(np.sqrt(np.mean(dist ** 2)), 2)}
            if name == "all":
                out[name]["after_registration"] = _after_similarity(
                    cxy[cok][i[sel]], self.txy[idx[sel]], self.total.scale)
                self.samples["positions"] = {"catalog_xy": cxy[cok][i[sel]],
                                             "true_xy": self.txy[idx[sel]],
                                             "scale": self.total.scale}
        return out

    # -- alignment context ---------------------------------------------------------------------
    def alignment(self) -> dict:
        try:
            from hapcore.wcs.files import read_chip_wcs
        except Exception as exc:  # noqa: BLE001
            return {"error": repr(exc)}
        by_root = {e.root[:8]: e for e in self.exposures}
        rms = []
        for path in sorted(self.products.glob("hst_*_fl[tc].fits")):
            m = re.match(r"^hst_.*_([a-z0-9]{8})_fl[tc]\.fits$", path.name)
            if not m or m.group(1) not in by_root:
                continue
            exp = by_root[m.group(1)]
            try:
                chips = read_chip_wcs(path)
            except Exception:  # noqa: BLE001, S112 - not an SVM copy we can read
                continue
            for extver, wcs in chips.items():
                if extver - 1 >= len(exp.chips):
                    continue
                truth, (ny, nx) = exp.chips[extver - 1]
                gy, gx = np.mgrid[0:ny:64, 0:nx:64]
                gx, gy = gx.ravel().astype(float), gy.ravel().astype(float)
                ra, dec = wcs.all_pix2world(gx, gy, 0)
                tra, tdec = truth.all_pix2world(gx, gy, 0)
                sep = np.hypot((ra - tra) * np.cos(np.radians(tdec)), dec - tdec) * 3.6e6
                rms.append(float(np.sqrt(np.mean(sep ** 2))))
        if not rms:
            return {"n_chips": 0}
        return {"n_chips": len(rms), "median_chip_rms_mas": _r(np.median(rms), 2),
                "max_chip_rms_mas": _r(np.max(rms), 2),
                "wcsname": str(fits.getval(self.total.path, "WCSNAME", "SCI") or "")}

    # -- everything ----------------------------------------------------------------------------
    def run(self) -> dict:
        t0 = time.perf_counter()
        self._snr, self._n_det = {}, {}
        total_point = _read_cat(_cat_path(self.prod["total"], "point"))
        total_seg = _read_cat(_cat_path(self.prod["total"], "segment"))
        preset = self.summary.get("preset")
        out = {
            "label": self.label, "visit_dir": str(self.visit), "products_dir": str(self.products),
            "visit": {"detector": self.detector,
                      "preset": preset.get("name") if isinstance(preset, dict) else preset,
                      "seed": self.summary.get("seed"), "subarray": self.summary.get("subarray"),
                      "n_exposures": len(self.exposures),
                      "filters": {f: {"n_exposures": sum(e.filter == f for e in self.exposures),
                                      "exptime_s": sum(e.exptime for e in self.exposures if e.filter == f)}
                                  for f in self.filters},
                      "n_truth": {"star": int(self.is_star.sum()), "galaxy": int((~self.is_star).sum())},
                      "psf_model": self.psf_model_name(),
                      "epoch": self.epoch_note},
            "registration": self.registration,
            "match": {"star_radius_arcsec": _r(self.R, 4),
                      "galaxy_rule": "inside the ellipse a = max(2 r_eff, R), b = max(2 r_eff (1-e), R)",
                      "total_pixel_scale_arcsec": _r(self.total.scale, 5)},
            "catalog_parameters": self.params,
            "rows": {"total_point": None if total_point is None else len(total_point),
                     "total_segment": None if total_seg is None else len(total_seg)},
        }
        out["area"] = self.area()
        out["alignment"] = self.alignment()
        out["spurious"] = {"point": self.spurious(total_point, "point"),
                           "segment": self.spurious(total_seg, "segment"),
                           "chance_match_fraction": self.chance_match()}
        filters = {}
        for filt in self.filters:
            drz = self.prod["filters"].get(filt)
            if drz is None:
                filters[filt] = {"error": "no filter product"}
                continue
            filters[filt] = self.filter_metrics(filt, drz, total_point)
            out["rows"][f"{filt}_point"] = filters[filt]["rows"]["point"]
            out["rows"][f"{filt}_segment"] = filters[filt]["rows"]["segment"]
        # 2 (any filter)
        if self._snr and total_point is not None:
            snr_max = np.nanmax(np.column_stack([np.nan_to_num(v, nan=-1) for v in self._snr.values()]),
                                axis=1)
            want = self.is_star & (snr_max >= 10)
            _, _, cxy, cok = self.cat_xy(total_point)
            d, _ = cKDTree(cxy[cok]).query(self.txy[want], distance_upper_bound=self.R)
            any_f = {"n_stars": int(want.sum()),
                     "fraction": _r(np.isfinite(d).mean()) if want.any() else None}
        else:
            any_f = {}
        out["completeness_sn10"] = {"any": any_f,
                                    **{f: filters[f].get("completeness_sn10") for f in filters}}
        out["positions_sn20"] = self.positions(total_point)
        out["photometry"] = {f: {"ee_ap2": filters[f].get("ee_ap2"), **filters[f].get("photometry", {}),
                                 "noise": filters[f].get("noise")} for f in filters}
        out["aperture_flux"] = {f: filters[f].get("aperture_flux") for f in filters}
        out["galaxy_flux"] = {f: filters[f].get("galaxy_flux") for f in filters}
        out["score_wall_s"] = round(time.perf_counter() - t0, 1)
        return out


def evaluate(visit, products, label=None, noise_from=None, register=False) -> dict:
    return Scorer(Path(visit), Path(products), label=label, noise_from=noise_from,
                  register=register).run()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("visit", type=Path)
    parser.add_argument("products", type=Path)
    parser.add_argument("--label")
    parser.add_argument("--noise-from", type=Path,
                        help="measure the sky noise (the S/N of every star) in this product "
                             "directory instead, e.g. to score two pipelines on the same stars")
    parser.add_argument("--register", action="store_true",
                        help="score in the product's own frame: move the truth by an affine fit "
                             "of the total point catalog on bright isolated stars (for a pipeline "
                             "whose alignment failed; reported under 'registration')")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    load0 = [round(v, 2) for v in os.getloadavg()]
    res = evaluate(args.visit, args.products, label=args.label, noise_from=args.noise_from,
                   register=args.register)
    res["command"] = "python benchmarks/bench_realism.py " + " ".join(argv or sys.argv[1:])
    res["loadavg_before"], res["loadavg_after"] = load0, [round(v, 2) for v in os.getloadavg()]
    write_report(res, args.out)
    return 0


def write_report(result: dict, out: Path | None) -> None:
    """The JSON report to ``out``, or to standard output without one."""
    text = json.dumps(result, indent=1, default=str)
    if out:
        out.write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    sys.exit(main())
