"""What a sync run did, read from the two records that cannot disagree with what happened:
the audit (the writes log, one row per offer with Allegro's answer) and the run's own
event log (the steps' metadata and failures).

The job's hooks record the outcome once per run, whichever way the run was started
(CLI, schedule, UI, backfill): Redis metrics and the account's sync status. The CLI
summary is read the same way, so the terminal, the metrics, `accounts list` and the
audit show the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from dagster import DagsterEventType, DagsterInstance, Failure, HookContext, failure_hook, success_hook

from stock_pipeline.core.vocabulary import WriteStatus
from stock_pipeline.defs.account_steps import PROBLEM_HELD
from stock_pipeline.foundation.errors import PipelineDatabaseUnavailableError
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.store.sync_status import RESULT_FAILED, RESULT_HELD, RESULT_SUCCESS, SyncStatusStore
from stock_pipeline.store.writes_log import WritesLog

log = get_logger(__name__)

LAST_STEP = "stock_updates"
# The job whose runs are syncs. The hooks sit on the assets (defs/assets.py), so they also
# fire in other jobs that materialise them (the UI's ad-hoc asset runs): only a sync counts.
ACCOUNT_SYNC_JOB = "account_sync"


@dataclass
class RunOutcome:
    account: str
    run_id: str
    result: str  # success / failed / held
    error: str | None = None
    problem: str | None = None  # the `problem` metadata of the Failure that ended the run
    offers: int | None = None
    changed: int | None = None
    written: int = 0
    failed: int = 0
    pending: int = 0
    api_calls: int = 0
    duration_seconds: float = 0.0


@dataclass(frozen=True)
class AuditCounts:
    written: int
    failed: int  # refused by Allegro, or not sent because a step before it failed
    pending: int  # not confirmed yet (or the run died before Allegro answered)


def audit_counts(writes_log: Callable[[], WritesLog], run_id: str) -> AuditCounts:
    counts = writes_log().status_counts(run_id)
    return AuditCounts(
        written=counts.get(WriteStatus.SUCCESS, 0),
        failed=counts.get(WriteStatus.FAILED, 0) + counts.get(WriteStatus.NOT_SENT, 0),
        pending=counts.get(WriteStatus.PENDING, 0)
        + counts.get(WriteStatus.SENT, 0)
        + counts.get(WriteStatus.PLANNED, 0),
    )


def _failure_of(exc: BaseException | None) -> tuple[str | None, str | None]:
    """(sentence, problem) of the exception that failed a step: a Failure's own words,
    else the innermost error below Dagster's wrappers."""
    chain: list[BaseException] = []
    while exc is not None and len(chain) < 10:
        chain.append(exc)
        exc = getattr(exc, "user_exception", None) or exc.__cause__
    for candidate in chain:
        if isinstance(candidate, Failure):
            problem = candidate.metadata.get("problem") if candidate.metadata else None
            return candidate.description, getattr(problem, "value", problem)
    root = next((e for e in reversed(chain) if not type(e).__name__.startswith("Dagster")), None)
    return (f"{type(root).__name__}: {root}", None) if root is not None else (None, None)


def step_metadata(instance: DagsterInstance, run_id: str) -> dict[str, dict]:
    """The metadata of each asset materialised by the run, by asset name."""
    values: dict[str, dict] = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ASSET_MATERIALIZATION):
        materialization = record.dagster_event.event_specific_data.materialization
        values.setdefault(materialization.asset_key.to_user_string(), {}).update(
            {k: getattr(v, "value", v) for k, v in materialization.metadata.items()}
        )
    return values


def step_failures(instance: DagsterInstance, run_id: str) -> list[tuple[str, str | None]]:
    """(sentence, problem) of each failed step, in order."""
    failures = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE):
        data = record.dagster_event.step_failure_data
        user = data.user_failure_data if data else None
        if user and user.description:
            problem = user.metadata.get("problem") if user.metadata else None
            failures.append((user.description, getattr(problem, "value", problem)))
        elif data and data.error:
            error = data.error
            while error.cls_name.startswith("Dagster") and error.cause is not None:
                error = error.cause
            message = error.message.strip()
            failures.append((message if message.startswith(error.cls_name) else f"{error.cls_name}: {message}", None))
    return failures


