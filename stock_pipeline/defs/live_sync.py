"""Live sync: a warehouse change reaches Allegro within seconds, between the full syncs.

`live_stock_sensor` (on by default, every LIVE_SYNC_POLL_SECONDS) does, each tick:
1. reads the warehouse (STOCK_QUERY whole, or only the changed rows with STOCK_CHANGES_QUERY:
   defs/live_warehouse.py), checks it with the snapshot guard's rule (a broken feed
   launches nothing) and compares it with the version its cursor names
   (core/warehouse_changes.py, vectorised): the SKUs whose rows changed;
2. per active account whose offer map is current (store/live_offers.py): follows the
   offer-events journal (the offers it names are re-read, engine/live_journals.py) and the
   order journal (each sale becomes a hold, core/sale_holds.py);
3. plans, with the account's policy and its holds, the offers of the changed SKUs and the
   offers the journal named, against the live offer map; an account with something to
   write gets one `live_stock_sync` run for exactly those offers. An account with a run in
   flight (live or full) keeps its offers pending in the cursor for the next tick: one
   writer per account, and the queue's per-partition limit holds live runs and full syncs
   apart. An account without a current map (new, or its journal position expired) gets a
   full sync instead, which builds it.

The run (`live_stock_updates`) re-plans its offers from the newest warehouse version and
the live map, judges the plan with the diff guard against the account's WHOLE offer map
(a handful of SKUs is never its own denominator), writes through the same engine, audit,
limiter and account lock as a full sync, and records what it wrote in the map and the
lag. The full sync stays on its schedule for drift (offers created, edited or ended by
hand, events missed).
"""

# No `from __future__ import annotations`: Dagster reads the run config's class from the
# asset function's annotations.
import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone

import pandas as pd
from dagster import (
    AssetExecutionContext,
    Config,
    DagsterRunStatus,
    DefaultSensorStatus,
    Failure,
    Output,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    sensor,
)

from stock_pipeline.core.contracts import OfferMap, WriteResultFrame
from stock_pipeline.core.guards import diff_verdict
from stock_pipeline.core.policy import normalise_skus
from stock_pipeline.core.vocabulary import Action, WriteStatus
from stock_pipeline.defs.account_steps import (
    PLAN_COLUMNS,
    PROBLEM_ACCOUNT,
    PROBLEM_CONFIGURATION,
    PROBLEM_HELD,
    PROBLEM_WRITES,
    failures_as_sentences,
    held_failure,
    plan_account,
    preview,
    read_snapshot,
    settle_sale_holds,
    write_rates,
)
from stock_pipeline.defs.assets import accounts_partitions
from stock_pipeline.defs.automation import account_sync_job
from stock_pipeline.defs.contract_types import WriteResultsType, column_schema_metadata
from stock_pipeline.defs.instance_connections import keep_connections
from stock_pipeline.defs.live_snapshots import WarehouseVersions
from stock_pipeline.defs.live_warehouse import WarehousePosition, read_warehouse
from stock_pipeline.defs.resources import AllegroApi, GuardConfig, LiveSyncConfig, PipelineDatabase, StockDatabase
from stock_pipeline.defs.run_outcome import step_failures
from stock_pipeline.defs.tags import ACCOUNT_TAG, LIVE_TAG, guards_overridden
from stock_pipeline.engine.apply_writes import PollPolicy, WriteApplier
from stock_pipeline.engine.live_journals import (
    follow_offer_journal,
    follow_order_journal,
    start_following_offer_journal,
)
from stock_pipeline.foundation.errors import AllegroSyncError
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.store.account_lock import account_write_lock
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.live_offers import LiveAccount, LiveOffers
from stock_pipeline.store.policies import PolicyStore
from stock_pipeline.store.sale_holds import SaleHolds

log = get_logger(__name__)

