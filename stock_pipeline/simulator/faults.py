"""Random failures of the API, to test a client's retries.

A fault is drawn before the request has any effect, so a faulted write was not applied.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Iterable

FAULT_KINDS = ("429", "500", "503", "timeout", "drop")


@dataclass(frozen=True)
class _FaultPlan:
    rate: float
    kinds: tuple[str, ...]
    rng: random.Random
    path_prefixes: tuple[str, ...] | None
    remaining: list[int] | None  # faults still to inflict (one mutable cell), None: no end


class FaultInjector:
    def __init__(self):
        self._plan: _FaultPlan | None = None
        self._lock = threading.Lock()

    def configure(
        self, rate: float, kinds: Iterable[str], seed: int | None, paths: Iterable[str] | None, count: int | None = None
    ) -> None:
        kinds = tuple(kinds)
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown or not kinds:
            raise ValueError(f"fault kinds must be a non-empty selection of {FAULT_KINDS}, got {kinds}")
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"fault rate must be within 0..1, got {rate}")
        if count is not None and count < 1:
            raise ValueError(f"fault count must be at least 1 (or None), got {count}")
        with self._lock:
            prefixes = None if paths is None else tuple(paths)
            self._plan = _FaultPlan(rate, kinds, random.Random(seed), prefixes, None if count is None else [count])

    def clear(self) -> None:
        with self._lock:
            self._plan = None

    def draw(self, path: str) -> str | None:
        """The fault kind to inflict on a request to `path`, or None."""
        with self._lock:
            plan = self._plan
            if plan is None or (plan.path_prefixes is not None and not path.startswith(plan.path_prefixes)):
                return None
            if plan.rng.random() >= plan.rate:
                return None
            if plan.remaining is not None:
                if plan.remaining[0] == 0:
                    return None
                plan.remaining[0] -= 1
            return plan.rng.choice(plan.kinds)
