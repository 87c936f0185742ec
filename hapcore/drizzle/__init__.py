"""The drizzle stage: exposure, filter and total products of one detector (spec §5).

One north-up grid per detector (`grid`); each filter product goes through AstroDrizzle's
sequence -- static mask, sky, separate drizzle, median, blot, driz_cr (`cr_passes`, `cr`) --
and its final drizzle excludes the cosmic rays found; exposure products are drizzled without CR
masks; the total product combines the filters' inputs with their CR masks. Products carry
drizzlepac's headers and HDRTAB (`headers`) and a trailer (`trailer`). The work of one task
runs in a `workspace` (worker pool, pixel maps, persisted CR masks and partials).
"""

from hapcore.drizzle.grid import OutputGrid, build_detector_grid
from hapcore.drizzle.stage import (
    drizzle_exposure_product,
    drizzle_filter_product,
    drizzle_filter_with_exposures,
    drizzle_total_product,
    total_inputs,
)
from hapcore.drizzle.workspace import (
    DrizzleWorkspace,
    filter_cr_mask_files,
    open_detector_workspace,
    prepare_pixel_maps,
)

__all__ = ["OutputGrid", "build_detector_grid", "DrizzleWorkspace", "open_detector_workspace",
           "prepare_pixel_maps", "filter_cr_mask_files", "drizzle_exposure_product",
           "drizzle_filter_product", "drizzle_filter_with_exposures", "drizzle_total_product",
           "total_inputs"]
