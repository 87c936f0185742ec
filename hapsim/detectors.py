"""
Detector descriptions used by the simulator.

Each supported HST detector is described by a frozen `DetectorSpec`:
chip geometry (sizes, reference pixels, where each chip sits in the
focal plane), the 4th-order SIP distortion of every chip, CCD
electronics (gain, read noise, full well), typical backgrounds, cosmic
ray rates, PSF shape and a small photometric table of common filters.

The geometry and SIP numbers were measured once from real calibrated
headers (WFC3/UVIS ib4606c6q, WFC3/IR ib4606cpq, ACS/WFC j94f05bgq) and
are kept here as our own table of a few numbers; ACS/HRC, ACS/SBC and
WFPC2 have no reference header at hand, so their plate scales, chip
sizes and reference pixels follow the instrument handbooks while their
SIP distortions are plausible inventions of the right size (one to a few
pixels at the corners).

ACS/SBC is a MAMA photon counter: data in COUNTS, no read noise, no
cosmic rays, no saturation bleeding, a dark-limited low background.
WFPC2 is four 800 x 800 CCDs (PC1 at 0.0455"/px, WF2-WF4 at 0.0996"/px),
each turned by about 90 degrees from the previous one around the apex
of the pyramid mirror; its data are in DN (COUNTS) with PHOTFLAM per DN/s,
as in the FLT files drizzlepac makes from C0M/C1M pairs.

Focal-plane convention: ``offset_arcsec`` is the position of a chip's
reference pixel relative to the aperture reference point and
``cd_arcsec`` the chip's CD matrix, both expressed in a tangent-plane
frame turned so that the first chip's y axis points north (ORIENTAT =
0). A pointing is then fully described by the aperture reference
(RA, Dec) and ORIENTAT = PA_V3 + ``orient_offset_deg``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "ChipSpec",
    "FilterPhotometry",
    "DetectorSpec",
    "DETECTORS",
    "get_detector",
    "normalize_detector_name",
]


@dataclass(frozen=True)
class ChipSpec:
    """
    Geometry of one chip (one SCI extension in a full-frame file).

    Parameters
    ----------
    ccdchip : int
        Value of the CCDCHIP keyword (1 for IR/HRC).
    shape : tuple of int
        Array shape ``(ny, nx)``.
    crpix : tuple of float
        Reference pixel (FITS 1-based) of the full chip.
    offset_arcsec : tuple of float
        Reference-pixel position relative to the aperture reference in the
        ORIENTAT = 0 tangent-plane frame, ``(xi, eta)`` with xi east.
    cd_arcsec : tuple of tuple of float
        CD matrix (arcsec/pixel) in the same frame.
    sip_a, sip_b : dict
        SIP coefficients ``{(p, q): value}`` of order 2 to 4.
    subarray_corner : tuple of int
        0-based ``(x0, y0)`` of the default subarray placement on this chip.
    pixel_scale_arcsec : float, optional
        Mean plate scale of this chip, for the PSF and galaxy sizes in pixels
        and the IDCSCALE keyword; None means the detector's ``idcscale``.
        Needed where chips differ (WFPC2) or the IDC scale is nominal (SBC).
    sky_factor : float, optional
        Sky per pixel relative to the filter's ``sky_rate`` (the pixel-area
        ratio for the smaller WFPC2 PC1 pixels).
    """

    ccdchip: int
    shape: tuple[int, int]
    crpix: tuple[float, float]
    offset_arcsec: tuple[float, float]
    cd_arcsec: tuple[tuple[float, float], tuple[float, float]]
    sip_a: dict
    sip_b: dict
    subarray_corner: tuple[int, int] = (0, 0)
    pixel_scale_arcsec: float | None = None
    sky_factor: float = 1.0


@dataclass(frozen=True)
class FilterPhotometry:
    """
    Photometric calibration of one filter (values as in the image headers).

    Parameters
    ----------
    photflam : float
        Inverse sensitivity, erg cm^-2 s^-1 A^-1 per e-/s.
    photplam : float
        Pivot wavelength in Angstrom.
    photbw : float
        RMS bandwidth in Angstrom.
    sky_rate : float
        Typical sky background, e-/s/pixel (ACS/SBC: counts/s/pixel; WFPC2:
        e-/s per WF pixel).
    """

    photflam: float
    photplam: float
    photbw: float
    sky_rate: float

    @property
    def photfnu(self) -> float:
        """Inverse sensitivity in Jy s / e- (PHOTFNU)."""
        return self.photflam * self.photplam**2 / 2.99792458e18 * 1.0e23


@dataclass(frozen=True)
class DetectorSpec:
    """
    Everything the simulator needs to know about one detector.

    Attributes are documented by name; all rates are in electrons per
    second per pixel and all angles in degrees.
    """

    name: str
    instrument: str
    detector: str
    rootname_letter: str
    chips: tuple[ChipSpec, ...]
    idcscale: float
    idctab: str
    orient_offset_deg: float
    aperture: str
    subarray_aperture: str
    file_suffix: str
    bunit: str
    gain: float
    readnoise: tuple[float, float, float, float]
    full_well: float
    dark_rate: float
    cr_pixel_rate: float
    cr_track_length_mean: float
    cr_charge_median: float
    hot_pixel_fraction: float
    bad_columns_per_chip: int
    psf_sigmas_arcsec: tuple[float, ...]
    psf_weights: tuple[float, ...]
    ci_apertures_arcsec: tuple[float, float]
    ci_limits: tuple[float, float]
    filters: dict = field(default_factory=dict)
    rootname_suffix: str = "q"
    poller_detector: str = ""

    @property
    def is_ccd(self) -> bool:
        """True for CCD detectors (read noise, bleeding, frequent CRs)."""
        return self.detector in ("UVIS", "WFC", "HRC", "WFPC2")

    @property
    def is_mama(self) -> bool:
        """True for the ACS/SBC MAMA (photon counting: no read noise, CRs or bleeding)."""
        return self.detector == "SBC"

    @property
    def electrons_per_data_unit(self) -> float:
        """Electrons per unit of the SCI arrays (the gain for WFPC2's DN, else 1)."""
        return self.gain if self.instrument == "WFPC2" else 1.0

    def chip_scale(self, chip: ChipSpec) -> float:
        """Mean plate scale (arcsec/px) of `chip`."""
        return chip.pixel_scale_arcsec or self.idcscale

    @property
    def readnoise_mean(self) -> float:
        """Mean of the four amplifier read noises (electrons)."""
        return sum(self.readnoise) / len(self.readnoise)

    def filter(self, name: str) -> FilterPhotometry:
        """
        Photometry of a filter, raising a one-line ValueError if unknown.

        Parameters
        ----------
        name : str
            Filter name, any case (``"f606w"``).

        Returns
        -------
        FilterPhotometry
        """
        key = name.strip().upper()
        if key not in self.filters:
            known = ", ".join(sorted(self.filters))
            raise ValueError(f"unknown filter {name!r} for {self.name} (known: {known})")
        return self.filters[key]


def _sip(**coeffs) -> dict:
    """Turn ``A_2_0=...`` style keywords into ``{(2, 0): ...}``."""
    return {(int(k.split("_")[1]), int(k.split("_")[2])): v for k, v in coeffs.items()}


def _phot(table: dict) -> dict:
    return {k: FilterPhotometry(*v) for k, v in table.items()}


# Measured from ib4606c6q_flc (SCI,1 = chip 2, SCI,2 = chip 1).
_UVIS_CHIP2 = ChipSpec(
    ccdchip=2, shape=(2051, 4096), crpix=(2048.0, 1026.0),
    offset_arcsec=(-0.1735, -52.0728),
    cd_arcsec=((-0.039765, 0.0), (0.0025116, 0.039839)),
    sip_a=_sip(A_0_2=9.68752e-08, A_0_3=1.83977e-11, A_0_4=-1.57242e-14, A_1_1=-3.00733e-06,
               A_1_2=1.52171e-11, A_1_3=1.06777e-14, A_2_0=2.93081e-06, A_2_1=-1.26171e-11,
               A_2_2=-1.72558e-14, A_3_0=3.05584e-11, A_3_1=6.65930e-15, A_4_0=-7.45824e-15),
    sip_b=_sip(B_0_2=-3.11824e-06, B_0_3=1.49271e-11, B_0_4=1.73120e-14, B_1_1=2.81470e-06,
               B_1_2=-5.07946e-12, B_1_3=8.68079e-15, B_2_0=-5.83193e-08, B_2_1=1.02902e-11,
               B_2_2=1.89739e-14, B_3_0=1.80116e-13, B_3_1=-6.69407e-16, B_4_0=2.81834e-15),
    # UVIS2-C512C-SUB sits at the amplifier-C corner of chip 2.
    subarray_corner=(0, 0),
)
_UVIS_CHIP1 = ChipSpec(
    ccdchip=1, shape=(2051, 4096), crpix=(2048.0, 1026.0),
    offset_arcsec=(-0.0556, 30.3744),
    cd_arcsec=((-0.0395252, 7.35e-05), (0.0027831, 0.0393676)),
    sip_a=_sip(A_0_2=-1.63005e-08, A_0_3=-1.07124e-13, A_0_4=6.33498e-15, A_1_1=-2.89463e-06,
               A_1_2=1.66169e-11, A_1_3=1.27996e-14, A_2_0=2.88098e-06, A_2_1=-5.10767e-12,
               A_2_2=4.00539e-16, A_3_0=2.50273e-11, A_3_1=9.38427e-16, A_4_0=-1.11741e-15),
    sip_b=_sip(B_0_2=-2.88114e-06, B_0_3=4.06600e-11, B_0_4=-2.19132e-14, B_1_1=2.82934e-06,
               B_1_2=-4.05926e-12, B_1_3=-5.16493e-15, B_2_0=-8.52964e-10, B_2_1=9.76389e-13,
               B_2_2=-6.54103e-15, B_3_0=1.09338e-11, B_3_1=-3.22788e-15, B_4_0=-2.32374e-15),
)

# Measured from j94f05bgq_flt (aperture WFC; SCI,1 = chip 2, SCI,2 = chip 1).
_WFC_CHIP2 = ChipSpec(
    ccdchip=2, shape=(2048, 4096), crpix=(2048.0, 1024.0),
    offset_arcsec=(0.0111, -63.5986),
    cd_arcsec=((-0.0497357, 0.0), (0.0034325, 0.0503137)),
    sip_a=_sip(A_0_2=2.16616e-06, A_1_1=-5.19746e-06, A_2_0=8.55128e-06, A_0_3=1.08194e-11,
               A_1_2=-5.23487e-10, A_2_1=-3.97715e-11, A_3_0=-4.73044e-10, A_0_4=1.49356e-14,
               A_1_3=-2.45700e-14, A_2_2=3.46791e-14, A_3_1=1.97102e-15, A_4_0=2.37430e-14),
    sip_b=_sip(B_0_2=-7.21688e-06, B_1_1=6.18443e-06, B_2_0=-1.74649e-06, B_0_3=-4.17547e-10,
               B_1_2=-6.16927e-11, B_2_1=-5.08572e-10, B_3_0=8.56764e-11, B_0_4=-9.95705e-15,
               B_1_3=1.21743e-14, B_2_2=-3.66143e-14, B_3_1=-3.77951e-15, B_4_0=-1.76877e-14),
)
_WFC_CHIP1 = ChipSpec(
    ccdchip=1, shape=(2048, 4096), crpix=(2048.0, 1024.0),
    offset_arcsec=(-0.2477, 40.3866),
    cd_arcsec=((-0.0491073, -0.0004035), (0.0040171, 0.0486349)),
    sip_a=_sip(A_0_2=2.26194e-06, A_1_1=-7.53029e-06, A_2_0=8.51887e-06, A_0_3=6.51051e-11,
               A_1_2=-5.25392e-10, A_2_1=-1.07140e-10, A_3_0=-4.69364e-10, A_0_4=1.35191e-13,
               A_1_3=-1.42693e-14, A_2_2=9.70200e-14, A_3_1=3.80060e-14, A_4_0=1.83628e-14),
    sip_b=_sip(B_0_2=-9.79858e-06, B_1_1=6.42570e-06, B_2_0=-2.96589e-06, B_0_3=-4.14215e-10,
               B_1_2=-3.03543e-11, B_2_1=-4.40349e-10, B_3_0=9.00334e-11, B_0_4=-1.52490e-13,
               B_1_3=2.75911e-14, B_2_2=-1.04036e-13, B_3_1=-3.83639e-14, B_4_0=-1.69139e-14),
    # WFC1-512 style subarray near amplifier A (top-left of chip 1).
    subarray_corner=(0, 1536),
)

# Measured from ib4606cpq_flt.
_IR_CHIP = ChipSpec(
    ccdchip=1, shape=(1014, 1014), crpix=(507.0, 507.0),
    offset_arcsec=(6.5254, -6.3949),
    cd_arcsec=((-0.1353971, 0.0), (0.0004435, 0.1209414)),
    sip_a=_sip(A_0_2=5.36544e-08, A_0_3=3.57608e-11, A_0_4=-2.02987e-13, A_1_1=2.44568e-05,
               A_1_2=5.99977e-11, A_1_3=6.20422e-13, A_2_0=-1.97679e-07, A_2_1=1.12426e-10,
               A_2_2=-2.09998e-14, A_3_0=-1.45474e-10, A_3_1=5.61138e-13, A_4_0=-3.35031e-13),
    sip_b=_sip(B_0_2=3.00208e-05, B_0_3=-1.67735e-10, B_0_4=7.74735e-13, B_1_1=-1.74697e-07,
               B_1_2=4.26550e-11, B_1_3=-9.06884e-14, B_2_0=6.98027e-06, B_2_1=-2.63387e-10,
               B_2_2=-6.96301e-14, B_3_0=5.31541e-11, B_3_1=1.00135e-13, B_4_0=-6.13983e-13),
    subarray_corner=(251, 251),
)

# ACS/HRC: real plate scale (0.0284" x 0.0248") and skew; SIP of plausible size.
_HRC_CHIP = ChipSpec(
    ccdchip=1, shape=(1024, 1024), crpix=(512.0, 512.0),
    offset_arcsec=(0.0, 0.0),
    cd_arcsec=((-0.028376, 0.0), (0.0031502, 0.024855)),
    sip_a=_sip(A_0_2=3.1e-06, A_1_1=-1.05e-05, A_2_0=1.21e-05, A_0_3=2.0e-10, A_1_2=-9.0e-10,
               A_2_1=-1.5e-10, A_3_0=-8.0e-10, A_0_4=5.0e-14, A_1_3=-4.0e-14, A_2_2=9.0e-14,
               A_3_1=3.0e-14, A_4_0=2.0e-14),
    sip_b=_sip(B_0_2=-1.37e-05, B_1_1=9.1e-06, B_2_0=-3.3e-06, B_0_3=-7.0e-10, B_1_2=-1.0e-10,
               B_2_1=-8.0e-10, B_3_0=1.5e-10, B_0_4=-4.0e-14, B_1_3=3.0e-14, B_2_2=-8.0e-14,
               B_3_1=-2.0e-14, B_4_0=-3.0e-14),
    subarray_corner=(256, 256),
)

# ACS/SBC: real plate scale (0.0338" x 0.0301", the MAMA's pixels are not
# square) with a small skew; SIP of plausible size (about 2 px at the corners).
_SBC_CHIP = ChipSpec(
    ccdchip=1, shape=(1024, 1024), crpix=(512.0, 512.0),
    offset_arcsec=(0.0, 0.0),
    cd_arcsec=((-0.033800, 0.0), (0.0012, 0.030100)),
    sip_a=_sip(A_0_2=2.4e-06, A_1_1=-8.2e-06, A_2_0=9.6e-06, A_0_3=1.5e-10, A_1_2=-7.0e-10,
               A_2_1=-1.2e-10, A_3_0=-6.0e-10, A_0_4=4.0e-14, A_1_3=-3.0e-14, A_2_2=7.0e-14,
               A_3_1=2.0e-14, A_4_0=1.5e-14),
    sip_b=_sip(B_0_2=-1.05e-05, B_1_1=7.4e-06, B_2_0=-2.6e-06, B_0_3=-5.5e-10, B_1_2=-1.0e-10,
               B_2_1=-6.5e-10, B_3_0=1.2e-10, B_0_4=-3.0e-14, B_1_3=2.0e-14, B_2_2=-6.0e-14,
               B_3_1=-1.5e-14, B_4_0=-2.0e-14),
    subarray_corner=(256, 256),
    pixel_scale_arcsec=0.0319,
)


def _wfpc2_chips() -> tuple[ChipSpec, ...]:
    """
    PC1, WF2, WF3 and WF4 placed around the apex of the pyramid mirror.

    Each chip's readout origin lies at the apex, 44 pixels in from its
    (1, 1) corner (the vignetted strip along the chip edges), and each
    chip is turned by about 90 degrees from the previous one, so WF3 faces
    PC1 across the apex and the field has WFPC2's stair-step shape. The
    reference pixels and plate scales are those of the instrument
    handbook; offsets are relative to the WFALL aperture reference (WF3
    pixel 133, 149). The cubic SIP (about 1.5 px at the corners) is a
    plausible invention of the size of WFPC2's distortion.
    """
    import numpy as np

    apex = np.array([44.0, 44.0])
    # (DETECTOR, CRPIX, plate scale, turn of the chip from PC1 in position angle)
    layout = ((1, (420.0, 424.5), 0.045542, 0.0),
              (2, (423.5, 414.0), 0.099611, 89.88),
              (3, (436.0, 424.5), 0.099582, 180.09),
              (4, (423.0, 421.0), 0.099641, 270.46))
    cds = {}
    for det, _, scale, turn in layout:
        a = np.deg2rad(turn)
        rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        cds[det] = rot @ np.array([[-scale, 0.0], [0.0, scale]])
    wfall = cds[3] @ (np.array([133.0, 149.0]) - 1.0 - apex)
    chips = []
    for det, crpix, scale, _ in layout:
        offset = cds[det] @ (np.asarray(crpix) - 1.0 - apex) - wfall
        # the same optics relay every chip; PC1's pixels sample it 2.2x finer
        k = 1.0 if det > 1 else 0.9
        chips.append(ChipSpec(
            ccdchip=det, shape=(800, 800), crpix=crpix,
            offset_arcsec=(round(float(offset[0]), 4), round(float(offset[1]), 4)),
            cd_arcsec=tuple(tuple(round(float(v), 7) for v in row) for row in cds[det]),
            sip_a=_sip(A_2_0=4.0e-07 * k, A_1_1=-2.0e-07 * k, A_0_2=1.5e-07 * k,
                       A_3_0=-1.1e-08 * k, A_1_2=-1.1e-08 * k, A_2_1=4.0e-10 * k),
            sip_b=_sip(B_0_2=3.5e-07 * k, B_1_1=2.5e-07 * k, B_2_0=-1.0e-07 * k,
                       B_0_3=-1.1e-08 * k, B_2_1=-1.1e-08 * k, B_1_2=-3.0e-10 * k),
            pixel_scale_arcsec=scale,
            sky_factor=(scale / 0.0996) ** 2,
        ))
    return tuple(chips)


_WFPC2_CHIPS = _wfpc2_chips()

# PHOTFLAM, PHOTPLAM, PHOTBW, sky (e-/s/pixel, average zodiacal + earthshine).
_UVIS_FILTERS = _phot({
    "F275W": (3.286e-18, 2709.7, 164.6, 0.0015),
    "F336W": (1.307e-18, 3354.5, 158.4, 0.0030),
    "F438W": (6.766e-19, 4326.2, 188.2, 0.012),
    "F475W": (2.509e-19, 4773.1, 420.7, 0.055),
    "F555W": (1.838e-19, 5307.9, 517.1, 0.065),
    "F606W": (1.160e-19, 5887.4, 656.6, 0.095),
    "F814W": (1.499e-19, 8039.0, 666.8, 0.085),
    "F850LP": (3.904e-19, 9176.1, 365.4, 0.030),
})
_IR_FILTERS = _phot({
    "F105W": (3.038e-20, 10551.0, 865.0, 0.75),
    "F110W": (1.532e-20, 11534.5, 1428.5, 1.20),
    "F125W": (2.250e-20, 12486.1, 866.6, 0.80),
    "F140W": (1.474e-20, 13923.2, 1132.4, 0.95),
    "F160W": (1.924e-20, 15369.2, 826.3, 0.70),
})
_WFC_FILTERS = _phot({
    "F435W": (3.147e-19, 4329.9, 293.5, 0.045),
    "F475W": (1.827e-19, 4746.9, 419.9, 0.095),
    "F555W": (1.960e-19, 5361.0, 360.0, 0.095),
    "F606W": (7.906e-20, 5917.7, 672.3, 0.170),
    "F625W": (1.194e-19, 6311.4, 415.5, 0.130),
    "F775W": (1.007e-19, 7693.0, 434.6, 0.120),
    "F814W": (7.077e-20, 8045.5, 653.1, 0.115),
    "F850LP": (1.514e-19, 9031.5, 526.4, 0.060),
})
_HRC_FILTERS = _phot({
    "F250W": (2.418e-17, 2716.1, 239.4, 0.0004),
    "F330W": (2.200e-18, 3362.7, 173.2, 0.0008),
    "F435W": (5.612e-19, 4311.0, 309.7, 0.004),
    "F555W": (3.076e-19, 5356.0, 358.5, 0.009),
    "F606W": (1.893e-19, 5888.0, 660.5, 0.016),
    "F814W": (2.415e-19, 8115.3, 686.2, 0.012),
})

# ACS/SBC (counts/s): the sky is the geocoronal Lyman-alpha and OI 1304 for
# F115LP/F122M/F125LP and almost nothing longward, below the MAMA dark.
_SBC_FILTERS = _phot({
    "F115LP": (2.262e-17, 1406.0, 264.7, 1.5e-03),
    "F122M": (9.126e-17, 1274.1, 86.1, 8.0e-04),
    "F125LP": (2.687e-17, 1438.2, 241.2, 6.0e-05),
    "F140LP": (3.595e-17, 1528.0, 198.1, 2.0e-05),
    "F150LP": (5.321e-17, 1612.2, 159.5, 1.5e-05),
    "F165LP": (1.652e-16, 1762.8, 118.3, 1.0e-05),
})
# WFPC2: PHOTFLAM per DN/s at ATODGAIN 7 (as in WF3 headers); sky in e-/s per WF pixel.
_WFPC2_FILTERS = _phot({
    "F300W": (6.137e-17, 2987.0, 303.4, 0.002),
    "F336W": (5.654e-17, 3344.0, 204.4, 0.002),
    "F439W": (2.889e-17, 4312.0, 202.3, 0.008),
    "F450W": (8.946e-18, 4557.0, 404.0, 0.025),
    "F555W": (3.483e-18, 5443.0, 522.3, 0.060),
    "F606W": (1.900e-18, 5999.0, 636.6, 0.100),
    "F675W": (2.899e-18, 6718.0, 368.5, 0.070),
    "F702W": (1.872e-18, 6918.0, 587.5, 0.090),
    "F814W": (2.508e-18, 7996.0, 646.6, 0.080),
})

DETECTORS: dict[str, DetectorSpec] = {
    "wfc3/uvis": DetectorSpec(
        name="wfc3/uvis", instrument="WFC3", detector="UVIS", rootname_letter="i",
        chips=(_UVIS_CHIP2, _UVIS_CHIP1), idcscale=0.03962, idctab="2731450pi",
        orient_offset_deg=44.7291, aperture="UVIS", subarray_aperture="UVIS2-C512C-SUB",
        file_suffix="flc", bunit="ELECTRONS", gain=1.5,
        readnoise=(3.03, 3.13, 3.08, 3.18), full_well=63000.0, dark_rate=0.0025,
        cr_pixel_rate=3.2e-5, cr_track_length_mean=2.6, cr_charge_median=700.0,
        hot_pixel_fraction=0.002, bad_columns_per_chip=3,
        # pixel-integrated Gaussian mixture: CI ~0.79 on the FLC and ~0.9 after a
        # native-scale drizzle (limits 0.75-1.0); FWHM 0.073"
        psf_sigmas_arcsec=(0.0290, 0.076, 0.24), psf_weights=(0.47, 0.36, 0.17),
        ci_apertures_arcsec=(0.05, 0.15), ci_limits=(0.75, 1.0),
        filters=_UVIS_FILTERS,
    ),
    "wfc3/ir": DetectorSpec(
        name="wfc3/ir", instrument="WFC3", detector="IR", rootname_letter="i",
        chips=(_IR_CHIP,), idcscale=0.12825, idctab="w3m18525i",
        orient_offset_deg=44.6408, aperture="IR", subarray_aperture="IRSUB512",
        file_suffix="flt", bunit="ELECTRONS/S", gain=2.5,
        readnoise=(20.2, 19.8, 19.9, 20.1), full_well=78000.0, dark_rate=0.045,
        cr_pixel_rate=1.0e-6, cr_track_length_mean=1.5, cr_charge_median=150.0,
        hot_pixel_fraction=0.001, bad_columns_per_chip=0,
        psf_sigmas_arcsec=(0.055, 0.12, 0.40), psf_weights=(0.67, 0.23, 0.10),
        ci_apertures_arcsec=(0.15, 0.45), ci_limits=(0.25, 0.55),
        filters=_IR_FILTERS,
    ),
    "acs/wfc": DetectorSpec(
        name="acs/wfc", instrument="ACS", detector="WFC", rootname_letter="j",
        chips=(_WFC_CHIP2, _WFC_CHIP1), idcscale=0.05, idctab="4bb1536cj",
        orient_offset_deg=177.6639, aperture="WFC", subarray_aperture="WFC1-512",
        file_suffix="flc", bunit="ELECTRONS", gain=2.0,
        readnoise=(4.35, 3.75, 4.05, 4.57), full_well=84700.0, dark_rate=0.006,
        cr_pixel_rate=3.5e-5, cr_track_length_mean=2.6, cr_charge_median=900.0,
        hot_pixel_fraction=0.004, bad_columns_per_chip=3,
        psf_sigmas_arcsec=(0.0300, 0.082, 0.26), psf_weights=(0.44, 0.37, 0.19),
        ci_apertures_arcsec=(0.05, 0.15), ci_limits=(0.87, 1.25),
        filters=_WFC_FILTERS,
    ),
    "acs/hrc": DetectorSpec(
        name="acs/hrc", instrument="ACS", detector="HRC", rootname_letter="j",
        chips=(_HRC_CHIP,), idcscale=0.025, idctab="p7d1548qj",
        orient_offset_deg=-84.57, aperture="HRC", subarray_aperture="HRC-512",
        file_suffix="flt", bunit="ELECTRONS", gain=2.0,
        readnoise=(4.72, 4.72, 4.72, 4.72), full_well=155000.0, dark_rate=0.0058,
        cr_pixel_rate=2.0e-5, cr_track_length_mean=2.2, cr_charge_median=1000.0,
        hot_pixel_fraction=0.002, bad_columns_per_chip=1,
        psf_sigmas_arcsec=(0.0205, 0.055, 0.20), psf_weights=(0.46, 0.34, 0.20),
        ci_apertures_arcsec=(0.03, 0.125), ci_limits=(0.9, 1.6),
        filters=_HRC_FILTERS,
    ),
    "acs/sbc": DetectorSpec(
        name="acs/sbc", instrument="ACS", detector="SBC", rootname_letter="j",
        chips=(_SBC_CHIP,), idcscale=0.025, idctab="p7d1548qj",
        orient_offset_deg=-84.36, aperture="SBC", subarray_aperture="SBC",
        file_suffix="flt", bunit="COUNTS", gain=1.0,
        # a photon counter: no read noise, no full well (bright-object limits
        # protect it), no cosmic rays; the dark rises with the tube temperature
        readnoise=(0.0, 0.0, 0.0, 0.0), full_well=float("inf"), dark_rate=2.0e-05,
        cr_pixel_rate=0.0, cr_track_length_mean=1.0, cr_charge_median=0.0,
        hot_pixel_fraction=2.0e-04, bad_columns_per_chip=0,
        # CI (0.07"/0.125") about 0.3 on a 0.025" drizzle; limits 0.15-0.45
        psf_sigmas_arcsec=(0.024, 0.060, 0.22), psf_weights=(0.52, 0.33, 0.15),
        ci_apertures_arcsec=(0.07, 0.125), ci_limits=(0.15, 0.45),
        filters=_SBC_FILTERS,
    ),
    "wfpc2": DetectorSpec(
        name="wfpc2", instrument="WFPC2", detector="WFPC2", rootname_letter="u",
        chips=_WFPC2_CHIPS, idcscale=0.0996, idctab="uab1537bu",
        orient_offset_deg=-135.44, aperture="WFALL", subarray_aperture="PC1",
        file_suffix="flt", bunit="COUNTS", gain=7.0,
        readnoise=(5.24, 5.51, 5.22, 5.19), full_well=53000.0, dark_rate=0.005,
        cr_pixel_rate=2.5e-05, cr_track_length_mean=2.2, cr_charge_median=600.0,
        hot_pixel_fraction=0.002, bad_columns_per_chip=1,
        # FWHM about 0.1" (the WF pixels undersample it) and broad wings: as for the
        # other detectors the CI (0.15"/0.45") on the 0.0455" drizzle, about 0.65, lies
        # inside the CI table's limits the pipeline applies (0.51-0.89; simulation
        # notes #3), although that table was measured with 0.10"/0.30" apertures
        psf_sigmas_arcsec=(0.040, 0.15, 0.35), psf_weights=(0.30, 0.40, 0.30),
        ci_apertures_arcsec=(0.15, 0.45), ci_limits=(0.25, 0.55),
        filters=_WFPC2_FILTERS, rootname_suffix="t", poller_detector="PC",
    ),
}

_ALIASES = {
    "uvis": "wfc3/uvis", "wfc3_uvis": "wfc3/uvis", "wfc3-uvis": "wfc3/uvis",
    "ir": "wfc3/ir", "wfc3_ir": "wfc3/ir", "wfc3-ir": "wfc3/ir",
    "wfc": "acs/wfc", "acs_wfc": "acs/wfc", "acs-wfc": "acs/wfc",
    "hrc": "acs/hrc", "acs_hrc": "acs/hrc", "acs-hrc": "acs/hrc",
    "sbc": "acs/sbc", "acs_sbc": "acs/sbc", "acs-sbc": "acs/sbc",
    "wfpc2/pc": "wfpc2", "wfpc2_pc": "wfpc2", "wfpc2-pc": "wfpc2", "pc": "wfpc2",
}


def normalize_detector_name(name: str) -> str:
    """
    Canonical ``instrument/detector`` name, raising ValueError if unknown.

    Parameters
    ----------
    name : str
        E.g. ``"wfc3/uvis"``, ``"WFC3_UVIS"``, ``"uvis"``.

    Returns
    -------
    str
    """
    key = str(name).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in DETECTORS:
        known = ", ".join(DETECTORS)
        raise ValueError(f"unknown detector {name!r} (known: {known})")
    return key


def get_detector(name: str) -> DetectorSpec:
    """
    Look up a detector description by (loosely spelled) name.

    Parameters
    ----------
    name : str
        Detector name, see `normalize_detector_name`.

    Returns
    -------
    DetectorSpec
    """
    return DETECTORS[normalize_detector_name(name)]
