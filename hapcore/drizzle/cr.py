"""Cosmic-ray rejection: static mask, median/minmed combination, driz_cr (AstroDrizzle steps 1, 4, 6).

Pure array functions. Images are count rates (e-/s) unless a name says electrons; boolean masks
are True where a pixel is *bad* (static, cosmic ray), weights are >= 0.

The driz_cr test follows AstroDrizzle's ``drizCR``: a pixel differs from the blotted median by
more than ``scale * derivative + snr * noise``; pixels that fail the strict first pair
(``driz_cr_snr[0]``, ``driz_cr_scale[0]``) mark their 3x3 neighbourhood, inside which the looser
second pair decides; the result is grown by ``driz_cr_grow``.

Two additions to AstroDrizzle, both for stars, whose undersampled PSF the drizzle-then-blot
model gets wrong by a fraction of the signal:

* minmed does not take a partially covered pixel (a bad column, a masked pixel) as the
  minimum unless its difference also exceeds its resampling error (`combine_images`);
* driz_cr's optional *excess test* flags a positive difference larger than a fraction of the
  blot, measured per chip, which catches cosmic rays on stars that the derivative term lets
  through (`detect_cosmic_rays`, `calibrate_excess_fraction`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "ElectronImage",
    "calibrate_excess_fraction",
    "combine_images",
    "detect_cosmic_rays",
    "grow_mask",
    "quick_derivative",
    "static_mask",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: A blot pixel at or above this fraction of its 3x3 maximum counts as a peak for the excess
#: test of `detect_cosmic_rays` (its own, larger tolerance).
_PEAK_LEVEL = 0.7
#: Box (pixels) of the flux test at peaks.
_BOX = 5
#: Pixels per block of the excess test's boxes (every value is per pixel): a 5x5 box of 65536
#: pixels held ~60 MB of int64 indices and float32 values, in a worker's peak on the first pass
#: of a 3 x WFC3/UVIS visit (issue #16); 16384 hold a quarter of it.
_CHUNK = 16384
# calibration of the excess test (`calibrate_excess_fraction`)
_CALIBRATION_SNR = 30.0
_CALIBRATION_MIN_PIXELS = 300
_CALIBRATION_FACTOR = 3.5
_SLOPE_FRACTION_RANGE = (0.2, 1.0)
_PEAK_FACTOR = 2.0
_BOX_FRACTION = 0.15


def grow_mask(mask: np.ndarray, grow: int) -> np.ndarray:
    """Grow a boolean mask by a ``grow x grow`` box (``grow`` <= 1: unchanged)."""
    if grow <= 1:
        return mask
    mask = np.asarray(mask, bool)
    ys, xs = np.nonzero(mask)
    if ys.size * grow * grow > mask.size // 4:
        if grow % 2 == 0:
            return ndimage.binary_dilation(mask, structure=np.ones((grow, grow), bool))
        # an odd square dilation is a (separable, faster) maximum filter
        return ndimage.maximum_filter(mask.view(np.uint8), size=grow, mode="constant",
                                      cval=0).view(bool)
    # sparse mask (bad pixels, saturated stars): set the boxes directly (same offsets as
    # binary_dilation, also for an even box)
    out = np.zeros_like(mask)
    lo = grow // 2
    for dy in range(-lo, grow - lo):
        yy = np.clip(ys + dy, 0, mask.shape[0] - 1)
        for dx in range(-lo, grow - lo):
            out[yy, np.clip(xs + dx, 0, mask.shape[1] - 1)] = True
    return out


def static_mask(chips: Sequence[np.ndarray], *, static_sig: float = 4.0) -> np.ndarray:
    """Pixels low in every exposure of a chip (dead/cold pixels), AstroDrizzle's static mask.

    Parameters
    ----------
    chips : sequence of 2-D arrays
        The same chip (same shape) of each exposure, e-/s.
    static_sig : float
        A pixel is low when below ``median - static_sig * std`` of its chip.

    Returns
    -------
    ndarray of bool
        True where the pixel is low in every exposure.
    """
    bad = None
    for data in chips:
        sample = data[:: max(1, data.shape[0] // 512), :: max(1, data.shape[1] // 512)]
        sample = sample[np.isfinite(sample)]
        median = np.median(sample)
        std = 1.4826 * np.median(np.abs(sample - median))
        low = data < median - static_sig * std
        bad = low if bad is None else (bad & low)
    return bad


#: Compare-exchange networks that sort 2 to 8 values, the smallest known (Knuth, TAOCP
#: 5.3.4; 5-8: 9, 12, 16 and 19 comparators).
_NETWORKS = {
    2: ((0, 1),),
    3: ((0, 1), (1, 2), (0, 1)),
    4: ((0, 1), (2, 3), (0, 2), (1, 3), (1, 2)),
    5: ((0, 1), (3, 4), (2, 4), (2, 3), (0, 3), (0, 2), (1, 4), (1, 3), (1, 2)),
    6: ((1, 2), (4, 5), (0, 2), (3, 5), (0, 1), (3, 4), (1, 4), (0, 3), (2, 5), (1, 3),
        (2, 4), (2, 3)),
    7: ((1, 2), (3, 4), (5, 6), (0, 2), (3, 5), (4, 6), (0, 1), (4, 5), (2, 6), (0, 4),
        (1, 5), (0, 3), (2, 5), (1, 3), (2, 4), (2, 3)),
    8: ((0, 2), (1, 3), (4, 6), (5, 7), (0, 4), (1, 5), (2, 6), (3, 7), (0, 1), (2, 3),
        (4, 5), (6, 7), (2, 4), (3, 5), (1, 4), (3, 6), (1, 2), (3, 4), (5, 6)),
}


def _sort_stack(data: np.ndarray) -> None:
    """Sort a stack of images along axis 0 in place.

    The few-image stacks of a visit (2-8 exposures per filter) are sorted with an element-wise
    min/max network, several times faster than ``ndarray.sort`` along the outer axis (which
    sorts each pixel's few values with a call of its own: 8 exposures of a UVIS grid, ~11 s of
    CPU against ~4 s); the result is identical (the values hold no NaN: invalid ones are
    ``inf``).
    """
    network = _NETWORKS.get(data.shape[0])
    if network is None:
        data.sort(axis=0)
        return
    for i, j in network:
        low = np.minimum(data[i], data[j])
        np.maximum(data[i], data[j], out=data[j])
        data[i] = low


def combine_images(images: Sequence[np.ndarray], weights: Sequence[np.ndarray], *,
                   combine_type: str = "median", nlow: int = 0, nhigh: int = 0,
                   maskpt: float = 0.3, nsigma: tuple[float, float] = (4.0, 3.0),
                   grow: int = 1, lthresh: float | None = None, hthresh: float | None = None,
                   noise_electrons: tuple[float, float, float] | None = None,
                   weight_medians: Sequence[float] | None = None,
                   valid_weights: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Combine separately drizzled images into the median (or minmed) image.

    Parameters
    ----------
    images, weights : sequences of 2-D arrays (same shape)
        Separately drizzled count rates and their weight maps (a block of rows is fine).
    combine_type : {'median', 'mean', 'minmed', 'imedian', 'imean', 'iminmed'}
    nlow, nhigh : int
        Lowest/highest valid values rejected per pixel (only while at least two remain beyond
        the rejected ones, so two images are never reduced to their minimum).
    maskpt : float
        A pixel of an image is invalid where its weight is below ``maskpt`` times the median
        weight of that image (``weight_medians``, else computed from ``weights``).
    nsigma : pair of float
        minmed: use the minimum where ``median - minimum > nsigma[0] * sigma``, and
        ``nsigma[1]`` next to such pixels (``grow`` box).
    lthresh, hthresh : float, optional
        Values outside are invalid.
    noise_electrons : tuple, optional
        ``(exptime, readnoise, sky_rate)`` of the noise model used by minmed.
    valid_weights : sequence of 2-D arrays, optional
        Weights the ``maskpt`` test is applied to instead of ``weights`` (a pixel must still
        have ``weights > 0``). The second driz_cr pass gives the weights drizzled *without*
        the first pass's CR masks: a grid pixel that only lost part of its weight to a masked
        cosmic ray keeps its (clean) value in the median instead of leaving the other
        exposure, which may hold a CR at the same place, alone in it.

    Returns
    -------
    ndarray, float32
        The combined image; 0 where no image is valid.

    Notes
    -----
    minmed: a partially covered pixel (weight below its image's median weight: a masked input
    pixel, a bad column) is the average of only part of the output pixel's area, so near a
    star its value can be off by up to about the pixel-to-pixel variation there. Such a
    pixel is used as the minimum only when the difference also exceeds that resampling
    error, ``(1 - w / median_weight) * qderiv``, added in quadrature to its noise: otherwise
    a bad column on a star core in one exposure makes the median too low there and driz_cr
    flags the other exposures' real peak.
    """
    stack = np.stack([np.asarray(a, np.float32) for a in images])
    wstack = np.stack([np.asarray(w, np.float32) for w in weights])
    if weight_medians is None:
        weight_medians = [float(np.median(w[w > 0])) if np.any(w > 0) else 0.0 for w in wstack]
    vstack = wstack if valid_weights is None else \
        np.stack([np.asarray(w, np.float32) for w in valid_weights])
    valid = np.stack([w > maskpt * m for w, m in zip(vstack, weight_medians)])
    valid &= (wstack > 0) & ~np.isnan(stack)
    if lthresh is not None:
        valid &= stack >= lthresh
    if hthresh is not None:
        valid &= stack <= hthresh
    n = stack.shape[0]
    nvalid = valid.sum(axis=0, dtype=np.int8 if n < 128 else np.int64)
    kind = combine_type.lstrip("i")
    data = np.where(valid, stack, np.inf)
    _sort_stack(data)  # invalid (inf) last
    if kind == "mean":
        reject = nvalid > (nlow + nhigh + 1)
        lo = np.where(reject, nlow, 0)
        hi = np.where(reject, nvalid - nhigh, nvalid)
        count = np.maximum(hi - lo, 1)
        idx = np.arange(n)[:, None, None]
        use = (idx >= lo) & (idx < hi)
        combined = np.where(use, data, 0).sum(axis=0) / count
    else:
        combined = _middle(data, nvalid, nlow, nhigh)
    combined = np.where(nvalid > 0, combined, 0.0).astype(np.float32)
    if kind == "minmed":
        minimum = np.where(nvalid > 0, data[0], 0.0)
        exptime, readnoise, sky = noise_electrons or (1.0, 0.0, 0.0)
        # noise of the minimum image, in e-/s
        sigma = np.sqrt(np.abs(minimum + sky) * exptime + readnoise**2) / max(exptime, 1e-9)
        diff = combined - minimum
        sigma = _add_resampling_error(sigma, diff > nsigma[1] * sigma, stack, wstack, valid,
                                      weight_medians)
        strong = (diff > nsigma[0] * sigma) & (nvalid > 1)
        near = grow_mask(strong, max(3, 2 * grow + 1)) if grow > 0 else strong
        use_min = strong | (near & (diff > nsigma[1] * sigma) & (nvalid > 1))
        combined = np.where(use_min, minimum, combined).astype(np.float32)
    return combined


