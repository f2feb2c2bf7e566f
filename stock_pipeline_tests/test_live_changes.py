"""The live sync with STOCK_CHANGES_QUERY: each tick reads only the rows changed since its
position, and STOCK_QUERY is still read whole every LIVE_SYNC_FULL_READ_SECONDS. Over real
HTTP (the simulator), Postgres and Redis real, the warehouse an SQLite file with text
timestamps."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from stock_pipeline.defs.live_sync import LIVE_JOB
from stock_pipeline.foundation.settings import load_settings
from stock_pipeline_tests.helpers import register_account, seed
from stock_pipeline_tests.live_world import LiveWorld

CHANGES = "SELECT sku, stock, changed_at FROM products WHERE changed_at > :since"
T0 = "2026-11-28 09:00:00"  # most rows last changed an hour before the newest change
NEWEST = "2026-11-28 10:00:00"


def execute(url: str, statement: str, **params) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(statement), params)
    engine.dispose()


@pytest.fixture
def live(pipeline_env, monkeypatch, simulator):
    monkeypatch.setenv("STOCK_CHANGES_QUERY", CHANGES)
    settings = load_settings()
    url = settings.stock_database_url
    execute(url, "ALTER TABLE products ADD COLUMN changed_at TEXT")
    for i in range(40):
        execute(url, "INSERT INTO products VALUES (:sku, 5, :t)", sku=f"S{i:03d}", t=NEWEST if i == 39 else T0)
    register_account(settings, simulator, "shop-a")
    seed(simulator, "shop-a", [(f"S{i:03d}", 5, "ACTIVE") for i in range(40)])
    world = LiveWorld(settings, simulator)
    world.start(["shop-a"])
    assert world.tick() == []
    return world


def set_stock(world, sku: str, stock: int, changed_at: str | None) -> None:
    if changed_at is None:  # a change the column does not show (a bulk import that forgot it)
        execute(world.settings.stock_database_url, "UPDATE products SET stock = :v WHERE sku = :s", v=stock, s=sku)
    else:
        execute(
            world.settings.stock_database_url,
            "UPDATE products SET stock = :v, changed_at = :t WHERE sku = :s",
            v=stock,
            s=sku,
            t=changed_at,
        )


def stock_of(simulator, sku):
    return [o["stock"] for o in simulator.offers("shop-a") if o["sku"] == sku]


def write_all(world, requests):
    assert requests and all(r.job_name == LIVE_JOB for r in requests)
    for request in requests:
        assert world.run(request).success


def full_read_due(world) -> None:
    """As if LIVE_SYNC_FULL_READ_SECONDS had passed since the last whole read."""
    cursor = json.loads(world.cursor)
    cursor["full_read_at"] = (datetime.now(timezone.utc) - timedelta(hours=1)).isoformat()
    world.cursor = json.dumps(cursor)


def test_a_tick_reads_only_changed_rows_and_the_periodic_full_read_catches_the_rest(live, simulator):
    set_stock(live, "S001", 9, "2026-11-28 10:05:00")
    set_stock(live, "S002", 8, None)

    write_all(live, live.tick())
    # Only the row the changes query returned was read: S002's change is not seen yet.
    assert stock_of(simulator, "S001") == [9] and stock_of(simulator, "S002") == [5]
    assert live.tick() == []

    full_read_due(live)
    write_all(live, live.tick())
    assert stock_of(simulator, "S002") == [8]
    assert live.tick() == []


def test_a_change_committed_late_with_an_older_timestamp_is_still_read(live, simulator):
    set_stock(live, "S001", 9, "2026-11-28 10:05:00")
    write_all(live, live.tick())
    # Its transaction began before S001's but committed after the tick read S001: its
    # timestamp is older than the position, within the look-back.
    set_stock(live, "S003", 7, "2026-11-28 10:04:00")
    write_all(live, live.tick())
    assert stock_of(simulator, "S003") == [7]


def test_a_tick_evaluated_again_after_a_lost_cursor_reads_the_same_changes(live, simulator):
    set_stock(live, "S004", 2, "2026-11-28 10:06:00")
    before = live.cursor
    first = live.tick(keep_cursor=False)  # the daemon died before storing the cursor
    live.cursor = before
    again = live.tick()
    assert [r.run_key for r in first] == [r.run_key for r in again] and first
    write_all(live, again)
    assert stock_of(simulator, "S004") == [2]
    assert live.tick() == []
