"""A sale on Allegro is never undone: the order journal read into sales, a hold per sale,
and the holds applied to an account's diff (core/sale_holds.py), pure."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from stock_pipeline.core.contracts import OfferMap, PlanFrame, check_frame
from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.core.sale_holds import (
    HELD_COLUMNS,
    HOLD_COLUMNS,
    RELEASED_EXPIRED,
    RELEASED_WAREHOUSE_CHANGED,
    SALE_COLUMNS,
    OrderEventError,
    apply_holds,
    holds_for_sales,
    sales_from_order_events,
)
from stock_pipeline.core.vocabulary import Action, Method
from stock_pipeline.defs.account_steps import plan_account_offers

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)


def line_item(item_id, offer_id, quantity=1, sku="A", bought_at="2026-11-28T11:50:00.000Z"):
    offer = {"id": offer_id, "name": "an offer"}
    if sku is not None:
        offer["external"] = {"id": sku}
    item = {"id": item_id, "offer": offer, "quantity": quantity, "price": {"amount": "1.00", "currency": "PLN"}}
    if bought_at is not None:
        item["boughtAt"] = bought_at
    return item


def event(event_id, *items, type="BOUGHT", occurred_at="2026-11-28T11:50:01.000Z"):
    return {
        "id": event_id,
        "type": type,
        "occurredAt": occurred_at,
        "order": {
            "seller": {"id": "1"},
            "buyer": {"id": "2", "email": "b@example.com", "login": "b", "guest": False},
            "lineItems": list(items),
        },
    }


def snapshot(*pairs):
    return pd.DataFrame({"sku": pd.Series([s for s, _ in pairs], dtype="string"), "stock": [v for _, v in pairs]})


def holds_of(*rows, now=NOW):
    """Holds (offer_id, sku, quantity, warehouse_stock_at_sale, minutes before `now` bought, line item)."""
    sales = pd.DataFrame(
        {
            "order_event_id": [f"e-{r[5]}" for r in rows],
            "line_item_id": [r[5] for r in rows],
            "offer_id": [r[0] for r in rows],
            "sku": [r[1] for r in rows],
            "quantity": [r[2] for r in rows],
            "bought_at": [now - timedelta(minutes=r[4]) for r in rows],
        }
    )
    # The warehouse value at the sale: one snapshot per row, so each sale can have its own.
    holds = [
        holds_for_sales(
            sales.iloc[[i]],
            snapshot((r[1], r[3])) if r[3] is not None else snapshot(),
            StockPolicy(),
            hold=HOUR,
            now=now,
        )
        for i, r in enumerate(rows)
    ]
    return pd.concat(holds, ignore_index=True)


def diff_of(offers, warehouse, ended_by_us=frozenset()):
    """offers: (offer_id, sku, stock, status)."""
    items = [
        {"id": o, "external": {"id": s}, "stock": {"available": v}, "publication": {"status": st}}
        for o, s, v, st in offers
    ]
    return compute_diff(offers_frame(items), snapshot(*warehouse), ended_by_us)


# --- the order journal -------------------------------------------------------------------------


def test_bought_line_items_become_sales_once_each_other_events_ignored():
    events = [
        event("1", line_item("li-1", "100", 2, sku=" A "), line_item("li-2", "200", 1, sku="B")),
        event("2", line_item("li-1", "100", 2, sku="A"), type="READY_FOR_PROCESSING"),
        event("3", line_item("li-3", "300", 1, sku=None, bought_at=None), occurred_at="2026-11-28T11:55:00+01:00"),
        event("4", line_item("li-1", "100", 2, sku="A")),  # the same line item seen again
        event("5", line_item("li-4", "400", 0)),  # nothing sold
        event("6", line_item("li-5", "500", 1), type="BUYER_CANCELLED"),
    ]
    sales = sales_from_order_events(events)
    assert list(sales.columns) == SALE_COLUMNS
    assert sales[["order_event_id", "line_item_id", "offer_id", "quantity"]].values.tolist() == [
        ["1", "li-1", "100", 2],
        ["1", "li-2", "200", 1],
        ["3", "li-3", "300", 1],
    ]
    assert sales["sku"].tolist()[:2] == ["A", "B"] and pd.isna(sales["sku"].iloc[2])  # trimmed; none named
    assert sales["bought_at"].tolist() == [
        pd.Timestamp("2026-11-28T11:50:00Z"),
        pd.Timestamp("2026-11-28T11:50:00Z"),
        pd.Timestamp("2026-11-28T10:55:00Z"),  # no boughtAt: the event's time, in UTC
    ]
    assert str(sales["bought_at"].dtype) == "datetime64[ns, UTC]"
    assert sales_from_order_events([]).empty and list(sales_from_order_events([]).columns) == SALE_COLUMNS


@pytest.mark.parametrize(
    "bad,message",
    [
        ({**event("7"), "order": {}}, "order event 7: order.lineItems is missing"),
        (event("8", {**line_item("li", "1"), "quantity": 1.5}), r"order event 8, order.lineItems\[0\]: quantity"),
        (event("9", {**line_item("li", "1"), "quantity": "2"}), r"lineItems\[0\]: quantity must be a whole number"),
        (event("10", {**line_item("", "1")}), r"order event 10, order.lineItems\[0\]: id is missing"),
        (event("11", {**line_item("li", "1"), "offer": None}), r"lineItems\[0\]: offer is missing"),
        (event("12", line_item("li", None)), r"lineItems\[0\].offer: id is missing"),
        (event("13", line_item("li", "1", bought_at="yesterday")), "order event 13.*ISO date-time, got 'yesterday'"),
        ({**event(None, line_item("li", "1"))}, "order event #0: id is missing"),
    ],
)
def test_a_malformed_order_event_is_named(bad, message):
    with pytest.raises(OrderEventError, match=message):
        sales_from_order_events([bad])


# --- sales → holds -----------------------------------------------------------------------------


def test_a_hold_records_the_target_the_account_policy_made_when_the_sale_was_recorded():
    sales = sales_from_order_events(
        [
            event("1", line_item("li-1", "100", 1, sku="a"), line_item("li-2", "200", 2, sku="B")),
            event("2", line_item("li-3", "300", 1, sku="GONE"), line_item("li-4", "400", 1, sku=None)),
        ]
    )
    warehouse = snapshot(("A", 4), ("A", 3), ("B", 10))  # two warehouses of A: 7 in all
    policy = StockPolicy(reserve_units=1, case_insensitive_skus=True)
    holds = holds_for_sales(sales, warehouse, policy, hold=HOUR, now=NOW)
    assert list(holds.columns) == HOLD_COLUMNS
    assert holds["line_item_id"].tolist() == ["li-1", "li-2", "li-3", "li-4"]
    assert holds["warehouse_stock_at_sale"].tolist()[:2] == [6, 9]  # 7 - 1 reserved; 10 - 1
    assert holds["warehouse_stock_at_sale"].isna().tolist() == [False, False, True, True]  # not in it; no SKU
    assert (holds["hold_until"] == pd.Timestamp("2026-11-28T12:50:00Z")).all()
    # Another policy, another value: the hold is judged against what this account offers.
    assert (
        holds_for_sales(sales, warehouse, StockPolicy(combine="max"), hold=HOUR, now=NOW)[
            "warehouse_stock_at_sale"
        ].tolist()[1]
        == 10
    )


def test_a_sale_whose_hold_already_ran_out_makes_no_hold():
    sales = sales_from_order_events(
        [event("1", line_item("old", "1", bought_at="2026-11-28T10:00:00Z"), line_item("new", "2"))]
    )
    assert holds_for_sales(sales, snapshot(("A", 1)), StockPolicy(), hold=HOUR, now=NOW)["line_item_id"].tolist() == [
        "new"
    ]
    with pytest.raises(ValueError, match="hold must be a positive duration"):
        holds_for_sales(sales, snapshot(), StockPolicy(), hold=timedelta(0), now=NOW)


# --- holds applied to a diff ---------------------------------------------------------------------


def test_a_raise_of_a_sold_offer_is_held_while_the_warehouse_still_says_what_it_said_at_the_sale():
    # Warehouse 5; a buyer bought 1, Allegro lowered the offer to 4; the order is not booked.
    diff = diff_of([("100", "A", 4, "ACTIVE"), ("200", "B", 1, "ACTIVE")], [("A", 5), ("B", 3)])
    holds = holds_of(("100", "A", 1, 5, 10, "li-1"))
    outcome = apply_holds(diff, holds, now=NOW)
    assert outcome.diff["offer_id"].tolist() == ["200"]  # B is raised as usual
    assert outcome.held[
        ["offer_id", "before", "after", "sales", "units_sold", "warehouse_stock_at_sale"]
    ].values.tolist() == [["100", 4, 5, 1, 1, 5]]
    assert list(outcome.held.columns) == HELD_COLUMNS
    assert "still 5, as when it was sold" in outcome.held["reason"].iloc[0]
    assert outcome.released.empty


def test_writes_that_lower_stock_or_end_the_offer_are_never_held():
    diff = diff_of([("100", "A", 4, "ACTIVE"), ("200", "B", 4, "ACTIVE")], [("A", 2), ("B", 0)])
    holds = holds_of(("100", "A", 1, 2, 10, "li-1"), ("200", "B", 1, 0, 10, "li-2"))
    outcome = apply_holds(diff, holds, now=NOW)
    assert sorted(outcome.diff["action"]) == [Action.END, Action.SET] and outcome.held.empty
    assert outcome.released.empty  # still live: they keep holding raises


def test_re_activating_an_offer_is_a_raise():
    diff = diff_of([("100", "A", 0, "ENDED")], [("A", 3)], ended_by_us={"100"})
    outcome = apply_holds(diff, holds_of(("100", "A", 1, 3, 10, "li-1")), now=NOW)
    assert outcome.diff.empty and outcome.held["action"].tolist() == [Action.ACTIVATE]


def test_the_warehouse_value_changing_releases_the_hold_and_the_write_goes_ahead():
    # The order was booked: the warehouse went 5 -> 4, and a delivery since brought it to 6.
    diff = diff_of([("100", "A", 4, "ACTIVE")], [("A", 6)])
    outcome = apply_holds(diff, holds_of(("100", "A", 1, 5, 10, "li-1")), now=NOW)
    assert outcome.diff["offer_id"].tolist() == ["100"] and outcome.held.empty
    assert outcome.released[["line_item_id", "reason"]].values.tolist() == [["li-1", RELEASED_WAREHOUSE_CHANGED]]


def test_an_expired_hold_is_released_and_the_write_goes_ahead():
    diff = diff_of([("100", "A", 4, "ACTIVE")], [("A", 5)])
    holds = holds_of(("100", "A", 1, 5, 10, "li-1"))
    later = apply_holds(diff, holds, now=NOW + HOUR)  # bought 11:50, held until 12:50
    assert later.diff["offer_id"].tolist() == ["100"] and later.held.empty
    assert later.released[["line_item_id", "reason"]].values.tolist() == [["li-1", RELEASED_EXPIRED]]


def test_several_sales_of_one_offer_each_judged_by_its_own_recorded_value():
    # Sold at warehouse 5, booked (5 -> 4), sold again at 4: Allegro shows 3, the warehouse 4.
    diff = diff_of([("100", "A", 3, "ACTIVE")], [("A", 4)])
    holds = holds_of(("100", "A", 1, 5, 30, "first"), ("100", "A", 1, 4, 5, "second"), ("100", "A", 2, 4, 2, "third"))
    outcome = apply_holds(diff, holds, now=NOW)
    assert outcome.diff.empty
    assert outcome.held[["sales", "units_sold", "warehouse_stock_at_sale"]].values.tolist() == [[2, 3, 4]]
    assert outcome.held["hold_until"].tolist() == [NOW - timedelta(minutes=2) + HOUR]  # the last live hold's end
    assert outcome.released["line_item_id"].tolist() == ["first"]


def test_a_hold_of_an_offer_whose_sku_left_the_warehouse_is_kept_as_it_is():
    offers = [("100", "A", 4, "ACTIVE")]
    holds = holds_of(("100", "A", 1, 5, 10, "li-1"))
    gone = apply_holds(diff_of(offers, [("B", 1)]), holds, now=NOW, targets=pd.Series(dtype="int64"))
    assert gone.diff.empty and gone.held.empty and gone.released.empty  # nothing to write, nothing released
    back = apply_holds(diff_of(offers, [("A", 5)]), holds, now=NOW)  # back with the value of the sale
    assert back.held["offer_id"].tolist() == ["100"]


def test_a_sale_recorded_while_its_sku_was_not_in_the_warehouse_is_released_by_its_first_value():
    outcome = apply_holds(
        diff_of([("100", "A", 4, "ACTIVE")], [("A", 5)]), holds_of(("100", "A", 1, None, 10, "li")), now=NOW
    )
    assert outcome.held.empty and outcome.released["reason"].tolist() == [RELEASED_WAREHOUSE_CHANGED]


def test_the_targets_of_offers_outside_the_diff_release_their_holds():
    """The warehouse booked the order (5 -> 4) and Allegro already shows 4: nothing to write,
    but the hold must go, or a later delivery back to 5 would be held as if it were the sale."""
    diff = diff_of([("100", "A", 4, "ACTIVE")], [("A", 4)])
    holds = holds_of(("100", "A", 1, 5, 10, "li-1"))
    assert apply_holds(diff, holds, now=NOW).released.empty  # from the diff alone: unknown, kept
    outcome = apply_holds(diff, holds, now=NOW, targets=pd.Series({"100": 4}))
    assert outcome.released["line_item_id"].tolist() == ["li-1"]


def test_a_value_changed_then_changed_back_holds_again_until_a_real_sync_has_released_it():
    """Pure rule: judged against the value at the sale each time. The store forgets a hold
    a real sync released, so only a change no sync saw (or a dry run) re-arms it."""
    holds = holds_of(("100", "A", 1, 5, 10, "li-1"))
    moved = apply_holds(diff_of([("100", "A", 4, "ACTIVE")], [("A", 6)]), holds, now=NOW)
    assert moved.held.empty and len(moved.released) == 1
    back = apply_holds(diff_of([("100", "A", 4, "ACTIVE")], [("A", 5)]), holds, now=NOW)
    assert len(back.held) == 1 and back.released.empty


# --- planning an account with holds --------------------------------------------------------------


def test_plan_account_offers_keeps_held_writes_out_of_the_plan_and_plans_them_for_the_audit():
    items = [
        {"id": o, "external": {"id": s}, "stock": {"available": v}, "publication": {"status": "ACTIVE"}}
        for o, s, v in [("100", "A", 4), ("101", "A", 4), ("200", "B", 1), ("300", "C", 9)]
    ]
    offer_map = OfferMap.from_listing("shop", offers_frame(items), total_count=len(items))
    warehouse = snapshot(("A", 5), ("B", 3), ("C", 6))
    holds = holds_of(("100", "A", 1, 5, 10, "li-1"), ("300", "C", 1, 8, 10, "li-2"))
    planned = plan_account_offers(offer_map, warehouse, StockPolicy(), frozenset(), 1000, holds=holds, now=NOW)
    check_frame(PlanFrame, planned.plan)
    # 101 was not sold: raised as usual; 300 is lowered (its hold's value moved: released).
    assert sorted(planned.plan["offer_id"]) == ["101", "200", "300"]
    assert planned.held[["offer_id", "before", "after", "action", "method"]].values.tolist() == [
        ["100", 4, 5, Action.SET, Method.PATCH]
    ]
    check_frame(PlanFrame, planned.held[list(PlanFrame.to_schema().columns)])
    assert planned.released["line_item_id"].tolist() == ["li-2"]
    without = plan_account_offers(offer_map, warehouse, StockPolicy(), frozenset(), 1000)
    assert sorted(without.plan["offer_id"]) == ["100", "101", "200", "300"] and without.held.empty