def _middle(data: np.ndarray, nvalid: np.ndarray, nlow: int, nhigh: int) -> np.ndarray:
    """The median of each pixel's sorted valid values (``data``, invalid last) after dropping
    ``nlow``/``nhigh`` of them (while more than ``nlow + nhigh + 1`` are valid): the mean of
    the one or two middle values. Which values those are depends on the pixel's count of valid
    values alone, so each count's pair is looked up, instead of indexing every pixel."""
    n = data.shape[0]
    pairs = {}
    for valid in range(n + 1):
        lo, hi = (nlow, valid - nhigh) if valid > nlow + nhigh + 1 else (0, valid)
        count = max(hi - lo, 1)
        pair = (min(max(lo + (count - 1) // 2, 0), n - 1), min(max(lo + count // 2, 0), n - 1))
        pairs.setdefault(pair, []).append(valid)
    combined = None
    for (i1, i2), counts in pairs.items():
        value = 0.5 * (data[i1] + data[i2])
        if combined is None:
            combined = value
        else:
            combined = np.where(np.isin(nvalid, counts), value, combined)
    return combined


def _add_resampling_error(sigma: np.ndarray, candidates: np.ndarray, stack: np.ndarray,
                          wstack: np.ndarray, valid: np.ndarray,
                          weight_medians: Sequence[float]) -> np.ndarray:
    """``sigma`` with the resampling error of a partially covered minimum added (minmed).

    Evaluated only at ``candidates`` (pixels where the minimum may be used), so the cost is
    negligible: the error is ``(1 - coverage) * qderiv`` of the image that holds the minimum.
    """
    ys, xs = np.nonzero(candidates)
    if ys.size == 0:
        return sigma
    values = np.where(valid[:, ys, xs], stack[:, ys, xs], np.inf)
    which = np.argmin(values, axis=0)
    medians = np.asarray(weight_medians, np.float32)
    coverage = wstack[which, ys, xs] / np.maximum(medians[which], 1e-30)
    partial = coverage < 0.999
    if not partial.any():
        return sigma
    ys, xs, which, coverage = ys[partial], xs[partial], which[partial], coverage[partial]
    deriv = _quick_derivative_at(stack, ys, xs, layers=which)
    sigma = np.array(sigma, np.float32, copy=True)
    sigma[ys, xs] = np.hypot(sigma[ys, xs], (1.0 - coverage) * deriv)
    return sigma


class ElectronImage:
    """A chip in electrons, ``(sci - sky) * exptime`` in float32, computed where indexed.

    driz_cr reads the chip at a few percent of its pixels (and by blocks of rows once): this
    stands for the chip-sized float32 image (34 MB per UVIS chip in a worker's peak) with the
    same float32 operations, so the same values.
    """

    def __init__(self, sci: np.ndarray, sky: float, exptime: float):
        self.sci = sci
        self.sky = np.float32(sky)
        self.exptime = np.float32(exptime)
        self.shape = sci.shape

    def __getitem__(self, key) -> np.ndarray:
        values = self.sci[key] - self.sky
        values *= self.exptime
        return values


class _Pixels:
    """A chip and its blot (electrons, float32) with driz_cr's per-pixel quantities computed
    only where asked: ``signed = sci - blot``, ``level = max(blot, 0)`` and ``noise =
    sqrt(|blot + sky| + readnoise^2)``, each with the same float32 operations as over the whole
    chip (so the same values). Most tests touch a few percent of a chip: full-chip images of
    these cost ~0.1 s and 34 MB each per UVIS chip."""

    def __init__(self, sci: np.ndarray, blot: np.ndarray, sky: float, readnoise: float):
        self.sci = sci if isinstance(sci, ElectronImage) else np.asarray(sci, np.float32)
        self.blot = np.asarray(blot, np.float32)
        self.sky = sky
        self.rn2 = readnoise**2
        self.shape = self.blot.shape

    def signed(self, ys, xs):
        return self.sci[ys, xs] - self.blot[ys, xs]

    def level(self, ys, xs):
        return np.clip(self.blot[ys, xs], 0.0, None).astype(np.float32)

    def noise(self, ys, xs):
        return np.sqrt(np.abs(self.blot[ys, xs] + self.sky) + self.rn2)

    def box(self, kind: str, ys: np.ndarray, xs: np.ndarray, size: int) -> np.ndarray:
        """Values of ``kind`` in the ``size x size`` box around each (ys, xs): shape
        ``(n, size**2)``; NaN outside the chip."""
        half = size // 2
        dy, dx = np.mgrid[-half:half + 1, -half:half + 1]
        yy = ys[:, None] + dy.ravel()[None, :]
        xx = xs[:, None] + dx.ravel()[None, :]
        ny, nx = self.shape
        inside = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        values = getattr(self, kind)(np.clip(yy, 0, ny - 1), np.clip(xx, 0, nx - 1))
        return np.where(inside, values, np.nan)

    def at_peak(self, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
        """True where ``level`` is at least ``_PEAK_LEVEL`` of the maximum of its 3x3 box
        (by blocks of `_CHUNK` pixels: the bright pixels of a crowded chip are many, and their
        boxes' temporaries cost ~100 MB of a worker's peak in one go)."""
        peak = np.zeros(ys.size, bool)
        for start in range(0, ys.size, _CHUNK):
            py, px = ys[start:start + _CHUNK], xs[start:start + _CHUNK]
            peak[start:start + _CHUNK] = self.level(py, px) >= _PEAK_LEVEL * np.nanmax(
                self.box("level", py, px, 3), axis=1)
        return peak

    def above(self, values, factor: float, *, margin: float = 0.999, rows: int = 256):
        """Pixels (a superset, then exactly) where ``values > factor * noise``: compared
        squared (no square root), then exactly at the few that pass the slightly lower
        threshold.

        ``values`` is a chip-sized image or a function of ``(start, stop)`` giving those rows
        of it. The chip is taken ``rows`` rows at a time: the same element-wise float32
        operations as over the whole chip, without chip-sized temporaries (~100 MB of a
        worker's peak per UVIS chip).
        """
        found_y, found_x = [], []
        for start in range(0, self.shape[0], rows):
            stop = min(self.shape[0], start + rows)
            block = values(start, stop) if callable(values) else values[start:stop]
            noise2 = self.blot[start:stop] + self.sky
            np.abs(noise2, out=noise2)
            noise2 += self.rn2
            noise2 *= margin * factor * factor
            ys, xs = np.nonzero((block > 0) & (block * block > noise2))
            del noise2
            keep = block[ys, xs] > factor * self.noise(ys + start, xs)
            found_y.append(ys[keep] + start)
            found_x.append(xs[keep])
        if not found_y:
            empty = np.zeros(0, np.intp)
            return empty, empty
        return np.concatenate(found_y), np.concatenate(found_x)


def _calibrated_fraction(pixels: _Pixels, usable: np.ndarray | None
                         ) -> tuple[float, float, float] | None:
    """Excess-test fractions measured on one chip (see `calibrate_excess_fraction`)."""
    ys, xs = pixels.above(pixels.blot, _CALIBRATION_SNR)   # level > 30 noise
    if usable is not None:
        keep = usable[ys, xs]
        ys, xs = ys[keep], xs[keep]
    slope = ~pixels.at_peak(ys, xs)
    ys, xs = ys[slope], xs[slope]
    if ys.size < _CALIBRATION_MIN_PIXELS:
        log.debug("driz_cr excess test off: %d bright slope pixels (< %d)", ys.size,
                  _CALIBRATION_MIN_PIXELS)
        return None
    q95 = float(np.percentile(pixels.signed(ys, xs) / pixels.level(ys, xs), 95.0))
    fraction = float(np.clip(_CALIBRATION_FACTOR * q95, *_SLOPE_FRACTION_RANGE))
    log.debug("driz_cr excess test: slope fraction %.3f (q95 %.3f of %d pixels)", fraction,
              q95, ys.size)
    return fraction, _PEAK_FACTOR * fraction, _BOX_FRACTION


def _excess_test(pixels: _Pixels, ys, xs, strict, loose, *, snr, scale, fraction, usable,
                 valid) -> None:
    """Add the excess test's failures to ``strict`` and ``loose`` (in place).

    ``(ys, xs)`` are the pixels whose absolute difference exceeds ``min(snr) * noise``: every
    candidate of the test (a positive difference above the loosest threshold, whose tolerance
    ``lowest * level`` is >= 0) is among them, a few percent of a chip, so the 3x3 peak and 5x5
    flux boxes cost little.
    """
    if valid is not None:
        usable = valid if usable is None else (usable & valid)
    if isinstance(fraction, str):
        fraction = _calibrated_fraction(pixels, usable)
        if fraction is None:
            return
    slope, peak, box_fraction = (float(v) for v in fraction)
    loose_scale = scale[1] / scale[0] if scale[0] > 0 else 1.0
    lowest = loose_scale * min(slope, peak)
    value, lev, sigma = pixels.signed(ys, xs), pixels.level(ys, xs), pixels.noise(ys, xs)
    candidates = value > lowest * lev + min(snr) * sigma
    if usable is not None:
        candidates &= usable[ys, xs]
    ys, xs = ys[candidates], xs[candidates]
    if ys.size == 0:
        return
    value, lev, sigma = value[candidates], lev[candidates], sigma[candidates]
    at_peak = pixels.at_peak(ys, xs)
    tolerance = np.where(at_peak, peak, slope) * lev
    # at a peak the pixel must also add flux to its 5x5 box: resampling only moves flux
    # between the peak and its wings, a cosmic ray brings its own
    ok = ~at_peak
    peaks = np.flatnonzero(at_peak)
    for start in range(0, peaks.size, _CHUNK):  # bounded memory on crowded chips
        index = peaks[start:start + _CHUNK]
        py, px = ys[index], xs[index]
        excess = np.nansum(pixels.box("signed", py, px, _BOX), axis=1)
        flux = np.nansum(pixels.box("level", py, px, _BOX), axis=1)
        box_noise = np.sqrt(np.nansum(pixels.box("noise", py, px, _BOX) ** 2, axis=1))
        ok[index] = excess > box_fraction * flux + 2.0 * box_noise
    strict[ys, xs] |= ok & (value > tolerance + snr[0] * sigma)
    loose[ys, xs] |= ok & (value > loose_scale * tolerance + snr[1] * sigma)


def calibrate_excess_fraction(sci_electrons: np.ndarray, blot_electrons: np.ndarray, *,
                              sky_electrons: float = 0.0, readnoise: float = 0.0,
                              usable: np.ndarray | None = None
                              ) -> tuple[float, float, float] | None:
    """Fractions of the excess test of `detect_cosmic_rays`, measured on one chip.

    The resampling error of the blot is a fraction of the signal that depends on how
    undersampled the PSF is (larger for ACS/WFC than for WFC3/UVIS). It is measured where the
    blot is bright (> 30 sigma) on slopes of the blot: the slope fraction is
    ``3.5 x`` the 95th percentile of ``(sci - blot) / blot`` there (cosmic rays, ~1-2% of the
    pixels, barely move it; on hapsim stars this lands just above the largest clean excess),
    clipped to [0.2, 1]; the peak fraction is twice it; the box fraction is 0.15.

    Parameters
    ----------
    sci_electrons, blot_electrons : 2-D arrays
        Sky-subtracted chip (or an `ElectronImage`) and its blotted median, electrons.
    sky_electrons, readnoise : float
        Noise model, as in `detect_cosmic_rays`.
    usable : ndarray of bool, optional
        Pixels that may be measured (see ``regular`` of `detect_cosmic_rays`).

    Returns
    -------
    tuple of float or None
        ``(slope, peak, box)``; None when fewer than 300 bright slope pixels (no stars to
        measure on: the excess test is then left off).
    """
    return _calibrated_fraction(_Pixels(sci_electrons, blot_electrons, sky_electrons,
                                        readnoise), usable)


def quick_derivative(image: np.ndarray) -> np.ndarray:
    """AstroDrizzle's ``qderiv``: sqrt(max|dx|^2 + max|dy|^2) of the four nearest neighbours."""
    image = np.asarray(image, np.float32)
    padded = np.pad(image, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    dx = np.maximum(np.abs(centre - padded[1:-1, :-2]), np.abs(centre - padded[1:-1, 2:]))
    dy = np.maximum(np.abs(centre - padded[:-2, 1:-1]), np.abs(centre - padded[2:, 1:-1]))
    return np.sqrt(dx * dx + dy * dy)


def _quick_derivative_at(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, *,
                         layers: np.ndarray | None = None) -> np.ndarray:
    """`quick_derivative` of ``image`` at pixels ``(ys, xs)`` only (same values).

    With ``layers``, ``image`` is a stack and each pixel is taken from its own layer.
    """
    ny, nx = image.shape[-2:]
    lead = () if layers is None else (layers,)
    centre = image[lead + (ys, xs)]

    def step(dy, dx):
        return np.abs(centre - image[lead + (np.clip(ys + dy, 0, ny - 1),
                                             np.clip(xs + dx, 0, nx - 1))])

    dx = np.maximum(step(0, -1), step(0, 1))
    dy = np.maximum(step(-1, 0), step(1, 0))
    return np.sqrt(dx * dx + dy * dy)


def detect_cosmic_rays(sci_electrons: np.ndarray, blot_electrons: np.ndarray, *,
                       sky_electrons: float = 0.0, readnoise: float = 0.0,
                       snr: tuple[float, float] = (5.0, 4.0),
                       scale: tuple[float, float] = (3.0, 2.4), grow: int = 1,
                       valid: np.ndarray | None = None, regular: np.ndarray | None = None,
                       excess_fraction: tuple[float, float, float] | str | None = None
                       ) -> np.ndarray:
    """Cosmic-ray mask of one chip against its blotted median (driz_cr).

    Parameters
    ----------
    sci_electrons : 2-D array or ElectronImage
        Sky-subtracted chip, electrons.
    blot_electrons : 2-D array
        The median image blotted to the chip, electrons (sky-subtracted).
    sky_electrons : float
        Sky added back for the Poisson noise.
    readnoise : float
        Read noise, electrons.
    snr, scale : pairs of float
        ``driz_cr_snr`` and ``driz_cr_scale``.
    grow : int
        ``driz_cr_grow`` box size.
    valid : ndarray of bool, optional
        Where the blot is meaningful (covered by the median); elsewhere no CR is flagged.
    regular : ndarray of bool, optional
        Where the excess test may be applied (see Notes): pixels whose value and blot can be
        trusted to a fraction of the signal (not saturated, not next to a masked pixel).
    excess_fraction : (float, float, float) or 'auto', optional
        Enables the excess test (see Notes): ``(slope, peak, box)`` fractions of the blot a
        pixel on a slope of the blot / at a local maximum of it may exceed it by, and the
        fraction of its 5x5 box flux a peak pixel's box must gain. 'auto': measured on this
        chip (`calibrate_excess_fraction`); if too few bright pixels, no excess test. None
        (default): AstroDrizzle's test only.

    Returns
    -------
    ndarray of bool
        True at cosmic-ray pixels.

    Notes
    -----
    The derivative term ``scale * qderiv(blot)`` tolerates a difference of the order of the
    pixel-to-pixel variation of the blot, so on stars (and on their steep wings, where the
    variation is of the order of the value itself) cosmic rays survive it. The excess test
    adds a second way to fail: a *positive* difference above ``snr * noise`` plus a fraction
    of the blot itself. Resampling (drizzle, then blot) of an undersampled PSF errs by a
    fraction of the signal: peaks of the blot come out too low by up to ~60% while a pixel on
    a slope is rarely more than ~20% (UVIS) to ~40% (ACS/WFC) above its blot, so a slope
    pixel (``blot < 0.7 * max`` of its 3x3 neighbourhood) gets the ``slope`` fraction and a
    peak the larger ``peak`` fraction, and a peak must also add flux to its 5x5 box (more
    than ``box`` times the box flux): resampling only moves flux between a peak and its
    wings, a cosmic ray brings its own. The test is positive-only: negative differences are
    resampling errors or a CR in another exposure. ``regular`` keeps it away from saturated
    and dropped pixels, whose neighbourhoods the blot does not represent to a fraction.
    """
    pixels = _Pixels(sci_electrons, blot_electrons, sky_electrons, readnoise)

    def difference(start, stop):
        rows = pixels.sci[start:stop] - pixels.blot[start:stop]
        return np.abs(rows, out=rows)

    # every later test raises the threshold above min(snr) * noise: the pixels that pass it
    # (a few percent of a chip) are the only ones evaluated further
    ys, xs = pixels.above(difference, min(snr))
    deriv = _quick_derivative_at(pixels.blot, ys, xs)
    shape = pixels.shape
    strict = np.zeros(shape, bool)
    loose = np.zeros(shape, bool)
    d, n = np.abs(pixels.signed(ys, xs)), pixels.noise(ys, xs)
    strict[ys, xs] = d > scale[0] * deriv + snr[0] * n
    loose[ys, xs] = d > scale[1] * deriv + snr[1] * n
    if excess_fraction is not None:
        _excess_test(pixels, ys, xs, strict, loose, snr=snr, scale=scale,
                     fraction=excess_fraction, usable=regular, valid=valid)
    # a loose failure is a cosmic ray when it or a neighbour failed the strict test
    ly, lx = np.nonzero(loose)
    near = np.zeros(ly.size, bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            yy, xx = ly + dy, lx + dx
            inside = (yy >= 0) & (yy < shape[0]) & (xx >= 0) & (xx < shape[1])
            near |= inside & strict[np.clip(yy, 0, shape[0] - 1), np.clip(xx, 0, shape[1] - 1)]
    if valid is not None:
        near &= valid[ly, lx]
    cr = np.zeros(shape, bool)
    cr[ly[near], lx[near]] = True
    return grow_mask(cr, grow)
