"""The HDRTAB written straight from its columns (issue #16): the same file as astropy's
``table_to_hdu`` + ``writeto``, for every column type a HDRTAB has."""

from __future__ import annotations

import io

import numpy as np
from astropy.io import fits
from astropy.table import MaskedColumn, Table

from hapcore.drizzle.fits_table import binary_table_bytes, binary_table_hdu


def _columns():
    return [("ROOTNAME", np.asarray(["ixp501a0q", "ixp501a1q", "ixp501a2q"], "U9")),
            ("EXTVER", np.asarray([1, 2, 1], np.int64)),
            ("CCDAMP", MaskedColumn(np.asarray([4, 0, 2], np.int64), mask=[False, True, False],
                                    name="CCDAMP")),
            ("EXPTIME", np.asarray([600.0, 600.5, 1e-300])),
            ("PHOTFNU", np.full(3, np.nan)),
            ("FLASHCUR", np.asarray(["", "", ""], "U1")),
            ("SUBARRAY", np.asarray([True, False, True])),
            ("HAPEXPNAME", np.asarray(["hst_15905_01_wfc3_uvis_f555w_ixp501a0"] * 3, "U51"))]


def test_bytes_are_astropys():
    table = Table()
    for name, values in _columns():
        table[name] = values
    hdu = fits.table_to_hdu(table)
    hdu.name = "HDRTAB"
    buffer = io.BytesIO()
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buffer)
    expected = buffer.getvalue()[2880:]
    written = binary_table_bytes(_columns(), extname="HDRTAB")
    assert written == expected
    assert len(written) % 2880 == 0


def test_table_reads_back():
    hdu = binary_table_hdu(_columns(), extname="HDRTAB")
    table = Table.read(hdu)
    assert hdu.name == "HDRTAB"
    assert list(table["ROOTNAME"]) == ["ixp501a0q", "ixp501a1q", "ixp501a2q"]
    assert table["CCDAMP"].mask.tolist() == [False, True, False]
    assert table["EXPTIME"][1] == 600.5
    assert np.isnan(hdu.data["PHOTFNU"]).all()   # NaN (read back as masked by Table)
    assert table["SUBARRAY"].tolist() == [True, False, True]
