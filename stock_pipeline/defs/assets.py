"""The four assets. Each calls the shared steps (defs/account_steps.py, which call
core/ and the adapters); nothing here decides stock rules. What only a real sync does
lives here: the bad-rows alert, metrics, the per-account lock and the writes. The guards
(defs/checks.py) run inside the steps of the assets they guard, as their blocking checks.

The run's outcome is recorded by hooks on the assets (defs/run_outcome.py): the failure
hook on every step (the first failed one ends the run), the success hook on the last one
only, since a hook on a step adds events to every run whether or not it has work to do."""

import hashlib
import time
import warnings
from datetime import datetime, timezone

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    DynamicPartitionsDefinition,
    Failure,
    Output,
    asset,
)

from stock_pipeline.core.contracts import OfferFrame, OfferMap, PlanFrame, SnapshotFrame, WriteResultFrame
from stock_pipeline.core.snapshot import CleanSnapshot, bad_rows_records, bad_rows_warning, capped_note
from stock_pipeline.core.vocabulary import PublicationStatus, WriteStatus
from stock_pipeline.defs import map_merges, run_pacing
from stock_pipeline.defs.account_steps import (
    PLAN_COLUMNS,
    PROBLEM_WRITES,
    failures_as_sentences,
    list_offers,
    offers_metadata,
    plan_account,
    plan_metadata,
    preview,
    read_snapshot,
    record_sales,
    settle_sale_holds,
    snapshot_metadata,
    write_rates,
)
from stock_pipeline.defs.checks import (
    DIFF_GUARD,
    DIFF_GUARD_DESCRIPTION,
    SNAPSHOT_GUARD,
    SNAPSHOT_GUARD_DESCRIPTION,
    diff_guard,
    snapshot_guard,
)
from stock_pipeline.defs.contract_types import (
    OfferMapType,
    PlanType,
    SnapshotType,
    WriteResultsType,
    column_schema_metadata,
)
from stock_pipeline.defs.instance_connections import keep_connections
from stock_pipeline.defs.resources import (
    AllegroApi,
    GuardConfig,
    LiveSyncConfig,
    PipelineDatabase,
    StockDatabase,
    TelegramAlerts,
)
from stock_pipeline.defs.run_log import in_run_log
from stock_pipeline.defs.run_outcome import record_failure, record_success
from stock_pipeline.defs.tags import guards_overridden
from stock_pipeline.engine.apply_writes import PollPolicy, WriteApplier
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.notify.telegram import TelegramError, bad_rows_message
from stock_pipeline.observability import progress
from stock_pipeline.store.account_lock import account_write_lock
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.guard_state import BAD_ROWS_FINGERPRINT, read_value, write_value
from stock_pipeline.store.live_offers import LiveOffers

log = get_logger(__name__)

accounts_partitions = DynamicPartitionsDefinition(name="accounts")
# Partitioned checks are "preview" in Dagster 1.13; without them each account's guard and
# write-confirmation evaluations would show partition "—" and mix every account in one plot.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")
OWNERS = ["team:stock-sync"]
WRITES_CONFIRMED = "writes_confirmed"


def _alert_new_bad_rows(
    context: AssetExecutionContext, snapshot: CleanSnapshot, pipeline_db: PipelineDatabase, telegram: TelegramAlerts
) -> None:
    """One Telegram warning per distinct set of bad rows: every account's run reads the
    snapshot, and the seller needs to hear about a broken feed once, not once per run."""
    bad = snapshot.bad_rows.astype(str).sort_values(list(snapshot.bad_rows.columns))
    fingerprint = int(hashlib.sha256(bad.to_csv(index=False).encode()).hexdigest()[:15], 16) if len(bad) else 0
    engine = pipeline_db.engine()
    if read_value(engine, BAD_ROWS_FINGERPRINT) == fingerprint:
        return
    notifier = telegram.notifier()
    if fingerprint and notifier:
        try:
            notifier.send(
                bad_rows_message(
                    bad_rows=bad_rows_records(snapshot, 200),
                    problems=snapshot.problems,
                    run_url=telegram.run_url(context.run.run_id),
                )
            )
        except TelegramError as exc:  # the sync goes on; the next run tries the warning again
            context.log.warning(f"bad-row warning not sent: {exc}")
            return
    write_value(engine, BAD_ROWS_FINGERPRINT, fingerprint)


