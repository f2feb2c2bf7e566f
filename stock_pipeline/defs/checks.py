"""Guards as blocking asset checks: a failed guard holds this run's writes (the
downstream assets do not run), fails the run with the guard's own sentence and the way
to override it, and so alerts through the failure sensor. A deliberate run overrides
them with the tag `stock_pipeline/override_guards=true` (`stock-pipeline sync
--override-guards`); the writes of such a run say so in the audit.

A dry run does not come here: the rehearsal job (defs/rehearsal.py) asks the same
verdicts without moving any baseline.

The diff guard compares the offers a run would end or cut with the account's active
offers, so it needs every offer: with a partial offer map it fails (no override helps:
the writes would refuse the map too) with the error's sentence."""

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, AssetIn, asset_check

from stock_pipeline.core.contracts import OfferMap
from stock_pipeline.core.guards import Verdict, active_offer_count, diff_verdict, snapshot_verdict
from stock_pipeline.core.snapshot import distinct_skus
from stock_pipeline.defs.account_steps import failures_as_sentences, held_failure
from stock_pipeline.defs.assets import accounts_partitions, stock_diff, stock_snapshot
from stock_pipeline.defs.contract_types import OfferMapType
from stock_pipeline.defs.resources import GuardConfig, PipelineDatabase
from stock_pipeline.defs.tags import OVERRIDE_TAG, guards_overridden
from stock_pipeline.store.guard_state import LAST_GOOD_SNAPSHOT_SKUS, read_value, write_value


def _result(verdict: Verdict, overridden: bool) -> AssetCheckResult:
    description = verdict.description
    if overridden and not verdict.passed:
        description = f"OVERRIDDEN by tag {OVERRIDE_TAG}: {description.replace(': writes held', '')}"
    return AssetCheckResult(
        passed=verdict.passed or overridden,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={**verdict.metadata, "overridden": overridden},
    )


def _judge(check_name: str, verdict: Verdict, context: AssetCheckExecutionContext):
    overridden = guards_overridden(context.run.tags)
    yield _result(verdict, overridden)
    if not verdict.passed and not overridden:
        # The evaluation above is recorded first; the Failure gives the run page one sentence.
        raise held_failure(check_name, verdict, context.run.tags.get("dagster/partition"))


@asset_check(
    asset=stock_snapshot,
    blocking=True,
    description="Holds writes when the snapshot is empty or shrank by more than STOCK_GUARD_MAX_SNAPSHOT_SHRINK "
    "against the last snapshot that passed.",
)
def snapshot_guard(
    context: AssetCheckExecutionContext,
    stock_snapshot: pd.DataFrame,
    guards: GuardConfig,
    pipeline_db: PipelineDatabase,
):
    engine = pipeline_db.engine()
    skus = distinct_skus(stock_snapshot)
    verdict = snapshot_verdict(skus, read_value(engine, LAST_GOOD_SNAPSHOT_SKUS), guards.limits())
    if verdict.passed or guards_overridden(context.run.tags):
        write_value(engine, LAST_GOOD_SNAPSHOT_SKUS, skus)  # a deliberate override sets the new baseline
    yield from _judge("snapshot_guard", verdict, context)


@asset_check(
    asset=stock_diff,
    blocking=True,
    partitions_def=accounts_partitions,
    additional_ins={"allegro_offers": AssetIn("allegro_offers", dagster_type=OfferMapType)},
    description="Holds writes when one run would end or cut more than STOCK_GUARD_MAX_RISKY_SHARE of the "
    "account's active offers.",
)
def diff_guard(
    context: AssetCheckExecutionContext, stock_diff: pd.DataFrame, allegro_offers: OfferMap, guards: GuardConfig
):
    with failures_as_sentences(allegro_offers.account):
        active = active_offer_count(allegro_offers)
    yield from _judge("diff_guard", diff_verdict(stock_diff, active, guards.limits()), context)
