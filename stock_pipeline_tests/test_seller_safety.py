"""Seller safety end to end: guards against a bad feed, overrides in the audit, bad rows,
ending and re-activating, the stock policy, dry runs."""

from __future__ import annotations

import time

import pytest
from dagster import DagsterInstance

from stock_pipeline.definitions import build_definitions
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import register_account, run_cli, send_failure_alert, write_requests, write_stock


@pytest.fixture
def shop(settings, simulator):
    """40 offers, one per SKU, stock 5; the warehouse agrees."""
    register_account(settings, simulator, "shop-a")
    ids = simulator.add_offers("shop-a", [{"sku": f"S{i:02d}", "stock": 5} for i in range(40)])
    warehouse = [(f"S{i:02d}", 5) for i in range(40)]
    write_stock(settings.stock_database_url, warehouse)
    assert run_cli("sync").returncode == 0  # a good snapshot: the guards' baseline
    return dict(zip([f"S{i:02d}" for i in range(40)], ids))


def alert_for_last_run(settings):
    instance = DagsterInstance.get()
    send_failure_alert(build_definitions(settings), instance, instance.get_runs(limit=1)[0])


def test_empty_snapshot_holds_writes_and_alerts(settings, simulator, telegram, shop):
    write_stock(settings.stock_database_url, [])
    simulator.reset_requests()
    result = run_cli("sync")
    assert result.returncode == 1 and "snapshot is empty" in result.stdout
    assert write_requests(simulator) == []
    alert_for_last_run(settings)
    assert "snapshot is empty" in telegram.messages[-1]["text"]


def test_halved_snapshot_holds_writes(settings, simulator, shop):
    write_stock(settings.stock_database_url, [(f"S{i:02d}", 0) for i in range(20)])
    simulator.reset_requests()
    result = run_cli("sync")
    assert result.returncode == 1 and "shrank from 40 to 20 SKUs" in result.stdout
    assert write_requests(simulator) == []


def test_ending_half_the_offers_is_held_until_overridden_and_the_override_is_audited(
    settings, simulator, telegram, shop
):
    write_stock(settings.stock_database_url, [(f"S{i:02d}", 0 if i % 2 else 5) for i in range(40)])
    simulator.reset_requests()
    held = run_cli("sync")
    assert held.returncode == 1 and "would end 20" in held.stdout
    assert write_requests(simulator) == []
    alert_for_last_run(settings)
    assert "diff_guard" in telegram.messages[-1]["text"] and "would end 20" in telegram.messages[-1]["text"]

    forced = run_cli("sync", "--override-guards")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    ended = [o for o in simulator.offers("shop-a") if o["status"] == "ENDED"]
    assert len(ended) == 20
    history = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(account="shop-a")
    assert len(history) == 20 and history["guards_overridden"].all()
    assert "yes" in run_cli("history", "--account", "shop-a").stdout  # the overridden column


def test_bad_rows_never_zero_an_offer_and_are_reported_once(settings, simulator, telegram, shop):
    rows = [(f"S{i:02d}", 5) for i in range(3, 40)] + [
        ("S00", None),
        ("S01", -3),
        ("S02", 5),
        ("S02", None),
        ("<b>", -1),
    ]
    write_stock(settings.stock_database_url, rows)
    result = run_cli("sync")
    assert result.returncode == 0, result.stdout
    for sku in ("S00", "S01", "S02"):
        offer = simulator.offer(shop[sku])
        assert (offer["status"], offer["stock"]) == ("ACTIVE", 5)
    [warning] = telegram.messages
    assert "bad rows" in warning["text"] and "stock is negative: 2" in warning["text"]
    assert "<code>&lt;b&gt;</code>" in warning["text"]  # escaped, and Telegram accepted the HTML
    assert run_cli("sync").returncode == 0
    assert len(telegram.messages) == 1  # the same broken rows are not reported again


