"""The segments' detection catalog, reduced to the values the filter catalogs take from it.

A filter's segment catalog (:func:`hapcore.catalogs.segment.measure_segments`) is a photutils
``SourceCatalog`` of the filter image with ``detection_cat`` set to the catalog of the total
image: its centroids, shapes, bounding boxes and Kron apertures are the total's. photutils
computes those lazily from the total's background-subtracted image and its convolution, so the
detection catalog kept both full-frame arrays (2 x 108 MB on a 3 x WFC3/UVIS visit) alive
through every filter measurement, beside the filter's own image, residual and error -- the
filter catalog stage's memory peak (issue #16).

:func:`freeze_detection_catalog` evaluates every property a filter catalog takes from the
detection catalog (`FILTER_PROPERTIES`), then drops the catalog's references to the pixel
arrays and the cutouts cached on them. The values are those photutils computed (nothing is
recomputed differently); a property that is not in the list and needs the pixels fails loudly
(``TypeError`` on ``None``) instead of reading freed data.
"""

from __future__ import annotations

__all__ = ["FILTER_PROPERTIES", "freeze_detection_catalog"]

#: The detection-catalog properties a filter catalog uses (photutils' ``use_detcat``
#: properties that :func:`~hapcore.catalogs.segment.measure_segments` and
#: :func:`~hapcore.catalogs.galaxy_flux.total_galaxy_flux` read, and those they are built on).
FILTER_PROPERTIES: tuple[str, ...] = (
    "isscalar", "nlabels", "xcentroid", "ycentroid", "centroid", "cutout_centroid", "moments",
    "moments_central", "area", "bbox_xmin", "bbox_xmax", "bbox_ymin", "bbox_ymax",
    "covar_sigx2", "covar_sigxy", "covar_sigy2", "covariance_eigvals", "cxx", "cxy", "cyy",
    "semimajor_sigma", "semiminor_sigma", "fwhm", "orientation", "elongation", "ellipticity",
    "kron_radius", "kron_aperture",
)

#: Lazily cached values that hold views of (or copies as large as) the pixel arrays.
_PIXEL_CACHES: tuple[str, ...] = (
    "_data_cutouts", "_convdata_cutouts", "_moment_data_cutouts", "_data_values",
    "_mask_cutouts", "_cutout_data_masks", "_cutout_segment_masks", "_cutout_total_masks",
    "_segment_img_cutouts", "data_ma", "_error_cutouts", "_background_cutouts",
)

#: The catalog's own references to the full-frame arrays.
_PIXEL_ARRAYS: tuple[str, ...] = ("_data", "_convolved_data", "_error", "_background", "_mask")


def freeze_detection_catalog(catalog):
    """Evaluate `FILTER_PROPERTIES` on ``catalog`` and release its pixel arrays.

    Parameters
    ----------
    catalog : photutils.segmentation.SourceCatalog
        The detection catalog of the total image (no ``detection_cat`` of its own).

    Returns
    -------
    photutils.segmentation.SourceCatalog
        The same object, its filter properties cached and no reference to the image, its
        convolution, error or background arrays left.
    """
    for name in FILTER_PROPERTIES:
        getattr(catalog, name)
    cached = vars(catalog)
    for name in _PIXEL_CACHES:
        cached.pop(name, None)
    for name in _PIXEL_ARRAYS:
        cached[name] = None
    return catalog
