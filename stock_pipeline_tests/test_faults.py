"""The fault matrix: whatever breaks, the next run leaves every offer right and the
writes log never claims a write that did not happen."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.foundation.settings import load_settings
from stock_pipeline.store.account_lock import account_write_lock
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import (
    assert_every_offer_right,
    register_account,
    run_cli,
    write_requests,
    write_stock,
)

pytestmark = pytest.mark.faults


def seed_account(settings, simulator, name, offers=2500, distinct_values=False):
    """`offers` offers over offers*2/3 SKUs; the warehouse changes most of them."""
    register_account(settings, simulator, name)
    skus = max(1, offers * 2 // 3)
    simulator.add_offers(name, [{"sku": f"{name}-{i % skus}", "stock": 1} for i in range(offers)])
    rows = [(f"{name}-{i}", (i % 997) + 2 if distinct_values else 2 + i % 7) for i in range(skus)]
    return rows


def no_phantom_success(settings, simulator, account, warehouse):
    """Every write the log calls `success` is what Allegro now has."""
    history = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(account=account, limit=100_000)
    offers = {o["id"]: o for o in simulator.offers(account)}
    for row in history[history["status"] == "success"].itertuples():
        offer = offers[row.offer_id]
        if row.after == 0:
            assert offer["status"] == "ENDED", row
        else:
            assert offer["stock"] == row.after, row


def test_ten_percent_faults_converge_within_two_runs(settings, simulator, monkeypatch):
    monkeypatch.setenv("ALLEGRO_SYNC_RETRY_COUNT", "4")
    warehouse = seed_account(settings, simulator, "shop-a")
    write_stock(settings.stock_database_url, warehouse)
    before = {o["id"]: o for o in simulator.offers("shop-a")}
    simulator.fault_timeout_seconds = 6.0  # longer than ALLEGRO_SYNC_HTTP_TIMEOUT=5 in the tests
    simulator.set_faults(rate=0.1, kinds=("429", "500", "503", "timeout", "drop"), seed=11)

    first = run_cli("sync")
    if first.returncode != 0:  # a clean failure is allowed: the next run must converge
        assert "error" in (first.stdout + first.stderr).lower()
        second = run_cli("sync")
        assert second.returncode == 0, second.stdout + second.stderr
    simulator.clear_faults()

    assert_every_offer_right(simulator, "shop-a", dict(warehouse), before)
    no_phantom_success(settings, simulator, "shop-a", dict(warehouse))
    assert any(r.fault for r in simulator.requests)


def test_expired_access_token_mid_run_is_refreshed_once(settings, simulator):
    warehouse = seed_account(settings, simulator, "shop-a", offers=50)
    write_stock(settings.stock_database_url, warehouse)
    simulator.expire_access_tokens("shop-a")
    simulator.reset_requests()
    assert run_cli("sync").returncode == 0
    assert sum(1 for r in simulator.requests if r.path.endswith("/auth/oauth/token")) == 1


def test_invalid_grant_on_one_account_leaves_the_others_syncing(settings, simulator):
    warehouse = seed_account(settings, simulator, "shop-a", offers=30)
    warehouse += seed_account(settings, simulator, "shop-b", offers=30)
    write_stock(settings.stock_database_url, warehouse)
    before = {o["id"]: o for o in simulator.offers("shop-b")}
    simulator.revoke_tokens("shop-a")

    result = run_cli("sync")

    assert result.returncode == 1
    assert "shop-a" in result.stdout and "stock-pipeline accounts add shop-a" in result.stdout
    assert (
        AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).get("shop-a").status
        == "needs_reauth"
    )
    assert_every_offer_right(simulator, "shop-b", dict(warehouse), before)
    # Next time it is not even tried, and says why.
    assert "needs_reauth" in run_cli("accounts", "list").stdout


def test_redis_unavailable_fails_the_run_before_any_call(settings, simulator, monkeypatch):
    warehouse = seed_account(settings, simulator, "shop-a", offers=20)
    write_stock(settings.stock_database_url, warehouse)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    simulator.reset_requests()
    result = run_cli("sync")
    assert result.returncode == 1
    assert "REDIS_URL" in result.stdout and "Traceback" not in result.stdout
    assert [r for r in simulator.requests if r.path.startswith("/sale/")] == []


def test_pipeline_database_unavailable_fails_cleanly(settings, simulator, monkeypatch):
    warehouse = seed_account(settings, simulator, "shop-a", offers=20)
    write_stock(settings.stock_database_url, warehouse)
    monkeypatch.setenv("STOCK_PIPELINE_DATABASE_URL", "postgresql+psycopg://postgres@127.0.0.1:1/nowhere")
    simulator.reset_requests()
    # From the CLI: a clear error naming the variable.
    result = run_cli("sync", "--account", "shop-a")
    assert result.returncode == 1 and "STOCK_PIPELINE_DATABASE_URL" in result.stderr
    # Inside a Dagster run (as the daemon would launch it): the run fails, nothing is written.
    [summary] = sync_accounts(load_settings(), ["shop-a"])
    assert not summary.success and "STOCK_PIPELINE_DATABASE_URL" in summary.error
    assert write_requests(simulator) == []


def test_killed_mid_writes_leaves_no_phantom_success_and_next_run_converges(settings, simulator, monkeypatch):
    # Distinct values make every write a PATCH; a low per-user PATCH budget makes them slow,
    # and a client_id rate as low keeps them PATCHes (commands would be no faster: routes by time).
    warehouse = seed_account(settings, simulator, "shop-a", offers=60, distinct_values=True)
    write_stock(settings.stock_database_url, warehouse)
    before = {o["id"]: o for o in simulator.offers("shop-a")}
    monkeypatch.setenv("ALLEGRO_SYNC_USER_PATCHES_PER_MINUTE", "300")
    monkeypatch.setenv("ALLEGRO_SYNC_RATE_LIMIT", "300")
    process = subprocess.Popen(
        [sys.executable, "-m", "stock_pipeline.cli", "sync"],
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while len(write_requests(simulator)) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    written = len(write_requests(simulator))
    assert 5 <= written < 40, written

    history = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(account="shop-a", limit=1000)
    assert set(history["status"]) <= {"planned", "sent", "success"}
    assert (history["status"] == "success").sum() <= written
    no_phantom_success(settings, simulator, "shop-a", dict(warehouse))

    monkeypatch.setenv("ALLEGRO_SYNC_USER_PATCHES_PER_MINUTE", "2500")
    monkeypatch.setenv("ALLEGRO_SYNC_RATE_LIMIT", "9000")
    assert run_cli("sync").returncode == 0
    assert_every_offer_right(simulator, "shop-a", dict(warehouse), before)


def test_a_second_writer_for_the_same_account_sends_nothing(settings, simulator):
    warehouse = seed_account(settings, simulator, "shop-a", offers=20)
    write_stock(settings.stock_database_url, warehouse)
    simulator.reset_requests()
    with account_write_lock(engine_for(settings.stock_pipeline_database_url), "shop-a"):
        result = run_cli("sync")
    assert result.returncode == 1 and "another run is writing to account 'shop-a'" in result.stdout
    assert write_requests(simulator) == []
    assert (
        AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).get("shop-a").status
        == "active"
    )


def test_two_forced_runs_at_once_are_harmless(settings, simulator, monkeypatch, postgres_dagster_home):
    warehouse = seed_account(settings, simulator, "shop-a", offers=60, distinct_values=True)
    write_stock(settings.stock_database_url, warehouse)
    before = {o["id"]: o for o in simulator.offers("shop-a")}
    # 60 PATCHes take ~12 s; with the client_id's rate as low, commands would be no faster,
    # so the plan keeps them (core/plan.py, routes by time) and the first run writes for long.
    monkeypatch.setenv("ALLEGRO_SYNC_USER_PATCHES_PER_MINUTE", "300")
    monkeypatch.setenv("ALLEGRO_SYNC_RATE_LIMIT", "300")

    def start():
        return subprocess.Popen(
            [sys.executable, "-m", "stock_pipeline.cli", "sync"],
            env=os.environ.copy(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    first = start()
    deadline = time.monotonic() + 60
    while not write_requests(simulator) and time.monotonic() < deadline:
        time.sleep(0.05)
    second = start()  # forced in while the first is writing, as a second scheduler or a CLI user might
    (out_second, _), (out_first, err_first) = second.communicate(timeout=240), first.communicate(timeout=240)

    assert first.returncode == 0, out_first + err_first
    assert second.returncode == 1 and "another run is writing to account 'shop-a'" in out_second
    assert (
        AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).get("shop-a").status
        == "active"
    )
    assert_every_offer_right(simulator, "shop-a", dict(warehouse), before)
    patched = [r.path for r in write_requests(simulator)]
    assert len(patched) == len(set(patched))  # no offer written twice


def test_commands_still_new_past_the_polling_bound_are_pending_then_rechecked(settings, simulator, monkeypatch):
    warehouse = seed_account(settings, simulator, "shop-a", offers=300)
    write_stock(settings.stock_database_url, warehouse)
    simulator.command_task_delay = 3.0
    monkeypatch.setenv("ALLEGRO_SYNC_POLL_TIMEOUT", "0.5")
    first = run_cli("sync")
    assert first.returncode == 0, first.stderr
    log = WritesLog(engine_for(settings.stock_pipeline_database_url))
    history = log.history(account="shop-a", limit=1000)
    assert (history["status"] == "pending").sum() > 0
    assert "success" not in set(history.loc[history["method"] == "quantity_command", "status"])

    time.sleep(3.0)
    simulator.reset_requests()
    assert run_cli("sync").returncode == 0
    history = log.history(account="shop-a", limit=1000)
    assert "pending" not in set(history["status"])
    assert any(r.path.endswith("/tasks") for r in simulator.requests)  # asked Allegro again
    assert write_requests(simulator) == []  # and the listing agreed: nothing to resend
