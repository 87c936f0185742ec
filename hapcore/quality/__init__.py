"""The quality stage: drizzlepac's quality analysis of a visit's products (spec §7, §8).

Each check group (`stage`: source counts, reference sources, point/segment cross-match and
photometry, inter-filter cross-match, WCS report, HLA-classic comparison, previews) runs
isolated, so a failing check never stops the others; the checks live in `checks`,
`checks_catalogs`, `checks_reference` and `hla`, write their JSON files through `report`, and
`summary` writes the visit's pass/fail summary; `plots` makes the PNG previews.
"""

from hapcore.quality.stage import (
    finish_quality_report,
    hla_catalog_inputs,
    make_quality_context,
    run_catalog_checks,
    run_hla_comparison,
    run_interfilter_checks,
    run_num_sources,
    run_previews,
    run_reference_checks,
    run_wcs_reports,
)

__all__ = ["make_quality_context", "run_num_sources", "run_reference_checks",
           "run_catalog_checks", "run_interfilter_checks", "run_wcs_reports",
           "hla_catalog_inputs", "run_hla_comparison", "run_previews", "finish_quality_report"]