LIVE_JOB = "live_stock_sync"
FULL_JOB = account_sync_job.name
# A live run waits this long for a full sync of its account to finish writing.
LOCK_WAIT_SECONDS = 120.0
# An offer Allegro lowered without a write of ours is a buyer's purchase until proven
# otherwise: its order event can reach the order journal a little after the offer event.
# For this long no live run raises it back; by then the order journal has made it a sale
# hold (core/sale_holds.py), or it was another application's change and is corrected.
PRESUMED_SALE_SECONDS = 120.0
LIVE_CHANGES, LIVE_RETRY = "changes", "retry"  # LIVE_TAG of a live run: its offers' first run, or a retry
# Problems a retry cannot cure: a guard's hold, the configuration, the account's tokens.
NOT_RETRIED = {PROBLEM_HELD, PROBLEM_CONFIGURATION, PROBLEM_ACCOUNT}
FAILURE_MARGIN = timedelta(seconds=30)
# A live run writes at most LIVE_SYNC_MAX_OFFERS offers after waiting up to LOCK_WAIT_SECONDS.
LIVE_RUN_MAX_SECONDS = 900
IN_FLIGHT = [
    DagsterRunStatus.QUEUED,
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]


class LiveChanges(Config):
    """What a live run writes: these offers, to the warehouse as of `warehouse_version`."""

    offer_ids: list[str]
    warehouse_version: str = ""
    change_seen_at: str = ""  # ISO time the sensor first saw the change (the lag counts from it)


@asset(
    group_name="allegro",
    owners=["team:stock-sync"],
    partitions_def=accounts_partitions,
    io_manager_key="frames_io_manager",
    dagster_type=WriteResultsType,
    metadata=column_schema_metadata(WriteResultFrame),
    description="The writes of a live run: only the offers whose warehouse value or Allegro value changed since "
    "the last poll (live_stock_sensor), planned with the account's policy and sale holds, guarded against the "
    "account's whole offer map, and what each did.",
)
def live_stock_updates(
    context: AssetExecutionContext,
    config: LiveChanges,
    allegro: AllegroApi,
    pipeline_db: PipelineDatabase,
    stock_db: StockDatabase,
    guards: GuardConfig,
    live: LiveSyncConfig,
) -> Output[pd.DataFrame]:
    keep_connections(context.instance)  # the run's own process: its remaining event records reuse them
    account = context.partition_key
    engine = pipeline_db.engine()
    store = LiveOffers(engine)
    with failures_as_sentences(account):
        warehouse = WarehouseVersions(live.versions_dir).load(config.warehouse_version)
        if warehouse is None:  # pruned, or this run is on another machine: read it now
            warehouse = read_snapshot(stock_db).stock
        offers = store.offers(account, offer_ids=config.offer_ids)
        # Complete for these offers: the plan covers exactly them, nothing is inferred from absence.
        offer_map = OfferMap.from_listing(account, offers, len(offers))
        rates = write_rates(allegro, context.instance)
        planned = plan_account(pipeline_db, account, warehouse, offer_map, allegro.batch_size, rates=rates)
        settle_sale_holds(
            pipeline_db,
            account,
            context.run.run_id,
            planned,
            pipeline_db.writes_log(guards_overridden(context.run.tags)),
        )
        plan = planned.plan
        verdict = diff_verdict(plan, store.active_count(account), guards.limits())
        if not verdict.passed and not guards_overridden(context.run.tags):
            raise held_failure("diff_guard", verdict, account)
        client = allegro.client_for(account, pipeline_db)
    applier = WriteApplier(
        client,
        pipeline_db.writes_log(guards_overridden(context.run.tags)),
        run_id=context.run.run_id,
        account=account,
        ended_offers=EndedOffers(engine),
        poll=PollPolicy(first_poll_after=allegro.poll_first_after, timeout=allegro.poll_timeout),
        concurrency=allegro.concurrency,
    )
    try:
        with failures_as_sentences(account), account_write_lock(engine, account, LOCK_WAIT_SECONDS):
            results = applier.apply(plan)
    finally:
        client.close()
        allegro.metrics().record_api_calls(account, client.stats.total)
    written_at = datetime.now(timezone.utc)
    store.observe_writes(account, results, offers)
    lag = _lag(config.change_seen_at, written_at)
    store.record_write(account, written_at, lag)
    allegro.metrics().record_live_lag(account, lag)
    counts = results["status"].value_counts()
    failed = results[results["status"].isin([WriteStatus.FAILED, WriteStatus.NOT_SENT])]
    metadata = {
        "offers_asked": len(config.offer_ids),
        "changed": len(results),
        "written": int(counts.get(WriteStatus.SUCCESS, 0)),
        "failed": len(failed),
        "pending": int(counts.get(WriteStatus.PENDING, 0)),
        "held_for_sales": int(planned.held["offer_id"].nunique()),
        "api_calls": client.stats.total,
        "lag_seconds": round(lag, 3) if lag is not None else -1.0,
        "writes": preview(results[PLAN_COLUMNS + ["status"]]),
    }
    if not failed.empty:
        raise Failure(
            description=f"{len(failed)} of {len(results)} live writes failed for account {account}; first: offer "
            f"{failed['offer_id'].iloc[0]}: {failed['error'].iloc[0]}",
            metadata={"problem": PROBLEM_WRITES, "failed": len(failed), "api_calls": client.stats.total},
            allow_retries=False,
        )
    return Output(results, metadata=metadata)


