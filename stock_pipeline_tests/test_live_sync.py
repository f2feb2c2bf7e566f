"""Live sync over real HTTP: the live sensor evaluated as the daemon evaluates it (its
cursor carried from tick to tick), the runs it requests executed in-process on the same
instance, Allegro the simulator, Postgres and Redis real."""

from __future__ import annotations

import pytest
from dagster import RunRequest

from stock_pipeline.defs.live_sync import LIVE_JOB
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.live_offers import LiveOffers
from stock_pipeline_tests.helpers import register_account, seed, write_requests, write_stock
from stock_pipeline_tests.live_world import LiveWorld


@pytest.fixture
def live(settings, simulator):
    register_account(settings, simulator, "shop-a")
    register_account(settings, simulator, "shop-b")
    seed(simulator, "shop-a", [(f"S{i:03d}", 5, "ACTIVE") for i in range(100)] + [("S001", 5, "ACTIVE")])
    seed(simulator, "shop-b", [(f"S{i:03d}", 5, "ACTIVE") for i in range(50)])
    write_stock(settings.stock_database_url, warehouse())
    world = LiveWorld(settings, simulator)
    world.start(["shop-a", "shop-b"])
    return world


def warehouse(**changed) -> list[tuple]:
    """The fixture's warehouse with `changed` SKUs (S001=9) set."""
    rows = {f"S{i:03d}": 5 for i in range(100)} | {"NO-OFFER": 3} | changed
    return list(rows.items())


def stock_of(simulator, account, sku):
    return sorted(o["stock"] for o in simulator.offers(account) if o["sku"] == sku)


def test_a_warehouse_change_is_written_by_one_live_run_per_account_touching_only_that_sku(live, settings, simulator):
    assert live.tick() == []  # nothing changed since the full syncs
    write_stock(settings.stock_database_url, warehouse(S001=9))
    simulator.reset_requests()

    requests = live.tick()

    assert sorted(r.partition_key for r in requests) == ["shop-a", "shop-b"]
    assert all(r.job_name == LIVE_JOB for r in requests)
    for request in requests:
        assert live.run(request).success
    # S001 is listed twice on shop-a: both offers, and nothing else, were written.
    assert stock_of(simulator, "shop-a", "S001") == [9, 9]
    assert stock_of(simulator, "shop-b", "S001") == [9]
    written = {r.path.rsplit("/", 1)[-1] for r in write_requests(simulator) if r.method == "PATCH"}
    assert len(written) == 3
    # The writes came back as journal events; re-read, they match the warehouse: no new run.
    assert live.tick() == []
    # Visible: `accounts list` and Prometheus show the live write and its lag.
    from stock_pipeline.cli.accounts_overview import load_overview, overview_table

    rows = {r.account: r for r in load_overview(settings)}
    assert rows["shop-a"].live_following and rows["shop-a"].last_live_write_at is not None
    assert 0 <= rows["shop-a"].live_lag_seconds < 60
    assert "last write" in overview_table(list(rows.values()))
    import redis

    from stock_pipeline.observability.metrics import render_prometheus

    text = render_prometheus(redis.Redis.from_url(settings.redis_url))
    assert 'allegro_sync_live_lag_seconds{account="shop-a"}' in text


def test_the_same_tick_evaluated_twice_asks_for_the_same_runs_and_a_run_key_is_never_applied_twice(
    live, settings, simulator
):
    write_stock(settings.stock_database_url, warehouse(S002=7))
    before = live.cursor
    first = live.tick(keep_cursor=False)  # the daemon died before storing the cursor
    live.cursor = before
    again = live.tick()
    assert [r.run_key for r in first] == [r.run_key for r in again] and first
    for request in again:
        assert live.run(request).success
    assert live.tick() == []  # after the restart and the runs: nothing left, nothing twice


def test_a_sku_with_no_offer_changing_launches_nothing_and_calls_no_write(live, settings, simulator):
    write_stock(settings.stock_database_url, warehouse(**{"NO-OFFER": 30}))
    simulator.reset_requests()
    assert live.tick() == []
    assert write_requests(simulator) == []


