"""Source detection per chip for alignment (spec §4.2, done faster and without its dead code).

For each SCI chip: a 2-D background (photutils ``Background2D``), DQ masking (bad pixels and grown
saturated regions), a detection kernel whose FWHM is measured from the data, peaks of the
kernel-convolved image above ``nsigma`` x rms, Gaussian-windowed centroids, a second-moment test
that rejects cosmic rays (sharp or elongated peaks), a cut around saturated stars whose radius grows
with the size of the saturated region (their halos and diffraction spikes break up into many bright
peaks), and the ``max_sources`` brightest survivors.
drizzlepac runs DAOStarFinder once per segment in a Python loop; here every step is vectorised.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from astropy.table import Table
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy.spatial import cKDTree

from hapcore.align.undersampled import (
    UNDERSAMPLED_FWHM_PX,
    refine_undersampled_centroids,
)

__all__ = [
    "SATURATION_BITS",
    "ChipSources",
    "detection_mask",
    "saturated_stars",
    "estimate_fwhm",
    "windowed_centroids",
    "stamp_moments",
    "detect_chip_sources",
]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: DQ bits of full-well (256) and A-to-D (2048) saturation: masked with growth, not as bad pixels.
SATURATION_BITS = 256 | 2048

_STAMP = 5  # half size of the stamps used for centroids and moments (11 x 11 px)
_MOMENT_CHUNK = 1024  # stamps per block in stamp_moments (keeps the temporaries in the cache)
_ROW_BLOCK = 32  # image rows per block of the background interpolation
_PEAK_BLOCK = 128  # image rows per block of the peak search
_GROW_BY_OFFSETS = 200_000  # saturated pixels up to which the mask is grown pixel by pixel

#: Alignment sources closer to the centroid of a saturated region of N pixels than
#: ``_SATURATED_STAR_RADIUS`` x sqrt(N) px are dropped. A brighter star saturates more pixels (core
#: and bleed columns, N ~ flux) and its halo and spikes reach further (the radius at which the PSF
#: wings fall below the detection threshold grows with flux); fragments of them are bright, not
#: point sources, and outnumber the real stars on a chip with many saturated stars. 2.0 drops about
#: half of those fragments on hapsim's "saturated" preset while losing ~5% of the stars.
_SATURATED_STAR_RADIUS = 2.0
#: never less than drizzlepac's 5 px growth of the saturated regions (spec §4.2 step 5)
_SATURATED_MIN_RADIUS = 5.0
#: Smallest saturated region that counts as a saturated star: 5 px, the smallest region with a
#: pixel left after :func:`detection_mask`'s one-pixel erosion. Barely saturated stars (2-4 px)
#: have no bright halo, and are often the best-measured stars of a sparse field.
_SATURATED_MIN_PIXELS = 5
#: saturated pixels closer than this (px, one block) belong to one saturated star
_SATURATED_BLOCK = 4
#: up to this many saturated regions the halo test loops over them, above it uses a k-d tree
_SATURATED_LOOP_MAX = 200

#: ``(dy, dx)`` of a 4-connected ("cross") neighbourhood
_CROSS = ((-1, 0), (1, 0), (0, -1), (0, 1))


@dataclass
class ChipSources:
    """Sources of one chip: a table with ``x, y`` (0-based px), ``flux``, ``peak``, ``mag``."""

    table: Table
    fwhm_px: float
    background_rms: float
    n_cosmic_rays: int


def detection_mask(dq: np.ndarray | None, *, ignore_bits: int = SATURATION_BITS,
                   saturation_grow: int = 5) -> np.ndarray:
    """Pixels not to use: any DQ bit besides saturation, plus saturated regions grown by N px.

    Isolated 1–2 px saturations are ignored (a one-iteration erosion removes them), as drizzlepac
    intends; the polarity is explicit here (True = masked).
    """
    if dq is None:
        return np.zeros((0, 0), bool)
    return _mask_and_saturation(dq, ignore_bits, saturation_grow)[0]


def _mask_and_saturation(dq: np.ndarray, ignore_bits: int = SATURATION_BITS,
                         saturation_grow: int = 5):
    """:func:`detection_mask` and the ``(ys, xs)`` of the saturated pixels (one pass over DQ)."""
    dq, keep_bits, sat_bits = _native_bits(dq, ignore_bits)
    bad = (dq & keep_bits) != 0
    ys, xs = np.nonzero((dq & sat_bits) != 0)
    if len(ys):
        _grow_saturation(bad, ys, xs, saturation_grow)
    return bad, ys, xs


def _native_bits(dq: np.ndarray, ignore_bits: int = SATURATION_BITS):
    """``dq`` in native byte order and the masks of the bits kept and of saturation, in its type."""
    dq = np.asarray(dq)
    if dq.dtype.kind in "iu" and dq.dtype.itemsize <= 8:
        # the bit tests in the file's own integer type (native byte order): no int64 copy
        dq = dq.astype(dq.dtype.newbyteorder("="), copy=False)
        return (dq, ~np.array(ignore_bits).astype(dq.dtype),
                np.array(SATURATION_BITS).astype(dq.dtype))
    return dq.astype(np.int64), ~ignore_bits, SATURATION_BITS


def saturated_stars(dq: np.ndarray, *, block: int = _SATURATED_BLOCK,
                    min_pixels: int = _SATURATED_MIN_PIXELS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centroids and sizes of the saturated regions (DQ bits :data:`SATURATION_BITS`) of a chip.

    Saturated pixels in 8-connected ``block`` x ``block`` px cells form one region (a star's core
    with its bleed columns); the labelling runs on the cell grid, ``block ** 2`` times
    smaller than the chip. Regions of fewer than ``min_pixels`` pixels (hot pixels, cosmic rays,
    barely saturated stars) are left out, as :func:`detection_mask` leaves out regions that its
    one-pixel erosion removes.

    Parameters
    ----------
    dq : ndarray
        DQ array of the chip.
    block : int
        Cell size (px): saturated pixels less than about this far apart are joined.
    min_pixels : int
        Smallest region reported.

    Returns
    -------
    x, y, n_pixels : ndarray
        0-based centroid of each region's saturated pixels and their number.
    """
    dq, _, sat_bits = _native_bits(dq)
    ys, xs = np.nonzero((dq & sat_bits) != 0)
    return _saturated_regions(ys, xs, dq.shape, block=block, min_pixels=min_pixels)


