"""
Named visit presets: harder scenes for tests and benchmarks.

A preset is a set of `hapsim.simulate_visit` keywords. Some of them are
derived from the detector and the exposures when the preset is resolved
(the detection limit for ``deep``, the chip area for ``crowded``, the
saturation magnitude for ``saturated``), so they stay right when a
preset is combined with another one or given other exposure times.

========================  ===================================================================
``deep``                  UVIS F606W+F814W, 4 x 600 s (box4); stars and galaxies whose counts
                          rise steeply (dN/dm ~ 10**(0.3 m)) to 3 mag below the S/N = 5
                          limit of the stacked exposures in a 0.1" radius aperture, so
                          most sources are undetectable and make confusion noise
``saturated``             UVIS F606W+F814W, 3 x 500 s (line3); 10 extra stars per arcmin^2
                          0.5-6 mag brighter than saturation, with bleed columns, and the
                          optical PSF (diffraction spikes) where `simulate_visit` has it
``crowded``               UVIS F606W+F814W, 3 x 500 s; 6,000 stars per chip (a density per
                          arcmin^2 from the chip area), magnitudes 18-26
``cr2x``                  UVIS F606W+F814W, 3 x 500 s; cosmic-ray fraction twice the
                          detector model's
``two-exposure``          UVIS F606W+F814W, 2 x 500 s each (line2): the hard case for
                          cosmic-ray rejection
``ir-only``               WFC3/IR F105W+F125W+F160W, 3 x 350 s each (line3)
``proper-motion``         UVIS F606W+F814W, 3 x 500 s in March 2026; truth positions at
                          2016.0 with halo-like proper motions for 30% of the stars and 1%
                          fast movers (30-100 mas/yr); see `hapsim.epochs.true_positions`
========================  ===================================================================

Presets compose: ``"deep+cr2x"`` (or ``["deep", "cr2x"]``). The first
preset that names a visit layout (detector, filters, exposure times,
dither) fixes it; the other keywords are merged in order, later presets
winning, ``scene_options`` merged key by key; then each preset's derived
keywords are computed for that layout, in the same order. Keyword
overrides given to `simulate_preset` win over everything, including
derived values.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from .detectors import get_detector, normalize_detector_name
from .psf import psf_for_detector
from .scene import countrate_to_abmag
from .visit import parse_filters, simulate_visit

__all__ = ["Preset", "PRESETS", "detection_limit", "saturation_magnitude", "chip_area_arcmin2",
           "resolve_preset", "simulate_preset"]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Keywords a preset may ask for that `simulate_visit` gained only recently;
#: dropped (and recorded) when the installed `simulate_visit` lacks them.
OPTIONAL_KEYWORDS = ("psf", "distortion_tables")

_LAYOUT_KEYS = ("detector", "filters", "exptime", "dither")
#: Colour ranges (magnitudes per octave) of `hapsim.scene.make_scene`.
_COLOURS = (-0.4, 1.2)
_REFERENCE_WAVELENGTH = 6000.0


@dataclass(frozen=True)
class Preset:
    """
    One named preset.

    Parameters
    ----------
    name : str
    description : str
        One line, shown by ``--help``.
    layout : dict
        Visit layout keywords (detector, filters, exptime, dither).
    params : dict
        Other `simulate_visit` keywords.
    derive : callable, optional
        ``derive(keywords) -> (updates, notes)``: keywords computed from the
        resolved ones (e.g. magnitudes from the detection limit) and the
        numbers they came from, recorded in the truth.
    """

    name: str
    description: str
    layout: dict
    params: dict
    derive: Callable[[dict], tuple[dict, dict]] | None = None


def _read_noise(spec):
    # as the simulator does: IR up-the-ramp fits beat the single-read noise
    return spec.readnoise_mean if spec.is_ccd else spec.readnoise_mean / 1.5


def _exptime_of(exptime, filt):
    if isinstance(exptime, dict):
        lower = {str(k).lower(): v for k, v in exptime.items()}
        return float(lower[filt.lower()])
    return float(exptime)


def detection_limit(detector, filt, exptime, n_exposures=1, *, snr=5.0, radius_arcsec=None):
    """
    AB magnitude of a point source at a given S/N in a small aperture.

    The noise is the source's Poisson noise plus sky, dark and read noise
    of the aperture pixels summed over `n_exposures`; the signal is the
    PSF's encircled energy in the aperture.

    Parameters
    ----------
    detector : str
    filt : str
    exptime : float
        Seconds per exposure.
    n_exposures : int, optional
        Exposures stacked.
    snr : float, optional
    radius_arcsec : float, optional
        Aperture radius; default 0.1", or 1.5 pixels where that is larger
        (WFC3/IR, whose 0.1" is under one pixel).

    Returns
    -------
    float
        AB magnitude in the filter.
    """
    spec = get_detector(normalize_detector_name(detector))
    phot = spec.filter(filt)
    scale = spec.idcscale
    radius = (radius_arcsec or max(0.1, 1.5 * scale)) / scale
    # the renderer's star stamp (half size 15) holds each star's whole flux
    half = max(15, int(math.ceil(radius)) + 2)
    kernel = psf_for_detector(spec).kernel(half)
    offsets = np.arange(-half, half + 1)
    inside = np.hypot(offsets[None, :], offsets[:, None]) <= radius
    ee, npix = float(kernel[inside].sum()), int(inside.sum())
    total_t = exptime * n_exposures
    background = npix * ((phot.sky_rate + spec.dark_rate) * total_t
                         + n_exposures * _read_noise(spec) ** 2)
    # snr = S / sqrt(S + B) with S the electrons in the aperture
    signal = 0.5 * snr**2 * (1.0 + math.sqrt(1.0 + 4.0 * background / snr**2))
    rate = signal / ee / total_t / spec.electrons_per_data_unit
    return float(countrate_to_abmag(rate, phot))


def saturation_magnitude(detector, filt, exptime):
    """
    AB magnitude of a star centred on a pixel whose peak reaches full well.

    Parameters
    ----------
    detector, filt : str
    exptime : float
        Seconds.

    Returns
    -------
    float
    """
    spec = get_detector(normalize_detector_name(detector))
    phot = spec.filter(filt)
    peak = float(psf_for_detector(spec).kernel(15).max())
    room = spec.full_well - (phot.sky_rate + spec.dark_rate) * exptime
    rate = room / peak / exptime / spec.electrons_per_data_unit
    return float(countrate_to_abmag(rate, phot))


def chip_area_arcmin2(detector):
    """Sky area of the smallest full chip of `detector` (arcmin^2)."""
    spec = get_detector(normalize_detector_name(detector))
    return min(abs(float(np.linalg.det(np.asarray(c.cd_arcsec)))) * c.shape[0] * c.shape[1]
               / 3600.0 for c in spec.chips)


def _colour_terms(spec, filters):
    """Largest (faint side) and smallest colour shift ref - filter mag per filter."""
    out = {}
    for f in filters:
        octaves = math.log2(spec.filter(f).photplam / _REFERENCE_WAVELENGTH)
        shifts = [c * octaves for c in _COLOURS]
        out[f] = (max(shifts), min(shifts))
    return out


def _derive_deep(kw):
    spec = get_detector(normalize_detector_name(kw["detector"]))
    filters = parse_filters(kw["filters"])
    shifts = _colour_terms(spec, filters)
    limits = {f: detection_limit(spec.name, f, _exptime_of(kw["exptime"], f), n)
              for f, n in filters.items()}
    # abmag_ref reaching 3 mag below the limit in every filter for every colour
    faint = max(limits[f] + 3.0 + shifts[f][0] for f in filters)
    faint = math.ceil(faint * 10.0) / 10.0
    updates = {"star_mag_range": (18.0, faint),
               "scene_options": {"star_slope": 0.3, "galaxy_mag_range": (20.0, faint),
                                 "galaxy_slope": 0.32}}
    notes = {"detection_limit_abmag": {f.lower(): round(v, 3) for f, v in limits.items()},
             "detection_limit_definition": "S/N 5 in a 0.1\" radius aperture (1.5 px if "
                                           "larger), all exposures of the filter stacked",
             "faint_end_abmag_ref": faint}
    return updates, notes


def _derive_crowded(kw, per_chip=6000.0):
    area = chip_area_arcmin2(kw["detector"])
    density = math.ceil(per_chip / area / 10.0) * 10.0
    notes = {"chip_area_arcmin2": round(area, 4), "stars_per_chip_target": per_chip,
             "star_density_per_arcmin2": density,
             "expected_stars_per_chip": round(density * area, 1)}
    return {"star_density": density}, notes


def _derive_saturated(kw):
    spec = get_detector(normalize_detector_name(kw["detector"]))
    filters = parse_filters(kw["filters"])
    shifts = _colour_terms(spec, filters)
    sat = {f: saturation_magnitude(spec.name, f, _exptime_of(kw["exptime"], f)) for f in filters}
    # the faintest bright star still saturates in every filter, whatever its colour
    faint = math.floor((min(sat[f] + shifts[f][1] for f in filters) - 0.5) * 10.0) / 10.0
    mags = (round(faint - 5.5, 1), faint)
    notes = {"saturation_abmag": {f.lower(): round(v, 3) for f, v in sat.items()},
             "bright_mag_range": list(mags)}
    return {"scene_options": {"bright_mag_range": mags}}, notes


_UVIS_2X3 = {"detector": "wfc3/uvis", "filters": {"f606w": 3, "f814w": 3}, "exptime": 500.0,
             "dither": "line3"}

#: Every preset draws its stars with the optical PSF (rings, spikes, halo): the harder scenes
#: are meant to be judged on realistic stars (simulate_visit's own default stays "gaussian").
PRESETS: dict[str, Preset] = {p.name: p for p in (
    Preset("deep", "UVIS F606W+F814W 4x600 s, star and galaxy counts rising to 3 mag below "
                   "the detection limit (confusion noise)",
           {"detector": "wfc3/uvis", "filters": {"f606w": 4, "f814w": 4}, "exptime": 600.0,
            "dither": "box4"},
           {"star_density": 600.0, "galaxy_density": 800.0, "psf": "optical"}, _derive_deep),
    Preset("saturated", "UVIS 2 filters 3x500 s, 10 saturating stars per arcmin^2 with bleed "
                        "columns, optical PSF (spikes) when available",
           dict(_UVIS_2X3), {"psf": "optical", "scene_options": {"bright_star_density": 10.0}},
           _derive_saturated),
    Preset("crowded", "UVIS 2 filters 3x500 s, 6000 stars per chip (mag 18-26)",
           dict(_UVIS_2X3), {"star_mag_range": (18.0, 26.0), "galaxy_density": 20.0, "psf": "optical",
                             "scene_options": {"star_slope": 0.25}}, _derive_crowded),
    Preset("cr2x", "UVIS 2 filters 3x500 s, twice the detector's cosmic-ray rate",
           dict(_UVIS_2X3), {"cr_rate_scale": 2.0, "psf": "optical"}),
    Preset("two-exposure", "UVIS F606W+F814W, 2x500 s each (hard cosmic-ray rejection)",
           {"detector": "wfc3/uvis", "filters": {"f606w": 2, "f814w": 2}, "exptime": 500.0,
            "dither": "line2"}, {"psf": "optical"}),
    Preset("ir-only", "WFC3/IR F105W+F125W+F160W, 3x350 s each",
           {"detector": "wfc3/ir", "filters": {"f105w": 3, "f125w": 3, "f160w": 3},
            "exptime": 350.0, "dither": "line3"}, {"psf": "optical"}),
    Preset("proper-motion", "UVIS 2 filters 3x500 s in 2026, truth at 2016.0, halo stars and "
                            "fast movers up to 100 mas/yr",
           dict(_UVIS_2X3),
           {"mjd_start": 61100.25, "reference_epoch": 2016.0, "star_density": 300.0,
            "psf": "optical",
            "scene_options": {"pm_halo_fraction": 0.3, "pm_halo_mean_mas": (2.0, -6.0),
                              "pm_halo_sigma_mas": 15.0, "pm_fast_fraction": 0.01,
                              "pm_fast_range_mas": (30.0, 100.0), "pm_fast_mag_limit": 22.0}}),
)}


def _split_names(name):
    names = name.split("+") if isinstance(name, str) else list(name)
    names = [str(n).strip().lower() for n in names if str(n).strip()]
    if not names:
        raise ValueError("no preset named")
    unknown = [n for n in names if n not in PRESETS]
    if unknown:
        raise ValueError(f"unknown preset {unknown[0]!r} (known: {', '.join(PRESETS)})")
    return names


def _merge(base, extra, *, keep=None):
    """`base` updated by `extra`; scene_options merged per key; keys in `keep` untouched."""
    keep = keep or {}
    out = dict(base)
    for key, value in extra.items():
        if key == "scene_options":
            options = dict(out.get("scene_options") or {})
            kept = keep.get("scene_options") or {}
            options.update({k: v for k, v in (value or {}).items() if k not in kept})
            out["scene_options"] = options
        elif key not in keep:
            out[key] = value
    return out


def resolve_preset(name, *, seed=1, subarray=None, **overrides):
    """
    The `simulate_visit` keywords of a preset (or combination).

    Parameters
    ----------
    name : str or sequence of str
        A `PRESETS` name, several joined by ``+``, or a list of names.
    seed : int, optional
    subarray : int, optional
    **overrides
        Any `simulate_visit` keyword; wins over the preset.

    Returns
    -------
    dict
        ``name``, ``components``, ``parameters`` (the keywords),
        ``derived`` (numbers behind derived keywords), ``overrides``
        and ``not_supported`` (optional keywords this `simulate_visit`
        lacks, dropped).
    """
    names = _split_names(name)
    layout = {}
    for n in names:
        for key, value in PRESETS[n].layout.items():
            layout.setdefault(key, value)
    keywords = dict(layout)
    for n in names:
        keywords = _merge(keywords, PRESETS[n].params)
    keywords = _merge(keywords, overrides)
    derived = {}
    for n in names:
        if PRESETS[n].derive is not None:
            updates, notes = PRESETS[n].derive(keywords)
            keywords = _merge(keywords, updates, keep=overrides)
            derived[n] = notes
    keywords["seed"] = int(seed)
    keywords["subarray"] = subarray
    accepted = inspect.signature(simulate_visit).parameters
    not_supported = {k: keywords.pop(k) for k in list(keywords)
                     if k in OPTIONAL_KEYWORDS and k not in accepted}
    unknown = sorted(k for k in keywords if k not in accepted)
    if unknown:
        raise ValueError(f"unknown simulate_visit keyword(s): {', '.join(unknown)}")
    return {"name": "+".join(names), "components": names, "parameters": keywords,
            "derived": derived, "overrides": dict(overrides), "not_supported": not_supported}


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def simulate_preset(out_dir, name, *, seed=1, subarray=None, **overrides):
    """
    Simulate a visit from a preset and record the preset in its truth.

    Parameters
    ----------
    out_dir : str or Path
    name : str or sequence of str
        See `resolve_preset`.
    seed : int, optional
    subarray : int, optional
        Square single-chip subarrays (for fast tests).
    **overrides
        Any `simulate_visit` keyword (e.g. ``overwrite=True``,
        ``exptime=300``, ``scene_options={"bright_star_density": 50}``).

    Returns
    -------
    hapsim.VisitResult
        Its summary (and ``visit_truth.json``) holds the key ``"preset"``:
        name, components, the effective keywords, derived numbers,
        overrides and unsupported keywords dropped.
    """
    preset = resolve_preset(name, seed=seed, subarray=subarray, **overrides)
    for key, value in preset["not_supported"].items():
        log.info("hapsim: preset %s asks for %s=%r, which this simulate_visit does not "
                 "support; left out", preset["name"], key, value)
    result = simulate_visit(out_dir, **preset["parameters"])
    record = _jsonable(preset)
    summary = dict(result.summary, preset=record)
    # simulate_visit wrote the file just now; add the preset to it
    result.visit_truth.write_text(json.dumps(summary, indent=2))
    log.info("hapsim: preset %s simulated", preset["name"])
    return replace(result, summary=summary)
