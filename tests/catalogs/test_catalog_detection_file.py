"""The detection file: what the filter tasks read back is the detection that was made."""

from __future__ import annotations

import zipfile

import numpy as np

from hapcore.catalogs.detection import detect_sources, load_detection, save_detection
from hapcore.obset.parameters import build_product_parameters
from test_catalog_scene import make_visit


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
    np.testing.assert_array_equal(read.segments.convolved, made.segments.convolved)
    for name in ("xcentroid", "ycentroid", "kron_radius", "segment_flux"):
        np.testing.assert_array_equal(getattr(read.segments.catalog, name),
                                      getattr(made.segments.catalog, name))
    # without the segments' catalog the convolved image is not even read
    light = load_detection(path, visit.total, total_parameters=parameters, segment_catalog=False)
    assert light.segments.convolved is None and light.segments.catalog is None
    # a file without the convolved image (an older one): convolved again, the same values
    made.segments.convolved = None
    older = save_detection(made, tmp_path / "older.npz")
    again = load_detection(older, visit.total, total_parameters=parameters)
    np.testing.assert_allclose(again.segments.convolved, read.segments.convolved, rtol=0,
                               atol=1e-6 * float(np.abs(read.segments.convolved).max()))
