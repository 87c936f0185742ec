"""Tasks of the catalog stage: the detection, one task per filter product, the total catalogs.

* :func:`detect_sources_task` -- one per detector: the sources of the total product, saved
  (:func:`hapcore.catalogs.detection.save_detection`) under ``<output_dir>/.hapsvm-work/``;
* :func:`measure_filter_catalogs_task` -- one per filter product: forced photometry and flags at
  the total product's sources (its point and segment measurements);
* :func:`write_catalogs_task` -- the total catalogs: joins the filter measurements, trims, runs
  the cosmic-ray-dominance test and writes every catalog file of the detector (the filter
  catalogs can only be written once every filter has been measured: the trimming and the
  rejection depend on all of them).

The detection reaches the measuring and writing tasks through its file (:func:`stored_detection`),
named after everything it depends on: the total product's content, the photometry mode, the
total product's parameters and the code version. The file is scratch: the flow deletes
``.hapsvm-work`` (all but the cosmic-ray masks) once a visit is done, so it is not an output of
the detection task -- a later run keeps that task's cached result, and a task that needs the
detection while its file is gone (a resumed run) detects again from the total product.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from hap_models.products import FilterProduct, TotalProduct
from hap_models.stage import StageResult
from hapcore.digests import file_digest
from tasks.caching import code_version, run_stage
from tasks.stage_task import stage_task

if TYPE_CHECKING:      # the catalog modules are imported when a task runs (see tasks.stage_task)
    from hapcore.catalogs.detection import SourceDetection

__all__ = ["detection_file", "stored_detection", "detect_sources_task",
           "measure_filter_catalogs_task", "write_catalogs_task"]

logger = logging.getLogger(f"hapsvm.{__name__}")

#: Scratch directory of a visit (shared with the drizzle stage).
WORK_DIR = ".hapsvm-work"


def detection_file(total: TotalProduct, output_dir: Path, phot_mode: str) -> Path:
    """``<output_dir>/.hapsvm-work/detection-<detector>-<total digest>-<settings>.npz``.

    ``<total digest>`` starts the SHA-256 of the total product; ``<settings>`` is a digest of the
    photometry mode, the total product's parameters and the code version, so a file made with
    other settings is never read in place of this one.
    """
    product = Path(output_dir) / total.drizzle_filename
    parameters = total.parameters
    dumped = (parameters.model_dump_json() if hasattr(parameters, "model_dump_json")
              else repr(parameters))
    settings = hashlib.sha256("\n".join([phot_mode, dumped, code_version()]).encode())
    return (Path(output_dir) / WORK_DIR /
            f"detection-{total.detector}-{file_digest(product)[:16]}-{settings.hexdigest()[:8]}.npz")


def stored_detection(total: TotalProduct, output_dir: Path, phot_mode: str, *,
                     segment_catalog: bool = True, total_pixels: bool = True) -> SourceDetection:
    """The detection of ``total``: read from :func:`detection_file`, or -- when the file is gone
    or unreadable -- detected again from the total product and stored for the next task.

    ``segment_catalog=False``: a detection read from the file comes without the segments'
    convolved image and detection catalog (see :func:`~hapcore.catalogs.detection.load_detection`;
    the total catalogs do not use them). ``total_pixels=False``: its ``total_image`` is the
    product's :class:`~hapcore.catalogs.image.ProductHeaders`, without the pixel arrays (the
    filter measurements use the sources, not the total image: three full-frame arrays less).
    """
    from hapcore.catalogs.detection import load_detection, load_total_detection, save_detection
    from hapcore.catalogs.image import CatalogImage, ProductHeaders

    path = detection_file(total, output_dir, phot_mode)
    product = Path(output_dir) / total.drizzle_filename
    detection = None
    if path.is_file():
        # without pixels kept, the exposure counts (CTX) are not needed either
        image = CatalogImage.from_fits(product, context=total_pixels)
        if not total_pixels:
            # rebuilding the segment catalog reads the science array only: the weight and the
            # exposure counts go before the convolution's temporaries
            image.weight = image.nexp = None
        try:
            detection = load_detection(path, image, total_parameters=total.parameters,
                                       segment_catalog=segment_catalog)
        except Exception as exc:  # a damaged scratch file is a miss, never an error
            logger.warning("%s unreadable (%s); detecting again", path.name, exc)
        del image
    else:
        logger.info("%s: no stored detection (scratch removed); detecting again",
                    total.product_basename)
    if detection is None:
        detection = load_total_detection(total, output_dir=output_dir, phot_mode=phot_mode)
        save_detection(detection, path)
    if not total_pixels:
        detection.total_image = ProductHeaders.from_fits(product)
    return detection


@stage_task(name="detect-sources", task_run_name="detect-sources-{total.detector}")
def detect_sources_task(total: TotalProduct, output_dir: Path, drizzled: StageResult,
                        phot_mode: str = "both") -> StageResult:
    """Detection on the total product, saved to :func:`detection_file` (payload: the file's
    name, the numbers of point and segment sources, the timings; no outputs -- the file is
    scratch, see the module notes).

    ``drizzled`` (the drizzle stage's result, with the digests of the products) is an input so
    that new drizzled products invalidate the cached detection.
    """
    from hapcore.catalogs.detection import load_total_detection, save_detection

    def detect():
        detection = load_total_detection(total, output_dir=output_dir, phot_mode=phot_mode)
        path = save_detection(detection, detection_file(total, output_dir, phot_mode))
        return {"file": path.name, "n_point": detection.n_point,
                "n_segment": detection.n_segment, "timings": detection.timings}

    return run_stage("detect-sources", detect, outputs=lambda payload: [])


@stage_task(name="measure-filter-catalogs", task_run_name="catalogs-{fdp.filters}")
def measure_filter_catalogs_task(fdp: FilterProduct, total: TotalProduct, output_dir: Path,
                                 drizzled: StageResult, detected: StageResult,
                                 phot_mode: str = "both") -> StageResult:
    """Point and segment measurements of one filter product (payload: its FilterCatalogs
    tables, untrimmed; the files are written by :func:`write_catalogs_task`).

    ``detected`` is :func:`detect_sources_task`'s result; the detection itself is read from
    its file (:func:`stored_detection`).
    """
    from hapcore.catalogs.filter_product import measure_filter_product

    def measure():
        # read beside the filter's other inputs (`measure_filter_product`)
        entry = measure_filter_product(
            fdp, lambda: stored_detection(total, output_dir, phot_mode, total_pixels=False),
            output_dir=output_dir)
        # the image arrays are re-read when needed; the cached result keeps the tables only
        return {"point": entry.point, "segment": entry.segment, "timings": entry.timings,
                "aperture_correction": entry.aperture_correction, "ci_limits": entry.ci_limits}

    return run_stage("measure-filter-catalogs", measure, outputs=lambda payload: [])


@stage_task(name="write-catalogs", task_run_name="catalogs-total-{total.detector}")
def write_catalogs_task(total: TotalProduct, output_dir: Path, drizzled: StageResult,
                        detected: StageResult, measured: list[StageResult],
                        phot_mode: str = "both", diagnostic_mode: bool = False) -> StageResult:
    """The total catalogs, and every catalog file of the detector (payload: the paths)."""
    from hapcore.catalogs.image import ProductHeaders
    from hapcore.catalogs.stage import FilterCatalogs, write_detector_catalogs

    def write():
        detection = stored_detection(total, output_dir, phot_mode, segment_catalog=False)
        filters = []
        for fdp, result in zip(total.fdp_list, measured):
            # metadata and the CR-dominance test read the headers only: no pixels re-read
            image = ProductHeaders.from_fits(Path(output_dir) / fdp.drizzle_filename)
            payload = result.payload
            filters.append(FilterCatalogs(fdp.filters, image, fdp.parameters,
                                          point=payload["point"], segment=payload["segment"],
                                          timings=payload["timings"],
                                          aperture_correction=payload.get("aperture_correction"),
                                          ci_limits=payload.get("ci_limits") or {}))
        return write_detector_catalogs(total, detection, filters, output_dir=output_dir,
                                       diagnostic_mode=diagnostic_mode)

    return run_stage("catalogs", write, outputs=lambda paths: list(paths))
