"""PNG pictures of the quality stage: product previews and QA plots.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly (no
``pyplot``: no global state, no display needed, safe in worker threads) and written
atomically. Every function returns the path written.

* :func:`write_preview` - asinh-stretched product image with catalog sources overlaid
  (``<drizzle file minus .fits>_preview.png``; large images are block-averaged).
* :func:`plot_photometry_differences` - point - segment magnitudes against magnitude.
* :func:`plot_alignment_figures` - RMS and matches per exposure with the acceptance limits.
* :func:`plot_hla_differences` - histograms of HAP - HLA differences per quantity.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hapcore.atomic import atomic_output

__all__ = ["preview_filename", "write_preview", "plot_photometry_differences",
           "plot_alignment_figures", "plot_hla_differences"]

log = logging.getLogger(f"hapsvm.{__name__}")


def _figure(width=6.0, height=6.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    log.info("Wrote %s", path.name)
    return path


def preview_filename(drizzle_filename: str) -> str:
    """``hst_..._drc.fits`` -> ``hst_..._drc_preview.png``."""
    return drizzle_filename.removesuffix(".fits") + "_preview.png"


def _block_average(data: np.ndarray, factor: int) -> np.ndarray:
    if factor <= 1:
        return data
    ny, nx = (s // factor * factor for s in data.shape)
    trimmed = data[:ny, :nx]
    return np.nanmean(trimmed.reshape(ny // factor, factor, nx // factor, factor), axis=(1, 3))


def write_preview(data, path, *, x=None, y=None, max_size: int = 1024, title: str = "",
                  asinh_a: float = 0.1) -> Path:
    """Asinh-stretched PNG of an image with source positions overlaid.

    Parameters
    ----------
    data : 2-D ndarray
        Science image (NaN allowed).
    path : path-like
        Output PNG.
    x, y : array-like, optional
        0-based source positions to mark.
    max_size : int, optional
        Largest preview side in image pixels; larger images are block-averaged.
    title : str, optional
    asinh_a : float, optional
        Asinh softening (fraction of the display range).
    """
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval

    data = np.asarray(data, dtype=float)
    factor = max(1, int(np.ceil(max(data.shape) / max_size)))
    shown = _block_average(data, factor)
    finite = shown[np.isfinite(shown) & (shown != 0)]
    norm = None
    if finite.size:
        norm = ImageNormalize(finite, interval=PercentileInterval(99.5),
                              stretch=AsinhStretch(a=asinh_a))
    fig = _figure(7.0, 7.0 * shown.shape[0] / max(shown.shape[1], 1) + 0.4)
    ax = fig.add_axes([0.02, 0.02, 0.96, 0.9])
    ax.imshow(np.nan_to_num(shown), origin="lower", cmap="gray", norm=norm,
              interpolation="nearest")
    if x is not None and len(x):
        ax.scatter((np.asarray(x) + 0.5) / factor - 0.5, (np.asarray(y) + 0.5) / factor - 0.5,
                   s=30, facecolors="none", edgecolors="tab:orange", linewidths=0.6)
    ax.set_axis_off()
    ax.set_title(f"{title}  ({0 if x is None else len(x)} sources)", fontsize=9)
    return _save(fig, path)


def plot_photometry_differences(point, segment, point_index, segment_index, path, *,
                                title: str = "") -> Path:
    """Point - segment MagAp1/MagAp2 of matched sources against the point MagAp2."""
    fig = _figure(7.0, 5.0)
    axes = fig.subplots(2, 1, sharex=True)
    mag = np.asarray(point["MagAp2"], float)[point_index]
    for ax, name in zip(axes, ("MagAp1", "MagAp2")):
        diff = (np.asarray(point[name], float)[point_index]
                - np.asarray(segment[name], float)[segment_index])
        ok = np.isfinite(diff) & np.isfinite(mag)
        ax.scatter(mag[ok], diff[ok], s=4, color="tab:blue")
        ax.axhline(0.0, color="k", lw=0.6)
        if ok.any():
            ax.axhline(np.median(diff[ok]), color="tab:red", lw=0.8, ls="--")
        ax.set_ylabel(f"{name} point - segment")
    axes[-1].set_xlabel("MagAp2 (point, ABmag)")
    fig.suptitle(title, fontsize=9)
    return _save(fig, path)


def plot_alignment_figures(figures: Sequence, path, *, max_rms_mas: float,
                           min_matches: int) -> Path:
    """RMS_RA/RMS_DEC and NMATCHES per exposure, with the acceptance limits.

    ``figures`` are :class:`~hap_models.quality.AlignmentFigures`. (Per-source residuals are
    not part of the alignment record, so no residual scatter is drawn.)
    """
    names = [Path(f.exposure).name.split("_")[-2] if "_" in f.exposure else f.exposure
             for f in figures]
    idx = np.arange(len(figures))
    fig = _figure(7.0, 5.0)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    rms_ra = [np.nan if f.rms_ra_mas is None else f.rms_ra_mas for f in figures]
    rms_dec = [np.nan if f.rms_dec_mas is None else f.rms_dec_mas for f in figures]
    ax1.bar(idx - 0.2, rms_ra, width=0.4, label="RMS_RA")
    ax1.bar(idx + 0.2, rms_dec, width=0.4, label="RMS_DEC")
    ax1.axhline(max_rms_mas, color="tab:red", ls="--", lw=0.8, label="limit")
    ax1.set_ylabel("mas")
    ax1.legend(fontsize=7)
    ax2.bar(idx, [np.nan if f.nmatches is None else f.nmatches for f in figures])
    ax2.axhline(min_matches, color="tab:red", ls="--", lw=0.8)
    ax2.set_ylabel("NMATCHES")
    ax2.set_xticks(idx, names, rotation=45, fontsize=7)
    fig.subplots_adjust(bottom=0.2)
    return _save(fig, path)


def plot_hla_differences(differences: Mapping[str, np.ndarray], statistics: Mapping, path, *,
                         title: str = "") -> Path:
    """Histogram of HAP - HLA differences of every compared quantity (clipped mean marked)."""
    names = list(differences)
    ncol = 3
    nrow = max(1, int(np.ceil(len(names) / ncol)))
    fig = _figure(9.0, 2.4 * nrow + 0.6)
    axes = np.atleast_1d(fig.subplots(nrow, ncol)).ravel()
    for ax, name in zip(axes, names):
        diff = np.asarray(differences[name], float)
        diff = diff[np.isfinite(diff)]
        stats = statistics.get(name, {})
        if diff.size:
            ax.hist(diff, bins=40, color="tab:blue")
        mean = stats.get("3x3 sigma-clipped mean")
        if mean is not None:
            ax.axvline(mean, color="tab:red", lw=0.8)
        verdict = stats.get("Status", "")
        ax.set_title(f"{name}: {verdict}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in axes[len(names):]:
        ax.set_axis_off()
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)
