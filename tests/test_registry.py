"""The process-local registry shared by the drizzle and catalog tasks."""

from __future__ import annotations

from tasks.registry import ProcessRegistry


def test_get_creates_once_and_release_closes_one_visit(tmp_path):
    registry = ProcessRegistry()
    made, closed = [], []
    a, b = tmp_path / "a", tmp_path / "b"

    def make(name):
        made.append(name)
        return name

    key_a = (ProcessRegistry.root(a), "uvis")
    assert registry.get(key_a, lambda: make("a1")) == "a1"
    assert registry.get(key_a, lambda: make("again")) == "a1"     # created once
    registry.get((ProcessRegistry.root(b), "uvis"), lambda: make("b1"))
    registry.release(a, close=closed.append)
    assert made == ["a1", "b1"] and closed == ["a1"]
    # b is untouched, a is made anew after its release
    assert registry.get((ProcessRegistry.root(b), "uvis"), lambda: make("b2")) == "b1"
    assert registry.get(key_a, lambda: make("a2")) == "a2"
