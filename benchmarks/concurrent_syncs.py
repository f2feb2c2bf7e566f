"""Several processes syncing accounts at once against one client_id: the rate limit used.

    .venv/bin/python benchmarks/concurrent_syncs.py --processes 4 --limit 600

The rate-limit benchmark (`rate_limit.py`) with real syncs: N `stock-pipeline sync
--account X` processes start together, one account each, against one Allegro simulator
that answers after --latency seconds and enforces --limit requests/min for the client_id
(429 and a block past it). Every process draws from the shared Redis limiter of the
client_id, which the pipeline is told is --limit (ALLEGRO_SYNC_RATE_LIMIT).

Printed: calls and 429s per account, and the achieved rate while every process is still
syncing (from the first call + --warmup to the moment the first account's last call
was made) as a share of the limit. PASS at >= 95 % with no 429.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import uuid
from collections import Counter
from contextlib import ExitStack

import redis
import sqlalchemy as sa
from bench_world import CLIENT_SECRET, build_world, offers_wrong, scratch_services, simulator_process
from rate_limit import busiest_window

from stock_pipeline.allegro.auth import AllegroAuth

PASS_PERCENT = 95.0
WINDOW_SECONDS = 60.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4, help="sync processes, one account each")
    parser.add_argument("--limit", type=int, default=600, help="requests per minute for the client_id")
    parser.add_argument("--offers", type=int, default=3000, help="offers per account")
    parser.add_argument("--changed", type=float, default=0.12, help="share of each account's offers to change")
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--warmup", type=float, default=5.0, help="first seconds left out (processes starting)")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    client_id = f"bench-{uuid.uuid4().hex[:10]}"
    redis.Redis.from_url(args.redis_url).ping()
    world, warehouse = build_world(args.processes, args.offers, args.changed, 0.0)
    target = dict(zip(warehouse["sku"], warehouse["stock"]))
    with ExitStack() as stack:
        sim = stack.enter_context(
            simulator_process(client_id, args.latency, args.latency, 1.0, rate_limit_per_minute=args.limit)
        )
        api_url, auth_url = sim.urls()
        pipeline_db, stock_db, home = scratch_services(stack, args.postgres_url)
        warehouse.to_sql("products", sa.create_engine(stock_db), index=False, chunksize=20_000)
        env = {
            "ALLEGRO_API_URL": api_url,
            "ALLEGRO_AUTH_URL": auth_url,
            "ALLEGRO_CLIENT_ID": client_id,
            "ALLEGRO_CLIENT_SECRET": CLIENT_SECRET,
            "ALLEGRO_SYNC_RATE_LIMIT": str(args.limit),
            "STOCK_DATABASE_URL": stock_db,
            "STOCK_PIPELINE_DATABASE_URL": pipeline_db,
            "REDIS_URL": args.redis_url,
            "DAGSTER_HOME": str(home),
            "TOKEN_ENCRYPTION_KEY": "YmVuY2htYXJrLW9ubHkta2V5LW5vdC1hLXNlY3JldDA=",
        }
        # Accounts are registered with the CLI itself (`accounts add --refresh-token -`).
        auth = AllegroAuth(auth_url, client_id, CLIENT_SECRET)
        cli = [sys.executable, "-m", "stock_pipeline.cli"]
        for account, offers in world.items():
            refresh_token, _ = sim.add_seller(account, offers)
            subprocess.run(
                [*cli, "accounts", "add", account, "--refresh-token", "-"],
                input=refresh_token,
                text=True,
                env=os.environ | env,
                check=True,
                capture_output=True,
            )
        auth.close()
        print(
            f"{args.processes} processes, one account each ({args.offers} offers, {args.changed:.0%} changed), "
            f"one client_id limited to {args.limit}/min, Allegro latency {args.latency:g} s",
            flush=True,
        )
        sim.reset_requests()
        syncs = [
            subprocess.Popen(
                [*cli, "sync", "--account", account],
                env=os.environ | env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for account in world
        ]
        outputs = [process.communicate()[0] for process in syncs]
        codes = [process.returncode for process in syncs]
        log = sorted(sim.sale_call_log())
        wrong = sum(offers_wrong(sim.offers(a), target) for a in world)

    if not log:
        print("FAIL: no call reached the simulator")
        for output in outputs:
            print(output)
        return 1
    first = log[0][0]
    last_by_account = {}
    for moment, _, login in log:
        last_by_account[login] = moment
    all_busy_until = min(last_by_account.values())
    measured = [m for m, status, _ in log if first + args.warmup <= m < all_busy_until and status != 429]
    span = all_busy_until - first - args.warmup
    rate = len(measured) * 60.0 / span if span > 0 else 0.0
    percent = 100.0 * rate / args.limit
    rejected = sum(1 for _, status, _ in log if status == 429)
    per_account = Counter(login for _, _, login in log)
    busiest = busiest_window([m for m, status, _ in log if status != 429], WINDOW_SECONDS)

    print()
    print(f"{'account':<10} {'calls':>6} {'exit':>5}")
    for account, code in zip(world, codes):
        print(f"{account:<10} {per_account[account]:>6} {code:>5}")
    print()
    print(f"calls at the simulator      {len(log)}, 429 answers: {rejected}")
    print(
        f"achieved rate               {rate:.1f}/min = {percent:.1f} % of the limit, while all {args.processes} "
        f"processes were syncing ({span:.1f} s after the first {args.warmup:g} s)"
    )
    print(f"busiest sliding 60 s window {busiest} calls (limit {args.limit})")
    print(f"offers wrong after          {wrong}")
    ok = percent >= PASS_PERCENT and rejected == 0 and wrong == 0 and not any(codes) and busiest <= args.limit
    if any(codes):
        for account, code, output in zip(world, codes, outputs):
            if code:
                print(f"\n{account} exited {code}:\n{output[-2000:]}")
    print(f"{'PASS' if ok else 'FAIL'} (target: >= {PASS_PERCENT:g} % of the limit, 0 x 429, 0 wrong)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
