"""The four assets. Each calls plain functions from core/ and the adapters; nothing
here decides stock rules."""

import hashlib
import time

import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    DynamicPartitionsDefinition,
    Failure,
    MetadataValue,
    Output,
    asset,
)

from stock_pipeline import progress
from stock_pipeline.apply_writes import PollPolicy, WriteApplier
from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.plan import minimum_calls, plan_writes
from stock_pipeline.core.policy import apply_policy
from stock_pipeline.core.snapshot import CleanSnapshot, clean_snapshot
from stock_pipeline.defs.resources import AllegroApi, PipelineDatabase, StockDatabase, TelegramAlerts
from stock_pipeline.defs.tags import guards_overridden
from stock_pipeline.logs import get_logger
from stock_pipeline.notify.telegram import TelegramError, bad_rows_message
from stock_pipeline.run_log import in_run_log
from stock_pipeline.stock_source import read_stock
from stock_pipeline.store.account_lock import account_write_lock
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.guard_state import BAD_ROWS_FINGERPRINT, read_value, write_value
from stock_pipeline.store.policies import PolicyStore
from stock_pipeline.store.writes_log import FAILED, PENDING, SUCCESS

log = get_logger(__name__)

accounts_partitions = DynamicPartitionsDefinition(name="accounts")
OWNERS = ["team:stock-sync"]
PREVIEW_ROWS = 20


class UpdatesConfig(Config):
    dry_run: bool = False


def _preview(frame: pd.DataFrame) -> MetadataValue:
    if frame.empty:
        return MetadataValue.md("_nothing to change_")
    return MetadataValue.md(frame.head(PREVIEW_ROWS).to_markdown(index=False)
                            + (f"\n\n… and {len(frame) - PREVIEW_ROWS} more" if len(frame) > PREVIEW_ROWS else ""))


def _alert_new_bad_rows(context: AssetExecutionContext, snapshot: CleanSnapshot, pipeline_db: PipelineDatabase,
                        telegram: TelegramAlerts) -> None:
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
            notifier.send(bad_rows_message(bad_rows=bad.head(200).to_dict("records"), problems=snapshot.problems,
                                           run_url=telegram.run_url(context.run.run_id)))
        except TelegramError as exc:  # the sync goes on; the next run tries the warning again
            context.log.warning(f"bad-row warning not sent: {exc}")
            return
    write_value(engine, BAD_ROWS_FINGERPRINT, fingerprint)


@asset(group_name="warehouse", owners=OWNERS, io_manager_key="frames_io_manager",
       description="Stock rows from the seller's warehouse database (STOCK_QUERY), cleaned: SKUs trimmed, bad rows "
                   "(empty SKU, NULL, negative or non-integer stock) excluded, counted and reported; rows of one SKU are "
                   "combined later by each account's policy.")
@in_run_log
def stock_snapshot(context: AssetExecutionContext, stock_db: StockDatabase, pipeline_db: PipelineDatabase,
                   telegram: TelegramAlerts) -> Output[pd.DataFrame]:
    started = time.monotonic()
    snapshot = clean_snapshot(read_stock(stock_db.url, stock_db.query))
    if snapshot.problems:
        context.log.warning(f"excluded {len(snapshot.bad_rows)} bad stock rows: {snapshot.problems}")
    _alert_new_bad_rows(context, snapshot, pipeline_db, telegram)
    return Output(snapshot.stock, metadata={
        "rows_read": snapshot.rows_read,
        "skus": int(snapshot.stock["sku"].nunique()),
        "bad_rows": len(snapshot.bad_rows),
        "bad_row_problems": MetadataValue.json(snapshot.problems),
        "duplicate_sku_rows": snapshot.duplicate_skus,
        "units_total": int(snapshot.stock["stock"].sum()),
        "duration_seconds": round(time.monotonic() - started, 3),
    })


@asset(group_name="allegro", owners=OWNERS, partitions_def=accounts_partitions, io_manager_key="frames_io_manager",
       description="Every offer of the account from GET /sale/offers (1000 per page): offer id, external.id (SKU), "
                   "stock.available, publication.status. Kept per account for later runs.")
@in_run_log
def allegro_offers(context: AssetExecutionContext, allegro: AllegroApi, pipeline_db: PipelineDatabase) -> Output[pd.DataFrame]:
    account = context.partition_key
    started = time.monotonic()
    client = allegro.client_for(account, pipeline_db)
    items: list[dict] = []
    try:
        for page, total in client.iter_offer_pages():
            items.extend(page)
            progress.report(account, "listing", len(items), max(total, len(items)))
    finally:
        client.close()
    offers = offers_frame(items)
    allegro.metrics().record_listing(account, offers=len(offers), api_calls=client.stats.total)
    return Output(offers, metadata={
        "offers": len(offers),
        "offers_without_sku": int(offers["sku"].isna().sum()),
        "by_status": MetadataValue.json({str(k): int(v) for k, v in offers["status"].value_counts().items()}),
        "api_calls": client.stats.total,
        "duration_seconds": round(time.monotonic() - started, 3),
    })


