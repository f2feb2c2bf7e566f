"""The live offer map: what a confirmed write leaves (pure), and the store's rule that the
newer observation wins, on PostgreSQL (one statement of JSON rows) and on SQLite (the demo's
database: one row at a time), which give the same map."""

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


@pytest.fixture(params=["postgresql", "sqlite"])
def store(request, postgres_url, tmp_path):
    from stock_pipeline.store.engine import engine_for

    url = postgres_url if request.param == "postgresql" else f"sqlite:///{tmp_path / 'pipeline.db'}"
    engine = engine_for(url)
    assert engine.dialect.name == request.param
    return LiveOffers(engine)


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


def test_a_merge_keeps_missing_skus_odd_text_and_the_last_row_of_an_offer_given_twice(store):
    t0 = datetime.now(timezone.utc)
    listed = offers(
        ("1", None, 5, "ACTIVE"),  # an offer without a SKU
        ("2", "", 0, "ENDED"),  # an empty SKU is not a missing one
        ("3", "żółw tab\there, \\ back\nslash 'quote\" {brace}", 7, "INACTIVE"),
        ("4", "d", 1, "ACTIVE"),
        ("4", "d", 2, "ACTIVE"),  # the pages shifted: the later row is the newer one
    )
    store.merge_listing("shop", listed, t0)
    store.merge_listing("other", offers(("1", "x", 9, "ACTIVE")), t0)  # the same offer id in another account
    now = store.offers("shop").sort_values("offer_id").reset_index(drop=True)
    expected = listed.drop_duplicates("offer_id", keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(now, expected)
    assert now["sku"].isna().tolist() == [True, False, False, False]
    assert store.offers("other")["stock"].tolist() == [9]


def test_writes_observed_after_a_listing_win_and_an_older_observation_is_ignored(store):
    t0 = datetime.now(timezone.utc)
    store.merge_listing("shop", offers(*[(str(i), f"s{i}", i, "ACTIVE") for i in range(1, 1001)]), t0)
    store.observe("shop", offers(("7", "s7", 70, "ACTIVE"), ("8", "s8", 0, "ENDED")), t0 + timedelta(seconds=3))
    store.observe("shop", offers(("7", "s7", 1, "ACTIVE"), ("9", "s9", 90, "ACTIVE")), t0 + timedelta(seconds=1))
    now = store.offers("shop").set_index("offer_id")
    assert len(now) == 1000
    assert now.loc["7"].tolist() == ["s7", 70, "ACTIVE"]  # the re-read at +1 s is older than the write at +3 s
    assert now.loc["8"].tolist() == ["s8", 0, "ENDED"]
    assert now.loc["9"].tolist() == ["s9", 90, "ACTIVE"]  # newer than the listing
    assert now.loc["10"].tolist() == ["s10", 10, "ACTIVE"]
