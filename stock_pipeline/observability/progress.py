"""Progress of a sync, for whoever is watching (the CLI prints it; Dagster logs it).

A process-wide list of listeners: the CLI runs its syncs in-process through Dagster,
so the assets reach its printer without Dagster knowing about it.
"""

from __future__ import annotations

import threading
from typing import Callable

Listener = Callable[[str, str, int, int], None]  # (account, stage, done, total)

_listeners: list[Listener] = []
_lock = threading.Lock()


def add_listener(listener: Listener) -> None:
    with _lock:
        _listeners.append(listener)


def remove_listener(listener: Listener) -> None:
    with _lock:
        if listener in _listeners:
            _listeners.remove(listener)


def has_listeners() -> bool:
    with _lock:
        return bool(_listeners)


def report(account: str, stage: str, done: int, total: int) -> None:
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener(account, stage, done, total)
