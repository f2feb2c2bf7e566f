"""Runs the account job through Dagster from outside the daemon (the CLI, the demo):
one in-process run per account, recorded in the instance at DAGSTER_HOME, so the
UI shows CLI syncs beside scheduled ones."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance, Definitions, colored_console_logger, logger

from stock_pipeline.defs.assets import accounts_partitions
from stock_pipeline.defs.automation import account_sync_job, step_failure_message
from stock_pipeline.defs.tags import ACCOUNT_TAG, DRY_RUN_TAG, OVERRIDE_TAG
from stock_pipeline.run_log import FORWARDED
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.schema import engine_for


@dataclass
class AccountSummary:
    account: str
    success: bool
    run_id: str | None = None
    offers: int = 0
    changed: int = 0
    written: int = 0
    failed: int = 0
    pending: int = 0
    api_calls: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    plan: pd.DataFrame | None = None  # the planned writes (kept for --dry-run output)


def ensure_dagster_home() -> str:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        home = str(Path.home() / ".stock_pipeline" / "dagster_home")
        os.environ["DAGSTER_HOME"] = home
    Path(home).mkdir(parents=True, exist_ok=True)
    return home


def _metadata(result, node: str) -> dict:
    values: dict = {}
    for event in result.asset_materializations_for_node(node):
        values.update({k: getattr(v, "value", v) for k, v in event.metadata.items()})
    return values


def _failure(result) -> str | None:
    held = [f"{e.check_name}: {e.description}" for e in result.get_asset_check_evaluations() if not e.passed]
    if held:  # a guard's own words say more than "blocking check failed"
        return "; ".join(held)
    for event in result.get_step_failure_events():
        return step_failure_message(event)
    return None if result.success else "run failed"


@logger(colored_console_logger.config_schema,
        description="Dagster's console logger without the lines stock_pipeline forwards to the run's event log: "
                    "the terminal already shows them on stderr.")
def terminal_console_logger(init_context):
    console = colored_console_logger.logger_fn(init_context)
    console.addFilter(lambda record: not getattr(record, FORWARDED, False))
    return console


def select_accounts(database_url: str, requested: list[str] | None) -> list[str]:
    store = AccountStore(engine_for(database_url))
    if not requested:
        return [a.name for a in store.list(only_active=True)]
    known = {a.name for a in store.list()}
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ValueError(f"unknown account(s): {', '.join(unknown)}; registered: {', '.join(known) or 'none'} "
                         "(add one with: stock-pipeline accounts add NAME)")
    return list(dict.fromkeys(requested))


def sync_accounts(defs: Definitions, accounts: list[str], *, dry_run: bool = False, override_guards: bool = False,
                  instance: DagsterInstance | None = None) -> list[AccountSummary]:
    ensure_dagster_home()
    instance = instance or DagsterInstance.get()
    existing = set(instance.get_dynamic_partitions(accounts_partitions.name))
    missing = [a for a in accounts if a not in existing]
    if missing:
        instance.add_dynamic_partitions(accounts_partitions.name, missing)
    job = defs.resolve_job_def(account_sync_job.name).with_logger_defs({"console": terminal_console_logger})
    summaries = []
    for account in accounts:
        started = time.monotonic()
        result = job.execute_in_process(
            partition_key=account, instance=instance, raise_on_error=False,
            run_config={"ops": {"stock_updates": {"config": {"dry_run": dry_run}}},
                        # The event log keeps every event; the terminal gets our progress lines instead.
                        "loggers": {"console": {"config": {"log_level": "WARNING"}}}},
            tags={ACCOUNT_TAG: account, DRY_RUN_TAG: str(dry_run).lower(),
                  **({OVERRIDE_TAG: "true"} if override_guards else {})},
        )
        offers = _metadata(result, "allegro_offers")
        diff = _metadata(result, "stock_diff")
        updates = _metadata(result, "stock_updates")
        summaries.append(AccountSummary(
            account=account, success=result.success, run_id=result.run_id,
            offers=int(offers.get("offers", 0)), changed=int(diff.get("changed", 0)),
            written=int(updates.get("written", 0)), failed=int(updates.get("failed", 0)),
            pending=int(updates.get("pending", 0)),
            api_calls=int(offers.get("api_calls", 0)) + int(updates.get("api_calls", 0)),
            duration_seconds=round(time.monotonic() - started, 2), error=_failure(result),
            plan=result.output_for_node("stock_diff") if dry_run and result.is_node_success("stock_diff") else None,
        ))
    return summaries
