"""``FluxSegment`` of the filter segment catalogs: the total flux of every segment
(:mod:`hapcore.catalogs.galaxy_flux`) with the product's PSF (:mod:`hapcore.catalogs.psf_profile`)."""

from __future__ import annotations

import numpy as np

from hapcore.catalogs.galaxy_flux import psf_encircled_energy, total_galaxy_flux

__all__ = ["segment_total_fluxes", "plain_values", "PSF_MIN_OUTER_FWHM", "FIT_MIN_SNR"]

#: smallest outer radius of FluxSegment's measured aperture, in PSF FWHM, when the product's
#: PSF profile is known (the model then holds the light beyond it)
PSF_MIN_OUTER_FWHM = 3.0
#: Kron S/N from which the Sersic fit replaces the Kron flux: a faint galaxy's Kron aperture
#: holds only its core (hapsim ``ir-only``: Kron / true 0.55-0.80 at Kron S/N 6-10, where the
#: fit's median is right within its noise)
FIT_MIN_SNR = 5.0


def plain_values(values):
    """Strip units (Quantity -> ndarray of float)."""
    return np.asarray(getattr(values, "value", values), dtype=float)


def segment_total_fluxes(catalog, result, residual, error, image, params):
    """FluxSegment and its error: :func:`hapcore.catalogs.galaxy_flux.total_galaxy_flux` from
    the Kron fluxes (shape and Kron aperture of the detection catalog), with Sersic models
    convolved with the product's PSF (:func:`hapcore.catalogs.psf_profile.measure_psf_profile`:
    its stars inside the handbook table's first radius, the table beyond), the measured
    aperture sized by the Kron aperture (at least ``PSF_MIN_OUTER_FWHM`` FWHM); without enough
    stars, a Gaussian PSF, an aperture of at least the table's first radius and the table's
    wing correction; the Kron flux where the detector has no table (ACS/HRC, ACS/SBC, WFPC2:
    the sky fit would take the PSF's wings uncorrected)."""
    from hapcore.catalogs.aperture_correction import encircled_energy_table
    from hapcore.catalogs.psf_profile import measure_psf_profile

    ee, ee_radius = psf_encircled_energy(image)
    if ee is None:
        return plain_values(catalog.kron_flux), plain_values(catalog.kron_fluxerr)
    det = result.catalog
    a, b = plain_values(det.semimajor_sigma), plain_values(det.semiminor_sigma)
    size = params.sourcex.kron_scaling_radius * plain_values(det.kron_radius) * np.sqrt(a * b)
    with np.errstate(invalid="ignore", divide="ignore"):
        q = b / a
    x, y = plain_values(catalog.xcentroid), plain_values(catalog.ycentroid)
    own = np.asarray(result.sources["ID"])
    kron, kron_err = plain_values(catalog.kron_flux), plain_values(catalog.kron_fluxerr)
    fwhm_pixels = params.tweak_fwhmpsf / image.plate_scale
    infinity = encircled_energy_table(image.instrument, image.detector).infinity_arcsec
    invalid = ~image.illuminated      # one full-frame mask for the profile and the fluxes
    psf = measure_psf_profile(residual, error, result.segm.data, x, y, own, kron, kron_err,
                              encircled_energy=ee, table_radius_px=ee_radius,
                              infinity_px=infinity / image.plate_scale,
                              invalid=invalid)
    min_outer = (max(6.0, ee_radius) if psf is None
                 else max(6.0, PSF_MIN_OUTER_FWHM * fwhm_pixels))
    return total_galaxy_flux(
        residual, error, result.segm.data, x, y, q, np.deg2rad(plain_values(det.orientation)), own,
        kron, kron_err, size, fwhm_pixels=fwhm_pixels, invalid=invalid,
        encircled_energy=ee, min_outer=min_outer, psf=psf, min_snr=FIT_MIN_SNR)[:2]
