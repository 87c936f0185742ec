"""Detections that are fragments of a saturated star: its flat core, bleed columns, first rings.

A saturated star is one source, but its image is not a PSF: the core is a plateau of clipped
pixels, charge bleeds along the columns, and the rings and spikes around the plateau are much
brighter than any detection threshold. DAOStarFinder finds several peaks there (0.3-0.8" from
the star on WFC3/UVIS: 17% of the total point catalog's rows were such fragments in a visit
with ten saturated stars per square arcminute). drizzlepac flags them 4 (saturated pixel in the
aperture) and keeps them.

:func:`saturated_fragments` groups the saturated pixels (mapped to the product) into stars:
connected regions after growing each pixel by ``grow`` pixels. Every detection whose aperture
touches a region and that is not the brightest detection touching it is a fragment. The star
itself (the brightest) keeps its flag 4; a real neighbour that happens to touch the plateau is
lost with the fragments, as it would be in the star's light anyway.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

__all__ = ["saturated_fragments"]

log = logging.getLogger(f"hapsvm.{__name__}")


def saturated_fragments(x, y, brightness, saturated_xy, *, shape, radius: float,
                        grow: int = 3) -> np.ndarray:
    """Detections on a saturated star other than the star itself.

    Parameters
    ----------
    x, y : array_like
        0-based product positions of the detections.
    brightness : array_like
        Their brightness (e.g. aperture flux): the brightest detection on a region is the star.
    saturated_xy : (m, 2) array_like or None
        0-based (x, y) product positions of saturated input pixels.
    shape : tuple of int
        Product shape.
    radius : float
        Aperture radius (pixels): a detection belongs to a region its aperture touches.
    grow : int, optional
        Saturated pixels are grown by this many pixels before the regions are labelled (the
        input pixels map to scattered product pixels).

    Returns
    -------
    ndarray of bool
    """
    x = np.asarray(x, float)
    y = np.asarray(y, float)
    fragments = np.zeros(x.size, bool)
    if saturated_xy is None or x.size < 2:
        return fragments
    sat = np.atleast_2d(np.asarray(saturated_xy, float))
    sat = sat[np.all(np.isfinite(sat), axis=1)] if sat.size else sat
    if sat.size == 0:
        return fragments
    ny, nx = shape
    ix = np.clip(np.rint(sat[:, 0]).astype(int), 0, nx - 1)
    iy = np.clip(np.rint(sat[:, 1]).astype(int), 0, ny - 1)
    # labelled on the bounding box of the saturated pixels only (they are few)
    x0, x1 = max(ix.min() - grow - 1, 0), min(ix.max() + grow + 2, nx)
    y0, y1 = max(iy.min() - grow - 1, 0), min(iy.max() + grow + 2, ny)
    mask = np.zeros((y1 - y0, x1 - x0), bool)
    mask[iy - y0, ix - x0] = True
    mask = ndimage.binary_dilation(mask, iterations=grow)
    labels, n_regions = ndimage.label(mask)
    if n_regions == 0:
        return fragments
    # the region each detection's aperture touches: the label at the nearest region pixel
    # within the aperture radius
    region_y, region_x = np.nonzero(labels)
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([region_x + x0, region_y + y0]))
    good = np.isfinite(x) & np.isfinite(y)
    distance = np.full(x.size, np.inf)
    nearest = np.zeros(x.size, int)
    distance[good], nearest[good] = tree.query(np.column_stack([x[good], y[good]]),
                                               distance_upper_bound=radius)
    touches = np.isfinite(distance)
    region = np.zeros(x.size, int)
    region[touches] = labels[region_y[nearest[touches]], region_x[nearest[touches]]]
    brightness = np.nan_to_num(np.asarray(brightness, float), nan=-np.inf)
    for label in np.unique(region[touches]):
        members = np.flatnonzero(region == label)
        if members.size > 1:
            fragments[members[members != members[np.argmax(brightness[members])]]] = True
    log.debug("saturated stars: %d regions, %d detection(s) are fragments of them",
              n_regions, int(fragments.sum()))
    return fragments
