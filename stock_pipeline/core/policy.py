"""Per-account stock policy: how warehouse rows become the quantity offered on Allegro.
Pure and vectorised."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

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
    made. Every row of a listed SKU is kept, so each of its targets is the same as without."""
    skus = normalise_skus(rows["sku"], policy)
    if listed_skus is not None:
        keep = _listed(skus, normalise_skus(listed_skus, policy))
        rows, skus = rows[keep], skus[keep]
    codes, skus = pd.factorize(skus)
    if policy.combine == "sum":  # the default: one pass of bincount instead of a groupby
        sums = np.bincount(codes, weights=rows["stock"].to_numpy(dtype="int64"), minlength=len(skus))
        # Saturated, not cast blindly: rows at a huge plausible maximum could sum past
        # int64, wrap to a negative and end the offer.
        stock = np.minimum(sums, float(2**62)).astype("int64")
    else:
        stock = rows["stock"].groupby(codes).agg(policy.combine).to_numpy(dtype="int64")
    reserve = policy.reserve_units + np.ceil(stock * policy.reserve_percent / 100.0).astype("int64")
    target = np.clip(stock - reserve, 0, min(policy.cap, MAX_QUANTITY))
    return pd.DataFrame({"sku": pd.Series(skus, dtype="string"), "stock": target.astype("int64")})


def _listed(skus: pd.Series, listed: pd.Series) -> np.ndarray:
    """Which of `skus` are among `listed`. Hashed by Arrow over its string buffers: one
    snapshot of a million SKUs against an account's offers takes a few hundredths of a
    second, where a pandas hash table of the million Python strings takes ten times more."""
    return pc.is_in(_arrow_strings(skus), value_set=pc.unique(_arrow_strings(listed))).to_numpy(zero_copy_only=False)


def _arrow_strings(strings: pd.Series) -> pa.Array:
    # np.asarray: the string array's own objects (missing ones pd.NA), no copy, no scan.
    return pa.array(np.asarray(strings.array, dtype=object), type=pa.string(), from_pandas=True)
