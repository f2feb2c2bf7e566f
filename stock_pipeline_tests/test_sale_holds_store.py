"""The store of sale holds (store/sale_holds.py) on Postgres and SQLite: recording is
idempotent, a released hold stays released when its order event comes again, holds that
ran out are purged."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.core.sale_holds import HOLD_COLUMNS, holds_for_sales, sales_from_order_events
from stock_pipeline.foundation.tokens import TokenCipher
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import dispose_engines, engine_for
from stock_pipeline.store.sale_holds import SaleHolds
from stock_pipeline.store.schema import accounts
from stock_pipeline_tests.helpers import scratch_database

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


@pytest.fixture(params=["postgres", "sqlite"])
def store(request, tmp_path):
    if request.param == "sqlite":
        yield SaleHolds(engine_for(f"sqlite:///{tmp_path / 'pipeline.db'}"))
        dispose_engines()
        return
    with scratch_database() as url:
        yield SaleHolds(engine_for(url))


def bought(event_id, *items):
    """A BOUGHT event; items: (line item, offer, sku, quantity, minutes before NOW)."""
    return {
        "id": event_id,
        "type": "BOUGHT",
        "occurredAt": NOW.isoformat(),
        "order": {
            "lineItems": [
                {
                    "id": li,
                    "offer": {"id": offer, "name": "x", "external": {"id": sku}},
                    "quantity": quantity,
                    "boughtAt": (NOW - timedelta(minutes=minutes)).isoformat(),
                }
                for li, offer, sku, quantity, minutes in items
            ]
        },
    }


def holds(*events, warehouse=(("A", 5), ("B", 2))):
    snapshot = pd.DataFrame(
        {"sku": pd.Series([s for s, _ in warehouse], dtype="string"), "stock": [v for _, v in warehouse]}
    )
    return holds_for_sales(sales_from_order_events(events), snapshot, StockPolicy(), hold=HOUR, now=NOW)


def test_the_same_order_event_seen_twice_records_once(store):
    first = holds(bought("e1", ("li-1", "100", "A", 1, 10), ("li-2", "200", "B", 2, 10)))
    assert store.record("shop", first) == 2
    assert store.record("shop", first) == 0
    # A later poll: the same event again beside a new one.
    assert (
        store.record("shop", holds(bought("e1", ("li-1", "100", "A", 1, 10)), bought("e2", ("li-3", "100", "A", 1, 1))))
        == 1
    )
    active = store.active("shop", NOW)
    assert list(active.columns) == HOLD_COLUMNS
    assert active[["line_item_id", "offer_id", "quantity", "warehouse_stock_at_sale"]].values.tolist() == [
        ["li-1", "100", 1, 5],
        ["li-2", "200", 2, 2],
        ["li-3", "100", 1, 5],
    ]
    assert active["hold_until"].tolist() == [NOW + timedelta(minutes=50)] * 2 + [NOW + timedelta(minutes=59)]
    assert str(active["hold_until"].dtype) == "datetime64[ns, UTC]"
    assert store.active("other-shop", NOW).empty  # per account


def test_a_missing_warehouse_value_is_stored_as_missing(store):
    store.record("shop", holds(bought("e1", ("li-1", "100", "GONE", 1, 10))))
    assert store.active("shop", NOW)["warehouse_stock_at_sale"].isna().tolist() == [True]


def test_released_holds_stay_released_when_their_event_comes_again(store):
    recorded = holds(
        bought("e1", ("li-1", "100", "A", 1, 10), ("li-2", "100", "A", 1, 10), ("li-3", "300", "B", 1, 10))
    )
    store.record("shop", recorded)
    assert store.release("shop", ["li-1"], now=NOW) == 1
    assert store.release("shop", ["li-1"], now=NOW) == 0  # already released
    assert store.active("shop", NOW)["line_item_id"].tolist() == ["li-2", "li-3"]
    assert store.release_offers("shop", ["300"], now=NOW) == 1
    assert store.active("shop", NOW)["line_item_id"].tolist() == ["li-2"]
    assert store.record("shop", recorded) == 0  # a replay of the journal brings nothing back
    assert store.active("shop", NOW)["line_item_id"].tolist() == ["li-2"]


def test_holds_that_ran_out_are_not_active_and_are_purged(store):
    store.record("shop", holds(bought("e1", ("old", "100", "A", 1, 50), ("new", "100", "A", 1, 5))))
    store.record("other", holds(bought("e9", ("old-other", "100", "A", 1, 50))))
    later = NOW + timedelta(minutes=20)  # "old" ran out at 12:10
    assert store.active("shop", later)["line_item_id"].tolist() == ["new"]
    assert store.purge_expired(later, account="shop") == 1
    assert store.purge_expired(later) == 1  # the other account's
    assert store.record("shop", holds(bought("e1", ("old", "100", "A", 1, 50)))) == 1  # NOW: not yet run out
    assert store.active("shop", later)["line_item_id"].tolist() == ["new"]


def test_removing_an_account_deletes_its_holds(store):
    store.record("shop", holds(bought("e1", ("li-1", "100", "A", 1, 10))))
    store.record("other", holds(bought("e2", ("li-2", "100", "A", 1, 10))))
    with store.engine.begin() as conn:  # an account row as `accounts add` leaves it (tokens aside)
        conn.execute(accounts.insert().values(name="shop"))
    removed = AccountStore(store.engine, TokenCipher([])).remove("shop")
    assert removed.deleted["sale_holds"] == 1
    assert store.active("shop", NOW).empty and len(store.active("other", NOW)) == 1
