"""The Generic Cell Rate Algorithm (GCRA): the pure maths of the shared rate limiter.

No I/O and no clock here: every function takes the time as an argument, so the maths
can be tested with a virtual clock and is run, line for line, by ``gcra.lua`` on the
Redis server clock and by ``LocalTokenBucket`` on ``time.monotonic``.

GCRA is a token bucket written as a single number per window, the *theoretical arrival
time* (TAT): the moment at which everything reserved so far would have been paid for if
units were released one per emission interval. A bucket that was never used (or has
been idle long enough) has ``tat = -inf``.

Notation: a window (``RateSpec``) allows ``L`` units per ``W`` seconds; ``B`` is the
burst, ``T`` the emission interval and ``tau = (B - 1) * T`` the burst tolerance.

Reservation of ``c`` units at time ``now``::

    start   = max(now, tat + (c - B) * T)      # = max(now, tat + (c - 1) * T - tau)
    new_tat = max(tat, start) + c * T
    wait    = start - now

The caller sleeps ``wait`` and then sends. Every call reserves (no polling), so callers
are served in the order they asked, across processes, however long the queue is.

Guarantee: whatever the arrival pattern and the costs (each ``c <= L``), any closed
window of length ``X`` holds at most ``floor(X / T) + B = floor((X + tau) / T) + 1``
units. Proof: take the first reservation ``p`` and the last reservation ``q`` (in the
order they were made) whose start lies in ``[a, a + X]``. Every reservation moves the
TAT forward by ``c * T`` from at least its own start, so just before ``q`` the TAT is at
least ``start_p + (c_p + ... + c_{q-1}) * T >= a + (c_p + ... + c_{q-1}) * T``; ``q``
starts no earlier than that TAT plus ``(c_q - B) * T`` and no later than ``a + X``,
hence ``c_p + ... + c_q <= X / T + B``, and costs are whole numbers. When ``p == q``
the window holds ``c_p <= L``. Penalties only move TATs forward, which the proof allows.

Choice of ``T`` and ``B`` (see ``RateSpec``)::

    B = burst, default max(1, L // 100)       (about 1 % of the limit)
    T = (1 + SAFETY_MARGIN) * W / (L - B)     (SAFETY_MARGIN = 0.01)

so ``floor(X / T) + B <= L`` for every ``X < (1 + SAFETY_MARGIN) * W + T``: a window of
``W`` holds at most ``L`` even when requests reach the server up to
``SAFETY_MARGIN * W + T`` later than their reserved start (sleep overshoot, scheduling,
the Redis round trip, network latency that varies between requests; 0.6 s at 60 s).
A late request is what breaks a limiter with no margin: it lands next to the requests
reserved after it. The long-run rate is ``1 / T``, a fraction
``(1 - B / L) / (1 + SAFETY_MARGIN)`` of the limit: 97.4 % at 60/min, 98.0 % for every
limit of 100 or more (9 000/min: B = 90, T = 6.80 ms).

A cost above the burst waits until ``(c - B) * T`` after the previous reservation has
been paid for; once the TAT lies ``(L - B) * T`` (one window plus the margin) in the
past, even a cost of ``L`` goes at once, as a sliding window would let it.

With several windows (a per-minute and a per-hour budget) one reservation takes a single
start, the latest of each window's own start, and moves every window's TAT from that
common start; each window keeps its guarantee, since the proof only needs the start to
be no earlier than the window's own formula asks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

# Fraction of the period added to the emission interval so that late requests still fit.
SAFETY_MARGIN = 0.01

# State of a bucket that was never used: every start formula then yields ``now``.
IDLE = -math.inf


@dataclass(frozen=True)
class RateSpec:
    """At most ``limit`` units in any window of ``period_seconds``.

    ``burst`` is how many units may go back to back after a pause; by default about 1 %
    of the limit (at least 1). A larger burst lowers the long-run rate, see the module
    docstring for the numbers.
    """

    limit: int
    period_seconds: float
    burst: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.limit, int) or self.limit < 2:
            raise ValueError(f"RateSpec limit must be a whole number of at least 2, got {self.limit!r}")
        if not self.period_seconds > 0:
            raise ValueError(f"RateSpec period_seconds must be positive, got {self.period_seconds!r}")
        if self.burst is not None and not (isinstance(self.burst, int) and 1 <= self.burst < self.limit):
            raise ValueError(
                f"RateSpec burst must be a whole number from 1 to limit - 1 ({self.limit - 1}), got {self.burst!r}"
            )

    @property
    def burst_size(self) -> int:
        """``B``: the burst asked for, or about 1 % of the limit."""
        return self.burst if self.burst is not None else max(1, self.limit // 100)

    @property
    def emission_interval(self) -> float:
        """``T`` in seconds: one unit is paid for every ``T``."""
        return (1 + SAFETY_MARGIN) * self.period_seconds / (self.limit - self.burst_size)

    @property
    def tolerance(self) -> float:
        """``tau = (B - 1) * T``: how far ahead of its TAT a single unit may go."""
        return (self.burst_size - 1) * self.emission_interval


def as_windows(spec: RateSpec | Sequence[RateSpec]) -> tuple[RateSpec, ...]:
    """The windows of a bucket, given as one spec or several."""
    windows = (spec,) if isinstance(spec, RateSpec) else tuple(spec)
    if not windows:
        raise ValueError("a rate-limit bucket needs at least one RateSpec")
    return windows


def check_cost(cost: int, windows: Sequence[RateSpec]) -> None:
    """Refuse a cost that no schedule could send without breaking a window."""
    smallest = min(window.limit for window in windows)
    if not isinstance(cost, int) or not 1 <= cost <= smallest:
        raise ValueError(f"cost must be a whole number from 1 to the smallest limit ({smallest}), got {cost!r}")


def reserve_all(tats: Sequence[float], now: float, cost: int, windows: Sequence[RateSpec]) -> tuple[list[float], float]:
    """Reserve ``cost`` units on every window at once: (new TATs, seconds to wait)."""
    check_cost(cost, windows)
    start = max(
        [now]
        + [
            tat + (cost - window.burst_size) * window.emission_interval
            for tat, window in zip(tats, windows, strict=True)
        ]
    )
    new_tats = [max(tat, start) + cost * window.emission_interval for tat, window in zip(tats, windows)]
    return new_tats, start - now


def reserve(tat: float, now: float, cost: int, spec: RateSpec) -> tuple[float, float]:
    """Reserve ``cost`` units on one window: (new TAT, seconds to wait before sending)."""
    (new_tat,), wait = reserve_all([tat], now, cost, [spec])
    return new_tat, wait


def penalise(tat: float, now: float, seconds: float, spec: RateSpec) -> float:
    """New TAT after a 429: nobody sharing the bucket starts before ``now + seconds``.

    The tolerance is added on top (``tat >= now + seconds + tau``) because a bare
    ``now + seconds`` would still let a burst of ``B - 1`` units start before the pause
    ends; after the pause units go one per ``T``, without a burst.
    """
    return max(tat, now + seconds + spec.tolerance)
