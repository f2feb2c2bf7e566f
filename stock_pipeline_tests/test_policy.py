import pandas as pd
import pytest

from stock_pipeline.core.contracts import OfferMap, SnapshotFrame, check_frame
from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.plan import plan_writes
from stock_pipeline.core.policy import StockPolicy, apply_policy
from stock_pipeline.defs.account_steps import plan_account_offers


def rows(*pairs):
    return pd.DataFrame(pairs, columns=["sku", "stock"])


def targets(frame, policy):
    out = apply_policy(frame, policy)
    return dict(zip(out["sku"], out["stock"]))


def test_default_sums_several_warehouses():
    assert targets(rows(("A", 2), ("A", 3), ("B", 1)), StockPolicy()) == {"A": 5, "B": 1}


@pytest.mark.parametrize("combine,expected", [("max", 3), ("min", 2)])
def test_other_ways_to_combine(combine, expected):
    assert targets(rows(("A", 2), ("A", 3)), StockPolicy(combine=combine)) == {"A": expected}


def test_reserve_units_and_percent_round_towards_not_overselling():
    policy = StockPolicy(reserve_units=1, reserve_percent=10)
    # 10 - 1 - ceil(1.0) = 8;  3 - 1 - ceil(0.3) = 1;  1 - 1 - 1 -> 0, never negative
    assert targets(rows(("A", 10), ("B", 3), ("C", 1)), policy) == {"A": 8, "B": 1, "C": 0}


def test_cap_and_allegro_maximum():
    assert targets(rows(("A", 500), ("B", 7)), StockPolicy(cap=100)) == {"A": 100, "B": 7}
    assert targets(
        rows(
            ("A", 10**7),
        ),
        StockPolicy(),
    ) == {"A": 99_999}


def test_a_sum_beyond_int64_saturates_instead_of_wrapping_to_zero():
    many_huge_rows = rows(*[("A", 2**53)] * 2000)  # 2000 x 2^53 > 2^63
    assert targets(many_huge_rows, StockPolicy()) == {"A": 99_999}


def test_case_insensitive_skus_are_merged():
    assert targets(rows(("abc", 1), ("ABC", 2)), StockPolicy(case_insensitive_skus=True)) == {"ABC": 3}


def test_bad_policy_names_every_problem():
    with pytest.raises(ValueError, match="reserve_units.*cap.*combine"):
        StockPolicy(reserve_units=-1, cap=200_000, combine="avg")


@pytest.mark.parametrize(
    "policy",
    [StockPolicy(), StockPolicy(combine="max", reserve_units=1), StockPolicy(case_insensitive_skus=True)],
    ids=["sum", "max with reserve", "case-insensitive"],
)
def test_targets_of_listed_skus_are_those_of_the_whole_snapshot(policy):
    snapshot = rows(("A", 2), ("a", 7), ("A", 3), ("B", 1), ("C", 9), ("d", 4)).astype({"sku": "string"})
    listed = pd.Series(["A", None, "B", "B", "D", "X"], dtype="string")
    whole = targets(snapshot, policy)
    out = apply_policy(snapshot, policy, listed_skus=listed)
    wanted = {s.upper() if policy.case_insensitive_skus else s for s in listed.dropna()}
    assert dict(zip(out["sku"], out["stock"])) == {sku: stock for sku, stock in whole.items() if sku in wanted}
    assert out["sku"].dtype == "string" and out["stock"].dtype == "int64"


@pytest.mark.parametrize(
    "policy",
    [StockPolicy(), StockPolicy(combine="min", reserve_percent=10.0), StockPolicy(case_insensitive_skus=True, cap=5)],
    ids=["sum", "min with reserve", "case-insensitive capped"],
)
def test_an_accounts_plan_is_the_diff_of_the_policys_targets(policy):
    snapshot = rows(("A", 2), ("a", 7), ("A", 3), ("B", 0), ("C", 9), ("d", 4), ("E", 120_000)).astype(
        {"sku": "string"}
    )
    items = [("1", "A", 1, "ACTIVE"), ("2", None, 1, "ACTIVE"), ("3", "B", 4, "ACTIVE"), ("4", "D", 0, "ENDED")]
    items += [("5", "C", 9, "ACTIVE"), ("6", "X", 3, "ACTIVE"), ("7", "E", 1, "ACTIVE"), ("8", "a", 0, "ENDED")]
    offers = offers_frame(
        [
            {"id": i, "external": {"id": s} if s else None, "stock": {"available": n}, "publication": {"status": st}}
            for i, s, n, st in items
        ]
    )
    offer_map = OfferMap.from_listing("acc", offers, len(offers))
    ended_by_us = {"4", "8"}
    expected = plan_writes(
        compute_diff(offers, apply_policy(snapshot, policy), ended_by_us, policy.case_insensitive_skus), 1000
    )
    check_frame(SnapshotFrame, snapshot)  # the checked snapshot: its combined stock is remembered
    for _ in range(2):  # worked out, then remembered
        planned = plan_account_offers(offer_map, snapshot, policy, ended_by_us, 1000)
        pd.testing.assert_frame_equal(planned.plan, expected)
    assert len(expected) >= 3
    snapshot["stock"] = snapshot["stock"] + 1  # a new column: the frame is no longer the one remembered
    expected = plan_writes(
        compute_diff(offers, apply_policy(snapshot, policy), ended_by_us, policy.case_insensitive_skus), 1000
    )
    pd.testing.assert_frame_equal(plan_account_offers(offer_map, snapshot, policy, ended_by_us, 1000).plan, expected)