def test_an_expired_offer_journal_position_falls_back_to_a_full_listing(live, settings, simulator):
    offer = next(o for o in simulator.offers("shop-a") if o["sku"] == "S020")
    simulator.set_offer(offer["id"], stock=40)  # the journal moves on: a position to lose
    assert [r.job_name for r in live.tick()] == [LIVE_JOB]
    simulator.expire_offer_events("shop-a")
    requests = live.tick()
    assert [(r.job_name, r.partition_key) for r in requests] == [("account_sync", "shop-a")]
    state = LiveOffers(engine_for(settings.stock_pipeline_database_url)).state("shop-a")
    assert not state.map_current  # until that listing is merged
    assert live.run(requests[0]).success
    assert LiveOffers(engine_for(settings.stock_pipeline_database_url)).state("shop-a").map_current


def test_a_delta_that_would_end_most_offers_is_held_by_the_diff_guard_against_the_whole_map(live, settings, simulator):
    # 80 of shop-a's 101 offers to 0 at once (a feed gone wrong) — as a delta.
    write_stock(settings.stock_database_url, warehouse(**{f"S{i:03d}": 0 for i in range(80)}))
    requests = [r for r in live.tick() if r.partition_key == "shop-a"]
    assert requests
    result = live.run(requests[0])
    assert not result.success
    assert "diff_guard held the writes" in str(result.all_events)
    assert all(o["status"] == "ACTIVE" for o in simulator.offers("shop-a"))
    # A hold waits for the operator: the next tick does not try the same writes again.
    assert [r.partition_key for r in live.tick()] == []


def test_a_live_run_that_failed_on_allegro_is_retried_once_by_the_next_tick(live, settings, simulator):
    write_stock(settings.stock_database_url, warehouse(S005=8))
    requests = [r for r in live.tick() if r.partition_key == "shop-b"]
    # Allegro answers 500 to every PATCH, beyond the client's own retries.
    simulator.set_faults(rate=1.0, kinds=("500",), seed=1, paths=("/sale/product-offers",))
    assert not live.run(requests[0]).success
    assert stock_of(simulator, "shop-b", "S005") == [5]

    retry = [r for r in live.tick() if r.partition_key == "shop-b"]
    assert len(retry) == 1 and retry[0].tags["stock_pipeline/live"] == "retry"
    assert (
        retry[0].run_config["ops"]["live_stock_updates"]["config"]["offer_ids"]
        == (requests[0].run_config["ops"]["live_stock_updates"]["config"]["offer_ids"])
    )
    assert not live.run(retry[0]).success  # still down: the retry fails too...
    assert [r for r in live.tick() if r.partition_key == "shop-b"] == []  # ...and is not retried again

    simulator.clear_faults()
    write_stock(settings.stock_database_url, warehouse(S005=8, S006=2))  # the next change carries on
    again = [r for r in live.tick() if r.partition_key == "shop-b"]
    assert live.run(again[0]).success
    assert stock_of(simulator, "shop-b", "S006") == [2]


def test_an_offer_changed_by_another_app_is_corrected_from_the_journal(live, settings, simulator):
    offer = next(o for o in simulator.offers("shop-b") if o["sku"] == "S010")
    simulator.set_offer(offer["id"], stock=40)  # another app raised it: overselling risk
    requests = live.tick()
    assert [r.partition_key for r in requests] == ["shop-b"]
    assert live.run(requests[0]).success
    assert stock_of(simulator, "shop-b", "S010") == [5]


def test_a_change_arriving_during_a_full_sync_waits_for_it_then_is_written(live, settings, simulator):
    import threading
    import time

    simulator.listing_latency = 1.0  # the full sync is still listing when the warehouse changes
    simulator.reset_requests()
    full = threading.Thread(target=lambda: live.run(live_full_sync_request("shop-a")))
    full.start()
    deadline = time.monotonic() + 30
    while not any(r.path == "/sale/offers" for r in simulator.requests) and time.monotonic() < deadline:
        time.sleep(0.05)  # its warehouse read is done: it lists after it
    write_stock(settings.stock_database_url, warehouse(S001=9))

    during = live.tick()
    full.join()
    simulator.listing_latency = None

    assert [r.partition_key for r in during] == ["shop-b"]  # shop-a has a run in flight: its change waits
    after = live.tick()
    assert [r.partition_key for r in after] == ["shop-a"]
    assert live.run(after[0]).success
    assert stock_of(simulator, "shop-a", "S001") == [9, 9] and stock_of(simulator, "shop-b", "S001") == [5]


