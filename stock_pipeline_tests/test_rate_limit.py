"""The shared rate limiter: GCRA maths on a virtual clock, then the Redis and local
buckets for real (the tests' Redis, TEST_REDIS_URL as in services.py; keys under a
random prefix, deleted afterwards)."""

from __future__ import annotations

import heapq
import math
import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from stock_pipeline.foundation.errors import RateLimiterUnavailableError
from stock_pipeline.rate_limit import LocalTokenBucket, RateLimiter, RateSpec, RedisTokenBucket, build_limiter
from stock_pipeline.rate_limit.gcra import IDLE, SAFETY_MARGIN, penalise, reserve, reserve_all
from stock_pipeline_tests.services import REDIS_URL

REPO_ROOT = Path(__file__).resolve().parents[1]


def max_units_in_window(sends: list[tuple[float, int]], window: float) -> int:
    """Most units in any closed window of ``window`` seconds; ``sends`` = (time, cost)."""
    sends = sorted(sends)
    most = units = 0
    first = 0
    for at, cost in sends:
        units += cost
        while sends[first][0] < at - window:
            units -= sends[first][1]
            first += 1
        most = max(most, units)
    return most


# --- GCRA on a virtual clock ---------------------------------------------------------


def simulate(
    windows: list[RateSpec],
    clients: int,
    horizon: float,
    rng: random.Random,
    *,
    max_cost: int = 1,
    busy: bool = False,
    penalties: int = 0,
) -> list[tuple[float, int]]:
    """Clients that reserve, wait, send, pause, reserve again, until ``horizon``.

    Returns the (start, cost) of every reservation starting before ``horizon``. ``busy``
    clients never pause; otherwise pauses are random, from none to several periods, so
    the bucket sees idle spells, bursts and queues. ``penalties`` 429s land at random.
    """
    period = max(window.period_seconds for window in windows)
    tats = [IDLE] * len(windows)
    penalty_times = sorted(rng.uniform(0, horizon) for _ in range(penalties))
    arrivals = [(rng.uniform(0, period), client) for client in range(clients)]
    heapq.heapify(arrivals)
    sends = []
    while arrivals:
        now, client = heapq.heappop(arrivals)
        while penalty_times and penalty_times[0] <= now:
            at = penalty_times.pop(0)
            tats = [penalise(tat, at, rng.uniform(0, period), w) for tat, w in zip(tats, windows)]
        cost = rng.randint(1, max_cost)
        tats, wait = reserve_all(tats, now, cost, windows)
        start = now + wait
        if start >= horizon:
            continue
        sends.append((start, cost))
        pause = 0.0 if busy else rng.choice([0.0, 0.0, rng.expovariate(clients / period), rng.uniform(0, 3 * period)])
        heapq.heappush(arrivals, (start + pause, client))
    return sends


def max_units_arriving_late(sends: list[tuple[float, int]], period: float) -> int:
    """Most units a server can count in one period when requests may arrive up to 1 % of
    the period after their reserved start: its window then holds sends reserved within
    1.01 periods (the ones reserved just before the window arrive inside it)."""
    return max_units_in_window(sends, 1.01 * period)


def random_window(rng: random.Random) -> RateSpec:
    limit = rng.choice([2, 5, 20, 60, 100, 1000, 9000])
    burst = rng.choice([None, None, rng.randint(1, limit - 1)])
    return RateSpec(limit=limit, period_seconds=rng.choice([1.0, 2.0, 60.0]), burst=burst)


