"""The pipeline at scale (issue 10): a 1 M-row warehouse and 10 accounts x 100 000 offers.

    .venv/bin/python benchmarks/scale.py                      # Postgres and SQLite
    .venv/bin/python benchmarks/scale.py --warehouse sqlite   # no Postgres needed
    .venv/bin/python benchmarks/scale.py --end-to-end         # a full sync on the simulator
    .venv/bin/python benchmarks/scale.py --end-to-end --accounts 4 --offers 20000 --warehouse-rows 200000

The pure parts (default): builds the warehouse in a scratch Postgres database (created
and dropped here) and/or a SQLite file, reads it with read_stock, cleans it, checks the
snapshot contract, then for each account plans the writes as the stock_diff asset does
(policy, diff, plan, minimum calls, contracts of the offer map and the plan), and stores
each kind of asset value with the frames IO manager. Prints each figure, the peak RSS,
and the targets: diff + planning of all accounts <= 2 s, peak RSS <= 1.5 GB; and, apart,
what each account's Dagster run adds: storing the shared snapshot, loading it, its input check.

--end-to-end: the world of benchmarks/throughput.py (bench_world) at this scale: the
Allegro simulator in a process of its own holding every account's offers, --changed of
each account's SKUs with a new value in the warehouse and --to-zero sold out (1 % in all
by default), the warehouse padded to --warehouse-rows rows with SKUs no account lists;
then `stock-pipeline sync` of every account, a process of its own as a seller or cron runs
it (a Postgres Dagster instance). Prints the whole CLI process's wall time against the
cycle's floor (target <= 1.5 x), calls against the minimum, 429s, offers wrong afterwards,
the CLI's CPU time and peak RSS (target <= 1.5 GB), each asset step's time per account (the
instance's step stats) with the CLI's peak RSS while it ran, the RSS over time, and the
disk the stored asset values take. Needs PostgreSQL and Redis.
A figure to watch, not a test.
"""

from __future__ import annotations

import argparse
import os
import pickle
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from bench_world import (
    add_sync_arguments,
    build_world,
    offers_wrong,
    patches_needed,
    pipeline_world,
    print_sync_figures,
    scratch_database,
    sync_floor,
)

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import OfferFrame, OfferMap, PlanFrame, SnapshotFrame, check_frame
from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.core.snapshot import clean_snapshot
from stock_pipeline.defs.account_steps import plan_account_offers
from stock_pipeline.defs.io_manager import load_shared, load_value, store_shared, store_value
from stock_pipeline.defs.resources import build_resources
from stock_pipeline.foundation.settings import Settings
from stock_pipeline.warehouse.stock_source import read_stock

TARGET_SECONDS = 2.0
TARGET_RSS_BYTES = 1.5 * 2**30
TARGET_WALL_OVER_FLOOR = 1.5
ADMIN_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
QUERY = "SELECT sku, stock FROM products"


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def rss_note() -> str:
    return f"peak RSS so far {peak_rss_bytes() / 2**20:,.0f} MiB"


# ---- the warehouse ------------------------------------------------------------------------

# Rows made by the database itself, so building them costs this process no memory: SKU-<n>,
# stock 0..499, about 0.1 % of rows bad (NULL) to keep the cleaning's slow paths honest.
_ROWS_SQL = "SELECT 'SKU-' || n, CASE WHEN n % 997 = 0 THEN NULL ELSE (n % 500) * 7919 % 500 END FROM {series}"


@contextmanager
def postgres_warehouse(rows: int, admin_url: str):
    with scratch_database(admin_url, "scale_stock") as url:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE products (sku text, stock integer)"))
            conn.execute(
                sa.text("INSERT INTO products " + _ROWS_SQL.format(series="generate_series(0, :last) AS n")),
                {"last": rows - 1},
            )
        engine.dispose()
        yield url


@contextmanager
def sqlite_warehouse(rows: int):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder, "warehouse.db")
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE products (sku text, stock integer)")
            conn.execute(
                "WITH RECURSIVE series(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM series WHERE n < ?) "
                "INSERT INTO products " + _ROWS_SQL.format(series="series"),
                (rows - 1,),
            )
        yield f"sqlite:///{path}"


