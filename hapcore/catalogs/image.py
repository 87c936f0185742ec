"""Image model of a drizzled total or filter product for catalog generation (spec §6.2).

:class:`CatalogImage` holds the science array (e-/s), its weight and exposure-count images, the
headers and the WCS. It is built from arrays (:meth:`CatalogImage.from_arrays`, pure, used by
tests) or from a product file (:meth:`CatalogImage.from_fits`, the I/O edge). The derived
quantities of §6.2 are pure functions of it:

* :func:`compute_background` -- sigma-clipped or 2-D background and rms, with rms floors
  (:mod:`hapcore.catalogs.background`);
* :func:`make_wht_masks` -- weight regions with their detection rms;
* :func:`gaussian_kernel` -- normalised 11x11 Gaussian of FWHM TWEAK_FWHMPSF / plate scale.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.convolution import Gaussian2DKernel
from astropy.io import fits
from astropy.stats import gaussian_fwhm_to_sigma
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy import ndimage

from hapcore.catalogs.background import (  # noqa: F401  (re-exported)
    MAD_TO_SIGMA,
    BackgroundModel,
    compute_background,
    subtract_background,
)

__all__ = [
    "ProductKeywords",
    "ProductHeaders",
    "CatalogImage",
    "BackgroundModel",
    "WeightRegion",
    "compute_background",
    "subtract_background",
    "make_wht_masks",
    "gaussian_kernel",
    "footprint_mask",
    "nexp_from_context",
    "MAD_TO_SIGMA",
]

log = logging.getLogger(f"hapsvm.{__name__}")


# Erosion (iterations) of the chip-count mask giving the footprint (spec §6.2).
_FOOTPRINT_EROSION = 10
_WHT_FILTER_SIZE = 11


_POPCOUNT = np.array([bin(value).count("1") for value in range(256)], dtype=np.int16)


def nexp_from_context(context) -> np.ndarray:
    """Number of contributing inputs per pixel from a drizzle context (CTX) image.

    CTX is a bit field (one bit per input image, several 32-bit planes for > 32 inputs), so the
    count is the number of set bits summed over planes.
    """
    ctx = np.asarray(context)
    if ctx.ndim == 2:
        ctx = ctx[None]
    planes = ctx.astype(np.uint32, copy=False)
    count = np.zeros(planes.shape[1:], dtype=np.int16)
    if hasattr(np, "bitwise_count"):
        # numpy >= 2.0: the population count itself (a tenth of the table look-ups' time)
        for plane in planes:
            count += np.bitwise_count(plane)
        return count
    # a byte-wise popcount table: unpacking bits would need a 32-byte temporary per pixel
    # (1 GB for a full-frame UVIS mosaic)
    for plane in planes:
        as_bytes = plane.view(np.uint8).reshape(plane.shape + (4,))
        for k in range(4):
            count += _POPCOUNT[as_bytes[..., k]]
    return count


#: Rows converted at a time when a product is read (:func:`_read_image`).
_READ_ROWS = 256


def _read_image(hdu, dtype, *, convert=None) -> np.ndarray:
    """The data of a 2-D image HDU as a native ``dtype`` array (``convert``: applied to the
    file's values first), read in blocks of rows.

    Reading the whole array first held the file's (big-endian) copy next to the converted one,
    and the HDU kept it until the file was closed: 2-3 full-frame arrays per extension.
    Other shapes are read whole.
    """
    convert = convert or (lambda values: values)
    if len(hdu.shape) != 2:
        return np.asarray(convert(hdu.data), dtype=dtype)
    out = np.empty(hdu.shape, dtype=dtype)
    for start in range(0, hdu.shape[0], _READ_ROWS):
        block = hdu.section[start:start + _READ_ROWS]
        out[start:start + block.shape[0]] = convert(block)
    return out


def footprint_mask(coverage, *, erosion=_FOOTPRINT_EROSION) -> np.ndarray:
    """Footprint = (coverage > 0) eroded by ``erosion`` iterations (cross structure)."""
    covered = np.asarray(coverage) > 0
    if erosion <= 0 or not covered.any():
        return covered
    return ndimage.binary_erosion(covered, iterations=erosion, border_value=0)


def _header_value(headers, key, default=None):
    for header in headers:
        if header is not None and key in header and header[key] not in (None, ""):
            return header[key]
    return default


class ProductKeywords:
    """Keywords of a drizzled product derived from its headers and WCS (spec §6.2).

    Shared by :class:`CatalogImage` and :class:`ProductHeaders`; a subclass provides
    ``primary_header``, ``sci_header``, ``wcs`` and ``filename``.
    """

    def keyword(self, key, default=None):
        """Value of ``key`` from the primary header, else ``SCI,1``, else ``default``."""
        return _header_value((self.primary_header, self.sci_header), key, default)

    @property
    def instrument(self) -> str:
        return str(self.keyword("INSTRUME", "")).strip().upper()

    @property
    def detector(self) -> str:
        return str(self.keyword("DETECTOR", "")).strip().upper()

    @property
    def plate_scale(self) -> float:
        """Mean pixel scale in arcsec/pixel."""
        return float(np.mean(proj_plane_pixel_scales(self.wcs)) * 3600.0)

    def _float_keyword(self, key, default=None):
        value = self.keyword(key, default)
        try:
            return float(value)
        except (TypeError, ValueError):
            return default

    @property
    def photflam(self) -> float | None:
        return self._float_keyword("PHOTFLAM")

    @property
    def photplam(self) -> float | None:
        return self._float_keyword("PHOTPLAM")

    @property
    def exptime(self) -> float:
        return self._float_keyword("EXPTIME", 0.0) or 0.0

    @property
    def texptime(self) -> float:
        return self._float_keyword("TEXPTIME", None) or self.exptime

    @property
    def numexp(self) -> int:
        return int(self._float_keyword("NUMEXP", None) or self._float_keyword("NDRIZIM", 1) or 1)

    @property
    def ndrizim(self) -> int:
        """Drizzled exposures. Products' NDRIZIM counts input *chips* since issue #19 (as
        drizzlepac's does); the WHT-mask step was tuned on exposure counts, so it keeps them
        (whether to follow drizzlepac's chip count there is the catalog stage's decision)."""
        return self.numexp

    def _max_of(self, prefix):
        values = []
        for header in (self.primary_header, self.sci_header):
            for key, value in header.items():
                if key.startswith(prefix):
                    try:
                        values.append(float(value))
                    except (TypeError, ValueError):
                        pass
        return values

    @property
    def readnoise(self) -> float:
        """max(READNSE*), electrons (WFPC2: 5.0)."""
        if self.instrument == "WFPC2":
            return 5.0
        values = self._max_of("READNSE")
        return max(values) if values else 0.0

    @property
    def atodgain(self) -> float:
        """max(ATODGN*) (WFPC2: ATODGAIN*), electrons/DN; 1.0 if absent."""
        values = self._max_of("ATODGAIN" if self.instrument == "WFPC2" else "ATODGN")
        values = [v for v in values if v > 0]
        return max(values) if values else 1.0

    @property
    def epadu(self) -> float:
        """Electrons per data unit, for the Poisson term of the photometric errors.

        The products are in electrons/s, so one data unit is ``EXPTIME`` electrons.
        drizzlepac multiplies by the A-to-D gain as well (spec §6.2), which would be right
        only for DN; for electrons it overstates the Poisson variance by the gain, so it is
        not done here. Falls back to 1.0 when EXPTIME is missing.
        """
        return self.exptime if self.exptime > 0 else 1.0

    @property
    def filter_names(self) -> tuple[str, str]:
        """(Filter 1, Filter 2) for the metadata: FILTER, or FILTER1/FILTER2, or FILTNAM1/2."""
        if self.instrument == "WFPC2":
            return (str(self.keyword("FILTNAM1", "")), str(self.keyword("FILTNAM2", "")))
        if self.keyword("FILTER1") is not None or self.keyword("FILTER2") is not None:
            return (str(self.keyword("FILTER1", "")), str(self.keyword("FILTER2", "")))
        return (str(self.keyword("FILTER", "")), "")



@dataclass(eq=False)
class ProductHeaders(ProductKeywords):
    """The headers and WCS of a product without its pixels: what catalog metadata and the
    cosmic-ray-dominance test read, at the cost of a header read
    (:meth:`from_fits`)."""

    wcs: WCS
    primary_header: fits.Header = field(default_factory=fits.Header)
    sci_header: fits.Header = field(default_factory=fits.Header)
    filename: str = ""

    @classmethod
    def from_fits(cls, path):
        """Read the primary and ``SCI,1`` headers of a product file."""
        path = Path(path)
        with fits.open(path, memmap=True) as hdul:
            primary = hdul[0].header.copy()
            sci_header = (hdul["SCI", 1] if ("SCI", 1) in hdul else hdul[0]).header.copy()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(sci_header).celestial
        return cls(wcs=wcs, primary_header=primary, sci_header=sci_header, filename=path.name)


@dataclass(eq=False)
class CatalogImage(ProductKeywords):
    """A drizzled product prepared for source catalogs.

    Parameters
    ----------
    data : 2-D ndarray
        Science image in electrons/s (NaN allowed).
    wcs : astropy.wcs.WCS
        Celestial WCS of ``data``.
    primary_header, sci_header : astropy.io.fits.Header
        Keywords of §6.2 are read from the primary header first, then ``SCI,1``.
    weight : 2-D ndarray, optional
        WHT image (exposure-time weights). Default: 1 where ``data`` is finite and non-zero.
    nexp : 2-D ndarray, optional
        Number of contributing exposures/chips per pixel (e.g. from CTX). Default: 1 where
        ``weight`` > 0.
    filename : str, optional
        Product file name (metadata "Image File Name").
    """

    data: np.ndarray
    wcs: WCS
    primary_header: fits.Header = field(default_factory=fits.Header)
    sci_header: fits.Header = field(default_factory=fits.Header)
    weight: np.ndarray | None = None
    nexp: np.ndarray | None = None
    filename: str = ""

    def __post_init__(self):
        self.data = np.asarray(self.data, dtype=np.float32)
        if self.data.ndim != 2:
            raise ValueError(f"science image must be 2-D, got shape {self.data.shape}")
        if self.weight is None:
            self.weight = (np.isfinite(self.data) & (self.data != 0)).astype(np.float32)
        else:
            self.weight = np.asarray(self.weight, dtype=np.float32)
            # a full-frame copy only when there is something to replace
            if not np.isfinite(self.weight).all():
                self.weight = np.nan_to_num(self.weight, nan=0.0)
        if self.nexp is None:
            self.nexp = (self.weight > 0).astype(np.int16)
        for name in ("weight", "nexp"):
            if getattr(self, name).shape != self.data.shape:
                raise ValueError(f"{name} shape {getattr(self, name).shape} differs from the "
                                 f"science shape {self.data.shape}")
        self._footprint = None

    # ---------------------------------------------------------------- construction
    @classmethod
    def from_arrays(cls, data, *, wcs, primary_header=None, sci_header=None, weight=None,
                    nexp=None, filename=""):
        """Build from in-memory arrays (pure; see the class parameters)."""
        return cls(data=data, wcs=wcs, primary_header=primary_header or fits.Header(),
                   sci_header=sci_header or fits.Header(), weight=weight, nexp=nexp,
                   filename=filename)

    @classmethod
    def from_fits(cls, path, *, context=True):
        """Read a drizzled product (primary, ``SCI``, ``WHT``, optional ``CTX``).

        ``context=False`` skips CTX (exposure counts then follow the weight): enough for
        photometry, and a quarter less memory.
        """
        path = Path(path)
        with fits.open(path, memmap=False) as hdul:
            primary = hdul[0].header.copy()
            sci_hdu = hdul["SCI", 1] if ("SCI", 1) in hdul else hdul[0]
            sci_header = sci_hdu.header.copy()
            data = _read_image(sci_hdu, np.float32)
            weight = _read_image(hdul["WHT"], np.float32) if "WHT" in hdul else None
            nexp = (_read_image(hdul["CTX"], np.int16, convert=nexp_from_context)
                    if context and "CTX" in hdul else None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FITSFixedWarning)
            wcs = WCS(sci_header).celestial
        return cls(data=data, wcs=wcs, primary_header=primary, sci_header=sci_header,
                   weight=weight, nexp=nexp, filename=path.name)

    # ---------------------------------------------------------------- data
    @property
    def shape(self):
        return self.data.shape

    @property
    def is_blank(self) -> bool:
        """True when every science value is 0 or NaN (spec §6.2), or when no pixel survives the
        footprint erosion (a product smaller than the erosion has nothing to measure)."""
        if not bool(np.any(np.isfinite(self.data) & (self.data != 0))):
            return True
        return not bool(np.any(self.footprint))

    # ---------------------------------------------------------------- masks
    @property
    def footprint(self) -> np.ndarray:
        """Coverage (nexp > 0, or weight > 0 without nexp) eroded by 10 iterations (cached)."""
        if self._footprint is None:
            coverage = (self.nexp > 0) | (self.weight > 0)
            coverage &= np.isfinite(self.data)
            self._footprint = footprint_mask(coverage)
        return self._footprint

    @property
    def excluded(self) -> np.ndarray:
        """Inverse of :attr:`footprint`: pixels left out of detection."""
        return ~self.footprint

    @property
    def illuminated(self) -> np.ndarray:
        """Finite, non-zero pixels inside the footprint."""
        return self.footprint & np.isfinite(self.data) & (self.data != 0)


@dataclass(eq=False)
class WeightRegion:
    """One weight region of ``make_wht_masks``.

    Attributes
    ----------
    mask : 2-D bool ndarray
    rel_weight : float
        Maximum relative weight in the region.
    rms : float
        Detection rms of the region: median rms / sqrt(rel_weight).
    """

    mask: np.ndarray
    rel_weight: float
    rms: float = 0.0


def make_wht_masks(weight, illuminated, *, scale=1.5, sensitivity=0.95, ndrizim=1,
                   rms=None, max_regions=10) -> list[WeightRegion]:
    """Split the illuminated area into regions of similar relative weight (spec §6.2).

    ``rel = maximum_filter(weight, 11) / max``; limits start at ``1/s`` and shrink by ``s`` per
    step (``s = max(scale, (ndrizim - 1) / 2)``). A region (unassigned pixels above the limit)
    is kept if it takes all remaining pixels, or if it and the remainder both exceed
    ``(1 - sensitivity)`` of the illuminated pixels; a remainder smaller than that joins the
    last region.

    Parameters
    ----------
    weight : 2-D ndarray
    illuminated : 2-D bool ndarray
    scale, sensitivity : float
        Catalog parameters ``scale`` and ``sensitivity``.
    ndrizim : int
        Number of drizzled inputs.
    rms : 2-D ndarray or float, optional
        Background rms; sets :attr:`WeightRegion.rms`.
    max_regions : int, optional
        Safety cap on the number of regions.

    Returns
    -------
    list of WeightRegion
        Highest weight first; empty when nothing is illuminated.
    """
    illuminated = np.asarray(illuminated, dtype=bool)
    total = int(illuminated.sum())
    if total == 0:
        return []
    weight = np.asarray(weight)
    if not np.isfinite(weight).all():
        weight = np.nan_to_num(weight, nan=0.0)
    maxwht = ndimage.maximum_filter(weight, size=_WHT_FILTER_SIZE)
    peak = float(maxwht.max())
    # in place: the same values without a second full-frame array
    if peak > 0:
        rel = (np.divide(maxwht, peak, out=maxwht) if maxwht.dtype.kind == "f"
               else maxwht / peak)
    else:
        rel = illuminated.astype(np.float32)
    step = max(float(scale), (ndrizim - 1) / 2.0)
    if step <= 1.0:
        step = 1.5
    min_pixels = (1.0 - sensitivity) * total
    limit = 1.0 / step
    remaining = illuminated.copy()
    regions = []
    while remaining.any():
        if len(regions) == max_regions - 1:
            limit = 0.0
        candidate = remaining & (rel > limit)
        rest = remaining & ~candidate
        n_cand, n_rest = int(candidate.sum()), int(rest.sum())
        if n_rest < min_pixels:
            candidate, rest, n_rest = remaining, np.zeros_like(remaining), 0
        if n_rest == 0 or (n_cand > min_pixels and n_rest > min_pixels):
            region_rel = float(rel[candidate].max())
            regions.append(WeightRegion(candidate, region_rel))
            remaining = rest
        limit /= step
        if limit < 1e-12:
            limit = 0.0
    if rms is not None:
        rms_arr = np.broadcast_to(rms, illuminated.shape)
        # a constant rms (a broadcast value): the median of one or two copies of it (the same
        # arithmetic as of the region's pixels, without gathering them)
        constant = rms_arr.size and not any(rms_arr.strides)
        for region in regions:
            n = int(np.count_nonzero(region.mask)) if constant else 0
            median = (np.median(np.repeat(rms_arr.flat[0], 2 - n % 2)) if n
                      else np.median(rms_arr[region.mask]))
            region.rms = float(median / np.sqrt(max(region.rel_weight, 1e-12)))
    return regions


def gaussian_kernel(fwhm_pixels, *, size=11) -> np.ndarray:
    """Normalised ``size`` x ``size`` Gaussian of FWHM ``fwhm_pixels``."""
    sigma = fwhm_pixels * gaussian_fwhm_to_sigma
    kernel = Gaussian2DKernel(sigma, x_size=size, y_size=size)
    kernel.normalize()
    return np.asarray(kernel.array)
