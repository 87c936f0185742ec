"""The pixel map's spline basis is scipy's not-a-knot cubic spline, without scipy.interpolate."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy.interpolate import CubicSpline

from hapcore.drizzle.spline_basis import cubic_spline_basis


@pytest.mark.parametrize("nodes", [
    np.r_[np.arange(0.0, 4096.0, 64.0), 4095.0],     # a UVIS chip's columns, step 64
    np.r_[np.arange(0.0, 1014.0, 64.0), 1013.0],     # a WFC3/IR chip
    np.array([0.0, 1.0, 3.0, 7.0, 8.0]),             # uneven, few nodes
])
def test_basis_equals_scipy_cubic_spline(nodes):
    points = np.linspace(nodes[0] - 3.0, nodes[-1] + 3.0, 2001)   # extrapolated ends too
    expected = CubicSpline(nodes, np.eye(nodes.size))(points)
    basis = cubic_spline_basis(nodes, points)
    assert basis.shape == expected.shape
    np.testing.assert_allclose(basis, expected, rtol=0, atol=1e-13)
    # interpolating: the basis at the nodes is the identity, and it reproduces a cubic
    np.testing.assert_allclose(cubic_spline_basis(nodes, nodes), np.eye(nodes.size), atol=1e-13)
    cubic = 0.3 * nodes**3 - 2.0 * nodes + 1.0
    np.testing.assert_allclose(basis @ cubic, 0.3 * points**3 - 2.0 * points + 1.0,
                               rtol=1e-9, atol=1e-6)


def test_basis_rejects_too_few_or_unsorted_nodes():
    with pytest.raises(ValueError):
        cubic_spline_basis([0.0, 1.0, 2.0], [0.5])
    with pytest.raises(ValueError):
        cubic_spline_basis([0.0, 2.0, 1.0, 3.0], [0.5])


def test_drizzle_workers_do_not_import_scipy_interpolate():
    """The worker modules stay without scipy.interpolate (~30 MB per worker process)."""
    code = ("import sys; import hapcore.drizzle.jobs, hapcore.drizzle.product_jobs, "
            "hapcore.drizzle.chip_partials, hapcore.drizzle.cr_passes; "
            "print('scipy.interpolate' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"
