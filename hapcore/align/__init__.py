"""The alignment stage: the exposures of one detector aligned to an astrometric reference.

Sources are found on every chip with a cosmic-ray moment test (`sources`), the exposures are
aligned to each other and the visit fitted as one group to the reference catalog (`visit`,
`match`, `fit`), read from a local file or an online provider (`refcat`, `refcat_gaia`), with
drizzlepac's fallbacks; `stage.run_alignment` writes the SVM copies and headerlets.
"""

import importlib

# entry points, imported on first use: importing one module of the stage (a light one, say)
# must not import the whole stage
_EXPORTS = {
    "run_alignment": "hapcore.align.stage",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
