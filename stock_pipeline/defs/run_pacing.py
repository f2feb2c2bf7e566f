"""Pacing of the account runs one process runs side by side (a CLI sync of many accounts).

Between its warehouse snapshot and its first write, a run spends about a second of the
process's interpreter (the GIL): decoding the listing, Dagster storing and loading values
and recording events, the diff. Runs that all plan at once share the interpreter evenly
and all reach their writes together, late, while the client_id's rate budget waits for
them. So a caller that runs accounts in threads (cli/sync_runner.py) hands each run a
ticket of one `Pacer`: a run waits for one of a few places before it lists the offers
and gives its place back as its writes start (or as it ends, held or failed). The first
accounts then write after a second or two, and the next ones plan in the time the writes
leave free: a write mostly waits for Allegro.

The snapshot comes before the wait, so every run of the sync reads the warehouse at the
same moment and they share one read (account_steps.read_snapshot). A run without a ticket
(a run of the daemon, in a process of its own; a single account) is not paced.

The ticket is a ContextVar: each account's run executes in its own thread, in the context
the caller set (Dagster's in-process executor runs the steps in the caller's thread)."""

from __future__ import annotations

import contextvars
import threading
from contextlib import contextmanager
from typing import Iterator


class Pacer:
    """At most `places` runs between their listing and their writes at once."""

    def __init__(self, places: int):
        if places < 1:
            raise ValueError(f"a pacer needs at least one place, got {places}")
        self.places = places
        self._free = threading.Semaphore(places)

    @contextmanager
    def ticket(self) -> Iterator[None]:
        """Paces the run executed (in this thread) inside the block; its place, if it took
        one, is given back when the block ends whatever happened."""
        ticket = _Ticket(self._free)
        token = _current.set(ticket)
        try:
            yield
        finally:
            _current.reset(token)
            ticket.give_back()


class _Ticket:
    def __init__(self, free: threading.Semaphore):
        self._free = free
        self._lock = threading.Lock()
        self._holding = False
        self._used = False

    def take(self) -> None:
        with self._lock:
            if self._used:  # a run takes a place once (a retried step does not queue again)
                return
            self._used = True
        self._free.acquire()
        with self._lock:
            self._holding = True

    def give_back(self) -> None:
        with self._lock:
            holding, self._holding = self._holding, False
        if holding:
            self._free.release()


_current: contextvars.ContextVar[_Ticket | None] = contextvars.ContextVar("stock_pipeline_run_pacing", default=None)


def before_listing() -> None:
    """Waits, in a paced run, for a place among the runs planning; returns at once otherwise."""
    ticket = _current.get()
    if ticket is not None:
        ticket.take()


def writes_starting() -> None:
    """A paced run's plan is ready and its writes start: its place goes to the next run."""
    ticket = _current.get()
    if ticket is not None:
        ticket.give_back()
