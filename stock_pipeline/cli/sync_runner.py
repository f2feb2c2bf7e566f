"""Runs the account job through Dagster from outside the daemon (the CLI, the demo):
one in-process run per account, recorded in the instance at the settings' DAGSTER_HOME,
so the UI shows CLI syncs beside scheduled ones. A dry run runs the rehearsal job instead,
which materialises and remembers nothing.

Accounts run at once, ALLEGRO_SYNC_PARALLEL_ACCOUNTS at a time, each run in a thread of
its own: a run mostly waits for Allegro, and every call of every run still draws from
the one shared rate limiter. Each thread starts with a fresh context, so the run-log
bridge (a ContextVar) of one run never sees another's lines. Summaries come back in the
order the accounts were given, whatever order the runs end in.

Every run reads the warehouse at the same moment (they share the read), then only a few
of them at a time (planning_places) list their offers and plan; each hands its place on
as its writes start (defs/run_pacing.py). Runs that all planned at once would share the
GIL evenly and all reach their writes together, late, with the rate budget idle till then.

A run's own work (Dagster's steps and event-log writes, Parquet, the diff) holds the GIL,
so threads alone use one core. ALLEGRO_SYNC_PROCESSES > 1 (0: one per core) spreads the
accounts over that many worker processes, each running its share in threads as above. Off
by default: a spawned worker first spends seconds of CPU importing Dagster and building the
definitions, and on a 2-core machine shared with other work that cost more than the
second core gave back (benchmarks/throughput.py: 58-60 s against 49-52 s in one process).
Workers are spawned, not forked: this process has database pools, a Dagster instance and
threads that a fork would copy half-held. A caller that hands in its own instance or
definitions (tests, the UI's) runs everything in its own process.

The figures returned are read back from the audit and the run's event log
(defs/run_outcome.py), the same records the hooks, the metrics and the UI use."""

from __future__ import annotations

import dataclasses
import logging
import multiprocessing
import os
import shutil
import time
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
from dagster import DagsterEventType, DagsterInstance, Definitions, colored_console_logger, logger
from dagster._core.instance.ref import InstanceRef
from dagster._core.storage.noop_compute_log_manager import NoOpComputeLogManager
from dagster._serdes import ConfigurableClassData

from stock_pipeline.cli.sync_report import ProgressPrinter
from stock_pipeline.definitions import build_definitions
from stock_pipeline.defs.account_steps import PROBLEM_CONFIGURATION
from stock_pipeline.defs.assets import accounts_partitions
from stock_pipeline.defs.automation import account_sync_job
from stock_pipeline.defs.instance_connections import keep_connections
from stock_pipeline.defs.rehearsal import account_rehearsal, rehearse_account_sync
from stock_pipeline.defs.run_log import FORWARDED
from stock_pipeline.defs.run_outcome import read_run_outcome, step_failures, step_metadata
from stock_pipeline.defs.run_pacing import Pacer
from stock_pipeline.defs.tags import ACCOUNT_TAG, OVERRIDE_TAG
from stock_pipeline.foundation.errors import AccountPausedError
from stock_pipeline.foundation.logs import configure_logging, logging_configuration, redact_settings
from stock_pipeline.foundation.settings import Settings
from stock_pipeline.observability import progress
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.schema import ACCOUNT_PAUSED
from stock_pipeline.store.writes_log import WritesLog


@dataclass
class AccountSummary:
    account: str
    success: bool
    run_id: str | None = None
    result: str = "success"  # success / failed / held / rehearsed
    offers: int = 0
    changed: int = 0
    written: int = 0
    failed: int = 0
    pending: int = 0
    api_calls: int = 0
    duration_seconds: float = 0.0
    error: str | None = None
    problem: str | None = None  # the kind of problem that ended the run (configuration → exit 2)
    notes: tuple[str, ...] = ()  # things the seller should know even when the run succeeded
    plan: pd.DataFrame | None = None  # the full plan of a dry run


