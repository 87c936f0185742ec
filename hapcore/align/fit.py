"""Linear fits between matched source lists in a tangent plane (shift, rshift, rscale, general).

Coordinates are tangent-plane offsets (arcsec) of the image sources (``xy``) and of the reference
(``uv``); the model is ``uv = M @ xy + t``. ``rscale`` is a rotation plus one scale, ``rshift`` a
pure rotation (Procrustes), ``general`` a full affine. Outliers are sigma-clipped. The
projection to and from the tangent plane is :mod:`hapcore.wcs.tangent`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["FITGEOM_PARAMETERS", "LinearFit", "fit_linear", "fit_linear_clipped"]

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
    """:func:`fit_linear` with ``nclip`` rounds of ``sigma`` clipping on radial residuals."""
    xy = np.asarray(xy, float)
    uv = np.asarray(uv, float)
    keep = np.ones(len(xy), bool)
    m, t = fit_linear(xy, uv, fitgeom=fitgeom, weights=weights)
    for _ in range(max(nclip, 0)):
        resid = uv - (xy @ m.T + t)
        r = np.hypot(resid[:, 0], resid[:, 1])
        scale = np.sqrt(np.mean(r[keep] ** 2)) if keep.any() else 0.0
        new_keep = r <= sigma * max(scale, 1e-12)
        if new_keep.sum() <= FITGEOM_PARAMETERS[fitgeom] or np.array_equal(new_keep, keep):
            break
        keep = new_keep
        w = None if weights is None else np.asarray(weights)[keep]
        m, t = fit_linear(xy[keep], uv[keep], fitgeom=fitgeom, weights=w)
    resid = uv - (xy @ m.T + t)
    return LinearFit(fitgeom, m, t, keep, resid)
