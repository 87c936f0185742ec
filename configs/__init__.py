"""Packaged SVM parameter files (JSON and the CI/aperture-correction table).

Layout
------
``any/astrodrizzle.json``
    AstroDrizzle values common to all detectors (``base``) and the shared condition entries
    ``filter_basic``, ``single_basic`` and the generic ``any_n1``.
``any/alignment.json``, ``any/catalog_generation.json``, ``any/quality_control.json``
    Base values of the other three steps (ACS/WFC values).
``any/ci_ap_cor_table.txt``
    Concentration-index limits and aperture corrections per ``INSTR_DET_FILTER``.
``any/encircled_energy.json``
    Handbook encircled energies of the measured aperture correction
    (:mod:`hapcore.catalogs.aperture_correction`).
``<instr>_<det>.json`` (acs_wfc, acs_hrc, acs_sbc, wfc3_uvis, wfc3_ir, wfpc2_pc)
    Per-detector overrides of the three step bases and one AstroDrizzle entry per condition.

The files are read with :mod:`importlib.resources`, so they work from an installed wheel too;
:mod:`hapcore.obset.parameters` interprets them.
"""

from __future__ import annotations

from importlib import resources

__all__ = ["read_config_text", "config_display_name"]


def read_config_text(relative_path: str) -> str:
    """Return the text of the packaged file ``relative_path`` (e.g. ``"any/alignment.json"``).

    Raises
    ------
    FileNotFoundError
        If no such file is packaged.
    """
    resource = resources.files(__name__).joinpath(*relative_path.split("/"))
    return resource.read_text(encoding="utf-8")


def config_display_name(relative_path: str) -> str:
    """Name used for a packaged file in messages, e.g. ``"configs/acs_wfc.json"``."""
    return f"configs/{relative_path}"
