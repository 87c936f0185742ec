"""Sigma-clipped statistics of a large 1-D sample with one sort (the values of
:func:`astropy.stats.sigma_clipped_stats`, bit for bit).

astropy's clipping takes a median of the surviving values at every iteration: a copy and a
partition of the whole sample each time (a dozen passes over the 17 million illuminated pixels
of a full-frame UVIS total image when the clipping runs to convergence). The values that
survive any number of iterations are those between the highest lower bound and the lowest
upper bound so far: one contiguous range of the sorted sample, whose median is read off
directly. The standard deviations and the mean are computed on the same values in the same
order as astropy's, with numpy's ``std`` and ``mean``: on values without NaN they do the
arithmetic of the ``nanstd`` and ``nanmean`` astropy calls (without their copy of the sample),
so the results are identical.

* :class:`SortedSample` -- a sample with its sorted copy;
* :func:`sorted_clipped_stats` -- (mean, median, std) of a :class:`SortedSample`, as
  ``sigma_clipped_stats(values, sigma=sigma, maxiters=maxiters, cenfunc="median")``.
"""

from __future__ import annotations

import warnings

import numpy as np
from astropy.stats import sigma_clipped_stats
from astropy.stats.nanfunctions import nanmean, nanstd

__all__ = ["SortedSample", "sorted_clipped_stats"]


class SortedSample:
    """A 1-D sample of finite values in its original order and sorted.

    Parameters
    ----------
    values : 1-D ndarray
        Finite values (not copied).
    ordered : 1-D ndarray, optional
        ``np.sort(values)`` when already known.
    """

    def __init__(self, values, ordered=None):
        self.values = np.asarray(values)
        if self.values.ndim != 1:
            raise ValueError(f"a 1-D sample is needed, got shape {self.values.shape}")
        self.ordered = np.sort(self.values) if ordered is None else ordered

    @property
    def size(self) -> int:
        return self.values.size

    def subset(self, mask_of) -> SortedSample:
        """The sample of the values where ``mask_of(values)`` is True.

        A monotone condition (such as ``abs(values - c) <= t``) keeps a contiguous range of
        the sorted values, which is taken without sorting again; any other is sorted anew.

        Parameters
        ----------
        mask_of : callable
            Elementwise condition on an array of values.
        """
        values = self.values[_chunked(mask_of, self.values)]
        inside = _chunked(mask_of, self.ordered)
        lo = int(np.argmax(inside))
        if values.size and inside[lo:lo + values.size].all():
            return SortedSample(values, self.ordered[lo:lo + values.size])
        return SortedSample(values)


def _chunked(mask_of, values, *, chunk=1 << 20) -> np.ndarray:
    """``mask_of(values)`` of an elementwise condition, by chunks (no full-size temporaries)."""
    mask = np.empty(values.shape, dtype=bool)
    for start in range(0, values.size, chunk):
        mask[start:start + chunk] = mask_of(values[start:start + chunk])
    return mask


def _std(values):
    """astropy's ``nanstd`` of NaN-free values (numpy's ``std`` when astropy uses numpy's
    ``nanstd``: the same arithmetic without the NaN mask and copy)."""
    return np.std(values) if nanstd is np.nanstd else nanstd(values, axis=None)


def _std_in_place(values):
    """:func:`_std` of an array that is not needed afterwards, using it as the scratch array of
    the deviations (numpy's ``std`` allocates one of the sample's size; the same operations
    in the same order, so the same value)."""
    if nanstd is not np.nanstd or values.dtype.kind != "f" or not values.flags.writeable:
        return _std(values)
    count = np.intp(values.size)
    mean = np.add.reduce(values, axis=None, keepdims=True)
    mean = np.true_divide(mean, count, out=mean, casting="unsafe", subok=False)
    deviations = np.subtract(values, mean, out=values)
    np.square(deviations, out=deviations)
    variance = np.add.reduce(deviations, axis=None)
    variance = variance.dtype.type(variance / np.maximum(count, 0))
    return variance.dtype.type(np.sqrt(variance))


def _mean(values):
    """astropy's ``nanmean`` of NaN-free values (see :func:`_std`)."""
    return np.mean(values) if nanmean is np.nanmean else nanmean(values, axis=None)


def _median(ordered) -> np.floating:
    """``np.median`` of sorted values (the same arithmetic: the mean of the one or two middle
    values)."""
    n = ordered.size
    half = n // 2
    return np.mean(ordered[half:half + 1] if n % 2 else ordered[half - 1:half + 1])


def sorted_clipped_stats(sample: SortedSample, *, sigma=3.0, maxiters=5):
    """``sigma_clipped_stats(sample.values, sigma=sigma, maxiters=maxiters, cenfunc="median")``.

    Parameters
    ----------
    sample : SortedSample
        Finite values (the clipping of non-finite values is not reproduced).
    sigma : float, optional
        Clipping limit in standard deviations, both sides.
    maxiters : int or None, optional
        None clips until nothing more is clipped.

    Returns
    -------
    mean, median, std : numpy scalars
        Those of astropy, of the values' own dtype (std with ``ddof=0``).
    """
    values, ordered = sample.values, sample.ordered
    if values.size == 0:
        return sigma_clipped_stats(values, sigma=sigma, maxiters=maxiters, cenfunc="median")
    limit = np.inf if maxiters is None else maxiters
    lo, hi = 0, ordered.size
    current, private = values, False
    iteration, changed = 0, 1
    while changed != 0 and iteration < limit:
        iteration += 1
        size = hi - lo
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            centre = _median(ordered[lo:hi])
            # the statistics of the final sample when this iteration clips nothing more (a
            # private subset is the scratch array of its own standard deviation)
            mean = _mean(current)
            std = _std_in_place(current) if private else _std(current)
            low = centre - (std * sigma)
            high = centre + (std * sigma)
        lo = max(lo, int(np.searchsorted(ordered, low, side="left")))
        hi = min(hi, int(np.searchsorted(ordered, high, side="right")))
        if hi <= lo:
            # everything clipped: astropy's own (NaN) statistics of the empty sample
            return sigma_clipped_stats(values, sigma=sigma, maxiters=maxiters, cenfunc="median")
        changed = size - (hi - lo)
        if changed:
            # the values inside every bound so far, in their original order (the previous
            # subset goes first: its values are spent)
            current = None
            current, private = values[(values >= ordered[lo]) & (values <= ordered[hi - 1])], True
    if changed == 0:
        return mean, _median(ordered[lo:hi]), std
    return (_mean(current), _median(ordered[lo:hi]),
            _std_in_place(current) if private else _std(current))
