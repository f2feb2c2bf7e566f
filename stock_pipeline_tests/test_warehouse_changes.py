"""Which SKUs the warehouse changed between two snapshots (core/warehouse_changes.py)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd
import pytest

from stock_pipeline.core.policy import StockPolicy, offer_targets
from stock_pipeline.core.warehouse_changes import ADDED, CHANGE_COLUMNS, CHANGED, REMOVED, rows_of, warehouse_changes


def snapshot(*pairs):
    return pd.DataFrame(
        {"sku": pd.Series([s for s, _ in pairs], dtype="string"), "stock": np.array([v for _, v in pairs], "int64")}
    )


def changed(before, after) -> dict:
    frame = warehouse_changes(before, after)
    assert list(frame.columns) == CHANGE_COLUMNS
    return {
        r.sku: (
            r.change,
            r.before_rows,
            r.after_rows,
            None if pd.isna(r.before_sum) else r.before_sum,
            None if pd.isna(r.after_sum) else r.after_sum,
        )
        for r in frame.itertuples()
    }


def test_the_same_rows_in_any_order_are_no_change():
    rows = [("A", 1), ("B", 2), ("B", 3), ("C", 0)]
    assert changed(snapshot(*rows), snapshot(*rows)) == {}
    assert changed(snapshot(*rows), snapshot(*reversed(rows))) == {}
    assert changed(snapshot(), snapshot()) == {}
    assert (
        warehouse_changes(snapshot(), snapshot()).dtypes.to_dict()
        == warehouse_changes(snapshot(("A", 1)), snapshot(("A", 2))).dtypes.to_dict()
    )


def test_a_value_changed_a_sku_added_and_one_removed():
    before = snapshot(("A", 1), ("B", 2), ("C", 3))
    after = snapshot(("A", 1), ("B", 5), ("D", 4))
    assert changed(before, after) == {
        "B": (CHANGED, 1, 1, 2, 5),
        "C": (REMOVED, 1, 0, 3, None),
        "D": (ADDED, 0, 1, None, 4),
    }


def test_a_sku_changed_when_its_multiset_of_rows_changed():
    before = snapshot(("A", 3), ("A", 5), ("B", 5), ("B", 5), ("C", 2), ("C", 2), ("D", 1), ("D", 2))
    after = snapshot(
        ("A", 4),
        ("A", 4),  # the same sum, other values
        ("B", 5),  # a row gone: its warehouse closed
        ("C", 2),
        ("C", 2),  # the same
        ("D", 2),
        ("D", 1),  # the same rows, swapped
    )
    assert changed(before, after) == {"A": (CHANGED, 2, 2, 8, 8), "B": (CHANGED, 2, 1, 10, 5)}


def test_rows_set_aside_as_equal_still_count_in_their_skus_summary():
    before = snapshot(("A", 3), ("B", 1), ("A", 5))
    after = snapshot(("A", 3), ("B", 1), ("A", 6))  # A's first row is equal at the same place
    assert changed(before, after) == {"A": (CHANGED, 2, 2, 8, 9)}


def test_a_row_inserted_in_the_middle_shifts_the_others_without_changing_them():
    rows = [(f"S{i}", i) for i in range(50)]
    after = rows[:10] + [("NEW", 7)] + rows[10:40] + rows[41:] + [("S5", 1)]  # one added, one gone, a second S5
    assert changed(snapshot(*rows), snapshot(*after)) == {
        "NEW": (ADDED, 0, 1, None, 7),
        "S40": (REMOVED, 1, 0, 40, None),
        "S5": (CHANGED, 1, 2, 5, 6),
    }


@pytest.mark.parametrize("seed", range(20))
def test_agrees_with_counting_rows_one_by_one(seed):
    rng = np.random.default_rng(seed)
    skus = [f"K{i}" for i in range(40)]
    before = [(skus[rng.integers(40)], int(rng.integers(0, 4))) for _ in range(120)]
    after = list(before)
    for _ in range(int(rng.integers(0, 15))):
        what = rng.integers(3)
        if what == 0 and after:
            after.pop(int(rng.integers(len(after))))
        elif what == 1:
            after.insert(int(rng.integers(len(after) + 1)), (skus[rng.integers(40)], int(rng.integers(0, 4))))
        elif after:
            at = int(rng.integers(len(after)))
            after[at] = (after[at][0], int(rng.integers(0, 4)))
    if seed % 2:
        after = [after[i] for i in rng.permutation(len(after))]
    old, new = Counter(before), Counter(after)
    expected = {
        s
        for s in skus
        if Counter({k: v for k, v in old.items() if k[0] == s}) != Counter({k: v for k, v in new.items() if k[0] == s})
    }
    found = changed(snapshot(*before), snapshot(*after))
    assert set(found) == expected
    for sku, (_, before_rows, after_rows, before_sum, after_sum) in found.items():
        assert before_rows == sum(1 for s, _ in before if s == sku)
        assert after_rows == sum(1 for s, _ in after if s == sku)
        assert before_sum == (sum(v for s, v in before if s == sku) if before_rows else None)
        assert after_sum == (sum(v for s, v in after if s == sku) if after_rows else None)


def test_the_changed_skus_rows_give_each_accounts_targets():
    before = snapshot(("A", 3), ("A", 5), ("B", 1))
    after = snapshot(("A", 3), ("A", 9), ("B", 1))
    skus = warehouse_changes(before, after)["sku"]
    rows = rows_of(after, skus)
    assert rows.values.tolist() == [["A", 3], ["A", 9]]
    found, target = offer_targets(rows, StockPolicy(combine="max", reserve_units=1), skus)
    assert found.tolist() == [True] and target.tolist() == [8]


def test_bad_snapshots_are_refused_with_what_is_wrong():
    with pytest.raises(ValueError, match="snapshot after lacks columns stock"):
        warehouse_changes(snapshot(("A", 1)), pd.DataFrame({"sku": ["A"]}))
    with_gap = pd.DataFrame({"sku": pd.Series(["A", None], dtype="string"), "stock": [1, 2]})
    for before, after in ((with_gap, with_gap), (snapshot(("A", 1)), with_gap)):
        with pytest.raises(ValueError, match="a snapshot has an empty SKU"):
            warehouse_changes(before, after)


def test_changed_rows_replace_every_row_of_their_skus_and_keep_the_others_in_place():
    from stock_pipeline.core.warehouse_changes import overlay_changed_rows

    before = snapshot(("A", 1), ("B", 2), ("B", 3), ("C", 4), ("D", 5))
    # B now has one row, C's rows all turned bad (named by the query, no clean row), E is
    # new, D was read again unchanged.
    rows = snapshot(("B", 7), ("D", 5), ("E", 1))
    overlay = overlay_changed_rows(before, pd.Index(["B", "C", "D", "E"], dtype="string"), rows)
    after = overlay.snapshot
    assert list(after.itertuples(index=False, name=None)) == [("A", 1), ("B", 7), ("D", 5), ("E", 1)]
    assert list(after.columns) == ["sku", "stock"]
    assert list(overlay.changes["sku"]) == ["B", "C", "E"] == sorted(warehouse_changes(before, after)["sku"])
    # The distinct SKU count follows without counting the whole snapshot again: 4 - 3 + 3.
    assert before["sku"].nunique() - overlay.skus_left + overlay.skus_came == after["sku"].nunique()


def test_rows_read_again_unchanged_leave_the_snapshot_as_it_was():
    from stock_pipeline.core.warehouse_changes import overlay_changed_rows

    before = snapshot(("A", 1), ("B", 2), ("B", 3))
    overlay = overlay_changed_rows(before, pd.Index(["B"], dtype="string"), snapshot(("B", 3), ("B", 2)))
    assert overlay.changes.empty and overlay.snapshot is before
