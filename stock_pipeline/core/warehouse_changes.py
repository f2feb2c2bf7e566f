"""Which SKUs the warehouse changed between two snapshots: what a change-driven sync
writes. Pure and vectorised (no Python per row).

The inputs are cleaned snapshot frames (`sku, stock`, core/snapshot.py's CleanSnapshot.stock):
a SKU may have several rows (several warehouses), which each account's policy combines
later (sum, max, min). So a SKU changed when its *multiset* of rows changed: a row added,
removed, or a value changed — not when the rows merely come in another order. A SKU that
appears is "added", one that disappears (no row, or its rows were excluded as bad) is
"removed".

What it returns is each changed SKU with a summary of its rows on both sides (counts and
sums), not the values an account offers: those depend on the account's policy. The
caller combines the changed SKUs' new rows with each account's policy
(`core.policy.offer_targets(rows_of(after, changes["sku"]), policy, skus)`). SKUs are
compared exactly as the snapshot holds them (trimmed, case kept): an account matching
SKUs case-insensitively folds the changed SKUs itself (`core.policy.normalise_skus`).

How: snapshots read with the same query usually hold their rows in the same order, so rows
equal at the same position on both sides are set aside first (removing the same row from
both multisets leaves their difference unchanged); only the remaining rows, few when few
changed, are grouped by SKU. A SKU whose row count or stock sum differs changed; one row
on each side with equal sums is the same row; several rows with equal counts and sums
(3+5 against 4+4) are counted per (SKU, value), +1 new and -1 old, and any non-zero count
means changed. Reordered rows are still right, only slower: every
row moved is then hashed (1 M rows: ~0.1 s in the same order, ~0.5 s shifted by a row,
~1 s shuffled on a busy 2-core machine; benchmarks/warehouse_changes.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

ADDED = "added"
REMOVED = "removed"
CHANGED = "changed"
CHANGE_COLUMNS = ["sku", "change", "before_rows", "after_rows", "before_sum", "after_sum"]
EMPTY_SKU = "a snapshot has an empty SKU: warehouse_changes compares cleaned snapshots (core/snapshot.py)"


def warehouse_changes(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """The SKUs whose rows differ between snapshot `before` and snapshot `after`, one row
    each (CHANGE_COLUMNS), ordered by SKU: `change` added / removed / changed; the number
    of rows of the SKU on each side (0 where absent) and the sum of their stock (<NA>
    where absent; the combined value under the default `sum` policy, before its reserve
    and cap)."""
    old_sku, old_stock = _columns(before, "before")
    new_sku, new_stock = _columns(after, "after")
    both = min(len(old_sku), len(new_sku))
    try:
        same = np.equal(old_sku[:both], new_sku[:both]) & (old_stock[:both] == new_stock[:both])
    except TypeError:  # a missing SKU compares as <NA>, which is no truth value
        raise ValueError(EMPTY_SKU) from None
    old_left = np.concatenate([np.flatnonzero(~same), np.arange(both, len(old_sku))])
    new_left = np.concatenate([np.flatnonzero(~same), np.arange(both, len(new_sku))])
    if not len(old_left) and not len(new_left):
        return _empty()
    left = _Rows(
        np.concatenate([old_sku[old_left], new_sku[new_left]]),
        np.concatenate([old_stock[old_left], new_stock[new_left]]),
        len(old_left),
    )
    changed = left.changed()
    if not changed.any():
        return _empty()
    skus = left.skus[changed]
    old_rows, new_rows = left.old_rows[changed], left.new_rows[changed]
    old_sum, new_sum = left.old_sum[changed], left.new_sum[changed]
    if same.any():
        # Rows set aside as equal on both sides still belong to their SKU (one with several
        # rows, of which only some changed): they count the same on both sides.
        position = pd.Index(skus, dtype=object).get_indexer(old_sku[:both][same])
        hit = position >= 0
        rows = np.bincount(position[hit], minlength=len(skus))
        sums = np.bincount(position[hit], weights=old_stock[:both][same][hit], minlength=len(skus))
        old_rows, new_rows, old_sum, new_sum = old_rows + rows, new_rows + rows, old_sum + sums, new_sum + sums
    frame = pd.DataFrame(
        {
            "sku": pd.array(skus, dtype="string"),
            "change": pd.array(np.where(old_rows == 0, ADDED, np.where(new_rows == 0, REMOVED, CHANGED)), "string"),
            "before_rows": old_rows.astype("int64"),
            "after_rows": new_rows.astype("int64"),
            "before_sum": _sums(old_sum, old_rows),
            "after_sum": _sums(new_sum, new_rows),
        }
    )
    return frame.sort_values("sku", kind="stable").reset_index(drop=True)


class _Rows:
    """The rows left after setting aside the equal ones: the first `old` from the old
    snapshot, the rest from the new. Each SKU's rows are counted and summed per side."""

    def __init__(self, sku: np.ndarray, stock: np.ndarray, old: int):
        self.code, skus = pd.factorize(sku)
        if len(self.code) and self.code.min() < 0:
            raise ValueError(EMPTY_SKU)
        self.skus = np.asarray(skus, dtype=object)
        self.stock, self.old = stock, old
        old_code, new_code = self.code[:old], self.code[old:]
        size = len(self.skus)
        self.old_rows = np.bincount(old_code, minlength=size)
        self.new_rows = np.bincount(new_code, minlength=size)
        # float64 sums: exact for one row (stock <= 2^53); several rows with equal sums
        # are compared value by value below, so rounding never hides a change.
        self.old_sum = np.bincount(old_code, weights=stock[:old], minlength=size)
        self.new_sum = np.bincount(new_code, weights=stock[old:], minlength=size)

    def changed(self) -> np.ndarray:
        """Per SKU: whether its multiset of rows differs. Different counts or sums decide at
        once; one row each with equal sums is the same row; several rows with equal counts
        and sums are counted per (SKU, value)."""
        changed = (self.old_rows != self.new_rows) | (self.old_sum != self.new_sum)
        several = ~changed & (self.old_rows > 1)
        if several.any():
            rows = np.flatnonzero(several[self.code])
            sign = np.where(rows < self.old, -1, 1)
            value_code, values = pd.factorize(self.stock[rows])
            pair, _ = pd.factorize(self.code[rows].astype("int64") * len(values) + value_code)
            unbalanced = np.bincount(pair, weights=sign) != 0
            changed[self.code[rows][unbalanced[pair]]] = True
        return changed


