"""A CLI sync of several accounts runs them at once (ALLEGRO_SYNC_PARALLEL_ACCOUNTS), in one
process or spread over several (ALLEGRO_SYNC_PROCESSES), on the embedded SQLite instance, and
every account's figures and offers come out right, in the order the accounts were given."""

from __future__ import annotations

import pytest
from dagster import DagsterEventType, DagsterInstance, DagsterRunStatus, RunsFilter

from stock_pipeline.cli import sync_runner
from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.defs.tags import ACCOUNT_TAG
from stock_pipeline_tests.helpers import assert_every_offer_right, register_account, run_cli, seed, write_stock

ACCOUNTS = ("shop-c", "shop-a", "shop-b")  # not in alphabetical order: the summary keeps this order


def summary_rows(stdout: str) -> dict[str, list[str]]:
    return {
        line.split()[0]: line.split()
        for line in stdout.splitlines()
        if line.split()[:1] and line.split()[0] in ACCOUNTS
    }


@pytest.mark.parametrize("processes", [1, 2])
def test_a_sync_of_three_accounts_runs_them_at_once_with_the_right_figures(settings, simulator, monkeypatch, processes):
    monkeypatch.setenv("ALLEGRO_SYNC_PROCESSES", str(processes))
    warehouse = {f"S{i:03d}": 1 + i % 5 for i in range(300)}
    write_stock(settings.stock_database_url, list(warehouse.items()))
    for number, account in enumerate(ACCOUNTS):
        register_account(settings, simulator, account)
        # 1 200 offers each (two listing pages); every third one needs a new stock value.
        seed(
            simulator,
            account,
            [(f"S{i % 300:03d}", warehouse[f"S{i % 300:03d}"] + (i % 3 == number), "ACTIVE") for i in range(1200)],
        )
    offers_of = {account: simulator.offers(account) for account in ACCOUNTS}
    before = {o["id"]: o for offers in offers_of.values() for o in offers}

    result = run_cli("sync", *(arg for account in ACCOUNTS for arg in ("--account", account)))

    assert result.returncode == 0, result.stdout + result.stderr
    rows = summary_rows(result.stdout)
    assert list(rows) == list(ACCOUNTS), result.stdout
    for account in ACCOUNTS:
        changed = sum(1 for o in offers_of[account] if o["stock"] != warehouse[o["sku"]])
        assert changed == 400
        # account, result, offers, changed, written, failed, pending, …
        assert rows[account][1:7] == ["success", "1200", str(changed), str(changed), "0", "0"], rows[account]
        assert_every_offer_right(simulator, account, warehouse, before)

    # The three runs were under way at the same time: each started before any ended.
    instance = DagsterInstance.from_config(settings.dagster_home)
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert sorted(r.dagster_run.tags[ACCOUNT_TAG] for r in records) == sorted(ACCOUNTS)
    assert max(r.start_time for r in records) < min(r.end_time for r in records)
    # Each run's events say which process ran it: one for all, or the accounts shared over two.
    pids = {r.dagster_run.run_id: _pids(instance, r.dagster_run.run_id) for r in records}
    assert all(len(p) == 1 for p in pids.values()), pids
    assert len(set().union(*pids.values())) == processes, pids


def _pids(instance: DagsterInstance, run_id: str) -> set[int]:
    return {e.dagster_event.pid for e in instance.all_logs(run_id) if e.dagster_event and e.dagster_event.pid}


def test_with_one_planning_place_the_accounts_plan_one_after_another_and_all_sync(settings, simulator, monkeypatch):
    """The CLI's pacer (defs/run_pacing.py): every run reads the warehouse at once, then an
    account lists its offers only once the account before it has started its writes."""
    monkeypatch.setattr(sync_runner, "planning_places", lambda accounts: 1)
    warehouse = {f"S{i:03d}": 2 + i % 5 for i in range(300)}  # every offer restocked (no guard holds it)
    write_stock(settings.stock_database_url, list(warehouse.items()))
    for account in ACCOUNTS:
        register_account(settings, simulator, account)
        seed(simulator, account, [(f"S{i:03d}", 1, "ACTIVE") for i in range(300)])
    before = {o["id"]: o for account in ACCOUNTS for o in simulator.offers(account)}
    simulator.reset_requests()

    summaries = sync_accounts(settings, list(ACCOUNTS))

    assert [(s.account, s.result, s.written) for s in summaries] == [(a, "success", 300) for a in ACCOUNTS]
    for account in ACCOUNTS:
        assert_every_offer_right(simulator, account, warehouse, before)
    calls = [r for r in simulator.requests if r.path.startswith("/sale/")]
    listed = {a: min(r.started_at for r in calls if r.login == a and r.path == "/sale/offers") for a in ACCOUNTS}
    instance = DagsterInstance.from_config(settings.dagster_home)
    writes_started = {s.account: _step_start(instance, s.run_id, "stock_updates") for s in summaries}
    order = sorted(ACCOUNTS, key=listed.get)
    for earlier, later in zip(order, order[1:]):
        assert writes_started[earlier] < listed[later], (earlier, later)
    # Every run was under way before the first of them listed: they read the warehouse together.
    records = instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.SUCCESS]))
    assert max(r.start_time for r in records) < min(listed.values())


def _step_start(instance: DagsterInstance, run_id: str, step: str) -> float:
    [record] = [r for r in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START) if r.step_key == step]
    return record.timestamp


def test_a_sync_on_a_postgres_instance_keeps_its_connections(postgres_dagster_home, settings, simulator):
    """Dagster's PostgreSQL storages open a connection per statement by default: a run's ~80
    event records would be ~80 connections, each a backend PostgreSQL forks. The CLI's sync
    keeps a pool instead."""
    import os

    import sqlalchemy as sa

    for account in ("shop-a", "shop-b"):
        register_account(settings, simulator, account)
        seed(simulator, account, [(f"P{i:02d}", 5, "ACTIVE") for i in range(20)])
    write_stock(settings.stock_database_url, [(f"P{i:02d}", 7) for i in range(20)])
    database = sa.engine.make_url(os.environ["DAGSTER_POSTGRES_URL"]).database
    admin = sa.create_engine(os.environ["DAGSTER_POSTGRES_URL"])

    def sessions() -> int:
        with admin.connect() as conn:
            return conn.execute(
                sa.text("SELECT sessions FROM pg_stat_database WHERE datname = :d"), {"d": database}
            ).scalar_one()

    before = sessions()
    summaries = sync_accounts(settings, ["shop-a", "shop-b"])
    opened = sessions() - before
    admin.dispose()

    assert all(s.success for s in summaries)
    with DagsterInstance.get() as instance:
        events = sum(len(instance.all_logs(s.run_id)) for s in summaries)  # what each run recorded
    assert events > 100
    # Measured: 460 connections without the pool, ~80 with it (its one kept connection per
    # storage, and the runs' concurrent statements beyond it).
    assert opened < 150, f"{opened} connections for {events} event records"
