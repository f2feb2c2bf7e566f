"""A full sync's listing merged into the live offer map beside the run, not in its path.

Merging a complete listing is one statement, but PostgreSQL takes 1.5-2.7 s over 100 000
offers (up to 8 s with five accounts at once), and nothing the run does next needs it:
the plan comes from the listing itself, and the map keeps the newer of two observations
of an offer, so the merge and the run's own confirmed writes (`observe_writes`) may land
in either order. So `allegro_offers` starts it and `stock_updates` waits for it at its
end: when a run that wrote is over, its account's map is current, as the live sensor
expects. A run that stops earlier (a guard holds its writes) leaves the merge to finish on
its own; the interpreter waits for it before it exits, and an error is logged.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable

from stock_pipeline.foundation.logs import get_logger

log = get_logger(__name__)

# Two at a time: each is a statement PostgreSQL runs on one of the machine's cores.
_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="live-map-merge")
_merges: dict[str, Future] = {}
_lock = threading.Lock()


def start(run_id: str, account: str, merge: Callable[[], None]) -> None:
    future = _pool.submit(merge)
    future.add_done_callback(lambda done: _log_failure(done, account))
    with _lock:
        _merges[run_id] = future


def finish(run_id: str) -> None:
    """Waits for the run's merge, if it started one; raises what the merge raised."""
    with _lock:
        future = _merges.pop(run_id, None)
    if future is not None:
        future.result()


def _log_failure(future: Future, account: str) -> None:
    if future.exception() is not None:
        log.error("live_map_merge_failed", account=account, error=str(future.exception()))
