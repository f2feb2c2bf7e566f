"""One unit for shares: percent. `--reserve-percent` and the guard settings are written
and shown as percentages ("10%", "30%"); the guards still read a fraction (0.3) as before,
and whatever would be ambiguous is refused or pointed out rather than guessed."""

from __future__ import annotations

import pandas as pd
import pytest

from stock_pipeline.cli.main import build_parser
from stock_pipeline.core.guards import GuardLimits, diff_verdict, snapshot_verdict
from stock_pipeline.foundation.errors import SettingsError
from stock_pipeline.foundation.settings import load_settings

GUARD_SHARES = ("STOCK_GUARD_MAX_SNAPSHOT_SHRINK", "STOCK_GUARD_MAX_RISKY_SHARE")


def reserve_percent(value: str) -> float:
    return build_parser().parse_args(["accounts", "policy", "shop", "--reserve-percent", value]).reserve_percent


@pytest.mark.parametrize("name", GUARD_SHARES)
def test_guard_shares_are_percentages_and_read_fractions_too(name):
    attribute = name.lower()
    assert getattr(load_settings({name: "30%"}), attribute) == pytest.approx(0.3)
    assert getattr(load_settings({name: "0.3"}), attribute) == pytest.approx(0.3)
    assert getattr(load_settings({name: "12.5%"}), attribute) == pytest.approx(0.125)


@pytest.mark.parametrize("name", GUARD_SHARES)
def test_a_bare_guard_number_above_one_is_refused_with_the_percent_form(name):
    with pytest.raises(SettingsError, match=rf"{name} must be between 0% and 100%.*for 30% write 30%"):
        load_settings({name: "30"})
    with pytest.raises(SettingsError, match=rf"{name} must be a percentage such as 30%"):
        load_settings({name: "thirty"})


def test_reserve_percent_takes_percent_with_or_without_the_sign(capsys):
    assert reserve_percent("10%") == reserve_percent("10") == 10.0
    assert capsys.readouterr().err == ""
    assert reserve_percent("0.5") == 0.5  # a number is percent here: said, since a guard would read 0.5 as 50%
    assert "keeps back 0.5% of the stock, not 50%" in capsys.readouterr().err
    for bad in ("100", "100%", "-1", "ten"):
        with pytest.raises(SystemExit) as exit_:
            reserve_percent(bad)
        assert exit_.value.code == 2


def test_guards_report_in_percent():
    limits = GuardLimits(max_snapshot_shrink=0.3, max_risky_share=0.3, min_risky_offers=1)
    assert "(-50%, more than the allowed 30%)" in snapshot_verdict(50, 100, limits).description
    diff = pd.DataFrame({"action": ["end"] * 4, "before": [5] * 4, "after": [0] * 4})
    assert "(40%, more than the allowed 30%)" in diff_verdict(diff, 10, limits).description
