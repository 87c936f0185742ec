"""HLA-classic-format catalogs of a simulated visit, from truth plus noise.

Writes, per filter, ``<basename><filter>_daophot.txt`` and ``<basename><filter>_sexphot.txt``
in the layouts :mod:`hapcore.quality.hla` reads (whitespace-separated, header row, ``#``
comments, 1-based X/Y as IRAF/SExtractor write them)::

    X-Center Y-Center RA DEC ID MagAp(r1) MagErr(r1) MagAp(r2) MagErr(r2) MSky(r2) Stdev(r2)
    Flux(r2) CI Flags
    NUMBER X_IMAGE Y_IMAGE RA DEC FLUX_APER1 FLUX_APER2 MAG_APER1 MAGERR_APER1 MAG_APER2
    MAGERR_APER2 CI FLAGS

Aperture magnitudes are ``abmag - 2.5 log10(ee(r))`` with the encircled-energy fraction
``ee`` the caller gives per radius (the same aperture/annulus method the measuring pipeline
uses, so both agree), plus noise drawn from ``flux_err = sqrt(flux / exptime + area *
sky_sigma**2)``. Positions get Gaussian noise and an optional shift (``shift_px``), and RA/Dec
follow from the noisy pixel positions through the WCS, so a shift shows in both. A
``mag_offset`` is added to every magnitude. Flags follow the CI/faint rules of the HAP
catalogs (:func:`hapcore.catalogs.flags.ci_flags`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
from astropy.table import Table

__all__ = ["HLA_DAOPHOT_RADII", "daophot_columns", "write_hla_catalogs"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: HLA DAOPHOT aperture radii (arcsec, as written in the column names) per detector.
HLA_DAOPHOT_RADII: dict[str, tuple[str, str]] = {
    "uvis": ("0.05", "0.15"), "wfc": ("0.05", "0.15"), "ir": ("0.15", "0.45"),
    "hrc": ("0.03", "0.125"), "sbc": ("0.03", "0.125"), "pc": ("0.05", "0.15"),
}


def daophot_columns(r1: str, r2: str) -> list[str]:
    """Column names of an HLA DAOPHOT catalog with aperture radii ``r1`` < ``r2`` (arcsec)."""
    return ["X-Center", "Y-Center", "RA", "DEC", "ID", f"MagAp({r1})", f"MagErr({r1})",
            f"MagAp({r2})", f"MagErr({r2})", f"MSky({r2})", f"Stdev({r2})", f"Flux({r2})", "CI",
            "Flags"]


_SEXPHOT_COLUMNS = ["NUMBER", "X_IMAGE", "Y_IMAGE", "RA", "DEC", "FLUX_APER1", "FLUX_APER2",
                    "MAG_APER1", "MAGERR_APER1", "MAG_APER2", "MAGERR_APER2", "CI", "FLAGS"]


def _write(table: Table, path: Path, header_lines: Sequence[str]) -> Path:
    from hapcore.atomic import atomic_output

    with atomic_output(path) as tmp:
        table.meta["comments"] = list(header_lines)
        table.write(tmp, format="ascii.basic", overwrite=True)
    return path


def write_hla_catalogs(truth: Table, *, wcs, filters: Sequence[str], basename: str,
                       output_dir, plate_scale: float, exptime: Mapping[str, float],
                       encircled_energy: Mapping[str, Callable[[float], float]] | Callable,
                       detector: str = "uvis", sky_sigma: Mapping[str, float] | float = 0.0,
                       sky_level: Mapping[str, float] | float = 0.0,
                       position_noise_px: float = 0.02, shift_px=(0.0, 0.0),
                       mag_offset: float = 0.0, select=None, ci_limits=(0.75, 1.0),
                       seed: int = 0) -> list[Path]:
    """Write HLA DAOPHOT and SExtractor catalogs of a visit from its truth table.

    Parameters
    ----------
    truth : astropy.table.Table
        With ``x``, ``y`` (0-based product pixels) and ``abmag_<filter>`` for every filter.
    wcs : astropy.wcs.WCS
        Product WCS (pixel -> RA/Dec).
    filters : sequence of str
    basename : str
        ``hst_<prop>_<obset>_<instr>_<det>_``.
    output_dir : path-like
    plate_scale : float
        arcsec/px.
    exptime : mapping
        ``{filter: total exposure time (s)}`` for the noise model.
    encircled_energy : mapping or callable
        ``ee(radius_px) -> fraction`` (per filter when a mapping) measured as the pipeline does.
    detector : str, optional
        Picks the DAOPHOT aperture radii (:data:`HLA_DAOPHOT_RADII`).
    sky_sigma, sky_level : float or mapping, optional
        Background rms and level (e-/s/px), per filter when a mapping.
    position_noise_px : float, optional
        Gaussian position noise (px) for a bright source; scaled by the magnitude error / 0.01
        (capped at 10x) for fainter ones.
    shift_px : (float, float), optional
        Shift added to every position (px).
    mag_offset : float, optional
        Added to every magnitude.
    select : boolean array, optional
        Truth rows to write (default all).
    ci_limits : (float, float), optional
        CI lower/upper limits of the flag rules.
    seed : int, optional

    Returns
    -------
    list of pathlib.Path
    """
    from hapcore.catalogs.flags import ci_flags

    rng = np.random.default_rng(seed)
    output_dir = Path(output_dir)
    rows = truth if select is None else truth[np.asarray(select, bool)]
    n = len(rows)
    r1_text, r2_text = HLA_DAOPHOT_RADII[detector.lower()]
    radii_px = (float(r1_text) / plate_scale, float(r2_text) / plate_scale)
    written = []

    def per_filter(value, name):
        return value[name] if isinstance(value, Mapping) else value

    for name in filters:
        ee = per_filter(encircled_energy, name) if isinstance(encircled_energy, Mapping) \
            else encircled_energy
        abmag = np.asarray(rows[f"abmag_{name}"], float)
        rate = np.asarray(rows[f"countrate_{name}"], float)
        texp = float(exptime[name])
        sigma = float(per_filter(sky_sigma, name))
        mags, errs, fluxes = [], [], []
        for radius in radii_px:
            frac = float(ee(radius))
            flux = rate * frac
            area = np.pi * radius ** 2
            flux_err = np.sqrt(np.clip(flux, 0, None) / texp + area * sigma ** 2)
            noisy = flux + rng.normal(0.0, 1.0, n) * flux_err
            with np.errstate(invalid="ignore", divide="ignore"):
                mag = abmag - 2.5 * np.log10(frac) - 2.5 * np.log10(noisy / flux) + mag_offset
                err = 1.0857 * flux_err / noisy
            mags.append(mag)
            errs.append(err)
            fluxes.append(noisy)
        ci = mags[0] - mags[1]
        flags = ci_flags(ci, errs[0], errs[1], fluxes[1], fluxes[1] * errs[1] / 1.0857,
                         ci_lower=ci_limits[0], ci_upper=ci_limits[1])
        pos_sigma = position_noise_px * np.clip(np.nan_to_num(errs[1], nan=0.1) / 0.01, 1, 10)
        x = np.asarray(rows["x"], float) + shift_px[0] + rng.normal(0, 1, n) * pos_sigma
        y = np.asarray(rows["y"], float) + shift_px[1] + rng.normal(0, 1, n) * pos_sigma
        ra, dec = wcs.all_pix2world(x, y, 0)
        ids = np.arange(1, n + 1)

        def fill(values):
            values = np.asarray(values, float)
            return np.where(np.isfinite(values), values, -9999.0)

        dao = Table([x + 1.0, y + 1.0, ra, dec, ids, fill(mags[0]), fill(errs[0]), fill(mags[1]),
                     fill(errs[1]), np.full(n, float(per_filter(sky_level, name))),
                     np.full(n, sigma), fill(fluxes[1]), fill(ci), flags],
                    names=daophot_columns(r1_text, r2_text))
        sex = Table([ids, x + 1.0, y + 1.0, ra, dec, fill(fluxes[0]), fill(fluxes[1]),
                     fill(mags[0]), fill(errs[0]), fill(mags[1]), fill(errs[1]), fill(ci), flags],
                    names=_SEXPHOT_COLUMNS)
        for table in (dao, sex):
            for col in table.colnames:
                if table[col].dtype.kind == "f":
                    table[col].info.format = ".8f" if col in ("RA", "DEC") else ".4f"
        header = [f"hapsim HLA-classic-format catalog of {basename}{name} (truth plus noise)",
                  "X/Y are 1-based pixel coordinates; -9999 = missing",
                  f"shift_px={tuple(shift_px)} mag_offset={mag_offset}"]
        written.append(_write(dao, output_dir / f"{basename}{name}_daophot.txt", header))
        written.append(_write(sex, output_dir / f"{basename}{name}_sexphot.txt", header))
        log.info("Wrote HLA-format catalogs of %s%s (%d sources)", basename, name, n)
    return written