def test_an_impossible_stock_value_leaves_its_offer_alone_while_the_others_sync(settings, simulator, telegram, shop):
    from dagster import AssetKey

    # The INTEGER column stores 99999999999999999999 as the REAL 1e20. Cast to int64 it
    # once wrapped to -2^63, was clipped to 0 and ended the offer; one inf crashed the run.
    rows = [("S00", "99999999999999999999"), ("S01", float("inf")), ("S02", 150_000)]
    write_stock(settings.stock_database_url, rows + [(f"S{i:02d}", 6) for i in range(3, 40)])
    result = run_cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    for sku in ("S00", "S01"):
        offer = simulator.offer(shop[sku])
        assert (offer["status"], offer["stock"]) == ("ACTIVE", 5)
    assert simulator.offer(shop["S02"])["stock"] == 99_999  # real stock above Allegro's maximum: capped
    assert all(simulator.offer(shop[f"S{i:02d}"])["stock"] == 6 for i in range(3, 40))

    [warning] = telegram.messages
    assert "stock above the plausible maximum (1000000): 1" in warning["text"]
    assert "SKU <code>S00</code> stock <code>1e+20</code>" in warning["text"]
    assert "SKU <code>S01</code> stock <code>inf</code>: stock is not a finite number" in warning["text"]
    event = DagsterInstance.get().get_latest_materialization_event(AssetKey("stock_snapshot"))
    metadata = event.asset_materialization.metadata
    assert metadata["bad_rows"].value == 2 and metadata["rows_capped_at_99999"].value == 1
    assert "| S00 | 1e+20 | stock above the plausible maximum (1000000) |" in metadata["bad_rows_preview"].value


def test_pipeline_ended_offers_come_back_and_seller_ended_stay_ended(settings, simulator, shop):
    simulator.set_offer(shop["S01"], status="ENDED", ended_by="USER")  # the seller ended it by hand
    write_stock(settings.stock_database_url, [(f"S{i:02d}", 0 if i in (0, 1) else 5) for i in range(40)])
    assert run_cli("sync").returncode == 0
    assert simulator.offer(shop["S00"])["status"] == "ENDED"  # ended by us

    simulator.reset_requests()
    assert run_cli("sync").returncode == 0  # still 0: the ended offer is left as it is
    assert write_requests(simulator) == []

    write_stock(settings.stock_database_url, [(f"S{i:02d}", 7 if i in (0, 1) else 5) for i in range(40)])
    assert run_cli("sync").returncode == 0
    back, seller_ended = simulator.offer(shop["S00"]), simulator.offer(shop["S01"])
    assert (back["status"], back["stock"]) == ("ACTIVE", 7)
    assert seller_ended["status"] == "ENDED"
    actions = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(offer_id=shop["S00"])["action"]
    assert sorted(actions) == ["activate", "end", "set"]


def test_a_partial_listing_fails_loudly_and_never_forgets_an_offer_we_ended(settings, simulator, shop):
    """The listing ends short of Allegro's totalCount and misses an offer we ended: the run
    fails with the reason before any write, the offer stays ours, and comes back later."""
    from stock_pipeline.store.ended_offers import EndedOffers

    write_stock(settings.stock_database_url, [(f"S{i:02d}", 0 if i == 0 else 5) for i in range(40)])
    assert run_cli("sync").returncode == 0
    assert simulator.offer(shop["S00"])["status"] == "ENDED"
    ended = EndedOffers(engine_for(settings.stock_pipeline_database_url))
    assert ended.ours("shop-a") == {shop["S00"]}

    complete_listing = simulator.marketplace.list_offers

    def listing_without_s00(login, **query):  # totalCount still counts it
        page, total = complete_listing(login, **query)
        return [offer for offer in page if offer.id != shop["S00"]], total

    simulator.marketplace.list_offers = listing_without_s00
    write_stock(settings.stock_database_url, [(f"S{i:02d}", 5) for i in range(40)])
    simulator.reset_requests()
    try:
        partial = run_cli("sync")
        rehearsal = run_cli("sync", "--dry-run")
    finally:
        del simulator.marketplace.list_offers
    assert partial.returncode == 1, partial.stdout + partial.stderr
    assert "needs a complete offer listing" in partial.stdout
    assert "39 offers listed of the 40 Allegro reported" in partial.stdout
    assert rehearsal.returncode == 1 and "39 offers listed of the 40 Allegro reported" in rehearsal.stdout
    assert write_requests(simulator) == []
    assert ended.ours("shop-a") == {shop["S00"]}  # the old code forgot it here, for good

    assert run_cli("sync").returncode == 0  # a complete listing again
    assert (simulator.offer(shop["S00"])["status"], simulator.offer(shop["S00"])["stock"]) == ("ACTIVE", 5)