class _HideMissingInstanceConfig(logging.Filter):
    """Dagster warns on every start when DAGSTER_HOME has no dagster.yaml; an empty
    configuration is a valid choice (Dagster's defaults), so the CLI keeps quiet about it."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "No dagster instance configuration file" not in record.getMessage()


# One account's PATCHes are paced at its own ~42/s (2 500/min): it takes four accounts
# writing at once to spend the client_id's 150 calls/s.
ACCOUNTS_TO_SPEND_THE_BUDGET = 4


def planning_places(accounts: int) -> int:
    """Runs of a sync of `accounts` that list and plan at once (defs/run_pacing.py). The runs
    that plan together reach their writes together, so they come in waves: as few as can
    each have ACCOUNTS_TO_SPEND_THE_BUDGET accounts or more (10 accounts: two of 5, not 4,
    4 and 2, whose last two would write alone at half the budget)."""
    waves = max(1, accounts // ACCOUNTS_TO_SPEND_THE_BUDGET)
    return -(-accounts // waves)


# The CLI's and the demo's own instance: SQLite inside DAGSTER_HOME, runs started in-process.
EMBEDDED_INSTANCE_CONFIG = Path(__file__).with_name("dagster_embedded.yaml")


def ensure_dagster_home(settings: Settings) -> str:
    """The instance folder of `settings` (DAGSTER_HOME, or the CLI's default), ready to open."""
    home = settings.dagster_home
    Path(home).mkdir(parents=True, exist_ok=True)
    config = Path(home) / "dagster.yaml"
    if not config.exists():  # the embedded instance of the demo: SQLite inside DAGSTER_HOME, runs in-process
        shutil.copy(EMBEDDED_INSTANCE_CONFIG, config)
    dagster_logger = logging.getLogger("dagster")
    if not any(isinstance(f, _HideMissingInstanceConfig) for f in dagster_logger.filters):
        dagster_logger.addFilter(_HideMissingInstanceConfig())
    return home


@logger(
    colored_console_logger.config_schema,
    description="Dagster's console logger without the lines stock_pipeline forwards to the run's event log: "
    "the terminal already shows them on stderr.",
)
def terminal_console_logger(init_context):
    console = colored_console_logger.logger_fn(init_context)
    console.addFilter(lambda record: not getattr(record, FORWARDED, False))
    return console


def select_accounts(settings: Settings, requested: list[str] | None) -> list[str]:
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    if not requested:
        return [a.name for a in store.list(only_active=True)]
    known = {a.name: a.status for a in store.list()}
    unknown = [name for name in requested if name not in known]
    if unknown:
        raise ValueError(
            f"unknown account(s): {', '.join(unknown)}; registered: {', '.join(known) or 'none'} "
            "(add one with: stock-pipeline accounts add NAME)"
        )
    # Refused here rather than left to the run: a paused account is the operator's decision, not a failure.
    paused = [name for name in dict.fromkeys(requested) if known[name] == ACCOUNT_PAUSED]
    if paused:
        raise ValueError("; ".join(str(AccountPausedError(name)) for name in paused))
    return list(dict.fromkeys(requested))


def _run_config(verbose: bool) -> dict:
    # The event log keeps every event; the terminal gets the progress lines and the summary,
    # not Dagster's own ERROR records with their stack traces (unless --verbose).
    return {"loggers": {"console": {"config": {"log_level": "INFO" if verbose else "CRITICAL"}}}}


def _notes(metadata: dict[str, dict], dry_run: bool = False) -> tuple[str, ...]:
    notes = []
    bad = int(metadata.get("stock_snapshot", {}).get("bad_rows", 0) or 0)
    if bad:
        notes.append(
            f"{bad} warehouse row(s) excluded as bad (their SKUs were left alone); "
            "see the run's stock_snapshot metadata"
        )
    held = int(metadata.get("stock_diff", {}).get("held_for_sales", 0) or 0)
    if held:
        notes.append(
            f"{held} offer(s) {'would not be' if dry_run else 'not'} raised: sold on Allegro, not yet booked in the "
            "warehouse" + ("" if dry_run else " (stock-pipeline history --status held)")
        )
    return tuple(notes)


def _execute(job, account: str, instance: DagsterInstance, verbose: bool, tags: dict[str, str] | None = None):
    """One account's run of `job` in this process; its failures are in the result, not raised."""
    return job.execute_in_process(
        partition_key=account,
        instance=instance,
        raise_on_error=False,
        run_config=_run_config(verbose),
        tags={ACCOUNT_TAG: account, **(tags or {})},
    )


def _sync_one(
    job,
    account: str,
    instance: DagsterInstance,
    override_guards: bool,
    verbose: bool,
    writes_log: Callable[[], WritesLog],
    pacer: Pacer,
) -> AccountSummary:
    started = time.monotonic()
    with pacer.ticket():
        result = _execute(job, account, instance, verbose, {OVERRIDE_TAG: "true"} if override_guards else {})
    metadata = step_metadata(instance, result.run_id)
    outcome = read_run_outcome(instance, result.run_id, account, writes_log, success=result.success, metadata=metadata)
    return AccountSummary(
        account=account,
        success=result.success,
        run_id=result.run_id,
        result=outcome.result,
        offers=outcome.offers or 0,
        changed=outcome.changed or 0,
        written=outcome.written,
        failed=outcome.failed,
        pending=outcome.pending,
        api_calls=outcome.api_calls,
        duration_seconds=round(time.monotonic() - started, 2),
        error=outcome.error,
        problem=outcome.problem,
        notes=_notes(metadata),
    )


def _output_metadata(instance: DagsterInstance, run_id: str) -> dict:
    values: dict = {}
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_OUTPUT):
        values.update({k: getattr(v, "value", v) for k, v in record.dagster_event.event_specific_data.metadata.items()})
    return values


