"""The guards, evaluated inside the step of the asset they guard (its `check_specs`, blocking):
a failed guard holds this run's writes (the downstream assets do not run), fails the run
with the guard's own sentence and the way to override it, and so alerts through the
failure sensor. Its evaluation is recorded first, on the asset's check, for the UI. A
deliberate run overrides them with the tag `stock_pipeline/override_guards=true`
(`stock-pipeline sync --override-guards`); the writes of such a run say so in the audit.

Inside the asset's step rather than as `@asset_check` steps of their own: a check step
of its own loads the asset's value back from storage and adds a step's events and hooks
to every run (two steps of six), which a CLI sync of many accounts pays for before its
first write. The guard sees the very value the step stored.

A dry run does not come here: the rehearsal job (defs/rehearsal.py) asks the same
verdicts without moving any baseline.

The diff guard compares the offers a run would end or cut with the account's active
offers, so it needs every offer: with a partial offer map it fails (no override helps:
the writes would refuse the map too) with the error's sentence."""

from typing import Iterator

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetExecutionContext

from stock_pipeline.core.contracts import OfferMap
from stock_pipeline.core.guards import Verdict, active_offer_count, diff_verdict, snapshot_verdict
from stock_pipeline.defs.account_steps import failures_as_sentences, held_failure
from stock_pipeline.defs.resources import GuardConfig, PipelineDatabase
from stock_pipeline.defs.tags import OVERRIDE_TAG, guards_overridden
from stock_pipeline.store.guard_state import LAST_GOOD_SNAPSHOT_SKUS, read_value, write_value

SNAPSHOT_GUARD = "snapshot_guard"
DIFF_GUARD = "diff_guard"
SNAPSHOT_GUARD_DESCRIPTION = (
    "Holds writes when the snapshot is empty or shrank by more than STOCK_GUARD_MAX_SNAPSHOT_SHRINK "
    "against the last snapshot that passed."
)
DIFF_GUARD_DESCRIPTION = (
    "Holds writes when one run would end or cut more than STOCK_GUARD_MAX_RISKY_SHARE of the account's active offers."
)


def _result(check_name: str, verdict: Verdict, overridden: bool) -> AssetCheckResult:
    description = verdict.description
    if overridden and not verdict.passed:
        description = f"OVERRIDDEN by tag {OVERRIDE_TAG}: {description.replace(': writes held', '')}"
    return AssetCheckResult(
        check_name=check_name,
        passed=verdict.passed or overridden,
        severity=AssetCheckSeverity.ERROR,
        description=description,
        metadata={**verdict.metadata, "overridden": overridden},
    )


def _judge(check_name: str, verdict: Verdict, context: AssetExecutionContext) -> Iterator[AssetCheckResult]:
    overridden = guards_overridden(context.run.tags)
    yield _result(check_name, verdict, overridden)
    if not verdict.passed and not overridden:
        # The evaluation above is recorded first; the Failure gives the run page one sentence.
        raise held_failure(check_name, verdict, context.run.tags.get("dagster/partition"))


def snapshot_guard(
    context: AssetExecutionContext, skus: int, guards: GuardConfig, pipeline_db: PipelineDatabase
) -> Iterator[AssetCheckResult]:
    """The verdict on a snapshot of `skus` distinct SKUs, against the last one that passed."""
    engine = pipeline_db.engine()
    verdict = snapshot_verdict(skus, read_value(engine, LAST_GOOD_SNAPSHOT_SKUS), guards.limits())
    if verdict.passed or guards_overridden(context.run.tags):
        write_value(engine, LAST_GOOD_SNAPSHOT_SKUS, skus)  # a deliberate override sets the new baseline
    yield from _judge(SNAPSHOT_GUARD, verdict, context)


def diff_guard(
    context: AssetExecutionContext, plan: pd.DataFrame, offer_map: OfferMap, guards: GuardConfig
) -> Iterator[AssetCheckResult]:
    with failures_as_sentences(offer_map.account):
        active = active_offer_count(offer_map)
    yield from _judge(DIFF_GUARD, diff_verdict(plan, active, guards.limits()), context)
