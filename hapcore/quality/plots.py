"""PNG pictures of the quality stage: product previews and QA plots.

Figures are built with :class:`matplotlib.figure.Figure` and the Agg canvas directly (no
``pyplot``: no global state, no display needed, safe in worker threads) and written
atomically. Every function returns the path written.

* :func:`write_preview` - a product preview worth opening
  (``<drizzle file minus .fits>_preview.png``): sky-subtracted asinh stretch with robust limits,
  no-data areas in flat grey, the point catalog circled (flagged rows in another colour), a
  scale bar and a N/E compass from the WCS, a title and a colour bar; large images are
  block-averaged. Its pure helpers (:func:`scale_bar_length`, :func:`compass_angles`,
  :func:`display_limits`, :func:`catalog_overlay`) are public for the tests.
* :func:`plot_photometry_differences` - point - segment magnitudes against magnitude.
* :func:`plot_alignment_figures` - RMS and matches per exposure with the acceptance limits.
* :func:`plot_hla_differences` - histograms of HAP - HLA differences per quantity.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from hapcore.atomic import atomic_output

__all__ = ["PREVIEW_DPI", "PREVIEW_WIDTH_IN", "preview_filename", "preview_figsize",
           "pixel_scale_arcsec", "scale_bar_length", "compass_angles", "catalog_overlay", "display_limits",
           "write_preview", "plot_photometry_differences", "plot_alignment_figures",
           "plot_hla_differences"]

log = logging.getLogger(f"hapsvm.{__name__}")


def _figure(width=6.0, height=6.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path, *, dpi=None) -> Path:
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", **({} if dpi is None else {"dpi": dpi}))
    log.debug("Wrote %s", path.name)
    return path


# ---------------------------------------------------------------------------------------------
# product previews
# ---------------------------------------------------------------------------------------------

#: Output resolution of the previews (the figure is PREVIEW_WIDTH_IN inches wide).
PREVIEW_DPI: int = 100
PREVIEW_WIDTH_IN: float = 8.0

# "Nice" scale-bar lengths in arcsec, the longest not exceeding the wanted length is used.
_NICE_ARCSEC = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0, 60.0, 120.0, 300.0,
                600.0, 1200.0, 1800.0, 3600.0)

# Catalog overlay colours: cyan and orange stay distinct for most colour-vision deficiencies
# and on both the dark sky and the white stellar cores.
_GOOD_COLOUR = "#22d3ee"
_FLAGGED_COLOUR = "#f97316"
# No-data areas: a light grey close to the page, so the footprint outline reads at a glance and
# nobody mistakes it for (dark) sky.
_EMPTY_COLOUR = "#d4d4d4"
# Stretch (in units of the sky noise): display floor below the sky, asinh linear-to-log turn.
_VMIN_SIGMA = 2.5
_SOFTENING_SIGMA = 5.0
# Scale bar and compass sit on a translucent dark box: readable on sky, stars and no-data grey.
_BOX = {"facecolor": "black", "alpha": 0.55, "edgecolor": "none"}


def preview_filename(drizzle_filename: str) -> str:
    """``hst_..._drc.fits`` -> ``hst_..._drc_preview.png``."""
    return drizzle_filename.removesuffix(".fits") + "_preview.png"


def pixel_scale_arcsec(wcs) -> float:
    """Mean pixel scale of a celestial WCS in arcsec per pixel."""
    from astropy.wcs.utils import proj_plane_pixel_scales

    return float(np.mean(proj_plane_pixel_scales(wcs.celestial)) * 3600.0)


def scale_bar_length(wcs, width_pixels: float, *, fraction: float = 0.2
                     ) -> tuple[float, float]:
    """A round scale-bar length for an image ``width_pixels`` wide.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Celestial WCS of the full-resolution image.
    width_pixels : float
        Image width in (full-resolution) pixels.
    fraction : float, optional
        The bar is the longest round length (1, 2, 5, 10, 20, 30, 60 ... arcsec) not longer
        than this fraction of the width.

    Returns
    -------
    arcsec : float
        Bar length on the sky.
    pixels : float
        Bar length in full-resolution pixels (``arcsec / pixel scale``).
    """
    scale = pixel_scale_arcsec(wcs)
    wanted = fraction * width_pixels * scale
    arcsec = max((v for v in _NICE_ARCSEC if v <= wanted), default=_NICE_ARCSEC[0])
    return arcsec, arcsec / scale


def compass_angles(wcs, x: float, y: float) -> tuple[float, float]:
    """Directions of north and east at pixel ``(x, y)``.

    Angles are in degrees, counter-clockwise from the +x pixel axis as displayed with
    ``origin="lower"`` (north-up, east-left gives ``(90, 180)``). They are measured with small
    offsets on the sky, so any rotation, flip or distortion of the WCS is honoured.

    Parameters
    ----------
    wcs : astropy.wcs.WCS
        Celestial WCS.
    x, y : float
        0-based pixel position (e.g. the image centre).

    Returns
    -------
    north, east : float
        Angles in degrees in [0, 360).
    """
    wcs = wcs.celestial
    ra, dec = (float(v) for v in wcs.all_pix2world([[x, y]], 0)[0])
    # one pixel on the sky: small enough to be local, large enough for float precision
    step = pixel_scale_arcsec(wcs) / 3600.0
    cos_dec = max(np.cos(np.radians(dec)), 1e-6)
    tips = wcs.all_world2pix([[ra, dec + step], [ra + step / cos_dec, dec]], 0)
    north, east = (float(np.degrees(np.arctan2(ty - y, tx - x))) % 360.0 for tx, ty in tips)
    return north, east


def catalog_overlay(table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions and flag state of a point catalog, for :func:`write_preview`.

    A row is *flagged* when none of its ``Flags*`` values is 0 (point-like) or 1 (extended),
    the same rule as the total catalog's good-source count; a catalog without flag columns has
    no flagged rows.

    Returns
    -------
    x, y : ndarray
        0-based pixel positions (``X-Center``, ``Y-Center``).
    flagged : ndarray of bool
    """
    x = np.asarray(table["X-Center"], dtype=float)
    y = np.asarray(table["Y-Center"], dtype=float)
    columns = [c for c in table.colnames if c == "Flags" or c.startswith("Flags_")]
    if not columns or len(table) == 0:
        return x, y, np.zeros(len(x), dtype=bool)
    flags = np.column_stack([np.asarray(table[c], dtype=np.int64) for c in columns])
    good = np.any((flags >= 0) & (flags < 2), axis=1)
    return x, y, ~good