def _lag(change_seen_at: str, written_at: datetime) -> float | None:
    if not change_seen_at:
        return None
    return max(0.0, (written_at - datetime.fromisoformat(change_seen_at)).total_seconds())


live_sync_job = define_asset_job(
    LIVE_JOB,
    selection=[live_stock_updates],
    executor_def=in_process_executor,
    description="Write only what changed for one account (launched by live_stock_sensor).",
)


# ---- the sensor -------------------------------------------------------------------------


@dataclass
class LiveCursor:
    """The sensor's position, all of it in Dagster's sensor cursor (stored with the tick's
    run requests): a tick evaluated again after a crash starts from the same position,
    reads the same changes and asks for the same runs under the same run keys.

    - `warehouse`: the warehouse version last compared;
    - `offer_events`: per account, its offer journal's position ("" = from the oldest);
    - `pending`: per account, offers still to write (a run of it was in flight), and
      `seen_at` when their change was first seen (the lag counts from then);
    - `fell`: per account, offers Allegro lowered without a write of ours, and when:
      presumed sales whose order event may not be in the order journal yet;
    - `tick`: counts the ticks, so that a run key is never the same for two ticks;
    - `changes_since`, `full_read_at`, `warehouse_skus`: with STOCK_CHANGES_QUERY, where its
      reads resume, when STOCK_QUERY was last read whole, and the version's distinct SKUs
      (defs/live_warehouse.py);
    - `failures_seen_at`, `retried_runs`: up to when failed live runs were looked for, and
      those whose offers were handed to a new run (`failed_live_offers`).
    """

    warehouse: str | None = None
    offer_events: dict[str, str] = field(default_factory=dict)
    pending: dict[str, list[str]] = field(default_factory=dict)
    seen_at: dict[str, str] = field(default_factory=dict)
    fell: dict[str, dict[str, str]] = field(default_factory=dict)
    tick: int = 0
    changes_since: dict | None = None
    full_read_at: str | None = None
    warehouse_skus: int | None = None
    failures_seen_at: str | None = None
    retried_runs: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: str | None) -> "LiveCursor":
        return cls(**json.loads(raw)) if raw else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def warehouse_position(self) -> WarehousePosition:
        return WarehousePosition(self.warehouse, self.changes_since, self.full_read_at, self.warehouse_skus)

    def move_warehouse_to(self, position: WarehousePosition) -> None:
        self.warehouse, self.changes_since = position.version, position.changes_since
        self.full_read_at, self.warehouse_skus = position.full_read_at, position.skus


@dataclass
class AccountPosition:
    """One account's part of the cursor, worked on by that account's thread alone."""

    offer_events: str | None
    pending: list[str]
    seen_at: str | None
    fell: dict[str, str]


def _position(cursor: LiveCursor, account: str) -> AccountPosition:
    return AccountPosition(
        cursor.offer_events.get(account),
        list(cursor.pending.get(account, [])),
        cursor.seen_at.get(account),
        dict(cursor.fell.get(account, {})),
    )


