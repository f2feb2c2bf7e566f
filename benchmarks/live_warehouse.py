"""The live sensor's warehouse side (defs/live_warehouse.py) on a million-row PostgreSQL
warehouse: seconds per tick reading STOCK_QUERY whole against reading only the changed
rows with STOCK_CHANGES_QUERY, 1 000 SKUs changed between ticks.

    flock /tmp/bench.lock .venv/bin/python benchmarks/live_warehouse.py --rows 1000000 --changed 1000

Each tick is `read_warehouse` as the sensor calls it: the read, the cleaning, the
comparison with the previous version, the snapshot guard and saving the new version.
A figure to watch, not a test: the aim is a tick well under the 5 s poll interval.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_world import scratch_database  # noqa: E402

from stock_pipeline.defs.live_warehouse import WarehousePosition, read_warehouse  # noqa: E402
from stock_pipeline.defs.resources import build_resources  # noqa: E402
from stock_pipeline.foundation.settings import load_settings  # noqa: E402
from stock_pipeline.store.engine import engine_for  # noqa: E402

CHANGES = "SELECT sku, stock, changed_at FROM products WHERE changed_at > :since"


def fill(url: str, rows: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text("CREATE TABLE products (sku text PRIMARY KEY, stock integer, changed_at timestamptz NOT NULL)")
        )
        conn.execute(
            sa.text(
                "INSERT INTO products SELECT 'SKU-' || i, i % 50, now() - interval '1 day' "
                "FROM generate_series(1, :rows) AS i"
            ),
            {"rows": rows},
        )
        conn.execute(sa.text("CREATE INDEX products_changed_at ON products (changed_at)"))
        conn.execute(sa.text("ANALYZE products"))
    engine.dispose()


def change(url: str, rows: int, changed: int, round_: int) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE products SET stock = stock + 1, changed_at = now() "
                "WHERE sku IN (SELECT 'SKU-' || ((i * 997 + :round) % :rows + 1) "
                "FROM generate_series(1, :changed) AS i)"
            ),
            {"changed": changed, "round": round_, "rows": rows},
        )
    engine.dispose()


def ticks(settings, stock_url: str, rows: int, changed: int, repeat: int, label: str) -> list[float]:
    resources = build_resources(settings)
    engine = engine_for(settings.stock_pipeline_database_url)
    tick = read_warehouse(  # the baseline version
        resources["stock_db"],
        resources["live"],
        resources["guards"],
        engine,
        WarehousePosition(None),
        datetime.now(timezone.utc),
    )
    times = []
    for round_ in range(repeat):
        change(stock_url, rows, changed, round_ + (1000 if label == "changes" else 0))
        started = time.perf_counter()
        tick = read_warehouse(
            resources["stock_db"],
            resources["live"],
            resources["guards"],
            engine,
            tick.position,
            datetime.now(timezone.utc),
        )
        times.append(time.perf_counter() - started)
        assert len(tick.changed) == changed, (label, len(tick.changed))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--changed", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--profile", action="store_true", help="cProfile the changes ticks")
    args = parser.parse_args()
    with ExitStack() as stack:
        stock_url = stack.enter_context(scratch_database(args.postgres_url, "stock"))
        pipeline_url = stack.enter_context(scratch_database(args.postgres_url, "pipeline"))
        frames = stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-live-"))
        fill(stock_url, args.rows)
        base = {
            "STOCK_DATABASE_URL": stock_url,
            "STOCK_QUERY": "SELECT sku, stock FROM products",
            "STOCK_PIPELINE_DATABASE_URL": pipeline_url,
            "STOCK_PIPELINE_STORAGE_DIR": frames,
        }
        for label, extra in (("whole", {}), ("changes", {"STOCK_CHANGES_QUERY": CHANGES})):
            (Path(frames) / "live_warehouse").exists() and [
                p.unlink() for p in (Path(frames) / "live_warehouse").iterdir()
            ]
            if args.profile and label == "changes":
                import cProfile
                import pstats

                profiler = cProfile.Profile()
                profiler.enable()
            times = ticks(load_settings(base | extra), stock_url, args.rows, args.changed, args.repeat, label)
            if args.profile and label == "changes":
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            print(
                f"{'STOCK_QUERY whole' if label == 'whole' else 'STOCK_CHANGES_QUERY':20} {args.rows} rows, "
                f"{args.changed} SKUs changed a tick: median {statistics.median(times):.3f} s "
                f"(min {min(times):.3f}, max {max(times):.3f})"
            )
    with open("/proc/loadavg") as handle:
        print(f"load average: {handle.read().split()[0]}")


if __name__ == "__main__":
    main()
