"""
World coordinate systems of simulated chips.

A `ChipWCS` is a TAN-SIP WCS (CRPIX, CRVAL, CD, SIP A/B), optionally with
NPOL/D2IM lookup tables (`hapsim.distortion`), that can be written to a
FITS header and turned into an `astropy.wcs.WCS`.
`chip_wcs` places a chip on the sky for a pointing; `rotate_wcs` moves
an existing WCS by a rigid rotation of the sky (dither or pointing
error), recomputing CRVAL and turning CD by the local position-angle
change so that every WCS of a file moves consistently.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from .detectors import ChipSpec
from .distortion import ChipTables, pixel_area_ratio, wcs_with_tables

__all__ = [
    "ChipWCS",
    "chip_wcs",
    "rotate_wcs",
    "radec_to_unit",
    "unit_to_radec",
    "sky_rotation",
    "tangent_project",
    "tangent_deproject",
    "position_angle_rotation",
]

_SIP_ORDER = 4


def radec_to_unit(ra, dec):
    """Unit vectors (..., 3) for RA/Dec in degrees."""
    ra = np.deg2rad(np.asarray(ra, dtype=float))
    dec = np.deg2rad(np.asarray(dec, dtype=float))
    return np.stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)], axis=-1)


def unit_to_radec(vec):
    """RA/Dec in degrees of (..., 3) vectors."""
    vec = np.asarray(vec, dtype=float)
    ra = np.rad2deg(np.arctan2(vec[..., 1], vec[..., 0])) % 360.0
    dec = np.rad2deg(np.arcsin(np.clip(vec[..., 2] / np.linalg.norm(vec, axis=-1), -1, 1)))
    return ra, dec


def _tangent_basis(ra0, dec0):
    """East, north and radial unit vectors at (ra0, dec0)."""
    ra0, dec0 = np.deg2rad(ra0), np.deg2rad(dec0)
    east = np.array([-np.sin(ra0), np.cos(ra0), 0.0])
    north = np.array([-np.sin(dec0) * np.cos(ra0), -np.sin(dec0) * np.sin(ra0), np.cos(dec0)])
    radial = np.array([np.cos(dec0) * np.cos(ra0), np.cos(dec0) * np.sin(ra0), np.sin(dec0)])
    return east, north, radial


def tangent_project(ra, dec, ra0, dec0):
    """
    Gnomonic projection of sky positions about (ra0, dec0).

    Returns
    -------
    xi, eta : ndarray
        Standard coordinates in degrees (xi towards east).
    """
    east, north, radial = _tangent_basis(ra0, dec0)
    vec = radec_to_unit(ra, dec)
    denom = vec @ radial
    return np.rad2deg(vec @ east / denom), np.rad2deg(vec @ north / denom)


def tangent_deproject(xi, eta, ra0, dec0):
    """Inverse of `tangent_project` (degrees in, RA/Dec degrees out)."""
    east, north, radial = _tangent_basis(ra0, dec0)
    xi = np.deg2rad(np.asarray(xi, dtype=float))[..., None]
    eta = np.deg2rad(np.asarray(eta, dtype=float))[..., None]
    return unit_to_radec(radial + xi * east + eta * north)


def position_angle_rotation(angle_deg):
    """
    Matrix turning tangent-plane vectors (xi east, eta north) by
    `angle_deg` in position angle (north through east).
    """
    a = np.deg2rad(angle_deg)
    return np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])


def sky_rotation(ra0, dec0, *, shift_arcsec=0.0, shift_pa_deg=0.0, rotation_deg=0.0):
    """
    Rigid rotation of the celestial sphere (3x3 matrix acting on unit vectors).

    The sky is first turned by `rotation_deg` (position angle, positive
    north through east) about the axis through (ra0, dec0), then moved so
    that (ra0, dec0) lands `shift_arcsec` away in direction `shift_pa_deg`.

    Returns
    -------
    ndarray, shape (3, 3)
    """
    p0 = radec_to_unit(ra0, dec0)
    # Rotation about p0; a positive position-angle turn is clockwise seen from outside,
    # i.e. a negative right-handed rotation about the outward axis.
    rot1 = _axis_rotation(p0, -np.deg2rad(rotation_deg))
    if shift_arcsec == 0.0:
        return rot1
    east, north, _ = _tangent_basis(ra0, dec0)
    pa = np.deg2rad(shift_pa_deg)
    direction = np.sin(pa) * east + np.cos(pa) * north
    axis = np.cross(p0, direction)
    rot2 = _axis_rotation(axis / np.linalg.norm(axis), np.deg2rad(shift_arcsec / 3600.0))
    return rot2 @ rot1


def _axis_rotation(axis, angle):
    """Right-handed rotation matrix by `angle` (rad) about unit `axis`."""
    x, y, z = axis
    c, s = np.cos(angle), np.sin(angle)
    k = np.array([[0, -z, y], [z, 0, -x], [-y, x, 0]])
    return np.eye(3) * c + s * k + (1 - c) * np.outer(axis, axis)


@dataclass(frozen=True)
class ChipWCS:
    """
    A TAN-SIP world coordinate system of one chip.

    Parameters
    ----------
    shape : tuple of int
        ``(ny, nx)`` of the image.
    crpix : tuple of float
        FITS 1-based reference pixel.
    crval : tuple of float
        RA, Dec (deg) of the reference pixel.
    cd : ndarray
        2x2 CD matrix (deg/pixel).
    sip_a, sip_b : dict
        SIP coefficients ``{(p, q): value}``.
    tables : hapsim.distortion.ChipTables, optional
        NPOL and D2IM lookup tables applied with the SIP (`to_astropy`,
        `pixel_area_ratio`); `header` never writes them (they live in
        extensions, see `hapsim.distortion`).
    """

    shape: tuple[int, int]
    crpix: tuple[float, float]
    crval: tuple[float, float]
    cd: np.ndarray
    sip_a: dict
    sip_b: dict
    tables: ChipTables | None = field(default=None, compare=False, repr=False)

    def header(self, *, key: str = "", sip: bool = True) -> fits.Header:
        """
        FITS header cards of this WCS.

        Parameters
        ----------
        key : str, optional
            Alternate WCS letter ("" for the primary WCS).
        sip : bool, optional
            Write the SIP polynomial (False gives a plain TAN WCS, as in the
            ERR/DQ extensions of real files).
        """
        hdr = fits.Header()
        suffix = "-SIP" if sip else ""
        hdr[f"WCSAXES{key}"] = 2
        hdr[f"CRPIX1{key}"] = float(self.crpix[0])
        hdr[f"CRPIX2{key}"] = float(self.crpix[1])
        hdr[f"CRVAL1{key}"] = float(self.crval[0])
        hdr[f"CRVAL2{key}"] = float(self.crval[1])
        hdr[f"CTYPE1{key}"] = "RA---TAN" + suffix
        hdr[f"CTYPE2{key}"] = "DEC--TAN" + suffix
        hdr[f"CUNIT1{key}"] = "deg"
        hdr[f"CUNIT2{key}"] = "deg"
        for i in range(2):
            for j in range(2):
                hdr[f"CD{i + 1}_{j + 1}{key}"] = float(self.cd[i, j])
        if sip:
            for name, coeffs in (("A", self.sip_a), ("B", self.sip_b)):
                hdr[f"{name}_ORDER{key}"] = _SIP_ORDER
                for (p, q), value in sorted(coeffs.items()):
                    hdr[f"{name}_{p}_{q}{key}"] = float(value)
        return hdr

    def to_astropy(self) -> WCS:
        """The equivalent `astropy.wcs.WCS` (built from `header`, with the lookup tables)."""
        hdr = self.header()
        if self.tables is not None:
            return wcs_with_tables(hdr, self.tables, self.shape)
        hdr["NAXIS"] = 2
        hdr["NAXIS1"] = self.shape[1]
        hdr["NAXIS2"] = self.shape[0]
        return WCS(hdr)

    def orientat(self) -> float:
        """Position angle (deg) of the image y axis at the reference pixel."""
        return float(np.rad2deg(np.arctan2(self.cd[0, 1], self.cd[1, 1])))

    def pixel_area_ratio(self, x, y):
        """
        Area of pixels at 0-based (x, y) relative to the reference pixel.

        Because CD is constant, the ratio is the Jacobian determinant of the
        SIP mapping ``(u, v) -> (u + f, v + g)``; with lookup tables, of
        astropy's whole pixel-to-focal map (`hapsim.distortion.pixel_area_ratio`).
        """
        if self.tables is not None:
            return pixel_area_ratio(self.to_astropy(), x, y)
        u = np.asarray(x, dtype=float) - (self.crpix[0] - 1.0)
        v = np.asarray(y, dtype=float) - (self.crpix[1] - 1.0)
        fu, fv = _poly_gradient(self.sip_a, u, v)
        gu, gv = _poly_gradient(self.sip_b, u, v)
        return (1.0 + fu) * (1.0 + gv) - fv * gu


def _poly_gradient(coeffs, u, v):
    du = np.zeros_like(u)
    dv = np.zeros_like(u)
    for (p, q), c in coeffs.items():
        if p:
            du = du + c * p * u ** (p - 1) * v**q
        if q:
            dv = dv + c * q * u**p * v ** (q - 1)
    return du, dv


def _jacobian_cd(cd_from, ra_from, dec_from, to_sky, ra_to, dec_to, step=50.0):
    """
    CD matrix in the tangent plane at (ra_to, dec_to) of the linear mapping
    `cd_from` about (ra_from, dec_from), after the sky map `to_sky`.
    """
    cols = []
    for k in range(2):
        e = np.zeros(2)
        e[k] = step
        ends = []
        for sign in (1.0, -1.0):
            xi, eta = cd_from @ (sign * e)
            ra, dec = tangent_deproject(xi, eta, ra_from, dec_from)
            ra, dec = to_sky(ra, dec)
            ends.append(np.array(tangent_project(ra, dec, ra_to, dec_to)))
        cols.append((ends[0] - ends[1]) / (2 * step))
    return np.column_stack(cols)


def chip_wcs(chip: ChipSpec, ra_ref: float, dec_ref: float, orientat: float, *,
             subarray: tuple[int, int, int] | None = None,
             tables: ChipTables | None = None) -> ChipWCS:
    """
    WCS of `chip` for a pointing of the aperture reference.

    Parameters
    ----------
    chip : ChipSpec
        Focal-plane description of the chip.
    ra_ref, dec_ref : float
        Sky position (deg) of the aperture reference point.
    orientat : float
        ORIENTAT (deg) of the detector frame at the aperture reference.
    subarray : tuple of int, optional
        ``(x0, y0, size)``: 0-based corner and size of a square subarray;
        CRPIX is moved by the LTV offset and the SIP stays unchanged because
        it is a polynomial of (pixel - CRPIX).
    tables : hapsim.distortion.ChipTables, optional
        Lookup tables of the chip, addressed from this image (their ``ltv``).

    Returns
    -------
    ChipWCS
    """
    turn = position_angle_rotation(orientat)
    xi, eta = turn @ (np.asarray(chip.offset_arcsec) / 3600.0)
    crval = tangent_deproject(xi, eta, ra_ref, dec_ref)
    crval = (float(crval[0]), float(crval[1]))
    cd_ref_plane = turn @ (np.asarray(chip.cd_arcsec) / 3600.0)

    # CD in the chip's own tangent plane: the reference-plane mapping moved
    # to CRVAL; the finite-difference Jacobian takes the convergence of
    # meridians between the two tangent points into account.
    cols = []
    for k in range(2):
        e = np.zeros(2)
        e[k] = 50.0
        ends = []
        for sign in (1.0, -1.0):
            dxi, deta = cd_ref_plane @ (sign * e)
            ra, dec = tangent_deproject(xi + dxi, eta + deta, ra_ref, dec_ref)
            ends.append(np.array(tangent_project(ra, dec, *crval)))
        cols.append((ends[0] - ends[1]) / 100.0)
    cd = np.column_stack(cols)

    shape = chip.shape
    crpix = chip.crpix
    if subarray is not None:
        x0, y0, size = subarray
        shape = (size, size)
        crpix = (crpix[0] - x0, crpix[1] - y0)
    return ChipWCS(shape=shape, crpix=crpix, crval=crval, cd=cd,
                   sip_a=dict(chip.sip_a), sip_b=dict(chip.sip_b), tables=tables)


def rotate_wcs(wcs: ChipWCS, rotation: np.ndarray) -> ChipWCS:
    """
    Move a WCS by a rigid rotation of the sky.

    CRVAL is rotated and CD turned by the local change of position angle
    (computed as a Jacobian), SIP and CRPIX are unchanged.

    Parameters
    ----------
    wcs : ChipWCS
    rotation : ndarray, shape (3, 3)
        E.g. from `sky_rotation`.

    Returns
    -------
    ChipWCS
    """
    def to_sky(ra, dec):
        return unit_to_radec(radec_to_unit(ra, dec) @ rotation.T)

    new_ra, new_dec = to_sky(*wcs.crval)
    new_crval = (float(new_ra), float(new_dec))
    cd = _jacobian_cd(wcs.cd, *wcs.crval, to_sky, *new_crval)
    return replace(wcs, crval=new_crval, cd=cd)
