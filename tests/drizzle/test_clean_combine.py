"""The combine's preference for untainted exposures (issue #15, UVIS 0.2" fluxes).

An output pixel that a masked input pixel (a cosmic ray) reached keeps, in that exposure, only
the light of the remaining, partly covering input pixels, weighted by their overlap: on a
star's slope the brighter neighbours weigh in and the exposure's value there is biased high.
`combine_exposures` takes the mean over the exposures not tainted at such a pixel when one has
weight there, and over all of them elsewhere; CTX still marks every exposure that covers it.
"""

from __future__ import annotations

import numpy as np

from hapcore.drizzle.ragged import (
    ChipPartial,
    ExposurePartial,
    RowRanges,
    combine_exposures,
)

SHAPE = (4, 5)


def _partial(name, value, tmp_path, taint=None, weight=1.0):
    ranges = RowRanges(0, np.zeros(SHAPE[0], np.int32), np.full(SHAPE[0], SHAPE[1], np.int32))
    sci = np.full(ranges.size, value, np.float32)
    wht = np.full(ranges.size, weight, np.float32)
    taint_file = None
    if taint is not None:
        taint_file = tmp_path / f"{name}-taint.npy"
        np.save(taint_file, np.asarray(sorted(taint), np.int64))
    chip = ChipPartial(name, 1, ranges, None, None, iscale=1.0, sky=0.0, arrays=(sci, wht),
                       taint_file=taint_file)
    return ExposurePartial(name, [chip])


def test_tainted_exposure_left_out_where_another_covers(tmp_path):
    # pixel 7 = (row 1, column 2) tainted in exposure a; pixel 12 tainted in both
    a = _partial("a", 10.0, tmp_path, taint=[7, 12])
    b = _partial("b", 4.0, tmp_path, taint=[12], weight=3.0)
    sci, wht, ctx = combine_exposures([a, b], SHAPE, threads=1)
    assert sci[1, 2] == 4.0 and wht[1, 2] == 3.0          # a's share dropped
    assert sci[2, 2] == np.float32((10 + 12) / 4) and wht[2, 2] == 4.0   # both tainted: all
    assert sci[0, 0] == np.float32((10 + 12) / 4)         # untainted pixels: as before
    assert (ctx == 3).all()                                # CTX: every exposure covering


def test_without_taints_the_combine_is_unchanged(tmp_path):
    a = _partial("a", 10.0, tmp_path)
    b = _partial("b", 4.0, tmp_path, weight=3.0)
    sci, wht, ctx = combine_exposures([a, b], SHAPE, threads=1)
    assert np.all(sci == np.float32(5.5)) and np.all(wht == 4.0) and (ctx == 3).all()