def _rehearse_one(job, account: str, instance: DagsterInstance, verbose: bool) -> AccountSummary:
    started = time.monotonic()
    result = _execute(job, account, instance, verbose)
    failures = step_failures(instance, result.run_id)
    error, problem = failures[0] if failures else (None, None)
    meta = _output_metadata(instance, result.run_id)
    plan = result.output_for_node(rehearse_account_sync.name) if result.success else None
    held = list(meta.get("held_by") or [])
    return AccountSummary(
        account=account,
        success=result.success,
        run_id=result.run_id,
        result="would be held" if held else ("rehearsed" if result.success else "failed"),
        offers=int(meta.get("offers", 0)),
        changed=int(meta.get("changed", 0)),
        api_calls=int(meta.get("api_calls", 0)),
        duration_seconds=round(time.monotonic() - started, 2),
        error=error or ("; ".join(held) if held else None) or (None if result.success else "the dry run failed"),
        problem=problem,
        plan=plan,
        notes=_notes({"stock_diff": meta}, dry_run=True),
    )


def sync_accounts(
    settings: Settings,
    accounts: list[str],
    *,
    dry_run: bool = False,
    override_guards: bool = False,
    verbose: bool = False,
    instance: DagsterInstance | None = None,
    defs: Definitions | None = None,
) -> list[AccountSummary]:
    home = ensure_dagster_home(settings)
    processes = _process_count(settings, accounts) if instance is None and defs is None else 1
    if processes > 1:
        _add_partitions(DagsterInstance.from_config(home), accounts)  # once, before the workers could race on it
        return _sync_in_processes(settings, accounts, processes, dry_run, override_guards, verbose)
    defs = defs or build_definitions(settings)
    parallel = settings.allegro_sync_parallel_accounts > 1 and len(accounts) > 1
    if instance is None:
        instance = _instance_for_parallel_runs(home) if parallel else DagsterInstance.from_config(home)
        keep_connections(instance)
    _add_partitions(instance, accounts)
    if dry_run:
        rehearsal = defs.resolve_job_def(account_rehearsal.name).with_logger_defs({"console": terminal_console_logger})
        return _each_account(
            settings, instance, accounts, lambda account: _rehearse_one(rehearsal, account, instance, verbose)
        )
    job = defs.resolve_job_def(account_sync_job.name).with_logger_defs({"console": terminal_console_logger})

    def writes_log() -> WritesLog:  # opened only to read the outcome: a run may fail for want of this very database
        return WritesLog(engine_for(settings.stock_pipeline_database_url))

    pacer = Pacer(planning_places(len(accounts)))
    return _each_account(
        settings,
        instance,
        accounts,
        lambda account: _sync_one(job, account, instance, override_guards, verbose, writes_log, pacer),
    )


def _add_partitions(instance: DagsterInstance, accounts: list[str]) -> None:
    existing = set(instance.get_dynamic_partitions(accounts_partitions.name))
    missing = [a for a in accounts if a not in existing]
    if missing:
        instance.add_dynamic_partitions(accounts_partitions.name, missing)


def _process_count(settings: Settings, accounts: list[str]) -> int:
    """How many processes a sync of `accounts` spreads them over: never more than the accounts
    or the runs allowed at once; ALLEGRO_SYNC_PROCESSES=0 means one per core this process may use."""
    if len(accounts) <= 1 or settings.allegro_sync_parallel_accounts <= 1:
        return 1
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    wanted = settings.allegro_sync_processes or cores
    return max(1, min(wanted, len(accounts), settings.allegro_sync_parallel_accounts))


