"""The detection file: what the filter tasks read back is the detection that was made."""

from __future__ import annotations

import zipfile

import numpy as np
from test_catalog_scene import make_visit

from hapcore.catalogs.detection import detect_sources, load_detection, save_detection
from hapcore.catalogs.detection_catalog import FILTER_PROPERTIES
from hapcore.obset.parameters import build_product_parameters


def _total_parameters():
    return build_product_parameters("wfc3", "uvis", "total",
                                    product_basename="hst_12345_01_wfc3_uvis_total_i00001",
                                    n_exposures=2, first_expstart_mjd=58000.0)


def test_detection_file_round_trip(tmp_path):
    visit = make_visit((300, 300), n_stars=40, n_galaxies=8, seed=4)
    parameters = _total_parameters()
    made = detect_sources(visit.total, total_parameters=parameters, threads=1)
    path = save_detection(made, tmp_path / "detection.npz")
    with zipfile.ZipFile(path) as archive:       # the convolved image stored uncompressed
        member = archive.getinfo("segments.convolved.npy")
        assert member.compress_type == zipfile.ZIP_STORED
    read = load_detection(path, visit.total, total_parameters=parameters)
    assert len(read.point_sources) == len(made.point_sources) > 10
    np.testing.assert_array_equal(read.segments.segm.data, made.segments.segm.data)
    # the detection catalog keeps the values the filter catalogs take, not the pixels
    assert read.segments.convolved is None
    assert read.segments.catalog._data is None and read.segments.catalog._convolved_data is None
    for name in ("xcentroid", "ycentroid", "kron_radius", "semimajor_sigma", "orientation",
                 "bbox_xmin", "area", "fwhm", "cxx"):
        assert name in FILTER_PROPERTIES
        np.testing.assert_array_equal(_plain(getattr(read.segments.catalog, name)),
                                      _plain(getattr(made.segments.catalog, name)))
    # without the segments' catalog the convolved image is not even read
    light = load_detection(path, visit.total, total_parameters=parameters, segment_catalog=False)
    assert light.segments.convolved is None and light.segments.catalog is None
    # a file without the convolved image (an older one): convolved again, the same values
    made.segments.convolved = None
    older = save_detection(made, tmp_path / "older.npz")
    again = load_detection(older, visit.total, total_parameters=parameters)
    for name in ("xcentroid", "ycentroid", "kron_radius"):
        np.testing.assert_allclose(_plain(getattr(again.segments.catalog, name)),
                                   _plain(getattr(read.segments.catalog, name)),
                                   rtol=1e-5, atol=1e-5)


def _plain(values):
    return np.asarray(getattr(values, "value", values), dtype=float)


def test_filter_segments_same_with_the_frozen_detection_catalog(tmp_path):
    """A filter's segment catalog measured with the detection read back (its detection catalog
    frozen, no total pixels or convolution kept) equals the one measured with the detection
    made in memory, column by column."""
    from hapcore.catalogs.detection import catalog_background
    from hapcore.catalogs.segment import measure_segments

    visit = make_visit((300, 300), n_stars=40, n_galaxies=12, seed=7)
    parameters = _total_parameters()
    made = detect_sources(visit.total, total_parameters=parameters, threads=1)
    read = load_detection(save_detection(made, tmp_path / "detection.npz"), visit.total,
                          total_parameters=parameters)
    image = visit.filters["f606w"]
    fcat = parameters.catalog
    background = catalog_background(image, fcat)
    in_memory = measure_segments(image, background, made.segments, params=fcat)
    frozen = measure_segments(image, background, read.segments, params=fcat)
    assert len(frozen) == len(in_memory) > 10
    for name in in_memory.colnames:
        np.testing.assert_array_equal(np.asarray(frozen[name]), np.asarray(in_memory[name]),
                                      err_msg=name)
