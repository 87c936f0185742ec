"""
Simulate a complete single-instrument HST visit (`simulate_visit`).

A visit is a set of dithered exposures of one detector in one or more
filters, written as calibrated FLT/FLC files together with the poller
file and the truth: source list, true WCS of every chip, cosmic-ray
masks, the PSF of every filter, a Gaia-like reference catalog and a JSON
summary.

The six SVM detectors are supported: WFC3/UVIS, WFC3/IR, ACS/WFC,
ACS/HRC, ACS/SBC (a MAMA: counts, no read noise, no cosmic rays) and
WFPC2 (four chips of two plate scales in DN, written as the ``_flt.fits``
files drizzlepac makes from C0M/C1M pairs: SCI 1-4 first, then DQ/ERR
pairs).

The TRUE pointing of each exposure places the chips on the sky; pixels
are rendered through exactly that TAN-SIP WCS. The WCS written to the
files is the true one moved by the visit's pointing error (one rigid
sky rotation for the whole visit), so an alignment stage has a known
offset to recover; the dithers are in both.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits

from . import __version__
from .detectors import DetectorSpec, get_detector, normalize_detector_name
from .distortion import detector_tables, file_table_hdus, reference_files, write_truth_wcs
from .geometry import (chip_wcs, position_angle_rotation, radec_to_unit,
                       rotate_wcs, sky_rotation, tangent_deproject, tangent_project,
                       unit_to_radec)
from .pixels import chip_pixels, image_statistics, write_crmask
from .headers import ExposureInfo, companion_header, primary_header, science_header
from .psfio import check_psf_option, visit_psfs, write_truth_psfs
from .refcat import GAIA_REF_EPOCH, make_refcat
from .render import render_sources
from .scene import abmag_to_countrate, abmag_in_filter, countrate_to_abmag, make_scene
from .epochs import jyear_to_mjd, mjd_to_jyear, scene_at_epoch

__all__ = ["VisitResult", "simulate_visit", "parse_filters", "DITHER_PATTERNS", "POLLER_FORMS"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Dither offsets (arcsec, along detector x and y) of the supported patterns;
#: exposures of a filter step through the pattern and wrap around.
DITHER_PATTERNS: dict[str, tuple[tuple[float, float], ...]] = {
    "none": ((0.0, 0.0),),
    "line2": ((0.0, 0.0), (2.413, 1.209)),
    "line3": ((0.0, 0.0), (1.207, 0.604), (2.414, 1.208)),
    "box4": ((0.0, 0.0), (2.376, 1.062), (1.188, 3.188), (-1.188, 2.126)),
}

#: Poller file forms (spec §1.2): the 8-field lines, file names only, or
#: ``filename,aperture`` (the form drizzlepac's WFPC2 processing uses).
POLLER_FORMS = ("full", "names", "aperture")

_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_OUR_PATTERNS = ("*_flc.fits", "*_flt.fits", "*_input.out", "truth_sources.ecsv",
                 "refcat.ecsv", "visit_truth.json")


@dataclass(frozen=True)
class VisitResult:
    """
    Paths of everything `simulate_visit` wrote.

    Attributes
    ----------
    out_dir : Path
    detector : str
        Canonical detector name (``"wfc3/uvis"``).
    exposures : tuple of Path
        FLT/FLC files, in observation order.
    rootnames : tuple of str
    poller : Path
        The poller file ``<instr>_<ppp>_<obset>_input.out`` (8-field lines
        unless another `POLLER_FORMS` entry was asked for).
    truth_sources : Path
        ``truth_sources.ecsv``.
    truth_wcs : tuple of Path
        ``truth_wcs/<rootname>_sci<k>.hdr``, the TRUE WCS of every chip
        (SIP); chips with lookup tables also get ``<rootname>_sci<k>.fits``
        holding them (read either with `hapsim.truth_wcs`).
    crmasks : tuple of Path
        ``truth_crmask/<rootname>_crmask.fits`` (one uint8 image per chip).
    refcat : Path
        ``refcat.ecsv`` (Gaia archive column names).
    visit_truth : Path
        ``visit_truth.json``.
    truth_psf : tuple of Path
        ``truth_psf/<filter>.fits``, the PSF used for every filter
        (`hapsim.psfio`).
    """

    out_dir: Path
    detector: str
    exposures: tuple[Path, ...]
    rootnames: tuple[str, ...]
    poller: Path
    truth_sources: Path
    truth_wcs: tuple[Path, ...]
    crmasks: tuple[Path, ...]
    refcat: Path
    visit_truth: Path
    truth_psf: tuple[Path, ...] = ()
    summary: dict = field(default_factory=dict, compare=False, repr=False)


def parse_filters(filters) -> dict[str, int]:
    """
    Normalise a filter request to ``{"F606W": 2, ...}``.

    Parameters
    ----------
    filters : dict, str or sequence
        ``{"f606w": 2}``, ``"f606w:2,f814w:2"`` or ``["f606w", "f814w"]``
        (one exposure each).
    """
    if isinstance(filters, str):
        items = {}
        for token in filters.split(","):
            token = token.strip()
            if not token:
                continue
            name, _, count = token.partition(":")
            items[name] = int(count) if count else 1
        filters = items
    elif not isinstance(filters, dict):
        filters = {name: 1 for name in filters}
    out = {}
    for name, count in filters.items():
        if int(count) < 1:
            raise ValueError(f"filter {name!r} needs at least one exposure, got {count}")
        out[str(name).strip().upper()] = int(count)
    if not out:
        raise ValueError("no filters requested")
    return out


def _check_out_dir(out_dir: Path, overwrite: bool):
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"output path {str(out_dir)!r} exists and is not a directory")
    if out_dir.exists() and any(out_dir.iterdir()):
        if not overwrite:
            raise ValueError(f"output directory {str(out_dir)!r} is not empty (use overwrite)")
        # Only files this simulator writes are removed; anything else stays.
        for pattern in _OUR_PATTERNS:
            for path in out_dir.glob(pattern):
                path.unlink()
        for sub in ("truth_wcs", "truth_crmask", "truth_psf"):
            for path in (out_dir / sub).glob("*"):
                path.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _subarray_box(spec: DetectorSpec, size: int):
    """(chip index, x0, y0) of the subarray and the chip it sits on."""
    if spec.instrument == "WFPC2":
        # WFPC2 always read out all four chips (its AREA mode only binned them)
        raise ValueError("WFPC2 has no subarray readouts; simulate the four chips "
                         "(subarray=None)")
    chip = spec.chips[0] if spec.detector != "WFC" else spec.chips[1]
    ny, nx = chip.shape
    if size > min(nx, ny) or size < 16:
        raise ValueError(f"subarray size {size} must be between 16 and {min(nx, ny)}")
    x0 = min(chip.subarray_corner[0], nx - size)
    y0 = min(chip.subarray_corner[1], ny - size)
    return spec.chips.index(chip), x0, y0


def _aperture_offset(chip, x_center, y_center):
    """Focal-plane offset (arcsec) of a pixel of `chip` (linear part only)."""
    d = np.array([x_center - (chip.crpix[0] - 1.0), y_center - (chip.crpix[1] - 1.0)])
    return np.asarray(chip.offset_arcsec) + np.asarray(chip.cd_arcsec) @ d


def simulate_visit(out_dir, *, detector="wfc3/uvis", filters=None, exptime=500.0,
                   dither="box4", pointing_error=(1.0, 0.05), seed=1, subarray=None,
                   overwrite=False, target=(150.1163, 2.2009), pa_v3=None,
                   proposal_id=None, program_id=None, obset_id="01", mjd_start=59580.25,
                   targname="HAPSIM-FIELD", star_density=150.0, galaxy_density=60.0,
                   star_mag_range=(17.0, 27.0), cr_fraction=None,
                   poller_form="full", cr_rate_scale=1.0, scene_options=None,
                   reference_epoch=None, distortion_tables=True, psf="gaussian") -> VisitResult:
    """
    Write a simulated single-detector HST visit to `out_dir`.

    Parameters
    ----------
    out_dir : str or Path
        Output directory (created; must be empty unless `overwrite`).
    detector : str, optional
        ``"wfc3/uvis"``, ``"wfc3/ir"``, ``"acs/wfc"``, ``"acs/hrc"``,
        ``"acs/sbc"`` or ``"wfpc2"``.
    filters : dict, str or sequence, optional
        Exposures per filter, e.g. ``{"f606w": 2}`` (default) or
        ``"f606w:2,f814w:2"``.
    exptime : float or dict, optional
        Exposure time (s) of every exposure, or per filter.
    dither : str, optional
        One of `DITHER_PATTERNS` (``"box4"``, ``"line2"``, ``"line3"``, ``"none"``).
    pointing_error : tuple of float, optional
        ``(shift_arcsec, rotation_deg)`` of the header WCS relative to the
        truth, the same for every exposure; the shift direction is drawn
        from `seed`.
    seed : int, optional
        Everything random derives from it; equal seeds give identical files.
    subarray : int, optional
        Write square ``subarray x subarray`` single-chip subarrays (not for
        WFPC2, which always read out its four chips).
    overwrite : bool, optional
        Allow a non-empty `out_dir` (files of a previous simulation are replaced).
    target : tuple of float, optional
        RA, Dec (deg) of the aperture reference of the first exposure.
    pa_v3 : float, optional
        Telescope roll; drawn from `seed` if not given.
    proposal_id, program_id, obset_id : optional
        Proposal number, 3-character program id (the ``ppp`` of the
        rootnames) and 2-character visit id; derived from `seed` if not given.
    mjd_start : float, optional
        Start of the first exposure (MJD).
    targname : str, optional
    star_density, galaxy_density : float, optional
        Sources per square arcminute.
    star_mag_range : tuple of float, optional
        AB magnitude range (at 6000 A) of the stellar luminosity function.
    cr_fraction : float, optional
        Fraction of pixels hit by cosmic rays in every exposure; default is
        the detector's rate times the exposure time (0 for ACS/SBC, whose
        MAMA does not register cosmic rays, whatever is asked).
    poller_form : str, optional
        One of `POLLER_FORMS`: ``"full"`` 8-field lines (default),
        ``"names"`` one file name per line, ``"aperture"`` lines
        ``filename,aperture`` with the exposure's APERTURE keyword.
    cr_rate_scale : float, optional
        Multiplies the detector's default cosmic-ray fraction (2 for a
        doubled rate); not allowed together with an explicit `cr_fraction`.
    scene_options : dict, optional
        Further keywords of `hapsim.scene.make_scene` (luminosity-function
        slopes, galaxy magnitudes, bright stars, proper-motion populations).
    reference_epoch : float, optional
        Julian year the truth positions refer to (e.g. 2016.0, the
        reference catalog's epoch); default the visit's start. Every
        exposure shows the stars moved to its EXPSTART
        (`hapsim.epochs.true_positions`).
    distortion_tables : bool, optional
        Write the NPOL (``WCSDVARR``) and D2IM (``D2IMARR``) lookup tables
        that real WFC3/UVIS and ACS/WFC files carry, and render through
        them (default); False gives SIP-only files. Other detectors have
        none (`hapsim.distortion`).
    psf : str or dict, optional
        ``"gaussian"`` (default: the Gaussian mixtures of `hapsim.psf`),
        ``"optical"`` (physical optics with far wings, `hapsim.optics`) or
        ``{filter: path}`` of PSF FITS files (`hapsim.psfio`). The PSF used is
        written to ``truth_psf/<filter>.fits``.

    Returns
    -------
    VisitResult
    """
    t_start = time.perf_counter()
    name = normalize_detector_name(detector)
    spec = get_detector(name)
    filters = parse_filters({"f606w": 2} if filters is None else filters)
    photometry = {f: spec.filter(f) for f in filters}
    exptimes = {f: float(exptime[f.lower()] if isinstance(exptime, dict) and f.lower() in exptime
                         else exptime[f] if isinstance(exptime, dict) else exptime) for f in filters}
    for f, t in exptimes.items():
        if not np.isfinite(t) or t <= 0:
            raise ValueError(f"exposure time must be positive, got {t} for {f}")
    if dither not in DITHER_PATTERNS:
        raise ValueError(f"unknown dither pattern {dither!r} (known: {', '.join(DITHER_PATTERNS)})")
    shift_arcsec, rotation_deg = (float(v) for v in pointing_error)
    if cr_fraction is not None and not 0.0 <= cr_fraction < 0.5:
        raise ValueError(f"cr_fraction must be in [0, 0.5), got {cr_fraction}")
    cr_rate_scale = float(cr_rate_scale)
    if cr_fraction is not None and cr_rate_scale != 1.0:
        raise ValueError("give cr_fraction or cr_rate_scale, not both")
    if not (np.isfinite(cr_rate_scale) and 0.0 <= cr_rate_scale
            and cr_rate_scale * (1.0 - np.exp(-spec.cr_pixel_rate * max(exptimes.values()))) < 0.5):
        raise ValueError(f"cr_rate_scale {cr_rate_scale} must be >= 0 and keep the CR fraction "
                         "below 0.5")
    scene_options = dict(scene_options or {})
    clash = sorted({"star_density", "galaxy_density", "star_mag_range"} & set(scene_options))
    if clash:
        raise ValueError(f"scene_options may not repeat simulate_visit keywords: {clash}")
    if poller_form not in POLLER_FORMS:
        raise ValueError(f"unknown poller form {poller_form!r} (known: {', '.join(POLLER_FORMS)})")
    psf_mode = check_psf_option(psf, filters)
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir, overwrite)

    seeds = np.random.SeedSequence(seed).spawn(4)
    rng_visit = np.random.default_rng(seeds[0])
    rng_scene = np.random.default_rng(seeds[1])
    rng_refcat = np.random.default_rng(seeds[2])
    n_exposures = sum(filters.values())
    exposure_seeds = seeds[3].spawn(n_exposures)

    if pa_v3 is None:
        pa_v3 = float(rng_visit.uniform(0.0, 360.0))
    shift_pa = float(rng_visit.uniform(0.0, 360.0))
    if program_id is None:
        program_id = "x" + _ALPHABET[(seed // 36) % 36] + _ALPHABET[seed % 36]
    program_id = str(program_id).lower()
    if len(program_id) != 3 or not program_id.isalnum():
        raise ValueError(f"program_id must be 3 alphanumeric characters, got {program_id!r}")
    obset_id = str(obset_id).lower()
    if len(obset_id) != 2 or not obset_id.isalnum():
        raise ValueError(f"obset_id must be 2 alphanumeric characters, got {obset_id!r}")
    if proposal_id is None:
        proposal_id = 15000 + seed % 5000
    ra_t, dec_t = float(target[0]), float(target[1])
    orientat = (pa_v3 + spec.orient_offset_deg + 180.0) % 360.0 - 180.0
    turn = position_angle_rotation(orientat)

    # Chips used and where the aperture reference sits.
    if subarray is not None:
        chip_index, x0, y0 = _subarray_box(spec, int(subarray))
        size = int(subarray)
        chips = [(spec.chips[chip_index], (x0, y0, size))]
        aperture_offset = _aperture_offset(spec.chips[chip_index], x0 + (size - 1) / 2,
                                           y0 + (size - 1) / 2)
    else:
        chips = [(chip, None) for chip in spec.chips]
        aperture_offset = np.zeros(2)

    # Visit-wide pointing error: one rigid sky rotation about the target.
    error_rotation = sky_rotation(ra_t, dec_t, shift_arcsec=shift_arcsec,
                                  shift_pa_deg=shift_pa, rotation_deg=rotation_deg)

    def to_header_sky(ra, dec):
        return unit_to_radec(radec_to_unit(ra, dec) @ error_rotation.T)

    # Exposure plan.
    letter = spec.rootname_letter
    pattern = DITHER_PATTERNS[dither]
    plans = []
    mjd = mjd_start
    n = 0
    for filt, count in filters.items():
        for k in range(count):
            dx, dy = pattern[k % len(pattern)]
            if spec.instrument == "WFPC2":
                # WFPC2 exposure ids are numbers (u2as0101t, u2as0102t, ...)
                exposure_id = f"{n + 1:02d}"
            else:
                exposure_id = f"{_ALPHABET[10 + n // 36]}{_ALPHABET[n % 36]}"
            rootname = f"{letter}{program_id}{obset_id}{exposure_id}{spec.rootname_suffix}"
            # The aperture reference moves by the dither along detector axes
            # (x points to -xi at ORIENTAT = 0, y to +eta).
            xi, eta = turn @ (np.array([-dx, dy]) / 3600.0)
            ra_ap, dec_ap = (float(v) for v in tangent_deproject(xi, eta, ra_t, dec_t))
            plans.append(dict(filter=filt, index=n, step=k % len(pattern) + 1, dither=(dx, dy),
                              rootname=rootname, ra_aper=ra_ap, dec_aper=dec_ap,
                              expstart=mjd, exptime=exptimes[filt]))
            mjd += (exptimes[filt] + 150.0) / 86400.0
            n += 1

    # Lookup tables of the chips: full-chip tables, addressed from a subarray by its LTV.
    tables = [detector_tables(name, chip.ccdchip, chip.shape,
                              (-box[0], -box[1]) if box else (0.0, 0.0))
              if distortion_tables else None for chip, box in chips]
    lookup_files = reference_files(name) if any(t is not None for t in tables) else None

    # True chip WCSs of every exposure: chip reference = aperture reference + offset.
    for plan in plans:
        plan["true_wcs"] = []
        plan["header_wcs"] = []
        for (chip, box), chip_tables in zip(chips, tables):
            shifted = _shift_chip(chip, aperture_offset)
            true = chip_wcs(shifted, plan["ra_aper"], plan["dec_aper"], orientat, subarray=box,
                            tables=chip_tables)
            plan["true_wcs"].append(true)
            plan["header_wcs"].append(rotate_wcs(true, error_rotation))

    # Scene covering the union of all chips, with a margin for stamps.
    half_width = _field_half_width(plans, ra_t, dec_t) + 8.0
    scene = make_scene(rng_scene, ra_t, dec_t, half_width, star_density=star_density,
                       galaxy_density=galaxy_density, star_mag_range=tuple(star_mag_range),
                       **scene_options)
    # Truth positions refer to one epoch; each exposure sees the stars moved to its EXPSTART.
    epoch_mjd = plans[0]["expstart"] if reference_epoch is None else jyear_to_mjd(reference_epoch)
    scene.meta["epoch"] = mjd_to_jyear(epoch_mjd)
    scene.meta["epoch_mjd"] = epoch_mjd
    for filt, phot in photometry.items():
        mag = abmag_in_filter(scene["abmag_ref"], scene["color"], phot.photplam)
        rate = abmag_to_countrate(mag, phot)
        scene[f"countrate_{filt.lower()}"] = rate
        scene[f"abmag_{filt.lower()}"] = countrate_to_abmag(rate, phot)
        # WFPC2 calibrates DN, as its PHOTFLAM does; SBC counts photons
        scene[f"countrate_{filt.lower()}"].unit = ("adu / s" if spec.instrument == "WFPC2"
                                                   else "ct / s" if spec.is_mama
                                                   else "electron / s")
        scene[f"abmag_{filt.lower()}"].unit = "mag"

    psfs = visit_psfs(spec, filters, sorted({spec.chip_scale(chip) for chip, _ in chips}), psf)
    (out_dir / "truth_wcs").mkdir(exist_ok=True)
    (out_dir / "truth_crmask").mkdir(exist_ok=True)
    truth_psfs = write_truth_psfs(out_dir / "truth_psf", psfs, detector=name)
    exposures, truth_wcs_paths, crmask_paths, cr_fractions = [], [], [], {}
    instrument = spec.instrument.lower()
    for plan in plans:
        rng = np.random.default_rng(exposure_seeds[plan["index"]])
        filt = plan["filter"]
        phot = photometry[filt]
        t = plan["exptime"]
        fraction = (cr_fraction if cr_fraction is not None
                    else cr_rate_scale * (1.0 - np.exp(-spec.cr_pixel_rate * t)))
        scene_now = scene_at_epoch(scene, epoch_mjd, plan["expstart"])
        filename = f"{plan['rootname']}_{spec.file_suffix}.fits"
        n_ext_per_chip = 5 if spec.detector == "IR" else 3
        lookup_hdus = file_table_hdus(tables)
        ra_ap_hdr, dec_ap_hdr = (float(v) for v in to_header_sky(plan["ra_aper"], plan["dec_aper"]))
        ra_tg_hdr, dec_tg_hdr = (float(v) for v in to_header_sky(ra_t, dec_t))
        info = ExposureInfo(
            rootname=plan["rootname"], filename=filename, filter=filt, exptime=t,
            expstart=plan["expstart"], proposal_id=int(proposal_id), program_id=program_id,
            obset_id=obset_id, linenum=f"{obset_id.upper()}.{plan['index'] + 1:03d}",
            asn_id=f"{letter}{program_id}{obset_id}010".upper(), targname=targname,
            ra_targ=ra_tg_hdr, dec_targ=dec_tg_hdr, ra_aper=ra_ap_hdr, dec_aper=dec_ap_hdr,
            pa_v3=(pa_v3 + rotation_deg) % 360.0, postarg=plan["dither"],
            pattern="NONE" if dither == "none" else f"{spec.detector}-DITHER-{dither.upper()}",
            pattern_npts=len(pattern), pattern_step=plan["step"],
            subarray=subarray is not None,
            nextend=n_ext_per_chip * len(chips) + len(lookup_hdus), lookup_files=lookup_files)
        hdus = [fits.PrimaryHDU(header=primary_header(spec, info, phot))]
        companions = []
        masks = []
        for extver, ((chip, box), true, header_wcs) in enumerate(
                zip(chips, plan["true_wcs"], plan["header_wcs"]), start=1):
            model = np.full(true.shape, (phot.sky_rate * chip.sky_factor + spec.dark_rate) * t)
            counts = (np.asarray(scene[f"countrate_{filt.lower()}"]) * t
                      * spec.electrons_per_data_unit)
            scale = spec.chip_scale(chip)
            render_sources(model, true, psfs[filt, scale], scene_now, counts,
                           orientat_deg=true.orientat(),
                           pixel_scale_arcsec=scale)
            sci, err, dq, crmask = chip_pixels(spec, true, rng, t, model, fraction)
            masks.append(crmask)
            ltv = (-box[0], -box[1]) if box else (0.0, 0.0)
            sci_hdr = science_header(spec, info, phot, extver=extver, ccdchip=chip.ccdchip,
                                     header_wcs=header_wcs, ltv=ltv, full_shape=chip.shape,
                                     ra_aper=ra_ap_hdr, dec_aper=dec_ap_hdr,
                                     idcscale=scale)
            unit_err = spec.bunit
            sci_hdr.update(image_statistics(sci, err, dq, spec, t))
            hdus.append(fits.ImageHDU(sci, header=sci_hdr))
            err_hdu = fits.ImageHDU(err, header=companion_header(
                "ERR", extver, info, header_wcs, spec, ltv, bunit=unit_err))
            dq_hdu = fits.ImageHDU(dq, header=companion_header(
                "DQ", extver, info, header_wcs, spec, ltv, bunit="UNITLESS"))
            if spec.instrument == "WFPC2":
                # drizzlepac's wfpc2_to_flt appends the C1M DQ and a new ERR
                # after the four SCI extensions of the C0M file
                companions += [dq_hdu, err_hdu]
            else:
                hdus += [err_hdu, dq_hdu]
            if spec.detector == "IR":
                hdus.append(fits.ImageHDU(np.full(true.shape, 14, dtype=np.int16),
                                          header=companion_header("SAMP", extver, info, header_wcs,
                                                                  spec, ltv, bunit="UNITLESS")))
                hdus.append(fits.ImageHDU(np.full(true.shape, t, dtype=np.float32),
                                          header=companion_header("TIME", extver, info, header_wcs,
                                                                  spec, ltv, bunit="SECONDS")))
            truth_path = out_dir / "truth_wcs" / f"{plan['rootname']}_sci{extver}.hdr"
            true_hdr = true.header()
            true_hdr["WCSNAME"] = "TRUTH"
            true_hdr["NAXIS1"] = true.shape[1]
            true_hdr["NAXIS2"] = true.shape[0]
            true_hdr.totextfile(truth_path, overwrite=True)
            if true.tables is not None:
                # a text header cannot hold the tables: the complete truth sits beside it
                write_truth_wcs(truth_path.with_suffix(".fits"), true_hdr, true.tables, true.shape)
            truth_wcs_paths.append(truth_path)
        if spec.is_mama:
            hdus[0].header["GLOBRATE"] = round(
                sum(float(h.data.sum()) for h in hdus[1:] if h.name == "SCI") / t, 3)
        path = out_dir / filename
        fits.HDUList(hdus + companions + lookup_hdus).writeto(path, overwrite=True)
        exposures.append(path)
        crmask_path = out_dir / "truth_crmask" / f"{plan['rootname']}_crmask.fits"
        write_crmask(crmask_path, masks)
        crmask_paths.append(crmask_path)
        cr_fractions[plan["rootname"]] = float(np.mean([m.mean() for m in masks]))
        log.debug("hapsim: wrote %s (CR fraction %.4f)", filename, cr_fractions[plan["rootname"]])

    truth_path = out_dir / "truth_sources.ecsv"
    scene.write(truth_path, format="ascii.ecsv", overwrite=True)
    refcat = make_refcat(rng_refcat, scene, epoch_mjd)
    refcat_path = out_dir / "refcat.ecsv"
    refcat.write(refcat_path, format="ascii.ecsv", overwrite=True)

    poller = out_dir / f"{instrument}_{program_id}_{obset_id}_input.out"
    lines = []
    for plan, path in zip(plans, exposures):
        filt = plan["filter"]
        primary = fits.getheader(path, 0)
        if spec.instrument == "ACS":
            filt = f"{primary['FILTER1']};{primary['FILTER2']}"
        if poller_form == "names":
            lines.append(path.name)
        elif poller_form == "aperture":
            # drizzlepac's WFPC2 pollers: the aperture may not contain blanks
            lines.append(f"{path.name},{str(primary['APERTURE']).replace(' ', '')}")
        else:
            lines.append(",".join([path.name, str(proposal_id), program_id.upper(), obset_id,
                                   f"{plan['exptime']:.1f}", filt,
                                   spec.poller_detector or spec.detector, str(path)]))
    poller.write_text("\n".join(lines) + "\n")

    # Pointing-error vector as measured at the target (header minus truth).
    ra_h, dec_h = to_header_sky(ra_t, dec_t)
    d_xi, d_eta = tangent_project(ra_h, dec_h, ra_t, dec_t)
    summary = {
        "hapsim_version": __version__,
        "detector": name,
        "instrument": spec.instrument,
        "filters": {f.lower(): c for f, c in filters.items()},
        "exptime": {f.lower(): t for f, t in exptimes.items()},
        "seed": seed,
        "subarray": subarray,
        "poller_form": poller_form,
        "target": [ra_t, dec_t],
        "pa_v3_true": pa_v3,
        "orientat_true": orientat,
        "mjd_start": mjd_start,
        "pointing_error": {
            "shift_arcsec": shift_arcsec,
            "rotation_deg": rotation_deg,
            "shift_pa_deg": shift_pa,
            "shift_vector_arcsec": [float(d_xi) * 3600.0, float(d_eta) * 3600.0],
            "vector_convention": "header minus truth at the target: (xi east, eta north)",
            "rotation_matrix": error_rotation.tolist(),
        },
        "dither": {"pattern": dither,
                   "offsets_arcsec": {p["rootname"]: list(p["dither"]) for p in plans}},
        "cr_fraction": cr_fractions,
        "cr_rate_scale": cr_rate_scale,
        "scene_options": {k: list(v) if isinstance(v, tuple) else v
                          for k, v in scene_options.items()},
        "epochs": {"truth_epoch": scene.meta["epoch"], "truth_epoch_mjd": epoch_mjd,
                   "refcat_epoch": GAIA_REF_EPOCH,
                   "exposures": {p["rootname"]: {"expstart_mjd": p["expstart"],
                                                 "epoch": mjd_to_jyear(p["expstart"])}
                                 for p in plans}},
        "distortion_tables": (dict(zip(("npolfile", "d2imfile"), lookup_files))
                              if lookup_files else None),
        "n_sources": {"star": int(np.sum(scene["type"] == "star")),
                      "galaxy": int(np.sum(scene["type"] == "galaxy"))},
        "n_refcat": len(refcat),
        "exposures": [p.name for p in exposures],
        "psf": {"model": psf_mode,
                "files": [str(path.relative_to(out_dir)) for path in truth_psfs]},
        "wall_s": round(time.perf_counter() - t_start, 3),
    }
    visit_truth = out_dir / "visit_truth.json"
    visit_truth.write_text(json.dumps(summary, indent=2))
    log.info("hapsim: %d %s exposures written to %s in %.1f s", len(exposures), name,
             out_dir, summary["wall_s"])
    return VisitResult(out_dir=out_dir, detector=name, exposures=tuple(exposures),
                       rootnames=tuple(p["rootname"] for p in plans), poller=poller,
                       truth_sources=truth_path, truth_wcs=tuple(truth_wcs_paths),
                       crmasks=tuple(crmask_paths), refcat=refcat_path,
                       visit_truth=visit_truth, truth_psf=tuple(truth_psfs),
                       summary=summary)


def _shift_chip(chip, aperture_offset):
    """Chip description with offsets relative to a moved aperture reference."""
    from dataclasses import replace

    off = np.asarray(chip.offset_arcsec) - aperture_offset
    return replace(chip, offset_arcsec=(float(off[0]), float(off[1])))


def _field_half_width(plans, ra0, dec0):
    """Half width (arcsec) of a square about (ra0, dec0) holding every chip."""
    extent = 0.0
    for plan in plans:
        for wcs in plan["true_wcs"]:
            ny, nx = wcs.shape
            corners = np.array([[0, 0], [nx - 1, 0], [0, ny - 1], [nx - 1, ny - 1]], dtype=float)
            ra, dec = wcs.to_astropy().all_pix2world(corners[:, 0], corners[:, 1], 0)
            xi, eta = tangent_project(ra, dec, ra0, dec0)
            extent = max(extent, np.abs(xi).max() * 3600.0, np.abs(eta).max() * 3600.0)
    return extent
