"""Per-account stock policy: how warehouse rows become the quantity offered on Allegro.
Pure and vectorised."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import SnapshotFrame, kept_contract
from stock_pipeline.core.snapshot import MAX_QUANTITY

COMBINE_MODES = ("sum", "max", "min")


@dataclass(frozen=True)
class StockPolicy:
    reserve_units: int = 0  # kept back per SKU (e.g. for the shop's own counter)
    reserve_percent: float = 0.0  # kept back as a share of the SKU's stock, rounded up
    cap: int = MAX_QUANTITY  # never offer more than this; Allegro's maximum is 99 999
    combine: str = "sum"  # several rows of one SKU: several warehouses add up by default
    case_insensitive_skus: bool = False  # match "abc-1" with "ABC-1"

    def __post_init__(self):
        problems = []
        if not isinstance(self.reserve_units, int) or self.reserve_units < 0:
            problems.append(f"reserve_units must be a whole number >= 0, got {self.reserve_units!r}")
        if not 0 <= self.reserve_percent < 100:
            problems.append(f"reserve_percent must be 0..<100, got {self.reserve_percent!r}")
        if not isinstance(self.cap, int) or not 0 <= self.cap <= MAX_QUANTITY:
            problems.append(f"cap must be a whole number 0..{MAX_QUANTITY}, got {self.cap!r}")
        if self.combine not in COMBINE_MODES:
            problems.append(f"combine must be one of {', '.join(COMBINE_MODES)}, got {self.combine!r}")
        if problems:
            raise ValueError("stock policy: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


def normalise_skus(skus: pd.Series, policy: StockPolicy) -> pd.Series:
    """Snapshot SKUs arrive trimmed (clean_snapshot); case is folded only when asked."""
    return skus.str.upper() if policy.case_insensitive_skus else skus


def apply_policy(rows: pd.DataFrame, policy: StockPolicy, listed_skus: pd.Series | None = None) -> pd.DataFrame:
    """Warehouse rows (sku, stock; a SKU may repeat) → one target quantity per SKU.

    `listed_skus`: when given, only the targets of these SKUs (an account's offers) are
    made; each is the same as without."""
    combined = combined_stock(rows, policy)
    skus, stock = combined.skus, combined.stock
    if listed_skus is not None:
        position = skus.get_indexer(normalise_skus(listed_skus, policy))
        # Each listed SKU once, in the order of the snapshot, as without `listed_skus`.
        listed = np.zeros(len(skus), dtype=bool)
        listed[position[position >= 0]] = True
        position = np.flatnonzero(listed)
        skus, stock = skus[position], stock[position]
    return pd.DataFrame({"sku": pd.Series(skus.array, dtype="string"), "stock": _targets(stock, policy)})


def offer_targets(rows: pd.DataFrame, policy: StockPolicy, skus: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """For each of `skus` (an account's offers' SKUs, normalised by `normalise_skus`):
    whether the warehouse rows hold it, and its target, the one `apply_policy` makes.
    One lookup per offer, in the snapshot's index hashed once (`combined_stock`)."""
    combined = combined_stock(rows, policy)
    position = combined.skus.get_indexer(skus)  # a missing SKU is never found: the index holds none
    found = position >= 0
    target = np.zeros(len(position), dtype="int64")
    target[found] = _targets(combined.stock[position[found]], policy)
    return found, target


def _targets(stock: np.ndarray, policy: StockPolicy) -> np.ndarray:
    reserve = policy.reserve_units + np.ceil(stock * policy.reserve_percent / 100.0).astype("int64")
    return np.clip(stock - reserve, 0, min(policy.cap, MAX_QUANTITY)).astype("int64")


@dataclass(frozen=True, eq=False)
class CombinedStock:
    """The rows of each SKU combined as a policy says (before its reserve and cap)."""

    skus: pd.Index  # each (normalised) SKU once, in the order of its first row; hashed once
    stock: np.ndarray  # int64, aligned with skus


def combined_stock(rows: pd.DataFrame, policy: StockPolicy) -> CombinedStock:
    """Worked out once per checked snapshot and way of combining: every account then only
    looks up its own SKUs in the hashed index, instead of hashing the million rows again.
    Remembered only for a frame that passed the snapshot contract, which nothing changes
    after its check (core/frame_memo.py); any other rows are combined afresh."""
    if kept_contract(rows) != SnapshotFrame.Config.name:
        return _combine(rows, policy)
    key = ("combined stock", policy.case_insensitive_skus, policy.combine)
    return frame_memo.remembered(rows, key, lambda: _combine(rows, policy))


def _combine(rows: pd.DataFrame, policy: StockPolicy) -> CombinedStock:
    codes, skus = pd.factorize(normalise_skus(rows["sku"], policy))
    if policy.combine == "sum":  # the default: one pass of bincount instead of a groupby
        sums = np.bincount(codes, weights=rows["stock"].to_numpy(dtype="int64"), minlength=len(skus))
        # Saturated, not cast blindly: rows at a huge plausible maximum could sum past
        # int64, wrap to a negative and end the offer.
        stock = np.minimum(sums, float(2**62)).astype("int64")
    else:
        stock = rows["stock"].groupby(codes).agg(policy.combine).to_numpy(dtype="int64")
    index = pd.Index(skus, dtype="string")
    index.get_indexer(index[:0])  # builds the hash table now, once, not in the first account's lookup
    return CombinedStock(index, stock)
