"""Operating accounts: pause, resume, remove, `accounts list`, and what the partitions
sensor and the schedule do with accounts that are not active. Real CLI, Postgres, simulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import pandas as pd
import sqlalchemy as sa
from dagster import DagsterInstance, SensorResult, build_schedule_context, build_sensor_context

from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.defs.automation import account_partitions_sensor, build_schedule
from stock_pipeline.defs.resources import PipelineDatabase
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.ended_offers import EndedOffers, ended_offers
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.policies import PolicyStore, account_policies
from stock_pipeline.store.schema import accounts, writes
from stock_pipeline.store.sync_status import SyncStatusStore
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import register_account, run_cli, write_stock

PAUSED_SENTENCE = "account 'shop-a' is paused; resume it with: stock-pipeline accounts resume shop-a"


def run_cli_with_input(text: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stock_pipeline.cli", *args],
        input=text,
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=120,
    )


def store(settings) -> AccountStore:
    return AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())


def sale_calls(simulator, login: str) -> list:
    return [r for r in simulator.requests if r.login == login and r.path.startswith("/sale/")]


def seed_two_shops(settings, simulator) -> None:
    for name, prefix in (("shop-a", "A"), ("shop-b", "B")):
        register_account(settings, simulator, name)
        simulator.add_offers(name, [{"sku": f"{prefix}{i}", "stock": 1} for i in range(3)])
    write_stock(settings.stock_database_url, [(f"{p}{i}", 7) for p in "AB" for i in range(3)])


def stocks(simulator, account: str) -> list[int]:
    return sorted(o["stock"] for o in simulator.offers(account))


def test_a_paused_account_is_skipped_refused_by_name_and_synced_again_once_resumed(settings, simulator):
    seed_two_shops(settings, simulator)
    paused = run_cli("accounts", "pause", "shop-a")
    assert paused.returncode == 0, paused.stderr
    assert store(settings).get("shop-a").status == "paused"
    simulator.reset_requests()

    every = run_cli("sync")
    assert every.returncode == 0, every.stdout + every.stderr
    assert "syncing 1 account(s)" in every.stderr and "shop-a" not in every.stdout
    assert stocks(simulator, "shop-b") == [7, 7, 7] and stocks(simulator, "shop-a") == [1, 1, 1]
    assert simulator.requests and not [r for r in simulator.requests if r.login == "shop-a"]

    one = run_cli("sync", "--account", "shop-a")
    assert one.returncode == 2
    assert PAUSED_SENTENCE in one.stderr
    assert not [r for r in simulator.requests if r.login == "shop-a"]

    resumed = run_cli("accounts", "resume", "shop-a")
    assert resumed.returncode == 0 and "shop-a is active" in resumed.stdout
    again = run_cli("sync", "--account", "shop-a")
    assert again.returncode == 0, again.stdout + again.stderr
    assert stocks(simulator, "shop-a") == [7, 7, 7]


def test_a_run_of_a_paused_account_launched_anyway_stops_before_any_allegro_call(settings, simulator):
    """As a run launched from the UI or a backfill would: straight into the job, past `sync`'s check."""
    seed_two_shops(settings, simulator)
    store(settings).pause("shop-a")
    simulator.reset_requests()

    [summary] = sync_accounts(settings, ["shop-a"])

    assert not summary.success
    assert PAUSED_SENTENCE in summary.error
    assert simulator.requests == []  # neither the API nor a token refresh


def test_resuming_an_account_paused_while_it_needed_reauthorisation_keeps_it_needing_it(settings, simulator):
    register_account(settings, simulator, "shop-a")
    store(settings).set_status("shop-a", "needs_reauth", "refresh token rejected by Allegro (invalid_grant)")
    assert run_cli("accounts", "pause", "shop-a").returncode == 0
    resumed = run_cli("accounts", "resume", "shop-a")
    assert resumed.returncode == 0
    assert "stock-pipeline accounts add shop-a" in resumed.stdout
    assert store(settings).get("shop-a").status == "needs_reauth"


def test_authorising_a_paused_account_again_keeps_it_paused(settings, simulator):
    register_account(settings, simulator, "shop-a")
    store(settings).pause("shop-a")
    result = run_cli("accounts", "add", "shop-a", "--refresh-token", simulator.issue_refresh_token("shop-a"))
    assert result.returncode == 0, result.stderr
    assert "still paused; resume it with: stock-pipeline accounts resume shop-a" in result.stdout
    assert store(settings).get("shop-a").status == "paused"
    assert store(settings).resume("shop-a") == "active"


