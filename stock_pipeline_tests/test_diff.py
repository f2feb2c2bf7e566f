import pandas as pd

from stock_pipeline.core.diff import compute_diff, offers_frame


def offer(offer_id, sku, stock, status="ACTIVE"):
    return {
        "id": offer_id,
        "external": {"id": sku} if sku is not None else None,
        "stock": {"available": stock},
        "publication": {"status": status},
    }


def stock(**values):
    return pd.DataFrame({"sku": list(values), "stock": list(values.values())})


def diff_of(offers, snapshot, ended_by_us=frozenset()):
    d = compute_diff(offers_frame(offers), snapshot, ended_by_us)
    return {row.offer_id: (row.before, row.after, row.action) for row in d.itertuples()}


def test_only_offers_whose_stock_differs_are_written():
    assert diff_of([offer("1", "A", 5), offer("2", "B", 3)], stock(A=5, B=4)) == {"2": (3, 4, "set")}


def test_every_offer_of_a_sku_is_updated():
    assert diff_of([offer("1", "A", 1), offer("2", "A", 2), offer("3", "A", 9)], stock(A=9)) == {
        "1": (1, 9, "set"),
        "2": (2, 9, "set"),
    }


def test_offers_without_external_id_or_unknown_sku_are_left_alone():
    assert diff_of([offer("1", None, 1), offer("2", "", 1), offer("3", "ZZZ", 1)], stock(A=9)) == {}


def test_offers_not_active_are_left_alone():
    offers = [offer("1", "A", 1, "ENDED"), offer("2", "A", 1, "INACTIVE"), offer("3", "A", 1, "ACTIVATING")]
    assert diff_of(offers, stock(A=9)) == {}


def test_zero_ends_the_offer_and_quantity_is_capped():
    assert diff_of([offer("1", "A", 4), offer("2", "B", 5)], stock(A=0, B=250_000)) == {
        "1": (4, 0, "end"),
        "2": (5, 99_999, "set"),
    }


def test_sku_whitespace_on_allegro_side_matches():
    assert diff_of([offer("1", " A ", 4)], stock(A=6)) == {"1": (4, 6, "set")}


def test_empty_inputs_give_an_empty_diff_with_columns():
    d = compute_diff(offers_frame([]), stock(A=1))
    assert d.empty and list(d.columns) == ["offer_id", "sku", "status", "before", "after", "action"]


def test_offers_we_ended_come_back_when_stock_returns():
    offers = [offer("1", "A", 4, "ENDED"), offer("2", "A", 4, "ENDED"), offer("3", "B", 2, "ENDED")]
    assert diff_of(offers, stock(A=6, B=0), ended_by_us={"1", "3"}) == {"1": (4, 6, "activate")}


def test_offers_the_seller_ended_stay_ended():
    assert diff_of([offer("1", "A", 4, "ENDED")], stock(A=6)) == {}


def test_an_active_offer_at_zero_target_is_ended_even_if_listing_shows_zero():
    assert diff_of([offer("1", "A", 0)], stock(A=0)) == {"1": (0, 0, "end")}
