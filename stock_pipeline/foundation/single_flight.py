"""Single flight: callers that ask for the same key while its work is in flight wait for that
work and share its result (or its exception) instead of doing it again. Nothing is kept once
the work ends, so a caller never gets a result older than one that was still being made when
it asked: this is not a cache."""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Callable, Generic, Hashable, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._in_flight: dict[Hashable, Future] = {}
        self._sharing: dict[Hashable, int] = {}

    def run(self, key: Hashable, work: Callable[[], T]) -> T:
        """`work()`'s result for `key`: of this call's work, or of the one in flight when it came."""
        with self._lock:
            shared = self._in_flight.get(key)
            if shared is None:
                mine: Future = Future()
                self._in_flight[key] = mine
            else:
                self._sharing[key] = self._sharing.get(key, 0) + 1
        if shared is not None:
            return shared.result()
        try:
            value = work()
        except BaseException as exc:
            mine.set_exception(exc)
            raise
        else:
            mine.set_result(value)
            return value
        finally:
            with self._lock:
                del self._in_flight[key]
                self._sharing.pop(key, None)

    def sharing(self, key: Hashable) -> int:
        """How many callers are waiting for the work in flight for `key`."""
        with self._lock:
            return self._sharing.get(key, 0)