def _store_position(cursor: LiveCursor, account: str, position: AccountPosition) -> None:
    for mapping, value in (
        (cursor.offer_events, position.offer_events),
        (cursor.pending, position.pending),
        (cursor.seen_at, position.seen_at),
        (cursor.fell, position.fell),
    ):
        if value or (mapping is cursor.offer_events and value is not None):
            mapping[account] = value
        else:
            mapping.pop(account, None)


@dataclass(frozen=True)
class InFlight:
    """Accounts with runs in flight: any run at all (a full sync for the map waits for them),
    and those whose next live run must wait: a full sync in flight, or a live run not yet
    started (one live run may queue behind a running one: the queue's per-account limit
    and the account lock run them one after the other, and the next one plans afresh)."""

    any_run: frozenset[str]
    waiting: frozenset[str]


NOT_STARTED = {DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING}


def runs_in_flight(context: SensorEvaluationContext) -> InFlight:
    runs = context.instance.get_runs(filters=RunsFilter(statuses=IN_FLIGHT))
    any_run, waiting = set(), set()
    for run in runs:
        account = run.tags.get("dagster/partition") or run.tags.get(ACCOUNT_TAG)
        if account is None:
            continue
        any_run.add(account)
        if run.job_name != LIVE_JOB or run.status in NOT_STARTED:
            waiting.add(account)
    return InFlight(frozenset(any_run), frozenset(waiting))


def _full_sync(account: str, key: str) -> RunRequest:
    return RunRequest(
        job_name=FULL_JOB,
        run_key=f"live-listing:{account}:{key}",
        partition_key=account,
        tags={ACCOUNT_TAG: account, LIVE_TAG: "listing"},
    )


@dataclass(frozen=True)
class Tick:
    """What every account's part of one tick shares."""

    number: int
    now: datetime
    warehouse: pd.DataFrame
    version: str | None
    changed: pd.Index
    in_flight: InFlight
    retry: dict[str, frozenset[str]] = field(default_factory=dict)  # per account: offers of failed live runs


def live_tick(
    context: SensorEvaluationContext,
    stock_db: StockDatabase,
    pipeline_db: PipelineDatabase,
    allegro: AllegroApi,
    guards: GuardConfig,
    live: LiveSyncConfig,
    accounts: list[str],
) -> SensorResult | SkipReason:
    cursor = LiveCursor.parse(context.cursor)
    cursor.tick += 1
    engine = pipeline_db.engine()
    now = datetime.now(timezone.utc)
    warehouse = read_warehouse(stock_db, live, guards, engine, cursor.warehouse_position(), now)
    if warehouse.held:
        return SkipReason(f"the warehouse snapshot is held by the snapshot guard: {warehouse.held}")
    cursor.move_warehouse_to(warehouse.position)
    changed = warehouse.changed
    retry = failed_live_offers(context, cursor, now)
    tick = Tick(cursor.tick, now, warehouse.stock, cursor.warehouse, changed, runs_in_flight(context), retry)
    states = LiveOffers(engine).states()
    positions = {account: _position(cursor, account) for account in accounts}
    # Each account's journals are a few calls answered in 0.1-0.5 s: read side by side.
    with ThreadPoolExecutor(max_workers=min(8, len(accounts)), thread_name_prefix="live-account") as pool:
        futures = [
            pool.submit(
                _tick_account, account, positions[account], states.get(account), tick, pipeline_db, allegro, live
            )
            for account in accounts
        ]
        requests = [request for future in futures for request in future.result()]
    for account, position in positions.items():
        _store_position(cursor, account, position)
    if len(changed):
        LiveOffers(engine).record_change_seen(accounts, now)
    return SensorResult(run_requests=requests, cursor=cursor.dump())


