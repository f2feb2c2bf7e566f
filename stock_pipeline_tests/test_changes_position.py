"""Where STOCK_CHANGES_QUERY resumes (core/changes_position.py): pure, no I/O."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from stock_pipeline.core.changes_position import (
    FIRST_SINCE,
    LOOKBACK,
    ChangesPosition,
    ChangesPositionError,
    advanced,
    since_of,
)

T = datetime(2026, 11, 28, 10, 0, 0)


def test_the_first_read_asks_for_every_row():
    assert since_of(None) == FIRST_SINCE


def test_the_position_is_the_newest_change_seen_and_the_next_read_looks_back_before_it():
    position = advanced(None, [T, T + timedelta(seconds=30), None, T - timedelta(hours=1)])
    assert position.since() == T + timedelta(seconds=30) - LOOKBACK
    # Rows older than the position (a late commit within the window) do not move it back.
    assert advanced(position, [T]) == position
    # A newer one moves it on.
    assert advanced(position, [T + timedelta(minutes=5)]).since() == T + timedelta(minutes=5) - LOOKBACK


def test_nothing_read_keeps_the_position():
    position = advanced(None, [T])
    assert advanced(position, []) == position
    assert advanced(None, [None, float("nan")]) is None


def test_aware_timestamps_stay_aware_across_the_cursor():
    moment = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)
    position = ChangesPosition.parse(advanced(None, [pd.Timestamp(moment)]).dump())
    assert position.since() == moment - LOOKBACK
    assert position.since().tzinfo is not None


def test_text_timestamps_are_bound_back_as_text_in_the_warehouses_own_format():
    spaced = advanced(None, ["2026-11-28 10:00:00.250000", "2026-11-28 09:00:00"])
    assert spaced.since() == "2026-11-28 09:58:00.250000"
    with_t = advanced(None, ["2026-11-28T10:00:00"])
    assert with_t.since() == "2026-11-28T09:58:00"


@pytest.mark.parametrize(
    "value, named",
    [(17, "int '17'"), ("yesterday", "the text 'yesterday'"), (3.5, "float '3.5'")],
)
def test_a_changed_at_that_is_no_timestamp_is_a_clear_error(value, named):
    with pytest.raises(ChangesPositionError, match=f"changed_at must be a timestamp; got {named}"):
        advanced(None, [value])


def test_mixed_time_zones_are_a_clear_error():
    with pytest.raises(ChangesPositionError, match="with and without a time zone"):
        advanced(None, [T, T.replace(tzinfo=timezone.utc)])
