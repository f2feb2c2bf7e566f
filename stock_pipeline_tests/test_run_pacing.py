"""The pacer of account runs in one process (defs/run_pacing.py), on plain threads."""

from __future__ import annotations

import threading
import time

import pytest

from stock_pipeline.cli.sync_runner import planning_places
from stock_pipeline.defs import run_pacing
from stock_pipeline.defs.run_pacing import Pacer


def _planning_runs(pacer: Pacer, runs: int, *, write: bool = True, plan_seconds: float = 0.05) -> int:
    """`runs` threads, each a paced run that plans for `plan_seconds` (between its listing and
    its writes); the most that were planning at once."""
    lock, planning, most = threading.Lock(), [0], [0]

    def run() -> None:
        with pacer.ticket():
            run_pacing.before_listing()
            with lock:
                planning[0] += 1
                most[0] = max(most[0], planning[0])
            time.sleep(plan_seconds)
            with lock:
                planning[0] -= 1
            if write:
                run_pacing.writes_starting()
                time.sleep(plan_seconds)  # writing: its place is already someone else's

    threads = [threading.Thread(target=run) for _ in range(runs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(thread.is_alive() for thread in threads), "a paced run never got a place"
    return most[0]


def test_at_most_the_places_plan_at_once_and_every_run_gets_through():
    assert _planning_runs(Pacer(2), runs=6) == 2


def test_a_run_that_ends_before_its_writes_gives_its_place_back():
    # Held or failed runs never reach their writes: the ticket's end frees the place.
    assert _planning_runs(Pacer(1), runs=4, write=False) == 1


def test_a_place_is_taken_once_per_run_and_given_back_once():
    pacer = Pacer(1)
    with pacer.ticket():
        run_pacing.before_listing()
        run_pacing.before_listing()  # a retried step does not wait for a second place (it would wait for ever)
        run_pacing.writes_starting()
        run_pacing.writes_starting()  # not a second place freed
    assert _planning_runs(pacer, runs=3) == 1


def test_runs_without_a_ticket_are_not_paced():
    run_pacing.before_listing()  # the daemon's runs: no pacer, nothing waits
    run_pacing.writes_starting()
    with pytest.raises(ValueError, match="at least one place"):
        Pacer(0)


def test_a_sync_plans_in_waves_of_at_least_four_accounts():
    # Four accounts' PATCHes spend the client_id's budget; a smaller last wave would write alone.
    assert [planning_places(n) for n in (1, 3, 4, 7, 8, 9, 10, 12, 13, 20)] == [1, 3, 4, 7, 4, 5, 5, 4, 5, 4]