def read_and_clean(label: str, url: str) -> pd.DataFrame:
    started = time.perf_counter()
    raw = read_stock(url, QUERY)
    read = time.perf_counter() - started
    started = time.perf_counter()
    snapshot = clean_snapshot(raw, max_plausible=1_000_000)
    cleaned = time.perf_counter() - started
    started = time.perf_counter()
    check_frame(SnapshotFrame, snapshot.stock)
    checked = time.perf_counter() - started
    print(
        f"{label:9} read {len(raw):,} rows in {read:.2f} s ({len(raw) / read:,.0f} rows/s, "
        f"stock {raw['stock'].dtype}); "
        f"clean_snapshot {cleaned:.2f} s ({len(snapshot.bad_rows):,} bad rows); "
        f"snapshot contract {checked:.2f} s; {rss_note()}"
    )
    return snapshot.stock


# ---- the accounts ---------------------------------------------------------------------------


def offer_maps(accounts: int, offers: int, snapshot: pd.DataFrame, seed: int = 1) -> list[OfferMap]:
    """Each account lists `offers` offers of SKUs drawn from the snapshot (a few not in it),
    their stock as the warehouse has it except for the ~5 % that changed since the last run."""
    rng = np.random.default_rng(seed)
    skus = snapshot["sku"].to_numpy(dtype=object)
    stock = snapshot["stock"].to_numpy()
    maps = []
    for account in range(accounts):
        picked = rng.choice(len(skus), size=offers, replace=False)
        current = stock[picked].copy()
        changed = rng.random(offers) < 0.05
        current[changed] = rng.integers(0, 500, int(changed.sum()))
        sku = skus[picked].copy()
        sku[rng.random(offers) < 0.01] = None  # offers without external.id
        frame = pd.DataFrame(
            {
                "offer_id": pd.Series(np.arange(offers, dtype=np.int64) + 10**10 * (account + 1)).astype(str),
                "sku": sku,
                "stock": current.astype("int64"),
                "status": np.where(current > 0, "ACTIVE", "ENDED"),
            }
        ).astype({"offer_id": "string", "sku": "string", "status": "string"})
        maps.append(OfferMap.from_listing(f"account-{account}", frame, offers))
    return maps


def diff_and_plan(snapshot: pd.DataFrame, maps: list[OfferMap]) -> tuple[float, list[pd.DataFrame]]:
    """As the stock_diff asset: the loaded values' contracts, policy, diff, plan, minimum
    calls, and the plan's contract as it is handed over."""
    total, plans = 0.0, []
    policy = StockPolicy()
    # Routes by time, as a run of a sync of all these accounts plans them (default settings).
    rates = build_resources(Settings())["allegro"].write_rates(len(maps))
    for offer_map in maps:
        started = time.perf_counter()
        check_frame(SnapshotFrame, snapshot)
        check_frame(OfferFrame, offer_map.offers)
        planned = plan_account_offers(offer_map, snapshot, policy, frozenset(), 1000, rates=rates)
        plan = check_frame(PlanFrame, planned.plan)
        minimum = planned.minimum_api_calls
        elapsed = time.perf_counter() - started
        total += elapsed
        plans.append(plan)
        print(
            f"  {offer_map.account}: {offer_map.listed:,} offers, {len(plan):,} planned writes "
            f"(minimum {minimum:,} calls), {elapsed:.3f} s"
        )
    return total, plans


def io_figures(values: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        for name, value in values.items():
            path = Path(folder, name)
            started = time.perf_counter()
            store_value(value, path)
            written = time.perf_counter() - started
            started = time.perf_counter()
            load_value(path)
            loaded = time.perf_counter() - started
            pickled = len(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))
            print(
                f"  {name:14} write {written:.3f} s, read {loaded:.3f} s, "
                f"{path.stat().st_size / 2**20:6.2f} MiB on disk "
                f"(pickle: {pickled / 2**20:6.2f} MiB)"
            )


