"""A full sync of many accounts against Allegro's rate limit: wall time vs its floor.

    .venv/bin/python benchmarks/throughput.py            # 10 accounts x 10 000 offers, latency 0.15 s

The world: N accounts of M offers each (one SKU per offer), a warehouse (PostgreSQL)
holding every SKU, of which --changed of each account's SKUs hold a new positive value
(values spread widely, so each is its own PATCH, as after a delivery) and --to-zero are
sold out (their offers end). The Allegro simulator answers every call after --latency
seconds (listing pages after --listing-latency), enforces the client_id's 9 000
requests/min and the per-user write limits, and runs in a process of its own so that it
does not share the interpreter with the pipeline.

The pipeline: `stock-pipeline sync` of every account, in this process, with its default
settings, the shared Redis limiter and a Dagster instance on PostgreSQL.

Printed:
- wall time of the sync; its floor (bench_world.Floor): the least number of calls the sync
  can make (listing pages + the cheaper write route per value, as core.plan.minimum_calls
  reckons it) at the client_id's rate (9 000/min = 150/s), or, where it is longer, the
  busiest account alone at its per-user write budgets (PATCHes at 2 500/min, its routes
  chosen by time as core.plan does); and their ratio (target <= 1.25);
- calls made vs the calls of the plans the floor is reckoned on: the minimum when the
  client_id's rate binds (target <= 1.2), 429 answers (target 0), offers not matching the
  warehouse afterwards (target 0);
  One account alone with many values of its own shows routes by time:
  `--accounts 1 --offers 10000 --changed 0.3` (3 000 PATCHes by calls, 72 s at 2 500/min);
- the original design's algorithm on the same world (its own copies of the accounts):
  for each batch of 100 warehouse SKUs one listing by SKU, then for every offer found a GET
  of the offer and a PATCH when its stock differs, in 16 workers, through the same limiter.
  It makes ~25x the calls, so by default it runs on --baseline-accounts 1 account and the
  figures for all N are projected from it (calls scale with accounts, and its time with
  calls: the rate limit binds).

Needs PostgreSQL (--postgres-url; scratch databases are created and dropped) and Redis.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pandas as pd
import redis
import sqlalchemy as sa
from bench_world import (
    RATE_PER_MINUTE,
    add_sync_arguments,
    build_world,
    offers_wrong,
    patches_needed,
    pipeline_world,
    print_sync_figures,
    sync_floor,
)
from rate_limit import FixedToken

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.rate_limit import RateSpec, build_limiter

BASELINE_SKU_BATCH = 100  # the original design's batch of SKUs per listing
BASELINE_WORKERS = 16  # the original design's Celery workers


# ---- the original design, as a baseline client ----------------------------------------


def baseline_sync(client: AllegroClient, warehouse: pd.DataFrame) -> None:
    """The design note's sync of one account: every warehouse SKU, 100 per listing, then a GET
    and (if needed) a PATCH per offer found, on 16 workers. Endpoints corrected to ones that
    exist (the note's PATCH /sale/offers/{id} never did); PATCH 0 ends an offer."""
    target = dict(zip(warehouse["sku"], warehouse["stock"]))
    skus = list(target)

    def one_offer(offer_id: str, sku: str) -> None:
        current = client.request("GET", f"/sale/product-offers/{offer_id}", route="GET product-offer").json()
        if current.get("stock", {}).get("available") != target[sku]:
            client.patch_stock(offer_id, int(target[sku]))

    def one_batch(batch: list[str]) -> list[tuple[str, str]]:
        page = client.request(
            "GET", "/sale/offers", route="GET /sale/offers", params={"external.id": batch, "limit": 1000}
        ).json()
        return [(o["id"], o["external"]["id"]) for o in page.get("offers", []) if (o.get("external") or {}).get("id")]

    with ThreadPoolExecutor(BASELINE_WORKERS) as pool:
        batches = [skus[i : i + BASELINE_SKU_BATCH] for i in range(0, len(skus), BASELINE_SKU_BATCH)]
        found = [pair for pairs in pool.map(one_batch, batches) for pair in pairs]
        list(pool.map(lambda pair: one_offer(*pair), found))


def print_timeline(log: list[tuple[float, int | None, str | None]], started_wall: float, step: float = 2.0) -> None:
    """Calls admitted per `step` seconds from the sync's start, and accounts seen calling."""
    buckets: dict[int, list] = {}
    for moment, _, login in log:
        buckets.setdefault(int((moment - started_wall) // step), []).append(login)
    print(f"\ncalls per {step:g} s from the start (and accounts calling):")
    for bucket in range(max(buckets, default=-1) + 1):
        logins = buckets.get(bucket, [])
        print(f"  {bucket * step:5.0f} s {len(logins) / step:6.1f}/s  {len(set(logins))} accounts")


# ---- the run ---------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accounts", type=int, default=10)
    parser.add_argument("--offers", type=int, default=10_000, help="offers per account")
    add_sync_arguments(parser, changed=0.04, to_zero=0.01)
    parser.add_argument("--baseline-accounts", type=int, default=1, help="accounts the original design syncs (0: none)")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--timeline", action="store_true", help="print calls per second over the sync, by route")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    redis.Redis.from_url(args.redis_url).ping()
    world, warehouse = build_world(args.accounts, args.offers, args.changed, args.to_zero)
    floor = sync_floor(world, warehouse)
    patches = patches_needed(world, warehouse)
    target = dict(zip(warehouse["sku"], warehouse["stock"]))

    with ExitStack() as stack:
        bench = stack.enter_context(
            pipeline_world(
                world,
                lambda url: warehouse.to_sql("products", sa.create_engine(url), index=False, chunksize=20_000),
                args,
            )
        )
        sim, settings, client_id, api_url, auth = bench.sim, bench.settings, bench.client_id, bench.api_url, bench.auth
        from stock_pipeline.cli.sync_runner import sync_accounts

        print(
            f"world: {args.accounts} accounts x {args.offers} offers, {len(warehouse)} warehouse SKUs, "
            f"{sum(patches.values())} new values, {round(args.offers * args.to_zero) * args.accounts} sold out; "
            f"Allegro latency {args.latency:g} s (listing pages {args.listing_latency:g} s)",
            flush=True,
        )

        sim.reset_requests()
        started = time.monotonic()
        summaries = sync_accounts(settings, list(world))
        wall = time.monotonic() - started
        calls = sim.sale_calls()
        if args.timeline:
            print_timeline(sim.sale_call_log(), started_wall=time.time() - wall)
        wrong = sum(offers_wrong(sim.offers(a), target) for a in world)
        failed = [f"{s.account}: {s.error}" for s in summaries if not s.success]

        print("\nstock_pipeline (this project)")
        ok = print_sync_figures(wall, floor, calls, wrong, wall_target=1.25, calls_target=1.2)
        print(f"  peak RSS               {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:8.0f} MB")
        for line in failed:
            print(f"  FAILED {line}")

        baseline_wall = None
        if args.baseline_accounts:
            chosen = list(world)[: args.baseline_accounts]
            # The same Redis bucket as the pipeline's: the budget carries on where the sync left it.
            limiter = build_limiter(args.redis_url, f"allegro:rate:{client_id}", [RateSpec(RATE_PER_MINUTE, 60.0)])
            clients = []
            for account in chosen:
                copy = f"original-{account}"
                refresh_token, _ = sim.add_seller(copy, world[account])
                token = auth.refresh(refresh_token).access_token
                clients.append(AllegroClient(api_url, FixedToken(token), limiter, retry_delay=1.0, account=copy))
            sim.reset_requests()
            started = time.monotonic()
            with ThreadPoolExecutor(len(clients)) as pool:
                list(pool.map(lambda c: baseline_sync(c, warehouse), clients))
            baseline_wall = time.monotonic() - started
            base = sim.sale_calls()
            base_wrong = sum(offers_wrong(sim.offers(f"original-{a}"), target) for a in chosen)
            scale = args.accounts / len(chosen)
            print(f"\noriginal design (16 workers, the same limiter), on {len(chosen)} of {args.accounts} accounts")
            every = f"for all {args.accounts}:"
            print(f"  wall time              {baseline_wall:8.1f} s   {every} ~{baseline_wall * scale:.0f} s")
            print(f"  calls                  {base['calls']:8d}    {every} ~{base['calls'] * scale:.0f}")
            print(f"  429 answers            {base['429']:8d}")
            print(f"  offers wrong after     {base_wrong:8d}")
            print(
                f"\nthis project vs the original, all {args.accounts} accounts: "
                f"{base['calls'] * scale / calls['calls']:.0f}x fewer calls, "
                f"{baseline_wall * scale / wall:.0f}x less time"
            )
            for client in clients:
                client.close()
    print(f"\n{'PASS' if ok and not failed else 'FAIL'}")
    return 0 if ok and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
