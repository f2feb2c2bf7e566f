"""The job, the schedule and the sensors.

Snapshot decision: the account-partitioned job includes the unpartitioned
`stock_snapshot`, so every account's run reads the warehouse itself. The diff then
always uses a snapshot read and checked within the same run (a guard that holds a
bad feed holds that run's writes), there is no ordering between a snapshot run and
account runs to get wrong, and a one-account backfill is self-contained. The cost is
one stock query per account per cycle, small next to listing the offers (one API
call per 1000 offers). The IO manager keys the snapshot by run so concurrent account
runs never read each other's copy.
"""

from datetime import datetime, timezone

from dagster import (
    AssetSelection,
    DagsterEventType,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    define_asset_job,
    in_process_executor,
    run_failure_sensor,
    schedule,
    sensor,
)
from sqlalchemy.exc import SQLAlchemyError

from stock_pipeline.core.vocabulary import WriteStatus
from stock_pipeline.defs.assets import accounts_partitions
from stock_pipeline.defs.resources import AllegroApi, PipelineDatabase, TelegramAlerts
from stock_pipeline.defs.run_outcome import ACCOUNT_SYNC_JOB, step_failures
from stock_pipeline.defs.tags import ACCOUNT_TAG
from stock_pipeline.foundation.errors import AllegroSyncError
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.notify.telegram import TelegramError, failure_message

log = get_logger(__name__)


# In-process: one process per run shares the limiter and HTTP connections, and a
# run's steps are sequential anyway (each needs the one before).
account_sync_job = define_asset_job(
    ACCOUNT_SYNC_JOB,
    selection=AssetSelection.assets("stock_snapshot", "allegro_offers", "stock_diff", "stock_updates"),
    executor_def=in_process_executor,
    # The run's outcome (metrics, the account's sync status) is recorded by the run itself,
    # once, whether the CLI, the schedule, the UI or a backfill started it: by the hooks the
    # assets carry (defs/assets.py), so no step without work for them pays for them.
    description="Sync one account: read the warehouse, list the account's offers, diff, write the differences.",
)


def active_accounts(pipeline_db: PipelineDatabase) -> list[str]:
    return [a.name for a in pipeline_db.accounts().list(only_active=True)]


@sensor(
    job=account_sync_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="Keeps the `accounts` partitions equal to the accounts registered in the pipeline database "
    "(paused and needs_reauth included; removed accounts are dropped).",
)
def account_partitions_sensor(context: SensorEvaluationContext, pipeline_db: PipelineDatabase):
    # Every registered account, not only the active ones: a paused or needs_reauth account
    # keeps its partition, so its runs and materialisations stay visible in the UI. Which
    # accounts are synced is the schedule's business (active only).
    wanted = {a.name for a in pipeline_db.accounts().list()}
    existing = set(context.instance.get_dynamic_partitions(accounts_partitions.name))
    to_add, to_remove = sorted(wanted - existing), sorted(existing - wanted)
    if not to_add and not to_remove:
        return SkipReason(f"partitions already match {len(wanted)} registered accounts")
    requests = []
    if to_add:
        requests.append(accounts_partitions.build_add_request(to_add))
    if to_remove:
        requests.append(accounts_partitions.build_delete_request(to_remove))
    return SensorResult(dynamic_partitions_requests=requests)


def build_schedule(cron: str):
    @schedule(
        cron_schedule=cron,
        job=account_sync_job,
        default_status=DefaultScheduleStatus.RUNNING,
        execution_timezone="UTC",
        name="account_sync_schedule",
        description="Launches one sync run per active account (ALLEGRO_SYNC_SCHEDULE).",
    )
    def account_sync_schedule(context: ScheduleEvaluationContext, pipeline_db: PipelineDatabase):
        partitions = set(context.instance.get_dynamic_partitions(accounts_partitions.name))
        accounts = [a for a in active_accounts(pipeline_db) if a in partitions]
        if not accounts:
            return SkipReason("no active account is a partition yet")
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else ""
        return [
            RunRequest(run_key=f"{account}:{stamp}", partition_key=account, tags={ACCOUNT_TAG: account})
            for account in accounts
        ]

    return account_sync_schedule


def _failed_checks(context: RunFailureSensorContext) -> list[str]:
    records = context.instance.all_logs(context.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION)
    evaluations = [r.dagster_event.event_specific_data for r in records if r.dagster_event]
    return [f"{e.check_name}: {e.description}" for e in evaluations if not e.passed]


def _failed_offers(pipeline_db: PipelineDatabase, run_id: str) -> list[dict]:
    try:
        failed = pipeline_db.writes_log().history(run_id=run_id, status=WriteStatus.FAILED, limit=500)
    except (AllegroSyncError, SQLAlchemyError) as exc:  # the alert matters more than its detail
        log.warning("alert_without_offer_details", run_id=run_id, error=str(exc))
        return []
    return failed.to_dict("records")


def _run_error(context: RunFailureSensorContext, failures: list[str]) -> str:
    # A guard's Failure already carries its check's sentence; the evaluations are the fallback.
    messages = failures or _failed_checks(context)
    if not any(messages) and context.failure_event.message:
        messages = [context.failure_event.message]
    return "\n".join(dict.fromkeys(m for m in messages if m)) or "unknown error"


TELEGRAM_VARIABLES = "TELEGRAM_BOT_TOKEN and ALLEGRO_ERROR_NOTIFICATION_CHAT_ID"


def build_failure_sensor(telegram_configured: bool, also_monitored: tuple = ()):
    """`also_monitored`: jobs besides account_sync whose failures alert (the live sync's)."""
    description = (
        "Sends one Telegram message per failed run (ALLEGRO_ERROR_NOTIFICATION_CHAT_ID)."
        if telegram_configured
        else f"NOT CONFIGURED: {TELEGRAM_VARIABLES} are not set, so failed runs alert no one. Each failed "
        "run shows here as a skipped tick. Set both variables and reload the code location."
    )

    @run_failure_sensor(
        name="telegram_on_run_failure",
        default_status=DefaultSensorStatus.RUNNING,
        monitored_jobs=[account_sync_job, *also_monitored],
        description=description,
    )
    def telegram_on_run_failure(
        context: RunFailureSensorContext, telegram: TelegramAlerts, allegro: AllegroApi, pipeline_db: PipelineDatabase
    ):
        run = context.dagster_run
        account = run.tags.get("dagster/partition") or run.tags.get(ACCOUNT_TAG)
        failures = [sentence for sentence, _ in step_failures(context.instance, run.run_id)]
        if account and not failures:
            # No step failed, so the job's failure hook never ran (the run worker died, or the
            # run failed to start): this is the only place that failure is counted.
            allegro.metrics().record_run(account, success=False)
        notifier = telegram.notifier()
        if notifier is None:
            log.warning("run_failed_no_telegram", run_id=run.run_id, account=account)
            return SkipReason(
                f"run {run.run_id} ({account or 'no account'}) failed and nobody was alerted: "
                f"Telegram is not configured ({TELEGRAM_VARIABLES})."
            )
        text = failure_message(
            account=account,
            run_id=run.run_id,
            job=run.job_name,
            error=_run_error(context, failures),
            run_url=telegram.run_url(run.run_id),
            offers=_failed_offers(pipeline_db, run.run_id),
            when=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        try:
            notifier.send(text)
        except TelegramError as exc:
            log.error("telegram_alert_failed", run_id=run.run_id, error=str(exc))
            raise
        return None

    return telegram_on_run_failure
