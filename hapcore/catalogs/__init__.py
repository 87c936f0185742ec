"""The catalog stage: point (aperture) and segment catalogs of a detector's products (spec §6).

Sources are detected once on the total ("white light") product (`detection`: background,
DAOStarFinder point sources, segmentation), measured with forced photometry in every filter
product (`point`, `segment`, `photometry`), flagged (`flags`, `saturation`, `swarm`,
`sharpness`, `exposure_check`, `filter_consistency`, `rows`), joined into the total catalogs and
trimmed (`total`), and written as drizzlepac's ECSV files (`writer`); `stage` holds the entry
points the tasks call, `image` reads the products.
"""

from hapcore.catalogs.detection import (
    PHOT_MODES,
    SourceDetection,
    detect_sources,
    load_detection,
    load_total_detection,
    save_detection,
)
from hapcore.catalogs.stage import (
    build_catalogs,
    measure_filter_product,
    write_detector_catalogs,
)

__all__ = ["PHOT_MODES", "SourceDetection", "detect_sources", "load_total_detection",
           "save_detection", "load_detection", "measure_filter_product",
           "write_detector_catalogs", "build_catalogs"]
