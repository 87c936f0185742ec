"""
Detector artefacts: cosmic rays, hot pixels, bad columns, saturation.

All functions take a `numpy.random.Generator` and work on whole arrays;
the only Python loop is over saturated columns (a few hundred at most).
DQ bits follow the ACS/WFC3 convention: 4 bad detector pixel, 16 hot
pixel, 256 full-well saturation, 512 bad pixel in reference file,
2048 A-to-D saturation.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "DQ_BAD_DETECTOR",
    "DQ_HOT",
    "DQ_SATURATED",
    "DQ_BAD_REFERENCE",
    "DQ_ATOD_SATURATED",
    "cosmic_rays",
    "hot_pixels",
    "bad_columns",
    "saturate_and_bleed",
]

DQ_BAD_DETECTOR = 4
DQ_HOT = 16
DQ_SATURATED = 256
DQ_BAD_REFERENCE = 512
DQ_ATOD_SATURATED = 2048


def _tracks(rng, n, shape, mean_length):
    """Pixel indices of `n` straight tracks of random direction and length."""
    ny, nx = shape
    length = 1 + rng.geometric(1.0 / mean_length, n) - 1
    length = np.maximum(length, 1)
    x0 = rng.uniform(0, nx, n)
    y0 = rng.uniform(0, ny, n)
    angle = rng.uniform(0, np.pi, n)
    event = np.repeat(np.arange(n), length)
    step = np.arange(event.size) - np.repeat(np.cumsum(length) - length, length)
    xs = np.floor(x0[event] + step * np.cos(angle[event])).astype(int)
    ys = np.floor(y0[event] + step * np.sin(angle[event])).astype(int)
    inside = (xs >= 0) & (xs < nx) & (ys >= 0) & (ys < ny)
    return event[inside], ys[inside] * nx + xs[inside]


def cosmic_rays(rng, shape, fraction, *, mean_length=2.6, charge_median=700.0):
    """
    Cosmic-ray hits covering a given fraction of the pixels.

    Tracks are straight lines of geometric length distribution (mean
    `mean_length` pixels); the charge of each hit pixel is log-normal with
    median `charge_median` electrons (a few hundred to several thousand,
    as on HST CCDs). Events are added until the hit-pixel fraction
    reaches `fraction` (overlaps accounted for).

    Parameters
    ----------
    rng : numpy.random.Generator
    shape : tuple of int
    fraction : float
        Wanted fraction of pixels hit.
    mean_length : float, optional
    charge_median : float, optional

    Returns
    -------
    charge : ndarray of float32
        Electrons deposited per pixel.
    mask : ndarray of bool
        True where a cosmic ray hit.
    """
    ny, nx = shape
    npix = nx * ny
    charge = np.zeros(npix, dtype=np.float32)
    mask = np.zeros(npix, dtype=bool)
    target = int(round(fraction * npix))
    for _ in range(6):
        missing = target - int(mask.sum())
        if missing <= 0:
            break
        n_events = max(1, int(missing / mean_length * 1.02))
        event, flat = _tracks(rng, n_events, shape, mean_length)
        # Energy per event varies (path length in silicon, particle type);
        # along the track pixels share it with some scatter.
        event_level = rng.lognormal(np.log(charge_median), 0.7, n_events)
        values = event_level[event] * rng.uniform(0.5, 1.5, event.size)
        np.add.at(charge, flat, values.astype(np.float32)) if flat.size < 1000 else \
            charge.__iadd__(np.bincount(flat, weights=values, minlength=npix).astype(np.float32))
        mask[flat] = True
    # Trim the overshoot of the last batch so the fraction is as asked.
    excess = int(mask.sum()) - target
    if excess > 0:
        hit = np.flatnonzero(mask)
        drop = rng.choice(hit, excess, replace=False)
        mask[drop] = False
        charge[drop] = 0.0
    return charge.reshape(shape), mask.reshape(shape)


def hot_pixels(rng, shape, fraction, exptime):
    """
    Hot pixels: positions and residual dark electrons.

    Returns
    -------
    flat_index : ndarray of int
    electrons : ndarray of float
        Residual dark current left after dark subtraction (log-normal,
        median 0.08 e-/s, times `exptime`).
    """
    npix = shape[0] * shape[1]
    n = rng.binomial(npix, fraction)
    flat = rng.choice(npix, n, replace=False)
    return flat, rng.lognormal(np.log(0.08), 1.0, n) * exptime


def bad_columns(rng, shape, n_columns):
    """
    Bad (partial) columns flagged with DQ 4.

    Returns
    -------
    list of tuple
        ``(column, row_start, row_stop)`` for each bad column segment.
    """
    ny, nx = shape
    out = []
    for _ in range(n_columns):
        col = int(rng.integers(0, nx))
        start = int(rng.integers(0, ny // 2))
        stop = int(min(ny, start + rng.integers(ny // 8, ny)))
        out.append((col, start, stop))
    return out


def saturate_and_bleed(image, full_well, atod_limit):
    """
    Clip charge at full well and bleed the excess along columns.

    The excess charge of each saturated run of a column spills up and
    down the column (half each way), filling pixels to full well until it
    is used up; as on real CCDs no charge crosses to neighbour columns.

    Parameters
    ----------
    image : ndarray
        Electrons (modified in place).
    full_well : float
    atod_limit : float
        Electrons at which the A-to-D converter saturates.

    Returns
    -------
    dq : ndarray of int16
        256 on saturated and bled pixels, plus 2048 above `atod_limit`.
    """
    dq = np.zeros(image.shape, dtype=np.int16)
    over = image > full_well
    if not over.any():
        return dq
    dq[image > atod_limit] |= DQ_ATOD_SATURATED
    ny = image.shape[0]
    for col in np.flatnonzero(over.any(axis=0)):
        column = image[:, col]
        sat = column > full_well
        rows = np.flatnonzero(sat)
        # Contiguous runs of saturated rows.
        breaks = np.flatnonzero(np.diff(rows) > 1)
        starts = np.concatenate([[rows[0]], rows[breaks + 1]])
        stops = np.concatenate([rows[breaks], [rows[-1]]])
        for lo, hi in zip(starts, stops):
            excess = float(np.sum(column[lo:hi + 1] - full_well))
            column[lo:hi + 1] = full_well
            dq[lo:hi + 1, col] |= DQ_SATURATED
            for direction, budget in ((1, 0.5 * excess), (-1, 0.5 * excess)):
                row = hi + 1 if direction > 0 else lo - 1
                while budget > 0 and 0 <= row < ny:
                    room = full_well - column[row]
                    if room > 0:
                        take = min(room, budget)
                        column[row] += take
                        budget -= take
                    if column[row] >= full_well:
                        dq[row, col] |= DQ_SATURATED
                    row += direction
        image[:, col] = column
    return dq
