"""Full syncs through Dagster: the real CLI, real Postgres and Redis, the simulator over HTTP."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance

from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.plan import minimum_calls
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import (
    assert_every_offer_right,
    listing_items,
    register_account,
    run_cli,
    seed,
    write_requests,
    write_stock,
)


@pytest.fixture
def two_accounts(settings, simulator):
    """Account A: 2 300 offers (many values, several offers per SKU, one going to 0, offers without SKU
    or not in the warehouse, ended offers). Account B: a few offers."""
    register_account(settings, simulator, "shop-a")
    register_account(settings, simulator, "shop-b")
    offers_a = [(f"A{i % 1500:04d}", 1, "ACTIVE") for i in range(2200)]
    offers_a += [(None, 4, "ACTIVE")] * 40 + [("NOT-IN-WAREHOUSE", 4, "ACTIVE")] * 30
    offers_a += [("A0007", 1, "ENDED")] * 20 + [("LONE-ZERO", 3, "ACTIVE")]
    seed(simulator, "shop-a", offers_a)
    seed(simulator, "shop-b", [("B1", 5, "ACTIVE"), ("B2", 5, "ACTIVE"), ("B2", 6, "ACTIVE"), ("A0001", 9, "ACTIVE")])
    warehouse = [(f"A{i:04d}", 1 if i % 3 == 0 else 2 + i % 4) for i in range(1500)]
    warehouse += [("LONE-ZERO", 0), ("B1", 5), ("B2", 7)]
    write_stock(settings.stock_database_url, warehouse)
    return dict(warehouse)


def test_full_sync_of_two_accounts_leaves_every_offer_right(settings, simulator, two_accounts):
    before = {o["id"]: o for acc in ("shop-a", "shop-b") for o in simulator.offers(acc)}
    expected_diff = {
        acc: compute_diff(
            offers_frame(listing_items(simulator, acc)), pd.DataFrame(two_accounts.items(), columns=["sku", "stock"])
        )
        for acc in ("shop-a", "shop-b")
    }
    simulator.reset_requests()

    result = run_cli("sync")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "shop-a" in result.stdout and "shop-b" in result.stdout
    assert "offers listed" in result.stderr and "writes done" in result.stderr  # progress shown while it works
    for account in ("shop-a", "shop-b"):
        assert_every_offer_right(simulator, account, two_accounts, before)
    assert simulator.spec_violations == []
    for r in simulator.requests:
        assert r.headers.get("accept") == "application/vnd.allegro.public.v1+json"
        assert r.headers.get("user-agent", "").startswith("stock_pipeline/")

    # No write touches an unchanged offer.
    changed = {acc: set(d["offer_id"]) for acc, d in expected_diff.items()}
    for r in write_requests(simulator):
        body = r.body or {}
        touched = {o["id"] for c in body.get("offerCriteria", []) for o in c["offers"]} or {r.path.split("/")[3]}
        assert touched <= changed[r.login], (r.path, touched - changed[r.login])

    # Within 1.2x of the minimum number of calls.
    for account in ("shop-a", "shop-b"):
        calls = sum(1 for r in simulator.requests if r.login == account and r.path.startswith("/sale/"))
        minimum = minimum_calls(len(simulator.offers(account)), expected_diff[account])
        assert calls <= 1.2 * minimum, (account, calls, minimum)

    # Every write recorded with its outcome.
    history = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(limit=10_000)
    assert Counter(history["status"]) == {"success": sum(len(d) for d in expected_diff.values())}


def test_commands_group_by_value_and_a_lone_zero_is_patched(settings, simulator, two_accounts):
    simulator.reset_requests()
    assert run_cli("sync", "--account", "shop-a").returncode == 0
    commands = [r for r in write_requests(simulator) if "quantity-change-commands" in r.path]
    assert commands, "values shared by many offers should go by command"
    for r in commands:
        offers = [o for c in r.body["offerCriteria"] for o in c["offers"]]
        assert 1 <= len(offers) <= 1000 and r.body["modification"]["value"] >= 1
    polls = [r for r in simulator.requests if r.method == "GET" and r.path.endswith("/tasks")]
    assert {p.path.split("/")[3] for p in polls} == {c.path.split("/")[3] for c in commands}
    patches = [r for r in write_requests(simulator) if r.method == "PATCH"]
    assert [p.body for p in patches] == [{"stock": {"available": 0}}]
    lone = next(o for o in simulator.offers("shop-a") if o["sku"] == "LONE-ZERO")
    assert lone["status"] == "ENDED"


def test_second_sync_writes_nothing(settings, simulator, two_accounts):
    assert run_cli("sync").returncode == 0
    simulator.reset_requests()
    result = run_cli("sync")
    assert result.returncode == 0, result.stderr
    assert write_requests(simulator) == []
    listing = [r for r in simulator.requests if r.path == "/sale/offers"]
    assert len(listing) == 3 + 1  # ceil(2291/1000) for shop-a, 1 for shop-b


def test_dry_run_writes_nothing_and_shows_the_plan(settings, simulator, two_accounts):
    simulator.reset_requests()
    result = run_cli("sync", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert write_requests(simulator) == []
    assert "dry run" in result.stderr
    assert "[shop-a] planned writes:" in result.stdout and "quantity command" in result.stdout


def test_unknown_account_is_a_clear_usage_error(settings, simulator, two_accounts):
    result = run_cli("sync", "--account", "nope")
    assert result.returncode == 2
    assert "unknown account(s): nope" in result.stderr


def test_an_account_alone_trades_calls_for_time_when_its_patch_budget_binds(settings, simulator, monkeypatch):
    """300 offers, each to a value of its own: by calls, 300 PATCHes. At a PATCH budget of
    120/min those would take 2.5 min while the client_id's 9 000/min sat idle, so the plan
    sends most of them as one-offer quantity commands (2 calls each, ~4 s in all)."""
    monkeypatch.setenv("ALLEGRO_SYNC_USER_PATCHES_PER_MINUTE", "120")
    register_account(settings, simulator, "shop-a")
    seed(simulator, "shop-a", [(f"V{i:03d}", 1, "ACTIVE") for i in range(300)])
    warehouse = {f"V{i:03d}": 10 + i for i in range(300)}
    write_stock(settings.stock_database_url, list(warehouse.items()))
    before = {o["id"]: o for o in simulator.offers("shop-a")}

    rehearsal = run_cli("sync", "--dry-run", "--account", "shop-a")
    assert rehearsal.returncode == 0, rehearsal.stderr
    assert write_requests(simulator) == []
    simulator.reset_requests()
    result = run_cli("sync", "--account", "shop-a")

    assert result.returncode == 0, result.stdout + result.stderr
    assert_every_offer_right(simulator, "shop-a", warehouse, before)
    writes = write_requests(simulator)
    commands = [r for r in writes if "quantity-change-commands" in r.path]
    patches = [r for r in writes if r.method == "PATCH"]
    assert len(commands) > 250 and len(patches) < 50, (len(commands), len(patches))
    assert all(len(r.body["offerCriteria"][0]["offers"]) == 1 for r in commands)  # one value per command
    # The rehearsal showed the routes the sync then took.
    assert f"{len(commands)} quantity command(s) (set)" in rehearsal.stdout, rehearsal.stdout
    assert f"{len(patches)} PATCH call(s)" in rehearsal.stdout
    # The plan says what it was routed by: the whole client_id's rate (the limiter's 98 % of
    # 9 000/min), this account being the only one with a run under way.
    event = DagsterInstance.get().get_latest_materialization_event(AssetKey("stock_diff"))
    metadata = event.asset_materialization.metadata
    assert metadata["planned_at_calls_per_second"].value == pytest.approx(147, abs=1)
    assert metadata["planned_patches"].value == len(patches)
    assert 0 < metadata["writes_estimated_seconds"].value < 10
