"""Rate limiting of Allegro API calls, shared by every process of a seller.

Allegro allows 9 000 requests per minute per client_id, shared by every account and
process, and blocks the client_id for about a minute on a breach; per-user write budgets
count "offer changes" (a command for 1 000 offers costs 1 000). A bucket is one or more
``RateSpec`` windows; ``acquire(cost)`` waits until ``cost`` units fit in all of them.

Key naming: one Redis key per budget, shared by everything that spends it, e.g.

* ``allegro:rate:{client_id}`` for the per-client_id request limit;
* ``allegro:rate:{client_id}:user:{user_id}:offer-changes`` for a user's write budget
  (windows of 9 000/60 s and 250 000/3 600 s in one bucket).

The client_id is not a secret; never put a token or a secret in a key.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from stock_pipeline.rate_limit.gcra import RateSpec
from stock_pipeline.rate_limit.local_bucket import LocalTokenBucket
from stock_pipeline.rate_limit.redis_bucket import RedisTokenBucket

__all__ = ["RateSpec", "RedisTokenBucket", "LocalTokenBucket", "RateLimiter", "build_limiter"]

# Short, so that an unreachable Redis fails the run quickly instead of hanging it.
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0


@runtime_checkable
class RateLimiter(Protocol):
    def acquire(self, cost: int = 1) -> float:
        """Wait until ``cost`` units may be spent; return the seconds waited."""

    def penalise(self, seconds: float) -> None:
        """After a 429: everyone sharing the limit waits ``seconds`` before the next call."""


def build_limiter(redis_url: str | None, key: str, specs: list[RateSpec]) -> RateLimiter:
    """The shared Redis bucket under ``key``, or an in-process one when no Redis URL is set.

    Nothing connects here: redis-py connects on the first call. One immediate retry
    covers a pooled connection that Redis closed (a restart); a second failure raises
    ``RateLimiterUnavailableError``. ``key`` means nothing to the in-process bucket.
    """
    if not redis_url:
        return LocalTokenBucket(specs)
    client = redis.Redis.from_url(
        redis_url,
        socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), retries=1),
    )
    return RedisTokenBucket(client, key, specs)
