"""Listing an account's offers against the simulator with Allegro-like latency, at several
concurrencies: python benchmarks/listing.py [--offers 10000] [--latency 0.15] [--concurrency 1 4 16].
Needs no Redis or Postgres: an in-process limiter at 9 000/min and a fixed token."""

from __future__ import annotations

import argparse
import time

import httpx
from rate_limit import FixedToken  # benchmarks/rate_limit.py, beside this script

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.rate_limit import LocalTokenBucket, RateSpec
from stock_pipeline.simulator import AllegroSimulator


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    with AllegroSimulator(listing_latency=args.latency) as sim:
        refresh = sim.add_seller("bench")
        sim.add_offers("bench", [{"sku": f"S{i}", "stock": 1} for i in range(args.offers)])
        token = httpx.post(
            f"{sim.auth_url}/token",
            params={"grant_type": "refresh_token", "refresh_token": refresh},
            auth=("demo-client", "demo-secret"),
        ).json()["access_token"]
        for concurrency in args.concurrency:
            limiter = LocalTokenBucket(RateSpec(9000, 60.0))
            client = AllegroClient(sim.api_url, FixedToken(token), limiter, concurrency=concurrency, account="bench")
            started = time.monotonic()
            listed = sum(len(page) for page, _ in client.iter_offer_pages())
            elapsed = time.monotonic() - started
            client.close()
            print(
                f"{listed} offers, latency {args.latency:g} s/page, concurrency {concurrency:>2}: "
                f"{elapsed:.2f} s ({client.stats.total} calls)"
            )


if __name__ == "__main__":
    main()