def _tick_account(
    account: str,
    position: AccountPosition,
    state: LiveAccount | None,
    tick: Tick,
    pipeline_db: PipelineDatabase,
    allegro: AllegroApi,
    live: LiveSyncConfig,
) -> list[RunRequest]:
    """One account's part of a tick: its journals followed, then the live run it needs, if
    any. Its trouble (tokens, Allegro down) is logged and skips it, never the others."""
    engine = pipeline_db.engine()
    store = LiveOffers(engine)
    idle = account not in tick.in_flight.any_run
    try:
        client = allegro.client_for(account, pipeline_db)
    except AllegroSyncError as exc:
        log.warning("live_account_skipped", account=account, error=str(exc))
        return []
    try:
        if position.offer_events is None or state is None or state.offer_events_since is None:
            # Not followed yet (or the cursor was reset): from the journal's head, and a full
            # sync whose listing, started after it, makes the map current.
            return _restart_from_journal_head(client, store, account, position, tick, idle)
        if not state.map_current:  # its full sync is still to come (or failed): asked again once idle
            return [_full_sync(account, f"{tick.number}")] if idle else []
        journal = follow_offer_journal(client, store, account, position.offer_events)
        if journal.position_lost:
            return _restart_from_journal_head(client, store, account, position, tick, idle)
        position.offer_events = journal.position
        policy = PolicyStore(engine).get(account)
        sold = follow_order_journal(
            client,
            store,
            SaleHolds(engine),
            account,
            tick.warehouse,
            policy,
            timedelta(seconds=live.sale_hold_seconds),
        )
    except AllegroSyncError as exc:
        log.warning("live_account_skipped", account=account, error=str(exc))
        return []
    finally:
        client.close()
    # An offer that fell and whose sale the order journal now names is a sale hold: the
    # holds, not the wait for its order, keep it from being raised from now on.
    position.fell = {offer: seen for offer, seen in position.fell.items() if offer not in sold}
    journal = replace(journal, fell=tuple(offer for offer in journal.fell if offer not in sold))
    request = _live_run(account, position, tick, journal, policy, pipeline_db, allegro, live)
    return [request] if request is not None else []


def _restart_from_journal_head(
    client, store: LiveOffers, account: str, position: AccountPosition, tick: Tick, idle: bool
) -> list[RunRequest]:
    """Follow the offer journal from its head, forget what was pending (the full sync covers
    it) and ask for the full sync whose listing makes the map current again."""
    position.offer_events = start_following_offer_journal(client, store, account)
    position.pending, position.seen_at = [], None
    return [_full_sync(account, f"{tick.number}")] if idle else []


def _live_run(
    account: str,
    position: AccountPosition,
    tick: Tick,
    journal,
    policy,
    pipeline_db: PipelineDatabase,
    allegro: AllegroApi,
    live: LiveSyncConfig,
) -> RunRequest | None:
    """The live run `account` needs now, if any; offers that must wait stay in `position`."""
    store = LiveOffers(pipeline_db.engine())
    retried = tick.retry.get(account, frozenset())
    candidates = set(position.pending) | set(journal.reread["offer_id"].astype(str)) | retried
    if len(tick.changed):
        touched = store.offers(
            account, skus=normalise_skus(pd.Series(tick.changed), policy), fold_case=policy.case_insensitive_skus
        )
        candidates |= set(touched["offer_id"].astype(str))
    now = tick.now
    position.fell.update({offer: now.isoformat() for offer in journal.fell if offer not in position.fell})
    position.fell = {
        offer: seen
        for offer, seen in position.fell.items()
        if (now - datetime.fromisoformat(seen)).total_seconds() <= PRESUMED_SALE_SECONDS
    }
    if not candidates:
        return None
    offers = store.offers(account, offer_ids=candidates)
    planned = plan_account(
        pipeline_db, account, tick.warehouse, OfferMap.from_listing(account, offers, len(offers)), allegro.batch_size
    )
    plan = planned.plan
    raises = (plan["after"] > plan["before"]) | (plan["action"] == Action.ACTIVATE)
    deferred = (plan["offer_id"].astype(str).isin(position.fell) & raises).to_numpy(dtype=bool)
    ids = sorted(plan.loc[~deferred, "offer_id"].astype(str))
    later = sorted(plan.loc[deferred, "offer_id"].astype(str))
    position.pending = later
    if not ids:
        position.seen_at = position.seen_at if later else None
        return None
    seen_at = position.seen_at or now.isoformat()
    if len(ids) > live.max_offers:  # a delivery touching most of the catalogue: one full sync does it cheaper
        position.pending, position.seen_at = [], None
        return None if account in tick.in_flight.any_run else _full_sync(account, f"{tick.number}")
    if account in tick.in_flight.waiting:
        position.pending, position.seen_at = ids + later, seen_at
        return None
    position.seen_at = seen_at if later else None
    digest = hashlib.sha256(",".join(ids).encode()).hexdigest()[:12]
    return RunRequest(
        job_name=LIVE_JOB,
        run_key=f"live:{account}:{tick.number}:{digest}",
        partition_key=account,
        run_config={
            "ops": {
                "live_stock_updates": {
                    "config": {"offer_ids": ids, "warehouse_version": tick.version or "", "change_seen_at": seen_at}
                }
            }
        },
        tags={
            ACCOUNT_TAG: account,
            LIVE_TAG: LIVE_RETRY if retried & set(ids) else LIVE_CHANGES,
            # Its process dying would leave it STARTED for ever: the daemon's run monitoring
            # (docker/dagster.yaml) ends it after this long, and the next tick retries it.
            "dagster/max_runtime": str(LIVE_RUN_MAX_SECONDS),
        },
    )


