"""The live offer map's merge beside the run (defs/map_merges.py)."""

from __future__ import annotations

import threading

import pytest

from stock_pipeline.defs import map_merges


def test_finish_waits_for_the_runs_merge_and_raises_what_it_raised():
    release = threading.Event()
    merged = []

    def merge():
        release.wait(5)
        merged.append("shop-a")

    map_merges.start("run-1", "shop-a", merge)
    assert merged == []  # started, not waited for: the run goes on
    release.set()
    map_merges.finish("run-1")
    assert merged == ["shop-a"]

    def broken():
        raise RuntimeError("database gone")

    map_merges.start("run-2", "shop-a", broken)
    with pytest.raises(RuntimeError, match="database gone"):
        map_merges.finish("run-2")


def test_a_run_without_a_merge_finishes_at_once():
    map_merges.finish("a run whose listing was partial")
