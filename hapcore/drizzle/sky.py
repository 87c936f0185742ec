"""Sky levels of the inputs (AstroDrizzle step 2: ``skysub``, ``skymethod``, ``skystat``).

All values are count rates (e-/s). The statistic of a chip is computed on its good pixels after
iterative sigma clipping (``skyclip`` iterations at ``skylsigma``/``skyusigma``), within
``skylower``/``skyupper`` when given.

Methods (per exposure; the sky of an exposure is one number subtracted from all its chips):

* ``localmin``: the smallest chip statistic of the exposure;
* ``globalmin``: the smallest ``localmin`` of all exposures, for every exposure;
* ``match``: differences between exposures, with the lowest sky set to 0 (the product keeps
  the sky of the darkest exposure, as skymatch reports it);
* ``globalmin+match``: ``match`` plus the global minimum.

``match`` here compares the exposures' clipped sky statistics rather than solving pair-wise
overlap differences as skymatch does; for the uniform skies of one visit this is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["sky_statistic", "exposure_sky_levels"]

log = logging.getLogger(f"hapsvm.{__name__}")


def sky_statistic(data: np.ndarray, good: np.ndarray | None = None, *, skystat: str = "median",
                  lower: float | None = None, upper: float | None = None, nclip: int = 5,
                  lsigma: float = 4.0, usigma: float = 4.0, max_samples: int = 1_000_000) -> float:
    """Sigma-clipped sky statistic (``median``, ``mean`` or ``mode``) of one chip.

    ``mode`` is the Pearson estimate ``3 median - 2 mean`` of the clipped values. Large chips are
    sub-sampled regularly to ``max_samples`` pixels (the statistic of the sky does not change).
    Returns NaN when no pixel is usable.
    """
    values = data[good] if good is not None else data.ravel()
    if values.size > max_samples:
        values = values[:: int(np.ceil(values.size / max_samples))]
    values = values[np.isfinite(values)].astype(np.float64)
    if lower is not None:
        values = values[values >= lower]
    if upper is not None:
        values = values[values <= upper]
    if values.size == 0:
        return float("nan")
    for _ in range(int(nclip)):
        centre = np.median(values)
        std = values.std()
        if std == 0:
            break
        keep = (values >= centre - lsigma * std) & (values <= centre + usigma * std)
        if keep.all():
            break
        values = values[keep]
    median = float(np.median(values))
    if skystat == "median":
        return median
    mean = float(values.mean())
    if skystat == "mean":
        return mean
    if skystat == "mode":
        return 3.0 * median - 2.0 * mean
    raise ValueError(f"unknown skystat {skystat!r}")


def exposure_sky_levels(chip_skies: Mapping[str, Sequence[float]], *,
                        skymethod: str = "match") -> dict[str, float]:
    """Sky (e-/s) to subtract from each exposure, from its chips' statistics.

    Parameters
    ----------
    chip_skies : mapping of str to sequence of float
        Exposure name -> sky statistic of each of its chips (NaN for unusable chips).
    skymethod : str
        ``match``, ``localmin``, ``globalmin`` or ``globalmin+match``.
    """
    local = {}
    for name, skies in chip_skies.items():
        finite = [s for s in skies if np.isfinite(s)]
        local[name] = float(min(finite)) if finite else 0.0
    if not local:
        return {}
    global_min = min(local.values())
    if skymethod == "localmin":
        levels = dict(local)
    elif skymethod == "globalmin":
        levels = {name: global_min for name in local}
    elif skymethod == "match":
        levels = {name: value - global_min for name, value in local.items()}
    elif skymethod == "globalmin+match":
        levels = {name: value for name, value in local.items()}
    else:
        raise ValueError(f"unknown skymethod {skymethod!r}")
    for name, value in levels.items():
        log.debug("sky %s: %.5g e-/s (%s)", name, value, skymethod)
    return levels
