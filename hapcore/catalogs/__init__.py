"""The catalog stage: point (aperture) and segment catalogs of a detector's products (spec §6).

Sources are detected once on the total ("white light") product (`detection`: background,
DAOStarFinder point sources, segmentation), measured with forced photometry in every filter
product (`point`, `segment`, `photometry`), flagged (`flags`, `saturation`, `swarm`,
`sharpness`, `exposure_check`, `filter_consistency`, `rows`), joined into the total catalogs and
trimmed (`total`), and written as drizzlepac's ECSV files (`writer`); `stage` holds the entry
points the tasks call, `image` reads the products.
"""

from hapcore._lazy import lazy_exports

# entry points, imported on first use (hapcore._lazy)
_EXPORTS = {
    "PHOT_MODES": "hapcore.catalogs.detection",
    "SourceDetection": "hapcore.catalogs.detection",
    "detect_sources": "hapcore.catalogs.detection",
    "load_total_detection": "hapcore.catalogs.detection",
    "save_detection": "hapcore.catalogs.detection",
    "load_detection": "hapcore.catalogs.detection",
    "measure_filter_product": "hapcore.catalogs.filter_product",
    "write_detector_catalogs": "hapcore.catalogs.stage",
    "build_catalogs": "hapcore.catalogs.stage",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
