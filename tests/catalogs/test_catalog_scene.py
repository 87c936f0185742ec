"""Synthetic drizzled-like products with truth, for the catalog tests (helpers + self-checks).

The scene is rendered with hapsim's PSF and Sersic renderers directly on a north-up TAN grid at
the product scale: the PSF is hapsim's native Gaussian mixture with every component broadened
by the output pixel (sigma^2 + 1/12 px^2, a drizzle with pixfrac 1), so the product FWHM is
~0.08". Each filter gets sky, Poisson noise for its exposure-time map, read noise, and is sky
subtracted (as AstroDrizzle's products are); the WHT image is the exposure-time map, with a
strip along the right edge covered by only one of the exposures. The total image is the
exposure-weighted mean of the filter images, as a drizzle of all exposures would be.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from hapcore.catalogs.image import CatalogImage
from hapsim.detectors import get_detector
from hapsim.psf import GaussianMixturePSF
from hapsim.render import add_stamps, sersic_stamps
from hapsim.scene import abmag_to_countrate

__all__ = ["SyntheticVisit", "make_wcs", "product_psf", "make_visit", "write_product",
           "product_headers", "aperture_correction", "saturated_flagging_inputs"]

RA0, DEC0 = 6.02, -72.08


@dataclass
class SyntheticVisit:
    total: CatalogImage
    filters: dict
    truth: Table
    psf: GaussianMixturePSF
    exptime: dict = field(default_factory=dict)


def make_wcs(shape, scale_arcsec):
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = [RA0, DEC0]
    wcs.wcs.crpix = [shape[1] / 2 + 0.5, shape[0] / 2 + 0.5]
    wcs.wcs.cd = np.array([[-scale_arcsec / 3600.0, 0.0], [0.0, scale_arcsec / 3600.0]])
    wcs.wcs.radesys = "ICRS"
    return wcs


def product_psf(detector, scale_arcsec):
    spec = get_detector(detector)
    sigmas = np.sqrt((np.asarray(spec.psf_sigmas_arcsec) / scale_arcsec) ** 2 + 1.0 / 12.0)
    return GaussianMixturePSF(sigmas, spec.psf_weights)


def aperture_correction(psf, radius_px):
    """Magnitude to add to an aperture magnitude of radius ``radius_px`` for the total flux."""
    half = 60
    stamp = psf.stamps([0.0], [0.0], half)[0]
    yy, xx = np.mgrid[-half:half + 1, -half:half + 1]
    from photutils.aperture import CircularAperture, aperture_photometry

    frac = aperture_photometry(stamp, CircularAperture((half, half), radius_px))["aperture_sum"][0]
    return 2.5 * np.log10(frac)


def product_headers(detector, filter_name, *, exptime, numexp, photflam, photplam, wcs,
                    kind="filter"):
    spec = get_detector(detector)
    primary = fits.Header()
    primary["INSTRUME"] = spec.instrument
    primary["DETECTOR"] = spec.detector
    if spec.instrument == "ACS":
        primary["FILTER1"] = filter_name.upper() if kind == "filter" else "total"
        primary["FILTER2"] = "CLEAR2L"
    else:
        primary["FILTER"] = filter_name.upper() if kind == "filter" else "total"
    primary["EXPTIME"] = exptime
    primary["TEXPTIME"] = exptime
    primary["NUMEXP"] = numexp
    primary["NDRIZIM"] = numexp
    primary["PROPOSID"] = 12345
    primary["TARGNAME"] = "SYNTHETIC"
    primary["DATE-OBS"] = "2019-05-01"
    primary["TIME-OBS"] = "12:00:00"
    primary["RA_TARG"] = RA0
    primary["DEC_TARG"] = DEC0
    primary["EXPSTART"] = 58604.5
    primary["CCDGAIN"] = spec.gain
    primary["PA_V3"] = 45.0
    for amp, rn in zip("ABCD", spec.readnoise):
        primary[f"READNSE{amp}"] = rn
        primary[f"ATODGN{amp}"] = spec.gain
    sci = fits.Header()
    sci["EXTNAME"] = "SCI"
    sci["BUNIT"] = "ELECTRONS/S"
    if photflam is not None:
        sci["PHOTFLAM"] = photflam
    sci["PHOTPLAM"] = photplam
    sci.update(wcs.to_header())
    sci["WCSNAME"] = "SYNTH-FIT_SVM_GAIA"
    sci["WCSTYPE"] = "a posteriori"
    sci["ORIENTAT"] = 0.0
    sci["RA_APER"] = RA0
    sci["DEC_APER"] = DEC0
    return primary, sci


def make_visit(shape=(1000, 1000), *, detector="wfc3/uvis", filters=(("f606w", 400.0, 2),),
               n_stars=400, n_galaxies=60, star_mags=(19.0, 27.5), galaxy_mags=(20.0, 24.0),
               seed=1, scale=0.04, edge_fraction=0.15, margin=30, extras=None, sky_subtracted=True):
    """Render a synthetic total product and its filter products with truth.

    Parameters
    ----------
    filters : sequence of (name, exptime per exposure, number of exposures)
    extras : callable, optional
        ``extras(filter_name, model) -> None`` adds noise-free features (e-/s) in place.

    Returns
    -------
    SyntheticVisit
    """
    rng = np.random.default_rng(seed)
    spec = get_detector(detector)
    ny, nx = shape
    wcs = make_wcs(shape, scale)
    psf = product_psf(detector, scale)
    n = n_stars + n_galaxies
    x = rng.uniform(margin, nx - 1 - margin, n)
    y = rng.uniform(margin, ny - 1 - margin, n)
    is_star = np.arange(n) < n_stars
    u = rng.uniform(size=n)
    lo, hi = star_mags
    mags = np.where(is_star, np.log10(10 ** (0.3 * lo) + u * (10 ** (0.3 * hi) - 10 ** (0.3 * lo))) / 0.3,
                    rng.uniform(*galaxy_mags, n))
    colour = rng.uniform(-0.3, 0.8, n)
    truth = Table()
    truth["x"], truth["y"] = x, y
    ra, dec = wcs.all_pix2world(x, y, 0)
    truth["ra"], truth["dec"] = ra, dec
    truth["type"] = np.where(is_star, "star", "galaxy")
    truth["sersic_n"] = np.where(is_star, np.nan, rng.uniform(0.6, 2.5, n))
    truth["r_eff"] = np.where(is_star, np.nan, rng.uniform(0.08, 0.35, n))
    truth["ellipticity"] = np.where(is_star, np.nan, rng.uniform(0.0, 0.5, n))
    truth["theta"] = np.where(is_star, np.nan, rng.uniform(0.0, 180.0, n))

    # exposure-time map: the right edge strip is covered by one exposure only
    edge = np.zeros(shape, dtype=bool)
    edge[:, int(nx * (1 - edge_fraction)):] = True

    filter_images, exptimes = {}, {}
    weight_sum = np.zeros(shape)
    weighted = np.zeros(shape)
    nexp_sum = np.zeros(shape, dtype=np.int16)
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    dx, dy = x - ix, y - iy
    for name, t_exp, n_exp in filters:
        phot = spec.filter(name)
        wave_factor = np.log2(phot.photplam / 6000.0)
        abmag = mags - colour * wave_factor
        rate = abmag_to_countrate(abmag, phot)
        truth[f"abmag_{name}"] = abmag
        truth[f"countrate_{name}"] = rate
        model = np.zeros(shape)
        stars = np.flatnonzero(is_star)
        add_stamps(model, psf.stamps(dx[stars], dy[stars], 20) * rate[stars, None, None],
                   ix[stars], iy[stars])
        gals = np.flatnonzero(~is_star)
        if gals.size:
            r_px = np.asarray(truth["r_eff"])[gals] / scale
            stamps = sersic_stamps(dx[gals], dy[gals], r_px, np.asarray(truth["sersic_n"])[gals],
                                   1.0 - np.asarray(truth["ellipticity"])[gals],
                                   90.0 + np.asarray(truth["theta"])[gals], 32, psf)
            add_stamps(model, stamps * rate[gals, None, None], ix[gals], iy[gals])
        if extras is not None:
            extras(name, model)
        nexp = np.where(edge, 1, n_exp).astype(np.int16) if n_exp > 1 else np.ones(shape, np.int16)
        texp = nexp * t_exp
        sky = phot.sky_rate
        electrons = rng.poisson(np.clip(model + sky, 0, None) * texp).astype(float)
        electrons += rng.normal(0.0, 1.0, shape) * spec.readnoise_mean * np.sqrt(nexp)
        data = electrons / texp
        if sky_subtracted:
            data -= sky
        total_t = t_exp * n_exp
        primary, sci = product_headers(detector, name, exptime=total_t, numexp=n_exp,
                                       photflam=phot.photflam, photplam=phot.photplam, wcs=wcs)
        filter_images[name] = CatalogImage.from_arrays(
            data.astype(np.float32), wcs=wcs, primary_header=primary, sci_header=sci,
            weight=texp.astype(np.float32), nexp=nexp,
            filename=f"hst_12345_01_{spec.instrument.lower()}_{spec.detector.lower()}_{name}_i00001_drc.fits")
        exptimes[name] = [t_exp] * n_exp
        weight_sum += texp
        weighted += texp * data
        nexp_sum += nexp
    total_data = weighted / weight_sum
    total_t = sum(sum(v) for v in exptimes.values())
    first = filters[0][0]
    phot = spec.filter(first)
    primary, sci = product_headers(detector, first, exptime=total_t,
                                   numexp=sum(f[2] for f in filters), photflam=phot.photflam,
                                   photplam=phot.photplam, wcs=wcs, kind="total")
    total = CatalogImage.from_arrays(
        total_data.astype(np.float32), wcs=wcs, primary_header=primary, sci_header=sci,
        weight=weight_sum.astype(np.float32), nexp=nexp_sum,
        filename=f"hst_12345_01_{spec.instrument.lower()}_{spec.detector.lower()}_total_i00001_drc.fits")
    return SyntheticVisit(total, filter_images, truth, psf, exptimes)


def write_product(image: CatalogImage, path):
    """Write a CatalogImage as a drizzled product (primary, SCI, WHT, CTX)."""
    primary = fits.PrimaryHDU(header=image.primary_header)
    sci = fits.ImageHDU(image.data, header=image.sci_header, name="SCI")
    wht = fits.ImageHDU(image.weight, name="WHT")
    # one context bit per exposure: nexp bits set
    ctx = ((1 << np.asarray(image.nexp, dtype=np.int64)) - 1).astype(np.int32)
    fits.HDUList([primary, sci, wht, fits.ImageHDU(ctx, name="CTX")]).writeto(path, overwrite=True)
    return path


# ------------------------------------------------------------------------------ self-checks
def test_visit_truth_is_consistent():
    visit = make_visit((300, 300), n_stars=30, n_galaxies=5, seed=3)
    img = visit.filters["f606w"]
    assert img.data.shape == (300, 300)
    assert np.isclose(img.plate_scale, 0.04, rtol=1e-6)
    # total flux in the (sky-subtracted) image matches the truth within the noise
    assert abs(np.nansum(img.data) - np.sum(visit.truth["countrate_f606w"])) < 0.02 * np.sum(
        visit.truth["countrate_f606w"]) + 50
    fwhm = visit.psf.fwhm() * 0.04
    assert 0.075 < fwhm < 0.095


def test_write_product_roundtrip(tmp_path):
    visit = make_visit((120, 100), n_stars=5, n_galaxies=0, seed=4)
    path = write_product(visit.filters["f606w"], tmp_path / "x_drc.fits")
    back = CatalogImage.from_fits(path)
    assert back.data.shape == (120, 100)
    np.testing.assert_array_equal(back.nexp, visit.filters["f606w"].nexp)
    assert back.photflam == visit.filters["f606w"].photflam
    assert back.filter_names == ("F606W", "")


def saturated_flagging_inputs(image, *, sky_rms, plate_scale=0.04, exptime=1000.0):
    """Stand-ins for what :func:`~hapcore.catalogs.saturated_features.flag_saturated_light`
    reads of a CatalogImage, its CatalogParameters and its BackgroundModel."""
    product = SimpleNamespace(data=image, shape=image.shape, plate_scale=plate_scale,
                              exptime=exptime)
    options = SimpleNamespace(aperture_2=0.15, saturated_feature_nsigma=3.0,
                              saturated_feature_radius_arcsec=6.0,
                              saturated_feature_model_error=0.3)
    background = SimpleNamespace(background=np.zeros(image.shape), rms=sky_rms)
    return product, options, background