def stored_snapshot_per_account(snapshot: pd.DataFrame, accounts: int) -> float:
    """What each account's Dagster run adds before its diff: its snapshot step storing the
    snapshot it shares with the other runs (a link to the content stored once), its loads of
    it (views of one read-only frame: read from disk once per process) and the stock_diff
    input's contract check. Not part of the 2 s target; printed to watch."""
    total = 0.0
    with tempfile.TemporaryDirectory() as folder:
        shared = frame_memo.shared_view(snapshot)
        check_frame(SnapshotFrame, shared)  # the snapshot step's output check
        for account in range(accounts):
            started = time.perf_counter()
            store_shared(frame_memo.shared_view(shared), Path(folder), Path(folder, "runs", f"run-{account}.parquet"))
            check_frame(SnapshotFrame, load_shared(Path(folder, "runs", f"run-{account}.parquet")))
            total += time.perf_counter() - started
    print(
        f"  each account's run storing, loading and checking the shared snapshot: "
        f"{total / accounts:.3f} s per account, {total:.3f} s for {accounts} (the first writes and reads it)"
    )
    return total


# ---- end to end: a full sync on the simulator -----------------------------------------


def fill_warehouse(rows: pd.DataFrame, padding: int):
    """The world's warehouse rows by COPY, and `padding` more rows of SKUs no account lists,
    made by the database itself."""

    def fill(url: str) -> None:
        engine = sa.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE products (sku text, stock integer)"))
            with conn.connection.driver_connection.cursor().copy("COPY products (sku, stock) FROM STDIN") as copy:
                for row in zip(rows["sku"].tolist(), rows["stock"].tolist()):
                    copy.write_row(row)
            conn.execute(
                sa.text("INSERT INTO products SELECT 'W-' || n, n * 7919 % 500 FROM generate_series(1, :n) AS n"),
                {"n": padding},
            )
        engine.dispose()

    return fill


def disk_use(folder: str) -> tuple[int, int]:
    """(files, bytes on disk) under `folder`; a link counts as the link, not what it names."""
    files, used = 0, 0
    for root, _, names in os.walk(folder):
        for name in names:
            files += 1
            used += os.lstat(os.path.join(root, name)).st_blocks * 512
    return files, used


@dataclass
class CliRun:
    started: float  # time.time() at launch
    wall: float  # launch to exit
    sync_wall: float  # from "syncing N account(s)…" (imports and settings done) to exit
    returncode: int
    peak_rss: int  # bytes: the process's own high-water mark (wait4)
    cpu: float  # user + system seconds
    rss: list[tuple[float, int]]  # (time.time(), bytes) sampled while it ran
    output: str


def run_cli_sync(env: dict[str, str]) -> CliRun:
    """`stock-pipeline sync` of every account, as a seller or cron runs it: a process of its
    own, so its peak RSS is the whole CLI's (imports, Dagster, every account's run) and
    nothing of this benchmark's. Its RSS is sampled every 0.25 s for the timeline, and its
    output lines are timed: the sync proper starts when it says "syncing"."""
    started, clock = time.time(), time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stock_pipeline.cli", "sync"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[tuple[float, str]] = []
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.monotonic(), line))

    def sample() -> None:
        status = Path(f"/proc/{proc.pid}/status")
        while not done.wait(0.25):
            try:
                line = next(x for x in status.read_text().splitlines() if x.startswith("VmRSS:"))
            except (OSError, StopIteration):  # ended (or a zombie) between two samples
                continue
            samples.append((time.time(), int(line.split()[1]) * 1024))

    threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=sample, daemon=True)]
    for thread in threads:
        thread.start()
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.monotonic()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    done.set()
    for thread in threads:
        thread.join()
    syncing = next((at for at, line in lines if line.startswith("syncing ")), clock)
    return CliRun(
        started,
        ended - clock,
        ended - syncing,
        proc.returncode,
        usage.ru_maxrss * 1024,
        usage.ru_utime + usage.ru_stime,
        samples,
        "".join(line for _, line in lines),
    )


