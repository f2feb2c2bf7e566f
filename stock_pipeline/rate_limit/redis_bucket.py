"""A GCRA bucket in Redis, shared by every process and account that uses the same key.

Each ``acquire`` runs ``gcra.lua`` once (EVALSHA through redis-py's ``register_script``):
it reserves on all the bucket's windows together on the Redis server clock and returns
how long to wait; the process then sleeps that long in one go and sends. Nothing polls,
and processes are served in the order they asked. A caller that slept asks once more
before sending whether a 429 paused the key meanwhile (see ``acquire``).

When Redis cannot be reached (connection refused, timeout) the bucket raises
``RateLimiterUnavailableError`` instead of guessing: without the shared state this
process cannot know what the others spend, and a breach blocks the whole client_id for
every seller account. So no Allegro call is made, the run fails with an alert, and the
next scheduled run tries again.

A reservation is never refused for being far away: a long queue only makes the caller
sleep, and the run as a whole is bounded by its Dagster timeout.
"""

from __future__ import annotations

import math
import time
from contextlib import contextmanager
from importlib import resources
from typing import Iterator, Sequence

import redis

from stock_pipeline.foundation.errors import RateLimiterUnavailableError
from stock_pipeline.rate_limit.gcra import RateSpec, as_windows, check_cost

_LUA_SOURCE = resources.files(__package__).joinpath("gcra.lua").read_text(encoding="utf-8")
_MICROSECONDS = 1_000_000


def _window_field(window: RateSpec) -> str:
    """Hash field holding a window's TAT, readable in redis-cli: e.g. ``9000/60s``."""
    return f"{window.limit}/{window.period_seconds:g}s"


def _describe_redis(client: redis.Redis) -> str:
    """Where the client connects, without the password: for error messages."""
    params = client.connection_pool.connection_kwargs
    if "path" in params:
        return f"unix://{params['path']}"
    return f"redis://{params.get('host', 'localhost')}:{params.get('port', 6379)}/{params.get('db', 0)}"


class RedisTokenBucket:
    """A rate-limit bucket of one or more windows, stored in Redis under ``key``."""

    def __init__(self, redis_client: redis.Redis, key: str, spec: RateSpec | Sequence[RateSpec]):
        self._redis = redis_client
        self._key = key
        self._windows = as_windows(spec)
        self._script = redis_client.register_script(_LUA_SOURCE)
        self._window_args: list[str | int | float] = []
        for window in self._windows:
            self._window_args += [
                _window_field(window),
                window.emission_interval * _MICROSECONDS,
                window.burst_size,
                window.limit,
            ]
        # time.monotonic() until which this process knows of a 429 pause (its own penalise).
        self._paused_until = -math.inf

    def acquire(self, cost: int = 1) -> float:
        """Reserve ``cost`` units, sleep until they may be sent, return the seconds waited.

        A 429 while this caller slept (answered to another thread or process) put its slot
        inside the pause: it then reserves again, behind the pause, rather than send into
        it. The pause is learnt from this process's own ``penalise`` for free, and from
        Redis with one more call, made only after a sleep (a caller that did not sleep
        sends at once, like a request already in flight).

        If the reply is lost after the script ran (a timeout), a retry by redis-py
        reserves a second time: that only wastes a slot, it never overspends.
        """
        check_cost(cost, self._windows)
        waited = 0.0
        while True:
            wait = self._run("reserve", cost, "reserve")
            if wait > 0:
                time.sleep(wait)
                waited += wait
            if time.monotonic() < self._paused_until or (wait > 0 and self._run("paused", 0, "check the pause") > 0):
                continue
            return waited

    def penalise(self, seconds: float) -> None:
        """After a 429: no process sharing the key starts a call for ``seconds``."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)
        self._run("penalise", math.ceil(max(seconds, 0) * _MICROSECONDS), "penalise")

    def _run(self, mode: str, amount: int, action: str) -> float:
        """The script in `mode`: its answer in seconds."""
        with self._unavailable_as_error(action):
            return self._script(keys=[self._key], args=[mode, amount, *self._window_args]) / _MICROSECONDS

    @contextmanager
    def _unavailable_as_error(self, action: str) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise RateLimiterUnavailableError(
                f"shared rate limiter unavailable: could not {action} on key {self._key!r} at "
                f"{_describe_redis(self._redis)} ({type(exc).__name__}: {exc}). No Allegro call is made "
                "without it, since what other processes spend cannot be known. Check that Redis is "
                "running and that REDIS_URL points at it; the next scheduled run retries."
            ) from exc