def _saturated_regions(ys: np.ndarray, xs: np.ndarray, shape: tuple[int, int], *,
                       block: int = _SATURATED_BLOCK, min_pixels: int = _SATURATED_MIN_PIXELS):
    """:func:`saturated_stars` from the saturated pixels ``(ys, xs)`` of a chip of ``shape``."""
    if len(ys) == 0:
        return np.zeros(0), np.zeros(0), np.zeros(0, np.intp)
    by, bx = ys // block, xs // block
    cells = np.zeros((shape[0] // block + 1, shape[1] // block + 1), bool)
    cells[by, bx] = True
    labels, n = ndimage.label(cells, structure=np.ones((3, 3), bool))
    region = labels[by, bx] - 1
    n_pixels = np.bincount(region, minlength=n)
    x = np.bincount(region, weights=xs, minlength=n) / np.maximum(n_pixels, 1)
    y = np.bincount(region, weights=ys, minlength=n) / np.maximum(n_pixels, 1)
    big = n_pixels >= min_pixels
    return x[big], y[big], n_pixels[big]


def _near_saturated_stars(x: np.ndarray, y: np.ndarray, stars) -> np.ndarray:
    """True for the positions within the halo radius of a saturated star ``(x, y, n_pixels)``
    of :func:`saturated_stars`: ``max(_SATURATED_MIN_RADIUS, k sqrt(N))`` px of its centroid,
    ``k = _SATURATED_STAR_RADIUS``."""
    sx, sy, n_pixels = stars
    near = np.zeros(len(x), bool)
    if len(x) == 0 or len(sx) == 0:
        return near
    radius = np.maximum(_SATURATED_MIN_RADIUS, _SATURATED_STAR_RADIUS * np.sqrt(n_pixels))
    if len(sx) > _SATURATED_LOOP_MAX:
        tree = cKDTree(np.column_stack([x, y]))
        for hits in tree.query_ball_point(np.column_stack([sx, sy]), radius):
            near[hits] = True
        return near
    # a chip has few saturated stars: one vectorised test per star beats building a tree
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    for cx, cy, r in zip(sx, sy, radius):
        near |= (x - cx) ** 2 + (y - cy) ** 2 < r * r
    return near


def _inside(shape: tuple[int, int], y: np.ndarray, x: np.ndarray) -> np.ndarray:
    return (y >= 0) & (y < shape[0]) & (x >= 0) & (x < shape[1])


def _grow_saturation(bad: np.ndarray, ys: np.ndarray, xs: np.ndarray, grow: int) -> None:
    """OR into ``bad`` the saturated pixels ``(ys, xs)`` eroded once and dilated ``grow`` times.

    The same as ``binary_dilation(binary_erosion(saturated), iterations=grow)`` (cross-shaped
    structure, pixels outside the image count as unsaturated), worked out on the saturated
    pixels only: a pixel survives the erosion when its 4 neighbours are saturated, and ``grow``
    cross dilations reach every pixel within city-block distance ``grow``.
    """
    shape = bad.shape
    if len(ys) > _GROW_BY_OFFSETS:
        # many saturated pixels: the morphology on their bounding box (with a margin) is cheaper
        y0, y1 = max(int(ys.min()) - grow - 1, 0), min(int(ys.max()) + grow + 2, shape[0])
        x0, x1 = max(int(xs.min()) - grow - 1, 0), min(int(xs.max()) + grow + 2, shape[1])
        saturated = np.zeros((y1 - y0, x1 - x0), bool)
        saturated[ys - y0, xs - x0] = True
        cores = ndimage.binary_erosion(saturated, iterations=1)
        if cores.any():
            bad[y0:y1, x0:x1] |= ndimage.binary_dilation(cores, iterations=grow)
        return
    saturated = np.zeros(shape, bool)
    saturated[ys, xs] = True
    core = np.ones(len(ys), bool)
    for dy, dx in _CROSS:
        y, x = ys + dy, xs + dx
        inside = _inside(shape, y, x)
        core &= inside
        core[inside] &= saturated[y[inside], x[inside]]
    ys, xs = ys[core], xs[core]
    for dy in range(-grow, grow + 1):
        reach = grow - abs(dy)
        for dx in range(-reach, reach + 1):
            y, x = ys + dy, xs + dx
            inside = _inside(shape, y, x)
            bad[y[inside], x[inside]] = True


def _stamps(image: np.ndarray, xi: np.ndarray, yi: np.ndarray, half: int = _STAMP) -> np.ndarray:
    """(N, 2h+1, 2h+1) cut-outs centred on integer pixels (callers keep them inside the image)."""
    size = 2 * half + 1
    return sliding_window_view(image, (size, size))[np.asarray(yi) - half, np.asarray(xi) - half]


def stamp_moments(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux-weighted second moments of background-subtracted stamps (negative pixels clipped).

    Returns
    -------
    sigma_major, sigma_minor, sharpness : ndarray
        Square roots of the eigenvalues of the moment matrix (px), and the fraction of the 3x3
        core's flux in its central pixel (~0.2–0.4 for a resolved PSF, ~1 for a cosmic-ray hit).
    """
    if len(stamps) > _MOMENT_CHUNK:
        # per stamp the same arithmetic; blocks keep the temporaries in the cache
        parts = [_stamp_moments(stamps[i:i + _MOMENT_CHUNK])
                 for i in range(0, len(stamps), _MOMENT_CHUNK)]
        return tuple(np.concatenate(values) for values in zip(*parts))
    return _stamp_moments(stamps)


def _stamp_moments(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n, size, _ = stamps.shape
    half = size // 2
    w = np.clip(stamps, 0, None)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    # restrict moments to a disk so neighbours at the stamp corners do not inflate them
    disk = (xx ** 2 + yy ** 2) <= (half - 1) ** 2
    w = w * disk
    total = w.sum(axis=(1, 2))
    total = np.where(total > 0, total, np.nan)
    mx = (w * xx).sum(axis=(1, 2)) / total
    my = (w * yy).sum(axis=(1, 2)) / total
    dx = xx[None] - mx[:, None, None]
    dy = yy[None] - my[:, None, None]
    mxx = (w * dx ** 2).sum(axis=(1, 2)) / total
    myy = (w * dy ** 2).sum(axis=(1, 2)) / total
    mxy = (w * dx * dy).sum(axis=(1, 2)) / total
    tr = mxx + myy
    det = np.sqrt(np.clip((mxx - myy) ** 2 / 4 + mxy ** 2, 0, None))
    major = np.sqrt(np.clip(tr / 2 + det, 0, None))
    minor = np.sqrt(np.clip(tr / 2 - det, 0, None))
    core = w[:, half - 1:half + 2, half - 1:half + 2].sum(axis=(1, 2))
    sharp = w[:, half, half] / np.where(core > 0, core, np.nan)
    return major, minor, sharp


def estimate_fwhm(image: np.ndarray, peaks_x: np.ndarray, peaks_y: np.ndarray, *,
                  default_fwhm: float, n_use: int = 50) -> float:
    """FWHM (px) from the second moments of the brightest round, unsaturated peaks.

    Falls back to ``default_fwhm`` when fewer than 5 usable stars are found. Moments of a
    pixel-integrated Gaussian are biased by the pixel (variance + 1/12), which is removed.
    """
    if len(peaks_x) < 5:
        return default_fwhm
    stamps = _stamps(image, peaks_x[:n_use * 3], peaks_y[:n_use * 3], half=4)
    major, minor, sharp = stamp_moments(stamps)
    ok = np.isfinite(major) & (minor > 0.5 * major) & (sharp < 0.6)
    if ok.sum() < 5:
        return default_fwhm
    sigma = np.sqrt(np.clip(np.median(major[ok] * minor[ok]) - 1.0 / 12.0, 0.05, None))
    fwhm = 2.3548 * sigma
    if not 0.5 * default_fwhm < fwhm < 3.0 * default_fwhm:
        return default_fwhm
    return float(fwhm)


def _stellar_locus(major: np.ndarray, minor: np.ndarray, sharp: np.ndarray, *,
                   expected_sigma: float) -> tuple[float, float]:
    """Minor-axis sigma and sharpness of the stars: the densest point of the bright peaks' moments.

    Stars of one chip share one PSF, so their moments pile up in a narrow peak, while cosmic
    rays spread widely; the mode is robust even when hits outnumber stars several to one.
    """
    # thin tracks pile up too (minor ~0.3 px): only PSF-like widths can be the stellar locus
    plausible = (minor > 0.6 * expected_sigma) & (minor < 2.5 * expected_sigma)
    idx = np.flatnonzero(np.isfinite(minor) & np.isfinite(sharp) & plausible)[:500]
    if len(idx) < 5:
        return expected_sigma, float(np.nanmedian(sharp[idx])) if len(idx) else 0.3
    m, sh = minor[idx], sharp[idx]
    # 2-D mode in (minor sigma, sharpness): stars form one tight clump, hits spread in both
    bins_m = np.arange(0.6 * expected_sigma, 2.5 * expected_sigma + 0.04, 0.04)
    bins_s = np.arange(0.0, 1.0 + 0.03, 0.03)
    hist, em, es = np.histogram2d(m, sh, bins=(bins_m, bins_s))
    smooth = ndimage.uniform_filter(hist, size=3, mode="constant")
    km, ks = np.unravel_index(int(np.argmax(smooth)), smooth.shape)
    core = ((m >= em[max(km - 1, 0)]) & (m <= em[min(km + 2, len(em) - 1)])
            & (sh >= es[max(ks - 1, 0)]) & (sh <= es[min(ks + 2, len(es) - 1)]))
    return float(np.median(m[core])), float(np.median(sh[core]))


def windowed_centroids(image: np.ndarray, x0: np.ndarray, y0: np.ndarray, *, fwhm: float,
                       n_iter: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian-windowed centroids (SExtractor's XWIN/YWIN), vectorised over sources.

    The window sigma is FWHM/2.3548; the estimator is unbiased for symmetric profiles, so it
    does not suffer the pixel-phase bias of peak-fitting on undersampled PSFs.
    """
    sigma_w = max(fwhm / 2.3548, 0.6)
    half = _STAMP
    xi = np.rint(x0).astype(int)
    yi = np.rint(y0).astype(int)
    stamps = _stamps(image, xi, yi, half)
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1].astype(float)
    cx = x0 - xi
    cy = y0 - yi
    for _ in range(n_iter):
        dx = xx[None] - cx[:, None, None]
        dy = yy[None] - cy[:, None, None]
        w = np.exp(-(dx ** 2 + dy ** 2) / (2 * sigma_w ** 2)) * stamps
        norm = w.sum(axis=(1, 2))
        norm = np.where(np.abs(norm) > 0, norm, np.nan)
        step_x = 2.0 * (w * dx).sum(axis=(1, 2)) / norm
        step_y = 2.0 * (w * dy).sum(axis=(1, 2)) / norm
        cx = np.clip(cx + step_x, -2.0, 2.0)
        cy = np.clip(cy + step_y, -2.0, 2.0)
    return xi + cx, yi + cy


def _background(sci: np.ndarray, mask: np.ndarray, *, box_size: int, filter_size: int):
    """Full-size background and the rms mesh (one value per box): per box the median and MAD-rms of unmasked pixels, a median
    filter over the mesh, then bilinear interpolation back to full size.

    Same recipe as ``Background2D`` (box, filter) but computed on every second pixel of each box,
    which is ample for the smooth sky of an HST chip and ~10x faster on a full-frame chip.
    """
    ny, nx = sci.shape
    box_size = max(min(box_size, ny, nx), 1)
    my, mx = max(ny // box_size, 1), max(nx // box_size, 1)
    hy, hx = my * box_size, mx * box_size
    # every second pixel of each box (rows and columns), masked pixels as NaN
    sampled = (slice(None), slice(None, None, 2), slice(None), slice(None, None, 2))
    sub = np.where(mask[:hy, :hx].reshape(my, box_size, mx, box_size)[sampled], np.float32(np.nan),
                   sci[:hy, :hx].reshape(my, box_size, mx, box_size)[sampled]).astype(np.float32)
    sub = sub.transpose(0, 2, 1, 3).reshape(my, mx, -1)
    # NaN (masked) pixels only compare and subtract here: nothing to warn about (and
    # warnings.catch_warnings would not be safe in the detection threads)
    with np.errstate(invalid="ignore"):
        med = _nanmedian_last(sub)
        # clip bright sources once (3 MAD) before the final statistics, like sigma clipping
        mad = _nanmedian_last(np.abs(sub - med[..., None]))
        clipped = np.where(np.abs(sub - med[..., None]) <= 3.0 * 1.4826 * mad[..., None] + 1e-12,
                           sub, np.nan)
        med = _nanmedian_last(clipped)
        rms = 1.4826 * _nanmedian_last(np.abs(clipped - med[..., None]))
    good = np.isfinite(med) & np.isfinite(rms) & (rms > 0)
    if not good.any():
        values = sci[~mask] if mask.any() else sci.ravel()
        values = values[np.isfinite(values)]
        level = float(np.median(values)) if values.size else 0.0
        spread = float(1.4826 * np.median(np.abs(values - level))) if values.size else 1.0
        return np.full_like(sci, level), np.full_like(sci, spread or 1.0)
    # boxes without data take the median of the good ones (never None: §12.4)
    med = np.where(good, med, np.median(med[good]))
    rms = np.where(good, rms, np.median(rms[good]))
    if filter_size > 1:
        med = ndimage.median_filter(med, size=filter_size, mode="nearest")
        rms = ndimage.median_filter(rms, size=filter_size, mode="nearest")
    return _upsample(med, sci.shape, box_size), rms


def _nanmedian_last(values: np.ndarray) -> np.ndarray:
    """``np.nanmedian(values, axis=-1)`` of a float array (same numbers, same dtype), by one
    sort per row (several times faster than numpy's masked-array path for many short rows).

    ``np.sort`` puts NaNs last, so the median of the ``n`` finite values of a row is at
    ``(n - 1) // 2`` and ``n // 2``; their mean is formed as numpy's median forms it. All-NaN
    rows give NaN.
    """
    ordered = np.sort(values, axis=-1)
    n = np.count_nonzero(~np.isnan(ordered), axis=-1)
    low = np.take_along_axis(ordered, np.maximum((n - 1) // 2, 0)[..., None], -1)[..., 0]
    high = np.take_along_axis(ordered, (n // 2)[..., None], -1)[..., 0]
    median = np.where(n % 2 == 1, low, (low + high) / ordered.dtype.type(2))
    return np.where(n > 0, median, np.nan).astype(ordered.dtype, copy=False)


def _upsample(mesh: np.ndarray, shape: tuple[int, int], box: int) -> np.ndarray:
    """Bilinear interpolation of box-centred mesh values onto every pixel."""
    yc = (np.arange(shape[0]) + 0.5) / box - 0.5
    xc = (np.arange(shape[1]) + 0.5) / box - 0.5
    yc = np.clip(yc, 0, mesh.shape[0] - 1)
    xc = np.clip(xc, 0, mesh.shape[1] - 1)
    y0 = np.floor(yc).astype(int)
    x0 = np.floor(xc).astype(int)
    y1 = np.minimum(y0 + 1, mesh.shape[0] - 1)
    x1 = np.minimum(x0 + 1, mesh.shape[1] - 1)
    fy = (yc - y0).astype(np.float32)[:, None]
    fx = (xc - x0).astype(np.float32)[None, :]
    m = mesh.astype(np.float32)
    # separable: the mesh rows interpolated along x once, then the rows blended along y (in
    # blocks of rows that stay in the cache)
    rows = m[:, x0] * (1 - fx) + m[:, x1] * fx
    out = np.empty(shape, np.float32)
    for start in range(0, shape[0], _ROW_BLOCK):
        block = slice(start, start + _ROW_BLOCK)
        np.multiply(rows[y0[block]], 1 - fy[block], out=out[block])
        out[block] += rows[y1[block]] * fy[block]
    return out


def _peak_pixels(smooth: np.ndarray, *, floor: float, mask: np.ndarray, size: int,
                 edge: int) -> tuple[np.ndarray, np.ndarray]:
    """``(y, x)`` (row-major order) of the pixels at least ``edge`` (>= size // 2) from the
    border where ``smooth`` equals the maximum of its ``size`` x ``size`` neighbourhood, exceeds
    ``floor`` and is not masked.

    The same pixels as ``nonzero((maximum_filter(smooth, size) == smooth) & (smooth > floor)
    & ~mask)`` with the border cleared: every neighbourhood lies inside the image, so the
    filter's border mode plays no part. Worked in blocks of rows with small buffers.
    """
    h = size // 2
    ny, nx = smooth.shape
    height, width = ny - 2 * edge, nx - 2 * edge
    if height <= 0 or width <= 0:
        return np.zeros(0, np.intp), np.zeros(0, np.intp)
    block = _PEAK_BLOCK
    hmax = np.empty((block + 2 * h, width), smooth.dtype)
    vmax = np.empty((block, width), smooth.dtype)
    peak = np.empty((block, width), bool)
    test = np.empty((block, width), bool)
    ys, xs = [], []
    for top in range(edge, ny - edge, block):
        n = min(block, ny - edge - top)
        # running maximum along x over the rows the block's neighbourhoods need, then along y
        rows = smooth[top - h:top + n + h]
        hm = hmax[:n + 2 * h]
        np.maximum(rows[:, edge - h:edge - h + width], rows[:, edge - h + 1:edge - h + 1 + width],
                   out=hm)
        for d in range(2, size):
            np.maximum(hm, rows[:, edge - h + d:edge - h + d + width], out=hm)
        vm = vmax[:n]
        np.maximum(hm[:n], hm[1:1 + n], out=vm)
        for d in range(2, size):
            np.maximum(vm, hm[d:d + n], out=vm)
        centre = smooth[top:top + n, edge:edge + width]
        pk, ts = peak[:n], test[:n]
        np.equal(vm, centre, out=pk)
        np.greater(centre, floor, out=ts)
        pk &= ts
        np.logical_not(mask[top:top + n, edge:edge + width], out=ts)
        pk &= ts
        y, x = np.nonzero(pk)
        ys.append(y + top)
        xs.append(x + edge)
    return np.concatenate(ys), np.concatenate(xs)


def detect_chip_sources(sci: np.ndarray, dq: np.ndarray | None = None, *, fwhm_px: float,
                        nsigma: float = 3.0, threshold_scale: float = 1.1, box_size: int = 27,
                        filter_size: int = 3, max_sources: int = 250, reject_cosmic_rays: bool = True,
                        min_separation_px: float | None = None) -> ChipSources:
    """Detect and centroid the brightest point-like sources of one chip.

    Parameters
    ----------
    sci : ndarray
        SCI array (any units; counts or rates).
    dq : ndarray, optional
        DQ array; see :func:`detection_mask`.
    fwhm_px : float
        Expected PSF FWHM in pixels (``fwhmpsf`` / plate scale); refined from the data.
    nsigma, threshold_scale : float
        Detection threshold = ``threshold_scale`` x ``nsigma`` x background rms above background
        (drizzlepac's ``threshold = -1.1`` convention).
    box_size, filter_size : int
        ``Background2D`` box and filter sizes.
    max_sources : int
        Keep the N brightest sources.
    reject_cosmic_rays : bool
        Drop peaks whose moments are much sharper than the PSF or elongated (tracks).
    min_separation_px : float, optional
        Peaks closer than this to a brighter peak are dropped (blends centroid badly);
        default 2.5 x FWHM.

    Returns
    -------
    ChipSources
    """
    sci = np.asarray(sci, dtype=np.float32)
    empty = Table(names=("x", "y", "flux", "peak", "mag"), dtype=(float,) * 5)
    if min(sci.shape) < 4 * _STAMP:
        return ChipSources(empty, fwhm_px, np.nan, 0)
    finite = np.isfinite(sci)
    mask = ~finite
    stars = None
    if dq is not None:
        bad, sat_y, sat_x = _mask_and_saturation(dq)
        mask |= bad
        stars = _saturated_regions(sat_y, sat_x, np.shape(dq))
        del bad, sat_y, sat_x
    work = np.where(finite, sci, np.float32(0.0))
    background, rms_mesh = _background(work, mask, box_size=box_size, filter_size=filter_size)
    resid = np.subtract(work, background, out=work)  # work is not needed any more
    del background
    np.copyto(resid, 0.0, where=mask)  # = resid[mask] = 0, without holding the GIL
    median_rms = float(np.median(rms_mesh))

    sigma_k = max(fwhm_px, 1.0) / 2.3548
    smooth = ndimage.gaussian_filter(resid, sigma_k, truncate=3.0)
    # the smoothed noise is lower than the pixel noise by the kernel's effective area
    noise_factor = 1.0 / (2.0 * np.sqrt(np.pi) * sigma_k)
    floor = threshold_scale * nsigma * float(rms_mesh.min()) * noise_factor
    yi, xi = _peak_pixels(smooth, floor=floor, mask=mask, size=5, edge=_STAMP + 1)
    # the threshold follows the local rms of the box each peak falls in
    box_y = np.minimum(yi // box_size, rms_mesh.shape[0] - 1)
    box_x = np.minimum(xi // box_size, rms_mesh.shape[1] - 1)
    above = smooth[yi, xi] > threshold_scale * nsigma * noise_factor * rms_mesh[box_y, box_x]
    yi, xi = yi[above], xi[above]
    order = np.argsort(smooth[yi, xi])[::-1]
    # only the brightest candidates can end up among the kept sources, even after CR rejection
    order = order[:max(200 * max_sources, 5000)]
    yi, xi = yi[order], xi[order]
    if stars is not None and len(xi):
        # halos and spikes of saturated stars (the masked cores alone do not cover them): out
        # before the FWHM and the stellar locus are measured, or their fragments would set them
        far = ~_near_saturated_stars(xi, yi, stars)
        yi, xi = yi[far], xi[far]

    if len(xi) == 0:
        return ChipSources(empty, fwhm_px, median_rms, 0)

    fwhm = estimate_fwhm(resid, xi, yi, default_fwhm=fwhm_px)
    stamps = _stamps(resid, xi, yi)
    major, minor, sharp = stamp_moments(stamps)
    n_cr = 0
    keep = np.isfinite(major)
    if reject_cosmic_rays:
        # Moment test (§4.2 in spirit), calibrated on this chip's own stars: a cosmic-ray hit is
        # sharper than the PSF, or a thin track (small minor axis). Stars sit on a tight locus.
        ref_minor, ref_sharp = _stellar_locus(major, minor, sharp,
                                              expected_sigma=fwhm / 2.3548)
        cosmic = ((minor < 0.85 * ref_minor) | (sharp > 1.35 * ref_sharp)
                  | (major > 1.4 * minor))
        n_cr = int((cosmic & keep).sum())
        keep &= ~cosmic
    # drop peaks that lie in a masked (bad or saturated) neighbourhood (5 x 5 px)
    keep &= ~_stamps(mask, xi, yi, half=2).any(axis=(1, 2))

    xi, yi = xi[keep], yi[keep]
    if len(xi) == 0:
        return ChipSources(empty, fwhm, median_rms, n_cr)
    # isolation: drop the fainter of close pairs (already sorted by brightness)
    sep = min_separation_px if min_separation_px is not None else 2.5 * fwhm
    if len(xi) > 1:
        tree = cKDTree(np.column_stack([xi, yi]))
        pairs = tree.query_pairs(sep, output_type="ndarray")
        isolated = np.ones(len(xi), bool)
        if len(pairs):
            isolated[np.maximum(pairs[:, 0], pairs[:, 1])] = False
        xi, yi = xi[isolated], yi[isolated]
    xi, yi = xi[:max_sources], yi[:max_sources]

    xc, yc = windowed_centroids(resid, xi.astype(float), yi.astype(float), fwhm=fwhm)
    stamps = _stamps(resid, xi, yi)
    r = np.hypot(*np.mgrid[-_STAMP:_STAMP + 1, -_STAMP:_STAMP + 1])
    flux = (stamps * (r <= max(2.0 * fwhm, 3.0))).sum(axis=(1, 2))
    if fwhm_px < UNDERSAMPLED_FWHM_PX:
        # windowed centroids are pulled to the pixel centres of an undersampled star
        xc, yc, _ = refine_undersampled_centroids(resid, xc, yc, flux, fwhm=fwhm, rms=median_rms)
    peak = resid[yi, xi]
    with np.errstate(invalid="ignore", divide="ignore"):
        mag = np.where(flux > 0, -2.5 * np.log10(flux), np.inf)
    good = np.isfinite(xc) & np.isfinite(yc)
    table = Table({"x": xc[good], "y": yc[good], "flux": flux[good], "peak": peak[good],
                   "mag": mag[good]})
    return ChipSources(table, fwhm, median_rms, n_cr)
