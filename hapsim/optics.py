"""
Physical-optics point-spread functions of HST's imagers.

The PSF of a detector and filter is computed from the telescope's
optics rather than fitted by Gaussians:

1. **Pupil.** The OTA pupil of Tiny Tim's pupil tables (e.g. Tiny Tim's
   ``wfc3_uvis2.pup``, ``acswfc1.pup``): a 2.4 m primary, a secondary
   obscuration of 0.330 of the pupil radius, two crossed spider vanes
   0.022 of the pupil radius wide and the three primary-mirror pads
   (radius 0.065 at (V3, V2) = (0.8921, 0), (-0.4615, 0.7555),
   (-0.4564, -0.7606)). WFC3/IR adds its cold mask (secondary 0.354,
   vanes 0.061, outer radius 0.9755; the pad covers are left out) and
   WFPC2 its repeater's obscuration (WF: 0.434 and 0.050, PC: 0.410 and
   0.058, drawn centred). Edges are anti-aliased by their signed
   distance to the sample.
2. **Orientation.** The vanes lie along V2 and V3, so the diffraction
   spikes do too. On a detector whose y axis has position angle
   ``PA_V3 + orient_offset_deg`` the V3 axis points at
   ``90 - orient_offset_deg`` degrees counter-clockwise from +x
   (east-left parity): about 45 degrees on WFC3/UVIS and IR (an "X" in
   the FLT/FLC frame, as Tiny Tim's 135 degree camera rotation gives),
   about 2 degrees on ACS/WFC and -5 degrees on ACS/HRC and SBC (a "+").
   WFPC2's four chips share one angle; the three pads, which only break
   the four-fold symmetry slightly, are placed with V2 90 degrees
   counter-clockwise from V3 (the parity is not checked against data).
3. **Diffraction.** Fraunhofer diffraction by FFT at six wavelengths
   spread uniformly over a top-hat band of the filter's pivot wavelength
   (PHOTPLAM) and RMS width (PHOTBW), i.e. ``sqrt(12) * PHOTBW`` wide
   (clipped to the detector's sensitivity range), equally weighted (a
   flat source). The pupil is re-sampled at every
   wavelength so that all monochromatic PSFs fall on one focal-plane grid
   of ``pixel / oversample``; their optical transfer functions (OTF) are
   averaged.
4. **Wavefront error.** Two random phase screens with exponential
   covariance ``sigma**2 exp(-r / L)``, applied exactly as the
   ensemble-average OTF factor ``exp(-sigma**2 (1 - exp(-lambda f / L)))``
   with ``sigma = 2 pi w / lambda``: a low/mid-frequency term (w ~ 60 nm,
   L ~ 0.5-0.9 m; Tiny Tim's residual aberrations and the OTA zonal
   errors, broadening the core) and a micro-roughness term (w ~ 11-19 nm,
   L ~ 1-5 mm) whose wide halo holds the few per cent of light the
   handbooks' encircled-energy (EE) tables find beyond 1". Their values
   and a Gaussian blur (jitter, focus breathing and the charge diffusion
   the 3x3 kernels miss) were fitted, per detector, to the EE tables of
   WFC3/UVIS F606W/F814W, WFC3/IR F105W/F160W and ACS/WFC F606W/F814W
   (see ``tests/simulator/test_hapsim_optics.py``); ACS/HRC, ACS/SBC and
   WFPC2 reuse the ACS/WFC values unchecked.
5. **Detector.** The OTF is multiplied by the transfer function of the
   square pixel (``sinc(fx p) sinc(fy p)``: an exact integration over the
   pixel, which keeps the sub-pixel centroids of the undersampled IR
   PSF unbiased) and of the detector's 3x3 kernel, interpolated linearly
   in wavelength (see `DETECTOR_KERNELS`).

One inverse FFT then gives the *pixel-integrated* PSF sampled every
``1 / oversample`` pixel: the value at a sample is the fraction of the
flux a detector pixel centred there receives. The FFT grid spans an odd
number ``2 h + 1`` of pixels (6" radius where the grid stays below
1600 samples: ACS/HRC gets about 4.9", ACS/SBC 3.1"); the PSF is periodic
on it, so light scattered beyond the square folds back and every
sub-pixel phase of the native grid sums to exactly 1: the PSF is
normalised to unit sum within its modelled extent.

The renderer's far wings (`OpticalPSF.wing_kernel`) are this PSF made
round: beyond 80% of the square's half width ``h`` its angular structure
(spikes, the square's folded light) fades into the ring-mean profile, which
continues beyond ``h`` at its value there (the folded micro-roughness halo
is flat on these scales) and is cosine-tapered to zero over the outer 30%
of a radius ``R`` chosen so that the kernel holds exactly the square's
flux (``R`` is about 1.3 ``h``, 8" on UVIS). Inside ``0.8 h`` (5" on
UVIS) the kernel is the PSF itself, so the core stamps meet the wings
without a step, and since every ring keeps its flux out to ``h`` and the
taper starts at about ``0.92 h``, the encircled energy is unchanged to
better than 1e-4 out to about 5.8" (UVIS).

PSFs are cached per (detector, filter, plate scale) in the process;
computing one takes 0.1-2 s (two cores).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, replace

import numpy as np
import scipy.fft as sfft

from .detectors import DetectorSpec, get_detector

__all__ = ["DETECTOR_KERNELS", "OPTICS", "OpticalPSF", "OpticsModel", "build_optical_psf",
           "detector_kernel", "optical_psf", "period_block", "round_wing_psf",
           "spike_angle_deg"]

log = logging.getLogger(f"hapsvm.{__name__}")

_ARCSEC = np.pi / 648000.0
PRIMARY_DIAMETER_M = 2.4
#: Tiny Tim's OTA pupil tables: (V3, V2, radius) of the primary-mirror pads,
#: in units of the pupil radius.
OTA_PADS = ((0.8921, 0.0, 0.065), (-0.4615, 0.7555, 0.065), (-0.4564, -0.7606, 0.065))
_MAX_GRID = 1600
_N_WAVELENGTHS = 6
#: The far-wing kernel fades into its ring-mean profile from this fraction of the
#: modelled half width out to the half width (round beyond it)...
WING_BLEND_START = 0.8
#: ...and is cosine-tapered to zero over this outer fraction of its radius.
WING_TAPER_FRACTION = 0.3


def _k(corner, edge, centre):
    return ((corner, edge, corner), (edge, centre, edge), (corner, edge, corner))


#: 3x3 detector kernels ``(wavelength_um, kernel)`` (normalised to unit sum on use):
#:
#: - WFC3/UVIS charge diffusion: WFC3 ISR 2008-40 (Hartig), as tabulated in Tiny
#:   Tim's ``wfc3_uvis2.pup``.
#: - WFC3/IR inter-pixel capacitance: WFC3 ISR 2008-41, Tiny Tim ``wfc3_ir.pup``
#:   (wavelength independent).
#: - ACS/WFC and ACS/HRC charge diffusion: Tiny Tim ``acswfc1.pup`` and
#:   ``acshrc.pup`` (ACS ISR 2003-06; the ACS Instrument Handbook, section 5.6.1,
#:   gives similar kernels at 4000, 5500 and 8000 A).
#: - WFPC2 pixel scattering: Tiny Tim ``wfpc2wf3.pup``.
#: - ACS/SBC is a MAMA photon counter: no kernel.
DETECTOR_KERNELS = {
    "wfc3/uvis": ((0.4, _k(0.017, 0.097, 0.544)), (0.6, _k(0.012, 0.084, 0.616)),
                  (0.8, _k(0.007, 0.069, 0.696))),
    "wfc3/ir": ((1.0, _k(0.0007, 0.025, 0.897)),),
    "acs/wfc": ((0.4, _k(0.0323256, 0.0965193, 0.484621)),
                (0.6, _k(0.0231293, 0.0755252, 0.605382)),
                (0.8, _k(0.0132919, 0.0455935, 0.764459))),
    "acs/hrc": ((0.4, _k(0.02, 0.06, 0.68)), (0.55, _k(0.0175, 0.05, 0.73)),
                (0.8, _k(0.015, 0.02, 0.86))),
    "acs/sbc": (),
    "wfpc2": ((0.6, _k(0.0125, 0.05, 0.75)),),
}


@dataclass(frozen=True)
class OpticsModel:
    """
    Optical parameters of one detector (pupil radii in pupil-radius units).

    Attributes
    ----------
    obscuration, spider_width, outer : float
        Central obscuration radius, full width of the spider vanes and outer
        radius of the pupil stop.
    blur_mas : float
        RMS of an extra Gaussian blur (jitter, breathing, unmodelled diffusion).
    wavefront : tuple of (float, float)
        ``(rms_nm, correlation_length_m)`` of each random phase screen.
    min_oversample : int
        Smallest oversampling; more is used where the band's blue edge needs it.
    max_radius_arcsec : float
        Wanted half width of the modelled square.
    wavelength_range_um : tuple of float
        Detector sensitivity limits the filter's top-hat band is clipped to
        (Tiny Tim's pupil tables; the MgF2 window of the SBC for its lower limit).
    """

    obscuration: float = 0.330
    spider_width: float = 0.022
    outer: float = 1.0
    blur_mas: float = 17.0
    wavefront: tuple = ((57.0, 0.66), (12.3, 5.2e-3))
    min_oversample: int = 4
    max_radius_arcsec: float = 6.0
    wavelength_range_um: tuple = (0.35, 1.1)


#: Per-detector optics; blur and wavefront terms fitted to the EE tables (module notes).
OPTICS = {
    "wfc3/uvis": OpticsModel(blur_mas=19.7, wavefront=((61.2, 0.873), (10.9, 0.90e-3)),
                             wavelength_range_um=(0.2, 1.0)),
    "wfc3/ir": OpticsModel(obscuration=0.354, spider_width=0.061, outer=0.9755, blur_mas=8.3,
                           wavefront=((62.3, 0.479), (18.8, 3.93e-3)), min_oversample=8,
                           wavelength_range_um=(0.9, 1.7)),
    "acs/wfc": OpticsModel(),
    "acs/hrc": OpticsModel(blur_mas=10.0, wavelength_range_um=(0.2, 1.1)),
    "acs/sbc": OpticsModel(blur_mas=10.0, wavelength_range_um=(0.115, 0.2)),
    "wfpc2": OpticsModel(obscuration=0.434, spider_width=0.050, wavelength_range_um=(0.12, 1.1)),
}
_WFPC2_PC = replace(OPTICS["wfpc2"], obscuration=0.410, spider_width=0.058)


def spike_angle_deg(spec: DetectorSpec) -> float:
    """
    Angle of the V3 axis (one of the diffraction spikes) from the detector +x axis.

    Parameters
    ----------
    spec : DetectorSpec

    Returns
    -------
    float
        Degrees counter-clockwise; the other spikes are at +90, 180, 270.
    """
    return float((90.0 - spec.orient_offset_deg) % 360.0)


def detector_kernel(name: str, wavelength_um: float) -> np.ndarray:
    """
    The 3x3 detector kernel of a detector at a wavelength (unit sum).

    Parameters
    ----------
    name : str
        Canonical detector name (``"wfc3/uvis"``).
    wavelength_um : float

    Returns
    -------
    ndarray, shape (3, 3)
        The identity kernel where none is tabulated (ACS/SBC).
    """
    table = DETECTOR_KERNELS.get(name, ())
    if not table:
        out = np.zeros((3, 3))
        out[1, 1] = 1.0
        return out
    waves = np.array([w for w, _ in table])
    kernels = np.array([k for _, k in table], dtype=float)
    lam = float(np.clip(wavelength_um, waves[0], waves[-1]))
    j = int(np.clip(np.searchsorted(waves, lam), 1, max(len(waves) - 1, 1)))
    if len(waves) == 1:
        kern = kernels[0]
    else:
        t = (lam - waves[j - 1]) / (waves[j] - waves[j - 1])
        kern = (1.0 - t) * kernels[j - 1] + t * kernels[j]
    return kern / kern.sum()


def _kernel_transfer(kern, fx, fy, pixel_rad):
    """Transfer function of a symmetric 3x3 pixel kernel."""
    cx = np.cos(2.0 * np.pi * fx * pixel_rad)
    cy = np.cos(2.0 * np.pi * fy * pixel_rad)
    return (kern[1, 1] + (kern[1, 0] + kern[1, 2]) * cy + (kern[0, 1] + kern[2, 1]) * cx
            + (kern[0, 0] + kern[0, 2] + kern[2, 0] + kern[2, 2]) * cx * cy)


def _pupil(diameter_samples, size, model: OpticsModel, angle_deg):
    """Anti-aliased pupil transmission on a ``size`` square grid."""
    centre = (size - 1) / 2.0
    radius = diameter_samples / 2.0
    y, x = (np.mgrid[0:size, 0:size] - centre) / radius
    step = 1.0 / radius
    a = np.deg2rad(angle_deg)
    v3 = x * np.cos(a) + y * np.sin(a)
    v2 = -x * np.sin(a) + y * np.cos(a)
    r = np.hypot(x, y)

    def inside(distance):
        # coverage of a sample from its signed distance to the edge
        return np.clip(0.5 + distance / step, 0.0, 1.0)

    cover = inside(model.outer - r) * inside(r - model.obscuration)
    cover *= inside(np.abs(v3) - model.spider_width / 2.0)
    cover *= inside(np.abs(v2) - model.spider_width / 2.0)
    for pad_v3, pad_v2, pad_r in OTA_PADS:
        cover *= inside(np.hypot(v3 - pad_v3, v2 - pad_v2) - pad_r)
    return cover


def _pupil_otf(pupil, n):
    """
    Diffraction OTF on the ``n`` x ``n`` focal grid (``rfft2`` layout).

    The OTF is the pupil's autocorrelation, lag k pupil samples being
    frequency k / (n * step); it is computed on a grid just twice the
    pupil's size instead of transforming the padded pupil twice.
    """
    size = pupil.shape[0]
    m = sfft.next_fast_len(2 * size, real=True)
    spectrum = sfft.rfft2(pupil, s=(m, m), workers=2)
    lags = sfft.irfft2(spectrum.real**2 + spectrum.imag**2, s=(m, m), workers=2)
    lags /= lags[0, 0]
    otf = np.zeros((n, n // 2 + 1))
    reach = size + 1
    otf[:reach, :reach] = lags[:reach, :reach]
    otf[n - reach + 1:, :reach] = lags[m - reach + 1:, :reach]
    return otf


def _smooth_odd(n):
    """Smallest odd 13-smooth integer >= n (fast FFT lengths)."""
    n = int(n) | 1
    while True:
        m = n
        for p in (3, 5, 7, 11, 13):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 2


def _grid(pixel_scale, lam_min_m, model):
    """Oversampling and half width (pixels) of the FFT grid."""
    # Nyquist of the shortest wavelength with 10 % margin, so OTFs never alias
    nyquist = 0.9 * lam_min_m / (2.0 * PRIMARY_DIAMETER_M) / _ARCSEC
    oversample = max(model.min_oversample, int(np.ceil(pixel_scale / nyquist)))
    width = _smooth_odd(2 * int(np.ceil(model.max_radius_arcsec / pixel_scale)) + 1)
    if width * oversample > _MAX_GRID:
        # the largest fast odd width that keeps the grid affordable
        width = max(w for w in range(3, _MAX_GRID // oversample + 1, 2) if _smooth_odd(w) == w)
    return oversample, (width - 1) // 2


def build_optical_psf(spec, filter_name, *, pixel_scale=None, n_wavelengths=_N_WAVELENGTHS,
                      model: OpticsModel | None = None) -> OpticalPSF:
    """
    Compute the pixel-integrated physical-optics PSF (not cached).

    Parameters
    ----------
    spec : DetectorSpec or str
    filter_name : str
        One of the detector's filters (``"F606W"``).
    pixel_scale : float, optional
        Plate scale (arcsec/px) of the chip; default ``spec.idcscale``.
    n_wavelengths : int, optional
        Monochromatic PSFs across the band.
    model : OpticsModel, optional
        Override the detector's entry of `OPTICS`.

    Returns
    -------
    OpticalPSF
    """
    spec = get_detector(spec) if isinstance(spec, str) else spec
    phot = spec.filter(filter_name)
    scale = float(pixel_scale or spec.idcscale)
    if model is None:
        model = _WFPC2_PC if spec.instrument == "WFPC2" and scale < 0.07 else OPTICS[spec.name]
    width = np.sqrt(12.0) * phot.photbw
    lo, hi = (1e4 * v for v in model.wavelength_range_um)
    blue = min(max(phot.photplam - width / 2.0, lo), phot.photplam)
    red = max(min(phot.photplam + width / 2.0, hi), phot.photplam)
    lams = 1e-10 * (blue + (red - blue) * (np.arange(n_wavelengths) + 0.5) / n_wavelengths)
    oversample, half = _grid(scale, lams.min(), model)
    n = oversample * (2 * half + 1)
    step = scale / oversample * _ARCSEC
    pixel = scale * _ARCSEC
    fx = sfft.rfftfreq(n, d=step)[None, :]
    fy = sfft.fftfreq(n, d=step)[:, None]
    freq = np.hypot(fx, fy)
    angle = spike_angle_deg(spec)
    total = np.zeros((n, n // 2 + 1))
    for lam in lams:
        # pupil sampled so that this wavelength's PSF falls on the common grid
        diameter = PRIMARY_DIAMETER_M * n * step / lam
        otf = _pupil_otf(_pupil(diameter, int(np.ceil(diameter)) + 3, model, angle), n)
        for rms_nm, length in model.wavefront:
            sigma2 = (2.0 * np.pi * rms_nm * 1e-9 / lam) ** 2
            otf *= np.exp(-sigma2 * (1.0 - np.exp(-lam * freq / length)))
        otf *= _kernel_transfer(detector_kernel(spec.name, lam * 1e6), fx, fy, pixel)
        total += otf / n_wavelengths
    total *= np.exp(-2.0 * np.pi**2 * (model.blur_mas * 1e-3 * _ARCSEC) ** 2 * freq**2)
    unpixelated = np.fft.fftshift(sfft.irfft2(total, s=(n, n), workers=2))
    total *= np.sinc(fx * pixel) * np.sinc(fy * pixel)
    image = np.fft.fftshift(sfft.irfft2(total, s=(n, n), workers=2))
    image *= oversample**2 / image.sum()
    fwhm = _fwhm_of(unpixelated, oversample)
    log.debug("hapsim: optical PSF %s %s at %.4f\"/px: %d x %d grid, oversampling %d, "
              "FWHM %.2f px", spec.name, filter_name, scale, n, n, oversample, fwhm)
    if n % 2 == 0:
        # one more (periodic) row and column make the array odd and centred
        image = np.pad(image, ((0, 1), (0, 1)), mode="wrap")
    meta = {"model": "optical", "detector": spec.name, "filter": filter_name.strip().upper(),
            "wavelengths_um": [round(float(v) * 1e6, 5) for v in lams],
            "spike_angle_deg": angle, "blur_mas": model.blur_mas,
            "wavefront": [list(w) for w in model.wavefront]}
    return OpticalPSF(image, oversample, pixel_scale=scale, fwhm_pixels=fwhm, meta=meta)


@functools.lru_cache(maxsize=12)
def _cached_psf(name, filter_name, pixel_scale):
    return build_optical_psf(get_detector(name), filter_name, pixel_scale=pixel_scale)


def optical_psf(spec, filter_name, *, pixel_scale=None) -> OpticalPSF:
    """
    The physical-optics PSF of a detector, filter and chip scale (cached).

    Parameters
    ----------
    spec : DetectorSpec or str
    filter_name : str
    pixel_scale : float, optional
        Plate scale (arcsec/px); default the detector's ``idcscale``.

    Returns
    -------
    OpticalPSF
        Shared, read-only.
    """
    spec = get_detector(spec) if isinstance(spec, str) else spec
    # chips within 0.05 % of one scale (WFPC2's three WF chips) share one PSF
    scale = float(f"{float(pixel_scale or spec.idcscale):.3g}")
    return _cached_psf(spec.name, filter_name.strip().upper(), scale)


def period_block(image, oversample):
    """
    The whole native pixels of an oversampled PSF image, and their first index.

    ``oversample * (2 h + 1)`` samples about the centre: one FFT period of a
    computed PSF, without the duplicated periodic row and column of even
    grids (so nothing is counted twice); the whole image if it is smaller.
    """
    n = image.shape[0]
    centre = n // 2
    m = oversample * (2 * (centre // oversample) + 1)
    lo = centre - m // 2
    if lo < 0 or lo + m > n:
        return image, 0
    return image[lo:lo + m, lo:lo + m], lo


def _fwhm_of(image, oversample):
    """FWHM (pixels) of the circle with the area above half the peak."""
    above = np.count_nonzero(image >= 0.5 * image.max())
    return 2.0 * np.sqrt(above / np.pi) / oversample


def round_wing_psf(native, *, blend_start=WING_BLEND_START, taper=WING_TAPER_FRACTION):
    """
    Make a square native-pixel PSF round, tapered smoothly to zero, same flux.

    The square of a computed PSF ends at its FFT period, where the folded
    far halo is still about 1e-7 of the flux per pixel: rendered as it is, a
    bright star gets a sharp-edged square of wing light. Here the PSF is
    kept as it is out to ``blend_start * h`` (``h`` the square's half
    width), then faded by a cosine into its ring-mean profile by ``h`` (the
    spikes and the square's folded structure fade, each ring keeping its
    flux), which continues flat beyond ``h`` (the halo is flat on these
    scales, where the square's corners held it); everything is then
    multiplied by a cosine taper falling from 1 at ``(1 - taper) R`` to 0 at
    ``R``, with ``R`` solved so that the sum equals the square's.

    Parameters
    ----------
    native : ndarray, shape (2 h + 1, 2 h + 1)
        Centred native-pixel PSF (`OpticalPSF.native`).
    blend_start : float, optional
        Where the fade into the ring-mean profile starts, in units of ``h``.
    taper : float, optional
        Outer fraction of ``R`` over which the cosine taper falls to zero.

    Returns
    -------
    wings : ndarray, shape (2 H + 1, 2 H + 1)
        The round PSF, ``H = ceil(R)``; zero at and beyond ``R``.
    radius : float
        ``R`` in pixels.
    """
    native = np.asarray(native, dtype=float)
    h = native.shape[0] // 2
    target = float(native.sum())
    # the flat continuation holds at most the light of the square's corners,
    # so twice the half width always suffices for any PSF that falls outwards
    big = 2 * h
    yy, xx = np.indices((2 * big + 1, 2 * big + 1)) - big
    r2 = xx * xx + yy * yy
    r = np.sqrt(r2)
    # ring means over whole rings of the square: each ring keeps its flux
    ring = np.rint(r[big - h:big + h + 1, big - h:big + h + 1]).astype(int).ravel()
    whole = ring <= h
    sums = np.bincount(ring[whole], weights=native.ravel()[whole], minlength=h + 1)
    counts = np.bincount(ring[whole], minlength=h + 1)
    mean = sums / np.maximum(counts, 1)
    profile = np.interp(r, np.arange(h + 1), mean)      # flat beyond h
    start = blend_start * h
    keep = np.clip((r - start) / max(h - start, 1e-9), 0.0, 1.0)
    keep = 0.5 * (1.0 + np.cos(np.pi * keep))
    square = np.zeros_like(profile)
    square[big - h:big + h + 1, big - h:big + h + 1] = native
    round_psf = keep * square + (1.0 - keep) * profile

    # the taper depends on r only: sum the PSF per distinct radius once
    radii, inverse = np.unique(r2.ravel(), return_inverse=True)
    per_radius = np.bincount(inverse, weights=round_psf.ravel())
    radii = np.sqrt(radii)

    def tapered(radius):
        u = np.clip((radii / radius - (1.0 - taper)) / taper, 0.0, 1.0)
        return float((per_radius * 0.5 * (1.0 + np.cos(np.pi * u))).sum())

    # the tapered sum grows continuously and monotonically with the radius
    lo, hi = float(h) / 2.0, float(big)
    if tapered(hi) < target:
        log.warning("hapsim: PSF wings cannot hold the square's flux within %d px; "
                    "the renderer rescales them", big)
        lo = hi
    for _ in range(64):            # to the last bit: the sum is exact to ~1e-15
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if tapered(mid) < target else (lo, mid)
    radius = hi
    u = np.clip((r / radius - (1.0 - taper)) / taper, 0.0, 1.0)
    round_psf *= 0.5 * (1.0 + np.cos(np.pi * u))
    half = min(int(np.ceil(radius)), big)
    return round_psf[big - half:big + half + 1, big - half:big + half + 1], radius


class OpticalPSF:
    """
    A pixel-integrated PSF sampled on a grid finer than the detector pixels.

    Same interface as `hapsim.psf.GaussianMixturePSF` (`stamps`, `kernel`,
    `fwhm`), plus the far wings for the renderer (`wing_kernel`,
    `core_half_size`) and `encircled_energy`.

    Parameters
    ----------
    image : ndarray
        Odd square array centred on its middle sample; ``image[c + oversample * v,
        c + oversample * u]`` is the fraction of a point source's flux that a
        pixel centred ``(u, v)`` pixels from the source receives. Each of the
        ``oversample**2`` sub-pixel phases of the native grid should sum to 1.
    oversample : int
        Samples per detector pixel.
    pixel_scale : float
        Detector plate scale, arcsec per pixel.
    fwhm_pixels : float, optional
        FWHM before pixelation, when known (else measured on `image`).
    meta : dict, optional
        Provenance written to truth files.
    """

    def __init__(self, image, oversample, *, pixel_scale, fwhm_pixels=None, meta=None):
        image = np.array(image, dtype=float)
        if image.ndim != 2 or image.shape[0] != image.shape[1] or image.shape[0] % 2 == 0:
            raise ValueError(f"PSF image must be odd and square, got shape {image.shape}")
        image.flags.writeable = False
        self.image = image
        self.oversample = int(oversample)
        self.pixel_scale = float(pixel_scale)
        self.center = image.shape[0] // 2
        #: half width (pixels) of the modelled square
        self.half_extent = self.center // self.oversample
        if self.half_extent < 4:
            raise ValueError("PSF image too small for its oversampling (under 4 pixels)")
        self._fwhm = fwhm_pixels
        self.meta = dict(meta or {})
        self._round_wings = None
        #: core stamps reach 0.6" (at least 4 pixels); the renderer adds the rest
        self.core_half_size = int(min(self.half_extent - 2,
                                      max(4, np.ceil(0.6 / self.pixel_scale))))

    @property
    def wing_half_size(self) -> int:
        """Half size (pixels) of `wing_kernel`: its outer radius, rounded up."""
        return self.round_wings.shape[0] // 2

    @property
    def wing_radius(self) -> float:
        """Outer radius (pixels) of `wing_kernel`, where its taper reaches zero."""
        if self._round_wings is None:
            _ = self.round_wings    # computes the radius with the kernel
        return self._wing_radius

    @property
    def round_wings(self) -> np.ndarray:
        """
        The whole round, tapered far-wing PSF (core included; read-only).

        See `round_wing_psf`; computed once per PSF.
        """
        if self._round_wings is None:
            wings, radius = round_wing_psf(self.native())
            wings.flags.writeable = False
            self._round_wings = wings
            self._wing_radius = float(radius)
            log.debug("hapsim: round wing kernel of %s: radius %.1f px (%.2f\")",
                      self.meta.get("filter", "PSF"), radius, radius * self.pixel_scale)
        return self._round_wings

    def stamps(self, dx, dy, half_size, *, normalize=True):
        """
        Pixel-integrated PSF stamps for many sources.

        Exact where ``oversample * dx`` is an integer, bilinear between the
        two nearest sub-pixel phases otherwise.

        Parameters
        ----------
        dx, dy : array_like, shape (n,)
            Source position minus the stamp's central pixel centre (pixels,
            within [-0.5, 0.5]).
        half_size : int
            Stamps are ``2 * half_size + 1`` pixels square.
        normalize : bool, optional
            Scale every stamp to unit sum (as `GaussianMixturePSF` does); False
            keeps the fraction of the flux that falls inside the stamp.

        Returns
        -------
        ndarray, shape (n, 2 * half_size + 1, 2 * half_size + 1)
        """
        if half_size > self.half_extent - 1:
            raise ValueError(f"half_size {half_size} beyond the PSF's {self.half_extent - 1}")
        dx = np.atleast_1d(np.asarray(dx, dtype=float))
        dy = np.atleast_1d(np.asarray(dy, dtype=float))
        os_ = self.oversample
        offsets = os_ * np.arange(-half_size, half_size + 1)
        ux = self.center - os_ * dx
        uy = self.center - os_ * dy
        x0 = np.floor(ux).astype(int)
        y0 = np.floor(uy).astype(int)
        tx = (ux - x0)[:, None, None]
        ty = (uy - y0)[:, None, None]
        size = self.image.shape[0]
        cols = x0[:, None] + offsets[None, :]
        rows = y0[:, None] + offsets[None, :]
        flat = self.image.ravel()
        base = rows[:, :, None] * size + cols[:, None, :]
        out = ((1.0 - ty) * ((1.0 - tx) * flat[base] + tx * flat[base + 1])
               + ty * ((1.0 - tx) * flat[base + size] + tx * flat[base + size + 1]))
        if normalize:
            out /= out.sum(axis=(1, 2), keepdims=True)
        return out

    def kernel(self, half_size, *, oversample=1):
        """
        Centred PSF image (unit sum).

        Parameters
        ----------
        half_size : int
            In detector pixels.
        oversample : int, optional
            Samples per pixel; must divide `oversample`. Unlike
            `GaussianMixturePSF`, every sample is the flux of a whole detector
            pixel centred there.

        Returns
        -------
        ndarray, shape (2 * half_size * oversample + 1,) * 2
        """
        if self.oversample % oversample:
            raise ValueError(f"oversample {oversample} does not divide {self.oversample}")
        if half_size > self.half_extent:
            raise ValueError(f"half_size {half_size} beyond the PSF's {self.half_extent}")
        step = self.oversample // oversample
        reach = half_size * self.oversample
        c = self.center
        out = np.array(self.image[c - reach:c + reach + 1:step, c - reach:c + reach + 1:step])
        return out / out.sum()

    def fwhm(self):
        """Full width at half maximum before pixelation, pixels (else of `image`)."""
        if self._fwhm is None:
            self._fwhm = _fwhm_of(self.image, self.oversample)
        return float(self._fwhm)

    def native(self, half_size=None):
        """The phase-0 native-pixel PSF (not renormalised) out to `half_size`."""
        half = self.half_extent if half_size is None else int(half_size)
        reach = half * self.oversample
        c = self.center
        step = self.oversample
        return np.array(self.image[c - reach:c + reach + 1:step, c - reach:c + reach + 1:step])

    def core_fraction(self, half_size=None):
        """Flux fraction inside the ``2 * half_size + 1`` square of a centred source."""
        return float(self.native(self.core_half_size if half_size is None else half_size).sum())

    def wing_kernel(self, core_half_size=None):
        """
        The PSF beyond the core stamps, for one convolution of all sources.

        Parameters
        ----------
        core_half_size : int, optional
            Default `core_half_size`.

        Returns
        -------
        ndarray, shape (2 * wing_half_size + 1,) * 2
            The centred native-pixel PSF, made round and tapered to zero at
            its outer radius (`round_wing_psf`), with its central core
            square zeroed. With the core square it holds exactly the flux of
            the modelled square (`native`).
        """
        core = self.core_half_size if core_half_size is None else int(core_half_size)
        wings = np.array(self.round_wings)
        h = wings.shape[0] // 2
        wings[h - core:h + core + 1, h - core:h + core + 1] = 0.0
        return wings

    def encircled_energy(self, radii_arcsec):
        """
        Encircled energy of the pixel-integrated PSF.

        This is what exact-overlap aperture photometry of a star averages to
        over sub-pixel positions: the integral of the pixel-integrated PSF
        over the circle (normalised to the modelled extent).

        Parameters
        ----------
        radii_arcsec : array_like

        Returns
        -------
        ndarray
        """
        os_ = self.oversample
        block, lo = period_block(self.image, os_)
        yy, xx = np.indices(block.shape)
        r = np.hypot(xx - (self.center - lo), yy - (self.center - lo)).ravel()
        order = np.argsort(r)
        cumulative = np.cumsum(block.ravel()[order]) / block.sum()
        radius = r[order] * self.pixel_scale / os_
        return np.interp(np.asarray(radii_arcsec, dtype=float), radius, cumulative)
