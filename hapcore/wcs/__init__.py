"""WCS records of the SVM products: read chip WCSs, write the SVM copies and headerlets.

Chip WCSs are read read-only from the exposures (`files`); the aligned solution is written into
the SVM copy with drizzlepac's WCSNAME conventions (`names`), the previous primary WCS archived
as an alternate (`header`), and stored as a headerlet (`headerlet`); `records` is the entry
point, `solution` classifies an alignment outcome, `tangent` is the gnomonic projection shared
by the alignment and the quality checks.
"""

from hapcore.wcs.files import read_chip_wcs
from hapcore.wcs.records import write_svm_copy

__all__ = ["read_chip_wcs", "write_svm_copy"]