def live_full_sync_request(account):
    return RunRequest(job_name="account_sync", partition_key=account)


def test_a_full_sync_leaves_an_offer_a_live_run_wrote_after_it_started(live, settings, simulator):
    """A CLI sync (outside the queue) whose warehouse read is older than a live run's write
    must not write its older value over it."""
    from datetime import datetime, timedelta, timezone

    from stock_pipeline.store.schema import writes

    offer = next(o for o in simulator.offers("shop-a") if o["sku"] == "S003")
    simulator.set_offer(offer["id"], stock=8)  # as a live run wrote it, for a warehouse value this sync has not read
    with engine_for(settings.stock_pipeline_database_url).begin() as conn:
        conn.execute(
            writes.insert().values(
                run_id="a-live-run",
                account="shop-a",
                offer_id=offer["id"],
                sku="S003",
                before=5,
                after=8,
                action="set",
                method="patch",
                status="success",
                created_at=datetime.now(timezone.utc) + timedelta(hours=1),  # after this sync starts, whenever it does
            )
        )
    summary = live.run(live_full_sync_request("shop-a"))
    assert summary.success
    assert stock_of(simulator, "shop-a", "S003") == [8]
    runs = live.instance.get_runs()
    metadata = {}
    for record in live.instance.get_records_for_run(runs[0].run_id).records:
        event = record.event_log_entry.dagster_event
        if event and event.event_type_value == "ASSET_MATERIALIZATION":
            metadata.update(event.event_specific_data.materialization.metadata)
    assert metadata["left_to_newer_live_writes"].value == 1


def test_a_purchase_is_not_raised_back_by_a_live_or_full_sync_until_the_warehouse_books_it(live, settings, simulator):
    from stock_pipeline.store.writes_log import WritesLog

    offer = next(o for o in simulator.offers("shop-a") if o["sku"] == "S005")
    simulator.purchase("shop-a", offer["id"], 2)  # Allegro 3; the warehouse still says 5

    assert [r for r in live.tick() if r.partition_key == "shop-a"] == []  # the order journal made it a hold
    assert live.run(live_full_sync_request("shop-a")).success  # a full sync with the stale warehouse
    assert stock_of(simulator, "shop-a", "S005") == [3]
    held = WritesLog(engine_for(settings.stock_pipeline_database_url)).history(offer_id=offer["id"], status="held")
    assert len(held) == 1 and "sale" in held["error"].iloc[0]

    write_stock(settings.stock_database_url, warehouse(S005=3))  # the warehouse books the order
    for request in live.tick():
        assert live.run(request).success
    assert stock_of(simulator, "shop-a", "S005") == [3] and stock_of(simulator, "shop-b", "S005") == [3]
    write_stock(settings.stock_database_url, warehouse(S005=10))  # then a delivery: normal again
    for request in live.tick():
        assert live.run(request).success
    assert stock_of(simulator, "shop-a", "S005") == [10] and stock_of(simulator, "shop-b", "S005") == [10]


def test_an_offer_lowered_with_no_order_yet_is_presumed_sold_before_it_is_corrected(
    live, settings, simulator, monkeypatch
):
    from stock_pipeline.defs import live_sync

    offer = next(o for o in simulator.offers("shop-b") if o["sku"] == "S007")
    simulator.set_offer(offer["id"], stock=2)  # lowered, and no order event (yet)
    assert live.tick() == []  # its order event may still come: not raised back now
    assert live.tick() == []
    monkeypatch.setattr(live_sync, "PRESUMED_SALE_SECONDS", 0.0)  # the grace is over, no order came
    requests = live.tick()
    assert [r.partition_key for r in requests] == ["shop-b"]  # another app's change: corrected
    assert live.run(requests[0]).success
    assert stock_of(simulator, "shop-b", "S007") == [5]
