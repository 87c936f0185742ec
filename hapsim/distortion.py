"""
Lookup-table distortion of simulated chips: NPOL (``WCSDVARR``) and D2IM (``D2IMARR``) tables.

Real WFC3/UVIS and ACS/WFC FLT/FLC files carry two kinds of lookup tables
besides the SIP polynomial, and astropy applies all of them when the WCS is
built with the file, ``WCS(header, fobj=hdulist)``:

* D2IM (detector to image; ``D2IMDIS1/2 = 'Lookup'``, ``D2IM1.EXTVER``, ...,
  ``D2IMERR1/2``, ``D2IMEXT``): offsets added to the raw pixel coordinates
  before anything else. ACS/WFC's axis-1 table is the column-width pattern
  of its CCDs (one value per column, repeating every 68 columns); the other
  D2IM tables are smooth, on a 64-pixel grid.
* NPOL (``CPDIS1/2 = 'Lookup'``, ``DP1.EXTVER``, ..., ``CPERR1/2``,
  ``NPOLEXT``): the smooth non-polynomial residual of the distortion, on a
  64-pixel grid (65 x 33 nodes), added with the SIP terms.

The tables are fixed per detector and chip, as reference files are: they
are generated deterministically from the detector name and CCDCHIP, never
from a visit's seed. Amplitudes are 0.12-0.18 px for NPOL and 0.04-0.06 px
for D2IM, so a pipeline ignoring them is wrong by ~0.1 px.

Layout (stwcs ``updatewcs`` and the real headers ``jbt122x8q_flc``,
``ib4606c6q_flc``): SCI extension k references ``D2IMARR`` and
``WCSDVARR`` EXTVER 2k-1 (axis 1, DX) and 2k (axis 2, DY); the table
headers hold ``CDELTi``, ``CRPIXi``, ``CRVALi``; primary ``NPOLFILE`` and
``D2IMFILE`` name the (simulated) reference files.

Subarrays keep the full-chip tables. astropy looks pixel ``p`` (1-based)
up at table position ``(p - CRVAL) / CDELT + CRPIX`` and a subarray pixel
is full-chip pixel ``p - LTV``, so the subarray's table headers carry
``CRVAL = CRVAL(full chip) + LTV``: a subarray pixel and the same full-chip
pixel then get identical sky positions. (stwcs's ``createNpolHdr`` and
``createD2ImHdr`` write ``CRVAL - LTV``, which astropy would read 2|LTV|
pixels away.)

The truth WCS files ``truth_wcs/<root>_sci<k>.hdr`` are text headers and
cannot hold tables: `write_truth_wcs` also writes
``truth_wcs/<root>_sci<k>.fits`` with them, and `truth_wcs` returns the
complete true WCS from either file.
"""

from __future__ import annotations

import logging
import warnings
import zlib
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

