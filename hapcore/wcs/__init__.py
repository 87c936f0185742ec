"""WCS records of the SVM products: read chip WCSs, write the SVM copies and headerlets.

Chip WCSs are read read-only from the exposures (`files`); the aligned solution is written into
the SVM copy with drizzlepac's WCSNAME conventions (`names`), the previous primary WCS archived
as an alternate (`header`), and stored as a headerlet (`headerlet`); `records` is the entry
point, `solution` classifies an alignment outcome, `tangent` is the gnomonic projection shared
by the alignment and the quality checks.
"""

import importlib

# entry points, imported on first use: importing one module of the stage (a light one, say)
# must not import the whole stage
_EXPORTS = {
    "read_chip_wcs": "hapcore.wcs.files",
    "write_svm_copy": "hapcore.wcs.records",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
