import pandas as pd
import pytest

from stock_pipeline.core.policy import StockPolicy, apply_policy


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
