"""``hapsvm demo``: the run has the quality analysis on and ends with the preview paths."""

from __future__ import annotations

import pytest

from flows.cli import DEMO_VISIT, run_demo

pytestmark = [pytest.mark.usefixtures("prefect_backend"), pytest.mark.slow]

#: A smaller visit than the demo's own: one filter, two exposures, a 512-pixel subarray.
SMALL_VISIT = {**DEMO_VISIT, "filters": {"f606w": 2}, "subarray": 512, "dither": "line2",
               "star_density": 1500.0}


def test_demo_writes_previews_and_prints_their_paths(tmp_path, capsys):
    code = run_demo(tmp_path, visit=SMALL_VISIT, n_workers=1)
    assert code == 0
    products = tmp_path / "products"
    previews = sorted(products.glob("*_preview.png"))
    # the total and the filter product
    assert len(previews) == 2
    for path in previews:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lines = capsys.readouterr().out.strip().splitlines()
    # the preview paths are the last lines, total product first
    assert lines[-1 - len(previews)].startswith("Previews (2 PNG)")
    printed = [line.strip() for line in lines[-len(previews):]]
    assert sorted(printed) == [str(p) for p in previews]
    assert "_total_" in printed[0]
