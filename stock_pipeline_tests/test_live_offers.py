"""The live offer map: what a confirmed write leaves (pure), and the store's rule that the
newer observation wins (on Postgres)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from stock_pipeline.store.live_offers import LiveOffers, confirmed_offers


def offers(*rows) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["offer_id", "sku", "stock", "status"])
    return frame.astype({"offer_id": "string", "sku": "string", "stock": "int64", "status": "string"})


def test_confirmed_writes_give_the_stock_of_the_last_phase_and_the_status_of_end_or_activate():
    before = offers(("1", "a", 5, "ACTIVE"), ("2", "b", 0, "ENDED"), ("3", "c", 3, "ACTIVE"), ("4", "d", 2, "ACTIVE"))
    results = pd.DataFrame(
        {
            "offer_id": ["2", "1", "2", "3", "4"],
            "after": [4, 7, 4, 0, 0],
            "action": ["set", "set", "activate", "end", "end"],
            "status": ["success", "success", "success", "failed", "success"],
        }
    )
    now = confirmed_offers(results, before).set_index("offer_id")
    assert now.to_dict("index") == {
        "1": {"sku": "a", "stock": 7, "status": "ACTIVE"},
        "2": {"sku": "b", "stock": 4, "status": "ACTIVE"},  # re-activated with its quantity
        "4": {"sku": "d", "stock": 0, "status": "ENDED"},
    }  # offer 3's END failed: not changed


@pytest.fixture
def store(postgres_url):
    from stock_pipeline.store.engine import engine_for

    return LiveOffers(engine_for(postgres_url))


def test_a_listing_never_puts_back_a_value_older_than_what_the_journal_brought(store):
    t0 = datetime.now(timezone.utc)
    store.merge_listing("shop", offers(("1", "a", 5, "ACTIVE"), ("2", "b", 5, "ACTIVE")), t0)
    store.observe("shop", offers(("1", "a", 3, "ACTIVE")), t0 + timedelta(seconds=5))  # a purchase, re-read
    # A listing that started before that re-read (its page held the old 5), and lists offer 3 new.
    store.merge_listing("shop", offers(("1", "a", 5, "ACTIVE"), ("3", "c", 9, "ACTIVE")), t0 + timedelta(seconds=2))
    now = store.offers("shop").set_index("offer_id")["stock"].to_dict()
    assert now == {"1": 3, "3": 9}  # offer 2 was gone from the newer listing; offer 1 keeps the newer value
    assert store.state("shop").offers_listed_at == t0 + timedelta(seconds=2)
    assert store.active_count("shop") == 2


def test_a_map_is_current_only_from_a_listing_that_started_after_the_journal_position(store):
    t0 = datetime.now(timezone.utc)
    store.merge_listing("shop", offers(("1", "a", 5, "ACTIVE")), t0)
    store.start_following("shop", t0 + timedelta(seconds=1))
    assert not store.state("shop").map_current  # that listing may have missed changes before the position
    store.merge_listing("shop", offers(("1", "a", 5, "ACTIVE")), t0 + timedelta(seconds=2))
    assert store.state("shop").map_current
