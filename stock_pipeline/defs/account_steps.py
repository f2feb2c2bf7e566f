"""The work of each step of an account sync, shared by the assets (a real sync) and the
rehearsal job (a dry run), so a rehearsal plans exactly what a sync would send.

Each step only reads; what a real sync remembers (guard baselines, alert fingerprints,
metrics, the audit) is done by the assets around these calls, never here.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Iterable

import pandas as pd
from dagster import DagsterInstance, DagsterRunStatus, Failure, MetadataValue, RunsFilter

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import ContractError, OfferMap, SnapshotFrame, check_frame
from stock_pipeline.core.diff import diff_offers, empty_diff, offers_frame
from stock_pipeline.core.guards import Verdict, active_offer_count
from stock_pipeline.core.plan import WriteRates, minimum_calls, plan_seconds, plan_writes
from stock_pipeline.core.policy import StockPolicy, normalise_skus, offer_targets
from stock_pipeline.core.sale_holds import HELD_COLUMNS, apply_holds, empty_released
from stock_pipeline.core.snapshot import CleanSnapshot, bad_rows_preview, clean_snapshot, distinct_skus, shared
from stock_pipeline.core.vocabulary import Action, Method
from stock_pipeline.defs.resources import AllegroApi, PipelineDatabase, StockDatabase
from stock_pipeline.defs.tags import OVERRIDE_TAG
from stock_pipeline.engine.live_journals import follow_order_journal
from stock_pipeline.foundation.errors import (
    AccountNeedsReauthorisationError,
    AccountPausedError,
    AllegroSyncError,
    PipelineDatabaseUnavailableError,
    RateLimiterUnavailableError,
    SettingsError,
)
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.foundation.single_flight import SingleFlight
from stock_pipeline.observability import progress
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.live_offers import LiveOffers
from stock_pipeline.store.policies import PolicyStore
from stock_pipeline.store.sale_holds import SaleHolds
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline.warehouse.stock_source import StockSourceError, read_stock

log = get_logger(__name__)

PREVIEW_ROWS = 20
PLAN_COLUMNS = ["offer_id", "sku", "before", "after", "action", "method"]

# The `problem` metadata of a Failure: the CLI exits 2 for configuration problems, and
# the hooks record a guard hold as "held" rather than "failed".
PROBLEM_CONFIGURATION = "configuration"
PROBLEM_ACCOUNT = "account"
PROBLEM_HELD = "held"
PROBLEM_SERVICE = "service"
PROBLEM_ALLEGRO = "allegro"
PROBLEM_WRITES = "writes"


@contextmanager
def failures_as_sentences(account: str | None = None):
    """Known problems end the step as a Dagster Failure whose description is the
    problem's own sentence, so the run page, the alert and the CLI lead with it instead
    of a stack trace."""
    try:
        yield
    except Failure:
        raise
    except (StockSourceError, SettingsError) as exc:
        raise Failure(description=str(exc), metadata={"problem": PROBLEM_CONFIGURATION}, allow_retries=False) from None
    except (AccountNeedsReauthorisationError, AccountPausedError) as exc:
        raise Failure(
            description=str(exc), metadata={"problem": PROBLEM_ACCOUNT, "account": account or ""}, allow_retries=False
        ) from None
    except (PipelineDatabaseUnavailableError, RateLimiterUnavailableError) as exc:
        raise Failure(description=str(exc), metadata={"problem": PROBLEM_SERVICE}, allow_retries=False) from None
    except AllegroSyncError as exc:
        raise Failure(description=str(exc), metadata={"problem": PROBLEM_ALLEGRO}, allow_retries=False) from None


# Account runs of one CLI sync run side by side in one process, and every one reads the same
# STOCK_QUERY: reading and cleaning a million rows takes ~3 s of the GIL each time. A run that
# would start that read while another run of this process is at it waits and shares it.
_snapshot_reads: SingleFlight[CleanSnapshot] = SingleFlight()


def read_snapshot(stock_db: StockDatabase) -> CleanSnapshot:
    key = (stock_db.url, stock_db.query, stock_db.max_plausible_stock)
    # One copy of the rows for every run that shared the read: each gets views of the same
    # read-only frames (core/snapshot.shared), so no run can change what another plans from,
    # and the work done once per frame (its contract, the combined stock) is done once.
    return shared(_snapshot_reads.run(key, lambda: _read_snapshot(stock_db)))


def _read_snapshot(stock_db: StockDatabase) -> CleanSnapshot:
    try:
        snapshot = clean_snapshot(read_stock(stock_db.url, stock_db.query), max_plausible=stock_db.max_plausible_stock)
    except ValueError as exc:  # the query's columns are wrong: a configuration problem
        raise StockSourceError(f"STOCK_QUERY: {exc}") from None
    # Checked here, once for every run sharing the read, rather than by each run's output
    # check at the same moment (they find it remembered); a breach is left to that check,
    # which fails the step with the contract's sentence.
    try:
        check_frame(SnapshotFrame, snapshot.stock)
    except ContractError:
        pass
    return snapshot


def snapshot_metadata(snapshot: CleanSnapshot) -> dict:
    return {
        "rows_read": snapshot.rows_read,
        "skus": distinct_skus(snapshot.stock),
        "bad_rows": len(snapshot.bad_rows),
        "bad_row_problems": MetadataValue.json(snapshot.problems),
        "bad_rows_preview": MetadataValue.md(bad_rows_preview(snapshot, PREVIEW_ROWS)),
        "rows_capped_at_99999": snapshot.capped_rows,
        "max_plausible_stock": snapshot.max_plausible,
        "duplicate_sku_rows": snapshot.duplicate_skus,
        "units_total": int(snapshot.stock["stock"].sum()),
    }


@dataclass(frozen=True)
class Listing:
    offer_map: OfferMap
    api_calls: int


def list_offers(
    allegro: AllegroApi, pipeline_db: PipelineDatabase, account: str, *, record_metrics: bool = True
) -> Listing:
    client = allegro.client_for(account, pipeline_db, record_metrics=record_metrics)
    started = datetime.now(timezone.utc)  # the map is as of the listing's start (store/live_offers.py)
    try:
        offer_map = read_offer_map(account, client.iter_offer_frames(), listed_at=started)
    finally:
        client.close()
    return Listing(offer_map, client.stats.total)


def read_offer_map(
    account: str, pages: Iterable[tuple[pd.DataFrame, int]], listed_at: datetime | None = None
) -> OfferMap:
    """The offer map from the listing's pages (each page's offers as the offer map's
    columns, Allegro's totalCount). Complete only when the listing returned every offer
    Allegro counts, each once; otherwise partial, and said so: the diff still plans the
    listed offers, what needs every offer refuses."""
    frames: list[pd.DataFrame] = [offers_frame([])]
    listed = total = 0
    for page, total in pages:
        frames.append(page)
        listed += len(page)
        progress.report(account, "listing", listed, max(total, listed))
    offers = pd.concat(frames[1:], ignore_index=True) if len(frames) > 1 else frames[0]
    # Pages that shifted while the listing ran (an offer created or deleted) repeat an offer.
    repeated = offers["offer_id"].duplicated(keep="last")
    # Read-only from here on: the steps after share it (the IO manager hands them views of
    # the value stored), and its contract is checked once, not by every step that loads it.
    offer_map = OfferMap.from_listing(
        account,
        frame_memo.freeze(offers[~repeated].reset_index(drop=True)),
        total,
        listed_twice=int(repeated.sum()),
        listed_at=listed_at,
    )
    if not offer_map.complete:
        twice = int(repeated.sum())
        log.warning(
            "listing_partial",
            account=account,
            listed=offer_map.listed,
            total_count=total,
            listed_twice=twice,
            msg=f"the offer listing of account {account} is partial: {offer_map.listed} offers listed of the "
            f"{total} Allegro reported"
            + (f" ({twice} came twice: the pages shifted)" if twice else "")
            + "; the diff guard and the writes need a complete listing and will refuse it",
        )
    return offer_map


def offers_metadata(offer_map: OfferMap) -> dict:
    offers = offer_map.offers
    return {
        "offers": len(offers),
        "offers_without_sku": int(offers["sku"].isna().sum()),
        "by_status": MetadataValue.json({str(k): int(v) for k, v in offers["status"].value_counts().items()}),
        "listing_complete": offer_map.complete,
        "offers_reported_by_allegro": offer_map.total_count,
    }


HELD_PLAN_COLUMNS = PLAN_COLUMNS + ["batch"] + HELD_COLUMNS[HELD_COLUMNS.index("sales") :]


def _no_held_writes() -> pd.DataFrame:
    return plan_writes(empty_diff()).assign(
        **{c: pd.Series(dtype="int64") for c in ("sales", "units_sold", "warehouse_stock_at_sale")},
        hold_until=pd.Series(dtype="datetime64[ns, UTC]"),
        reason=pd.Series(dtype="string"),
    )


@dataclass(frozen=True)
class AccountPlan:
    plan: pd.DataFrame
    policy: StockPolicy
    minimum_api_calls: int | None  # None for a partial offer map: the yardstick needs every offer
    # Writes kept back for sales the warehouse has not booked (core/sale_holds.py), planned as
    # they would have been sent (HELD_PLAN_COLUMNS, `reason` saying why); not in `plan`.
    held: pd.DataFrame = field(default_factory=_no_held_writes)
    # Holds the rule released (expired, or the warehouse value changed): a real sync marks
    # them released (settle_sale_holds); a dry run only shows them.
    released: pd.DataFrame = field(default_factory=empty_released)
    rates: WriteRates | None = None  # what the routes were chosen by (core/plan.py), None: by calls


def write_rates(allegro: AllegroApi, instance: DagsterInstance) -> WriteRates:
    """The rates an account's writes are planned at now: the client_id's rate shared by the
    accounts with a run under way (at least this one). A full sync of many accounts thus
    plans by calls, which bind; an account written alone may trade calls for time."""
    under_way = instance.get_run_records(
        RunsFilter(statuses=[DagsterRunStatus.STARTING, DagsterRunStatus.STARTED]), limit=1000
    )
    return allegro.write_rates(len({r.dagster_run.tags.get("dagster/partition") for r in under_way} - {None}))


def plan_account(
    pipeline_db: PipelineDatabase,
    account: str,
    snapshot_stock: pd.DataFrame,
    offer_map: OfferMap,
    batch_size: int,
    *,
    rates: WriteRates | None = None,
    now: datetime | None = None,
) -> AccountPlan:
    """The account's plan with its active sale holds applied. Reads only: what the holds
    rule released is released by the real sync (`settle_sale_holds`), never by a dry run."""
    engine = pipeline_db.engine()
    now = now or datetime.now(timezone.utc)
    policy = PolicyStore(engine).get(account)
    ended_by_us = EndedOffers(engine).ours(account)
    holds = SaleHolds(engine).active(account, now)
    planned = plan_account_offers(
        offer_map, snapshot_stock, policy, ended_by_us, batch_size, holds=holds, now=now, rates=rates
    )
    if len(planned.held) or len(planned.released):
        log.info(
            "sale_holds",
            account=account,
            held_offers=int(planned.held["offer_id"].nunique()),
            released=len(planned.released),
            msg=f"{planned.held['offer_id'].nunique()} offer(s) of account {account} not raised: sold on Allegro, "
            f"not yet booked in the warehouse; {len(planned.released)} sale hold(s) released "
            "(expired, or the warehouse value changed)",
        )
    return planned


def plan_account_offers(
    offer_map: OfferMap,
    snapshot_stock: pd.DataFrame,
    policy: StockPolicy,
    ended_by_us: frozenset[str] | set[str],
    batch_size: int,
    *,
    holds: pd.DataFrame | None = None,
    now: datetime | None = None,
    rates: WriteRates | None = None,
) -> AccountPlan:
    """The writes for the listed offers: works on a partial map too (an offer not listed is
    simply not planned); the minimum number of calls is reckoned only on a complete one.
    `holds` (core.sale_holds.HOLD_COLUMNS, the account's active ones) keep back the writes
    that would raise a sold offer's stock, judged at `now`. Routes by time at `rates`."""
    # Each offer's SKU looked up once in the snapshot's index, hashed once per snapshot: the
    # work per account follows its offers, not the million rows of the warehouse. The same
    # diff as compute_diff over apply_policy's targets (tested).
    offers = offer_map.offers
    sku = normalise_skus(offers["sku"], policy)
    found, target = offer_targets(snapshot_stock, policy, sku)
    diff = diff_offers(offers, sku, found, target, ended_by_us)
    extra: dict = {}
    if holds is not None and not holds.empty:
        # Every held offer's target now, not only those the diff plans: a hold whose offer
        # now equals the warehouse is released too, once the warehouse value has moved on.
        position = pd.Index(offers["offer_id"]).get_indexer(holds["offer_id"])
        known = position >= 0
        known[known] = found[position[known]]
        targets = pd.Series(target[position[known]], index=pd.Index(holds["offer_id"][known], dtype="string"))
        outcome = apply_holds(
            diff, holds, now=now or datetime.now(timezone.utc), targets=targets[~targets.index.duplicated()]
        )
        diff = outcome.diff
        reasons = outcome.held.drop(columns=["sku", "status", "before", "after", "action"])
        extra = dict(
            held=plan_writes(outcome.held, batch_size).merge(reasons, on="offer_id")[HELD_PLAN_COLUMNS],
            released=outcome.released,
        )
    minimum = minimum_calls(offer_map, diff, batch_size) if offer_map.complete else None
    return AccountPlan(plan_writes(diff, batch_size, rates), policy, minimum, rates=rates, **extra)


def record_sales(
    allegro: AllegroApi, pipeline_db: PipelineDatabase, account: str, snapshot_stock: pd.DataFrame, hold_seconds: int
) -> set[str]:
    """The account's new purchases on Allegro (its order journal) recorded as sale holds,
    before anything is planned from its offers' stock: a real sync's step, never a dry run's.
    Returns the offers sold."""
    engine = pipeline_db.engine()
    client = allegro.client_for(account, pipeline_db)
    try:
        return follow_order_journal(
            client,
            LiveOffers(engine),
            SaleHolds(engine),
            account,
            snapshot_stock,
            PolicyStore(engine).get(account),
            timedelta(seconds=hold_seconds),
        )
    finally:
        client.close()


def settle_sale_holds(
    pipeline_db: PipelineDatabase, account: str, run_id: str, planned: AccountPlan, writes_log: WritesLog
) -> None:
    """What only a real sync does with the holds, after planning: the writes held for sales
    go into the audit (status `held`, never sent), the holds the rule released are marked
    released, and holds that have run out are deleted."""
    holds = SaleHolds(pipeline_db.engine())
    writes_log.record_held(run_id, account, planned.held)
    holds.release(account, planned.released["line_item_id"])
    holds.purge_expired(account=account)


def plan_metadata(planned: AccountPlan, offer_map: OfferMap) -> dict:
    plan = planned.plan
    complete = offer_map.complete  # active offers and the minimum number of calls count every offer
    metadata: dict = {"offers": offer_map.listed}
    metadata.update({"active_offers": active_offer_count(offer_map)} if complete else {"listing_complete": False})
    metadata.update(
        {
            "changed": len(plan),
            "to_end": int((plan["action"] == Action.END).sum()),
            "to_activate": int((plan["action"] == Action.ACTIVATE).sum()),
            "policy": MetadataValue.json(planned.policy.to_dict()),
            "planned_patches": int((plan["method"] == Method.PATCH).sum()),
            "planned_commands": int(plan.loc[plan["batch"] >= 0, "batch"].nunique()),
        }
    )
    if complete:
        metadata["minimum_api_calls"] = planned.minimum_api_calls
    if planned.rates is not None:
        # The writes' own time at the rates they were routed by: the listing's calls come first.
        metadata["writes_estimated_seconds"] = round(plan_seconds(plan, planned.rates), 1)
        metadata["planned_at_calls_per_second"] = round(planned.rates.calls, 1)
    metadata["preview"] = preview(plan[PLAN_COLUMNS])
    held = planned.held
    metadata["held_for_sales"] = int(held["offer_id"].nunique())
    metadata["held_for_sales_preview"] = preview(
        held.drop_duplicates("offer_id")[["offer_id", "sku", "before", "after", "units_sold", "hold_until"]],
        empty="no write held for a sale",
    )
    metadata["sale_holds_released"] = len(planned.released)
    return metadata


def preview(frame: pd.DataFrame, empty: str = "nothing to change") -> MetadataValue:
    if frame.empty:
        return MetadataValue.md(f"_{empty}_")
    return MetadataValue.md(
        frame.head(PREVIEW_ROWS).to_markdown(index=False)
        + (f"\n\n… and {len(frame) - PREVIEW_ROWS} more" if len(frame) > PREVIEW_ROWS else "")
    )


def override_hint(account: str) -> str:
    return (
        f"Review the plan with `stock-pipeline sync --dry-run --account {account}`; if the change is real, "
        f"run `stock-pipeline sync --account {account} --override-guards` (or launch the run with the tag "
        f"{OVERRIDE_TAG}=true); overridden writes are marked in the audit."
    )


def held_failure(check_name: str, verdict: Verdict, account: str | None) -> Failure:
    """A guard hold as one sentence with the way out, for the run page, the alert and the CLI."""
    reason = verdict.description.replace(": writes held", "")
    where = f" for account {account}" if account else ""
    return Failure(
        description=f"{check_name} held the writes{where}: {reason}. {override_hint(account or 'NAME')}",
        metadata={"problem": PROBLEM_HELD, "guard": check_name, **verdict.metadata},
        allow_retries=False,
    )
