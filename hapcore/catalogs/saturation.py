"""Saturated input pixels mapped onto a drizzled product, for the saturation flag (spec §6.7.2).

drizzlepac converts 0-based DQ indices with a routine declared 1-based and compares the result
with 0-based catalog positions (spec §12.6); here every step is 0-based, through each chip's
full (distortion-aware) WCS of the SVM copy.
"""

from __future__ import annotations

import logging
import os

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from hapcore.align.visit import read_chip_wcs_readonly

__all__ = ["SATURATION_BIT", "saturated_product_pixels"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: Full-well saturation bit of ACS/WFC3 DQ arrays (WFPC2 uses 8).
SATURATION_BIT = 256


def saturated_product_pixels(exposure_paths: list[str | os.PathLike], product_wcs: WCS, *,
                             bit: int = SATURATION_BIT) -> np.ndarray:
    """(m, 2) 0-based product (x, y) of every input pixel flagged ``bit`` in its DQ array.

    Parameters
    ----------
    exposure_paths : list of path-like
        The exposures (SVM copies with the aligned WCS) drizzled into the product.
    product_wcs : astropy.wcs.WCS
        The product's WCS.
    bit : int
        DQ bit meaning saturation.
    """
    points = []
    for path in exposure_paths:
        with fits.open(path, mode="readonly", memmap=True) as hdul:
            for extver, wcs in read_chip_wcs_readonly(hdul).items():
                if ("DQ", extver) not in hdul:
                    continue
                dq = hdul["DQ", extver].data
                if dq is None:
                    continue
                # no int64 copy of the chip (128 MB on UVIS): the bit test in DQ's own type
                yy, xx = np.nonzero(np.asarray(dq) & bit)
                if not len(xx):
                    continue
                ra, dec = wcs.all_pix2world(xx.astype(float), yy.astype(float), 0)
                px, py = product_wcs.all_world2pix(ra, dec, 0)
                points.append(np.column_stack([px, py]))
    if not points:
        return np.zeros((0, 2))
    out = np.vstack(points)
    logger.debug("%d saturated input pixels mapped onto the product", len(out))
    return out[np.all(np.isfinite(out), axis=1)]
