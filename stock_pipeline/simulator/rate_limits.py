"""Allegro's request limits, enforced exactly over sliding windows.

Two kinds: the limit of a client_id (all sellers together), whose breach blocks the
client for a while, and per-seller write limits, which only refuse the request.
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque


class SlidingWindow:
    """At most `limit` units per key within any span of `window_seconds`.

    Not locked: its owners call it under their own lock.
    """

    def __init__(self, limit: int, window_seconds: float):
        self.limit = limit
        self.window_seconds = window_seconds
        self._events: dict[str, deque[tuple[float, int]]] = defaultdict(deque)
        self._used: dict[str, int] = defaultdict(int)

    def fits(self, key: str, cost: int, now: float) -> bool:
        events = self._events[key]
        while events and events[0][0] <= now - self.window_seconds:
            self._used[key] -= events.popleft()[1]
        return self._used[key] + cost <= self.limit

    def add(self, key: str, cost: int, now: float) -> None:
        self._events[key].append((now, cost))
        self._used[key] += cost


class ClientRateLimit:
    """The client_id limit: the request that would exceed the window is refused and blocks
    the client for `block_seconds`; a request during the block is refused too and starts
    the block afresh (Allegro: "retrying during the block prolongs it"). Refused requests
    do not count in the window."""

    def __init__(self, limit: int, window_seconds: float, block_seconds: float):
        self.block_seconds = block_seconds
        self._window = SlidingWindow(limit, window_seconds)
        self._blocked_until: dict[str, float] = {}
        self._lock = threading.Lock()

    def admit(self, client_id: str) -> float | None:
        """None when admitted (and counted); else the seconds the block now lasts."""
        with self._lock:
            now = time.monotonic()
            blocked = now < self._blocked_until.get(client_id, 0.0)
            if not blocked and self._window.fits(client_id, 1, now):
                self._window.add(client_id, 1, now)
                return None
            self._blocked_until[client_id] = now + self.block_seconds
            return self.block_seconds


class SellerWriteLimits:
    """Per-seller limits on writes: offers changed through quantity/publication commands
    (per minute and per hour) and PATCH product-offers calls (per minute)."""

    def __init__(self, command_offers_per_minute: int, command_offers_per_hour: int, patches_per_minute: int):
        self._command_windows = (
            SlidingWindow(command_offers_per_minute, 60.0),
            SlidingWindow(command_offers_per_hour, 3600.0),
        )
        self._patch_window = SlidingWindow(patches_per_minute, 60.0)
        self._lock = threading.Lock()

    def take_command_offers(self, login: str, offer_count: int) -> bool:
        return self._take(self._command_windows, login, offer_count)

    def take_patch(self, login: str) -> bool:
        return self._take((self._patch_window,), login, 1)

    def _take(self, windows: tuple[SlidingWindow, ...], login: str, cost: int) -> bool:
        """Counts `cost` in every window, or in none when any of them is full."""
        with self._lock:
            now = time.monotonic()
            if not all(window.fits(login, cost, now) for window in windows):
                return False
            for window in windows:
                window.add(login, cost, now)
            return True
