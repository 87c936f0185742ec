"""Image model of a drizzled total or filter product for catalog generation (spec §6.2).

:class:`CatalogImage` holds the science array (e-/s), its weight and exposure-count images, the
headers and the WCS. It is built from arrays (:meth:`CatalogImage.from_arrays`, pure, used by
tests) or from a product file (:meth:`CatalogImage.from_fits`, the I/O edge). The derived
quantities of §6.2 are pure functions of it:

* :func:`compute_background` -- sigma-clipped or 2-D background and rms, with rms floors;
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
from astropy.utils.exceptions import AstropyUserWarning
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales
from scipy import ndimage

from hapcore.catalogs.clipped_stats import SortedSample, sorted_clipped_stats

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

#: Normal-distribution factor of the median absolute deviation.
MAD_TO_SIGMA: float = 1.482602

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
class BackgroundModel:
    """Background and rms of one image.

    Attributes
    ----------
    background, rms : 2-D ndarray
        Per-pixel background and rms (read-only broadcast views when constant).
    median, rms_value : float
        Scalar median background and rms (for 2-D: medians of the maps).
    method : str
        "zero_background", "sigma_clipped_background" or "twod_background".
    skew : float
        |3 (mean - median) / std| of the sigma-clipped statistics.
    sigma_clipped_rms : float
        The rms of the sigma-clipped estimate (used by the crowding logic).
    """

    background: np.ndarray
    rms: np.ndarray
    median: float
    rms_value: float
    method: str
    skew: float = 0.0
    sigma_clipped_rms: float = 0.0


def _mad_rms_floor(data) -> float:
    """MAD-based noise of horizontal second differences (zeros/NaN masked), spec §6.2."""
    data = np.asarray(data)
    ny, nx = data.shape
    # by blocks of rows into one buffer: a float64 copy of the image and three float64 stacks
    # of the good pixels were 4-5 full-frame temporaries (pages never written cost nothing)
    diffs = np.empty(ny * max(nx - 4, 0), dtype=np.float64)
    n = 0
    for start in range(0, ny, _READ_ROWS):
        block = data[start:start + _READ_ROWS]
        img = np.where(np.isfinite(block), block, 0.0).astype(np.float64, copy=False)
        left = img[:, :-4]
        mid = img[:, 2:-2]
        right = img[:, 4:]
        good = (left != 0) & (mid != 0) & (right != 0)
        k = int(np.count_nonzero(good))
        diffs[n:n + k] = np.abs(2.0 * mid[good] - left[good] - right[good])
        n += k
    if n == 0:
        return 0.0
    return float(np.median(diffs[:n], overwrite_input=True) * MAD_TO_SIGMA / np.sqrt(6.0))


#: The sigma clipping continues past ``maxiters`` when that brings the clipped std below this
#: fraction of its ``maxiters`` value (see :func:`_clipped_stats`).
_UNCONVERGED_STD_RATIO: float = 0.8


def _clipped_stats(values, *, nsigma_clip, maxiters):
    """Sigma-clipped (mean, median, std), iterated to convergence when ``maxiters`` stops early.

    With bright saturated stars, their halos, rings and spikes make the wings of the pixel
    distribution heavy: three iterations left the std of a WFC3/UVIS total image with two
    12-14 mag stars per 40" at 3.4 times the sky noise (0.0167 e-/s against 0.0049 once
    converged), the threshold of every detection with it, and the completeness at S/N 10 fell
    to 0.64 (issue #15). The clipping goes on until nothing more is clipped when that lowers the
    std below ``_UNCONVERGED_STD_RATIO`` of the ``maxiters`` value; otherwise (the usual sky,
    within a few percent) the ``maxiters`` statistics of the spec are kept.
    """
    # astropy's statistics from one sort of the sample instead of a copy and a partition per
    # iteration (identical values, :mod:`hapcore.catalogs.clipped_stats`); astropy clips
    # non-finite values first
    values = np.asarray(values).ravel()
    finite = np.isfinite(values)
    sample = SortedSample(values if finite.all() else values[finite])
    del finite
    mean, median, std = sorted_clipped_stats(sample, sigma=nsigma_clip, maxiters=maxiters)
    if maxiters is None or not std > 0:
        return mean, median, std
    inside = sample.subset(lambda v: np.abs(v - median) <= nsigma_clip * std)
    if inside.size == values.size or inside.size < 2:
        return mean, median, std
    c_mean, c_median, c_std = sorted_clipped_stats(inside, sigma=nsigma_clip, maxiters=None)
    if c_std < _UNCONVERGED_STD_RATIO * std:
        log.info("background: sigma clipping not converged after %d iterations (std %.4g); "
                 "iterated to convergence: std %.4g, median %.5g (was %.5g)", maxiters, std,
                 c_std, c_median, median)
        return c_mean, c_median, c_std
    return mean, median, std


def compute_background(image: CatalogImage, *, nsigma_clip=3.0, maxiters=3, box_size=27,
                       filter_size=3, skew_threshold=0.5, negative_percent=15.0,
                       zero_percent=25.0, simple_bkg=False, force_2d=False) -> BackgroundModel:
    """Background and rms of ``image`` (spec §6.2).

    Sigma-clipped statistics over the illuminated footprint (iterated past ``maxiters`` when
    bright halos leave the std inflated, :func:`_clipped_stats`), with the rms floored by the
    read-noise floor ``sqrt(NUMEXP) * READNSE / TEXPTIME`` and the MAD estimator of horizontal
    second differences. A Background2D model replaces the constant one when the clipped
    distribution is skewed (> ``skew_threshold``) unless it over-subtracts (more than
    ``negative_percent`` % of pixels below -1 rms) or is noisier than the constant one.

    Differences from drizzlepac (deliberate): the "refine" step that re-clips only pixels with
    ``0 < value < median + 0.1 std`` is not repeated, because keeping only the lower half of
    the sky distribution biases the median low by ~0.8 sigma (and segment fluxes high); the
    median is not clipped at 0, because drizzled products are sky-subtracted and a slightly
    negative median is real.

    Parameters
    ----------
    image : CatalogImage
    nsigma_clip, maxiters, box_size, filter_size, skew_threshold, negative_percent, \
zero_percent, simple_bkg
        The §6.1 catalog parameters of the same names.
    force_2d : bool, optional
        Use Background2D regardless of skewness and quality checks (segmentation fallback).

    Returns
    -------
    BackgroundModel
    """
    data = image.data
    illum = image.illuminated
    shape = data.shape
    texptime = image.texptime if image.texptime > 0 else 1.0

    if not illum.any():
        zero = np.broadcast_to(np.float32(0.0), shape)
        return BackgroundModel(zero, zero, 0.0, 0.0, "sigma_clipped_background")

    values = data[illum]
    if image.detector == "SBC":
        covered = image.footprint & np.isfinite(data)
        n_zero = np.count_nonzero(data[covered] == 0)
        if n_zero > zero_percent / 100.0 * covered.sum():
            positive = data[covered & (data > 0)]
            rms = max(float(np.std(positive)) if positive.size else 0.0, 1.0 / texptime)
            return BackgroundModel(np.broadcast_to(np.float32(0.0), shape),
                                   np.broadcast_to(np.float32(rms), shape), 0.0, rms,
                                   "zero_background", 0.0, rms)

    mean, median, std = _clipped_stats(values, nsigma_clip=nsigma_clip, maxiters=maxiters)
    skew = abs(3.0 * (mean - median) / std) if std > 0 else 0.0
    if image.detector == "SBC":
        readnoise_floor = np.sqrt(max(median * texptime, 1.0)) / texptime
    else:
        readnoise_floor = np.sqrt(image.numexp) * image.readnoise / texptime
    mad_floor = _mad_rms_floor(data)
    rms = float(max(std, readnoise_floor, mad_floor))
    log.debug("background: clipped median %.5g std %.5g, floors readnoise %.5g MAD %.5g, skew %.3f",
              median, std, readnoise_floor, mad_floor, skew)
    constant = BackgroundModel(np.broadcast_to(np.float32(median), shape),
                               np.broadcast_to(np.float32(rms), shape), float(median), rms,
                               "sigma_clipped_background", float(skew), rms)
    if not force_2d and (simple_bkg or skew <= skew_threshold):
        return constant

    twod = _background_2d(data, image.excluded, box_size=box_size, filter_size=filter_size)
    if twod is None:
        log.warning("Background2D failed for every exclude_percentile; using the sigma-clipped "
                    "background")
        return constant
    bkg2d, rms2d = twod
    rms2d_median = float(np.median(rms2d[illum]))
    if not force_2d:
        negative = np.count_nonzero((data - bkg2d)[illum] < -rms2d_median)
        if negative > negative_percent / 100.0 * illum.sum() or rms2d_median > rms:
            log.info("2-D background rejected (%.1f%% pixels below -1 rms, rms %.4g vs %.4g); "
                     "using the sigma-clipped background",
                     100.0 * negative / illum.sum(), rms2d_median, rms)
            return constant
    return BackgroundModel(bkg2d, np.maximum(rms2d, np.float32(max(readnoise_floor, 0.0))),
                           float(np.median(bkg2d[illum])), rms2d_median, "twod_background",
                           float(skew), rms)


def subtract_background(data, background) -> np.ndarray:
    """``np.nan_to_num(data - background, nan=0.0)`` as a new float array, with no temporary
    besides the result (and no pass over it when every value is finite)."""
    residual = np.subtract(data, background)
    if not np.isfinite(residual).all():
        np.nan_to_num(residual, copy=False, nan=0.0)
    return residual


def _background_2d(data, coverage_mask, *, box_size, filter_size):
    from photutils.background import Background2D, SExtractorBackground, StdBackgroundRMS

    clean = np.where(np.isfinite(data), data, 0.0)
    for percentile in (10.0, 25.0, 50.0, 75.0):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)
                bkg = Background2D(clean, box_size, coverage_mask=coverage_mask,
                                   filter_size=filter_size, exclude_percentile=percentile,
                                   bkg_estimator=SExtractorBackground(),
                                   bkgrms_estimator=StdBackgroundRMS(), fill_value=0.0)
            return (bkg.background.astype(np.float32), bkg.background_rms.astype(np.float32))
        except ValueError:
            continue
    return None


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
