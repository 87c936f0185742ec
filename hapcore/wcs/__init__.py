"""WCS records of the SVM products: read chip WCSs, write the SVM copies and headerlets.

Chip WCSs are read read-only from the exposures (`files`); the aligned solution is written into
the SVM copy with drizzlepac's WCSNAME conventions (`names`), the previous primary WCS archived
as an alternate (`header`), and stored as a headerlet (`headerlet`); `records` is the entry
point, `solution` classifies an alignment outcome, `tangent` is the gnomonic projection shared
by the alignment and the quality checks.
"""

from hapcore._lazy import lazy_exports

# entry points, imported on first use (hapcore._lazy)
_EXPORTS = {
    "read_chip_wcs": "hapcore.wcs.files",
    "write_svm_copy": "hapcore.wcs.records",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