def _sync_in_processes(
    settings: Settings, accounts: list[str], processes: int, dry_run: bool, override_guards: bool, verbose: bool
) -> list[AccountSummary]:
    """`accounts` shared out over `processes` spawned workers, each syncing its share in threads
    (ALLEGRO_SYNC_PARALLEL_ACCOUNTS is split between them); the summaries in the given order."""
    shares = [accounts[i::processes] for i in range(processes)]  # dealt round: no worker gets only the big ones
    runs_per_process = -(-settings.allegro_sync_parallel_accounts // processes)
    share_settings = dataclasses.replace(
        settings, allegro_sync_parallel_accounts=runs_per_process, allegro_sync_processes=1
    )
    summaries: dict[str, AccountSummary] = {}
    pool = ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(settings, logging_configuration(), progress.has_listeners()),
    )
    try:
        futures = [
            pool.submit(
                sync_accounts, share_settings, share, dry_run=dry_run, override_guards=override_guards, verbose=verbose
            )
            for share in shares
        ]
        for share, future in zip(shares, futures):
            summaries.update((s.account, s) for s in _share_summaries(share, future))
    except BaseException:  # Ctrl-C reaches the workers too (one process group); none is left running
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return [summaries[account] for account in accounts]


def _start_worker(settings: Settings, logging_config: dict | None, print_progress: bool) -> None:
    """A spawned worker starts with nothing of its parent's set-up: the same logging (a quiet
    terminal stays quiet), the same secrets redacted, its own progress lines on the stderr it shares."""
    if logging_config is not None:
        configure_logging(**logging_config)
    redact_settings(settings)
    if print_progress:
        progress.add_listener(ProgressPrinter())


def _share_summaries(share: list[str], future: Future) -> list[AccountSummary]:
    try:
        return future.result()
    except BrokenProcessPool as exc:  # a worker killed (OOM, a signal): its accounts failed, the others stand
        error = f"the process syncing this account ended unexpectedly ({exc}); see the run's event log"
        return [AccountSummary(account=account, success=False, result="failed", error=error) for account in share]


def _instance_for_parallel_runs(home: str) -> DagsterInstance:
    """The instance at `home`, changed (for this process only) so that in-process runs may
    run side by side in threads.

    - No compute-log capture: it redirects the process's file descriptors 1 and 2 to the
      run's files for the whole run, so runs overlapping in one process would catch each
      other's output and leave the terminal pointing at a finished run's file. The
      pipeline's lines still reach each run's event log (defs/run_log.py) and the terminal.
    - No python_logs reset: Dagster starts every run by passing the instance's handler
      config to logging.config.dictConfig, even an empty one. dictConfig takes the logging
      module's lock, then each handler's; a run in another thread emitting an event holds a
      handler's lock and wants the module's (getLogger): the threads deadlock. With no
      handlers configured the call yields none, so this instance answers that without it.
    """
    ref = InstanceRef.from_dir(home)
    instance = DagsterInstance.from_ref(
        ref._replace(
            compute_logs_data=ConfigurableClassData(NoOpComputeLogManager.__module__, "NoOpComputeLogManager", "{}\n")
        )
    )
    if not instance.get_python_log_dagster_handler_config():
        instance.get_yaml_python_handlers = lambda: []  # this object only
    return instance


def _parallel_runs_allowed(instance: DagsterInstance) -> bool:
    """Whether `instance` was made safe for runs in threads (_instance_for_parallel_runs);
    an instance handed in by the caller runs its accounts one at a time."""
    return isinstance(instance.compute_log_manager, NoOpComputeLogManager) and "get_yaml_python_handlers" in vars(
        instance
    )


def _each_account(
    settings: Settings, instance: DagsterInstance, accounts: list[str], run_one: Callable[[str], AccountSummary]
) -> list[AccountSummary]:
    """`run_one` of every account, ALLEGRO_SYNC_PARALLEL_ACCOUNTS at once; in the given order."""
    if len(accounts) <= 1 or settings.allegro_sync_parallel_accounts == 1 or not _parallel_runs_allowed(instance):
        return [run_one(account) for account in accounts]
    workers = min(settings.allegro_sync_parallel_accounts, len(accounts))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="account-run") as pool:
        return list(pool.map(run_one, accounts))


def any_configuration_problem(summaries: list[AccountSummary]) -> bool:
    return any(s.problem == PROBLEM_CONFIGURATION for s in summaries)
