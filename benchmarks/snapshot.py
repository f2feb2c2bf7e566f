"""Snapshot cleaning over synthetic rows, once per way a driver may hand the stock column
over: prints seconds per column kind.

    .venv/bin/python benchmarks/snapshot.py --rows 1000000

A figure to watch, not a test: every kind should clean 1 M rows in about a second.
"""

from __future__ import annotations

import argparse
import time
from decimal import Decimal

import numpy as np
import pandas as pd

from stock_pipeline.core.snapshot import clean_snapshot


def columns(rows: int) -> dict[str, pd.Series]:
    stock = np.random.default_rng(0).integers(0, 500, rows)
    as_list = stock.tolist()
    return {
        "int64 (integer, NOT NULL)": pd.Series(stock),
        "float64 (double precision)": pd.Series(stock.astype(float)),
        "ints and a NULL (integer)": pd.Series(as_list[:-1] + [None], dtype=object),
        "Decimal (numeric)": pd.Series([Decimal(v) for v in as_list], dtype=object),
        "text": pd.Series([str(v) for v in as_list], dtype=object),
        "text with spaces and +": pd.Series([f" +{v} " for v in as_list], dtype=object),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    skus = pd.Series(np.char.add("SKU-", np.arange(args.rows).astype(str)), dtype=object)
    for name, stock in columns(args.rows).items():
        started = time.perf_counter()
        snapshot = clean_snapshot(pd.DataFrame({"sku": skus, "stock": stock}), max_plausible=1_000_000)
        print(f"{name:30} {time.perf_counter() - started:6.2f} s  ({len(snapshot.stock)} good rows)")


if __name__ == "__main__":
    main()
