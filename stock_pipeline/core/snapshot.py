"""Cleaning the warehouse snapshot: pure, vectorised, every dropped row counted.

A bad row (empty SKU, NULL, non-integer or negative stock) is excluded and reported;
it must never become a 0 on Allegro, so its SKU is also excluded when another row of
the same SKU is valid (a partial sum would under-report stock).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

MAX_QUANTITY = 99_999


@dataclass(frozen=True)
class CleanSnapshot:
    stock: pd.DataFrame  # columns sku (str, trimmed; may repeat: combined per account policy), stock (int64)
    rows_read: int
    bad_rows: pd.DataFrame  # the rejected rows with a `problem` column
    duplicate_skus: int
    problems: dict[str, int] = field(default_factory=dict)


def clean_snapshot(raw: pd.DataFrame) -> CleanSnapshot:
    missing = {"sku", "stock"} - set(raw.columns)
    if missing:
        raise ValueError(f"the stock query must return columns sku and stock; missing: {', '.join(sorted(missing))} "
                         f"(got: {', '.join(map(str, raw.columns))})")
    sku = raw["sku"].astype("string").str.strip()
    stock_num = pd.to_numeric(raw["stock"], errors="coerce")

    problem = pd.Series(pd.NA, index=raw.index, dtype="string")
    problem = problem.mask(stock_num.isna() & raw["stock"].notna(), "stock is not a number")
    problem = problem.mask(raw["stock"].isna(), "stock is NULL")
    problem = problem.mask(stock_num.notna() & (stock_num != np.floor(stock_num)), "stock is not a whole number")
    problem = problem.mask(stock_num.notna() & (stock_num < 0), "stock is negative")
    problem = problem.mask(sku.isna() | (sku == ""), "SKU is empty")

    bad = problem.notna()
    bad_skus = set(sku[bad & sku.notna() & (sku != "")])
    good = ~bad & ~sku.isin(bad_skus)

    clean = pd.DataFrame({"sku": sku[good].astype("string"), "stock": stock_num[good].astype("int64")})
    # Kept row by row: each account's policy says how rows of one SKU combine.
    duplicate_skus = int(clean["sku"].duplicated().sum())

    bad_rows = raw.loc[bad].assign(problem=problem[bad])
    counts = {str(k): int(v) for k, v in problem[bad].value_counts().items()}
    excluded_by_sibling = int((~bad & sku.isin(bad_skus)).sum())
    if excluded_by_sibling:
        counts["valid row of a SKU that also has a bad row"] = excluded_by_sibling
    return CleanSnapshot(stock=clean.reset_index(drop=True), rows_read=len(raw), bad_rows=bad_rows,
                         duplicate_skus=duplicate_skus, problems=counts)
