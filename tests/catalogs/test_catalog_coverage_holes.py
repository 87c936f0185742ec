"""A star whose core has no data in the product (saturated in every IR exposure, issue #15).

The drizzle leaves such a pixel empty (DQ 256 is outside the IR ``final_bits``); the detection
footprint's erosion used to spread that one pixel into a 21-pixel diamond: the star finder
missed the star and the segmentation cut its halo into several segments. The detection image
now fills small enclosed holes (:mod:`hapcore.catalogs.coverage_holes`), the star is one point
row and one segment row, and it gets flag 4 (:func:`hapcore.catalogs.flags.saturated_holes`).
"""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from hapcore.catalogs import detection as detection_module
from hapcore.catalogs.coverage_holes import coverage_holes, fill_coverage_holes
from hapcore.catalogs.flags import saturated_holes
from hapcore.catalogs.image import CatalogImage
from hapcore.catalogs.stage import build_catalogs
from hapcore.obset.parameters import build_product_parameters
from test_catalog_scene import make_visit

IR_SCALE = 0.128
STAR = (100.3, 99.8)


def _ir_params(kind, name=None):
    base = "hst_12345_01_wfc3_ir_" + ("total" if kind == "total" else name) + "_i00001"
    return build_product_parameters("wfc3", "ir", kind, product_basename=base,
                                    filter_name=name, n_exposures=3)


def _bright_star(name, model):
    """A bright star at STAR (noise-free, e-/s), on top of make_visit's scene."""
    from test_catalog_scene import product_psf

    psf = product_psf("wfc3/ir", IR_SCALE)
    ix, iy = int(round(STAR[0])), int(round(STAR[1]))
    stamp = psf.stamps([STAR[0] - ix], [STAR[1] - iy], 20)[0]
    model[iy - 20:iy + 21, ix - 20:ix + 21] += 3000.0 * stamp


def _with_hole(image: CatalogImage, *, count=False) -> CatalogImage:
    """The image with the star's peak pixel empty, as the drizzle leaves it; its exposure
    count (the product's context) too, unless ``count``: a filter's count is taken from its
    exposure products, which have data there."""
    data, weight, nexp = image.data.copy(), image.weight.copy(), image.nexp.copy()
    iy, ix = int(round(STAR[1])), int(round(STAR[0]))
    data[iy, ix] = weight[iy, ix] = 0
    if not count:
        nexp[iy, ix] = 0
    return CatalogImage.from_arrays(data, wcs=image.wcs, primary_header=image.primary_header,
                                    sci_header=image.sci_header, weight=weight, nexp=nexp,
                                    filename=image.filename)


@pytest.fixture(scope="module")
def ir_visit():
    visit = make_visit((200, 200), detector="wfc3/ir", filters=(("f160w", 500.0, 3),),
                       n_stars=12, n_galaxies=2, star_mags=(20.0, 23.0), seed=6,
                       scale=IR_SCALE, edge_fraction=0.0, margin=20, extras=_bright_star)
    # nothing else within 2.5" of the star: every row there is the star or a piece of it
    assert np.all(np.hypot(visit.truth["x"] - STAR[0], visit.truth["y"] - STAR[1])
                  > 2.5 / IR_SCALE)
    return visit


def _catalogs(visit, monkeypatch=None, fill=True):
    if not fill:
        monkeypatch.setattr(detection_module, "MAX_HOLE_RADIUS_ARCSEC", 0.0)
    total, filt = _with_hole(visit.total), _with_hole(visit.filters["f160w"], count=True)
    return build_catalogs(total, {"f160w": filt}, total_parameters=_ir_params("total"),
                          filter_parameters={"f160w": _ir_params("filter", "f160w")})


def _near_star(table: Table, xcol, radius_arcsec=2.0):
    ycol = xcol.replace("X", "Y")
    d = np.hypot(np.asarray(table[xcol]) - STAR[0], np.asarray(table[ycol]) - STAR[1])
    return table[d < radius_arcsec / IR_SCALE]


def test_star_on_a_hole_is_one_flagged_source(ir_visit):
    cats = _catalogs(ir_visit)
    point = _near_star(cats.filters[0].point, "X-Center")
    segment = _near_star(cats.filters[0].segment, "X-Centroid")
    assert len(point) == 1 and len(segment) == 1
    for row, xcol in ((point[0], "X-Center"), (segment[0], "X-Centroid")):
        assert np.hypot(row[xcol] - STAR[0], row[xcol.replace("X", "Y")] - STAR[1]) < 1.0
        assert row["Flags"] & 4                      # saturated: the core has no data
    # the star stays in the total catalogs
    assert len(_near_star(cats.point, "X-Center")) == 1
    assert len(_near_star(cats.segment, "X-Centroid")) == 1


def test_without_the_fill_the_hole_hides_the_star(ir_visit, monkeypatch):
    """The behaviour the fill fixes: the eroded hole hides the star from the star finder, and
    the segmentation cuts its halo into pieces (two here, four on the 3 x F160W visit)."""
    cats = _catalogs(ir_visit, monkeypatch, fill=False)
    assert len(_near_star(cats.filters[0].point, "X-Center", 0.2)) == 0
    segment = _near_star(cats.filters[0].segment, "X-Centroid")
    assert len(segment) >= 2
    assert len(_near_star(segment, "X-Centroid", 0.2)) == 0


def test_coverage_holes_small_and_enclosed_only():
    covered = np.ones((40, 40), bool)
    covered[10, 10] = False                       # one pixel: a hole
    covered[20:23, 20:23] = False                 # 9 pixels: a hole
    covered[30:40, 0:3] = False                   # touches the edge: not a hole
    covered[2:8, 25:35] = False                   # 60 pixels: too big
    holes = coverage_holes(covered, max_area=20)
    assert holes[10, 10] and holes[20:23, 20:23].all()
    assert not holes[30:40, 0:3].any() and not holes[2:8, 25:35].any()
    assert holes.sum() == 10


def test_fill_keeps_the_peak_and_leaves_the_input_alone():
    from test_catalog_scene import make_wcs

    yy, xx = np.mgrid[0:30, 0:30]
    data = (100.0 * np.exp(-((xx - 15) ** 2 + (yy - 15) ** 2) / 8.0) + 1.0).astype(np.float32)
    data[15, 15] = 0.0
    weight = np.full(data.shape, 10.0, np.float32)
    weight[15, 15] = 0.0
    image = CatalogImage.from_arrays(data, wcs=make_wcs(data.shape, 0.1), weight=weight)
    filled = fill_coverage_holes(image, max_radius=2.0)
    assert filled is not image and image.data[15, 15] == 0.0 and image.weight[15, 15] == 0.0
    # the brightest neighbour, not their mean: the hole stays the peak
    assert filled.data[15, 15] == pytest.approx(data[14:17, 14:17].max())
    assert filled.weight[15, 15] == pytest.approx(10.0) and not filled.excluded[15, 15]
    # no hole: the same object
    assert fill_coverage_holes(filled, max_radius=2.0) is filled
    assert saturated_holes(image.data, radius=2.0).tolist() == [[15.0, 15.0]]
    assert saturated_holes(filled.data, radius=2.0) is None


def test_duplicate_refined_positions_are_one_source():
    sources = Table({"xcentroid": [10.0, 10.05, 30.0], "ycentroid": [10.0, 10.02, 5.0],
                     "flux": [5.0, 9.0, 1.0], "id": np.array([1, 2, 3])})
    kept = detection_module._drop_duplicates(sources)
    assert len(kept) == 2
    assert list(kept["flux"]) == [9.0, 1.0] and list(kept["id"]) == [1, 2]