def _sums(sums: np.ndarray, rows: np.ndarray) -> pd.arrays.IntegerArray:
    values = np.minimum(sums, float(2**62)).astype("int64")
    return pd.arrays.IntegerArray(values, mask=rows == 0)


def rows_of(snapshot: pd.DataFrame, skus: pd.Series | pd.Index | list) -> pd.DataFrame:
    """The snapshot's rows of `skus` (in the snapshot's order): what a policy combines into
    those SKUs' targets."""
    keep = snapshot["sku"].isin(pd.Index(skus)).to_numpy(dtype=bool)
    return snapshot[keep].reset_index(drop=True)


@dataclass(frozen=True)
class Overlay:
    """A snapshot with a changes query's rows laid over it (`overlay_changed_rows`)."""

    snapshot: pd.DataFrame  # the snapshot once the changed SKUs hold their new rows
    changes: pd.DataFrame  # warehouse_changes between the two, over the changed SKUs only
    skus_left: int  # distinct SKUs that left: the snapshot's count is the old one - skus_left + skus_came
    skus_came: int


def overlay_changed_rows(snapshot: pd.DataFrame, skus: pd.Index, rows: pd.DataFrame) -> Overlay:
    """`snapshot` with every row of `skus` (the SKUs a changes query returned, trimmed as
    the cleaning trims them) replaced by `rows` (their cleaned rows now; a SKU whose rows
    all turned bad has none, exactly as a full read would exclude it), and what changed.
    Only the touched SKUs' rows are compared, so a tick costs what changed, not the
    warehouse's size. The untouched rows keep their order, so the next full comparison
    still finds most rows in place."""
    touched = snapshot["sku"].isin(skus).to_numpy(dtype=bool)
    old_rows = snapshot[touched]
    changes = warehouse_changes(old_rows.reset_index(drop=True), rows)
    if not len(changes):
        return Overlay(snapshot, changes, 0, 0)
    after = pd.concat([snapshot[~touched], rows[list(snapshot.columns)]], ignore_index=True)
    return Overlay(after, changes, int(old_rows["sku"].nunique()), int(rows["sku"].nunique()))


def _columns(frame: pd.DataFrame, name: str) -> tuple[np.ndarray, np.ndarray]:
    missing = {"sku", "stock"} - set(frame.columns)
    if missing:
        raise ValueError(f"snapshot {name} lacks columns {', '.join(sorted(missing))} (got {', '.join(frame.columns)})")
    return np.asarray(frame["sku"].array, dtype=object), frame["stock"].to_numpy(dtype="int64")


def _empty() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "sku": pd.Series(dtype="string"),
            "change": pd.Series(dtype="string"),
            "before_rows": pd.Series(dtype="int64"),
            "after_rows": pd.Series(dtype="int64"),
            "before_sum": pd.Series(dtype="Int64"),
            "after_sum": pd.Series(dtype="Int64"),
        }
    )


__all__ = [
    "ADDED",
    "CHANGED",
    "CHANGE_COLUMNS",
    "REMOVED",
    "Overlay",
    "overlay_changed_rows",
    "rows_of",
    "warehouse_changes",
]
