"""Sends a write plan to Allegro and records what each write did.

A phase's commands go first, its PATCHes beside them, and each command is polled once
it is due (Allegro processes it meanwhile), in between the sends. Phase one sets
quantities and ends offers; phase two re-activates offers whose quantity is in place
(ACTIVATE needs stock > 0). A
command whose tasks are still NEW when the polling bound runs out is recorded as
`pending`, never as success; the next run asks Allegro again.

Concurrency: Allegro answers in 0.1–0.5 s, so one call at a time never uses the
budgets. The HTTP calls (PATCHes, command PUTs, polls of commands and of PATCH
operations, the recheck of earlier pending writes) run on a pool of ``concurrency``
worker threads; every call still draws from the client's shared Redis limiter and the
account's write budgets, so more threads never spend more than those allow. Workers
only call Allegro: the audit, the results, the logs of decisions and the progress are
kept by the calling thread alone (it hands calls out and takes their answers back), so
they need no locks. What must stay ordered stays so by construction:

- one write in flight per offer: a phase holds at most one row per offer (``apply``
  refuses a plan that does not), and a phase ends only when all of its calls and polls
  have; phase two (ACTIVATE) starts after phase one settled, and only for offers whose
  quantity Allegro confirmed;
- the audit: a chunk of calls is marked `sent` in one statement before any of them is
  handed to the pool, and answers are recorded in bulk after they came (every
  ``OUTCOME_FLUSH_EVERY`` answers or ``OUTCOME_FLUSH_SECONDS``, and at the end of each
  stage). A process killed at any moment leaves `planned`/`sent` rows for the answers
  not yet stored, never a success Allegro did not report. A run stopped by an error
  waits for the calls already running, stores their answers and puts the calls that
  never started back to `planned`.

Each decision is logged (and so reaches the run's event log, see ``run_log``; the
workers run in a copy of the caller's context, so the client's own lines reach it
too): the plan, each command sent and each poll of it, the recheck of earlier pending
writes. PATCHes can number thousands, so they are summed up: a line per
``PATCH_LOG_EVERY`` PATCHes or ``PATCH_LOG_SECONDS``, whichever comes first, and one
for the rest.
"""

from __future__ import annotations

import contextvars
import heapq
import itertools
import time
import uuid
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pandas as pd

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.core.vocabulary import Action, Method, WriteStatus
from stock_pipeline.foundation.errors import AllegroApiError, AllegroOfferNotFoundError
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.writes_log import Outcome, WritesLog

log = get_logger(__name__)

QUANTITY_RESOURCE = "offer-quantity-change-commands"
PUBLICATION_RESOURCE = "offer-publication-commands"
Progress = Callable[[str, int, int], None]  # (stage, done, total)
Key = tuple[str, str]  # (offer_id, action)
PATCH_LOG_EVERY = 100
PATCH_LOG_SECONDS = 2.0
PATCH_LOG_SHOWN = 5  # a summary of this many PATCHes or fewer names each offer and value
OUTCOME_FLUSH_EVERY = 200  # answers stored in one transaction at most …
OUTCOME_FLUSH_SECONDS = 0.5  # … or after this long, so the audit and progress trail the calls closely


@dataclass(frozen=True)
class PollPolicy:
    first_poll_after: float = 1.0  # Allegro's tasks start NEW; an earlier read wastes a call
    max_interval: float = 10.0
    timeout: float = 120.0


@dataclass
class _InFlight:
    key: str  # command id, or the operation URL of an asynchronous PATCH
    resource: str | None  # None for a PATCH operation
    action: str
    offer_ids: list[str]
    next_poll_at: float
    interval: float
    deadline: float
    outcome: dict[str, tuple[str, str | None]] = field(default_factory=dict)


@dataclass(frozen=True)
class _Call:
    """A write handed to the pool: a PATCH (`resource` None) of one offer or a command."""

    action: str
    offer_ids: list[str]
    value: int
    resource: str | None = None
    command_id: str | None = None


@dataclass(frozen=True)
class _Recheck:
    """A write of earlier runs left pending: its command or PATCH operation, asked again."""

    flight: _InFlight
    rows: pd.DataFrame


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _command_kind(resource: str | None, action: str) -> str:
    return "quantity command" if resource == QUANTITY_RESOURCE else f"{action.upper()} command"


