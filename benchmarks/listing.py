"""Listing an account's offers against the simulator with Allegro-like latency, at several
concurrencies: python benchmarks/listing.py [--offers 10000] [--latency 0.15] [--concurrency 1 4 16].
Needs no Redis or Postgres: an in-process limiter at 9 000/min and a fixed token."""

from __future__ import annotations

import argparse
import time
from typing import Callable

import httpx
from rate_limit import FixedToken  # benchmarks/rate_limit.py, beside this script

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.rate_limit import LocalTokenBucket, RateSpec
from stock_pipeline.simulator import AllegroSimulator


def access_token(sim: AllegroSimulator, refresh_token: str) -> str:
    return httpx.post(
        f"{sim.auth_url}/token",
        params={"grant_type": "refresh_token", "refresh_token": refresh_token},
        auth=("demo-client", "demo-secret"),
    ).json()["access_token"]


def timed_listing(
    sim: AllegroSimulator,
    token: str,
    concurrency: int,
    per_minute: int,
    rows: Callable[[list[dict]], int] = len,
    columns: bool = False,
) -> tuple[int, float, int]:
    """Lists every offer of the token's seller with AllegroClient.iter_offer_pages (or, with
    `columns`, iter_offer_frames, as the pipeline does), passing each page to `rows`: (the
    offers it counted, seconds taken, calls sent)."""
    limiter = LocalTokenBucket(RateSpec(per_minute, 60.0))
    client = AllegroClient(sim.api_url, FixedToken(token), limiter, concurrency=concurrency, account="bench")
    started = time.perf_counter()
    pages = client.iter_offer_frames() if columns else client.iter_offer_pages()
    listed = sum(rows(page) for page, _ in pages)
    elapsed = time.perf_counter() - started
    client.close()
    return listed, elapsed, client.stats.total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    args = parser.parse_args()
    with AllegroSimulator(listing_latency=args.latency) as sim:
        refresh = sim.add_seller("bench")
        sim.add_offers("bench", [{"sku": f"S{i}", "stock": 1} for i in range(args.offers)])
        token = access_token(sim, refresh)
        for concurrency in args.concurrency:
            listed, elapsed, calls = timed_listing(sim, token, concurrency, 9000)
            print(
                f"{listed} offers, latency {args.latency:g} s/page, concurrency {concurrency:>2}: "
                f"{elapsed:.2f} s ({calls} calls)"
            )


if __name__ == "__main__":
    main()
