"""Live sync, measured as it runs in production: the Dagster daemon started as the README
documents (`dagster-daemon run -w workspace.yaml`, the production instance file
docker/dagster.yaml on PostgreSQL), default settings, one warehouse change per second
while buyers buy other SKUs on Allegro.

    .venv/bin/python benchmarks/freshness.py      # 3 accounts x 50 000 offers, 2 minutes

The world: one warehouse (PostgreSQL) of --offers SKUs, every SKU listed once on each of
--accounts accounts, Allegro's stock equal to the warehouse at the start. The Allegro
simulator runs in a process of its own and answers after --latency seconds (listing pages
after --listing-latency). The daemon's first live tick builds each account's offer map (a
full sync each); the window starts when every map is current.

During the window (--seconds): every --change-every seconds one SKU of the first half gets
a new warehouse value (UPDATE … COMMIT, the moment noted); every --buy-every seconds a buyer
buys one unit of an offer of the second half (a test-only call of the simulator, not an API
call). Then the script waits up to --settle seconds for the last changes.

Printed:
- delay from each warehouse commit to Allegro showing the new value on every offer of that
  SKU (every account): p50 / p95 / max (target p95 <= 60 s; aim <= 20 s), observed every
  0.25 s; changes missed (not shown by the end of --settle: target 0);
- API calls during the window per change (target <= 6 on average): every call the
  pipeline made to the simulator (token exchanges aside), listing and journals included;
- sales undone (target 0): bought offers whose stock Allegro later showed above what the
  purchase left, with the warehouse never changed for those SKUs.

Needs PostgreSQL (--postgres-url; scratch databases are created and dropped) and Redis.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from contextlib import ExitStack
from pathlib import Path

import sqlalchemy as sa
from bench_world import CLIENT_SECRET, pipeline_env, scratch_database, simulator_process

REPO = Path(__file__).resolve().parent.parent
SEED = 2026


def dagster_home(stack: ExitStack, dagster_db: str) -> tuple[Path, dict]:
    """A DAGSTER_HOME holding the production instance file, and the variables it reads."""
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-freshness-")))
    shutil.copy(REPO / "docker" / "dagster.yaml", home / "dagster.yaml")
    logs = home / "compute_logs"
    logs.mkdir()
    url = sa.engine.make_url(dagster_db).set(drivername="postgresql").render_as_string(hide_password=False)
    return home, {"DAGSTER_HOME": str(home), "DAGSTER_POSTGRES_URL": url, "DAGSTER_COMPUTE_LOGS_DIR": str(logs)}


def stop_daemon(daemon: subprocess.Popen) -> None:
    """The daemon and everything it started (the code server, run workers): its process group."""
    try:
        os.killpg(daemon.pid, signal.SIGTERM)
        daemon.wait(60)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(daemon.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def live_run_stages(instance_env: dict, start: float, end: float) -> dict | None:
    """Where a change's delay goes once the sensor asked for its run: medians over the
    window's live runs of request -> start and start -> end, from the run storage."""
    from dagster import DagsterInstance, RunsFilter

    saved = {name: os.environ.get(name) for name in instance_env}
    os.environ.update(instance_env)
    try:
        with DagsterInstance.get() as instance:
            records = instance.get_run_records(RunsFilter(job_name="live_stock_sync"))
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    runs = [r for r in records if r.start_time and r.end_time and start <= r.create_timestamp.timestamp() <= end]
    if not runs:
        return None
    by_account: dict[str, list] = {}
    for r in sorted(runs, key=lambda r: r.start_time):
        by_account.setdefault(r.dagster_run.tags.get("dagster/partition", ""), []).append(r)
    gaps = [b.start_time - a.end_time for rs in by_account.values() for a, b in zip(rs, rs[1:])]
    return {
        "runs": len(runs),
        "waiting": statistics.median(r.start_time - r.create_timestamp.timestamp() for r in runs),
        "running": statistics.median(r.end_time - r.start_time for r in runs),
        "gap": statistics.median(gaps) if gaps else 0.0,
    }


