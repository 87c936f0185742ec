"""Validation on a real header (not part of the test suite: tests never read ../shared).

Run: ``python -m pytest validation/test_wcs_records_real_header.py``; skips when ../shared is absent.
"""

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_wcs_records import (  # noqa: E402
    COPY_NAME, HLET_NAME, PIXELS, SVM_RECORD, _full_wcs, _sha256, alignment_for, fitted_chips,
)
from hapcore.wcs.records import read_chip_wcs, write_headerlet, write_svm_copy  # noqa: E402

REAL_HEADER = Path(__file__).resolve().parents[2] / "shared/data/headers/wfc3_uvis_ib4606c6q_flc_header.fits"


@pytest.mark.skipif(not REAL_HEADER.exists(), reason="shared HST header sample not available")
def test_real_wfc3_header(tmp_path):
    """A real FLC header (10x10 pixels, 10 HDRLETs, NPOL/D2IM tables) goes through unchanged."""
    source = REAL_HEADER
    before = _sha256(source)
    chips = fitted_chips(source)
    alignment = alignment_for(source, SVM_RECORD, chips)
    copy = write_svm_copy(source, tmp_path / COPY_NAME, alignment)
    hlet = write_headerlet(copy, tmp_path / HLET_NAME, alignment)
    assert _sha256(source) == before
    with fits.open(copy) as hdul:
        header = hdul["SCI", 1].header
        # O, A, B, C are taken: the archive goes to D; its WCS is the input's, and as the input
        # already carries the name of the new solution, the archive gets a unique one
        assert header["WCSNAMED"] == "IDC_2731450pi-FIT_SVM_GAIAeDR3_1"
        assert header["WCSNAME"] == "IDC_2731450pi-FIT_SVM_GAIAeDR3"
        # the input has an HDRLET of that name already (the drizzlepac run): not attached twice
        hdrnames = [hdu.header["HDRNAME"] for hdu in hdul if hdu.name == "HDRLET"]
        assert len(hdrnames) == 10 and header["HDRNAME"] in hdrnames
    np.testing.assert_array_equal(_full_wcs(copy, 1, key="D").all_pix2world(PIXELS, 1),
                                  _full_wcs(source, 1).all_pix2world(PIXELS, 1))
    with fits.open(hlet) as headerlet, warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(headerlet["SIPWCS", 2].header, fobj=headerlet)
        np.testing.assert_array_equal(wcs.all_pix2world(PIXELS, 1),
                                      read_chip_wcs(copy)[2].all_pix2world(PIXELS, 1))
