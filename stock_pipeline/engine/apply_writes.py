"""Sends a write plan to Allegro and records what each write did.

All commands of a phase are sent first and polled afterwards, so Allegro processes
them while the rest are being sent. Phase one sets quantities and ends offers; phase
two re-activates offers whose quantity is in place (ACTIVATE needs stock > 0). A
command whose tasks are still NEW when the polling bound runs out is recorded as
`pending`, never as success; the next run asks Allegro again.

Each decision is logged (and so reaches the run's event log, see ``run_log``): the
plan, each command sent and each poll of it, the recheck of earlier pending writes.
PATCHes can number thousands, so they are summed up: a line per ``PATCH_LOG_EVERY``
PATCHes or ``PATCH_LOG_SECONDS``, whichever comes first, and one for the rest.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.core.vocabulary import Action, Method, WriteStatus
from stock_pipeline.foundation.errors import AllegroApiError, AllegroOfferNotFoundError
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.writes_log import WritesLog

log = get_logger(__name__)

QUANTITY_RESOURCE = "offer-quantity-change-commands"
PUBLICATION_RESOURCE = "offer-publication-commands"
Progress = Callable[[str, int, int], None]  # (stage, done, total)
Key = tuple[str, str]  # (offer_id, action)
PATCH_LOG_EVERY = 100
PATCH_LOG_SECONDS = 2.0
PATCH_LOG_SHOWN = 5  # a summary of this many PATCHes or fewer names each offer and value


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
        self._shown: list[str] = []
        self._batch = 0

    def add(self, offer_id: str, value: int, answer: str) -> None:
        """`answer`: done (200), accepted (202, polled later), pending or failed."""
        self._batch += 1
        self._sent += 1
        self._counts[answer] = self._counts.get(answer, 0) + 1
        if len(self._shown) < PATCH_LOG_SHOWN:
            self._shown.append(f"{offer_id}→{value}")
        if self._batch >= PATCH_LOG_EVERY or self._clock() - self._since >= PATCH_LOG_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self._batch:
            return
        answers = ", ".join(f"{n} {answer}" for answer, n in self._counts.items())
        shown = f" [{', '.join(self._shown)}]" if self._batch <= PATCH_LOG_SHOWN else ""
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
        new_command_id: Callable[[], str] = lambda: str(uuid.uuid4()),
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self._client = client
        self._log = writes_log
        self._run_id = run_id
        self._account = account
        self._poll = poll
        self._progress = progress
        self._ended_offers = ended_offers
        self._new_id = new_command_id
        self._clock = clock
        self._sleep = sleep
        self._results: dict[Key, tuple[str, str | None]] = {}
        self._command_ids: dict[Key, str] = {}
        self._done = 0
        self._total = 0
        self._operations_polled = 0  # polls of asynchronous PATCHes' operations, by _await
        self._operations_timed_out = 0

    def apply(self, plan: pd.DataFrame) -> pd.DataFrame:
        """Returns the plan with `command_id`, `status` (success/failed/pending/not_sent) and `error`."""
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
            msg=f"writing {len(plan)} changes: {', '.join(calls)}" if len(plan) else "nothing to write",
        )
        activations = plan[plan["action"] == Action.ACTIVATE]
        self._run_phase(plan[plan["action"] != Action.ACTIVATE])
        # Only offers whose quantity is in place (or needed none) may be activated.
        restocked = {o for (o, a), (s, _) in self._results.items() if a != Action.ACTIVATE and s == WriteStatus.SUCCESS}
        needed_restock = set(plan.loc[plan["action"] != Action.ACTIVATE, "offer_id"].astype(str))
        ready = (
            activations["offer_id"].astype(str).map(lambda o: o in restocked or o not in needed_restock).astype(bool)
        )
        blocked = activations.loc[~ready, "offer_id"].astype(str).tolist()
        self._finish(blocked, Action.ACTIVATE, WriteStatus.NOT_SENT, "its quantity could not be set first")
        self._run_phase(activations[ready])
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
        in_flight: list[_InFlight] = []
        for _, batch in rows[rows["method"] != Method.PATCH].groupby("batch", sort=True):
            flight = self._send_command(batch)
            if flight:
                in_flight.append(flight)
        patches = rows[rows["method"] == Method.PATCH]
        summary = _PatchSummary(self._account, len(patches), self._clock)
        for row in patches.itertuples(index=False):
            flight = self._send_patch(str(row.offer_id), str(row.action), int(row.after), summary)
            if flight:
                in_flight.append(flight)
        summary.flush()
        self._await(in_flight)

    def _send_command(self, batch: pd.DataFrame) -> _InFlight | None:
        offer_ids = batch["offer_id"].astype(str).tolist()
        action, method = str(batch["action"].iloc[0]), str(batch["method"].iloc[0])
        command_id = self._new_id()
        self._command_ids.update({(o, action): command_id for o in offer_ids})
        value = int(batch["after"].iloc[0])
        resource = QUANTITY_RESOURCE if method == Method.QUANTITY_COMMAND else PUBLICATION_RESOURCE
        kind = _command_kind(resource, action)
        self._log.mark(self._run_id, self._account, action, offer_ids, WriteStatus.SENT, command_id=command_id)
        try:
            if resource == QUANTITY_RESOURCE:
                self._client.put_quantity_command(command_id, value, offer_ids)
            else:
                self._client.put_publication_command(
                    command_id, "ACTIVATE" if action == Action.ACTIVATE else "END", offer_ids
                )
        except AllegroApiError as exc:
            log.warning(
                "command_rejected",
                account=self._account,
                command_id=command_id,
                error=str(exc),
                offers=len(offer_ids),
                msg=f"{kind} {command_id} rejected, {len(offer_ids)} offers failed: {exc}",
            )
            self._finish(offer_ids, action, WriteStatus.FAILED, str(exc))
            return None
        log.info(
            "command_sent",
            account=self._account,
            kind=kind,
            command_id=command_id,
            action=action,
            value=value if resource == QUANTITY_RESOURCE else None,
            offers=len(offer_ids),
            msg=f"sent {kind} {command_id}: "
            + (
                f"stock {value} on {len(offer_ids)} offers"
                if resource == QUANTITY_RESOURCE
                else f"{len(offer_ids)} offers"
            ),
        )
        now = self._clock()
        return _InFlight(
            command_id,
            resource,
            action,
            offer_ids,
            now + self._poll.first_poll_after,
            self._poll.first_poll_after,
            now + self._poll.timeout,
        )

    def _send_patch(self, offer_id: str, action: str, value: int, summary: _PatchSummary) -> _InFlight | None:
        self._log.mark(self._run_id, self._account, action, [offer_id], WriteStatus.SENT)
        try:
            outcome = self._client.patch_stock(offer_id, value)
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
            self._log.mark(
                self._run_id, self._account, action, [offer_id], WriteStatus.SENT, operation_url=outcome.operation_url
            )
            wait = outcome.retry_after if outcome.retry_after is not None else self._poll.first_poll_after
            now = self._clock()
            return _InFlight(
                outcome.operation_url, None, action, [offer_id], now + wait, max(wait, 0.1), now + self._poll.timeout
            )
        summary.add(offer_id, value, "done")
        self._finish([offer_id], action, WriteStatus.SUCCESS, None)
        return None

    def _finish(self, offer_ids: list[str], action: str, status: str, error: str | None) -> None:
        if not offer_ids:
            return
        for offer_id in offer_ids:
            self._results[(offer_id, action)] = (status, error)
        self._log.mark(self._run_id, self._account, action, offer_ids, status, error=error)
        if status == WriteStatus.SUCCESS:
            self._publication_changed(action, offer_ids)
        self._advance(len(offer_ids))

    def _publication_changed(self, action: str, offer_ids: list[str], run_id: str | None = None) -> None:
        """Remembers, as each write settles, the offers we ended (only those may come back)
        and forgets those we re-activated; a run that dies later loses none of it."""
        if self._ended_offers is None or not offer_ids:
            return
        if action == Action.END:
            self._ended_offers.record(self._account, offer_ids, run_id or self._run_id)
        elif action == Action.ACTIVATE:
            self._ended_offers.forget(self._account, offer_ids)

    def _advance(self, count: int) -> None:
        self._done += count
        self._progress("writes", self._done, self._total)

    def _await(self, in_flight: list[_InFlight]) -> None:
        operations = sum(1 for f in in_flight if f.resource is None)
        self._operations_polled = self._operations_timed_out = 0
        while in_flight:
            now = self._clock()
            due = min(in_flight, key=lambda f: f.next_poll_at)
            if due.next_poll_at > now:
                self._sleep(due.next_poll_at - now)
            finished = self._poll_once(due)
            if finished or self._clock() >= due.deadline:
                in_flight.remove(due)
                self._settle(due, timed_out=not finished)
            else:
                due.interval = min(self._poll.max_interval, due.interval * 2)
                due.next_poll_at = self._clock() + due.interval
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

    def _poll_once(self, flight: _InFlight) -> bool:
        if flight.resource is None:
            self._operations_polled += 1
            if self._client.operation_done(flight.key):
                flight.outcome = {flight.offer_ids[0]: (WriteStatus.SUCCESS, None)}
                return True
            return False
        for task in self._client.command_tasks(flight.resource, flight.key):
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
        self._log.mark_each(self._account, [(self._run_id, o, flight.action, s, e) for o, s, e in per_offer])
        self._publication_changed(flight.action, [o for o, s, _ in per_offer if s == WriteStatus.SUCCESS])
        self._advance(len(per_offer))
        if timed_out and flight.resource is None:
            self._operations_timed_out += 1  # summed up by _await
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

    def resolve_pending(self) -> int:
        """Asks Allegro once more about writes earlier runs left `pending`; returns how
        many are still pending. Allegro keeps commands, so their task reports settle the
        record; what Allegro no longer knows is marked failed; nothing becomes success
        without Allegro's word."""
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
        still = 0
        for (command_id, action), rows in pending[pending["command_id"].notna()].groupby(["command_id", "action"]):
            resource = QUANTITY_RESOURCE if rows["method"].iloc[0] == Method.QUANTITY_COMMAND else PUBLICATION_RESOURCE
            flight = _InFlight(str(command_id), resource, str(action), rows["offer_id"].tolist(), 0, 0, 0)
            try:
                self._poll_once(flight)
            except (AllegroOfferNotFoundError, AllegroApiError) as exc:
                flight.outcome = {o: (WriteStatus.FAILED, f"could not be re-checked: {exc}") for o in flight.offer_ids}
            still += self._settle_earlier(rows, flight.outcome)
        operations = pending[pending["command_id"].isna() & pending["operation_url"].notna()]
        for (url, action), rows in operations.groupby(["operation_url", "action"]):
            try:
                outcome = (WriteStatus.SUCCESS, None) if self._client.operation_done(str(url)) else None
            except (AllegroOfferNotFoundError, AllegroApiError) as exc:
                outcome = (WriteStatus.FAILED, f"could not be re-checked: {exc}")
            still += self._settle_earlier(rows, {o: outcome for o in rows["offer_id"]} if outcome else {})
        still += int((pending["command_id"].isna() & pending["operation_url"].isna()).sum())
        log.info(
            "pending_rechecked",
            account=self._account,
            settled=len(pending) - still,
            still_pending=still,
            msg=f"pending writes from earlier runs: {len(pending) - still} settled, {still} still pending",
        )
        return still

    def _settle_earlier(self, rows: pd.DataFrame, outcome: dict[str, tuple[str, str | None]]) -> int:
        """Records what Allegro said about earlier runs' writes; returns how many it did not settle."""
        settled = [
            (r.run_id, r.offer_id, r.action, *outcome[r.offer_id]) for r in rows.itertuples() if r.offer_id in outcome
        ]
        self._log.mark_each(self._account, settled)
        for run_id, offer_id, action, status, _ in settled:
            if status == WriteStatus.SUCCESS:
                self._publication_changed(action, [offer_id], run_id)
        return len(rows) - len(settled)
