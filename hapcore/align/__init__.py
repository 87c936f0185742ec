"""The alignment stage: the exposures of one detector aligned to an astrometric reference.

Sources are found on every chip with a cosmic-ray moment test (`sources`), the exposures are
aligned to each other and the visit fitted as one group to the reference catalog (`visit`,
`match`, `fit`), read from a local file or an online provider (`refcat`, `refcat_gaia`), with
drizzlepac's fallbacks; `stage.run_alignment` writes the SVM copies and headerlets.
"""

from hapcore._lazy import lazy_exports

# entry points, imported on first use (hapcore._lazy)
_EXPORTS = {
    "run_alignment": "hapcore.align.stage",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