@asset(group_name="allegro", owners=OWNERS, partitions_def=accounts_partitions, io_manager_key="frames_io_manager",
       description="Offers whose stock differs from the warehouse under the account's stock policy, with the planned "
                   "write for each (PATCH, quantity command, END or ACTIVATE command, grouped by target value).")
@in_run_log
def stock_diff(context: AssetExecutionContext, allegro: AllegroApi, pipeline_db: PipelineDatabase,
               stock_snapshot: pd.DataFrame, allegro_offers: pd.DataFrame) -> Output[pd.DataFrame]:
    account = context.partition_key
    policy = PolicyStore(pipeline_db.engine()).get(account)
    ended_by_us = EndedOffers(pipeline_db.engine()).ours(account)
    targets = apply_policy(stock_snapshot, policy)
    diff = compute_diff(allegro_offers, targets, ended_by_us, case_insensitive_skus=policy.case_insensitive_skus)
    plan = plan_writes(diff, allegro.batch_size)
    commands = plan.loc[plan["batch"] >= 0, "batch"].nunique()
    return Output(plan, metadata={
        "offers": len(allegro_offers),
        "active_offers": int((allegro_offers["status"] == "ACTIVE").sum()),
        "changed": len(plan),
        "to_end": int((plan["action"] == "end").sum()),
        "to_activate": int((plan["action"] == "activate").sum()),
        "policy": MetadataValue.json(policy.to_dict()),
        "planned_patches": int((plan["method"] == "patch").sum()),
        "planned_commands": int(commands),
        "minimum_api_calls": minimum_calls(len(allegro_offers), diff, allegro.batch_size),
        "preview": _preview(plan[["offer_id", "sku", "before", "after", "action", "method"]]),
    })


def _forget_offers_ended_no_more(ended: EndedOffers, account: str, offers: pd.DataFrame) -> None:
    """An offer we ended that this run's listing shows not ENDED was re-activated by
    someone else: from now on it is theirs, and we would never re-activate it."""
    ended.forget(account, ended.ours(account) - set(offers.loc[offers["status"] == "ENDED", "offer_id"]))


@asset(group_name="allegro", owners=OWNERS, partitions_def=accounts_partitions, io_manager_key="frames_io_manager",
       description="The writes sent to Allegro and what each did (success / failed / pending). Fails the run "
                   "when a write failed, so the failure sensor alerts.")
@in_run_log
def stock_updates(context: AssetExecutionContext, config: UpdatesConfig, allegro: AllegroApi,
                  pipeline_db: PipelineDatabase, stock_diff: pd.DataFrame,
                  allegro_offers: pd.DataFrame) -> Output[pd.DataFrame]:
    account = context.partition_key
    started = time.monotonic()
    if config.dry_run:
        context.log.info(f"dry run: {len(stock_diff)} planned writes not sent")
        return Output(stock_diff.assign(status="dry_run"), metadata={
            "dry_run": True, "changed": len(stock_diff), "written": 0, "failed": 0, "pending": 0, "api_calls": 0,
            "preview": _preview(stock_diff[["offer_id", "sku", "before", "after", "action", "method"]]),
        })
    client = allegro.client_for(account, pipeline_db)
    ended = EndedOffers(pipeline_db.engine())
    applier = WriteApplier(client, pipeline_db.writes_log(guards_overridden(context.run.tags)),
                           run_id=context.run.run_id, account=account, ended_offers=ended,
                           poll=PollPolicy(first_poll_after=allegro.poll_first_after, timeout=allegro.poll_timeout),
                           progress=lambda stage, done, total: progress.report(account, stage, done, total))
    try:
        with account_write_lock(pipeline_db.engine(), account):
            _forget_offers_ended_no_more(ended, account, allegro_offers)
            still_pending = applier.resolve_pending()
            results = applier.apply(stock_diff)
    except Exception:
        allegro.metrics().record_run(account, api_calls=client.stats.total, success=False,
                                     duration_seconds=time.monotonic() - started)
        raise
    finally:
        client.close()
    counts = results["status"].value_counts()
    failed = results[results["status"] == FAILED]
    metadata = {
        "dry_run": False,
        "changed": len(results),
        "written": int(counts.get(SUCCESS, 0)),
        "failed": int(counts.get(FAILED, 0)),
        "pending": int(counts.get(PENDING, 0)),
        "pending_from_earlier_runs": still_pending,
        "api_calls": client.stats.total,
        "rate_limited_answers": client.stats.rate_limited,
        "retries": client.stats.retries,
        "duration_seconds": round(time.monotonic() - started, 3),
        "failures": _preview(failed[["offer_id", "sku", "before", "after", "error"]]),
    }
    allegro.metrics().record_run(account, changed=len(results), written=metadata["written"], failed=metadata["failed"],
                                 pending=metadata["pending"], api_calls=client.stats.total,
                                 duration_seconds=metadata["duration_seconds"], success=failed.empty)
    if not failed.empty:
        raise Failure(description=f"{len(failed)} of {len(results)} writes failed for account {account}; "
                                  f"first: offer {failed['offer_id'].iloc[0]}: {failed['error'].iloc[0]}",
                      metadata=metadata)
    return Output(results, metadata=metadata)
