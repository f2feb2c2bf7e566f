"""A GCRA bucket held in this process, for runs without Redis (the one-command demo).

It limits only the threads of this process: two processes each with a local bucket
may together spend twice the limit, which is why production sets REDIS_URL.
"""

from __future__ import annotations

import threading
import time
from typing import Sequence

from stock_pipeline.rate_limit.gcra import IDLE, RateSpec, as_windows, penalise, reserve_all


class LocalTokenBucket:
    """The same reservations as ``RedisTokenBucket``, on ``time.monotonic``."""

    def __init__(self, spec: RateSpec | Sequence[RateSpec]):
        self._windows = as_windows(spec)
        self._tats = [IDLE] * len(self._windows)
        self._lock = threading.Lock()
        self._paused_until = IDLE  # time.monotonic() at which the last 429 pause ends

    def acquire(self, cost: int = 1) -> float:
        """Reserve ``cost`` units, sleep until they may be sent, return the seconds waited.
        A 429 while this thread slept put its slot inside the pause: it reserves again."""
        waited = 0.0
        while True:
            with self._lock:
                self._tats, wait = reserve_all(self._tats, time.monotonic(), cost, self._windows)
            if wait > 0:
                time.sleep(wait)
                waited += wait
            with self._lock:
                if time.monotonic() >= self._paused_until:
                    return waited

    def penalise(self, seconds: float) -> None:
        """After a 429: no thread starts a call for ``seconds``."""
        with self._lock:
            now = time.monotonic()
            self._paused_until = max(self._paused_until, now + seconds)
            self._tats = [penalise(tat, now, seconds, window) for tat, window in zip(self._tats, self._windows)]