def failed_live_offers(context: SensorEvaluationContext, cursor: LiveCursor, now: datetime) -> dict[str, frozenset]:
    """Per account, the offers of live runs that failed or were canceled since the last
    tick, to be planned again: a run that failed on Allegro (5xx after its retries, writes
    that failed) or whose process died (the daemon's run monitoring ends it) would otherwise
    leave its changes to the next full sync. Once only: a run that was itself a retry is not
    retried (an Allegro outage would launch a failing run, and an alert, every tick), nor is
    a run that failed for a reason a retry cannot cure (a guard's hold, a configuration or
    account problem: they alert and wait for the operator). Looked for from a little before
    the last tick, as a run's end time comes from another process's clock; the run ids
    already retried within that margin are in the cursor."""
    since = cursor.failures_seen_at
    cursor.failures_seen_at = now.isoformat()
    if since is None:
        return {}
    runs = context.instance.get_runs(
        filters=RunsFilter(
            job_name=LIVE_JOB,
            statuses=[DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED],
            tags={LIVE_TAG: LIVE_CHANGES},
            updated_after=datetime.fromisoformat(since) - FAILURE_MARGIN,
        )
    )
    offers: dict[str, set[str]] = {}
    retried = []
    for run in runs:
        retried.append(run.run_id)
        if run.run_id in cursor.retried_runs:
            continue
        if {problem for _, problem in step_failures(context.instance, run.run_id)} & NOT_RETRIED:
            continue
        account = run.tags.get("dagster/partition")
        config = (run.run_config or {}).get("ops", {}).get("live_stock_updates", {}).get("config", {})
        if account:
            offers.setdefault(account, set()).update(map(str, config.get("offer_ids", [])))
    cursor.retried_runs = retried
    return {account: frozenset(ids) for account, ids in offers.items()}


def build_live_sensor(enabled: bool, poll_seconds: int):
    @sensor(
        name="live_stock_sensor",
        jobs=[live_sync_job, account_sync_job],
        minimum_interval_seconds=poll_seconds,
        default_status=DefaultSensorStatus.RUNNING if enabled else DefaultSensorStatus.STOPPED,
        description="Live sync: every LIVE_SYNC_POLL_SECONDS compares the warehouse with its last version and follows "
        "each account's offer and order journals; launches a live_stock_sync run per account with offers to write.",
    )
    def live_stock_sensor(
        context: SensorEvaluationContext,
        stock_db: StockDatabase,
        pipeline_db: PipelineDatabase,
        allegro: AllegroApi,
        guards: GuardConfig,
        live: LiveSyncConfig,
    ):
        partitions = set(context.instance.get_dynamic_partitions(accounts_partitions.name))
        accounts = [a.name for a in pipeline_db.accounts().list(only_active=True) if a.name in partitions]
        if not accounts:
            return SkipReason("no active account is a partition yet")
        return live_tick(context, stock_db, pipeline_db, allegro, guards, live, accounts)

    return live_stock_sensor
