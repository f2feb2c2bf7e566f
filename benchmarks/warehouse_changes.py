"""Finding the SKUs a warehouse changed between two snapshots (core/warehouse_changes.py):
prints seconds for 1 M rows with 1 000 SKUs changed, the rows in three orders.

    flock /tmp/bench.lock .venv/bin/python benchmarks/warehouse_changes.py --rows 1000000 --changed 1000

- same order: the query returned its rows as before, 1 000 values changed in place;
- shifted: the same, plus one row inserted near the top, so every later row moved by one
  (no ORDER BY and a heap that placed a new row first; the fast path sets nothing aside);
- shuffled: every row somewhere else.

A figure to watch, not a test: the target is well under a second for 1 M rows.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from stock_pipeline.core.warehouse_changes import warehouse_changes


def snapshots(rows: int, changed: int, seed: int = 1) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rng = np.random.default_rng(seed)
    skus = np.char.add("SKU-", np.arange(rows).astype(str))
    before = pd.DataFrame({"sku": pd.Series(skus, dtype="string"), "stock": rng.integers(0, 50, rows)})
    # A fresh read: new string objects, as the warehouse would hand them over again.
    after = pd.DataFrame({"sku": pd.Series(skus.copy(), dtype="string"), "stock": before["stock"].to_numpy().copy()})
    after.loc[rng.choice(rows, changed - 1, replace=False), "stock"] += 1
    inserted = pd.DataFrame({"sku": pd.Series(["NEW-SKU"], dtype="string"), "stock": [3]})
    shifted = pd.concat([after.iloc[:10], inserted, after.iloc[10:]], ignore_index=True)
    plain = pd.concat([after, inserted], ignore_index=True)  # the same changes, the new row last
    return before, {
        "same order": plain,
        "shifted by one row": shifted,
        "shuffled": plain.sample(frac=1, random_state=seed).reset_index(drop=True),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=1_000, help="SKUs changed (one of them added)")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    before, afters = snapshots(args.rows, args.changed)
    for name, after in afters.items():
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            changes = warehouse_changes(before, after)
            times.append(time.perf_counter() - started)
        assert len(changes) == args.changed, (name, len(changes))
        print(
            f"{name:20} {args.rows} rows, {len(changes)} SKUs changed: "
            f"median {statistics.median(times):.3f} s (min {min(times):.3f}, max {max(times):.3f})"
        )


if __name__ == "__main__":
    main()
