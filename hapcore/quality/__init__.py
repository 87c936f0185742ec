"""The quality stage: drizzlepac's quality analysis of a visit's products (spec §7, §8).

Each check group (`stage`: source counts, reference sources, point/segment cross-match and
photometry, inter-filter cross-match, WCS report, HLA-classic comparison, previews) runs
isolated, so a failing check never stops the others; the checks live in `checks`,
`checks_catalogs`, `checks_reference` and `hla`, write their JSON files through `report`, and
`summary` writes the visit's pass/fail summary; `plots` makes the PNG previews.
"""

from hapcore._lazy import lazy_exports

# entry points, imported on first use (hapcore._lazy)
_EXPORTS = {
    "make_quality_context": "hapcore.quality.stage",
    "run_num_sources": "hapcore.quality.stage",
    "run_reference_checks": "hapcore.quality.stage",
    "run_catalog_checks": "hapcore.quality.stage",
    "run_interfilter_checks": "hapcore.quality.stage",
    "run_wcs_reports": "hapcore.quality.stage",
    "hla_catalog_inputs": "hapcore.quality.stage",
    "run_hla_comparison": "hapcore.quality.stage",
    "run_previews": "hapcore.quality.stage",
    "finish_quality_report": "hapcore.quality.stage",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
