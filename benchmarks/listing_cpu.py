"""The CPU a listing costs, without latency: one seller of --offers offers on the simulator
(in this process), read in pages of 1 000 as the listing step reads them.

    .venv/bin/python benchmarks/listing_cpu.py [--offers 100000] [--concurrency 1 4]

Prints per page: the simulator's answer (GET over loopback: building and encoding the
page, read as bytes), the first time and again (the simulator may reuse its encodings);
the client's decoding of those bytes; offers_frame of the decoded offers; and what the
pipeline does instead, the bytes decoded straight into the four columns. Then the whole
listing (AllegroClient.iter_offer_pages + offers_frame per page, as read_offer_map does)
at each concurrency. Needs no Redis or Postgres.
"""

from __future__ import annotations

import argparse
import time

import httpx
from listing import access_token, timed_listing  # benchmarks/listing.py, beside this script

from stock_pipeline.allegro import http as allegro_http
from stock_pipeline.allegro.client import LISTING_PAGE_SIZE
from stock_pipeline.allegro.listing import offers_page
from stock_pipeline.core.diff import offers_frame
from stock_pipeline.simulator import AllegroSimulator

# Before orjson the client decoded with httpx's Response.json: the same script measures both.
decode = getattr(allegro_http, "json_body", httpx.Response.json)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--offers", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4])
    args = parser.parse_args()
    with AllegroSimulator() as sim:
        refresh = sim.add_seller("bench")
        statuses = ("ACTIVE", "ACTIVE", "ACTIVE", "ENDED")
        sim.add_offers(
            "bench",
            [{"sku": f"S{i}", "stock": i % 50, "status": statuses[i % 4]} for i in range(args.offers)],
        )
        token = access_token(sim, refresh)
        pages = -(-args.offers // LISTING_PAGE_SIZE)
        headers = {"Authorization": f"Bearer {token}", "Accept": allegro_http.MEDIA_TYPE}

        answered = []
        with httpx.Client(headers=headers) as http:
            for _ in ("first listing", "second listing"):
                answers: list[httpx.Response] = []
                started = time.perf_counter()
                for page in range(pages):
                    answers.append(
                        http.get(
                            f"{sim.api_url}/sale/offers",
                            params={"limit": LISTING_PAGE_SIZE, "offset": page * LISTING_PAGE_SIZE},
                        )
                    )
                answered.append(time.perf_counter() - started)
        started = time.perf_counter()
        bodies = [decode(answer) for answer in answers]
        decoded = time.perf_counter() - started
        started = time.perf_counter()
        for body in bodies:
            offers_frame(body["offers"])
        framed = time.perf_counter() - started
        started = time.perf_counter()
        for answer in answers:
            offers_page(answer.content)
        columns = time.perf_counter() - started
        size = sum(len(answer.content) for answer in answers) / pages / 1000
        print(f"{args.offers} offers, {pages} pages of {LISTING_PAGE_SIZE} ({size:.0f} KB each), per page:")
        for which, seconds in zip(("first", "second"), answered):
            print(f"  simulator answer, {which} listing (GET over loopback): {seconds / pages * 1000:6.2f} ms")
        print(
            f"  client decode ({decode.__module__}.{decode.__qualname__}):".ljust(52)
            + f"{decoded / pages * 1000:6.2f} ms"
        )
        print("  offers_frame:".ljust(52) + f"{framed / pages * 1000:6.2f} ms")
        print(
            "  the pipeline's: decoded into columns (listing.offers_page):".ljust(52)
            + f"{columns / pages * 1000:6.2f} ms"
        )

        for concurrency in args.concurrency:
            # A limit far above Allegro's: only the CPU is measured.
            listed, elapsed, calls = timed_listing(sim, token, concurrency, 1_000_000, lambda o: len(offers_frame(o)))
            print(
                f"listing + offers_frame, concurrency {concurrency:>2}: {elapsed:.2f} s for {listed} offers "
                f"({elapsed / pages * 1000:.1f} ms/page, {calls} calls)"
            )
            listed, elapsed, calls = timed_listing(sim, token, concurrency, 1_000_000, columns=True)
            print(
                f"listing into columns (the pipeline's), concurrency {concurrency:>2}: {elapsed:.2f} s for {listed} "
                f"offers ({elapsed / pages * 1000:.1f} ms/page, {calls} calls)"
            )


if __name__ == "__main__":
    main()