def test_account_policy_reserve_and_cap(settings, simulator, shop):
    assert run_cli("accounts", "policy", "shop-a", "--reserve", "1", "--cap", "3").returncode == 0
    write_stock(settings.stock_database_url, [(f"S{i:02d}", 2 if i == 0 else 5) for i in range(40)])
    assert run_cli("sync", "--override-guards").returncode == 0  # the cap cuts 39 offers: a deliberate run
    assert simulator.offer(shop["S00"])["stock"] == 1
    assert simulator.offer(shop["S05"])["stock"] == 3
    bad = run_cli("accounts", "policy", "shop-a", "--cap", "200000")
    assert bad.returncode == 2 and "cap must be a whole number 0..99999" in bad.stderr


def test_dry_run_shows_the_planned_calls_and_sends_nothing(settings, simulator, shop):
    write_stock(settings.stock_database_url, [(f"S{i:02d}", 9) for i in range(40)])
    simulator.reset_requests()
    result = run_cli("sync", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "planned writes: 40 offers" in result.stdout and "quantity command" in result.stdout
    assert write_requests(simulator) == []


def test_materialising_the_writes_alone_never_sends_an_old_plan(settings, simulator, shop):
    from dagster import AssetKey

    write_stock(settings.stock_database_url, [(f"S{i:02d}", 0 if i % 2 else 5) for i in range(40)])
    assert run_cli("sync").returncode == 1  # held by diff_guard; its plan is stored
    simulator.reset_requests()
    job = build_definitions(settings).resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(
        partition_key="shop-a",
        asset_selection=[AssetKey("stock_updates")],
        instance=DagsterInstance.get(),
        raise_on_error=False,
    )
    assert not result.success
    failure = result.get_step_failure_events()[0].step_failure_data.error
    assert "was not materialised in this run" in (failure.cause or failure).message
    assert write_requests(simulator) == []


def test_an_end_settled_by_a_later_run_is_remembered_and_comes_back(settings, simulator, monkeypatch, shop):
    zeroed = [f"S{i:02d}" for i in range(3)]  # three offers to 0: one END command
    write_stock(settings.stock_database_url, [(sku, 0 if sku in zeroed else 5) for sku in shop])
    simulator.command_task_delay = 2.0
    monkeypatch.setenv("ALLEGRO_SYNC_POLL_TIMEOUT", "0.3")
    assert run_cli("sync").returncode == 0
    log = WritesLog(engine_for(settings.stock_pipeline_database_url))
    assert set(log.history(account="shop-a", limit=10)["status"]) == {"pending"}

    time.sleep(2.0)
    assert run_cli("sync").returncode == 0  # settles the END from Allegro's task report
    assert set(log.history(account="shop-a", limit=10)["status"]) == {"success"}

    simulator.command_task_delay = 0.05
    write_stock(settings.stock_database_url, [(sku, 4) for sku in shop])
    assert run_cli("sync").returncode == 0
    assert all(simulator.offer(shop[sku])["status"] == "ACTIVE" for sku in zeroed)


def test_a_pending_write_allegro_no_longer_knows_does_not_block_the_account(settings, simulator, shop):
    import sqlalchemy as sa

    from stock_pipeline.store.schema import writes

    with engine_for(settings.stock_pipeline_database_url).begin() as conn:
        conn.execute(
            writes.insert().values(
                run_id="old-run",
                account="shop-a",
                offer_id=shop["S00"],
                sku="S00",
                before=1,
                after=5,
                action="set",
                method="patch",
                status="pending",
                operation_url=f"{simulator.api_url}/sale/product-offers/{shop['S00']}/operations/gone",
            )
        )
    write_stock(settings.stock_database_url, [(sku, 6) for sku in shop])
    result = run_cli("sync")
    assert result.returncode == 0, result.stdout + result.stderr
    with engine_for(settings.stock_pipeline_database_url).connect() as conn:
        old = conn.execute(sa.select(writes.c.status, writes.c.error).where(writes.c.run_id == "old-run")).one()
    assert old.status == "failed" and "could not be re-checked" in old.error