def _block_average(data: np.ndarray, factor: int) -> np.ndarray:
    """Mean of ``factor`` x ``factor`` blocks, ignoring NaN (an all-NaN block stays NaN)."""
    if factor <= 1:
        return data
    ny, nx = (s // factor * factor for s in data.shape)
    trimmed = data[:ny, :nx]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)   # "Mean of empty slice": no data there
        return np.nanmean(trimmed.reshape(ny // factor, factor, nx // factor, factor),
                          axis=(1, 3))


def display_limits(values) -> tuple[float, float, float, float]:
    """Sky level, sky noise and display range of the valid pixels of an image.

    The sky is the sigma-clipped median; the range runs from 2.5 sigma below the sky (the sky
    is dark grey, not black, so its noise stays readable) to the 99.9th percentile (at least 20 sigma above the sky, so an empty field is not stretched
    into its noise).

    Returns
    -------
    sky, sigma, vmin, vmax : float
        ``vmin`` and ``vmax`` are relative to the sky.
    """
    from astropy.stats import sigma_clipped_stats

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0, -2.0, 20.0
    if values.size > 1_000_000:   # a fixed sample: the statistics need no more, and it is fast
        values = values[:: values.size // 1_000_000 + 1]
    _, sky, sigma = sigma_clipped_stats(values, sigma=3.0, maxiters=5)
    sky = float(sky)
    sigma = float(sigma)
    if not np.isfinite(sigma) or sigma <= 0:
        sigma = float(np.std(values)) or 1.0
    top = float(np.percentile(values, 99.9)) - sky
    return sky, sigma, -_VMIN_SIGMA * sigma, max(top, 20.0 * sigma)


def preview_figsize(shape) -> tuple[float, float]:
    """Preview figure size in inches for a shown (block-averaged) image of ``shape``.

    The width is fixed (:data:`PREVIEW_WIDTH_IN`); the height follows the image aspect
    (limited to 0.4-1.6) plus room for the title lines and the colour bar.
    """
    ny, nx = shape
    image_w = PREVIEW_WIDTH_IN * 0.86
    image_h = image_w * min(max(ny / max(nx, 1), 0.4), 1.6)
    return PREVIEW_WIDTH_IN, round(image_h + 1.35, 2)


def _draw_scale_bar(ax, wcs, width_pixels, factor):
    """A round-length scale bar, lower left (lengths in the shown, block-averaged grid)."""
    from matplotlib.font_manager import FontProperties
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    arcsec, pixels = scale_bar_length(wcs, width_pixels)
    label = f'{arcsec:g}"' if arcsec < 60 else f"{arcsec / 60:g}'"
    bar = AnchoredSizeBar(ax.transData, pixels / factor, label, "lower left", pad=0.5,
                          borderpad=0.8, sep=4, color="white", frameon=True,
                          size_vertical=0, fontproperties=FontProperties(size=9))
    bar.patch.set(**_BOX)
    bar.set_zorder(5)   # above the catalog circles
    # a bar drawn as a line: size_vertical in data units would vanish on large images
    bar.size_bar.get_children()[0].set_linewidth(2.5)
    ax.add_artist(bar)


def _draw_compass(ax, wcs, full_shape, shown_shape):
    """N and E arrows from the WCS at the image centre, upper right, on a dark box."""
    from matplotlib.patches import FancyBboxPatch

    ny, nx = shown_shape
    north, east = compass_angles(wcs, (full_shape[1] - 1) / 2, (full_shape[0] - 1) / 2)
    arm = 0.075 * min(nx, ny)
    margin, pad = 0.02 * min(nx, ny), 0.35 * arm
    # the box fits the arrows and labels (1.3 arm out) whatever their directions
    tips = np.array([[0.0, 0.0]] + [[1.3 * arm * np.cos(np.radians(a)),
                                     1.3 * arm * np.sin(np.radians(a))] for a in (north, east)])
    (x_lo, y_lo), (x_hi, y_hi) = tips.min(axis=0) - pad, tips.max(axis=0) + pad
    cx, cy = nx - margin - x_hi, ny - margin - y_hi
    ax.add_patch(FancyBboxPatch((cx + x_lo, cy + y_lo), x_hi - x_lo, y_hi - y_lo,
                                boxstyle=f"round,pad=0,rounding_size={0.3 * pad}", zorder=4,
                                **_BOX))
    for angle, name in ((north, "N"), (east, "E")):
        dx, dy = np.cos(np.radians(angle)), np.sin(np.radians(angle))
        ax.annotate("", xy=(cx + arm * dx, cy + arm * dy), xytext=(cx, cy),
                    arrowprops={"arrowstyle": "-|>,head_length=0.5,head_width=0.25",
                                "color": "white", "lw": 1.5, "shrinkA": 0, "shrinkB": 0},
                    zorder=5)
        ax.text(cx + 1.3 * arm * dx, cy + 1.3 * arm * dy, name, color="white", ha="center",
                va="center", fontsize=9, fontweight="bold", zorder=5)


def _draw_catalog(ax, x, y, flagged, factor):
    """Circles at the catalog positions (good and flagged colours) and a legend with counts."""
    from matplotlib.lines import Line2D

    n_src = len(x)
    sx = (np.asarray(x, float) + 0.5) / factor - 0.5
    sy = (np.asarray(y, float) + 0.5) / factor - 0.5
    bad = np.zeros(n_src, bool) if flagged is None else np.asarray(flagged, bool)
    # smaller circles for crowded catalogs, so the image under them stays visible
    size = float(np.clip(70.0 * np.sqrt(300.0 / max(n_src, 1)), 12.0, 70.0))
    legend = []
    for mask, colour, label in ((~bad, _GOOD_COLOUR, "good (flags 0-1)"),
                                (bad, _FLAGGED_COLOUR, "flagged (flags ≥ 2)")):
        if mask.any():
            ax.scatter(sx[mask], sy[mask], s=size, facecolors="none", edgecolors=colour,
                       linewidths=0.8)
        legend.append(Line2D([], [], ls="none", marker="o", markerfacecolor="none",
                             markeredgecolor=colour, label=f"{int(mask.sum())} {label}"))
    ax.legend(handles=legend, loc="upper left", fontsize=7, framealpha=0.75,
              title=f"point catalog: {n_src} sources", title_fontsize=7)


def write_preview(data, path, *, wcs=None, weight=None, x=None, y=None, flagged=None,
                  max_size: int = 1024, title: str = "", subtitle: str = "",
                  unit: str = "e$^-$/s") -> Path:
    """PNG preview of a drizzled product: stretched image, catalog, scale bar and compass.

    The image is shown sky-subtracted with an asinh stretch (linear within a few sigma of the
    sky, logarithmic above, so both the faint sources and the cores of bright stars are
    visible); display limits come from :func:`display_limits`. Pixels without data (NaN, or
    zero weight) are drawn in a flat light grey. The colour bar is labelled in ``unit`` above
    the sky.

    Parameters
    ----------
    data : 2-D ndarray
        Science image (NaN allowed).
    path : path-like
        Output PNG.
    wcs : astropy.wcs.WCS, optional
        Celestial WCS of ``data``; without it no scale bar or compass is drawn.
    weight : 2-D ndarray, optional
        Weight image; pixels with weight <= 0 have no data. Without it, exact zeros of
        ``data`` are taken as no data (as the drizzled products fill them).
    x, y : array-like, optional
        0-based catalog positions to circle (None: "no point catalog" is noted).
    flagged : array-like of bool, optional
        Rows drawn in the "flagged" colour (see :func:`catalog_overlay`).
    max_size : int, optional
        Largest preview side in image pixels; larger images are block-averaged.
    title, subtitle : str, optional
        First (bold) and second title line.
    unit : str, optional
        Unit of ``data`` for the colour bar.

    Returns
    -------
    pathlib.Path
    """
    from astropy.visualization import AsinhStretch, ImageNormalize
    from matplotlib import colormaps

    data = np.array(data, dtype=float)
    empty = ~np.isfinite(data)
    if weight is not None:
        empty |= ~(np.asarray(weight) > 0)
    else:
        empty |= data == 0
    data[empty] = np.nan
    factor = max(1, int(np.ceil(max(data.shape) / max_size)))
    shown = _block_average(data, factor)
    sky, sigma, vmin, vmax = display_limits(shown)
    shown = shown - sky
    # asinh softening: the stretch turns from linear to logarithmic ~5 sigma above the sky
    # (faint sources stand out of a smooth, dark grey sky; bright cores are not saturated)
    softening = float(np.clip(_SOFTENING_SIGMA * sigma / (vmax - vmin), 1e-4, 1.0))
    norm = ImageNormalize(vmin=vmin, vmax=vmax, stretch=AsinhStretch(a=softening), clip=False)
    # not clipping in the norm keeps masked (no-data) pixels "bad"; the colour map's ends
    # take the values outside the range
    cmap = colormaps["gray"].with_extremes(bad=_EMPTY_COLOUR, under="black", over="white")
    ny, nx = shown.shape
    fig_w, fig_h = preview_figsize(shown.shape)
    fig = _figure(fig_w, fig_h)
    top = 0.78 / fig_h          # room for two title lines (inches -> figure fraction)
    bottom = 0.57 / fig_h       # room for the colour bar and its label
    ax = fig.add_axes([0.02, bottom, 0.96, 1.0 - top - bottom])
    im = ax.imshow(np.ma.masked_invalid(shown), origin="lower", cmap=cmap, norm=norm,
                   interpolation="antialiased")
    ax.set_xlim(-0.5, nx - 0.5)
    ax.set_ylim(-0.5, ny - 0.5)
    ax.set_xticks([])
    ax.set_yticks([])

    if x is None:
        ax.text(0.015, 0.985, "no point catalog", transform=ax.transAxes, ha="left", va="top",
                fontsize=7, bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.75,
                                  "edgecolor": "0.8"})
    else:
        _draw_catalog(ax, x, y, flagged, factor)

    if wcs is not None:
        _draw_scale_bar(ax, wcs, data.shape[1], factor)
        _draw_compass(ax, wcs, data.shape, (ny, nx))

    fig.text(0.5, 1.0 - 0.3 / fig_h, title, ha="center", va="center", fontsize=10,
             fontweight="bold")
    if subtitle:
        fig.text(0.5, 1.0 - 0.58 / fig_h, subtitle, ha="center", va="center", fontsize=8.5)
    cax = fig.add_axes([0.15, 0.3 / fig_h, 0.7, 0.12 / fig_h])
    # ticks at round multiples of the sky noise (none too close to the top one)
    ticks = [t for t in (0.0, 3 * sigma, 10 * sigma, 30 * sigma, 100 * sigma, 1000 * sigma)
             if t < 0.6 * vmax] + [vmax]
    bar = fig.colorbar(im, cax=cax, orientation="horizontal", ticks=ticks)
    bar.ax.tick_params(labelsize=7)
    bar.ax.set_xticklabels([f"{t:.3g}" for t in ticks])
    bar.set_label(f"{unit} above sky (sky {sky:.3g}, $\\sigma$ {sigma:.2g}; asinh stretch"
                  + (f", {factor}x{factor} block average)" if factor > 1 else ")"),
                  fontsize=7, labelpad=1)
    # an explicit dpi: the PNG size must not depend on the user's savefig.dpi setting
    return _save(fig, path, dpi=PREVIEW_DPI)


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
