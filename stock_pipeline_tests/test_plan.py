import pandas as pd
import pytest

from stock_pipeline.core.plan import minimum_calls, plan_writes


def diff(rows):
    return pd.DataFrame(rows, columns=["offer_id", "sku", "status", "before", "after", "action"]).astype(
        {"before": "int64", "after": "int64"}
    )


def rows(n, after, start=0):
    action = "end" if after == 0 else "set"
    return [(str(start + i), f"S{start + i}", "ACTIVE", after + 1, after, action) for i in range(n)]


def test_single_offer_per_value_goes_by_patch():
    plan = plan_writes(diff(rows(1, 5) + rows(1, 7, start=10)))
    assert set(plan["method"]) == {"patch"} and set(plan["batch"]) == {-1}


def test_many_offers_with_one_value_share_commands_of_at_most_batch_size():
    plan = plan_writes(diff(rows(2500, 3)), batch_size=1000)
    assert set(plan["method"]) == {"quantity_command"}
    sizes = plan.groupby("batch").size().sort_index().tolist()
    assert sizes == [1000, 1000, 500]


def test_each_command_holds_one_value():
    plan = plan_writes(diff(rows(5, 3) + rows(5, 4, start=100)))
    assert plan.groupby("batch")["after"].nunique().max() == 1
    assert plan["batch"].nunique() == 2


def test_offers_going_to_zero_use_end_command_or_patch():
    many = plan_writes(diff(rows(3, 0)))
    assert set(many["method"]) == {"publication_command"}
    one = plan_writes(diff(rows(1, 0)))
    assert one["method"].tolist() == ["patch"] and one["after"].tolist() == [0]


def test_tie_goes_to_patch():
    plan = plan_writes(diff(rows(2, 8)))
    assert set(plan["method"]) == {"patch"}


def test_plan_cost_equals_minimum():
    d = diff(rows(1, 5) + rows(3, 6, start=10) + rows(1500, 7, start=100) + rows(4, 0, start=5000))
    plan = plan_writes(d)
    patches = int((plan["method"] == "patch").sum())
    commands = plan.loc[plan["batch"] >= 0, "batch"].nunique()
    offers = 20_000
    assert 20 + patches + 2 * commands == minimum_calls(offers, d)


def test_batch_size_is_bounded_by_allegro_maximum():
    with pytest.raises(ValueError, match="batch_size"):
        plan_writes(diff(rows(1, 1)), batch_size=1001)


def test_reactivation_sets_quantity_first_then_one_activate_command():
    d = diff(
        [
            ("1", "A", "ENDED", 4, 6, "activate"),
            ("2", "B", "ENDED", 6, 6, "activate"),
            ("3", "C", "ACTIVE", 1, 6, "set"),
        ]
    )
    plan = plan_writes(d)
    sets = plan[plan["action"] == "set"]
    assert sorted(sets["offer_id"]) == ["1", "3"]  # offer 2 already holds 6
    activate = plan[plan["action"] == "activate"]
    assert sorted(activate["offer_id"]) == ["1", "2"]
    assert set(activate["method"]) == {"publication_command"} and activate["batch"].nunique() == 1
    assert not set(activate["batch"]) & set(sets.loc[sets["batch"] >= 0, "batch"])
    assert minimum_calls(3, d) == 1 + 2 + 2  # listing, the quantity command of value 6, the activation
