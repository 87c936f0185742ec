"""Detections that are features of a bright star's PSF: rings, spikes, the halo.

An HST PSF is not a Gaussian: Airy rings, the four diffraction spikes of the secondary
mirror's spider and a scattered halo reach arcseconds from a bright star. Noise on them, and
their own structure (the knots along a spike), make peaks that pass the detection threshold:
"sources" 0.3-3" from bright stars, mostly extended (CI ~2), that no catalog should hold.
The azimuthal and mirror tests of :mod:`hapcore.catalogs.swarm` catch those on rings, but a
spike is neither azimuthally symmetric nor alone (its mirror through the star is another
spike feature), so they miss it.

This module uses the product's own PSF instead:

* :func:`empirical_psf` stacks bright, isolated stars of the image (median of stamps centred
  on their detections, each normalised by its light in an annulus outside the core) out to
  ``radius``. On a drizzled, north-up product every star has its spikes at the same angles, so
  the stack holds the rings, the spikes and the halo, whatever the telescope roll; nothing is
  assumed about the instrument.
* :func:`psf_features` scales the stack to every detection bright enough to matter (by its
  annulus light, checked farther out for a saturated core), predicts how much of each fainter
  detection's aperture light its brighter neighbours' PSFs hold, and calls a detection a
  feature when the light left after removing that prediction is not significant
  (``nsigma``, with the background noise, the Poisson noise and a ``model_error`` fraction of
  the prediction) while the prediction explains a good part (``min_model_fraction``) of what
  was detected. A real companion keeps its own light above the wing and stays.

The stack cannot see what only the brightest stars show: the spikes of a saturated star reach
far beyond where a stack of fainter stars is significant. :func:`fourfold_features` uses the
symmetry instead: HST's spikes come from two spider vanes crossing at right angles and its
rings and halo are round, so every PSF feature has copies at 90, 180 and 270 degrees about
the star. A detection whose aperture light does not exceed the median of those three copies
(``nsigma``) is one. A real companion has no copies; a bleed column (two-fold) has one, which
the median of three ignores; copies that disagree among themselves (other stars of a crowded
field) are no reference. The neighbour must be ``min_ratio`` times brighter in a wide
aperture (3 aperture radii), which a saturated core does not falsify the way a peak-based
flux does.

The result joins the swarm flag (32), whose rows the total catalog's trimming drops when every
filter flags them.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import fftconvolve
from scipy.spatial import cKDTree

from hapcore.catalogs.swarm import aperture_sums, brightest_neighbours, value_at

__all__ = ["EmpiricalPSF", "empirical_psf", "point_like", "psf_features", "fourfold_features"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Normal-distribution factor of the median absolute deviation.
MAD_TO_SIGMA: float = 1.482602


@dataclass(frozen=True)
class EmpiricalPSF:
    """A PSF stacked from the stars of an image.

    Attributes
    ----------
    image : ndarray, shape (2 * radius + 1, 2 * radius + 1)
        Median of the normalised stamps: its sum over the annulus ``norm_radii`` is 1.
    norm_radii : tuple of float
        Inner and outer radius (pixels) of the normalisation annulus.
    n_stars : int
        Stars stacked.
    """

    image: np.ndarray
    norm_radii: tuple[float, float]
    n_stars: int

    @property
    def radius(self) -> int:
        return self.image.shape[0] // 2

    def annulus_mask(self, inner: float, outer: float) -> np.ndarray:
        r = _radius_grid(self.radius)
        return (r >= inner) & (r <= outer)

    def aperture_map(self, aperture_radius: float) -> np.ndarray:
        """Sum of the PSF over a disk of ``aperture_radius`` centred at each offset."""
        disk = _disk(aperture_radius)
        return fftconvolve(self.image, disk, mode="same")


def _radius_grid(half: int) -> np.ndarray:
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    return np.hypot(xx, yy)


def _disk(radius: float) -> np.ndarray:
    half = int(np.ceil(radius))
    return (_radius_grid(half) <= radius).astype(float)


def _stamps(data, background, x, y, half):
    """Stamps of ``data - background`` centred on the nearest pixels (NaN off the image)."""
    ny, nx = data.shape
    offsets = np.arange(-half, half + 1)
    ix = np.rint(x).astype(int)
    iy = np.rint(y).astype(int)
    rows = iy[:, None] + offsets[None, :]
    cols = ix[:, None] + offsets[None, :]
    inside = ((rows >= 0) & (rows < ny))[:, :, None] & ((cols >= 0) & (cols < nx))[:, None, :]
    r = np.clip(rows, 0, ny - 1)[:, :, None]
    c = np.clip(cols, 0, nx - 1)[:, None, :]
    values = np.asarray(data[r, c], dtype=np.float64)
    if background is not None:
        values = values - np.asarray(np.broadcast_to(background, data.shape)[r, c], np.float64)
    return np.where(inside, values, np.nan)


def empirical_psf(data: np.ndarray, x, y, flux, *, radius: int, norm_radii: tuple[float, float],
                  background=None, max_stars: int = 40, min_stars: int = 5,
                  isolation_ratio: float = 0.1, valid=None,
                  significant_only: bool = True) -> EmpiricalPSF | None:
    """Median stack of the brightest isolated stars of an image.

    Parameters
    ----------
    data : 2-D ndarray
        Image (background-subtracted, or give ``background``).
    x, y : array_like
        0-based positions of the detections.
    flux : array_like
        A brightness measure of each detection.
    radius : int
        Half size of the stack (pixels).
    norm_radii : tuple of float
        Annulus (pixels) each stamp is normalised by: outside the core, so that a saturated or
        slightly mis-centred core does not set the scale.
    background : 2-D ndarray or float, optional
    max_stars, min_stars : int, optional
        At most ``max_stars`` are stacked; with fewer than ``min_stars`` usable, None.
    isolation_ratio : float, optional
        A star is used only when no other detection within ``radius`` has more than this
        fraction of its flux.
    valid : 2-D ndarray of bool, optional
        Pixels with data (e.g. weight > 0); stamps must lie entirely inside.
    significant_only : bool, optional
        Set pixels not 3 sigma above zero to zero (for predictions summed over many stars);
        False keeps the unbiased median (for means over an annulus).

    Returns
    -------
    EmpiricalPSF or None
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux = np.asarray(flux, float)
    ok = np.isfinite(x) & np.isfinite(y) & np.isfinite(flux) & (flux > 0)
    if ok.sum() < min_stars:
        return None
    idx = np.flatnonzero(ok)
    tree = cKDTree(np.column_stack([x[idx], y[idx]]))
    order = idx[np.argsort(flux[idx])[::-1]]
    chosen = []
    ny, nx = data.shape
    for k in order:
        if not (radius <= x[k] < nx - radius - 1 and radius <= y[k] < ny - radius - 1):
            continue
        near = idx[tree.query_ball_point([x[k], y[k]], radius)]
        near = near[near != k]
        if near.size and flux[near].max() > isolation_ratio * flux[k]:
            continue
        if valid is not None:
            iy, ix = int(round(y[k])), int(round(x[k]))
            if not valid[iy - radius:iy + radius + 1, ix - radius:ix + radius + 1].all():
                continue
        chosen.append(k)
        if len(chosen) >= max_stars:
            break
    # the brightest candidates may be saturated: their normalised cores are flat, and the
    # median over the rest keeps the core right as long as they are a minority
    if len(chosen) < min_stars:
        return None
    chosen = np.asarray(chosen)
    stamps = _stamps(data, background, x[chosen], y[chosen], radius)
    annulus = (_radius_grid(radius) >= norm_radii[0]) & (_radius_grid(radius) <= norm_radii[1])
    norms = np.nansum(stamps[:, annulus], axis=1)
    good = np.isfinite(norms) & (norms > 0)
    if good.sum() < min_stars:
        return None
    normalised = stamps[good] / norms[good, None, None]
    median = np.nanmedian(normalised, axis=0)
    spread = MAD_TO_SIGMA * np.nanmedian(np.abs(normalised - median), axis=0)
    # The faint wings (a spike 1.5" out) are seen only in the brightest stars: a plain median
    # weights every star alike and loses them in the noise of the fainter ones. The stack is
    # the mean weighted by each star's light squared (its S/N squared where the sky noise
    # dominates), over the stamps within 3 sigma of the median (a neighbour or a defect in
    # one stamp is left out).
    weights = (norms[good] ** 2)[:, None, None] * (np.abs(normalised - median) <= 3.0 * spread)
    weights = np.where(np.isfinite(normalised), weights, 0.0)
    total = weights.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        stack = np.where(total > 0, (weights * np.nan_to_num(normalised)).sum(axis=0) / total,
                         median)
        # error of the weighted mean, from the stamps' scatter and the effective number of stars
        n_eff = total ** 2 / (weights ** 2).sum(axis=0)
        error = spread / np.sqrt(np.where(n_eff > 0, n_eff, 1.0))
    # Far out the stack is mostly noise; scaled to every bright star and summed over neighbours
    # it would predict light that is not there: pixels not 3 sigma above zero are set to zero.
    # The core is kept whole: on an undersampled PSF (WFC3/IR) its pixels differ from star to
    # star with the pixel phase by more than 1/3, and the cut zeroed the whole core (the
    # "PSF" left was a ring that explained real stars 1-3" from brighter ones: 57 of 58 tested
    # detections flagged 32 on a 3 x IR visit, 18 of them stars at S/N 10-90).
    if significant_only:
        outside = _radius_grid(radius) > norm_radii[0]
        stack = np.where(~outside | (stack > 3.0 * error), stack, 0.0)
    stack = np.nan_to_num(stack, nan=0.0)
    return EmpiricalPSF(stack, (float(norm_radii[0]), float(norm_radii[1])), int(good.sum()))


