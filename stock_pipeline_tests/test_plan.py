import pandas as pd
import pytest

from stock_pipeline.core.plan import WriteRates, minimum_calls, plan_seconds, plan_writes


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


# ---- routes by time: the per-user PATCH budget against the account's share of the client_id ----

ALONE = WriteRates(calls=150.0, patches=2500 / 60, command_offers=150.0)  # one account, the whole client_id
ONE_OF_TEN = WriteRates(calls=15.0, patches=2500 / 60, command_offers=150.0)


def distinct_values(n, start=0):
    """n offers, each to a value of its own (as after a delivery): one PATCH each by calls."""
    return [(str(start + i), f"S{start + i}", "ACTIVE", 1, 10 + start + i, "set") for i in range(n)]


def cost(plan):
    patches = int((plan["method"] == "patch").sum())
    return patches, plan.loc[plan["batch"] >= 0, "batch"].nunique(), int((plan["batch"] >= 0).sum())


def test_by_time_an_account_alone_moves_patches_to_commands_while_the_patch_budget_binds():
    d = diff(distinct_values(3000))
    by_calls = plan_writes(d)
    by_time = plan_writes(d, rates=ALONE)
    assert cost(by_calls) == (3000, 0, 0)
    patches, commands, _ = cost(by_time)
    # 3 000 PATCHes alone take 72 s on the PATCH budget; with x of them as one-offer commands
    # the plan takes max((3000 + x) / 150, (3000 - x) / 41.7): shortest near x = 1 696.
    assert 1600 < commands < 1800 and patches == 3000 - commands
    assert plan_seconds(by_time, ALONE) < 0.5 * plan_seconds(by_calls, ALONE)
    assert plan_seconds(by_time, ALONE) == pytest.approx((3000 + commands) / 150, rel=0.01)
    assert by_time.groupby("batch").size().drop(-1, errors="ignore").eq(1).all()  # one value per command
    assert sorted(by_time["offer_id"]) == sorted(d["offer_id"])


def test_by_time_accounts_sharing_the_client_id_keep_the_fewest_calls():
    # One of ten accounts: its 400 calls take 27 s at its share, its PATCHes 9.6 s on their
    # budget. Calls bind, so a move would only lengthen the plan.
    d = diff(distinct_values(400) + rows(5, 3, start=10_000))
    assert cost(plan_writes(d, rates=ONE_OF_TEN)) == cost(plan_writes(d))


def test_by_time_ties_move_before_single_offers_and_cost_no_call():
    pairs = [(str(i), f"S{i}", "ACTIVE", 1, 10 + i // 2, "set") for i in range(2000)]  # 1 000 values, 2 offers each
    singles = distinct_values(200, start=10_000)
    plan = plan_writes(diff(pairs + singles), rates=ALONE)
    moved = plan.loc[plan["batch"] >= 0, "offer_id"].astype(int)
    # 2 200 PATCHes take 53 s on their budget, 2 200 calls 15 s: moving pairs costs no call,
    # and once ~1 600 offers have moved the calls bind, so no single ever needs to.
    assert 1500 < len(moved) and set(moved) <= set(range(2000))
    assert cost(plan)[0] + 2 * cost(plan)[1] == 2200  # the same calls as by calls alone


def test_by_time_with_no_patch_to_move_is_the_plan_by_calls():
    d = diff(rows(2500, 3) + rows(3, 0, start=9000))
    pd.testing.assert_frame_equal(plan_writes(d, rates=ALONE), plan_writes(d))


def test_write_rates_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        WriteRates(calls=0, patches=1, command_offers=1)


def test_by_time_a_handful_of_patches_never_waits_on_a_command():
    # 60 PATCHes: 25 go at once, the rest within a second on the PATCH budget; any command
    # takes at least its 1 s before the first poll, so nothing moves.
    rates = WriteRates(calls=150.0, patches=2500 / 60, command_offers=150.0, patch_burst=25, command_wait=1.0)
    d = diff(distinct_values(60))
    assert cost(plan_writes(d, rates=rates)) == (60, 0, 0)
    assert cost(plan_writes(diff(distinct_values(1000)), rates=rates))[1] > 300
