"""Linear fits between matched source lists in a tangent plane (shift, rshift, rscale, general).

Coordinates are tangent-plane offsets (arcsec) of the image sources (``xy``) and of the reference
(``uv``); the model is ``uv = M @ xy + t``. ``rscale`` is a rotation plus one scale, ``rshift`` a
pure rotation (Procrustes), ``general`` a full affine. Outliers are sigma-clipped. The
projection to and from the tangent plane is :mod:`hapcore.wcs.tangent`.

Fits to an astrometric reference catalog are weighted (:func:`fit_linear_reference`): a Gaia-like
catalog's position errors at the observation epoch span more than a factor ten between its bright
and faint stars (proper-motion errors grow with the years since the catalog epoch), and an
unweighted fit lets the faint stars' errors through as a scale and rotation error of the whole
visit (0.02 px rms, 0.05 px at the chip corners of a WFC3/UVIS visit with 56 matches). Each match
is weighted by ``1 / (sigma_ref^2 + s^2)``: ``sigma_ref`` the catalog's error per axis, ``s^2`` the
variance the catalog does not explain (image centroids, relative alignment), solved from the fit
residuals so that their chi-square per degree of freedom is one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "FITGEOM_PARAMETERS",
    "LinearFit",
    "fit_linear",
    "fit_linear_clipped",
    "excess_variance",
    "fit_linear_reference",
]

#: Number of free parameters of each geometry (a fit needs more matches than this).
FITGEOM_PARAMETERS = {"shift": 2, "rshift": 3, "rscale": 4, "general": 6}


@dataclass
class LinearFit:
    """Result of a linear fit ``uv = matrix @ xy + shift``."""

    fitgeom: str
    matrix: np.ndarray
    shift: np.ndarray
    mask: np.ndarray = field(repr=False)
    residuals: np.ndarray = field(repr=False)

    @property
    def nmatches(self) -> int:
        return int(self.mask.sum())

    @property
    def rms(self) -> float:
        """Root-mean-square of the radial residuals of the kept matches (input units)."""
        r = self.residuals[self.mask]
        return float(np.sqrt(np.mean(np.sum(r ** 2, axis=1)))) if len(r) else np.nan

    @property
    def rms_xy(self) -> tuple[float, float]:
        r = self.residuals[self.mask]
        if not len(r):
            return np.nan, np.nan
        return float(np.std(r[:, 0])), float(np.std(r[:, 1]))

    @property
    def rotation_deg(self) -> float:
        """Rotation of the +Y axis (deg), positive counter-clockwise in the (x, y) plane."""
        m = self.matrix
        return float(np.degrees(np.arctan2(-m[0, 1], m[1, 1])))

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix))))

    @property
    def skew_deg(self) -> float:
        m = self.matrix
        rot_x = np.arctan2(m[1, 0], m[0, 0])
        rot_y = np.arctan2(-m[0, 1], m[1, 1])
        return float(np.degrees(rot_y - rot_x))

    def apply(self, xy: np.ndarray) -> np.ndarray:
        return np.asarray(xy) @ self.matrix.T + self.shift


def fit_linear(xy: np.ndarray, uv: np.ndarray, *, fitgeom: str = "rscale",
               weights: np.ndarray | None = None, center: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares fit of ``uv = M xy + t``; returns ``(M, t)``.

    ``center`` (default: the weighted mean of ``xy``) only conditions the problem; the returned
    transform is in the original coordinates.
    """
    if fitgeom not in FITGEOM_PARAMETERS:
        raise ValueError(f"unknown fit geometry '{fitgeom}' (expected one of {list(FITGEOM_PARAMETERS)})")
    xy = np.asarray(xy, float)
    uv = np.asarray(uv, float)
    w = np.ones(len(xy)) if weights is None else np.asarray(weights, float)
    w = np.where(np.isfinite(w) & (w > 0), w, 0.0)
    if w.sum() <= 0:
        w = np.ones(len(xy))
    c_xy = np.average(xy, axis=0, weights=w) if center is None else np.asarray(center, float)
    c_uv = np.average(uv, axis=0, weights=w)
    p = xy - c_xy
    q = uv - c_uv
    if fitgeom == "shift":
        m = np.eye(2)
        t_local = np.average(q - p, axis=0, weights=w)
    elif fitgeom == "rshift":
        # weighted Procrustes: the rotation that best maps p onto q
        h = (p * w[:, None]).T @ q
        u, _, vt = np.linalg.svd(h)
        d = np.sign(np.linalg.det(vt.T @ u.T))
        m = vt.T @ np.diag([1.0, d]) @ u.T
        t_local = np.average(q - p @ m.T, axis=0, weights=w)
    elif fitgeom == "rscale":
        # u = a x - b y + tx ; v = b x + a y + ty
        sw = np.sqrt(w)
        rows_u = np.column_stack([p[:, 0], -p[:, 1], np.ones(len(p)), np.zeros(len(p))])
        rows_v = np.column_stack([p[:, 1], p[:, 0], np.zeros(len(p)), np.ones(len(p))])
        a_mat = np.vstack([rows_u * sw[:, None], rows_v * sw[:, None]])
        rhs = np.concatenate([q[:, 0] * sw, q[:, 1] * sw])
        (a, b, tx, ty), *_ = np.linalg.lstsq(a_mat, rhs, rcond=None)
        m = np.array([[a, -b], [b, a]])
        t_local = np.array([tx, ty])
    else:
        sw = np.sqrt(w)
        design = np.column_stack([p, np.ones(len(p))]) * sw[:, None]
        coef_u, *_ = np.linalg.lstsq(design, q[:, 0] * sw, rcond=None)
        coef_v, *_ = np.linalg.lstsq(design, q[:, 1] * sw, rcond=None)
        m = np.array([coef_u[:2], coef_v[:2]])
        t_local = np.array([coef_u[2], coef_v[2]])
    shift = c_uv + t_local - m @ c_xy
    return m, shift