def test_sync_with_no_active_account_says_why_for_each(settings, simulator):
    none = run_cli("sync")
    assert none.returncode == 2
    assert "no account to sync; add one with: stock-pipeline accounts add NAME" in none.stderr

    register_account(settings, simulator, "shop-a")
    register_account(settings, simulator, "shop-b")
    store(settings).set_status("shop-a", "needs_reauth", "refresh token rejected")
    store(settings).pause("shop-b")
    result = run_cli("sync")
    assert result.returncode == 2
    assert (
        "no account to sync: shop-a needs re-authorisation (run: stock-pipeline accounts add shop-a), "
        "shop-b is paused (stock-pipeline accounts resume shop-b)"
    ) in result.stderr
    assert "add one" not in result.stderr


def _planned(run_id: str, offers: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "offer_id": offers,
            "sku": ["S"] * len(offers),
            "before": [1] * len(offers),
            "after": [2] * len(offers),
            "action": ["set"] * len(offers),
            "method": ["patch"] * len(offers),
        }
    )


def test_remove_asks_first_then_deletes_tokens_and_settings_but_keeps_the_audit(settings, simulator):
    register_account(settings, simulator, "shop-a")
    register_account(settings, simulator, "shop-b")
    engine = engine_for(settings.stock_pipeline_database_url)
    for name in ("shop-a", "shop-b"):
        WritesLog(engine).record_planned(f"run-{name}", name, _planned(f"run-{name}", ["1", "2"]))
        PolicyStore(engine).set(name, StockPolicy(reserve_units=2))
        EndedOffers(engine).record(name, ["9"], f"run-{name}")
        SyncStatusStore(engine).record(name, run_id=f"run-{name}", result="success", offers=2)

    declined = run_cli_with_input("n\n", "accounts", "remove", "shop-a")
    assert declined.returncode == 2 and "not removed" in declined.stderr
    assert "writes log (audit) stay" in declined.stdout
    assert store(settings).get("shop-a") is not None

    removed = run_cli("accounts", "remove", "shop-a", "--yes")
    assert removed.returncode == 0, removed.stderr
    assert "2 audit row(s) kept" in removed.stdout

    def rows(table, column, name="shop-a"):
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(table).where(column == name)).scalar()

    assert rows(accounts, accounts.c.name) == 0  # the row, so its tokens too
    assert rows(account_policies, account_policies.c.account) == 0
    assert rows(ended_offers, ended_offers.c.account) == 0
    assert SyncStatusStore(engine).get("shop-a") is None
    assert rows(writes, writes.c.account) == 2  # the audit stays
    # The other account is untouched.
    assert store(settings).get("shop-b") is not None and rows(ended_offers, ended_offers.c.account, "shop-b") == 1
    assert PolicyStore(engine).get("shop-b").reserve_units == 2

    confirmed = run_cli_with_input("y\n", "accounts", "remove", "shop-b")
    assert confirmed.returncode == 0 and store(settings).get("shop-b") is None
    assert run_cli("accounts", "remove", "shop-b", "--yes").returncode == 2  # unknown now


def test_partitions_sensor_keeps_every_registered_account_and_the_schedule_runs_only_active_ones(settings, simulator):
    for name in ("shop-a", "shop-b", "shop-c", "shop-gone"):
        register_account(settings, simulator, name)
    # The instance at DAGSTER_HOME (pipeline_env), as the daemon's. Not `with instance`: Dagster's
    # __exit__ leaves its state storage set in a context variable after disposing the instance.
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions("accounts", ["shop-a", "shop-b", "shop-gone"])
    store(settings).pause("shop-a")
    store(settings).set_status("shop-b", "needs_reauth", "refresh token rejected")
    store(settings).remove("shop-gone")
    pipeline_db = PipelineDatabase(settings=settings)

    with build_sensor_context(instance=instance, resources={"pipeline_db": pipeline_db}) as context:
        result = account_partitions_sensor(context)

    assert isinstance(result, SensorResult)
    requests = {type(r).__name__: sorted(r.partition_keys) for r in result.dynamic_partitions_requests}
    assert requests == {"AddDynamicPartitionsRequest": ["shop-c"], "DeleteDynamicPartitionsRequest": ["shop-gone"]}

    instance.add_dynamic_partitions("accounts", ["shop-c"])
    instance.delete_dynamic_partition("accounts", "shop-gone")
    schedule = build_schedule("*/30 * * * *")
    with build_schedule_context(
        instance=instance,
        resources={"pipeline_db": pipeline_db},
        scheduled_execution_time=datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc),
    ) as context:
        runs = schedule(context)
    assert [r.partition_key for r in runs] == ["shop-c"]


