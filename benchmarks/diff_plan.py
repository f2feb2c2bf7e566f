"""Diff and write planning over synthetic data: prints seconds per account and in all.

    .venv/bin/python benchmarks/diff_plan.py --skus 1000000 --accounts 10

A figure to watch, not a test: the target is 1 M SKUs x 10 accounts in <= 2 s.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from stock_pipeline.core.diff import compute_diff
from stock_pipeline.core.plan import plan_writes
from stock_pipeline.core.policy import StockPolicy, apply_policy


def synthetic(skus: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    names = pd.Series(np.char.add("SKU-", np.arange(skus).astype(str)), dtype="string")
    warehouse = pd.DataFrame({"sku": names, "stock": rng.integers(0, 50, skus)})
    current = warehouse["stock"].to_numpy().copy()
    changed = rng.random(skus) < 0.05  # a 30-minute cycle changes a few percent
    current[changed] = rng.integers(0, 50, int(changed.sum()))
    offers = pd.DataFrame(
        {
            "offer_id": pd.Series(np.arange(10**10, 10**10 + skus).astype(str), dtype="string"),
            "sku": names,
            "stock": current.astype("int64"),
            "status": pd.Series(np.where(current > 0, "ACTIVE", "ENDED"), dtype="string"),
        }
    )
    return warehouse, offers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--skus", type=int, default=1_000_000)
    parser.add_argument("--accounts", type=int, default=10)
    args = parser.parse_args()
    warehouse, offers = synthetic(args.skus, seed=1)
    total = 0.0
    for account in range(args.accounts):
        started = time.perf_counter()
        targets = apply_policy(warehouse, StockPolicy())
        plan = plan_writes(compute_diff(offers, targets), 1000)
        elapsed = time.perf_counter() - started
        total += elapsed
        print(f"account {account}: {len(offers)} offers, {len(plan)} planned writes, {elapsed:.3f} s")
    print(f"total: {total:.3f} s for {args.accounts} accounts x {args.skus} SKUs")


if __name__ == "__main__":
    main()
