"""The drizzle stage: exposure, filter and total products of one detector (spec §5).

One north-up grid per detector (`grid`); each filter product goes through AstroDrizzle's
sequence -- static mask, sky, separate drizzle, median, blot, driz_cr (`cr_passes`, `cr`) --
and its final drizzle excludes the cosmic rays found; exposure products are drizzled without CR
masks; the total product combines the filters' inputs with their CR masks (`total`). Each chip
is drizzled once per filter: the other drizzles follow from it by the pixels that differ
(`chip_partials`, `sparse`), stored row by row over the chip's footprint (`ragged`). Products
carry drizzlepac's headers and HDRTAB (`headers`) and a trailer (`trailer`). The work of one
task runs in a `workspace` (worker pool, scratch, persisted CR masks).
"""

from hapcore._lazy import lazy_exports

# entry points, imported on first use (hapcore._lazy)
_EXPORTS = {
    "OutputGrid": "hapcore.drizzle.grid",
    "build_detector_grid": "hapcore.drizzle.grid",
    "DrizzleWorkspace": "hapcore.drizzle.workspace",
    "open_detector_workspace": "hapcore.drizzle.workspace",
    "filter_cr_mask_files": "hapcore.drizzle.workspace",
    "drizzle_exposure_product": "hapcore.drizzle.stage",
    "drizzle_filter_product": "hapcore.drizzle.stage",
    "drizzle_filter_with_exposures": "hapcore.drizzle.stage",
    "drizzle_total_product": "hapcore.drizzle.stage",
    "total_inputs": "hapcore.drizzle.stage",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
