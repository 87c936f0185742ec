"""Two catalog branches side by side (hapcore.catalogs.side_by_side)."""

from __future__ import annotations

import threading

import pytest

from hapcore.catalogs.side_by_side import run_side_by_side


def test_both_branches_run_the_first_in_another_thread():
    seen = {}

    def first():
        seen["first"] = threading.current_thread().name

    def second():
        seen["second"] = threading.current_thread().name

    run_side_by_side([first, second], threads=2)
    assert seen["first"].startswith("hapsvm-branch") and seen["second"] == "MainThread"


def test_one_thread_runs_in_order_and_errors_reach_the_caller():
    order = []
    run_side_by_side([lambda: order.append(1), lambda: order.append(2)], threads=1)
    assert order == [1, 2]

    def boom():
        raise RuntimeError("branch failed")

    with pytest.raises(RuntimeError, match="branch failed"):
        run_side_by_side([boom, lambda: None], threads=2)
