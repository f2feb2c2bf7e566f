"""A sale on Allegro is never undone, end to end: a purchase lowers an offer on the
simulator before the warehouse books the order; full syncs through Dagster (real
Postgres, Redis, the simulator over HTTP) do not raise it back while the warehouse still
says what it said at the sale, and write normally once the order is booked or the hold
ran out. The hold is shown in the run's metadata and the audit; a dry run shows it and
changes nothing."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest
from dagster import DagsterInstance

from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.core.sale_holds import holds_for_sales, sales_from_order_events
from stock_pipeline.defs.run_outcome import step_metadata
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.policies import PolicyStore
from stock_pipeline.store.sale_holds import SaleHolds
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import register_account, run_cli, write_requests, write_stock

ACCOUNT = "shop-a"


@pytest.fixture
def shop(settings, simulator):
    """Two offers of SKU A and one of B, all equal to the warehouse (A 5, B 3)."""
    register_account(settings, simulator, ACCOUNT)
    a1, a2, b = simulator.add_offers(
        ACCOUNT, [{"sku": "A", "stock": 5}, {"sku": "A", "stock": 5}, {"sku": "B", "stock": 3}]
    )
    write_stock(settings.stock_database_url, [("A", 5), ("B", 3)])
    [first] = sync_accounts(settings, [ACCOUNT])
    assert first.success and first.written == 0, first.error
    return {"a1": a1, "a2": a2, "b": b}


def buy(settings, simulator, offer_id: str, sku: str, warehouse: dict[str, int], *, ago=timedelta(minutes=1)):
    """A buyer buys one unit: Allegro lowers the offer at once, and the sale is recorded as
    the sensor records it from the order journal (its BOUGHT event, the warehouse as read then)."""
    simulator.set_offer(offer_id, stock=simulator.offer(offer_id)["stock"] - 1)
    now = datetime.now(timezone.utc)
    bought_at = now - ago
    event = {
        "id": f"event-{offer_id}-{bought_at.timestamp()}",
        "type": "BOUGHT",
        "occurredAt": bought_at.isoformat(),
        "order": {
            "lineItems": [
                {
                    "id": f"line-{offer_id}-{bought_at.timestamp()}",
                    "offer": {"id": offer_id, "name": "offer", "external": {"id": sku}},
                    "quantity": 1,
                    "boughtAt": bought_at.isoformat(),
                }
            ]
        },
    }
    engine = engine_for(settings.stock_pipeline_database_url)
    snapshot = pd.DataFrame({"sku": pd.Series(list(warehouse), dtype="string"), "stock": list(warehouse.values())})
    holds = holds_for_sales(
        sales_from_order_events([event]),
        snapshot,
        PolicyStore(engine).get(ACCOUNT),
        hold=timedelta(seconds=settings.stock_sale_hold_seconds),
        # An old sale is recorded as it was when it happened (a hold that already ran out is kept
        # only so the sync can be seen ignoring it).
        now=min(now, bought_at),
    )
    assert SaleHolds(engine).record(ACCOUNT, holds) == 1


def active_holds(settings) -> list[str]:
    return SaleHolds(engine_for(settings.stock_pipeline_database_url)).active(ACCOUNT)["offer_id"].tolist()


def audit(settings, status: str) -> pd.DataFrame:
    return WritesLog(engine_for(settings.stock_pipeline_database_url)).history(account=ACCOUNT, status=status)


def diff_metadata(run_id: str) -> dict:
    return step_metadata(DagsterInstance.get(), run_id)["stock_diff"]


def test_a_sale_is_not_raised_back_until_the_warehouse_books_the_order(settings, simulator, shop):
    buy(settings, simulator, shop["a1"], "A", {"A": 5, "B": 3})
    simulator.reset_requests()

    [held_run] = sync_accounts(settings, [ACCOUNT])  # the warehouse still says 5: not booked yet

    assert held_run.success, held_run.error
    assert simulator.offer(shop["a1"])["stock"] == 4  # the sold unit is not offered again
    assert write_requests(simulator) == []  # no call at all for the held offer
    held = audit(settings, "held")
    assert held[["run_id", "offer_id", "before", "after", "action"]].values.tolist() == [
        [held_run.run_id, shop["a1"], 4, 5, "set"]
    ]
    assert "not yet booked in the warehouse" in held["error"].iloc[0]
    metadata = diff_metadata(held_run.run_id)
    assert metadata["held_for_sales"] == 1 and shop["a1"] in metadata["held_for_sales_preview"]
    assert any("1 offer(s) not raised" in note for note in held_run.notes)
    assert active_holds(settings) == [shop["a1"]]
    shown = run_cli("history", "--status", "held", "--format", "json")
    assert shown.returncode == 0, shown.stderr
    assert [(r["offer_id"], r["status"]) for r in json.loads(shown.stdout)] == [(shop["a1"], "held")]

    # The warehouse books the order: A goes 5 -> 4. Offer a1 already shows 4; a2 follows.
    write_stock(settings.stock_database_url, [("A", 4), ("B", 3)])
    [booked] = sync_accounts(settings, [ACCOUNT])
    assert booked.success, booked.error
    assert [simulator.offer(shop[k])["stock"] for k in ("a1", "a2")] == [4, 4]
    assert active_holds(settings) == []  # released: the warehouse value changed
    assert diff_metadata(booked.run_id)["sale_holds_released"] == 1

    # From now on A syncs as any SKU: a delivery raises both offers.
    write_stock(settings.stock_database_url, [("A", 9), ("B", 3)])
    [delivered] = sync_accounts(settings, [ACCOUNT])
    assert delivered.success and delivered.written == 2, delivered.error
    assert [simulator.offer(shop[k])["stock"] for k in ("a1", "a2")] == [9, 9]
    assert len(audit(settings, "held")) == 1  # only the first run held anything


def test_a_hold_that_ran_out_no_longer_holds(settings, simulator, shop):
    buy(
        settings,
        simulator,
        shop["a1"],
        "A",
        {"A": 5, "B": 3},
        ago=timedelta(seconds=settings.stock_sale_hold_seconds + 60),
    )
    [run] = sync_accounts(settings, [ACCOUNT])
    assert run.success and run.written == 1, run.error
    assert simulator.offer(shop["a1"])["stock"] == 5  # the warehouse was never told: after the hold, it wins
    assert audit(settings, "held").empty
    assert SaleHolds(engine_for(settings.stock_pipeline_database_url)).purge_expired() == 0  # the run purged it


def test_a_dry_run_shows_the_hold_and_changes_nothing(settings, simulator, shop):
    buy(settings, simulator, shop["a1"], "A", {"A": 5, "B": 3})
    buy(settings, simulator, shop["b"], "B", {"A": 5, "B": 3})
    write_stock(settings.stock_database_url, [("A", 5), ("B", 2)])  # B's order booked, A's not yet
    simulator.reset_requests()

    [rehearsal] = sync_accounts(settings, [ACCOUNT], dry_run=True)

    assert rehearsal.success, rehearsal.error
    assert write_requests(simulator) == []
    assert rehearsal.plan.empty  # a1 held; b already at the warehouse's 2
    assert any("1 offer(s) would not be raised" in note for note in rehearsal.notes)
    outputs = {
        k: getattr(v, "value", v)
        for record in DagsterInstance.get().all_logs(rehearsal.run_id)
        if record.dagster_event and record.dagster_event.event_type_value == "STEP_OUTPUT"
        for k, v in record.dagster_event.event_specific_data.metadata.items()
    }
    assert outputs["held_for_sales"] == 1 and outputs["sale_holds_released"] == 1
    assert sorted(active_holds(settings)) == sorted([shop["a1"], shop["b"]])  # nothing released
    assert audit(settings, "held").empty  # no audit row from a rehearsal

    printed = run_cli("sync", "--dry-run")
    assert printed.returncode == 0, printed.stderr
    assert "1 offer(s) would not be raised" in printed.stdout

    [real] = sync_accounts(settings, [ACCOUNT])  # the real sync releases what the rule releases
    assert real.success, real.error
    assert active_holds(settings) == [shop["a1"]]
    assert simulator.offer(shop["a1"])["stock"] == 4
