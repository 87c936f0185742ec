"""
FITS headers of simulated exposures, modelled on real calibrated files.

The keyword set and placement follow real WFC3 and ACS FLT/FLC headers:
photometry keywords in the SCI extensions for UVIS/ACS and in the
primary header for WFC3/IR, FILTER for WFC3 and FILTER1/FILTER2 for
ACS, CCDCHIP in CCD SCI headers, SAMP/TIME extensions for IR, and the
header WCS (TAN-SIP, plus the OPUS and IDC alternates) in every SCI
extension with its linear part in ERR/DQ. WFC3/UVIS and ACS/WFC SCI headers
also reference their NPOL/D2IM lookup tables (``CPDISj``, ``DPj.*``,
``D2IMDISj``, ``D2IMj.*``; `hapsim.distortion`), with NPOLFILE/D2IMFILE and
DISTNAME in the primary header.

ACS/SBC headers carry no CCD keywords (no CCDCHIP, CCDGAIN, ATODGN*,
READNSE*), FILTER2 = N/A, BUNIT = COUNTS and the MAMA's global count
rate. WFPC2 headers are those of drizzlepac's FLT files made from
C0M/C1M pairs: primary DETECTOR = PRIMESI = WFPC2 (added by
``wfpc2_to_flt``), FILTNAM1/FILTNAM2, ATODGAIN, IMAGETYP = EXT and no
OBSTYPE; each SCI extension names its chip in DETECTOR (1 = PC1, 2-4 =
WF2-WF4) and holds PHOTMODE/PHOTFLAM (per DN/s)/PHOTZPT, BUNIT = COUNTS.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from astropy.io import fits
from astropy.time import Time

from .detectors import DetectorSpec, FilterPhotometry
from .distortion import sci_table_cards
from .geometry import ChipWCS

__all__ = [
    "ExposureInfo",
    "primary_header",
    "science_header",
    "companion_header",
    "wcs_name",
]


@dataclass(frozen=True)
class ExposureInfo:
    """Per-exposure metadata written into the headers."""

    rootname: str
    filename: str
    filter: str
    exptime: float
    expstart: float
    proposal_id: int
    program_id: str
    obset_id: str
    linenum: str
    asn_id: str
    targname: str
    ra_targ: float
    dec_targ: float
    ra_aper: float
    dec_aper: float
    pa_v3: float
    postarg: tuple[float, float]
    pattern: str
    pattern_npts: int
    pattern_step: int
    subarray: bool
    nextend: int
    #: ``(NPOLFILE, D2IMFILE)`` when the chips carry lookup tables (`hapsim.distortion`)
    lookup_files: tuple[str, str] | None = None

    @property
    def expend(self) -> float:
        """MJD of the end of the exposure."""
        return self.expstart + self.exptime / 86400.0


#: WFPC2 filter wheel numbers (FILTER1/FILTER2 hold the number, FILTNAM1/2 the name).
_WFPC2_FILTER_NUMBERS = {"F300W": 10, "F336W": 11, "F439W": 19, "F450W": 20, "F555W": 25,
                         "F606W": 29, "F675W": 32, "F702W": 33, "F814W": 36}


def wcs_name(spec: DetectorSpec) -> str:
    """A-priori WCSNAME of the simulated files (``IDC_<idctab>-GSC240``)."""
    return f"IDC_{spec.idctab}-GSC240"


def _photmode(spec: DetectorSpec, filt: str, ccdchip: int, mjd: float) -> str:
    if spec.instrument == "WFPC2":
        return f"WFPC2,{ccdchip},A2D{spec.gain:.0f},{filt},,CAL"
    if spec.detector == "UVIS":
        return f"WFC3 UVIS{ccdchip} {filt} MJD#{mjd:.4f}"
    if spec.detector == "IR":
        return f"WFC3 IR {filt}"
    if spec.detector == "WFC":
        return f"ACS WFC1 {filt} MJD#{mjd:.4f}"
    return f"ACS {spec.detector} {filt} MJD#{mjd:.4f}"


def _photometry_cards(hdr, spec, info, phot: FilterPhotometry, ccdchip):
    hdr["PHOTMODE"] = (_photmode(spec, info.filter, ccdchip, info.expstart), "observation configuration")
    unit = "DN" if spec.instrument == "WFPC2" else "e-"
    hdr["PHOTFLAM"] = (phot.photflam, f"inverse sensitivity, ergs/cm2/A/{unit}")
    hdr["PHOTFNU"] = (phot.photfnu, f"inverse sensitivity, Jy*sec/{unit}")
    hdr["PHOTZPT"] = (-21.1, "ST magnitude zero point")
    hdr["PHOTPLAM"] = (phot.photplam, "Pivot wavelength (Angstroms)")
    hdr["PHOTBW"] = (phot.photbw, "RMS bandwidth of filter plus detector")
    if spec.detector == "UVIS":
        hdr["PHTFLAM1"] = (phot.photflam, "Ch1 Inv Sens, use PHOTFLAM for UV filters")
        hdr["PHTFLAM2"] = (phot.photflam, "Ch2 Inv Sens, use PHOTFLAM if FLUXCORR=COMPLETE")
        hdr["PHTRATIO"] = (1.0, "PHTFLAM2/PHTFLAM1 ratio")


def primary_header(spec: DetectorSpec, info: ExposureInfo, phot: FilterPhotometry) -> fits.Header:
    """
    Primary header of a simulated exposure.

    Parameters
    ----------
    spec : DetectorSpec
    info : ExposureInfo
    phot : FilterPhotometry

    Returns
    -------
    astropy.io.fits.Header
    """
    start = Time(info.expstart, format="mjd")
    date_obs, time_obs = start.isot.split("T")
    hdr = fits.Header()
    hdr["ORIGIN"] = ("hapsim", "FITS file originator")
    hdr["DATE"] = (Time.now().isot[:10], "date this file was written (yyyy-mm-dd)")
    hdr["NEXTEND"] = (info.nextend, "Number of standard extensions")
    hdr["FILENAME"] = (info.filename, "name of file")
    hdr["FILETYPE"] = ("SCI", "type of data found in data file")
    hdr["TELESCOP"] = ("HST", "telescope used to acquire data")
    hdr["INSTRUME"] = (spec.instrument, "identifier for instrument used to acquire data")
    hdr["EQUINOX"] = (2000.0, "equinox of celestial coord. system")
    hdr["ROOTNAME"] = (info.rootname, "rootname of the observation set")
    hdr["IMAGETYP"] = ("EXT", "type of exposure identifier")
    hdr["PRIMESI"] = (spec.instrument, "instrument designated as prime")
    hdr["TARGNAME"] = (info.targname, "proposer's target name")
    hdr["RA_TARG"] = (info.ra_targ, "right ascension of the target (deg) (J2000)")
    hdr["DEC_TARG"] = (info.dec_targ, "declination of the target (deg) (J2000)")
    hdr["PROPOSID"] = (info.proposal_id, "PEP proposal identifier")
    hdr["LINENUM"] = (info.linenum, "proposal logsheet line number")
    hdr["PR_INV_L"] = ("Simulator", "last name of principal investigator")
    hdr["PR_INV_F"] = ("Hap", "first name of principal investigator")
    hdr["PR_INV_M"] = ("", "middle name / initial of principal investigator")
    hdr["SUNANGLE"] = (100.0, "angle between sun and V1 axis")
    hdr["MOONANGL"] = (70.0, "angle between moon and V1 axis")
    hdr["FGSLOCK"] = ("FINE", "commanded FGS lock (FINE,COARSE,GYROS,UNKNOWN)")
    hdr["GYROMODE"] = ("T", "number of gyros scheduled, T=3+OBAD")
    hdr["REFFRAME"] = ("ICRS", "guide star catalog version")
    hdr["MTFLAG"] = (" ", "moving target flag; T if it is a moving target")
    hdr["DATE-OBS"] = (date_obs, "UT date of start of observation (yyyy-mm-dd)")
    hdr["TIME-OBS"] = (time_obs[:8], "UT time of start of observation (hh:mm:ss)")
    hdr["EXPSTART"] = (info.expstart, "exposure start time (Modified Julian Date)")
    hdr["EXPEND"] = (info.expend, "exposure end time (Modified Julian Date)")
    hdr["EXPTIME"] = (info.exptime, "exposure duration (seconds)--calculated")
    hdr["TEXPTIME"] = (info.exptime, "total exposure time (seconds)")
    hdr["EXPFLAG"] = ("NORMAL", "Exposure interruption indicator")
    hdr["QUALCOM1"] = ""
    hdr["QUALCOM2"] = ""
    hdr["QUALCOM3"] = ""
    hdr["QUALITY"] = ""
    if spec.is_ccd:
        hdr["DARKTIME"] = (info.exptime + 3.0, "fiducial pixel dark time (secs)")
    hdr["PA_V3"] = (info.pa_v3, "position angle of V3-axis of HST (deg)")
    hdr["POSTARG1"] = (info.postarg[0], "POSTARG in axis 1 direction")
    hdr["POSTARG2"] = (info.postarg[1], "POSTARG in axis 2 direction")
    hdr["OPUS_VER"] = ("HSTDP hapsim", "data processing software system version")
    hdr["CAL_VER"] = ("hapsim", "calibration code version")
    if spec.instrument == "WFPC2":
        # WFPC2 has no OBSTYPE: IMAGETYP = EXT marks external (science) images
        hdr["MODE"] = ("FULL", "instr. mode: FULL (full res.), AREA (2x2 bin)")
        hdr["SERIALS"] = ("OFF", "serial clocks: ON, OFF")
        hdr["SHUTTER"] = ("A", "shutter in place at beginning of exposure")
    else:
        hdr["OBSTYPE"] = ("IMAGING", "observation type - imaging or spectroscopic")
        hdr["OBSMODE"] = ("MULTIACCUM" if spec.detector == "IR" else "ACCUM", "operating mode")
    hdr["SCLAMP"] = ("NONE", "lamp status, NONE or name of lamp which is on")
    hdr["NRPTEXP"] = (1, "number of repeat exposures in set: default 1")
    hdr["SUBARRAY"] = (info.subarray, "data from a subarray (T) or full frame (F)")
    if spec.detector == "IR":
        hdr["SUBTYPE"] = ("SQ512SUB" if info.subarray else "FULLIMAG", "Size/type of IR subarray")
    hdr["DETECTOR"] = (spec.detector, "detector in use")
    if spec.instrument == "WFC3":
        hdr["FILTER"] = (info.filter, "element selected from filter wheel")
    elif spec.instrument == "WFPC2":
        hdr["FILTNAM1"] = (info.filter, "first filter name")
        hdr["FILTNAM2"] = ("", "second filter name")
        hdr["FILTER1"] = (_WFPC2_FILTER_NUMBERS.get(info.filter, 0), "first filter number (0-48)")
        hdr["FILTER2"] = (0, "second filter number (0-48)")
        hdr["FILTROT"] = (0.0, "partial filter rotation angle (degrees)")
    elif spec.detector == "SBC":
        # the SBC filters all sit in wheel 1; wheel 2 is not in the beam
        hdr["FILTER1"] = (info.filter, "element selected from filter wheel 1")
        hdr["FILTER2"] = ("N/A", "element selected from filter wheel 2")
    else:
        # ACS filter wheels: these filters sit in wheel 2, the others in wheel 1.
        if info.filter in ("F435W", "F814W", "F250W", "F330W", "F220W", "F344N", "F660N"):
            wheel1, wheel2 = "CLEAR1L", info.filter
        else:
            wheel1, wheel2 = info.filter, "CLEAR2L"
        if spec.detector == "HRC":
            wheel1 = wheel1.replace("CLEAR1L", "CLEAR1S")
            wheel2 = wheel2.replace("CLEAR2L", "CLEAR2S")
        hdr["FILTER1"] = (wheel1, "element selected from filter wheel 1")
        hdr["FILTER2"] = (wheel2, "element selected from filter wheel 2")
    if spec.detector == "IR":
        hdr["SAMP_SEQ"] = ("STEP100", "MultiAccum exposure time sequence name")
        hdr["NSAMP"] = (14, "number of MULTIACCUM samples")
        hdr["SAMPZERO"] = (2.911756, "sample time of the zeroth read (sec)")
    aperture = spec.subarray_aperture if info.subarray else spec.aperture
    hdr["APERTURE"] = (aperture, "aperture name")
    if spec.instrument == "WFPC2":
        hdr["APEROBJ"] = (aperture, "object aperture")
    hdr["PROPAPER"] = ("", "proposed aperture name")
    hdr["DIRIMAGE"] = ("NONE", "direct image for grism or prism exposure")
    if spec.instrument == "WFC3":
        hdr["SCAN_TYP"] = ("N", "C:bostrophidon; D:C with dwell; N:N/A")
    hdr["CRSPLIT"] = (1, "number of cosmic ray split exposures")
    if spec.is_mama:
        # MAMA calibration: linearity and local-rate flags, no bias or dark
        for key in ("DQICORR", "GLINCORR", "LFLGCORR", "FLATCORR", "PHOTCORR"):
            hdr[key] = ("COMPLETE", "calibration switch")
        hdr["DARKCORR"] = ("OMIT", "subtract dark image")
        # the simulator fills in the rate once the pixels exist
        hdr["GLOBRATE"] = (0.0, "global count rate (counts/s)")
        hdr["GLOBLIM"] = ("WITHIN LIMIT", "was global linear count rate limit exceeded")
    else:
        for key in ("DQICORR", "BLEVCORR", "DARKCORR", "FLATCORR", "PHOTCORR"):
            hdr[key] = ("COMPLETE", "calibration switch")
    if spec.detector in ("UVIS", "WFC"):
        hdr["PCTECORR"] = ("COMPLETE", "cte correction")
    hdr["CRCORR"] = ("OMIT", "combine observations to reject cosmic rays")
    hdr["DRIZCORR"] = ("PERFORM", "drizzle processing")
    # No reference files travel with simulated data: the headers hold the
    # complete distortion model, the SIP and (UVIS, WFC) the NPOL/D2IM tables
    # in their extensions, rendered through exactly (simulation notes #5).
    for key in ("IDCTAB", "DGEOFILE"):
        hdr[key] = ("N/A", "none: the header WCS is complete")
    npolfile, d2imfile = info.lookup_files or ("N/A", "N/A")
    hdr["NPOLFILE"] = (npolfile, "nonpolynomial offsets reference image")
    hdr["D2IMFILE"] = (d2imfile, "Column Correction Reference File")
    hdr["MDRIZTAB"] = ("N/A", "MultiDrizzle parameter table")
    if spec.detector == "UVIS":
        hdr["CHINJECT"] = ("NONE", "Charge Injection Mode")
    hdr["PATTERN1"] = (info.pattern, "primary pattern type")
    hdr["P1_NPTS"] = (info.pattern_npts, "number of points in primary pattern")
    hdr["PATTSTEP"] = (info.pattern_step, "position number of this point in the pattern")
    if spec.instrument == "WFPC2":
        hdr["ATODGAIN"] = (spec.gain, "analog to digital gain (electrons/DN)")
    elif not spec.is_mama:
        hdr["CCDAMP"] = ("ABCD", "CCD Amplifier Readout Configuration")
        hdr["CCDGAIN"] = (spec.gain if spec.detector != "IR" else 2.5, "commanded gain of CCD")
        for amp, rn in zip("ABCD", spec.readnoise):
            hdr[f"ATODGN{amp}"] = (spec.gain, f"calibrated gain for amplifier {amp}")
        for amp, rn in zip("ABCD", spec.readnoise):
            hdr[f"READNSE{amp}"] = (rn, f"calibrated read noise for amplifier {amp}")
    hdr["ASN_ID"] = (info.asn_id, "unique identifier assigned to association")
    hdr["ASN_TAB"] = (f"{info.asn_id.lower()}_asn.fits", "name of the association table")
    hdr["ASN_MTYP"] = ("EXP-DTH", "Role of the Member in the Association")
    if spec.detector == "IR":
        _photometry_cards(hdr, spec, info, phot, 1)
    elif spec.detector == "UVIS":
        hdr["PHOTFLAM"] = (phot.photflam, "Inverse sensitivity, ergs/cm2/A/e-")
        hdr["PHOTZPT"] = (-21.1, "ST magnitude zero point")
    # stwcs: <rootname>_<idctab>-<npol>-<d2im> when tables are applied
    tables = "".join(f"-{Path(name.split('$')[-1]).stem.split('_')[0]}"
                     for name in info.lookup_files or ())
    hdr["DISTNAME"] = (f"{info.rootname}_{spec.idctab}{tables}", "Distortion model name")
    hdr["SIPNAME"] = (f"{info.rootname}_{spec.idctab}", "origin of SIP polynomial distortion model")
    hdr["UPWCSVER"] = ("1.7.2", "Version of STWCS used to update the WCS")
    return hdr


def _wcs_cards(hdr: fits.Header, header_wcs: ChipWCS, spec: DetectorSpec, *, sip: bool):
    """Primary WCS plus the OPUS ('O') and IDC ('A') alternates, all identical."""
    hdr.update(header_wcs.header(sip=sip))
    hdr["WCSNAME"] = (wcs_name(spec), "Coordinate system title")
    hdr["RADESYS"] = ("ICRS", "Equatorial coordinate system")
    hdr["MJDREF"] = (0.0, "[d] MJD of fiducial time")
    if sip:
        opus = header_wcs.header(key="O", sip=False)
        opus["WCSNAMEO"] = "OPUS"
        opus["RADESYSO"] = "ICRS"
        hdr.update(opus)
        idc = header_wcs.header(key="A", sip=False)
        idc["WCSNAMEA"] = f"IDC_{spec.idctab}"
        idc["RADESYSA"] = "ICRS"
        hdr.update(idc)
        hdr["WCSTYPE"] = ("distorted a priori solution based on GSC240", "WCS type")


def science_header(spec: DetectorSpec, info: ExposureInfo, phot: FilterPhotometry, *,
                   extver: int, ccdchip: int, header_wcs: ChipWCS, ltv: tuple[float, float],
                   full_shape: tuple[int, int], ra_aper: float, dec_aper: float,
                   idcscale: float | None = None) -> fits.Header:
    """
    Header of a SCI extension.

    Parameters
    ----------
    spec, info, phot
        Detector, exposure and filter descriptions.
    extver : int
        EXTVER of the extension.
    ccdchip : int
    header_wcs : ChipWCS
        The WCS written to the file (the true WCS moved by the pointing error).
    ltv : tuple of float
        LTV1, LTV2 (minus the 0-based subarray corner).
    full_shape : tuple of int
        Full-chip shape, for CENTERA/SIZAXIS.
    ra_aper, dec_aper : float
        Aperture reference position according to the header WCS.
    idcscale : float, optional
        IDCSCALE of this chip (default the detector's; WFPC2's PC1 differs).
    """
    hdr = fits.Header()
    hdr["EXTNAME"] = "SCI"
    hdr["EXTVER"] = extver
    hdr["INHERIT"] = (True, "inherit the primary header")
    hdr["ROOTNAME"] = (info.rootname, "rootname of the observation set")
    hdr["EXPNAME"] = (info.rootname, "exposure identifier")
    hdr["BUNIT"] = (spec.bunit, "brightness units")
    if spec.instrument == "WFPC2":
        hdr["DETECTOR"] = (ccdchip, "CCD detector: PC 1, WFC 2-4")
    elif spec.is_ccd:
        hdr["CCDCHIP"] = (ccdchip, "CCD chip (1 or 2)")
    hdr["LTV1"] = (float(ltv[0]), "offset in X to subsection start")
    hdr["LTV2"] = (float(ltv[1]), "offset in Y to subsection start")
    hdr["LTM1_1"] = (1.0, "reciprocal of sampling rate in X")
    hdr["LTM2_2"] = (1.0, "reciprocal of sampling rate in Y")
    hdr["PA_APER"] = (header_wcs.orientat(), "PA of reference aperture center (deg)")
    hdr["VAFACTOR"] = (1.0, "velocity aberration plate scale factor")
    hdr["ORIENTAT"] = (header_wcs.orientat(), "PA of image y axis (deg. e of n)")
    hdr["RA_APER"] = (ra_aper, "RA of aperture reference position")
    hdr["DEC_APER"] = (dec_aper, "Declination of aperture reference position")
    hdr["NCOMBINE"] = (1, "number of image sets combined during CR rejecti")
    if spec.detector != "IR":
        _photometry_cards(hdr, spec, info, phot, ccdchip)
    ny, nx = header_wcs.shape
    hdr["CENTERA1"] = (int(-ltv[0] + nx / 2 + 1), "subarray axis1 center pt")
    hdr["CENTERA2"] = (int(-ltv[1] + ny / 2 + 1), "subarray axis2 center pt")
    hdr["SIZAXIS1"] = (nx, "subarray axis1 size")
    hdr["SIZAXIS2"] = (ny, "subarray axis2 size")
    hdr["BINAXIS1"] = (1, "axis1 data bin size in unbinned detector pixels")
    hdr["BINAXIS2"] = (1, "axis2 data bin size in unbinned detector pixels")
    if spec.detector == "IR":
        hdr["SAMPNUM"] = (13, "MULTIACCUM sample number")
        hdr["SAMPTIME"] = (info.exptime, "total integration time (sec)")
    hdr["IDCSCALE"] = (idcscale or spec.idcscale, "pixel scale from the IDCTAB reference file")
    hdr["IDCTHETA"] = (45.0 if spec.instrument == "WFC3" else 0.0, "detector Y-axis w.r.t. V3 axis")
    hdr["IDCXREF"] = (float(header_wcs.crpix[0] - ltv[0]), "reference pixel location in X")
    hdr["IDCYREF"] = (float(header_wcs.crpix[1] - ltv[1]), "reference pixel location in Y")
    _wcs_cards(hdr, header_wcs, spec, sip=True)
    if header_wcs.tables is not None:
        hdr.update(sci_table_cards(header_wcs.tables, extver))
    return hdr


def companion_header(extname: str, extver: int, info: ExposureInfo, header_wcs: ChipWCS,
                     spec: DetectorSpec, ltv, *, bunit: str) -> fits.Header:
    """Header of an ERR, DQ, SAMP or TIME extension (linear WCS, as in real files)."""
    hdr = fits.Header()
    hdr["EXTNAME"] = extname
    hdr["EXTVER"] = extver
    hdr["INHERIT"] = (True, "inherit the primary header")
    hdr["ROOTNAME"] = (info.rootname, "rootname of the observation set")
    hdr["EXPNAME"] = (info.rootname, "exposure identifier")
    hdr["BUNIT"] = (bunit, "brightness units")
    hdr["LTV1"] = (float(ltv[0]), "offset in X to subsection start")
    hdr["LTV2"] = (float(ltv[1]), "offset in Y to subsection start")
    hdr["LTM1_1"] = (1.0, "reciprocal of sampling rate in X")
    hdr["LTM2_2"] = (1.0, "reciprocal of sampling rate in Y")
    _wcs_cards(hdr, header_wcs, spec, sip=False)
    hdr["WCSNAME"] = f"IDC_{spec.idctab}"
    return hdr