__all__ = [
    "TABLE_DETECTORS",
    "LookupTable",
    "ChipTables",
    "detector_tables",
    "reference_files",
    "sci_table_cards",
    "table_hdus",
    "file_table_hdus",
    "wcs_with_tables",
    "pixel_area_ratio",
    "write_truth_wcs",
    "truth_wcs",
    "write_true_wcs_copy",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Detectors whose files carry NPOL and D2IM tables (as the real FLC headers do), with the
#: simulated reference files named in NPOLFILE/D2IMFILE, the peak |offset| (px) of the NPOL
#: DX/DY tables and the kind and peak of the D2IM DX/DY tables.
_MODELS = {
    "wfc3/uvis": dict(npolfile="iref$hapsimuv1_npl.fits", d2imfile="iref$hapsimuv1_d2i.fits",
                      npol_peak=(0.15, 0.12), d2im=(("smooth", 0.05), ("smooth", 0.04))),
    "acs/wfc": dict(npolfile="jref$hapsimwf1_npl.fits", d2imfile="jref$hapsimwf1_d2i.fits",
                    npol_peak=(0.18, 0.15), d2im=(("columns", 0.05), ("smooth", 0.06))),
}
TABLE_DETECTORS = tuple(_MODELS)

#: Table grids of the real files: NPOL 65 x 33 nodes and smooth D2IM 64 x 32 nodes, both every
#: 64 pixels (NAXIS1 x NAXIS2); the column-width D2IM has one node per column.
_NPOL_SHAPE = (33, 65)
_D2IM_SHAPE = (32, 64)
_GRID_STEP = 64.0
_COLUMN_PERIOD = 68
_N_MODES = 12
_WAVELENGTHS_PX = (300.0, 2000.0)


@dataclass(frozen=True)
class LookupTable:
    """
    One lookup table as stored in a ``WCSDVARR``/``D2IMARR`` extension.

    Parameters
    ----------
    data : ndarray
        Offsets in pixels, float32, shape ``(NAXIS2, NAXIS1)``.
    cdelt : tuple of float
        Image pixels per table node along x and y.
    crpix, crval : tuple of float
        Table reference node and the full-chip image pixel (1-based) it maps to.
    """

    data: np.ndarray
    cdelt: tuple[float, float] = (_GRID_STEP, _GRID_STEP)
    crpix: tuple[float, float] = (0.0, 0.0)
    crval: tuple[float, float] = (0.0, 0.0)

    @property
    def error(self) -> float:
        """The value stwcs writes as CPERRj/D2IMERRj (the table maximum)."""
        return float(np.max(self.data))

    def header(self, extname: str, extver: int, axis: int, ltv=(0.0, 0.0)) -> fits.Header:
        """Extension header, addressed from an image with offsets `ltv` (LTV1, LTV2)."""
        hdr = fits.Header()
        hdr["EXTNAME"] = (extname, "WCS distortion array")
        hdr["EXTVER"] = (extver, "Distortion array version number")
        # stwcs writes the reference extension's name here
        hdr["CCDCHIP"] = "DX" if axis == 1 else "DY"
        for i in (1, 2):
            hdr[f"CDELT{i}"] = (float(self.cdelt[i - 1]), "Coordinate increment at reference point")
            hdr[f"CRPIX{i}"] = (float(self.crpix[i - 1]), "Pixel coordinate of reference point")
            hdr[f"CRVAL{i}"] = (float(self.crval[i - 1]) + float(ltv[i - 1]),
                                "Coordinate value at reference point")
        return hdr


@dataclass(frozen=True)
class ChipTables:
    """
    The NPOL and D2IM tables of one chip.

    Parameters
    ----------
    npol : tuple of LookupTable
        DX (axis 1) and DY (axis 2) NPOL tables.
    d2im : tuple of LookupTable
        DX and DY D2IM tables.
    npolfile, d2imfile : str
        Reference file names (NPOLFILE/NPOLEXT, D2IMFILE/D2IMEXT).
    ltv : tuple of float
        LTV1, LTV2 of the image the tables are addressed from (a subarray's
        minus its 0-based corner); the tables themselves are full-chip.
    """

    npol: tuple[LookupTable, LookupTable]
    d2im: tuple[LookupTable, LookupTable]
    npolfile: str
    d2imfile: str
    ltv: tuple[float, float] = (0.0, 0.0)

    def at_offset(self, ltv) -> ChipTables:
        """The same tables addressed from an image with offsets `ltv`."""
        return replace(self, ltv=(float(ltv[0]), float(ltv[1])))


def reference_files(detector: str) -> tuple[str, str] | None:
    """``(NPOLFILE, D2IMFILE)`` of a detector with tables, else None."""
    model = _MODELS.get(detector)
    return None if model is None else (model["npolfile"], model["d2imfile"])


def _smooth_table(rng, shape, peak) -> np.ndarray:
    """Zero-mean smooth random field on a 64-px table grid, scaled to max |value| = peak."""
    ny, nx = shape
    y, x = np.mgrid[0:ny, 0:nx] * _GRID_STEP
    field = np.zeros(shape)
    for _ in range(_N_MODES):
        k = 2.0 * np.pi / rng.uniform(*_WAVELENGTHS_PX)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        field += rng.normal() * np.cos(k * (x * np.cos(angle) + y * np.sin(angle))
                                       + rng.uniform(0.0, 2.0 * np.pi))
    field -= field.mean()
    return (field * (peak / np.abs(field).max())).astype(np.float32)


def _column_table(n_columns: int, peak: float) -> LookupTable:
    """ACS/WFC's column-width pattern: one offset per column, a triangle wave of 68 columns.

    A continuous wave (no jumps) keeps the columns within 0.3% of the nominal width, so a
    star rendered on the regular pixel grid stays exact to ~1e-3 px.
    """
    phase = ((np.arange(n_columns) + 0.5) / _COLUMN_PERIOD) % 1.0
    wave = peak * (4.0 * np.abs(phase - 0.5) - 1.0)
    return LookupTable(data=(wave - wave.mean()).astype(np.float32)[None, :], cdelt=(1.0, 1.0))


@lru_cache(maxsize=None)
def _chip_tables(detector: str, ccdchip: int, n_columns: int) -> ChipTables:
    model = _MODELS[detector]
    # Fixed per detector and chip, like reference files: never from a visit's seed.
    rng = np.random.default_rng(zlib.crc32(f"hapsim-lookup-tables:{detector}:{ccdchip}".encode()))
    npol = tuple(LookupTable(data=_smooth_table(rng, _NPOL_SHAPE, peak))
                 for peak in model["npol_peak"])
    d2im = tuple(_column_table(n_columns, peak) if kind == "columns"
                 else LookupTable(data=_smooth_table(rng, _D2IM_SHAPE, peak))
                 for kind, peak in model["d2im"])
    return ChipTables(npol=npol, d2im=d2im, npolfile=model["npolfile"],
                      d2imfile=model["d2imfile"])


def detector_tables(detector: str, ccdchip: int, full_shape, ltv=(0.0, 0.0)) -> ChipTables | None:
    """
    The lookup tables of a chip, or None for a detector without tables.

    Parameters
    ----------
    detector : str
        Canonical detector name (``"wfc3/uvis"``).
    ccdchip : int
    full_shape : tuple of int
        ``(ny, nx)`` of the full chip (the column-width table has ``nx`` nodes).
    ltv : tuple of float, optional
        LTV1, LTV2 of the image (subarrays).

    Returns
    -------
    ChipTables or None
    """
    if detector not in _MODELS:
        return None
    return _chip_tables(detector, int(ccdchip), int(full_shape[1])).at_offset(ltv)


def sci_table_cards(tables: ChipTables, extver: int) -> fits.Header:
    """
    The SCI header keywords referencing the tables of chip `extver`.

    D2IM first, then NPOL, with stwcs's keywords and comments (the record-valued
    ``D2IMj.EXTVER``/``DPj.EXTVER`` cards name table EXTVERs 2k-1 and 2k).
    """
    hdr = fits.Header()
    for j, table in enumerate(tables.d2im, start=1):
        hdr.set(f"D2IMERR{j}", table.error, f"Maximum error of D2IM correction for axis {j}")
        hdr.set(f"D2IMDIS{j}", "Lookup", "Detector to image correction type")
        hdr.set(f"D2IM{j}.EXTVER", 2 * extver - 2 + j, "Version number of D2IMARR extension")
        hdr.set(f"D2IM{j}.NAXES", 2, "Number of independent variables in D2IM function")
        hdr.set(f"D2IM{j}.AXIS.1", 1, "Axis number of the 1st variable in a D2IM function")
        hdr.set(f"D2IM{j}.AXIS.2", 2, "Axis number of the 2nd variable in a D2IM function")
    hdr.set("D2IMEXT", tables.d2imfile, "D2IM reference file")
    for j, table in enumerate(tables.npol, start=1):
        hdr.set(f"CPERR{j}", table.error, f"Maximum error of NPOL correction for axis {j}")
        hdr.set(f"CPDIS{j}", "Lookup", "Prior distortion function type")
        hdr.set(f"DP{j}.EXTVER", 2 * extver - 2 + j, "Version number of WCSDVARR extension")
        hdr.set(f"DP{j}.NAXES", 2, "Number of independent variables in CPDIS function")
        hdr.set(f"DP{j}.AXIS.1", 1, "Axis number of the 1st variable in a CPDIS function")
        hdr.set(f"DP{j}.AXIS.2", 2, "Axis number of the 2nd variable in a CPDIS function")
    hdr.set("NPOLEXT", tables.npolfile, "NPOL reference file")
    return hdr


def table_hdus(tables: ChipTables, extver: int) -> tuple[list, list]:
    """``(D2IMARR HDUs, WCSDVARR HDUs)`` of chip `extver` (EXTVER 2k-1 for DX, 2k for DY)."""
    d2im, npol = [], []
    for j in (1, 2):
        ver = 2 * extver - 2 + j
        table = tables.d2im[j - 1]
        d2im.append(fits.ImageHDU(table.data, header=table.header("D2IMARR", ver, j, tables.ltv)))
        table = tables.npol[j - 1]
        npol.append(fits.ImageHDU(table.data, header=table.header("WCSDVARR", ver, j, tables.ltv)))
    return d2im, npol


def file_table_hdus(tables_per_chip) -> list:
    """
    Every table extension of a file, in the order updatewcs appends them.

    Parameters
    ----------
    tables_per_chip : sequence of ChipTables or None
        The tables of SCI extver 1, 2, ... (None: that chip has none).

    Returns
    -------
    list of astropy.io.fits.ImageHDU
        The ``D2IMARR`` extensions of every chip, then the ``WCSDVARR`` ones.
    """
    d2im, npol = [], []
    for extver, tables in enumerate(tables_per_chip, start=1):
        if tables is not None:
            chip_d2im, chip_npol = table_hdus(tables, extver)
            d2im += chip_d2im
            npol += chip_npol
    return d2im + npol


def _read_wcs(header, hdul, shape=None) -> WCS:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        wcs = WCS(header, fobj=hdul)
    if shape is not None:
        wcs.pixel_shape = (int(shape[1]), int(shape[0]))
    return wcs


def _with_tables(header: fits.Header, tables: ChipTables, extver: int = 1):
    """``(SCI-like header, in-memory HDUList holding it and the tables)``."""
    hdr = header.copy()
    hdr.update(sci_table_cards(tables, extver))
    d2im, npol = table_hdus(tables, extver)
    sci = fits.ImageHDU(header=hdr, name="SCI")
    return hdr, fits.HDUList([fits.PrimaryHDU(), sci, *d2im, *npol])


def wcs_with_tables(header: fits.Header, tables: ChipTables, shape) -> WCS:
    """
    The complete astropy WCS of a TAN-SIP `header` plus `tables`.

    Parameters
    ----------
    header : astropy.io.fits.Header
        Linear and SIP keywords (e.g. `hapsim.geometry.ChipWCS.header`).
    tables : ChipTables
    shape : tuple of int
        ``(ny, nx)`` of the image (sets ``pixel_shape``).

    Returns
    -------
    astropy.wcs.WCS
        Built with ``WCS(header, fobj=hdulist)``: D2IM, SIP and NPOL applied.
    """
    hdr, hdul = _with_tables(header, tables)
    return _read_wcs(hdr, hdul, shape)


def pixel_area_ratio(wcs: WCS, x, y):
    """
    Area of pixels at 0-based (x, y) in units of the CD pixel (the reference pixel's area).

    The Jacobian of astropy's pixel-to-focal map (D2IM, SIP and NPOL) from
    differences across the pixel (its edges at +-0.5): for a table that
    changes from column to column this is the width of the column itself.
    """
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    jac = []
    for dx, dy in ((0.5, 0.0), (0.0, 0.5)):
        hi = np.asarray(wcs.pix2foc(x + dx, y + dy, 0))
        lo = np.asarray(wcs.pix2foc(x - dx, y - dy, 0))
        jac.append(hi - lo)
    (fx_x, fy_x), (fx_y, fy_y) = jac
    return fx_x * fy_y - fx_y * fy_x


def write_truth_wcs(path, header: fits.Header, tables: ChipTables, shape) -> Path:
    """
    Write a true WCS with its tables as ``<path>`` (a ``.fits`` file).

    Extension 1 (``TRUTH``, no data) holds the WCS keywords, the table
    references and ``NPIX1``/``NPIX2`` (the image size, as in stwcs
    headerlets); the ``D2IMARR``/``WCSDVARR`` tables follow, so
    ``WCS(hdul[1].header, fobj=hdul)`` is the complete true WCS.
    """
    path = Path(path)
    hdr, hdul = _with_tables(header, tables)
    for key in ("NAXIS1", "NAXIS2"):
        hdr.remove(key, ignore_missing=True)
    hdr["NPIX1"] = (int(shape[1]), "length of image axis 1")
    hdr["NPIX2"] = (int(shape[0]), "length of image axis 2")
    hdul[1] = fits.ImageHDU(header=hdr, name="TRUTH")
    hdul.writeto(path, overwrite=True)
    return path


def truth_wcs(path) -> WCS:
    """
    The complete TRUE WCS of a simulated chip, lookup tables included.

    Parameters
    ----------
    path : str or Path
        ``truth_wcs/<root>_sci<k>.hdr`` or ``.fits``; for a ``.hdr`` the
        ``.fits`` beside it is used when it exists (chips with lookup
        tables), else the text header (SIP only) is the whole WCS.

    Returns
    -------
    astropy.wcs.WCS
        With ``pixel_shape`` set.

    Examples
    --------
    >>> wcs = truth_wcs(result.truth_wcs[0])                  # doctest: +SKIP
    >>> x, y = wcs.all_world2pix(ra, dec, 0)                  # doctest: +SKIP
    """
    path = Path(path)
    tabled = path.with_suffix(".fits")
    if tabled.exists():
        with fits.open(tabled, mode="readonly", memmap=False) as hdul:
            hdr = hdul[1].header
            return _read_wcs(hdr, hdul, (hdr["NPIX2"], hdr["NPIX1"]))
    hdr = fits.Header.fromtextfile(str(path))
    return _read_wcs(hdr, None, (hdr["NAXIS2"], hdr["NAXIS1"]))


#: Keywords of a chip's linear WCS and SIP polynomials (``A_2_1``...; ``A_ORDER`` separately).
_SIP_WCS_PREFIXES = ("CRPIX", "CRVAL", "CD1_", "CD2_", "CTYPE", "A_", "B_", "AP_", "BP_")


def _is_sip_wcs_key(key: str) -> bool:
    # CRPIX1, CD1_1, A_2_1 ... but not OCRVAL1-style archived copies nor words like CTYPEO
    return ((key.startswith(_SIP_WCS_PREFIXES) and len(key) <= 8 and not key.endswith("O")
             and not key[-1].isalpha()) or key in ("A_ORDER", "B_ORDER"))


def write_true_wcs_copy(exposure, output, truth_dir) -> Path:
    """
    Copy a simulated exposure with its chips' primary WCS replaced by the truth.

    What a perfect alignment would give: products drizzled from such copies can be compared
    with the truth pixel by pixel (drizzle tests and benchmarks). Only the linear WCS and the
    SIP terms are replaced (``truth_wcs/<root>_sci<k>.hdr``); lookup-table extensions stay.

    Parameters
    ----------
    exposure : str or Path
        The simulated FLT/FLC file (read only).
    output : str or Path
        The copy to write (overwritten).
    truth_dir : str or Path
        The visit's ``truth_wcs`` folder.

    Returns
    -------
    Path
        ``output``.
    """
    rootname = Path(exposure).name.split("_")[0]
    with fits.open(exposure, mode="readonly") as hdul:
        copy = fits.HDUList([h.copy() for h in hdul])
    for hdu in copy[1:]:
        if hdu.header.get("EXTNAME") != "SCI":
            continue
        truth = fits.Header.fromtextfile(
            Path(truth_dir) / f"{rootname}_sci{hdu.header['EXTVER']}.hdr")
        for key in [k for k in hdu.header if _is_sip_wcs_key(k)]:
            del hdu.header[key]
        for card in truth.cards:
            if card.keyword.startswith(_SIP_WCS_PREFIXES) or card.keyword in ("A_ORDER",
                                                                              "B_ORDER"):
                hdu.header[card.keyword] = card.value
    copy.writeto(output, overwrite=True)
    return Path(output)
