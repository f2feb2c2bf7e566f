"""The shared rate limiter under load: N processes, one client_id, the Allegro simulator.

    .venv/bin/python benchmarks/rate_limit.py --processes 4 --limit 600 --duration 120

Each process stands for one seller account and calls GET /sale/offers in a tight loop
through a real AllegroClient and the shared Redis GCRA bucket of the client_id, as the
pipeline's runs do. The simulator enforces the per-client_id limit exactly over a sliding
60 s window and answers 429 (and blocks the client) past it. Clients do not retry, so
every 429 shows in the counts.

Prints the achieved rate as a share of the limit and the count of 429s. Headline: the
average rate over the run (after --warmup seconds) x 60 / limit. The busiest sliding 60 s
window is printed too; it must stay within the limit. PASS (exit 0) at >= 95 % of the
limit with no 429, else FAIL (exit 1). Needs Redis (--redis-url).

The limiter aims at 98 % of the limit in the long run (a 1 % safety margin, a burst of
1 % of the limit), but its first calls go as one burst: over a short run that burst
lifts the average towards 100 %, which --warmup leaves out. The default limit of 600/min
stands in for Allegro's 9 000/min (which also runs, with --limit 9000) to keep the load light.
"""

from __future__ import annotations

import argparse
import multiprocessing
import queue
import sys
import time
import uuid
from collections import Counter
from typing import Any

import redis

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.allegro.http import DEFAULT_RATE_LIMIT_BACKOFF
from stock_pipeline.foundation.errors import AllegroRateLimitError
from stock_pipeline.rate_limit import RateSpec, build_limiter
from stock_pipeline.simulator import AllegroSimulator, RequestRecord

WINDOW_SECONDS = 60.0
PASS_PERCENT = 95.0
CLIENT_SECRET = "bench-secret"
OFFERS_PER_SELLER = 20
# Spawned interpreters import the pipeline before they are ready; seconds allowed for that.
START_TIMEOUT_SECONDS = 60.0
# A worker's last call may wait past the deadline: for its slot, or, after a 429, for the
# pause the client puts on the shared bucket. Seconds allowed for that.
REPORT_GRACE_SECONDS = DEFAULT_RATE_LIMIT_BACKOFF + 30.0


class FixedToken:
    """The access token the parent obtained: it lives 12 h, longer than any run."""

    def __init__(self, access_token: str):
        self._access_token = access_token

    def current(self) -> str:
        return self._access_token

    def after_unauthorised(self, rejected: str) -> str:
        return self._access_token


def run_worker(
    index: int,
    api_url: str,
    access_token: str,
    redis_url: str,
    key: str,
    limit: int,
    duration: float,
    start_line: Any,
    reports: Any,
) -> None:
    """One process: list offers until the deadline, then report what the client counted."""
    limiter = build_limiter(redis_url, key, [RateSpec(limit, WINDOW_SECONDS)])
    client = AllegroClient(api_url, FixedToken(access_token), limiter, retry_count=0, timeout=10.0)
    start_line.wait(START_TIMEOUT_SECONDS)
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        try:
            client.list_offers_page(0)
        except AllegroRateLimitError:
            pass  # counted in client.stats.rate_limited; the client has penalised the bucket
    client.close()
    # A plain dict: a class of this script would not unpickle in the parent under spawn.
    reports.put({"index": index, "rate_limited": client.stats.rate_limited})


def busiest_window(times: list[float], window: float) -> int:
    """Most of the sorted `times` within any span the simulator counts together (< window apart)."""
    most = first = 0
    for last, moment in enumerate(times):
        while times[first] <= moment - window:
            first += 1
        most = max(most, last - first + 1)
    return most


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--processes", type=int, default=4, help="worker processes, one seller account each")
    parser.add_argument("--limit", type=int, default=600, help="requests per minute for the client_id")
    parser.add_argument("--duration", type=float, default=120.0, help="seconds the workers call")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--warmup", type=float, default=0.0, help="first seconds left out of the achieved rate (the initial burst)"
    )
    args = parser.parse_args()
    if args.processes < 1 or args.limit < 2 or not 0 <= args.warmup < args.duration:
        parser.error("need --processes >= 1, --limit >= 2 and 0 <= --warmup < --duration")
    return args