@pytest.mark.parametrize("seed", range(60))
def test_no_window_ever_holds_more_than_the_limit(seed):
    rng = random.Random(seed)
    windows = [random_window(rng) for _ in range(rng.choice([1, 1, 2]))]
    smallest = min(w.limit for w in windows)
    longest = max(w.period_seconds for w in windows)
    sends = simulate(
        windows,
        clients=rng.randint(1, 6),
        horizon=6 * longest,
        rng=rng,
        max_cost=rng.choice([1, max(1, smallest // 10), smallest]),
        penalties=rng.randint(0, 2),
    )

    for w in windows:
        assert max_units_in_window(sends, w.period_seconds) <= w.limit, w
        assert max_units_arriving_late(sends, w.period_seconds) <= w.limit, w
        # The derivation is tight: the bound holds up to (1 + margin) periods plus T.
        assert (
            max_units_in_window(sends, (1 + SAFETY_MARGIN) * w.period_seconds + 0.99 * w.emission_interval) <= w.limit
        )


@pytest.mark.parametrize("limit, period", [(60, 60.0), (100, 60.0), (9000, 60.0), (250_000, 3600.0)])
def test_default_spec_keeps_at_least_97_percent_of_the_limit(limit, period):
    spec = RateSpec(limit=limit, period_seconds=period)
    assert spec.burst_size == max(1, limit // 100)
    assert period / spec.emission_interval >= 0.97 * limit
    assert math.floor((1 + SAFETY_MARGIN) * period / spec.emission_interval) + spec.burst_size <= limit


@pytest.mark.parametrize("limit, max_cost", [(60, 1), (100, 1), (9000, 1), (9000, 100)])
def test_saturated_throughput_is_at_least_97_percent(limit, max_cost):
    spec = RateSpec(limit=limit, period_seconds=60.0)
    horizon = 30 * spec.period_seconds
    sends = simulate([spec], clients=4, horizon=horizon, rng=random.Random(limit), max_cost=max_cost, busy=True)
    first = sends[0][0]
    units = sum(cost for _, cost in sends)
    assert units / (horizon - first) >= 0.97 * limit / spec.period_seconds
    assert max_units_arriving_late(sends, spec.period_seconds) <= limit


def test_reservations_queue_in_order_of_asking():
    spec = RateSpec(limit=10, period_seconds=1.0)  # burst 1, T = 1.01 / 9 s
    tat, first_wait = reserve(IDLE, 0.0, 1, spec)
    tat, second_wait = reserve(tat, 0.0, 1, spec)
    _, third_wait = reserve(tat, 0.0, 1, spec)
    assert (first_wait, second_wait, third_wait) == pytest.approx(
        (0, spec.emission_interval, 2 * spec.emission_interval)
    )


def test_cost_above_burst_waits_for_its_tokens_unless_the_bucket_was_idle():
    spec = RateSpec(limit=100, period_seconds=1.0)  # burst 1
    _, wait = reserve(IDLE, 0.0, 100, spec)
    assert wait == 0  # an idle bucket lets a whole window's worth go at once
    tat, _ = reserve(IDLE, 0.0, 1, spec)
    _, wait = reserve(tat, 0.0, 50, spec)
    assert wait == pytest.approx(50 * spec.emission_interval)


def test_penalise_holds_everyone_back_then_no_burst():
    spec = RateSpec(limit=1000, period_seconds=1.0)  # burst 10
    tat = penalise(IDLE, 5.0, 2.0, spec)
    starts = []
    for _ in range(3):
        tat, wait = reserve(tat, 5.0, 1, spec)
        starts.append(5.0 + wait)
    assert starts == pytest.approx([7.0, 7.0 + spec.emission_interval, 7.0 + 2 * spec.emission_interval])
    assert penalise(100.0, 5.0, 2.0, spec) == 100.0  # never moves a TAT back


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(limit=1, period_seconds=1),
        dict(limit=10, period_seconds=0),
        dict(limit=10, period_seconds=1, burst=10),
        dict(limit=10, period_seconds=1, burst=0),
    ],
)
def test_spec_rejects_values_that_cannot_be_limited(kwargs):
    with pytest.raises(ValueError):
        RateSpec(**kwargs)


@pytest.mark.parametrize("cost", [0, 11, 1.5])
def test_cost_outside_1_to_limit_is_refused(cost):
    with pytest.raises(ValueError, match="cost"):
        reserve(IDLE, 0.0, cost, RateSpec(limit=10, period_seconds=1))


# --- Redis bucket ----------------------------------------------------------------------


@pytest.fixture
def redis_client():
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"these tests need a Redis server at {REDIS_URL} (set TEST_REDIS_URL): {exc}")
    yield client
    client.close()


@pytest.fixture
def key(redis_client):
    prefix = f"test:rate_limit:{uuid.uuid4().hex}"
    yield f"{prefix}:bucket"
    for leftover in redis_client.scan_iter(match=f"{prefix}:*"):
        redis_client.delete(leftover)


def server_time(client: redis.Redis) -> float:
    seconds, microseconds = client.time()
    return seconds + microseconds / 1e6


def stored_tats(client: redis.Redis, key: str) -> dict[str, float]:
    return {field.decode(): int(value) / 1e6 for field, value in client.hgetall(key).items()}


def test_redis_bucket_accounts_for_cost_on_the_server_clock(redis_client, key, monkeypatch):
    spec = RateSpec(limit=100, period_seconds=1.0)  # burst 1, T = 10.2 ms
    bucket = RedisTokenBucket(redis_client, key, spec)
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 3600)  # this host's clock is an hour off

    before = server_time(redis_client)
    assert bucket.acquire(20) == 0  # idle bucket: a cost up to the limit goes at once
    after = server_time(redis_client)
    (tat,) = stored_tats(redis_client, key).values()
    assert before + 20 * spec.emission_interval <= tat <= after + 20 * spec.emission_interval + 1e-6

    started = time.monotonic()
    waited = bucket.acquire(1)  # queues behind the 20 units
    assert waited == pytest.approx(20 * spec.emission_interval, abs=0.02)
    assert time.monotonic() - started >= waited
    # The key vanishes once its state no longer matters: about one period after the TAT.
    assert 0 < redis_client.pttl(key) <= (21 * spec.emission_interval + 1.01 * spec.period_seconds) * 1000 + 1


