"""Cosmic rays of a single exposure: Laplacian edge detection (L.A.Cosmic).

A filter with one exposure has no second image to compare with, so AstroDrizzle's median /
blot / driz_cr sequence cannot run; drizzlepac flags such an exposure ``crclean`` and means to
mark its cosmic rays in the DQ array, but its code never does (spec §5.6, dead code), so every
cosmic ray reaches the drizzled products and the catalogs: a full-frame 1 x WFC3/UVIS visit
gave 101k point-catalog detections, most of them cosmic rays, and its catalog stage took 123 s
and 4.2 GB.

:func:`find_single_exposure_cosmic_rays` is van Dokkum's (2001, PASP 113, 1420) L.A.Cosmic,
vectorised: the Laplacian of the 2x subsampled image (positive part, computed in closed form
without subsampling), in units of the local Poisson + read noise, minus its 5x5 median (large
structures), above ``sigclip``; and sharper than the image's fine structure (the 3x3 median
minus its 7x7 median) by ``objlim``, which keeps star cores; then neighbours above
``sigclip`` and their neighbours above ``sigfrac * sigclip``. Each further iteration repairs
the pixels found with the local level and searches again around them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["laplacian_positive", "find_single_exposure_cosmic_rays", "SingleExposureCRJob",
           "flag_single_exposure_chip"]

log = logging.getLogger(f"hapsvm.{__name__}")

_SQUARE = np.ones((3, 3), bool)
#: DQ bits of saturation (full well 256, A-to-D 2048) on WFC3 and ACS
_SATURATED_BITS = np.uint32(256 | 2048)


def laplacian_positive(image: np.ndarray) -> np.ndarray:
    """L+ of L.A.Cosmic: the positive part of the Laplacian of the image subsampled 2 x 2,
    averaged back onto the original pixels.

    A subsampled pixel's Laplacian (kernel ``[[0,-1,0],[-1,4,-1],[0,-1,0]]``) has two
    neighbours in its own block (same value) and two in the adjacent blocks, so it equals
    ``2 v - v_vertical - v_horizontal``; the four quadrants of a pixel pair its up/down and
    left/right neighbours. Edges repeat the border values.
    """
    v = np.asarray(image, np.float32)
    padded = np.pad(v, 1, mode="edge")
    up, down = padded[:-2, 1:-1], padded[2:, 1:-1]
    left, right = padded[1:-1, :-2], padded[1:-1, 2:]
    twice = 2.0 * v
    total = np.zeros_like(v)
    for vertical in (up, down):
        for horizontal in (left, right):
            total += np.maximum(twice - vertical - horizontal, 0.0)
    return total * np.float32(0.25)


def _median_at(image: np.ndarray, ys: np.ndarray, xs: np.ndarray, size: int,
               chunk: int = 131072) -> np.ndarray:
    """The ``size`` x ``size`` median of ``image`` at the pixels (ys, xs) only (edges: nearest):
    a full-frame median filter of a 4k x 2k chip costs seconds, and only the candidates'
    values are needed."""
    half = size // 2
    padded = np.pad(image, half, mode="edge")
    dy, dx = np.mgrid[0:size, 0:size]
    dy, dx = dy.ravel(), dx.ravel()
    out = np.empty(ys.size, np.float32)
    for start in range(0, ys.size, chunk):
        y, x = ys[start:start + chunk], xs[start:start + chunk]
        out[start:start + chunk] = np.median(padded[y[:, None] + dy, x[:, None] + dx], axis=1)
    return out


def _local_level(data: np.ndarray) -> np.ndarray:
    """A cosmic-ray-proof local level for the noise model: the 3 x 3 median of the 2 x 2 block
    means (a 6 x 6 pixel scale; a block hit by a cosmic ray is one of nine), replicated back
    (L.A.Cosmic uses a 5 x 5 median, 20x slower on a full chip)."""
    ny, nx = data.shape
    py, px = ny + ny % 2, nx + nx % 2
    padded = np.pad(data, ((0, py - ny), (0, px - nx)), mode="edge")
    blocks = padded.reshape(py // 2, 2, px // 2, 2).mean(axis=(1, 3))
    level = ndimage.median_filter(blocks, size=3, mode="nearest")
    return np.repeat(np.repeat(level, 2, axis=0), 2, axis=1)[:ny, :nx]


def _detect(data, readnoise, *, sigclip, sigfrac, objlim, grow_objlim, usable):
    """One L.A.Cosmic search of ``data`` (electrons)."""
    noise = np.sqrt(np.maximum(_local_level(data), 1e-4) + np.float32(readnoise) ** 2)
    significance = laplacian_positive(data) / (2.0 * noise)
    low = sigfrac * sigclip
    # S' = S - median5(S) <= S (S >= 0): only pixels with S above the lower limit can pass
    faint = (significance > low) & usable
    ys, xs = np.nonzero(faint)
    if ys.size == 0:
        return np.zeros(data.shape, bool)
    sharp = np.zeros(data.shape, np.float32)
    sharp[ys, xs] = significance[ys, xs] - _median_at(significance, ys, xs, 5)
    del significance
    faint &= sharp > low
    above = faint & (sharp > sigclip)
    if not above.any():
        return np.zeros(data.shape, bool)
    # the contrast with the fine structure (3 x 3 median minus the 7 x 7 median of that),
    # where it can matter: above sigclip, and the faint pixels two steps from them
    reach = faint & ndimage.binary_dilation(above, _SQUARE, iterations=2)
    cy, cx = np.nonzero(reach)
    median3 = ndimage.median_filter(data, size=3, mode="nearest")
    fine = (median3[cy, cx] - _median_at(median3, cy, cx, 7)) / noise[cy, cx]
    contrast = np.zeros(data.shape, np.float32)
    contrast[cy, cx] = sharp[cy, cx] / np.maximum(fine, 0.01)
    flagged = above & (contrast > objlim)
    # the cores of cosmic rays spread: their neighbours above sigclip, then the neighbours of
    # those above the lower threshold; a neighbour must still be sharper than the image's fine
    # structure by grow_objlim, or a cosmic ray next to a star spreads into its core
    # (L.A.Cosmic grows without that test: 1.5% of an undersampled star field's light lost)
    grown = ndimage.binary_dilation(flagged, _SQUARE) & above & (contrast > grow_objlim)
    return ndimage.binary_dilation(grown, _SQUARE) & faint & (contrast > grow_objlim) | flagged


def find_single_exposure_cosmic_rays(electrons: np.ndarray, *, readnoise: float,
                                     bad: np.ndarray | None = None, sigclip: float = 4.5,
                                     sigfrac: float = 0.3, objlim: float = 5.0,
                                     grow_objlim: float = 3.0, iterations: int = 2,
                                     margin: int = 4) -> np.ndarray:
    """Cosmic-ray pixels of one exposure's chip (L.A.Cosmic).

    Parameters
    ----------
    electrons : 2-D ndarray
        The chip in electrons, sky included (the Poisson noise is estimated from it).
    readnoise : float
        Read noise (electrons).
    bad : 2-D bool ndarray, optional
        Pixels already excluded (DQ): never flagged, and repaired (local level) before the
        search so that their edges are not taken for cosmic rays.
    sigclip : float, optional
        Detection limit of the Laplacian significance (noise units).
    sigfrac : float, optional
        Fraction of ``sigclip`` for the neighbours of cosmic-ray pixels.
    objlim : float, optional
        Contrast between the Laplacian and the fine structure: stars (whose cores have fine
        structure) stay below it.
    grow_objlim : float, optional
        The same contrast for the neighbours added to a cosmic ray (noiseless undersampled star
        cores: 0.6-3.1).
    iterations : int, optional
        Searches; each after the first repairs the pixels found and searches again within
        ``margin`` pixels of them.
    margin : int, optional

    Returns
    -------
    2-D bool ndarray
    """
    data = np.array(electrons, dtype=np.float32)
    usable = np.isfinite(data)
    if bad is not None:
        usable &= ~bad
    if not usable.all():
        data[~np.isfinite(data)] = 0.0
        data[~usable] = _local_level(data)[~usable]
    mask = _detect(data, readnoise, sigclip=sigclip, sigfrac=sigfrac, objlim=objlim,
                   grow_objlim=grow_objlim, usable=usable)
    found = mask
    for _ in range(1, iterations):
        if not found.any():
            break
        # repair what was found with the local level and look again around it: a cosmic
        # ray's fainter pixels next to its core, hidden by the core's Laplacian
        data[found] = _local_level(data)[found]
        near = ndimage.binary_dilation(found, _SQUARE, iterations=margin)
        found = _detect(data, readnoise, sigclip=sigclip, sigfrac=sigfrac, objlim=objlim,
                        grow_objlim=grow_objlim, usable=usable & near & ~mask)
        mask |= found
    return mask




# ------------------------------------------------------------------- the drizzle stage's job

@dataclass(frozen=True)
class SingleExposureCRJob:
    """Find the cosmic rays of ``path[SCI, extver]`` and save the mask to ``mask_file``
    (pixels outside ``good_bits`` are left out of the search)."""

    path: Path
    extver: int
    mask_file: Path
    good_bits: int
    sigclip: float
    objlim: float


def flag_single_exposure_chip(job: SingleExposureCRJob) -> tuple[int, int]:
    """Run :func:`find_single_exposure_cosmic_rays` on one chip; returns (flagged, pixels)."""
    from hapcore.drizzle.inputs import good_pixel_mask, read_chip
    from hapcore.drizzle.jobs import save_mask

    chip = read_chip(job.path, job.extver, err=False)
    electrons = chip.sci
    electrons *= np.float32(max(chip.exptime, 1e-9))
    # saturated pixels (and their neighbours: a plateau's edge is as sharp as a cosmic ray)
    # are never cosmic rays, even where the final drizzle keeps them (final_bits 65535)
    saturated = ndimage.binary_dilation((chip.dq & _SATURATED_BITS) != 0, _SQUARE)
    bad = ~good_pixel_mask(chip.dq, job.good_bits) | ~chip.finite | saturated
    mask = find_single_exposure_cosmic_rays(electrons, readnoise=chip.readnoise, bad=bad,
                                            sigclip=job.sigclip, objlim=job.objlim)
    save_mask(job.mask_file, mask)
    log.debug("%s[SCI,%d]: %d single-exposure cosmic-ray pixels (L.A.Cosmic)",
              Path(job.path).name, job.extver, int(mask.sum()))
    return int(mask.sum()), int(mask.size)
