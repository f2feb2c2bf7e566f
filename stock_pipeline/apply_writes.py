"""Sends a write plan to Allegro and records what each write did.

All commands are sent first and polled afterwards, so Allegro processes them while
the rest are being sent. A command whose tasks are still NEW when the polling bound
runs out is recorded as `pending`, never as success; the next run's listing shows
what really happened and plans again.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.core.plan import METHOD_PATCH, METHOD_PUBLICATION_COMMAND, METHOD_QUANTITY_COMMAND
from stock_pipeline.errors import AllegroApiError, AllegroOfferNotFoundError
from stock_pipeline.logs import get_logger
from stock_pipeline.store.writes_log import FAILED, PENDING, SENT, SUCCESS, WritesLog

log = get_logger(__name__)

RESOURCE = {
    METHOD_QUANTITY_COMMAND: "offer-quantity-change-commands",
    METHOD_PUBLICATION_COMMAND: "offer-publication-commands",
}
Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass(frozen=True)
class PollPolicy:
    first_poll_after: float = 1.0  # Allegro's tasks start NEW; an earlier read wastes a call
    max_interval: float = 10.0
    timeout: float = 120.0


@dataclass
class _InFlight:
    key: str  # command id or operation URL
    resource: str | None
    offer_ids: list[str]
    next_poll_at: float
    interval: float
    deadline: float
    outcome: dict[str, tuple[str, str | None]] = field(default_factory=dict)


def _no_progress(stage: str, done: int, total: int) -> None:
    pass


class WriteApplier:
    def __init__(self, client: AllegroClient, writes_log: WritesLog, *, run_id: str, account: str,
                 poll: PollPolicy = PollPolicy(), progress: Progress = _no_progress,
                 new_command_id: Callable[[], str] = lambda: str(uuid.uuid4()),
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._client = client
        self._log = writes_log
        self._run_id = run_id
        self._account = account
        self._poll = poll
        self._progress = progress
        self._new_id = new_command_id
        self._clock = clock
        self._sleep = sleep

    def apply(self, plan: pd.DataFrame) -> pd.DataFrame:
        """Returns the plan with `command_id`, `status` (success/failed/pending) and `error`."""
        results: dict[str, tuple[str, str | None]] = {}
        command_ids: dict[str, str] = {}
        self._log.record_planned(self._run_id, self._account, plan)
        total, done = len(plan), 0
        in_flight: list[_InFlight] = []

        commands = plan[plan["method"] != METHOD_PATCH]
        for _, batch in commands.groupby("batch", sort=True):
            offer_ids = batch["offer_id"].astype(str).tolist()
            method = batch["method"].iloc[0]
            command_id = self._new_id()
            command_ids.update(dict.fromkeys(offer_ids, command_id))
            self._log.mark(self._run_id, self._account, offer_ids, SENT, command_id=command_id)
            try:
                if method == METHOD_QUANTITY_COMMAND:
                    self._client.put_quantity_command(command_id, int(batch["after"].iloc[0]), offer_ids)
                else:
                    self._client.put_publication_command(command_id, "END", offer_ids)
            except AllegroApiError as exc:
                self._finish(results, offer_ids, FAILED, str(exc))
                done += len(offer_ids)
                self._progress("writes", done, total)
                continue
            now = self._clock()
            in_flight.append(_InFlight(command_id, RESOURCE[method], offer_ids, now + self._poll.first_poll_after,
                                       self._poll.first_poll_after, now + self._poll.timeout))

        for row in plan[plan["method"] == METHOD_PATCH].itertuples(index=False):
            offer_id = str(row.offer_id)
            self._log.mark(self._run_id, self._account, [offer_id], SENT)
            try:
                outcome = self._client.patch_stock(offer_id, int(row.after))
            except (AllegroApiError, AllegroOfferNotFoundError) as exc:
                self._finish(results, [offer_id], FAILED, str(exc))
            else:
                if outcome.status == 202 and outcome.operation_url:
                    self._log.mark(self._run_id, self._account, [offer_id], SENT, operation_url=outcome.operation_url)
                    wait = outcome.retry_after if outcome.retry_after is not None else self._poll.first_poll_after
                    now = self._clock()
                    in_flight.append(_InFlight(outcome.operation_url, None, [offer_id], now + wait, max(wait, 0.1),
                                               now + self._poll.timeout))
                else:
                    self._finish(results, [offer_id], SUCCESS, None)
            done += 1
            self._progress("writes", done, total)

        self._await(in_flight, results, done, total)
        out = plan.copy()
        out["command_id"] = out["offer_id"].astype(str).map(command_ids).astype("string")
        out["status"] = out["offer_id"].astype(str).map(lambda o: results.get(o, (PENDING, None))[0]).astype("string")
        out["error"] = out["offer_id"].astype(str).map(lambda o: results.get(o, (PENDING, None))[1]).astype("string")
        return out

    def _finish(self, results, offer_ids: list[str], status: str, error: str | None) -> None:
        for offer_id in offer_ids:
            results[offer_id] = (status, error)
        self._log.mark(self._run_id, self._account, offer_ids, status, error=error)

    def _await(self, in_flight: list[_InFlight], results, done: int, total: int) -> None:
        while in_flight:
            now = self._clock()
            due = min(in_flight, key=lambda f: f.next_poll_at)
            if due.next_poll_at > now:
                self._sleep(due.next_poll_at - now)
            finished = self._poll_once(due)
            if finished or self._clock() >= due.deadline:
                in_flight.remove(due)
                self._settle(due, results, timed_out=not finished)
                done += len(due.offer_ids)
                self._progress("writes", done, total)
            else:
                due.interval = min(self._poll.max_interval, due.interval * 2)
                due.next_poll_at = self._clock() + due.interval

    def _poll_once(self, flight: _InFlight) -> bool:
        if flight.resource is None:  # an asynchronous PATCH operation
            if self._client.operation_done(flight.key):
                flight.outcome = {flight.offer_ids[0]: (SUCCESS, None)}
                return True
            return False
        tasks = self._client.command_tasks(flight.resource, flight.key)
        for task in tasks:
            offer_id = str((task.get("offer") or {}).get("id"))
            status = task.get("status")
            if status == "SUCCESS":
                flight.outcome[offer_id] = (SUCCESS, None)
            elif status == "FAIL":
                errors = task.get("errors") or []
                detail = "; ".join(str(e.get("message") or e.get("code")) for e in errors if isinstance(e, dict))
                flight.outcome[offer_id] = (FAILED, task.get("message") or detail or "task failed")
        return all(o in flight.outcome for o in flight.offer_ids)

    def _settle(self, flight: _InFlight, results, timed_out: bool) -> None:
        per_offer = [(o, *flight.outcome.get(o, (PENDING, "still processing when polling stopped"))) for o in flight.offer_ids]
        for offer_id, status, error in per_offer:
            results[offer_id] = (status, error)
        self._log.mark_each(self._account, [(self._run_id, *row) for row in per_offer])
        if timed_out:
            log.warning("write_pending", account=self._account, key=flight.key if flight.resource else "patch-operation",
                        offers=sum(1 for _, s, _ in per_offer if s == PENDING))

    def resolve_pending(self) -> int:
        """Asks Allegro once more about writes earlier runs left `pending`; returns how
        many are still pending. Commands are kept by Allegro, so their task reports
        settle the record; what cannot be checked stays pending, never success."""
        pending = self._log.pending(self._account)
        still = 0
        for command_id, rows in pending[pending["command_id"].notna()].groupby("command_id"):
            flight = _InFlight(str(command_id), RESOURCE[rows["method"].iloc[0]], rows["offer_id"].tolist(), 0, 0, 0)
            try:
                self._poll_once(flight)
            except AllegroOfferNotFoundError:  # Allegro no longer knows the command
                flight.outcome = {o: (FAILED, "command unknown to Allegro when re-checked") for o in flight.offer_ids}
            settled = [(r.run_id, r.offer_id, *flight.outcome[r.offer_id]) for r in rows.itertuples()
                       if r.offer_id in flight.outcome]
            self._log.mark_each(self._account, settled)
            still += len(rows) - len(settled)
        for row in pending[pending["command_id"].isna() & pending["operation_url"].notna()].itertuples():
            if self._client.operation_done(row.operation_url):
                self._log.mark_each(self._account, [(row.run_id, row.offer_id, SUCCESS, None)])
            else:
                still += 1
        return still