def test_redis_bucket_waits_for_the_tightest_window_and_moves_all(redis_client, key):
    per_second = RateSpec(limit=100, period_seconds=1.0)  # T = 10.2 ms, burst 1
    per_half = RateSpec(limit=10, period_seconds=0.5, burst=5)  # T = 101 ms, burst 5
    bucket = RedisTokenBucket(redis_client, key, [per_second, per_half])

    assert bucket.acquire(5) == 0
    first = stored_tats(redis_client, key)
    waited = bucket.acquire(1)
    second = stored_tats(redis_client, key)

    # per_half decides: its TAT is 5 T ahead and it tolerates 4 T of burst.
    assert waited == pytest.approx(per_half.emission_interval, abs=0.02)
    start = first["10/0.5s"] - 4 * per_half.emission_interval
    assert second["10/0.5s"] == pytest.approx(first["10/0.5s"] + per_half.emission_interval, abs=2e-6)
    # per_second moves from the common start, not from its own earlier TAT.
    assert second["100/1s"] == pytest.approx(start + per_second.emission_interval, abs=2e-6)


def test_penalise_delays_another_bucket_on_the_same_key(redis_client, key):
    spec = RateSpec(limit=1000, period_seconds=1.0)
    this_process = RedisTokenBucket(redis_client, key, spec)
    other_process = RedisTokenBucket(redis.Redis.from_url(REDIS_URL, socket_timeout=2), key, spec)

    started = time.monotonic()
    this_process.penalise(0.3)
    other_process.acquire()
    assert time.monotonic() - started >= 0.3
    assert other_process.acquire() == pytest.approx(spec.emission_interval, abs=0.01)  # no burst after a pause


def sleeper_and_penalty(bucket, penalised, pause: float) -> tuple[float, float]:
    """A thread takes the one burst slot of `bucket`, another sleeps on the next, then a 429
    pauses `penalised` (the same bucket, or another on the same key): (when the pause began,
    when the sleeper was cleared to send), in time.monotonic()."""
    bucket.acquire()
    cleared: list[float] = []
    sleeper = threading.Thread(target=lambda: (bucket.acquire(), cleared.append(time.monotonic())))
    sleeper.start()
    time.sleep(0.02)  # the sleeper has reserved its slot, 0.11 s on, and sleeps on it
    penalised_at = time.monotonic()
    penalised.penalise(pause)
    sleeper.join()
    return penalised_at, cleared[0]


PACED = RateSpec(limit=10, period_seconds=1.0, burst=1)


def test_a_sleeper_in_this_process_reserves_again_behind_a_pause(redis_client, key):
    bucket = RedisTokenBucket(redis_client, key, PACED)
    penalised_at, cleared_at = sleeper_and_penalty(bucket, bucket, 0.4)
    assert cleared_at >= penalised_at + 0.4