class _PatchSummary:
    """Counts PATCHes and their answers between two log lines."""

    def __init__(self, account: str, planned: int, clock: Callable[[], float]):
        self._account = account
        self._planned = planned
        self._clock = clock
        self._since = clock()
        self._sent = 0
        self._counts: dict[str, int] = {}
        self._shown: list[tuple[int, str]] = []  # (value, offer id)
        self._batch = 0

    def add(self, offer_id: str, value: int, answer: str) -> None:
        """`answer`: done (200), accepted (202, polled later), pending or failed."""
        self._batch += 1
        self._sent += 1
        self._counts[answer] = self._counts.get(answer, 0) + 1
        if len(self._shown) < PATCH_LOG_SHOWN:
            self._shown.append((value, offer_id))
        if self._batch >= PATCH_LOG_EVERY or self._clock() - self._since >= PATCH_LOG_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        answers = ", ".join(f"{n} {answer}" for answer, n in self._counts.items())
        # Answers come in any order from the workers; shown in the plan's order (by value).
        named = ", ".join(f"{offer_id}→{value}" for value, offer_id in sorted(self._shown))
        shown = f" [{named}]" if self._batch <= PATCH_LOG_SHOWN else ""
        level = log.warning if self._counts.get(WriteStatus.FAILED) else log.info
        level(
            "patches_sent",
            account=self._account,
            sent=self._batch,
            total_sent=self._sent,
            planned=self._planned,
            answers=dict(self._counts),
            msg=f"PATCH ×{self._batch} ({self._sent}/{self._planned}){shown}: {answers}",
        )
        self._since, self._batch, self._counts, self._shown = self._clock(), 0, {}, []


