"""The drizzle stage: exposure, filter and total products of one detector (spec §5).

One north-up grid per detector (`grid`); each filter product goes through AstroDrizzle's
sequence -- static mask, sky, separate drizzle, median, blot, driz_cr (`cr_passes`, `cr`) --
and its final drizzle excludes the cosmic rays found; exposure products are drizzled without CR
masks; the total product combines the filters' inputs with their CR masks. Products carry
drizzlepac's headers and HDRTAB (`headers`) and a trailer (`trailer`). The work of one task
runs in a `workspace` (worker pool, pixel maps, persisted CR masks and partials).
"""

import importlib

# entry points, imported on first use: importing one module of the stage (a light one, say)
# must not import the whole stage
_EXPORTS = {
    "OutputGrid": "hapcore.drizzle.grid",
    "build_detector_grid": "hapcore.drizzle.grid",
    "DrizzleWorkspace": "hapcore.drizzle.workspace",
    "open_detector_workspace": "hapcore.drizzle.workspace",
    "prepare_pixel_maps": "hapcore.drizzle.workspace",
    "filter_cr_mask_files": "hapcore.drizzle.workspace",
    "drizzle_exposure_product": "hapcore.drizzle.stage",
    "drizzle_filter_product": "hapcore.drizzle.stage",
    "drizzle_filter_with_exposures": "hapcore.drizzle.stage",
    "drizzle_total_product": "hapcore.drizzle.stage",
    "total_inputs": "hapcore.drizzle.stage",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