def test_a_sleeper_in_another_process_reserves_again_behind_a_pause(redis_client, key):
    other_process = RedisTokenBucket(redis.Redis.from_url(REDIS_URL, socket_timeout=2), key, PACED)
    penalised_at, cleared_at = sleeper_and_penalty(RedisTokenBucket(redis_client, key, PACED), other_process, 0.4)
    assert cleared_at >= penalised_at + 0.4


def test_deleting_the_key_forgets_the_reservations(redis_client, key):
    """Manual recovery is `DEL key` in redis-cli: the bucket starts afresh, with no wait."""
    bucket = RedisTokenBucket(redis_client, key, RateSpec(limit=10, period_seconds=60))
    bucket.acquire()
    assert redis_client.exists(key)
    redis_client.delete(key)
    assert bucket.acquire() == 0


CHILD = textwrap.dedent("""
    import sys, time
    from stock_pipeline.rate_limit import RateSpec, build_limiter

    url, key, start_at, stop_at = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
    limiter = build_limiter(url, key, [RateSpec(limit=20, period_seconds=2)])
    time.sleep(max(0.0, start_at - time.time()))
    while True:
        limiter.acquire()
        sent = time.time()
        if sent > stop_at:
            break
        print(sent, flush=True)
""")


def test_processes_sharing_a_key_never_exceed_the_limit_together(key):
    spec = RateSpec(limit=20, period_seconds=2)
    start_at = time.time() + 2.0  # time for the interpreters to start
    stop_at = start_at + 5.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, REDIS_URL, key, str(start_at), str(stop_at)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(3)
    ]
    sends = []
    for child in children:
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0, err
        assert out, f"a process sent nothing: {err}"
        sends += [(float(line), 1) for line in out.split()]

    assert max_units_in_window(sends, spec.period_seconds) <= spec.limit
    achieved = len(sends) / (stop_at - start_at)
    assert achieved >= 0.9 * spec.limit / spec.period_seconds


def test_unreachable_redis_raises_a_clear_error_without_the_password():
    limiter = build_limiter("redis://:hunter2@127.0.0.1:1/0", "never-stored", [RateSpec(limit=10, period_seconds=1)])
    for call in (limiter.acquire, lambda: limiter.penalise(1.0)):
        with pytest.raises(RateLimiterUnavailableError) as caught:
            call()
        message = str(caught.value)
        assert "redis://127.0.0.1:1/0" in message and "REDIS_URL" in message
        assert "hunter2" not in message


def test_redis_that_does_not_answer_raises_unavailable():
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never replies
        port = silent.getsockname()[1]
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.2, socket_connect_timeout=0.2)
        bucket = RedisTokenBucket(client, "never-stored", RateSpec(limit=10, period_seconds=1))
        with pytest.raises(RateLimiterUnavailableError, match="Timeout"):
            bucket.acquire()


# --- factory and local bucket -------------------------------------------------------------


def test_build_limiter_picks_redis_with_a_url_and_local_without():
    specs = [RateSpec(limit=10, period_seconds=1)]
    with_redis = build_limiter("redis://127.0.0.1:1/0", "never-stored", specs)  # nothing connects here
    without = build_limiter(None, "never-stored", specs)
    assert isinstance(with_redis, RedisTokenBucket) and isinstance(with_redis, RateLimiter)
    assert isinstance(without, LocalTokenBucket) and isinstance(without, RateLimiter)


def test_local_bucket_limits_threads_and_honours_penalties():
    spec = RateSpec(limit=10, period_seconds=0.5)
    bucket = LocalTokenBucket(spec)
    sends = []
    record = threading.Lock()

    def spend():
        for _ in range(8):
            bucket.acquire()
            with record:
                sends.append((time.monotonic(), 1))

    threads = [threading.Thread(target=spend) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(sends) == 24
    assert max_units_in_window(sends, spec.period_seconds) <= spec.limit

    bucket.penalise(0.2)
    started = time.monotonic()
    bucket.acquire()
    assert time.monotonic() - started >= 0.19


def test_a_sleeping_thread_of_a_local_bucket_reserves_again_behind_a_pause():
    bucket = LocalTokenBucket(PACED)
    penalised_at, cleared_at = sleeper_and_penalty(bucket, bucket, 0.4)
    assert cleared_at >= penalised_at + 0.4
