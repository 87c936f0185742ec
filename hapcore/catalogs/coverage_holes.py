"""Small holes in a product's coverage, filled for source detection only (issue #15).

A pixel that no exposure covers with good data (a star's core saturated in every exposure of
a WFC3/IR visit: DQ 256 is outside the IR ``final_bits``) is a hole in the drizzled product.
The detection footprint (:attr:`~hapcore.catalogs.image.CatalogImage.footprint`) erodes the
coverage by 10 pixels, so a one-pixel hole removed a 21-pixel diamond around the star from
detection: the star finder missed the star and the segmentation cut its halo into four
"sources" around the diamond.

:func:`fill_coverage_holes` returns a copy of the image for the detection step in which every
small hole enclosed by data is filled from its surroundings, layer by layer from the edge in:
the science value is the brightest of the pixel's neighbours with data (a hole in a star is its
core: the mean of the ring left a dip there, and the star finder found two stars on the two
brightest ring pixels), the weight and exposure count their mean.
The written products and every measurement keep the original pixels.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

__all__ = ["coverage_holes", "fill_coverage_holes"]

log = logging.getLogger(f"hapsvm.{__name__}")

_EIGHT = np.ones((3, 3), dtype=bool)


def _has_data(data) -> np.ndarray:
    """Finite non-zero pixels (a drizzled product is 0 where no input pixel contributed)."""
    return np.isfinite(data) & (data != 0)


def coverage_holes(covered, *, max_area) -> np.ndarray:
    """Pixels without data in connected groups of at most ``max_area`` pixels that do not touch
    the image edge (groups are 4-connected, so a diagonal line of covered pixels encloses).

    Parameters
    ----------
    covered : 2-D bool ndarray
    max_area : int

    Returns
    -------
    2-D bool ndarray
    """
    covered = np.asarray(covered, dtype=bool)
    holes = np.zeros(covered.shape, dtype=bool)
    if covered.all() or max_area < 1:
        return holes
    labels, n = ndimage.label(~covered)
    if n == 0:
        return holes
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    small = areas <= max_area
    small[0] = False
    edge = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    small[edge] = False
    if not small.any():
        return holes
    return small[labels]


def _fill(values, known, holes, *, brightest=False) -> np.ndarray:
    """``values`` with ``holes`` filled layer by layer from the edge in: each pixel gets the
    mean (``brightest``: the largest value) of its known 8-neighbours."""
    out = np.where(known, values, 0).astype(np.float64)
    known = known.copy()
    todo = holes & ~known
    kernel = _EIGHT.astype(float)
    while todo.any():
        counts = ndimage.correlate(known.astype(float), kernel, mode="constant")
        edge = todo & (counts > 0)
        if not edge.any():
            break
        if brightest:
            top = ndimage.maximum_filter(np.where(known, out, -np.inf), footprint=_EIGHT,
                                         mode="constant", cval=-np.inf)
            out[edge] = top[edge]
        else:
            sums = ndimage.correlate(np.where(known, out, 0.0), kernel, mode="constant")
            out[edge] = sums[edge] / counts[edge]
        known |= edge
        todo &= ~edge
    return out


def fill_coverage_holes(image, *, max_radius):
    """The image with its small enclosed coverage holes filled (for detection only).

    Parameters
    ----------
    image : CatalogImage
    max_radius : float
        Holes of at most ``pi * max_radius**2`` pixels are filled.

    Returns
    -------
    CatalogImage
        ``image`` itself when it has no such hole, else a copy with the holes' science values
        (and weights and exposure counts, when the image has them) filled from their
        neighbours with data. The holes depend on the science values only, so a detection
        rebuilt from the science array alone fills them identically.
    """
    import copy

    known = _has_data(image.data)
    holes = coverage_holes(known, max_area=int(np.pi * max_radius ** 2))
    if not holes.any():
        return image
    labels, n_holes = ndimage.label(holes, structure=_EIGHT)
    arrays = {"data": np.array(image.data, dtype=np.float32)}
    for name in ("weight", "nexp"):
        if getattr(image, name, None) is not None:
            arrays[name] = np.array(getattr(image, name))
    for sl in ndimage.find_objects(labels):
        # the hole and two pixels around it
        box = tuple(slice(max(s.start - 2, 0), s.stop + 2) for s in sl)
        hole, have = holes[box], known[box]
        for name, values in arrays.items():
            filled = _fill(values[box], have, hole, brightest=name == "data")[hole]
            values[box][hole] = np.rint(filled) if values.dtype.kind in "iu" else filled
    log.info("detection image: %d hole(s) without data (%d pixel(s)) enclosed by data filled "
             "from their surroundings", n_holes, int(holes.sum()))
    filled = copy.copy(image)
    for name, values in arrays.items():
        setattr(filled, name, values)
    filled._footprint = None
    return filled
