"""
Choosing, reading and writing the PSFs of a simulated visit.

`simulate_visit` takes ``psf="gaussian"`` (the Gaussian mixtures of
`hapsim.psf`), ``psf="optical"`` (`hapsim.optics`) or a mapping
``{filter: path}`` of PSF FITS files, and writes the PSF it used for
every filter to ``truth_psf/<filter>.fits``.

**PSF files read.** The image is the primary HDU (or the first image
extension); its oversampling is ``OVERSAMP`` (WebbPSF, Tiny Tim's
subsampled PSFs), else ``DET_SAMP`` or ``OVERSAMPLE`` (1 if none). A
sample scale ``PIXELSCL`` or ``PIXSCALE`` (arcsec per sample) other than
the chip's plate scale over the oversampling is resampled to it. Unless
``PIXINTEG = T`` says the image is already integrated over detector
pixels (as the truth files are), it is taken as the optical PSF and
integrated over the square pixel and the detector's 3x3 kernel at the
filter's pivot wavelength. Library PSFs sit up to a third of a pixel off
their central sample (simulation notes #1): the image is shifted (by a
Fourier phase) so that its centroid falls on the central sample. It is
then normalised so that the mean sub-pixel phase sums to 1.

**Truth files written.** Primary HDU: the oversampled pixel-integrated
PSF (float32), centred on the middle sample, with ``OVERSAMP``,
``PIXSCALE`` (arcsec per *sample*, the Tiny Tim/WebbPSF meaning),
``DETSCALE`` (arcsec per detector pixel), ``PIXINTEG = T`` and the
model's provenance; extension ``EE``: the encircled energy of that PSF
versus radius (arcsec). Stars are rendered with this PSF out to 80% of
its half width and beyond that with its round, tapered far wings
(`hapsim.optics.round_wing_psf`; same total flux, same encircled energy
to 2e-5 out to 6"): ``WINGTAP0`` and ``WINGRAD`` give where their taper
starts and where they reach zero (arcsec). Where the chips of a detector
have different plate scales (WFPC2) the file names carry the scale,
``<filter>_<scale in mas>mas.fits``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from astropy.io import fits
from scipy.special import erf

from .detectors import DetectorSpec
from .optics import (
    WING_TAPER_FRACTION,
    OpticalPSF,
    _kernel_transfer,
    detector_kernel,
    optical_psf,
    period_block,
)
from .psf import GaussianMixturePSF, psf_for_detector

__all__ = ["PSF_MODELS", "check_psf_option", "read_psf_file", "sampled_gaussian_psf",
           "visit_psfs", "write_psf_file", "write_truth_psfs"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Accepted string values of ``simulate_visit(psf=...)``.
PSF_MODELS = ("gaussian", "optical")
_OVERSAMPLING_KEYS = ("OVERSAMP", "DET_SAMP", "OVERSAMPLE")
_SCALE_KEYS = ("PIXELSCL", "PIXSCALE")


def check_psf_option(psf, filters) -> str:
    """
    Validate ``simulate_visit``'s `psf` argument before anything is written.

    Parameters
    ----------
    psf : str or mapping
    filters : iterable of str
        Filters of the visit (upper case).

    Returns
    -------
    str
        ``"gaussian"``, ``"optical"`` or ``"files"``.
    """
    if isinstance(psf, str):
        mode = psf.strip().lower()
        if mode not in PSF_MODELS:
            raise ValueError(f"unknown psf {psf!r} (use one of {', '.join(PSF_MODELS)} "
                             "or a {filter: path} mapping)")
        return mode
    if not isinstance(psf, Mapping):
        raise TypeError(f"psf must be a string or a {{filter: path}} mapping, got {type(psf)}")
    given = {str(k).strip().upper(): Path(v) for k, v in psf.items()}
    missing = sorted(set(filters) - set(given))
    if missing:
        raise ValueError(f"no PSF file given for filter(s) {', '.join(missing)}")
    for name in filters:
        if not given[name].is_file():
            raise ValueError(f"PSF file {str(given[name])!r} for {name} does not exist")
    return "files"


def visit_psfs(spec: DetectorSpec, filters, scales, psf) -> dict:
    """
    The PSF of every (filter, chip plate scale) of a visit.

    Parameters
    ----------
    spec : DetectorSpec
    filters : iterable of str
        Upper-case filter names.
    scales : iterable of float
        Plate scales (arcsec/px) of the chips used.
    psf : str or mapping
        See `check_psf_option`.

    Returns
    -------
    dict
        ``{(filter, scale): GaussianMixturePSF or OpticalPSF}``.
    """
    filters = list(filters)
    mode = check_psf_option(psf, filters)
    out = {}
    for scale in scales:
        gaussian = psf_for_detector(spec, pixel_scale=scale) if mode == "gaussian" else None
        for name in filters:
            if mode == "gaussian":
                out[name, scale] = gaussian
            elif mode == "optical":
                out[name, scale] = optical_psf(spec, name, pixel_scale=scale)
            else:
                path = {str(k).strip().upper(): v for k, v in psf.items()}[name]
                out[name, scale] = read_psf_file(path, spec, name, pixel_scale=scale)
    return out


def _header_value(header, keys):
    for key in keys:
        if key in header and header[key] not in (None, ""):
            return header[key]
    return None


def _fourier_shift(image, shift_y, shift_x):
    """Shift a zero-padded image by a sub-sample amount (band-limited)."""
    ny, nx = image.shape
    ky = sfft.fftfreq(ny)[:, None]
    kx = sfft.rfftfreq(nx)[None, :]
    phase = np.exp(-2j * np.pi * (ky * shift_y + kx * shift_x))
    return sfft.irfft2(sfft.rfft2(image) * phase, s=image.shape)


def _odd_square(data, pad):
    """`data` centred in an odd square array with `pad` zeros around."""
    size = max(data.shape) + 2 * pad
    size += 1 - size % 2
    out = np.zeros((size, size))
    y0 = (size - data.shape[0]) // 2
    x0 = (size - data.shape[1]) // 2
    out[y0:y0 + data.shape[0], x0:x0 + data.shape[1]] = data
    return out


def _centroid_offset(image):
    """First-moment position minus the central sample, (x, y) in samples."""
    centre = image.shape[0] // 2
    yy, xx = np.indices(image.shape)
    total = image.sum()
    return (float((image * xx).sum() / total) - centre,
            float((image * yy).sum() / total) - centre)


def read_psf_file(path, spec: DetectorSpec, filter_name, *, pixel_scale=None) -> OpticalPSF:
    """
    Read a PSF FITS file for rendering (see the module notes).

    Parameters
    ----------
    path : str or Path
    spec : DetectorSpec
    filter_name : str
        Filter the file stands for (its pivot wavelength picks the kernel).
    pixel_scale : float, optional
        Chip plate scale, default the detector's ``idcscale``.

    Returns
    -------
    OpticalPSF
    """
    path = Path(path)
    scale = float(pixel_scale or spec.idcscale)
    with fits.open(path) as hdul:
        hdu = next((h for h in hdul if h.data is not None and np.ndim(h.data) == 2), None)
        if hdu is None:
            raise ValueError(f"{path}: no 2-D image in any HDU")
        data = np.nan_to_num(np.asarray(hdu.data, dtype=float))
        header = hdu.header.copy()
        if hdu is not hdul[0]:
            for key in _OVERSAMPLING_KEYS + _SCALE_KEYS + ("PIXINTEG",):
                if key not in header and key in hdul[0].header:
                    header[key] = hdul[0].header[key]
    oversample = _header_value(header, _OVERSAMPLING_KEYS)
    if oversample is None:
        log.warning("hapsim: %s has no OVERSAMP/DET_SAMP/OVERSAMPLE; taken as 1", path.name)
        oversample = 1
    oversample = round(float(oversample))
    if oversample < 1:
        raise ValueError(f"{path}: oversampling must be >= 1, got {oversample}")
    if data.sum() <= 0:
        raise ValueError(f"{path}: the PSF image has no positive flux")

    integrated = bool(header.get("PIXINTEG", False))
    image = _odd_square(data, 0)
    sample_scale = _header_value(header, _SCALE_KEYS)
    if sample_scale is not None:
        zoom = float(sample_scale) * oversample / scale
        if abs(zoom - 1.0) > 2e-3:
            from scipy.ndimage import zoom as ndzoom

            image = _odd_square(ndzoom(image, zoom, order=3), 0)
    dx, dy = _centroid_offset(image)
    shift = max(abs(dx), abs(dy)) > 1e-3
    if shift or not integrated:
        # room for the shift and the pixel box, which wrap around
        image = _odd_square(image, 2 * oversample + 2)
    if shift:
        log.debug("hapsim: %s re-centred by (%.3f, %.3f) samples", path.name, dx, dy)
        image = _fourier_shift(image, -dy, -dx)

    if not integrated:
        phot = spec.filter(filter_name)
        shifted = np.fft.ifftshift(image)
        fy = sfft.fftfreq(image.shape[0])[:, None]
        fx = sfft.rfftfreq(image.shape[1])[None, :]
        kern = detector_kernel(spec.name, phot.photplam * 1e-4)
        transfer = (np.sinc(fx * oversample) * np.sinc(fy * oversample)
                    * _kernel_transfer(kern, fx, fy, float(oversample)))
        image = np.fft.fftshift(sfft.irfft2(sfft.rfft2(shifted) * transfer, s=image.shape))
    image *= oversample**2 / period_block(image, oversample)[0].sum()
    meta = {"model": "file", "source": str(path), "filter": filter_name.strip().upper(),
            "detector": spec.name}
    return OpticalPSF(image, oversample, pixel_scale=scale, meta=meta)


def sampled_gaussian_psf(psf: GaussianMixturePSF, *, pixel_scale, oversample=4,
                         half_size=40) -> OpticalPSF:
    """
    A Gaussian-mixture PSF as an oversampled pixel-integrated image (for truth files).

    Parameters
    ----------
    psf : GaussianMixturePSF
    pixel_scale : float
    oversample, half_size : int, optional
        The rendered stamps of bright stars are 40 pixels in half size.

    Returns
    -------
    OpticalPSF
    """
    u = np.arange(-half_size * oversample, half_size * oversample + 1) / oversample
    image = np.zeros((u.size, u.size))
    for sigma, weight in zip(psf.sigmas, psf.weights):
        s2 = np.sqrt(2.0) * sigma
        profile = 0.5 * (erf((u + 0.5) / s2) - erf((u - 0.5) / s2))
        image += weight * profile[:, None] * profile[None, :]
    image *= oversample**2 / image.sum()
    meta = {"model": "gaussian", "sigmas_px": [float(v) for v in psf.sigmas],
            "weights": [float(v) for v in psf.weights]}
    return OpticalPSF(image, oversample, pixel_scale=pixel_scale, fwhm_pixels=psf.fwhm(),
                      meta=meta)


def write_psf_file(path, psf: OpticalPSF, *, radius_step_arcsec=0.01) -> Path:
    """
    Write a PSF as a truth file (image, keywords and an ``EE`` table).

    Parameters
    ----------
    path : str or Path
    psf : OpticalPSF
    radius_step_arcsec : float, optional
        Spacing of the encircled-energy table.

    Returns
    -------
    Path
    """
    path = Path(path)
    header = fits.Header()
    header["OVERSAMP"] = (psf.oversample, "samples per detector pixel")
    header["PIXSCALE"] = (psf.pixel_scale / psf.oversample, "[arcsec] per image sample")
    header["PIXELSCL"] = (psf.pixel_scale / psf.oversample, "[arcsec] per image sample")
    header["DETSCALE"] = (psf.pixel_scale, "[arcsec] per detector pixel")
    header["PIXINTEG"] = (True, "integrated over detector pixels and kernel")
    header["NORMALIZ"] = ("PHASESUM", "each sub-pixel phase sums to ~1")
    header["FWHMPIX"] = (round(psf.fwhm(), 4), "FWHM before pixelation, pixels")
    header["PSFMODEL"] = (str(psf.meta.get("model", "")), "hapsim PSF model")
    for key, name in (("DETECTOR", "detector"), ("FILTER", "filter")):
        if name in psf.meta:
            header[key] = str(psf.meta[name])
    if psf.meta.get("model") != "gaussian":
        # the truth of the far wings the renderer drew (a Gaussian mixture has none)
        radius = psf.wing_radius * psf.pixel_scale
        header["WINGTAP0"] = (round((1.0 - WING_TAPER_FRACTION) * radius, 4),
                              "[arcsec] rendered wings' cosine taper starts")
        header["WINGRAD"] = (round(radius, 4), "[arcsec] rendered wings reach zero")
    text = json.dumps(psf.meta, sort_keys=True)
    for start in range(0, len(text), 70):
        header.add_comment(text[start:start + 70])
    primary = fits.PrimaryHDU(np.asarray(psf.image, dtype=np.float32), header=header)
    radii = np.arange(1, int(psf.half_extent * psf.pixel_scale / radius_step_arcsec) + 1)
    radii = radii * radius_step_arcsec
    table = fits.BinTableHDU.from_columns(
        [fits.Column(name="RADIUS", format="D", unit="arcsec", array=radii),
         fits.Column(name="EE", format="D", array=psf.encircled_energy(radii))], name="EE")
    table.header["COMMENT"] = "encircled energy of the pixel-integrated PSF"
    fits.HDUList([primary, table]).writeto(path, overwrite=True)
    return path


def write_truth_psfs(directory, psfs: dict, *, detector="") -> list[Path]:
    """
    Write every PSF of `visit_psfs` as ``<directory>/<filter>.fits``.

    Parameters
    ----------
    directory : str or Path
        Created if needed.
    psfs : dict
        ``{(filter, scale): psf}``.
    detector : str, optional
        Recorded in the Gaussian mixtures' files.

    Returns
    -------
    list of Path
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    several = len({round(scale * 1000) for _, scale in psfs}) > 1
    written = {}
    for (name, scale), psf in psfs.items():
        stem = name.lower() + (f"_{round(scale * 1000)}mas" if several else "")
        if stem in written:
            continue
        if isinstance(psf, GaussianMixturePSF):
            psf = sampled_gaussian_psf(psf, pixel_scale=scale)
            psf.meta.update(filter=name, detector=detector)
        written[stem] = write_psf_file(directory / f"{stem}.fits", psf)
    return list(written.values())