def psf_features(data: np.ndarray, x, y, flux, *, aperture_radius: float, model_radius: int,
                 core_radius: float, background=None, background_rms=0.0, exptime: float = 0.0,
                 min_ratio: float = 10.0, nsigma: float = 3.0, model_error: float = 0.2,
                 min_model_fraction: float = 0.3, valid=None, stack_candidates=None,
                 psf: EmpiricalPSF | None = None) -> tuple[np.ndarray, EmpiricalPSF | None]:
    """Detections explained by the PSF of a brighter neighbour (see module notes).

    Parameters
    ----------
    data : 2-D ndarray
        Image the sources were detected on (rate units when ``exptime`` is given).
    x, y, flux : array_like
        Detections: 0-based positions and a brightness measure (e.g. DAOStarFinder's flux).
    aperture_radius : float
        Radius (pixels) of the aperture compared with the prediction.
    model_radius : int
        Half size of the PSF stack (pixels): features farther out are not looked for.
    core_radius : float
        Radius (pixels) of the PSF core: the normalisation annulus starts there, and
        detections closer than it to a neighbour are left to the deblending.
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
        Per-pixel background noise.
    exptime : float, optional
        Exposure time turning rates into counts for the Poisson noise (0: none).
    min_ratio : float, optional
        A neighbour must be at least this many times brighter (``flux``) than the detection.
    nsigma : float, optional
    model_error : float, optional
        Fractional error of the scaled PSF prediction (colour and field variations of the
        PSF, the stack's own noise).
    min_model_fraction : float, optional
        The prediction must hold at least this fraction of the detection's aperture light.
    valid : 2-D ndarray of bool, optional
        Pixels with data, for the PSF stack.
    stack_candidates : ndarray of bool, optional
        Detections that may be stacked (e.g. point-like by their concentration index): the
        brightest detections are often galaxies.
    psf : EmpiricalPSF, optional
        A PSF to use instead of stacking one from ``data``.

    Returns
    -------
    features : ndarray of bool
    psf : EmpiricalPSF or None
        The PSF used (None when too few stars were usable: nothing is flagged).
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    flux = np.asarray(flux, float)
    n = x.size
    features = np.zeros(n, bool)
    if n < 2:
        return features, psf
    norm_radii = (float(core_radius), float(core_radius) * 2.5)
    if psf is None:
        stack_flux = flux if stack_candidates is None else np.where(stack_candidates, flux, 0.0)
        psf = empirical_psf(data, x, y, stack_flux, radius=int(model_radius),
                            norm_radii=norm_radii, background=background, valid=valid)
    if psf is None:
        log.debug("PSF features: too few isolated bright stars for a PSF stack")
        return features, None
    half = psf.radius
    scales = _psf_scales(data, background, x, y, psf, aperture_radius)
    aperture_map = psf.aperture_map(aperture_radius)
    finite = np.isfinite(flux) & (flux > 0) & np.isfinite(scales) & (scales > 0)
    # a neighbour matters only if its PSF's light in an aperture beyond the core can exceed
    # a fraction of the noise of a faint detection's aperture
    far = _radius_grid(half) >= core_radius
    peak_far = float(aperture_map[far].max()) if far.any() else 0.0
    rms = float(np.nanmedian(background_rms)) if np.ndim(background_rms) else float(background_rms)
    noise_aperture = max(rms, 1e-30) * np.sqrt(np.pi * aperture_radius ** 2)
    bright = np.flatnonzero(finite & (scales * peak_far > noise_aperture))
    if bright.size == 0:
        return features, psf
    # brightness ratios from the light in the tested aperture: a peak-based flux can call a
    # blended neighbour 14 times brighter when the apertures say 1.1
    light = aperture_sums(data, x, y, aperture_radius, background=background)
    light = np.where(np.isfinite(light), light, flux)
    tree = cKDTree(np.column_stack([x, y]))
    neighbours = tree.query_ball_point(np.column_stack([x[bright], y[bright]]), half - 1)
    pairs_i, pairs_j = [], []
    for b, near in zip(bright, neighbours):
        near = np.asarray(near, int)
        near = near[(near != b) & (light[b] >= min_ratio * np.clip(light[near], 0.0, None))]
        pairs_i.append(np.full(near.size, b))
        pairs_j.append(near)
    star = np.concatenate(pairs_i) if pairs_i else np.zeros(0, int)
    det = np.concatenate(pairs_j) if pairs_j else np.zeros(0, int)
    distance = np.hypot(x[det] - x[star], y[det] - y[star])
    keep = distance >= core_radius
    star, det = star[keep], det[keep]
    if det.size == 0:
        return features, psf
    # predicted aperture light of each bright neighbour at each detection, summed per detection
    coords = np.vstack([y[det] - y[star] + half, x[det] - x[star] + half])
    predicted_pair = scales[star] * ndimage.map_coordinates(aperture_map, coords, order=1,
                                                             mode="constant", cval=0.0)
    # only neighbours whose own contribution matters are summed (many small, noisy terms
    # would otherwise add up to a prediction no single star makes)
    predicted_pair = np.where(predicted_pair >= 0.5 * noise_aperture, predicted_pair, 0.0)
    predicted = np.bincount(det, weights=predicted_pair, minlength=n)
    tested = np.flatnonzero(predicted > 0)
    measured = light[tested]
    rms_at = value_at(background_rms, x[tested], y[tested], data.shape)
    npix = np.pi * aperture_radius ** 2
    pred = predicted[tested]
    variance = npix * rms_at ** 2 + (model_error * pred) ** 2
    if exptime > 0:
        variance = variance + np.clip(np.maximum(measured, pred), 0.0, None) / exptime
    with np.errstate(invalid="ignore"):
        # the prediction must matter: a faint detection next to a modest star is only noisy,
        # and "explained" by any small prediction when its own light is below nsigma
        explained = ((measured - pred) < nsigma * np.sqrt(variance)) & \
            (pred >= min_model_fraction * measured) & (pred >= np.sqrt(npix) * rms_at)
    features[tested[np.isfinite(measured) & explained]] = True
    log.debug("PSF features: stack of %d stars (radius %d px), %d bright neighbours, %d of %d "
              "tested detections explained by a neighbour's PSF", psf.n_stars, half,
              bright.size, int(features.sum()), tested.size)
    return features, psf


def _psf_scales(data, background, x, y, psf: EmpiricalPSF, aperture_radius: float) -> np.ndarray:
    """Scale of the PSF stack for each detection.

    From the core (the aperture sum over the stack's aperture fraction) unless the
    normalisation annulus says the star is more than twice as bright: a saturated core holds
    less than its share, and then the annulus (the median over its pixels of data / model,
    which neighbours in the annulus do not pull) sets the scale.
    """
    inner, outer = psf.norm_radii
    half = int(np.ceil(outer))
    centre = psf.radius
    model = psf.image[centre - half:centre + half + 1, centre - half:centre + half + 1]
    r = _radius_grid(half)
    ring = (r >= inner) & (r <= outer) & (model > 0)
    core_fraction = float(psf.aperture_map(aperture_radius)[centre, centre])
    core = aperture_sums(data, x, y, aperture_radius, background=background) / core_fraction
    scales = np.full(x.size, np.nan)
    for start in range(0, x.size, 1024):
        part = slice(start, start + 1024)
        stamps = _stamps(data, background, x[part], y[part], half)
        with np.errstate(invalid="ignore", divide="ignore"):
            annulus = np.nanmedian(stamps[:, ring] / model[ring], axis=1) * float(model[ring].sum())
        scales[part] = np.where(np.isfinite(core[part]) & ~(annulus > 2.0 * core[part]),
                                core[part], annulus)
    return scales


def fourfold_features(data: np.ndarray, x, y, *, aperture_radius: float, max_distance: float,
                      min_distance: float, background=None, background_rms=0.0,
                      exptime: float = 0.0, min_ratio: float = 10.0,
                      nsigma: float = 3.0, model_error: float = 0.2) -> np.ndarray:
    """Detections repeated at 90, 180 and 270 degrees about a much brighter neighbour.

    Parameters
    ----------
    data : 2-D ndarray
        Image the sources were detected on.
    x, y : array_like
        0-based positions of the detections.
    aperture_radius : float
        Radius (pixels) of the compared apertures.
    max_distance, min_distance : float
        Detection-neighbour distances tested (pixels).
    background : 2-D ndarray or float, optional
    background_rms : float or 2-D ndarray, optional
        Per-pixel background noise.
    exptime : float, optional
        Turns rates into counts for the Poisson noise of the compared light.
    min_ratio : float, optional
        The neighbour's light within three aperture radii must be at least this many times
        the detection's.
    nsigma : float, optional
    model_error : float, optional
        Fractional difference allowed between the copies (the four spikes differ, and a copy
        falls a little off its spike's ridge).

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    n = x.size
    features = np.zeros(n, bool)
    if n < 2:
        return features
    wide = aperture_sums(data, x, y, 3.0 * aperture_radius, background=background)
    tested, star = brightest_neighbours(x, y, wide, max_distance=max_distance,
                                        min_ratio=min_ratio, min_distance=min_distance)
    if tested.size == 0:
        return features
    # rotations are about the neighbour's centre of light: a saturated star's detection sits
    # wherever its flat, bled core peaks (10+ px off on UVIS), its light stays symmetric
    cx, cy = _light_centres(data, x, y, np.unique(star), 3.0 * aperture_radius, background)
    dx, dy = x[tested] - cx[star], y[tested] - cy[star]
    x_star, y_star = cx[star], cy[star]
    # rotations by 90, 180, 270 degrees about the neighbour
    rx = np.stack([x_star - dy, x_star - dx, x_star + dy], axis=1)
    ry = np.stack([y_star + dx, y_star - dy, y_star - dx], axis=1)
    copies = aperture_sums(data, rx.ravel(), ry.ravel(), aperture_radius,
                           background=background).reshape(rx.shape)
    own = aperture_sums(data, x[tested], y[tested], aperture_radius, background=background)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = np.nanmedian(copies, axis=1)
    rms = value_at(background_rms, x[tested], y[tested], data.shape)
    area = np.pi * aperture_radius ** 2
    poisson = np.clip(reference, 0.0, None) / exptime if exptime > 0 else 0.0
    noise = np.sqrt(2.0 * (rms ** 2 * area + poisson))
    usable = np.isfinite(own) & (np.sum(np.isfinite(copies), axis=1) >= 2)
    # the copies must hold light: a faint detection next to empty copies is noise, not a feature
    tolerance = nsigma * np.hypot(noise, model_error * np.abs(reference))
    # the copies must agree among themselves, as a PSF's do: in a crowded field the rotated
    # positions land on unrelated stars of any brightness (on the real ACS/HRC image of 47 Tuc
    # the test flagged 785 of 4632 detections without this)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        spread = np.nanmax(copies, axis=1) - np.nanmin(copies, axis=1)
    consistent = spread <= tolerance
    repeated = usable & consistent & (reference > nsigma * noise) & \
        (own - reference < tolerance)
    features[tested[repeated]] = True
    log.debug("four-fold test: %d of %d detections near a %.0fx brighter neighbour repeat at "
              "90/180/270 degrees", int(repeated.sum()), tested.size, min_ratio)
    return features


def _light_centres(data, x, y, which, radius, background, iterations=3):
    """First-moment centres of light within ``radius`` for the detections ``which``.

    Returns full-length x, y arrays (the detections' own positions elsewhere).
    """
    cx = np.array(x, dtype=float)
    cy = np.array(y, dtype=float)
    half = int(np.ceil(radius))
    offsets = np.arange(-half, half + 1)
    disk = np.hypot(*np.meshgrid(offsets, offsets)) <= radius
    for _ in range(iterations):
        stamps = _stamps(data, background, cx[which], cy[which], half)
        weights = np.where(disk & np.isfinite(stamps), np.clip(np.nan_to_num(stamps), 0, None), 0)
        total = weights.sum(axis=(1, 2))
        ok = total > 0
        ix = np.rint(cx[which])
        iy = np.rint(cy[which])
        with np.errstate(invalid="ignore", divide="ignore"):
            mx = (weights * offsets[None, None, :]).sum(axis=(1, 2)) / total
            my = (weights * offsets[None, :, None]).sum(axis=(1, 2)) / total
        cx[which] = np.where(ok, ix + mx, cx[which])
        cy[which] = np.where(ok, iy + my, cy[which])
    return cx, cy


def point_like(ci, flux, *, limits: tuple[float, float], margin: tuple[float, float] = (0.3, 0.15),
               n_bright: int = 50, width: float = 0.2) -> np.ndarray:
    """Detections whose concentration index is that of the image's bright stars.

    The catalog's CI limits are calibrated on drizzlepac's products: a PSF slightly broader
    or sharper than theirs (another filter, kernel or pixfrac) puts many stars just outside
    them, and a stack of what is left is a stack of galaxies. Candidates are taken in the
    limits widened by ``margin`` (low side, high side); the reference is the median CI of the
    ``n_bright`` brightest of them, and the detections within ``width`` of it are point-like.

    Parameters
    ----------
    ci : array_like
        Concentration indices (NaN where undefined).
    flux : array_like
        A brightness measure.
    limits : tuple of float
        The catalog's CI limits.
    margin : tuple of float, optional
    n_bright : int, optional
    width : float, optional

    Returns
    -------
    ndarray of bool
    """
    ci = np.asarray(ci, float)
    flux = np.asarray(flux, float)
    with np.errstate(invalid="ignore"):
        usable = np.isfinite(ci) & np.isfinite(flux) & (ci >= limits[0] - margin[0]) & \
            (ci <= limits[1] + margin[1])
    if usable.sum() < 5:
        return usable
    order = np.flatnonzero(usable)[np.argsort(flux[usable])[::-1][:n_bright]]
    reference = float(np.median(ci[order]))
    with np.errstate(invalid="ignore"):
        return usable & (np.abs(ci - reference) <= width)