def main() -> int:
    args = parse_args()
    # Unique per run, so that no earlier run's reservations linger in the shared key.
    client_id = f"bench-{uuid.uuid4().hex[:12]}"
    key = f"allegro:rate:{client_id}"
    store = redis.Redis.from_url(args.redis_url)
    store.ping()  # fail here, not in N workers, when Redis is not there
    spec = RateSpec(args.limit, WINDOW_SECONDS)
    logins = [f"shop-{index + 1}" for index in range(args.processes)]

    simulator = AllegroSimulator(
        client_id=client_id, client_secret=CLIENT_SECRET, rate_limit_per_minute=args.limit
    ).start()
    try:
        auth = AllegroAuth(simulator.auth_url, client_id, CLIENT_SECRET)
        access_tokens = []
        for login in logins:
            refresh_token = simulator.add_seller(login)
            simulator.add_offers(login, [{"sku": f"{login}-{n}", "stock": n} for n in range(OFFERS_PER_SELLER)])
            access_tokens.append(auth.refresh(refresh_token).access_token)
        auth.close()

        context = multiprocessing.get_context("spawn")
        # The workers start calling together, once all have imported the pipeline.
        start_line = context.Barrier(args.processes)
        reports = context.Queue()
        workers = [
            context.Process(
                target=run_worker,
                name=f"rate-limit-bench-{index + 1}",
                args=(
                    index,
                    simulator.api_url,
                    token,
                    args.redis_url,
                    key,
                    args.limit,
                    args.duration,
                    start_line,
                    reports,
                ),
            )
            for index, token in enumerate(access_tokens)
        ]
        for worker in workers:
            worker.start()
        client_counts: dict[int, dict] = {}
        try:
            for _ in workers:
                report = reports.get(timeout=START_TIMEOUT_SECONDS + args.duration + REPORT_GRACE_SECONDS)
                client_counts[report["index"]] = report
        except queue.Empty:
            pass  # a worker died: its traceback is on stderr, and the run fails below
        for worker in workers:
            worker.join(REPORT_GRACE_SECONDS)
            if worker.is_alive():
                worker.terminate()
        records = [record for record in simulator.requests if record.path == "/sale/offers"]
    finally:
        simulator.stop()
        store.delete(key)

    return report_figures(args, spec, logins, records, client_counts)


def report_figures(
    args: argparse.Namespace,
    spec: RateSpec,
    logins: list[str],
    records: list[RequestRecord],
    client_counts: dict[int, dict],
) -> int:
    """Print the table and the verdict; return the exit code."""
    rejected = sum(1 for record in records if record.status == 429)
    admitted = sorted(record.started_at for record in records if record.status != 429)
    # The run starts with its first request; the workers set their deadlines a moment before it.
    started_at = min((record.started_at for record in records), default=0.0)
    measured_from, deadline = started_at + args.warmup, started_at + args.duration
    measured = sum(1 for moment in admitted if measured_from <= moment < deadline)
    per_minute = measured * 60.0 / (args.duration - args.warmup)
    achieved_percent = 100.0 * per_minute / args.limit
    busiest = busiest_window(admitted, WINDOW_SECONDS)
    per_seller = Counter(record.login for record in records)
    client_429s = sum(counts["rate_limited"] for counts in client_counts.values())
    target_per_minute = 60.0 / spec.emission_interval

    print(
        f"{args.processes} processes, one client_id, limit {args.limit}/min, {args.duration:g} s "
        f"(warm-up left out: {args.warmup:g} s)"
    )
    print(
        f"limiter: Redis GCRA, burst {spec.burst_size}, one call per {spec.emission_interval * 1000:.1f} ms "
        f"= {target_per_minute:.1f}/min ({100.0 * target_per_minute / args.limit:.1f} % of the limit) in the long run"
    )
    print()
    print(f"{'process':>7}  {'seller':<8} {'sent':>6} {'429s':>5} {'share':>7}")
    for index, login in enumerate(logins):
        counts = client_counts.get(index)
        seen = f"{counts['rate_limited']:>5}" if counts else "  n/a"
        print(
            f"{index + 1:>7}  {login:<8} {per_seller[login]:>6} {seen} "
            f"{100.0 * per_seller[login] / max(len(records), 1):>6.1f} %"
        )
    print(f"{'all':>7}  {'':<8} {len(records):>6} {client_429s:>5}")
    print()
    window_note = "" if args.duration >= WINDOW_SECONDS else ", the run is shorter than the window"
    print(
        f"requests at the simulator   {len(records)} ({len(records) - measured - rejected} admitted outside "
        f"the measured {args.warmup:g}-{args.duration:g} s)"
    )
    print(f"429 answers                 {rejected} (clients counted {client_429s})")
    print(
        f"achieved rate (headline)    {per_minute:.1f}/min = {achieved_percent:.1f} % of the limit, "
        f"average over {args.warmup:g}-{args.duration:g} s"
    )
    print(
        f"busiest sliding 60 s window {busiest} requests = {100.0 * busiest / args.limit:.1f} % of the limit "
        f"(at most {args.limit}{window_note})"
    )

    failures = []
    if achieved_percent < PASS_PERCENT:
        failures.append(f"achieved {achieved_percent:.1f} % < {PASS_PERCENT:g} %")
    if rejected or client_429s:
        failures.append(f"{max(rejected, client_429s)} x 429")
    if busiest > args.limit:
        failures.append(f"busiest window {busiest} > {args.limit}")
    if len(client_counts) < len(logins):
        failures.append(f"{len(logins) - len(client_counts)} worker(s) did not report")
    if failures:
        print("FAIL: " + "; ".join(failures))
        return 1
    print(
        f"PASS: {achieved_percent:.1f} % >= {PASS_PERCENT:g} % of the limit, 0 x 429, "
        f"busiest window {busiest} <= {args.limit}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
