"""The dry run: a rehearsal of one account's sync that changes nothing anywhere.

It is a job of its own, of plain ops rather than assets, so it materialises nothing: the
account's partitions keep their colour, and no asset value is replaced. It reads the
warehouse and lists the offers exactly as a sync would (the listing still draws from
the shared rate limiter), plans the same writes, and asks the guards for the verdicts
they would give, but it moves no guard baseline, sends no bad-rows alert (nor spends
its fingerprint), records no metrics, writes no audit row and touches no ended-offer
memory. Launch it from the CLI (`stock-pipeline sync --dry-run`) or from the UI
(job `account_rehearsal`, pick the account).
"""

import pandas as pd
from dagster import (
    MetadataValue,
    OpExecutionContext,
    Out,
    in_process_executor,
    job,
    op,
)

from stock_pipeline.core.guards import active_offer_count, diff_verdict, snapshot_verdict
from stock_pipeline.defs.account_steps import (
    PLAN_COLUMNS,
    failures_as_sentences,
    list_offers,
    offers_metadata,
    override_hint,
    plan_account,
    plan_metadata,
    read_snapshot,
    snapshot_metadata,
    write_rates,
)
from stock_pipeline.defs.assets import accounts_partitions
from stock_pipeline.defs.contract_types import RehearsalPlanType
from stock_pipeline.defs.resources import AllegroApi, GuardConfig, PipelineDatabase, StockDatabase
from stock_pipeline.defs.tags import DRY_RUN_TAG
from stock_pipeline.store.guard_state import LAST_GOOD_SNAPSHOT_SKUS, read_value

REHEARSAL_IO_MANAGER = "rehearsal_io_manager"


@op(
    out=Out(
        RehearsalPlanType, io_manager_key=REHEARSAL_IO_MANAGER, description="The full plan, every offer to change."
    ),
    description="Reads the warehouse, lists the account's offers, plans the writes a sync would send, and reports "
    "what each guard would say. Writes nothing and remembers nothing.",
)
def rehearse_account_sync(
    context: OpExecutionContext,
    stock_db: StockDatabase,
    allegro: AllegroApi,
    pipeline_db: PipelineDatabase,
    guards: GuardConfig,
) -> pd.DataFrame:
    account = context.partition_key
    with failures_as_sentences(account):
        snapshot = read_snapshot(stock_db)
        skus = int(snapshot.stock["sku"].nunique())
        snapshot_says = snapshot_verdict(
            skus, read_value(pipeline_db.engine(), LAST_GOOD_SNAPSHOT_SKUS), guards.limits()
        )
        listing = list_offers(allegro, pipeline_db, account, record_metrics=False)
        # The rates a real sync would plan at now, so the rehearsal shows its routes.
        rates = write_rates(allegro, context.instance)
        planned = plan_account(pipeline_db, account, snapshot.stock, listing.offer_map, allegro.batch_size, rates=rates)
        # A real sync's diff guard refuses a partial listing, and so does its rehearsal.
        diff_says = diff_verdict(planned.plan, active_offer_count(listing.offer_map), guards.limits())
    held = [
        f"{name}: {verdict.description}"
        for name, verdict in (("snapshot_guard", snapshot_says), ("diff_guard", diff_says))
        if not verdict.passed
    ]
    for line in held:
        context.log.warning(f"a real sync would be held: {line}. {override_hint(account)}")
    context.add_output_metadata(
        {
            **{f"snapshot_{k}": v for k, v in snapshot_metadata(snapshot).items()},
            **offers_metadata(listing.offer_map),
            **plan_metadata(planned, listing.offer_map),
            "api_calls": listing.api_calls,
            "snapshot_guard": snapshot_says.description,
            "diff_guard": diff_says.description,
            "would_be_held": bool(held),
            "held_by": MetadataValue.json(held),
        }
    )
    return planned.plan[PLAN_COLUMNS + ["batch"]].assign(
        would_be_held=bool(held),
        held_by=pd.Series(["; ".join(held) or None] * len(planned.plan), index=planned.plan.index, dtype="string"),
    )


@job(
    name="account_rehearsal",
    partitions_def=accounts_partitions,
    executor_def=in_process_executor,
    tags={DRY_RUN_TAG: "true"},
    description="Dry run of one account's sync: plans and shows the writes, runs the guards' verdicts, "
    "changes nothing (no writes, no materialisations, no guard baseline, alerts, metrics or audit).",
)
def account_rehearsal():
    rehearse_account_sync()