def test_accounts_list_shows_last_success_result_offers_pending_and_freshness(settings, simulator):
    for name in ("shop-a", "shop-b", "shop-c"):
        register_account(settings, simulator, name)
    engine = engine_for(settings.stock_pipeline_database_url)
    status = SyncStatusStore(engine)
    now = datetime.now(timezone.utc)
    status.record(
        "shop-a",
        run_id="run-a1",
        result="success",
        offers=120,
        changed=3,
        written=3,
        pending=0,
        finished_at=now - timedelta(minutes=10, seconds=5),
    )
    status.record("shop-b", run_id="run-b1", result="success", offers=40, finished_at=now - timedelta(hours=3))
    status.record(
        "shop-b",
        run_id="run-b2",
        result="failed",
        finished_at=now - timedelta(minutes=1),
        error="AccountNeedsReauthorisationError: account 'shop-b' needs re-authorisation (refresh token "
        "rejected by Allegro (invalid_grant)); run: stock-pipeline accounts add shop-b\nsecond line",
    )
    log = WritesLog(engine)
    log.record_planned("run-a0", "shop-a", _planned("run-a0", ["1", "2", "3"]))
    log.mark("run-a0", "shop-a", "set", ["1", "2"], "pending")
    store(settings).pause("shop-c")

    table = run_cli("accounts", "list")
    assert table.returncode == 0, table.stderr
    lines = {line.split()[0]: line for line in table.stdout.splitlines()[2:]}
    header = table.stdout.splitlines()[0]
    for column in (
        "account",
        "status",
        "last successful sync",
        "last result",
        "offers",
        "pending writes",
        "freshness",
        "last change seen",
        "live sync",
    ):
        assert column in header
    assert lines["shop-a"].split()[1] == "active"
    assert "10 min ago" in lines["shop-a"] and "success" in lines["shop-a"]
    assert lines["shop-a"].split()[-5:] == ["120", "2", "ok", "-", "off"]  # the live sync never ran here
    assert "3 h ago" in lines["shop-b"] and "failed: AccountNeedsReauthorisationError: account" in lines["shop-b"]
    assert "second line" not in table.stdout and lines["shop-b"].split()[-5:-2] == ["40", "0", "STALE"]
    assert lines["shop-c"].split()[1] == "paused" and "never" in lines["shop-c"]
    assert lines["shop-c"].split()[-5:-2] == ["-", "0", "STALE"]

    listed = run_cli("accounts", "list", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    rows = {r["account"]: r for r in json.loads(listed.stdout)}
    assert set(rows) == {"shop-a", "shop-b", "shop-c"}
    a, b, c = rows["shop-a"], rows["shop-b"], rows["shop-c"]
    assert (a["status"], a["last_result"], a["offers"], a["pending_writes"], a["freshness"]) == (
        "active",
        "success",
        120,
        2,
        "ok",
    )
    assert 600 <= a["last_success_age_seconds"] < 700 and a["last_run_id"] == "run-a1"
    assert datetime.fromisoformat(a["last_success_at"]) < now
    assert (b["last_result"], b["freshness"], b["last_run_id"]) == ("failed", "STALE", "run-b2")
    assert b["last_error"].endswith("second line")  # json keeps the whole error
    assert (c["status"], c["last_success_at"], c["last_result"], c["freshness"]) == ("paused", None, None, "STALE")


def test_freshness_allows_two_schedule_periods():
    from stock_pipeline.cli.accounts_overview import freshness, schedule_period
    from stock_pipeline.cli.report_format import age

    now = datetime(2024, 5, 1, 10, 45, tzinfo=timezone.utc)
    assert schedule_period("*/30 * * * *", now) == timedelta(minutes=30)
    assert schedule_period("0 */6 * * *", now) == timedelta(hours=6)
    hourly = timedelta(hours=1)
    assert freshness(now - timedelta(minutes=119), now, hourly) == "ok"
    assert freshness(now - timedelta(minutes=121), now, hourly) == "STALE"
    assert freshness(None, now, hourly) == "STALE"
    assert [age(s) for s in (None, 5, 720, 3 * 3600, 4 * 86400)] == [
        "never",
        "5 s ago",
        "12 min ago",
        "3 h ago",
        "4 d ago",
    ]