def read_run_outcome(
    instance: DagsterInstance,
    run_id: str,
    account: str,
    writes_log: Callable[[], WritesLog],
    *,
    success: bool | None = None,
    metadata: dict[str, dict] | None = None,
) -> RunOutcome:
    """`metadata`: the run's step_metadata when the caller has read it already."""
    run = instance.get_run_by_id(run_id)
    if success is None:
        success = bool(run and run.is_success)
    meta = step_metadata(instance, run_id) if metadata is None else metadata
    offers, diff, updates = meta.get("allegro_offers", {}), meta.get("stock_diff", {}), meta.get(LAST_STEP, {})
    failures = step_failures(instance, run_id)
    error, problem = failures[0] if failures else (None, None)
    if not success and error is None:
        error = "the run failed before any step reported why (see the run's event log)"
    try:
        counts = audit_counts(writes_log, run_id)
    except PipelineDatabaseUnavailableError:
        # Every write is recorded before it is sent: without the database none was sent.
        counts = AuditCounts(written=0, failed=0, pending=0)
    stats = instance.get_run_stats(run_id) if run else None
    duration = (stats.end_time - stats.start_time) if stats and stats.end_time and stats.start_time else 0.0
    return RunOutcome(
        account=account,
        run_id=run_id,
        result=RESULT_SUCCESS if success else (RESULT_HELD if problem == PROBLEM_HELD else RESULT_FAILED),
        error=error,
        problem=problem,
        offers=_int_or_none(offers.get("offers")),
        changed=_int_or_none(diff.get("changed")),
        written=counts.written,
        failed=counts.failed,
        pending=counts.pending,
        api_calls=int(offers.get("api_calls", 0)) + int(updates.get("api_calls", 0)),
        duration_seconds=round(duration, 2),
    )


def _int_or_none(value) -> int | None:
    return None if value is None else int(value)


def _record(context: HookContext, success: bool, error: str | None = None, problem: str | None = None) -> None:
    if context.job_name != ACCOUNT_SYNC_JOB:
        return
    run = context.instance.get_run_by_id(context.run_id)
    account = run.tags.get("dagster/partition") if run else None
    if not account:
        return
    pipeline_db = context.resources.pipeline_db
    outcome = read_run_outcome(context.instance, context.run_id, account, pipeline_db.writes_log, success=success)
    if error:  # the exception in hand is fresher than the event log, which may not hold it yet
        outcome.error, outcome.problem = error, problem
        outcome.result = RESULT_HELD if problem == PROBLEM_HELD else RESULT_FAILED
    if outcome.duration_seconds == 0.0 and run:  # the run is still going: it ends with this hook
        stats = context.instance.get_run_stats(context.run_id)
        if stats and stats.start_time:
            outcome.duration_seconds = round(time.time() - stats.start_time, 2)
    context.resources.allegro.metrics().record_run(
        account,
        changed=outcome.changed or 0,
        written=outcome.written,
        failed=outcome.failed,
        pending=outcome.pending,
        duration_seconds=outcome.duration_seconds,
        success=success,
    )
    SyncStatusStore(pipeline_db.engine()).record(
        account,
        run_id=context.run_id,
        result=outcome.result,
        error=outcome.error,
        offers=outcome.offers,
        changed=outcome.changed,
        written=outcome.written,
        failed=outcome.failed,
        pending=outcome.pending,
    )
    if not success and context.resources.telegram.notifier() is None:
        context.log.warning(
            "Telegram alerts are not configured (TELEGRAM_BOT_TOKEN, ALLEGRO_ERROR_NOTIFICATION_CHAT_ID): "
            "nobody is alerted about this failure."
        )


@success_hook(required_resource_keys={"pipeline_db", "allegro", "telegram"})
def record_success(context: HookContext) -> None:
    """A run succeeds when its last step does."""
    if context.op.name == LAST_STEP:
        _record(context, success=True)


@failure_hook(required_resource_keys={"pipeline_db", "allegro", "telegram"})
def record_failure(context: HookContext) -> None:
    """The first failed step ends an account run (the steps form one chain), so this runs once per failed run."""
    error, problem = _failure_of(context.op_exception)
    try:
        _record(context, success=False, error=error, problem=problem)
    except Exception as exc:  # noqa: BLE001 - recording must never hide the run's own failure
        log.warning("run_outcome_not_recorded", run_id=context.run_id, error=f"{type(exc).__name__}: {exc}")