def fit_linear_clipped(xy: np.ndarray, uv: np.ndarray, *, fitgeom: str = "rscale",
                       weights: np.ndarray | None = None, nclip: int = 3,
                       sigma: float = 3.0) -> LinearFit:
    """:func:`fit_linear` with ``nclip`` rounds of ``sigma`` clipping on radial residuals.

    With ``weights`` (inverse variances) the residuals are clipped after scaling each by the
    square root of its weight, so a match is judged against its own error.
    """
    xy = np.asarray(xy, float)
    uv = np.asarray(uv, float)
    w_all = np.ones(len(xy)) if weights is None else np.asarray(weights, float)
    norm = np.sqrt(np.where(np.isfinite(w_all) & (w_all > 0), w_all, 0.0))
    keep = np.ones(len(xy), bool)
    m, t = fit_linear(xy, uv, fitgeom=fitgeom, weights=weights)
    for _ in range(max(nclip, 0)):
        resid = uv - (xy @ m.T + t)
        r = np.hypot(resid[:, 0], resid[:, 1]) * norm
        scale = np.sqrt(np.mean(r[keep] ** 2)) if keep.any() else 0.0
        new_keep = r <= sigma * max(scale, 1e-12)
        if new_keep.sum() <= FITGEOM_PARAMETERS[fitgeom] or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        w = None if weights is None else w_all[keep]
        m, t = fit_linear(xy[keep], uv[keep], fitgeom=fitgeom, weights=w)
    resid = uv - (xy @ m.T + t)
    return LinearFit(fitgeom, m, t, keep, resid)


def excess_variance(residuals: np.ndarray, variance: np.ndarray, n_parameters: int) -> float:
    """
    The variance per axis to add to every match so that the fit's chi-square is its dof.

    Parameters
    ----------
    residuals : ndarray, shape (n, 2)
        Fit residuals of the matches kept.
    variance : ndarray, shape (n,)
        Their known variance per axis (same units squared).
    n_parameters : int
        Free parameters of the fit.

    Returns
    -------
    float
        ``s^2 >= 0`` with ``sum(|r|^2 / (variance + s^2)) = 2 n - n_parameters``; 0 when the known
        variances explain the residuals already.
    """
    r2 = np.sum(np.asarray(residuals, float) ** 2, axis=1)
    variance = np.asarray(variance, float)
    dof = 2 * len(r2) - n_parameters
    if dof <= 0 or not len(r2):
        return 0.0

    def excess_chi2(s2):
        return float(np.sum(r2 / (variance + s2))) - dof

    if excess_chi2(0.0) <= 0.0:
        return 0.0
    lo, hi = 0.0, max(float(np.max(r2)), float(np.min(variance)), 1e-30)
    while excess_chi2(hi) > 0.0:
        hi *= 4.0
    for _ in range(60):       # bisection: chi-square falls monotonically with s^2
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if excess_chi2(mid) > 0.0 else (lo, mid)
    return 0.5 * (lo + hi)


def fit_linear_reference(xy: np.ndarray, uv: np.ndarray, variance: np.ndarray, *,
                         fitgeom: str = "rscale", nclip: int = 3, sigma: float = 3.0,
                         n_iterations: int = 3) -> LinearFit:
    """
    Weighted, clipped fit to reference positions with known errors (see the module notes).

    Parameters
    ----------
    xy, uv : ndarray, shape (n, 2)
        Image and reference tangent-plane positions (arcsec).
    variance : ndarray, shape (n,)
        Variance per axis of each reference position (arcsec^2).
    fitgeom, nclip, sigma
        As for :func:`fit_linear_clipped`.
    n_iterations : int, optional
        Rounds of solving for the unexplained variance ``s^2`` and refitting.

    Returns
    -------
    LinearFit
        Its ``residuals`` and ``rms`` are unweighted, as for the other fits.
    """
    variance = np.asarray(variance, float)
    fit = fit_linear_clipped(xy, uv, fitgeom=fitgeom, nclip=nclip, sigma=sigma)
    for _ in range(max(n_iterations, 1)):
        keep = fit.mask
        s2 = excess_variance(fit.residuals[keep], variance[keep], FITGEOM_PARAMETERS[fitgeom])
        total = variance + s2
        positive = total[total > 0]
        # a zero variance (perfect positions, perfect fit) would get an infinite weight
        floor = 1e-3 * float(np.median(positive)) if len(positive) else 1.0
        fit = fit_linear_clipped(xy, uv, fitgeom=fitgeom, weights=1.0 / np.maximum(total, floor),
                                 nclip=nclip, sigma=sigma)
    return fit