def fill_warehouse(url: str, stock: dict[str, int]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (sku TEXT PRIMARY KEY, stock INTEGER NOT NULL)"))
        conn.execute(
            sa.text("INSERT INTO products (sku, stock) VALUES (:sku, :stock)"),
            [{"sku": s, "stock": v} for s, v in stock.items()],
        )
    engine.dispose()


def maps_current(pipeline_db: str, accounts: list[str]) -> bool:
    from stock_pipeline.store.engine import engine_for
    from stock_pipeline.store.live_offers import LiveOffers

    states = LiveOffers(engine_for(pipeline_db)).states()
    return all(a in states and states[a].map_current for a in accounts)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--accounts", type=int, default=3)
    parser.add_argument("--offers", type=int, default=50_000)
    parser.add_argument("--seconds", type=float, default=120.0, help="length of the window of changes")
    parser.add_argument("--change-every", type=float, default=1.0)
    parser.add_argument("--buy-every", type=float, default=1.0)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to wait for the last changes")
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--listing-latency", type=float, default=0.3)
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    args = parser.parse_args()

    rng = random.Random(SEED)
    accounts = [f"shop-{a + 1:02d}" for a in range(args.accounts)]
    skus = [f"L-{i:06d}" for i in range(args.offers)]
    warehouse = {s: rng.randint(10, 50) for s in skus}
    changing, bought = skus[: len(skus) // 2], skus[len(skus) // 2 :]
    client_id = f"bench-{uuid.uuid4().hex[:10]}"
    print(
        f"world: {args.accounts} accounts x {args.offers} offers (every SKU on every account); Allegro latency "
        f"{args.latency} s (listing pages {args.listing_latency} s); one warehouse change every {args.change_every} s "
        f"and one purchase every {args.buy_every} s for {args.seconds:.0f} s",
        flush=True,
    )
    with ExitStack() as stack:
        sim = stack.enter_context(simulator_process(client_id, args.latency, args.listing_latency, 1.0))
        api_url, auth_url = sim.urls()
        pipeline_db = stack.enter_context(scratch_database(args.postgres_url, "pipeline"))
        dagster_db = stack.enter_context(scratch_database(args.postgres_url, "dagster"))
        stock_db = stack.enter_context(scratch_database(args.postgres_url, "stock"))
        fill_warehouse(stock_db, warehouse)
        home, instance_env = dagster_home(stack, dagster_db)
        extra = {"STOCK_PIPELINE_STORAGE_DIR": str(home / "frames"), **instance_env}
        env = pipeline_env((api_url, auth_url, client_id), stock_db, pipeline_db, args, extra)

        from stock_pipeline.allegro.auth import AllegroAuth
        from stock_pipeline.foundation.logs import configure_logging
        from stock_pipeline.foundation.settings import load_settings
        from stock_pipeline.store.accounts import AccountStore
        from stock_pipeline.store.engine import engine_for

        configure_logging(json=False, terminal_level=40)
        settings = load_settings(env)
        store = AccountStore(engine_for(pipeline_db), settings.token_cipher())
        auth = AllegroAuth(auth_url, client_id, CLIENT_SECRET)
        offer_ids: dict[str, dict[str, str]] = {}
        for account in accounts:
            refresh, ids = sim.add_seller(
                account, [{"sku": s, "stock": warehouse[s], "status": "ACTIVE"} for s in skus]
            )
            store.save_tokens(account, auth.refresh(refresh))
            offer_ids[account] = dict(zip(skus, ids))

        log_path = home / "daemon.log"
        daemon = subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO / "workspace.yaml")],
            cwd=REPO,
            env={**os.environ, **env},
            stdout=log_path.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its code server and run workers go with it (stop_daemon)
        )
        stack.callback(stop_daemon, daemon)
        started = time.monotonic()
        while not maps_current(pipeline_db, accounts):
            if daemon.poll() is not None or time.monotonic() - started > 600:
                print(f"the offer maps were not built: see {log_path}")
                print(log_path.read_text()[-3000:])
                return 1
            time.sleep(1)
        print(f"daemon up, every offer map built by the live sensor's full syncs in {time.monotonic() - started:.0f} s")
        time.sleep(10)  # let the sensor see the journals' echo of those syncs, as in steady state

        pending: dict[str, tuple[int, float]] = {}  # sku -> (value, commit time)
        delays: list[float] = []
        purchases: list[tuple[str, str, int, float]] = []  # account, offer id, stock left, time
        lock = threading.Lock()
        stop = threading.Event()

        def observe() -> None:
            while not stop.is_set():
                with lock:
                    watching = dict(pending)
                if watching:
                    shown: dict[str, list[tuple[int, str]]] = {}
                    for account in accounts:
                        for offer in sim.offer_states(account, list(watching)):
                            shown.setdefault(offer["sku"], []).append((offer["stock"], offer["status"]))
                    now = time.time()
                    with lock:
                        for sku, (value, committed) in watching.items():
                            states = shown.get(sku, [])
                            if len(states) == len(accounts) and all(s == value for s, _ in states):
                                delays.append(now - committed)
                                pending.pop(sku, None)
                stop.wait(0.25)

        observer = threading.Thread(target=observe, daemon=True)
        observer.start()
        engine = sa.create_engine(stock_db)
        changed_skus = rng.sample(changing, int(args.seconds / args.change_every) + 1)
        window_start = time.time()
        next_change = next_buy = time.monotonic()
        changes = 0
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_change:
                sku = changed_skus[changes]
                value = rng.choice([v for v in range(1, 200) if v != warehouse[sku]])
                with engine.begin() as conn:
                    conn.execute(sa.text("UPDATE products SET stock = :v WHERE sku = :s"), {"v": value, "s": sku})
                with lock:
                    pending[sku] = (value, time.time())
                warehouse[sku] = value
                changes += 1
                next_change += args.change_every
            if now >= next_buy:
                account, sku = rng.choice(accounts), rng.choice(bought)
                try:
                    left = sim.purchase(account, offer_ids[account][sku], 1)["available"]
                    purchases.append((account, offer_ids[account][sku], left, time.time()))
                except Exception:  # sold out: another buyer's turn
                    pass
                next_buy += args.buy_every
            time.sleep(max(0.0, min(next_change, next_buy) - time.monotonic()))
        window_end = time.time()
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end:
            with lock:
                if not pending:
                    break
            time.sleep(0.5)
        stop.set()
        observer.join()
        calls = sim.api_calls_between(window_start, window_end)
        stages = live_run_stages(instance_env, window_start, window_end)
        undone = 0
        for account, offer_id, left, _ in purchases:
            now_state = sim.offer_states_by_id(account, [offer_id])
            if now_state and now_state[0]["stock"] > left:
                undone += 1

    missed = len(pending)
    p50, p95, top = (percentile(delays, 0.5), percentile(delays, 0.95), max(delays)) if delays else (0, 0, 0)
    per_change = calls / max(changes, 1)
    print("\nlive sync")
    print(
        f"  changes                   {changes:8d}    in {args.seconds:.0f} s, {len(purchases)} purchases beside them"
    )
    print(f"  delay commit -> Allegro   p50 {p50:5.1f} s   p95 {p95:5.1f} s   max {top:5.1f} s   (target p95 <= 60 s)")
    if delays:
        print(f"  mean delay                {statistics.mean(delays):8.1f} s")
    print(f"  changes missed            {missed:8d}    (target 0)")
    print(f"  API calls in the window   {calls:8d}    {per_change:.2f} per change (target <= 6)")
    print(f"  sales undone              {undone:8d}    (target 0)")
    if stages:
        print(
            f"  live runs in the window   {stages['runs']:8d}    median: {stages['waiting']:.1f} s from the request to "
            f"the run's start (queue, launch, a new process importing the pipeline), {stages['running']:.1f} s "
            f"running; {stages['gap']:.1f} s between one account's runs"
        )
    passed = delays and p95 <= 60 and missed == 0 and per_change <= 6 and undone == 0
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
