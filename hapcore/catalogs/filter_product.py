"""The catalog stage's entry point for one filter product: its files read, then measured.

:func:`measure_filter_product` reads a filter product, its exposure products and (except for
IR) the saturated pixels of its SVM copies, and runs
:func:`~hapcore.catalogs.stage.measure_filter_catalogs` on them. The filter's background model
is computed in a second thread while the other inputs are read (the two share nothing), and is
not computed at all when the filter product holds the total product's very images (a total of
one filter is a copy of it, :mod:`hapcore.drizzle.total`): the detection's background is then
the same model, from the same pixels and settings.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits

from hapcore.catalogs.detection import SourceDetection, catalog_background
from hapcore.catalogs.flags import nexp_footprint
from hapcore.catalogs.image import CatalogImage
from hapcore.catalogs.side_by_side import run_side_by_side
from hapcore.catalogs.stage import (
    FilterCatalogs,
    measure_filter_catalogs,
    needs_filter_background,
)

__all__ = ["measure_filter_product", "same_product_images"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: The catalog parameters :func:`~hapcore.catalogs.detection.catalog_background` reads.
_BACKGROUND_SETTINGS = ("nsigma_clip", "maxiters", "bkg_box_size", "bkg_filter_size",
                        "bkg_skew_threshold", "negative_percent", "zero_percent", "simple_bkg")
#: The product keywords it reads.
_BACKGROUND_KEYWORDS = ("detector", "texptime", "numexp", "readnoise")
_ROWS_PER_BLOCK = 512


def _exposure_count(paths, shape) -> np.ndarray:
    """Number of exposure products with finite non-zero data at each pixel (spec §6.7.3).

    The filter product's context is not used: it also drops an exposure where its pixel was
    masked (cosmic ray, bad pixel), and on a grid finer than the input pixels (WFPC2's WF chips
    on the PC1 scale) one masked pixel empties a whole block, which put the low-coverage flag
    on most WFPC2 sources.
    """
    count = np.zeros(shape, np.int16)
    for path in paths:
        with fits.open(path, mode="readonly", memmap=True) as hdul:
            data = hdul["SCI"].data
            count += (np.isfinite(data) & (data != 0)).astype(np.int16)
    return count


def same_product_images(path_a, path_b) -> bool:
    """True when the product files ``path_a`` and ``path_b`` hold equal SCI, WHT and CTX
    arrays (NaN equal to NaN), compared block by block through memory maps."""
    with fits.open(path_a, memmap=True) as first, fits.open(path_b, memmap=True) as second:
        for name in ("SCI", "WHT", "CTX"):
            in_first, in_second = name in first, name in second
            if in_first != in_second:
                return False
            if not in_first:
                continue
            a, b = first[name].data, second[name].data
            if a is None or b is None or a.shape != b.shape or a.dtype != b.dtype:
                return a is None and b is None
            rows = a.shape[-2] if a.ndim >= 2 else 1
            for start in range(0, rows, _ROWS_PER_BLOCK):
                block = np.s_[..., start:start + _ROWS_PER_BLOCK, :] if a.ndim >= 2 else np.s_[:]
                if not np.array_equal(a[block], b[block], equal_nan=a.dtype.kind == "f"):
                    return False
            del a, b    # no reference to a memory map outlives its file
    return True


def _filter_background(image: CatalogImage, fdp, detection: SourceDetection, output_dir: Path):
    """The filter product's background model: the detection's when the filter product holds the
    total product's images, with the same background settings and keywords."""
    fcat, tcat = fdp.parameters.catalog, detection.total_parameters.catalog
    total = detection.total_image
    if (all(getattr(fcat, k) == getattr(tcat, k) for k in _BACKGROUND_SETTINGS)
            and all(getattr(image, k) == getattr(total, k) for k in _BACKGROUND_KEYWORDS)
            and total.filename and (output_dir / total.filename).is_file()
            and same_product_images(output_dir / fdp.drizzle_filename,
                                    output_dir / total.filename)):
        log.debug("%s: the total product's images; its background model is used",
                  fdp.product_basename)
        return detection.background
    return catalog_background(image, fcat)


def measure_filter_product(fdp, detection: SourceDetection | Callable[[], SourceDetection], *,
                           output_dir, saturated_xy=None, threads=2) -> FilterCatalogs:
    """Read a filter product, its exposure products and (except for IR) the saturated pixels
    of its SVM copies, and run :func:`~hapcore.catalogs.stage.measure_filter_catalogs` on them.

    ``detection`` is the total's detection, or a function without arguments that reads it
    (from its file: a few seconds on a full UVIS frame), called beside the reading of the
    other inputs. ``saturated_xy`` (0-based product x, y) replaces the saturation lookup when
    given; ``threads`` >= 2 reads the detection and computes the background while the other
    inputs are read.
    """
    output_dir = Path(output_dir)
    if fdp.parameters is None:
        raise ValueError(f"{fdp.product_basename}: parameters are not set")
    image = CatalogImage.from_fits(output_dir / fdp.drizzle_filename)
    # paths: each exposure product is read only while it is measured
    exposure_images = [p for p in (output_dir / e.drizzle_filename for e in fdp.edp_list)
                       if p.exists()]
    inputs = {"saturated_xy": saturated_xy}
    read_detection = detection if callable(detection) else (lambda: detection)
    found: dict = {}

    def read_background():
        found["detection"] = detection = read_detection()
        # IR has no saturated pixels (spec §6.7.2); other detectors may
        if needs_filter_background(detection, saturated=fdp.detector != "ir"):
            inputs["background"] = _filter_background(image, fdp, detection, output_dir)

    def read_others():
        if inputs["saturated_xy"] is None and fdp.detector != "ir":
            from hapcore.catalogs.saturation import saturated_product_pixels

            copies = [output_dir / e.full_filename for e in fdp.edp_list
                      if (output_dir / e.full_filename).exists()]
            inputs["saturated_xy"] = saturated_product_pixels(copies, image.wcs)
        # The exposures covering each pixel, from the exposure products: the context-based
        # count drops an exposure wherever one of its pixels was masked, so with two exposures
        # every star with a masked cosmic ray in its aperture got the low-coverage flag and was
        # trimmed (completeness 0.95 at twice the usual cosmic-ray rate; on WFPC2's PC1-scale
        # grid one masked WF pixel emptied a whole block). Cosmic-ray residuals are caught by
        # the cross-exposure check instead.
        if exposure_images:
            inputs["nexp"] = _exposure_count(exposure_images, image.shape)
            inputs["footprint"] = nexp_footprint(image.data)

    # the detection's reading (and the background, when needed) is the longer branch
    run_side_by_side([read_others, read_background], threads=threads)
    return measure_filter_catalogs(found["detection"], fdp.filters, image,
                                   parameters=fdp.parameters, exposure_images=exposure_images,
                                   threads=threads, **inputs)