class WriteApplier:
    def __init__(
        self,
        client: AllegroClient,
        writes_log: WritesLog,
        *,
        run_id: str,
        account: str,
        poll: PollPolicy = PollPolicy(),
        progress: Progress = _no_progress,
        ended_offers: EndedOffers | None = None,
        concurrency: int = 1,
        new_command_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        """`concurrency`: calls in flight at once (settings.allegro_sync_concurrency in a
        run); 1, one call at a time, for a caller that asks for nothing else."""
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self._client = client
        self._log = writes_log
        self._run_id = run_id
        self._account = account
        self._poll = poll
        self._progress = progress
        self._ended_offers = ended_offers
        self._concurrency = concurrency
        self._new_id = new_command_id
        self._clock = clock
        self._sleep = sleep
        self._pool: ThreadPoolExecutor | None = None
        self._results: dict[Key, tuple[str, str | None]] = {}
        self._command_ids: dict[Key, str] = {}
        self._unflushed: list[Outcome] = []  # answers not in the audit yet
        self._unflushed_settled = 0  # of those, this run's writes that reached their final status
        self._flushed_at = clock()
        self._done = 0
        self._total = 0
        self._operations_polled = 0  # polls of asynchronous PATCHes' operations, in _run_phase
        self._operations_timed_out = 0

    # ---- the plan ----------------------------------------------------------------------

    def apply(self, plan: pd.DataFrame) -> pd.DataFrame:
        """Returns the plan with `command_id`, `status` (success/failed/pending/not_sent) and `error`."""
        _require_one_write_per_offer_and_phase(plan)
        self._log.record_planned(self._run_id, self._account, plan)
        self._total = len(plan)
        commands = plan[plan["method"] != Method.PATCH]
        count, patches = int(commands["batch"].nunique()), len(plan) - len(commands)
        calls = ([f"{_count(count, 'command')} ({_count(len(commands), 'offer')})"] if count else []) + (
            [_count(patches, "PATCH", "PATCHes")] if patches else []
        )
        log.info(
            "writes_planned",
            account=self._account,
            changes=len(plan),
            commands=count,
            command_offers=len(commands),
            patches=patches,
            concurrency=self._concurrency,
            msg=f"writing {len(plan)} changes: {', '.join(calls)}" if len(plan) else "nothing to write",
        )
        activations = plan[plan["action"] == Action.ACTIVATE]
        with self._workers():
            self._run_phase(plan[plan["action"] != Action.ACTIVATE])
            # Phase one is over (every call answered, every poll done): only offers whose
            # quantity is in place (or needed none) may be activated.
            restocked = {
                o for (o, a), (s, _) in self._results.items() if a != Action.ACTIVATE and s == WriteStatus.SUCCESS
            }
            needed_restock = set(plan.loc[plan["action"] != Action.ACTIVATE, "offer_id"].astype(str))
            ready = (
                activations["offer_id"]
                .astype(str)
                .map(lambda o: o in restocked or o not in needed_restock)
                .astype(bool)
            )
            blocked = activations.loc[~ready, "offer_id"].astype(str).tolist()
            self._finish(blocked, Action.ACTIVATE, WriteStatus.NOT_SENT, "its quantity could not be set first")
            self._run_phase(activations[ready])
            self._flush()
        return self._annotate(plan)

    def _annotate(self, plan: pd.DataFrame) -> pd.DataFrame:
        keys = list(zip(plan["offer_id"].astype(str), plan["action"].astype(str)))
        out = plan.copy()
        out["command_id"] = pd.Series([self._command_ids.get(k) for k in keys], index=plan.index, dtype="string")
        outcomes = [self._results.get(k, (WriteStatus.PENDING, None)) for k in keys]
        # Plain values in the frame (contracts.WriteResultFrame), as in the audit.
        out["status"] = pd.Series([WriteStatus(s).value for s, _ in outcomes], index=plan.index, dtype="string")
        out["error"] = pd.Series([e for _, e in outcomes], index=plan.index, dtype="string")
        return out

    def _run_phase(self, rows: pd.DataFrame) -> None:
        """Returns when every write of the phase has its answer, or its polling bound ran out.

        Sends and polls share the pool: a worker that comes free takes a poll that is due,
        else the next send. PATCHes also wait on the account's PATCH budget, far below the
        client_id's rate (core/plan.py routes some values by command for that reason), so
        while anything else is to do they hold at most half the workers: the commands and
        polls are not queued behind PATCHes sleeping in their budget."""
        commands, patches = self._calls(rows)
        marked: deque[_Call] = deque()  # PATCHes marked `sent`, not yet handed to a worker
        summary = _PatchSummary(self._account, len(patches), self._clock)
        operations = 0
        self._operations_polled = self._operations_timed_out = 0
        order = itertools.count()  # ties in time go by arrival, never by comparing flights
        waiting: list[tuple[float, int, _InFlight]] = []
        running: dict[Future, _Call | _InFlight] = {}
        patch_cap = max(1, self._concurrency // 2)

        def handle(item: _Call | _InFlight, future: Future) -> None:
            nonlocal operations
            if isinstance(item, _Call):
                flight = self._answered(item, future, summary)
                if flight:
                    operations += flight.resource is None
                    heapq.heappush(waiting, (flight.next_poll_at, next(order), flight))
                return
            finished = self._read_poll(item, future.result())
            if finished or self._clock() >= item.deadline:
                self._settle(item, timed_out=not finished)
            else:
                item.interval = min(self._poll.max_interval, item.interval * 2)
                item.next_poll_at = self._clock() + item.interval
                heapq.heappush(waiting, (item.next_poll_at, next(order), item))

        def next_send() -> _Call | None:
            patches_out = sum(1 for i in running.values() if isinstance(i, _Call) and i.resource is None)
            others = bool(commands or waiting)
            if (marked or patches) and (patches_out < patch_cap or not others):
                if not marked:
                    marked.extend(self._mark_patches_sent(patches))
                return marked.popleft()
            return self._mark_command_sent(commands.popleft()) if commands else None

        def never_started(items: list) -> None:
            self._back_to_planned([i for i in items if isinstance(i, _Call)] + list(marked))

        with self._stopping_cleanly(running, handle, never_started):
            while commands or patches or marked or waiting or running:
                now = self._clock()
                while waiting and waiting[0][0] <= now and len(running) < self._concurrency:
                    flight = heapq.heappop(waiting)[2]
                    self._operations_polled += flight.resource is None
                    running[self._submit(self._ask, flight)] = flight
                while len(running) < self._concurrency and (call := next_send()) is not None:
                    running[self._submit(self._call, call)] = call
                if not running:  # nothing out, nothing due yet
                    summary.flush()
                    self._flush()
                    self._sleep(waiting[0][0] - now)
                    continue
                timeout = OUTCOME_FLUSH_SECONDS
                if waiting and len(running) < self._concurrency:  # a free worker: wake when the next is due
                    timeout = min(timeout, max(0.0, waiting[0][0] - now))
                self._collect(running, handle, timeout)
        summary.flush()
        self._flush()
        if operations:  # PATCH operations are many: one line for all of them
            timed_out = self._operations_timed_out
            (log.warning if timed_out else log.info)(
                "patch_operations_polled",
                account=self._account,
                operations=operations,
                polls=self._operations_polled,
                still_processing=timed_out,
                msg=f"{operations - timed_out}/{operations} accepted PATCHes finished ({self._operations_polled} polls)"
                + (f"; {timed_out} still processing when polling stopped, recorded pending" if timed_out else ""),
            )

    # ---- the pool ----------------------------------------------------------------------

    @contextmanager
    def _workers(self) -> Iterator[None]:
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix=f"allegro-writes-{self._account}")
        try:
            yield
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        # Each call in a copy of this thread's context: the client's log lines reach the run's log.
        return self._pool.submit(contextvars.copy_context().run, fn, *args)

    def _collect(self, running: dict[Future, Any], handle: Callable[[Any, Future], None], timeout: float) -> None:
        """Hands the calls that finish within `timeout` to `handle`, on this thread."""
        done, _ = wait(running, timeout=timeout, return_when=FIRST_COMPLETED)
        for future in done:
            handle(running.pop(future), future)
        self._flush_if_due()

    @contextmanager
    def _stopping_cleanly(
        self,
        running: dict[Future, Any],
        handle: Callable[[Any, Future], None],
        never_started: Callable[[list[Any]], None] = lambda items: None,
    ) -> Iterator[None]:
        """On an error (or an interrupt): no call starts any more, those already out are
        waited for and their answers stored (they are Allegro's word), the rest is handed
        to `never_started`; then the error goes on."""
        try:
            yield
        except BaseException:
            unsent = [running.pop(f) for f in list(running) if f.cancel()]
            for future in list(running):
                try:
                    handle(running.pop(future), future)  # Future.result() waits for it
                except BaseException:  # noqa: BLE001 - the same stop again: the first one is raised
                    pass
            never_started(unsent)
            self._flush()
            raise

    # ---- sending -----------------------------------------------------------------------

    def _calls(self, rows: pd.DataFrame) -> tuple[deque[_Call], deque[_Call]]:
        """The phase's commands (one per batch) and PATCHes, in the plan's order."""
        commands: deque[_Call] = deque()
        for _, batch in rows[rows["method"] != Method.PATCH].groupby("batch", sort=True):
            method = str(batch["method"].iloc[0])
            commands.append(
                _Call(
                    str(batch["action"].iloc[0]),
                    batch["offer_id"].astype(str).tolist(),
                    int(batch["after"].iloc[0]),
                    QUANTITY_RESOURCE if method == Method.QUANTITY_COMMAND else PUBLICATION_RESOURCE,
                    self._new_id(),
                )
            )
        patch_rows = rows[rows["method"] == Method.PATCH]
        patches = deque(
            _Call(str(r.action), [str(r.offer_id)], int(r.after)) for r in patch_rows.itertuples(index=False)
        )
        return commands, patches

    def _mark_command_sent(self, call: _Call) -> _Call:
        """The command, marked `sent` in the audit (its rows carry its id) before it goes."""
        self._command_ids.update({(o, call.action): call.command_id for o in call.offer_ids})
        self._log.mark(
            self._run_id, self._account, call.action, call.offer_ids, WriteStatus.SENT, command_id=call.command_id
        )
        return call

    def _mark_patches_sent(self, patches: deque[_Call]) -> list[_Call]:
        """The next chunk of up to twice the pool's PATCHes, marked `sent` in one statement
        before any of them goes."""
        chunk = [patches.popleft() for _ in range(min(len(patches), 2 * self._concurrency))]
        self._log.mark_sent(self._run_id, self._account, [(c.offer_ids[0], c.action) for c in chunk])
        return chunk

    def _back_to_planned(self, calls: list[_Call]) -> None:
        """Calls marked `sent` that never started (the run stopped first) were not sent."""
        for call in calls:
            self._log.mark(self._run_id, self._account, call.action, call.offer_ids, WriteStatus.PLANNED)

    def _call(self, call: _Call) -> Any:
        """On a worker: the call itself, nothing else."""
        if call.resource is None:
            return self._client.patch_stock(call.offer_ids[0], call.value)
        if call.resource == QUANTITY_RESOURCE:
            return self._client.put_quantity_command(call.command_id, call.value, call.offer_ids)
        action = "ACTIVATE" if call.action == Action.ACTIVATE else "END"
        return self._client.put_publication_command(call.command_id, action, call.offer_ids)

    def _answered(self, call: _Call, future: Future, summary: _PatchSummary) -> _InFlight | None:
        if call.resource is None:
            return self._patch_answered(call, future, summary)
        kind = _command_kind(call.resource, call.action)
        try:
            future.result()
        except AllegroApiError as exc:
            log.warning(
                "command_rejected",
                account=self._account,
                command_id=call.command_id,
                error=str(exc),
                offers=len(call.offer_ids),
                msg=f"{kind} {call.command_id} rejected, {len(call.offer_ids)} offers failed: {exc}",
            )
            self._finish(call.offer_ids, call.action, WriteStatus.FAILED, str(exc))
            return None
        quantity = call.resource == QUANTITY_RESOURCE
        log.info(
            "command_sent",
            account=self._account,
            kind=kind,
            command_id=call.command_id,
            action=call.action,
            value=call.value if quantity else None,
            offers=len(call.offer_ids),
            msg=f"sent {kind} {call.command_id}: "
            + (f"stock {call.value} on {len(call.offer_ids)} offers" if quantity else f"{len(call.offer_ids)} offers"),
        )
        now = self._clock()
        return _InFlight(
            call.command_id,
            call.resource,
            call.action,
            call.offer_ids,
            now + self._poll.first_poll_after,
            self._poll.first_poll_after,
            now + self._poll.timeout,
        )

    def _patch_answered(self, call: _Call, future: Future, summary: _PatchSummary) -> _InFlight | None:
        offer_id, action, value = call.offer_ids[0], call.action, call.value
        try:
            outcome = future.result()
        except (AllegroApiError, AllegroOfferNotFoundError) as exc:
            summary.add(offer_id, value, WriteStatus.FAILED)
            self._finish([offer_id], action, WriteStatus.FAILED, str(exc))
            return None
        if outcome.status == 202 and not outcome.operation_url:  # accepted, but nothing to ask about it
            summary.add(offer_id, value, WriteStatus.PENDING)
            self._finish([offer_id], action, WriteStatus.PENDING, "accepted (202) without an operation to check")
            return None
        if outcome.status == 202:
            summary.add(offer_id, value, "accepted")
            # Still `sent`, now with the operation a later run can ask about.
            self._record([Outcome(self._run_id, offer_id, action, WriteStatus.SENT, None, outcome.operation_url)])
            wait_for = outcome.retry_after if outcome.retry_after is not None else self._poll.first_poll_after
            now = self._clock()
            return _InFlight(
                outcome.operation_url,
                None,
                action,
                [offer_id],
                now + wait_for,
                max(wait_for, 0.1),
                now + self._poll.timeout,
            )
        summary.add(offer_id, value, "done")
        self._finish([offer_id], action, WriteStatus.SUCCESS, None)
        return None

    # ---- the audit ---------------------------------------------------------------------

    def _finish(self, offer_ids: list[str], action: str, status: str, error: str | None) -> None:
        """This run's writes reached `status` (Allegro's answer, or not sent at all)."""
        for offer_id in offer_ids:
            self._results[(offer_id, action)] = (status, error)
        self._record([Outcome(self._run_id, o, action, status, error) for o in offer_ids], settled=len(offer_ids))

    def _record(self, outcomes: list[Outcome], settled: int = 0) -> None:
        """Queues answers for the audit; `settled` of them end writes of this run (progress)."""
        self._unflushed.extend(outcomes)
        self._unflushed_settled += settled

    def _flush_if_due(self) -> None:
        if len(self._unflushed) >= OUTCOME_FLUSH_EVERY or (
            self._unflushed and self._clock() - self._flushed_at >= OUTCOME_FLUSH_SECONDS
        ):
            self._flush()

    def _flush(self) -> None:
        """Stores the queued answers in one transaction, then what follows from them."""
        self._flushed_at = self._clock()
        if not self._unflushed:
            return
        outcomes, settled = self._unflushed, self._unflushed_settled
        self._unflushed, self._unflushed_settled = [], 0
        self._log.mark_each(self._account, outcomes)
        succeeded: dict[tuple[str, str], list[str]] = {}
        for o in outcomes:
            if o.status == WriteStatus.SUCCESS:
                succeeded.setdefault((o.run_id, o.action), []).append(o.offer_id)
        for (run_id, action), offer_ids in succeeded.items():
            self._publication_changed(action, offer_ids, run_id)
        if settled:
            self._advance(settled)

    def _publication_changed(self, action: str, offer_ids: list[str], run_id: str) -> None:
        """Remembers, as writes settle, the offers we ended (only those may come back) and
        forgets those we re-activated; a run that dies later loses none of it."""
        if self._ended_offers is None or not offer_ids:
            return
        if action == Action.END:
            self._ended_offers.record(self._account, offer_ids, run_id)
        elif action == Action.ACTIVATE:
            self._ended_offers.forget(self._account, offer_ids)

    def _advance(self, count: int) -> None:
        self._done += count
        self._progress("writes", self._done, self._total)

    # ---- polling -----------------------------------------------------------------------

    def _ask(self, flight: _InFlight) -> Any:
        """On a worker: whether the PATCH operation finished, or the command's task reports."""
        if flight.resource is None:
            return self._client.operation_done(flight.key)
        return self._client.command_tasks(flight.resource, flight.key)

    def _read_poll(self, flight: _InFlight, answer: Any) -> bool:
        """What one poll (`_ask`'s answer) says; True when every offer of the flight is done."""
        if flight.resource is None:
            if answer:
                flight.outcome = {flight.offer_ids[0]: (WriteStatus.SUCCESS, None)}
            return bool(answer)
        for task in answer:
            offer_id = str((task.get("offer") or {}).get("id"))
            status = task.get("status")
            if status == "SUCCESS":
                flight.outcome[offer_id] = (WriteStatus.SUCCESS, None)
            elif status == "FAIL":
                errors = task.get("errors") or []
                detail = "; ".join(str(e.get("message") or e.get("code")) for e in errors if isinstance(e, dict))
                flight.outcome[offer_id] = (WriteStatus.FAILED, task.get("message") or detail or "task failed")
        done = sum(1 for o in flight.offer_ids if o in flight.outcome)
        failed = sum(1 for o in flight.offer_ids if flight.outcome.get(o, (None,))[0] == WriteStatus.FAILED)
        log.info(
            "command_poll",
            account=self._account,
            command_id=flight.key,
            done=done,
            total=len(flight.offer_ids),
            failed=failed,
            msg=f"poll {_command_kind(flight.resource, flight.action)} {flight.key}: "
            f"{done}/{len(flight.offer_ids)} done" + (f", {failed} failed" if failed else ""),
        )
        return done == len(flight.offer_ids)

    def _settle(self, flight: _InFlight, timed_out: bool) -> None:
        per_offer = [
            (o, *flight.outcome.get(o, (WriteStatus.PENDING, "still processing when polling stopped")))
            for o in flight.offer_ids
        ]
        for offer_id, status, error in per_offer:
            self._results[(offer_id, flight.action)] = (status, error)
        self._record([Outcome(self._run_id, o, flight.action, s, e) for o, s, e in per_offer], settled=len(per_offer))
        if timed_out and flight.resource is None:
            self._operations_timed_out += 1  # summed up by _run_phase
        elif timed_out:
            pending = sum(1 for _, s, _ in per_offer if s == WriteStatus.PENDING)
            log.warning(
                "write_pending",
                account=self._account,
                key=flight.key,
                offers=pending,
                msg=f"{_command_kind(flight.resource, flight.action)} {flight.key}: {pending} offers still "
                "processing when polling stopped, recorded pending (the next run asks again)",
            )

    # ---- earlier runs ------------------------------------------------------------------

    def resolve_pending(self) -> int:
        """Asks Allegro once more about writes earlier runs left `pending`; returns how
        many are still pending. Allegro keeps commands, so their task reports settle the
        record; what Allegro no longer knows is marked failed; nothing becomes success
        without Allegro's word. The questions go out `concurrency` at a time."""
        pending = self._log.pending(self._account)
        commands = int(pending["command_id"].nunique())
        operations = int(pending.loc[pending["command_id"].isna(), "operation_url"].nunique())
        log.info(
            "pending_recheck",
            account=self._account,
            pending=len(pending),
            commands=commands,
            operations=operations,
            msg=f"rechecking {_count(len(pending), 'write')} pending from earlier runs ({_count(commands, 'command')}, "
            f"{_count(operations, 'PATCH operation')})"
            if len(pending)
            else "no writes pending from earlier runs",
        )
        if pending.empty:
            return 0
        rechecks = []
        for (command_id, action), rows in pending[pending["command_id"].notna()].groupby(["command_id", "action"]):
            resource = QUANTITY_RESOURCE if rows["method"].iloc[0] == Method.QUANTITY_COMMAND else PUBLICATION_RESOURCE
            rechecks.append(
                _Recheck(_InFlight(str(command_id), resource, str(action), rows["offer_id"].tolist(), 0, 0, 0), rows)
            )
        with_operation = pending[pending["command_id"].isna() & pending["operation_url"].notna()]
        for (url, action), rows in with_operation.groupby(["operation_url", "action"]):
            rechecks.append(_Recheck(_InFlight(str(url), None, str(action), rows["offer_id"].tolist(), 0, 0, 0), rows))
        # Pending without a command or an operation: nothing to ask Allegro about.
        still = [int((pending["command_id"].isna() & pending["operation_url"].isna()).sum())]

        def handle(recheck: _Recheck, future: Future) -> None:
            flight = recheck.flight
            try:
                answer = future.result()
            except (AllegroOfferNotFoundError, AllegroApiError) as exc:
                flight.outcome = {o: (WriteStatus.FAILED, f"could not be re-checked: {exc}") for o in flight.offer_ids}
            else:
                self._read_poll(flight, answer)
            still[0] += self._settle_earlier(recheck.rows, flight.outcome)

        running: dict[Future, _Recheck] = {}
        with self._workers(), self._stopping_cleanly(running, handle):
            for recheck in rechecks:  # the pool queues them; `concurrency` run at once
                running[self._submit(self._ask, recheck.flight)] = recheck
            while running:
                self._collect(running, handle, OUTCOME_FLUSH_SECONDS)
            self._flush()
        log.info(
            "pending_rechecked",
            account=self._account,
            settled=len(pending) - still[0],
            still_pending=still[0],
            msg=f"pending writes from earlier runs: {len(pending) - still[0]} settled, {still[0]} still pending",
        )
        return still[0]

    def _settle_earlier(self, rows: pd.DataFrame, outcome: dict[str, tuple[str, str | None]]) -> int:
        """Queues what Allegro said about earlier runs' writes; returns how many it did not settle."""
        settled = [
            Outcome(r.run_id, r.offer_id, r.action, *outcome[r.offer_id])
            for r in rows.itertuples()
            if r.offer_id in outcome
        ]
        self._record(settled)
        return len(rows) - len(settled)


def _require_one_write_per_offer_and_phase(plan: pd.DataFrame) -> None:
    """Two writes of one offer in a phase could be in flight at once (Allegro may answer
    409 to the second, or apply them in either order): a plan never holds them."""
    phase = plan["action"].eq(Action.ACTIVATE)
    twice = pd.DataFrame({"offer_id": plan["offer_id"].astype(str), "phase": phase}).duplicated()
    if twice.any():
        offers = sorted(set(plan.loc[twice.to_numpy(), "offer_id"].astype(str)))
        raise ValueError(
            f"the plan has more than one write in a phase for {_count(len(offers), 'offer')} "
            f"(first: {offers[0]}); a phase may write each offer once"
        )
