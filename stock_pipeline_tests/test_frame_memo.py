"""Frames shared between the account runs of one process (core/frame_memo.py): a reader's
view cannot change the shared values, its own column changes stay its own, and what is
worked out once for the frame serves every unchanged view."""

from __future__ import annotations

import gc
import threading
import time
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import OfferFrame, check_frame, kept_contract
from stock_pipeline.core.diff import offers_frame


def a_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sku": pd.Series(["A", "B", None], dtype="string"),
            "stock": np.array([3, 0, 7], dtype="int64"),
            "raw": np.array(["3", "0", None], dtype=object),
            "count": pd.array([1, None, 2], dtype="Int64"),
        }
    )


WRITES = {
    "loc": lambda f: f.loc.__setitem__((0, "stock"), 99),
    "iloc": lambda f: f.iloc.__setitem__((0, 1), 99),
    "at": lambda f: f.at.__setitem__((0, "sku"), "Z"),
    "iat": lambda f: f.iat.__setitem__((1, 2), "Z"),
    "a mask": lambda f: f.loc.__setitem__((f["stock"] > 0, "stock"), 0),
    "a column's series": lambda f: f["stock"].iloc.__setitem__(0, 99),
    "a string column's series": lambda f: f["sku"].__setitem__(0, "Z"),
    "a nullable column": lambda f: f["count"].__setitem__(1, 5),
    "the numpy array": lambda f: f["stock"].to_numpy().__setitem__(0, 99),
    "values": lambda f: f["raw"].values.__setitem__(0, "99"),
    "in place clip": lambda f: f["stock"].clip(0, 1, inplace=True),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_a_view_cannot_write_a_value_into_the_shared_frame(write):
    frame = a_frame()
    expected = frame.copy(deep=True)
    view = frame_memo.shared_view(frame)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas' chained-assignment warnings: the write is what is tested
        with pytest.raises(ValueError, match="read-only"):
            write(view)
    pd.testing.assert_frame_equal(frame, expected)
    pd.testing.assert_frame_equal(frame_memo.shared_view(frame), expected)


def test_a_views_own_columns_stay_its_own():
    frame = a_frame()
    first, second = frame_memo.shared_view(frame), frame_memo.shared_view(frame)
    first["stock"] = first["stock"] + 1  # a new array, in this view only
    first["extra"] = 1
    del first["raw"]
    second.drop(columns=["sku"], inplace=True)
    assert list(frame.columns) == ["sku", "stock", "raw", "count"]
    assert frame["stock"].tolist() == [3, 0, 7]
    assert list(frame_memo.shared_view(frame).columns) == ["sku", "stock", "raw", "count"]
    assert list(second.columns) == ["stock", "raw", "count"]


def test_views_share_the_arrays_not_copies():
    frame = a_frame()
    view = frame_memo.shared_view(frame_memo.shared_view(frame))  # a view of a view is a view of the frame
    assert view is not frame
    assert np.shares_memory(view["stock"].to_numpy(), frame["stock"].to_numpy())
    assert frame_memo.is_frozen(frame) and frame_memo.is_frozen(view)


def test_what_is_remembered_of_the_frame_serves_every_unchanged_view():
    frame = a_frame()
    first, second = frame_memo.shared_view(frame), frame_memo.shared_view(frame)
    computed = []
    assert frame_memo.remembered(first, "total", lambda: computed.append(1) or 10) == 10
    assert frame_memo.remembered(second, "total", lambda: computed.append(1) or 11) == 10
    assert frame_memo.recall(frame, "total") == 10 and computed == [1]  # worked out once
    second["stock"] = second["stock"] * 2  # no longer the frame's columns: nothing remembered applies
    assert frame_memo.recall(second, "total") is None
    assert frame_memo.recall(first, "total") == 10


def test_a_view_keeps_its_frame_and_what_is_remembered_alive_and_no_longer():
    frame = a_frame()
    view = frame_memo.shared_view(frame)
    frame_memo.remember(frame, "total", 10)
    alive = weakref.ref(frame)
    del frame
    gc.collect()
    assert alive() is not None and frame_memo.recall(view, "total") == 10
    del view
    gc.collect()
    assert alive() is None  # neither the bookkeeping nor what it remembered holds the frame


def test_a_frame_whose_values_could_change_in_place_is_not_shared():
    arrow = pd.DataFrame({"sku": pd.Series(["A"], dtype="string[pyarrow]")})
    with pytest.raises(TypeError, match="cannot be made read-only"):
        frame_memo.shared_view(arrow)
    assert not frame_memo.is_frozen(arrow) and not frame_memo.is_frozen(a_frame())


def test_a_read_only_frame_keeps_any_contract_it_passed_and_a_writable_one_only_the_snapshots(monkeypatch):
    items = [{"id": str(i), "external": {"id": f"S{i}"}, "stock": {"available": i}} for i in range(3)]
    writable, frozen = offers_frame(items), frame_memo.freeze(offers_frame(items))
    for frame in (writable, frozen):
        check_frame(OfferFrame, frame)
    assert kept_contract(writable) is None  # may be changed in place after its check: checked again
    assert kept_contract(frozen) == kept_contract(frame_memo.shared_view(frozen)) == OfferFrame.Config.name
    monkeypatch.setattr(OfferFrame, "validate", lambda *a, **k: pytest.fail("checked again"))
    assert check_frame(OfferFrame, frame_memo.shared_view(frozen)) is not None


def test_runs_asking_at_once_wait_for_one_computation():
    frame = a_frame()
    views = [frame_memo.shared_view(frame) for _ in range(4)]
    started, computed = threading.Event(), []

    def slow() -> int:
        computed.append(1)
        started.set()
        time.sleep(0.2)  # the others ask while this one computes
        return 42

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(frame_memo.remembered, views[0], "slow", slow)
        started.wait(5)
        others = [pool.submit(frame_memo.remembered, view, "slow", slow) for view in views[1:]]
        assert [f.result() for f in (first, *others)] == [42] * 4
    assert computed == [1]