@asset(
    group_name="warehouse",
    owners=OWNERS,
    io_manager_key="frames_io_manager",
    dagster_type=SnapshotType,
    metadata=column_schema_metadata(SnapshotFrame),
    check_specs=[
        AssetCheckSpec(SNAPSHOT_GUARD, asset="stock_snapshot", blocking=True, description=SNAPSHOT_GUARD_DESCRIPTION)
    ],
    hooks={record_failure},
    description="Stock rows from the seller's warehouse database (STOCK_QUERY), cleaned: SKUs trimmed, bad rows "
    "(empty SKU; stock NULL, negative, not a whole number, or above STOCK_MAX_PLAUSIBLE_STOCK) excluded, "
    "counted and named; rows of one SKU are combined later by each account's policy.",
)
@in_run_log
def stock_snapshot(
    context: AssetExecutionContext,
    stock_db: StockDatabase,
    pipeline_db: PipelineDatabase,
    telegram: TelegramAlerts,
    guards: GuardConfig,
):
    keep_connections(context.instance)  # a run's first step: the run's remaining event records reuse them
    started = time.monotonic()
    with failures_as_sentences():
        snapshot = read_snapshot(stock_db)
    if snapshot.problems:
        context.log.warning(bad_rows_warning(snapshot))
    if snapshot.capped_rows:
        context.log.info(capped_note(snapshot))
    _alert_new_bad_rows(context, snapshot, pipeline_db, telegram)
    metadata = snapshot_metadata(snapshot)
    yield Output(snapshot.stock, metadata={**metadata, "duration_seconds": round(time.monotonic() - started, 3)})
    yield from snapshot_guard(context, metadata["skus"], guards, pipeline_db)


# deps on the snapshot: the warehouse is read (and its guard passed) before any Allegro call is spent.
@asset(
    group_name="allegro",
    owners=OWNERS,
    partitions_def=accounts_partitions,
    io_manager_key="frames_io_manager",
    deps=[stock_snapshot],
    dagster_type=OfferMapType,
    metadata=column_schema_metadata(OfferFrame),
    hooks={record_failure},
    description="Every offer of the account from GET /sale/offers (1000 per page): offer id, external.id (SKU), "
    "stock.available, publication.status; and whether the listing was complete (as many offers as "
    "Allegro's totalCount). Kept per account for later runs.",
)
@in_run_log
def allegro_offers(
    context: AssetExecutionContext, allegro: AllegroApi, pipeline_db: PipelineDatabase
) -> Output[OfferMap]:
    account = context.partition_key
    run_pacing.before_listing()  # a CLI sync of many accounts lets a few plan at once
    started = time.monotonic()
    with failures_as_sentences(account):
        listing = list_offers(allegro, pipeline_db, account)
    offer_map = listing.offer_map
    if offer_map.complete:  # the live sync's map starts from every complete listing
        store = LiveOffers(pipeline_db.engine())
        map_merges.start(
            context.run.run_id,
            account,
            lambda: store.merge_listing(account, offer_map.offers, offer_map.listed_at),
        )
    allegro.metrics().record_listing(account, offers=offer_map.listed, api_calls=listing.api_calls)
    return Output(
        offer_map,
        metadata={
            **offers_metadata(offer_map),
            "api_calls": listing.api_calls,
            "duration_seconds": round(time.monotonic() - started, 3),
        },
    )


@asset(
    group_name="allegro",
    owners=OWNERS,
    partitions_def=accounts_partitions,
    io_manager_key="frames_io_manager",
    ins={"stock_snapshot": AssetIn(dagster_type=SnapshotType), "allegro_offers": AssetIn(dagster_type=OfferMapType)},
    dagster_type=PlanType,
    metadata=column_schema_metadata(PlanFrame),
    check_specs=[
        AssetCheckSpec(
            DIFF_GUARD,
            asset="stock_diff",
            blocking=True,
            partitions_def=accounts_partitions,
            description=DIFF_GUARD_DESCRIPTION,
        )
    ],
    hooks={record_failure},
    description="Offers whose stock differs from the warehouse under the account's stock policy, with the planned "
    "write for each (PATCH, quantity command, END or ACTIVATE command, grouped by target value).",
)
@in_run_log
def stock_diff(
    context: AssetExecutionContext,
    allegro: AllegroApi,
    pipeline_db: PipelineDatabase,
    live: LiveSyncConfig,
    guards: GuardConfig,
    stock_snapshot: pd.DataFrame,
    allegro_offers: OfferMap,
):
    # The diff plans the listed offers: a partial offer map is accepted here (what needs every
    # offer, the diff guard and the writes, refuses it). A held plan is stored all the same.
    with failures_as_sentences(context.partition_key):
        # Sales first: a purchase the warehouse has not booked is never raised back.
        record_sales(allegro, pipeline_db, context.partition_key, stock_snapshot, live.sale_hold_seconds)
        planned = plan_account(
            pipeline_db,
            context.partition_key,
            stock_snapshot,
            allegro_offers,
            allegro.batch_size,
            rates=write_rates(allegro, context.instance),
        )
        settle_sale_holds(
            pipeline_db,
            context.partition_key,
            context.run.run_id,
            planned,
            pipeline_db.writes_log(guards_overridden(context.run.tags)),
        )
    yield Output(planned.plan, metadata=plan_metadata(planned, allegro_offers))
    yield from diff_guard(context, planned.plan, allegro_offers, guards)


def _forget_offers_ended_no_more(ended: EndedOffers, account: str, offer_map: OfferMap) -> None:
    """An offer we ended that this run's listing shows not ENDED was re-activated by
    someone else: from now on it is theirs, and we would never re-activate it. An offer
    missing from a partial listing is not "not ENDED": only a complete listing may say so."""
    offers = offer_map.require_complete("forgetting the offers we ended that the listing shows not ENDED")
    still_ended = set(offers.loc[offers["status"] == PublicationStatus.ENDED, "offer_id"])
    ended.forget(account, ended.ours(account) - still_ended)


