"""Cosmic-ray rejection: static mask, median/minmed combination, driz_cr (AstroDrizzle steps 1, 4, 6).

Pure array functions. Images are count rates (e-/s) unless a name says electrons; boolean masks
are True where a pixel is *bad* (static, cosmic ray), weights are >= 0.

The driz_cr test follows AstroDrizzle's ``drizCR``: a pixel differs from the blotted median by
more than ``scale * derivative + snr * noise``; pixels that fail the strict first pair
(``driz_cr_snr[0]``, ``driz_cr_scale[0]``) mark their 3x3 neighbourhood, inside which the looser
second pair decides; the result is grown by ``driz_cr_grow``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = [
    "static_mask",
    "combine_images",
    "quick_derivative",
    "detect_cosmic_rays",
    "grow_mask",
]

log = logging.getLogger("hapsvm")


def grow_mask(mask: np.ndarray, grow: int) -> np.ndarray:
    """Grow a boolean mask by a ``grow x grow`` box (``grow`` <= 1: unchanged)."""
    if grow <= 1:
        return mask
    return ndimage.binary_dilation(mask, structure=np.ones((grow, grow), bool))


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


def combine_images(images: Sequence[np.ndarray], weights: Sequence[np.ndarray], *,
                   combine_type: str = "median", nlow: int = 0, nhigh: int = 0,
                   maskpt: float = 0.3, nsigma: tuple[float, float] = (4.0, 3.0),
                   grow: int = 1, lthresh: float | None = None, hthresh: float | None = None,
                   noise_electrons: tuple[float, float, float] | None = None,
                   weight_medians: Sequence[float] | None = None) -> np.ndarray:
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

    Returns
    -------
    ndarray, float32
        The combined image; 0 where no image is valid.
    """
    stack = np.stack([np.asarray(a, np.float32) for a in images])
    wstack = np.stack([np.asarray(w, np.float32) for w in weights])
    if weight_medians is None:
        weight_medians = [float(np.median(w[w > 0])) if np.any(w > 0) else 0.0 for w in wstack]
    valid = np.stack([w > maskpt * m for w, m in zip(wstack, weight_medians)])
    valid &= wstack > 0
    if lthresh is not None:
        valid &= stack >= lthresh
    if hthresh is not None:
        valid &= stack <= hthresh
    nvalid = valid.sum(axis=0)
    kind = combine_type.lstrip("i")
    data = np.where(valid, stack, np.inf)
    data.sort(axis=0)  # invalid (inf) last
    reject = nvalid > (nlow + nhigh + 1)
    lo = np.where(reject, nlow, 0)
    hi = np.where(reject, nvalid - nhigh, nvalid)
    count = np.maximum(hi - lo, 1)
    if kind == "mean":
        idx = np.arange(stack.shape[0])[:, None, None]
        use = (idx >= lo) & (idx < hi)
        combined = np.where(use, data, 0).sum(axis=0) / count
    else:
        i1 = np.clip(lo + (count - 1) // 2, 0, stack.shape[0] - 1)
        i2 = np.clip(lo + count // 2, 0, stack.shape[0] - 1)
        v1 = np.take_along_axis(data, i1[None], 0)[0]
        v2 = np.take_along_axis(data, i2[None], 0)[0]
        combined = 0.5 * (v1 + v2)
    combined = np.where(nvalid > 0, combined, 0.0).astype(np.float32)
    if kind == "minmed":
        minimum = np.where(nvalid > 0, data[0], 0.0)
        exptime, readnoise, sky = noise_electrons or (1.0, 0.0, 0.0)
        # noise of the minimum image, in e-/s
        sigma = np.sqrt(np.abs(minimum + sky) * exptime + readnoise**2) / max(exptime, 1e-9)
        diff = combined - minimum
        strong = (diff > nsigma[0] * sigma) & (nvalid > 1)
        near = grow_mask(strong, max(3, 2 * grow + 1)) if grow > 0 else strong
        use_min = strong | (near & (diff > nsigma[1] * sigma) & (nvalid > 1))
        combined = np.where(use_min, minimum, combined).astype(np.float32)
    return combined


def quick_derivative(image: np.ndarray) -> np.ndarray:
    """AstroDrizzle's ``qderiv``: sqrt(max|dx|^2 + max|dy|^2) of the four nearest neighbours."""
    image = np.asarray(image, np.float32)
    padded = np.pad(image, 1, mode="edge")
    centre = padded[1:-1, 1:-1]
    dx = np.maximum(np.abs(centre - padded[1:-1, :-2]), np.abs(centre - padded[1:-1, 2:]))
    dy = np.maximum(np.abs(centre - padded[:-2, 1:-1]), np.abs(centre - padded[2:, 1:-1]))
    return np.sqrt(dx * dx + dy * dy)


def detect_cosmic_rays(sci_electrons: np.ndarray, blot_electrons: np.ndarray, *,
                       sky_electrons: float = 0.0, readnoise: float = 0.0,
                       snr: tuple[float, float] = (5.0, 4.0),
                       scale: tuple[float, float] = (3.0, 2.4), grow: int = 1,
                       valid: np.ndarray | None = None) -> np.ndarray:
    """Cosmic-ray mask of one chip against its blotted median (driz_cr).

    Parameters
    ----------
    sci_electrons : 2-D array
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

    Returns
    -------
    ndarray of bool
        True at cosmic-ray pixels.
    """
    noise = np.sqrt(np.abs(blot_electrons + sky_electrons) + readnoise**2)
    deriv = quick_derivative(blot_electrons)
    diff = np.abs(sci_electrons - blot_electrons)
    strict = diff > scale[0] * deriv + snr[0] * noise
    # good unless a neighbour (or itself) failed the strict test
    neighbours_clean = ndimage.convolve(strict.astype(np.uint8), np.ones((3, 3), np.uint8),
                                        mode="constant") == 0
    loose = diff > scale[1] * deriv + snr[1] * noise
    cr = ~neighbours_clean & loose
    if valid is not None:
        cr &= valid
    return grow_mask(cr, grow)
