"""SingleFlight: callers asking while the work is in flight share it; later callers do it again."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from stock_pipeline.foundation.single_flight import SingleFlight


def test_callers_during_the_work_share_it_and_a_later_caller_does_it_again():
    flight: SingleFlight[int] = SingleFlight()
    started, release = threading.Event(), threading.Event()
    calls = []

    def work() -> int:
        calls.append(1)
        started.set()
        release.wait(5)
        return len(calls)

    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(flight.run, "q", work)
        assert started.wait(5)
        joiners = [pool.submit(flight.run, "q", work) for _ in range(3)]
        other_key = pool.submit(flight.run, "other", lambda: 99)
        assert other_key.result(5) == 99  # another key is not held up by this one
        _wait_until(lambda: flight.sharing("q") == 3)
        release.set()
        assert first.result(5) == 1
        assert [j.result(5) for j in joiners] == [1, 1, 1]
    assert len(calls) == 1
    # The work ended: nothing is kept, the next caller reads afresh.
    assert flight.run("q", work) == 2


def test_the_work_failing_fails_every_caller_sharing_it_and_is_not_remembered():
    flight: SingleFlight[int] = SingleFlight()
    started, release = threading.Event(), threading.Event()

    def failing() -> int:
        started.set()
        release.wait(5)
        raise ValueError("warehouse down")

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(flight.run, "q", failing)
        assert started.wait(5)
        joiner = pool.submit(flight.run, "q", failing)
        _wait_until(lambda: flight.sharing("q") == 1)
        release.set()
        for future in (first, joiner):
            with pytest.raises(ValueError, match="warehouse down"):
                future.result(5)
    assert flight.run("q", lambda: 7) == 7


def _wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)