def _without_newer_live_writes(
    context: AssetExecutionContext, pipeline_db: PipelineDatabase, account: str, plan: pd.DataFrame
) -> tuple[pd.DataFrame, int]:
    """The plan without the offers another run (a live run) wrote since this run started:
    this run's warehouse read is older than what that run wrote, and writing it would undo
    a newer change. The live sync writes whatever changed after it."""
    record = context.instance.get_run_record_by_id(context.run.run_id)
    started = record.start_time if record is not None else None
    if started is None or plan.empty:
        return plan, 0
    since = datetime.fromtimestamp(started, timezone.utc)
    newer = pipeline_db.writes_log().offers_written_since(account, since, other_than_run=context.run.run_id)
    keep = ~plan["offer_id"].astype(str).isin(newer)
    return plan[keep], int((~keep).sum())


@asset(
    group_name="allegro",
    owners=OWNERS,
    partitions_def=accounts_partitions,
    io_manager_key="frames_io_manager",
    ins={"stock_diff": AssetIn(dagster_type=PlanType), "allegro_offers": AssetIn(dagster_type=OfferMapType)},
    dagster_type=WriteResultsType,
    metadata=column_schema_metadata(WriteResultFrame),
    check_specs=[
        AssetCheckSpec(
            WRITES_CONFIRMED,
            asset="stock_updates",
            partitions_def=accounts_partitions,
            description="Every write of the run was confirmed by Allegro (none failed, none left pending).",
        )
    ],
    hooks={record_success, record_failure},
    description="The writes sent to Allegro and what each did (success / failed / pending). Materialised with "
    "its figures even when some writes failed; the run then fails, so the failure sensor alerts.",
)
@in_run_log
def stock_updates(
    context: AssetExecutionContext,
    allegro: AllegroApi,
    pipeline_db: PipelineDatabase,
    stock_diff: pd.DataFrame,
    allegro_offers: OfferMap,
):
    account = context.partition_key
    run_pacing.writes_starting()
    started = time.monotonic()
    with failures_as_sentences(account):
        client = allegro.client_for(account, pipeline_db)
    ended = EndedOffers(pipeline_db.engine())
    applier = WriteApplier(
        client,
        pipeline_db.writes_log(guards_overridden(context.run.tags)),
        run_id=context.run.run_id,
        account=account,
        ended_offers=ended,
        poll=PollPolicy(first_poll_after=allegro.poll_first_after, timeout=allegro.poll_timeout),
        concurrency=allegro.concurrency,
        progress=lambda stage, done, total: progress.report(account, stage, done, total),
    )
    try:
        with failures_as_sentences(account), account_write_lock(pipeline_db.engine(), account):
            _forget_offers_ended_no_more(ended, account, allegro_offers)
            still_pending = applier.resolve_pending()
            plan, newer = _without_newer_live_writes(context, pipeline_db, account, stock_diff)
            results = applier.apply(plan)
        LiveOffers(pipeline_db.engine()).observe_writes(account, results, allegro_offers.offers)
        with failures_as_sentences(account):
            map_merges.finish(context.run.run_id)
    finally:
        client.close()
        allegro.metrics().record_api_calls(account, client.stats.total)
    counts = results["status"].value_counts()
    failed = results[results["status"].isin([WriteStatus.FAILED, WriteStatus.NOT_SENT])]
    pending = int(counts.get(WriteStatus.PENDING, 0))
    metadata = {
        "changed": len(results),
        "written": int(counts.get(WriteStatus.SUCCESS, 0)),
        "failed": len(failed),
        "pending": pending,
        "pending_from_earlier_runs": still_pending,
        "left_to_newer_live_writes": newer,
        "api_calls": client.stats.total,
        "rate_limited_answers": client.stats.rate_limited,
        "retries": client.stats.retries,
        "duration_seconds": round(time.monotonic() - started, 3),
        "failures": preview(failed[["offer_id", "sku", "before", "after", "error"]], empty="no failed writes"),
        "writes": preview(results[PLAN_COLUMNS + ["status"]]),
    }
    yield Output(results, metadata=metadata)
    yield AssetCheckResult(
        check_name=WRITES_CONFIRMED,
        passed=failed.empty and not pending,
        severity=AssetCheckSeverity.ERROR if not failed.empty else AssetCheckSeverity.WARN,
        description=(
            f"{metadata['written']} of {len(results)} writes confirmed, {len(failed)} failed, {pending} still pending"
        ),
        metadata={k: metadata[k] for k in ("changed", "written", "failed", "pending")},
    )
    if not failed.empty:
        raise Failure(
            description=f"{len(failed)} of {len(results)} writes failed for account {account} "
            f"({metadata['written']} written, {pending} pending); first: offer "
            f"{failed['offer_id'].iloc[0]}: {failed['error'].iloc[0]}",
            metadata={
                "problem": PROBLEM_WRITES,
                **{k: metadata[k] for k in ("changed", "written", "failed", "pending", "api_calls")},
                "failures": metadata["failures"],
            },
            allow_retries=False,
        )