def children_cpu_seconds() -> float:
    """User + system CPU of this process's children that are running (the simulator's),
    from /proc: what the simulator spends during the sync, on the same cores."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == os.getpid():  # fields[1] is the parent's pid
            total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / os.sysconf("SC_CLK_TCK")


def _peak_between(samples: list[tuple[float, int]], start: float, end: float) -> int:
    return max((rss for at, rss in samples if start <= at <= end), default=0)


def print_step_figures(home: Path, cli: CliRun) -> list[str]:
    """Each asset step's time per account (the runs' step stats in the Dagster instance)
    and the CLI's peak RSS while that step ran in any account's run (the runs overlap: a
    phase's figure, not the step's own); then the RSS over time with the steps under way.
    Returns the failed runs' accounts."""
    from dagster import DagsterInstance, DagsterRunStatus

    from stock_pipeline.defs.tags import ACCOUNT_TAG

    instance = DagsterInstance.from_config(str(home))
    records = sorted(instance.get_run_records(), key=lambda r: r.dagster_run.tags.get(ACCOUNT_TAG, ""))
    accounts = [r.dagster_run.tags.get(ACCOUNT_TAG, "?") for r in records]
    spans: dict[str, dict[str, tuple[float, float]]] = {}
    for record, account in zip(records, accounts):
        for stat in instance.get_run_step_stats(record.dagster_run.run_id):
            if stat.start_time and stat.end_time:
                spans.setdefault(stat.step_key, {})[account] = (stat.start_time, stat.end_time)
    print("\nasset steps, seconds per account (the Dagster instance's step stats), and the CLI's peak RSS")
    print("while the step ran in any run:")
    print(f"  {'step':30}" + "".join(f"{a[-7:]:>8}" for a in accounts) + f"{'max':>8}{'RSS MiB':>9}")
    for step, by_account in spans.items():
        cells = "".join(
            f"{by_account[a][1] - by_account[a][0]:8.1f}" if a in by_account else f"{'-':>8}" for a in accounts
        )
        longest = max(end - start for start, end in by_account.values())
        first, last = min(s for s, _ in by_account.values()), max(e for _, e in by_account.values())
        print(f"  {step[:30]:30}{cells}{longest:8.1f}{_peak_between(cli.rss, first, last) / 2**20:9.0f}")
    runs = [(r.start_time or 0, r.end_time or 0) for r in records]
    print(
        f"  {'whole run':30}"
        + "".join(f"{end - start:8.1f}" for start, end in runs)
        + f"{max(end - start for start, end in runs):8.1f}"
    )
    if runs:
        print(
            f"  the CLI's first run started {min(s for s, _ in runs) - cli.started:.1f} s after launch (imports, "
            f"definitions, instance); its last run ended {cli.started + cli.wall - max(e for _, e in runs):.1f} s "
            "before the process did"
        )

    print("\nthe CLI's RSS over time (max of each 5 s), with the steps under way in the runs then:")
    bucket = 5.0
    for n in range(int(cli.wall // bucket) + 1):
        start, end = cli.started + n * bucket, cli.started + (n + 1) * bucket
        peak = _peak_between(cli.rss, start, end)
        running = {
            step: sum(1 for s, e in by_account.values() if s < end and e > start) for step, by_account in spans.items()
        }
        under_way = ", ".join(f"{step} x{count}" for step, count in running.items() if count)
        print(f"  {n * bucket:5.0f} s {peak / 2**20:7.0f} MiB  {under_way}")
    failed = [a for r, a in zip(records, accounts) if r.dagster_run.status != DagsterRunStatus.SUCCESS]
    instance.dispose()
    return failed


def end_to_end(args: argparse.Namespace) -> bool:
    started = time.perf_counter()
    world, warehouse = build_world(args.accounts, args.offers, args.changed, args.to_zero)
    floor, patches = sync_floor(world, warehouse), patches_needed(world, warehouse)
    padding = max(0, args.rows - len(warehouse))
    accounts = list(world)
    print(
        f"world: {args.accounts} accounts x {args.offers:,} offers, {len(warehouse) + padding:,} warehouse rows, "
        f"{sum(patches.values()):,} new values, {round(args.offers * args.to_zero) * args.accounts:,} sold out; "
        f"Allegro latency {args.latency:g} s (listing pages {args.listing_latency:g} s); "
        f"built in {time.perf_counter() - started:.0f} s",
        flush=True,
    )
    fill = fill_warehouse(warehouse, padding)
    with pipeline_world(world, fill, args) as bench:
        print(f"simulator, databases and accounts ready after {time.perf_counter() - started:.0f} s", flush=True)
        del world, warehouse, fill  # the benchmark's, not the pipeline's
        bench.sim.reset_requests()
        simulator_cpu = children_cpu_seconds()
        cli = run_cli_sync(bench.env)
        simulator_cpu = children_cpu_seconds() - simulator_cpu
        calls = bench.sim.sale_calls()

        engine = sa.create_engine(bench.settings.stock_database_url)
        stock = pd.read_sql("SELECT sku, stock FROM products", engine)
        engine.dispose()
        target = dict(zip(stock["sku"], stock["stock"]))
        wrong = sum(offers_wrong(bench.sim.offers(a), target) for a in accounts)

        print(f"\n`stock-pipeline sync` of {len(accounts)} accounts, a process of its own (exit {cli.returncode})")
        print(
            f"  the whole process      {cli.wall:8.1f} s  ({cli.wall - cli.sync_wall:.1f} s of it importing the "
            'pipeline and loading its settings, before it says "syncing"; the sync proper below)'
        )
        ok = print_sync_figures(
            cli.sync_wall, floor, calls, wrong, wall_target=TARGET_WALL_OVER_FLOOR, calls_target=1.2
        )
        print(
            f"  CPU of the CLI process {cli.cpu:8.1f} s  (user + system; the simulator's process "
            f"{simulator_cpu:.1f} s; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)"
        )
        print(
            f"  peak RSS of the CLI    {cli.peak_rss / 2**20:8.0f} MiB (target <= {TARGET_RSS_BYTES / 2**20:,.0f} MiB: "
            f"{'met' if cli.peak_rss <= TARGET_RSS_BYTES else 'MISSED'})"
        )
        failed = print_step_figures(bench.dagster_home, cli)
        if cli.returncode or failed:
            print(f"\nFAILED runs: {', '.join(failed) or 'none'}; the CLI said:\n{cli.output[-3000:]}")
        files, used = disk_use(bench.settings.frames_dir)
        print(f"\nasset values stored (frames dir): {used / 2**20:,.1f} MiB on disk in {files} files")
    return ok and not failed and cli.returncode == 0 and cli.peak_rss <= TARGET_RSS_BYTES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", "--warehouse-rows", type=int, default=1_000_000, help="warehouse rows")
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--offers", type=int, default=100_000, help="offers per account")
    parser.add_argument("--warehouse", choices=("both", "postgres", "sqlite"), default="both")
    parser.add_argument("--postgres-url", default=ADMIN_URL, help="a database to create the scratch one from")
    parser.add_argument("--end-to-end", action="store_true", help="a full sync on the simulator instead")
    add_sync_arguments(parser, changed=0.008, to_zero=0.002)  # end to end
    args = parser.parse_args()
    if args.end_to_end:
        sys.exit(0 if end_to_end(args) else 1)

    print(f"warehouse: {args.rows:,} rows")
    snapshot = None
    if args.warehouse in ("both", "postgres"):
        with postgres_warehouse(args.rows, args.postgres_url) as url:
            snapshot = read_and_clean("Postgres", url)
    if args.warehouse in ("both", "sqlite"):
        with sqlite_warehouse(args.rows) as url:
            snapshot = read_and_clean("SQLite", url)

    maps = offer_maps(args.accounts, args.offers, snapshot)
    print(f"diff + planning: {args.accounts} accounts x {args.offers:,} offers")
    total, plans = diff_and_plan(snapshot, maps)
    rss = peak_rss_bytes()
    print(
        f"  total diff + planning {total:.3f} s for {args.accounts} accounts "
        f"(target <= {TARGET_SECONDS} s: {'met' if total <= TARGET_SECONDS else 'MISSED'})"
    )
    stored_snapshot_per_account(snapshot, args.accounts)

    print("IO manager, one value of each kind:")
    io_figures({"stock_snapshot": snapshot, "allegro_offers": maps[0], "stock_diff": plans[0]})
    rss = max(rss, peak_rss_bytes())
    print(
        f"peak RSS {rss / 2**20:,.0f} MiB (target <= {TARGET_RSS_BYTES / 2**20:,.0f} MiB: "
        f"{'met' if rss <= TARGET_RSS_BYTES else 'MISSED'})"
    )


if __name__ == "__main__":
    main()
