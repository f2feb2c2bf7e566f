import pandas as pd

from stock_pipeline.core.guards import GuardLimits, diff_verdict, snapshot_verdict

LIMITS = GuardLimits(max_snapshot_shrink=0.3, max_risky_share=0.3, min_risky_offers=10)


def test_empty_snapshot_is_held():
    verdict = snapshot_verdict(0, 1000, LIMITS)
    assert not verdict.passed and "empty" in verdict.description


def test_halved_snapshot_is_held_and_small_shrink_passes():
    assert not snapshot_verdict(500, 1000, LIMITS).passed
    assert snapshot_verdict(800, 1000, LIMITS).passed
    assert snapshot_verdict(5, None, LIMITS).passed  # nothing to compare with yet


def plan(actions_before_after):
    return pd.DataFrame(actions_before_after, columns=["action", "before", "after"])


def test_ending_half_of_the_offers_is_held():
    diff = plan([("end", 3, 0)] * 50)
    verdict = diff_verdict(diff, active_offers=100, limits=LIMITS)
    assert not verdict.passed and "end 50" in verdict.description


def test_deep_cuts_count_as_risky_but_small_decreases_do_not():
    cuts = plan([("set", 10, 2)] * 40 + [("set", 10, 8)] * 40)
    verdict = diff_verdict(cuts, active_offers=100, limits=LIMITS)
    assert not verdict.passed and verdict.metadata["to_cut"] == 40
    assert diff_verdict(plan([("set", 10, 8)] * 90), 100, LIMITS).passed


def test_a_small_shop_selling_out_is_not_held():
    assert diff_verdict(plan([("end", 1, 0)] * 5), active_offers=6, limits=LIMITS).passed
