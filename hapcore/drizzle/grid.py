"""The common output grid ("meta WCS") of one detector (spec §5.1).

Every product of a detector (exposure, filter, total) is drizzled onto the same grid: a
distortion-free tangent-plane WCS, north up and east left by default, at the native plate scale
of the first chip (or ``final_scale``), whose footprint encloses every direct exposure's chips.
Footprints are traced through each chip's *full* WCS (SIP and lookup tables), so the grid covers
the distorted chip edges, not just the linear approximation.

A grid bigger than `MAX_GRID_SIZE` pixels on a side is refused: it nearly always means a broken
input WCS (a chip projected far from the others, jwst#5081) and would otherwise exhaust memory.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS

from hap_models.errors import HapInputError
from hapcore.drizzle.inputs import chip_wcs_of

__all__ = [
    "MAX_GRID_SIZE",
    "GridTooLargeError",
    "OutputGrid",
    "chip_footprint",
    "chip_plate_scale",
    "make_output_grid",
    "build_detector_grid",
]

log = logging.getLogger(f"hapsvm.{__name__}")

#: Largest accepted output grid side (pixels).
MAX_GRID_SIZE = 30000


class GridTooLargeError(HapInputError):
    """The inputs' footprints span more than `MAX_GRID_SIZE` output pixels (broken WCS).

    An input error (exit code 1): the message names the chip that lies apart from the others.
    """


@dataclass(frozen=True)
class OutputGrid:
    """A drizzle output grid: a TAN WCS (no distortion) and its array shape.

    The grid is stored as header text so that it pickles cheaply into worker processes and has
    a stable fingerprint for caches.

    Attributes
    ----------
    header_text : str
        ``WCS.to_header_string()`` of the grid WCS.
    shape : tuple of int
        ``(ny, nx)`` of the output arrays.
    """

    header_text: str
    shape: tuple[int, int]
    _cache: dict = field(default_factory=dict, repr=False, compare=False, hash=False)

    @classmethod
    def from_wcs(cls, wcs: WCS, shape: tuple[int, int]) -> OutputGrid:
        return cls(wcs.to_header_string(relax=False), (int(shape[0]), int(shape[1])))

    @property
    def wcs(self) -> WCS:
        """The grid WCS (``pixel_shape`` set); built once per process."""
        if "wcs" not in self._cache:
            wcs = WCS(fits.Header.fromstring(self.header_text))
            wcs.pixel_shape = (self.shape[1], self.shape[0])
            self._cache["wcs"] = wcs
        return self._cache["wcs"]

    @cached_property
    def fingerprint(self) -> str:
        """Short hash of WCS and shape (cache key)."""
        digest = hashlib.sha1(f"{self.header_text}|{self.shape}".encode())
        return digest.hexdigest()[:16]

    @property
    def pixel_scale_arcsec(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.wcs.pixel_scale_matrix))) * 3600.0)

    def __getstate__(self):
        return {"header_text": self.header_text, "shape": self.shape}

    def __setstate__(self, state):
        object.__setattr__(self, "header_text", state["header_text"])
        object.__setattr__(self, "shape", tuple(state["shape"]))
        object.__setattr__(self, "_cache", {})


def chip_plate_scale(chip_wcs: WCS) -> float:
    """Plate scale (arcsec/px) of a chip at its reference pixel: sqrt(|det CD|)."""
    return float(np.sqrt(abs(np.linalg.det(chip_wcs.pixel_scale_matrix))) * 3600.0)


def _chip_shape(chip_wcs: WCS) -> tuple[int, int]:
    if chip_wcs.pixel_shape is None:
        raise ValueError("chip WCS has no pixel_shape (NAXIS1/2)")
    nx, ny = chip_wcs.pixel_shape
    return int(ny), int(nx)


def chip_footprint(chip_wcs: WCS, *, spacing: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """RA, Dec (deg) of points along the outer pixel edges of a chip, through its full WCS.

    Edges are sampled every ``spacing`` pixels (distortion bends them) at the pixel corners
    (-0.5 and n - 0.5), so the footprint encloses whole pixels.
    """
    ny, nx = _chip_shape(chip_wcs)
    xs = np.unique(np.r_[np.arange(-0.5, nx - 0.5, spacing), nx - 0.5])
    ys = np.unique(np.r_[np.arange(-0.5, ny - 0.5, spacing), ny - 0.5])
    x = np.concatenate([xs, np.full(ys.size, nx - 0.5), xs[::-1], np.full(ys.size, -0.5)])
    y = np.concatenate([np.full(xs.size, -0.5), ys, np.full(xs.size, ny - 0.5), ys[::-1]])
    ra, dec = chip_wcs.all_pix2world(x, y, 0)
    return np.asarray(ra, float), np.asarray(dec, float)


def _unit_vectors(ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    ra_r, dec_r = np.radians(ra), np.radians(dec)
    return np.column_stack([np.cos(dec_r) * np.cos(ra_r), np.cos(dec_r) * np.sin(ra_r),
                            np.sin(dec_r)])


def _tan_wcs(crval: tuple[float, float], scale_arcsec: float, rotation_deg: float) -> WCS:
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.crval = list(crval)
    wcs.wcs.crpix = [0.0, 0.0]
    theta = np.radians(rotation_deg)
    s = scale_arcsec / 3600.0
    # rotation = position angle of the +y axis east of north; 0 = north up, east left
    wcs.wcs.cd = s * np.array([[-np.cos(theta), np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    wcs.wcs.radesys = "ICRS"
    wcs.wcs.equinox = 2000.0
    wcs.wcs.cunit = ["deg", "deg"]
    wcs.wcs.set()
    return wcs


def make_output_grid(chip_wcs_list: Sequence[WCS], *, scale: float | None = None,
                     rotation: float | None = 0.0, labels: Sequence[str] | None = None,
                     max_size: int = MAX_GRID_SIZE) -> OutputGrid:
    """Build the output grid covering every chip, north up, at the first chip's scale.

    Parameters
    ----------
    chip_wcs_list : sequence of `~astropy.wcs.WCS`
        Full (distorted) WCS of every SCI chip of every direct exposure, ``pixel_shape`` set.
        The first chip sets the scale when ``scale`` is None.
    scale : float, optional
        Output plate scale in arcsec/px (``final_scale``); None = native scale of the first chip.
    rotation : float, optional
        Position angle of the output +y axis, degrees east of north (``final_rot``); 0 or None =
        north up, east left.
    labels : sequence of str, optional
        A name per chip (e.g. ``file[SCI,1]``) used in error messages.
    max_size : int, optional
        Largest accepted grid side in pixels.

    Returns
    -------
    OutputGrid

    Raises
    ------
    GridTooLargeError
        The footprints span more than ``max_size`` pixels on a side; the message names the chip
        farthest from the others (its WCS is the likely culprit, jwst#5081).
    ValueError
        No chips, or a chip whose footprint is not finite.
    """
    if not chip_wcs_list:
        raise ValueError("make_output_grid needs at least one chip WCS")
    labels = list(labels) if labels is not None else [f"chip {i}" for i in
                                                        range(len(chip_wcs_list))]
    footprints = []
    for wcs, label in zip(chip_wcs_list, labels):
        ra, dec = chip_footprint(wcs)
        if not (np.all(np.isfinite(ra)) and np.all(np.isfinite(dec))):
            raise ValueError(f"{label}: footprint is not finite (broken WCS)")
        footprints.append((ra, dec))
    out_scale = float(scale) if scale else chip_plate_scale(chip_wcs_list[0])
    # Tangent point: mean direction of all chip centres (robust to RA wrap at 0/360).
    centres = np.array([_unit_vectors(ra, dec).mean(axis=0) for ra, dec in footprints])
    mean_vec = centres.mean(axis=0)
    mean_vec /= np.linalg.norm(mean_vec)
    crval = (float(np.degrees(np.arctan2(mean_vec[1], mean_vec[0])) % 360.0),
             float(np.degrees(np.arcsin(np.clip(mean_vec[2], -1, 1)))))
    wcs = _tan_wcs(crval, out_scale, float(rotation or 0.0))
    projected = [wcs.wcs_world2pix(ra, dec, 0) for ra, dec in footprints]
    x_all = np.concatenate([p[0] for p in projected])
    y_all = np.concatenate([p[1] for p in projected])
    if not (np.all(np.isfinite(x_all)) and np.all(np.isfinite(y_all))):
        raise GridTooLargeError("a chip footprint cannot be projected onto the output tangent "
                                "plane (more than 90 deg from the others): broken WCS")
    x0, x1 = np.floor(x_all.min()), np.ceil(x_all.max())
    y0, y1 = np.floor(y_all.min()), np.ceil(y_all.max())
    nx, ny = int(x1 - x0), int(y1 - y0)
    if nx > max_size or ny > max_size:
        # The chip whose centre is farthest from the median centre is the most likely culprit.
        cx = np.array([p[0].mean() for p in projected])
        cy = np.array([p[1].mean() for p in projected])
        dist = np.hypot(cx - np.median(cx), cy - np.median(cy))
        worst = int(np.argmax(dist))
        raise GridTooLargeError(
            f"output grid would be {nx} x {ny} px (limit {max_size} per side) at "
            f"{out_scale:.4f} arcsec/px: the inputs' footprints do not form one field; "
            f"{labels[worst]} lies {dist[worst] * out_scale / 3600:.3f} deg from the others - "
            "check its WCS (broken or wrong WCS, cf. jwst#5081)")
    # Pixel i (0-based) covers [i-0.5, i+0.5]; the footprint edges are pixel corners.
    # Shift so that the lowest footprint corner lands on pixel edge -0.5.
    wcs.wcs.crpix = [-(x0 + 0.5), -(y0 + 0.5)]
    wcs.wcs.set()
    wcs.pixel_shape = (nx, ny)
    log.debug("output grid %d x %d px at %.5f arcsec/px, CRVAL %.6f %.6f", nx, ny, out_scale,
              *crval)
    return OutputGrid.from_wcs(wcs, (ny, nx))


def build_detector_grid(total, output_dir: str | os.PathLike) -> OutputGrid:
    """The meta WCS of one detector from the SVM copies of its direct exposures.

    Parameters
    ----------
    total : `hap_models.products.TotalProduct`
        The detector's product tree; its ``edp_list`` (in processing order) supplies the chips and
        its drizzle parameters ``final_scale``/``final_rot`` the scale and orientation.
    output_dir : path-like
        Folder holding the SVM copies ``<ExposureProduct.full_filename>`` (read only).
    """
    output_dir = Path(output_dir)
    wcs_list, labels = [], []
    for edp in total.edp_list:
        path = output_dir / edp.full_filename
        for extver, wcs in chip_wcs_of(path).items():
            wcs_list.append(wcs)
            labels.append(f"{path.name}[SCI,{extver}]")
    pars = total.parameters.drizzle if total.parameters is not None else None
    grid = make_output_grid(wcs_list, scale=getattr(pars, "final_scale", None),
                            rotation=getattr(pars, "final_rot", 0.0), labels=labels)
    log.debug("%s: output grid %d x %d px at %.5f arcsec/px from %d chips",
             total.product_basename, grid.shape[1], grid.shape[0], grid.pixel_scale_arcsec,
             len(wcs_list))
    return grid
