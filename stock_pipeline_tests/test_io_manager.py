"""The frames IO manager's storage: Parquet round trips keep every dtype and the offer
map's facts, the disk stays bounded, a damaged file is a clear error, and a value
pickled by an earlier release is never unpickled."""

from __future__ import annotations

import os
import pickle
from datetime import datetime, timezone

import pandas as pd
import pytest

from stock_pipeline.core.contracts import OfferMap, PlanFrame, SnapshotFrame, check_frame, kept_contract
from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.plan import plan_writes
from stock_pipeline.defs.io_manager import (
    KEEP_RUNS,
    StoredValueError,
    find_value,
    load_value,
    prune,
    store_value,
)

SNAPSHOT = pd.DataFrame({"sku": pd.Series(["A", "B", "C"], dtype="string"), "stock": [7, 0, 120_000]})
OFFERS = offers_frame(
    [
        {"id": "1", "external": {"id": " A "}, "stock": {"available": 3}, "publication": {"status": "ACTIVE"}},
        {"id": "2", "external": None, "stock": {"available": 1}, "publication": {"status": "ACTIVE"}},
        {"id": "3", "external": {"id": "B"}, "stock": {"available": 2}, "publication": {"status": "ENDED"}},
        {"id": "4", "external": {"id": "C"}, "stock": {"available": 5}, "publication": {"status": "ACTIVE"}},
    ]
)
PLAN = plan_writes(compute_diff(OFFERS, SNAPSHOT), 1000)


@pytest.mark.parametrize(
    "frame",
    [
        pytest.param(SNAPSHOT, id="snapshot"),
        pytest.param(PLAN, id="plan"),
        pytest.param(PLAN.iloc[:0], id="empty plan"),
        pytest.param(PLAN.assign(would_be_held=True, held_by=pd.Series([None] * len(PLAN), dtype="string")), id="bool"),
    ],
)
def test_a_frame_comes_back_with_its_values_dtypes_and_index(tmp_path, frame):
    store_value(frame, tmp_path / "value.parquet")
    loaded = load_value(tmp_path / "value.parquet")
    pd.testing.assert_frame_equal(loaded, frame, check_exact=True)
    assert list(loaded.dtypes.astype(str)) == list(frame.dtypes.astype(str))


def test_an_offer_map_comes_back_with_its_facts(tmp_path):
    listed_at = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)
    partial = OfferMap.from_listing("shop-1", OFFERS, total_count=9, listed_at=listed_at)
    store_value(partial, tmp_path / "offers.parquet")
    loaded = load_value(tmp_path / "offers.parquet")
    assert isinstance(loaded, OfferMap)
    assert (loaded.account, loaded.complete, loaded.total_count, loaded.listed_at) == ("shop-1", False, 9, listed_at)
    pd.testing.assert_frame_equal(loaded.offers, OFFERS, check_exact=True)
    assert OFFERS["sku"].isna().any()  # a missing external.id survives as a missing value


def test_a_value_of_another_type_is_refused_and_nothing_is_written(tmp_path):
    with pytest.raises(TypeError, match="stores DataFrames and OfferMaps, not dict"):
        store_value({"a": 1}, tmp_path / "value.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "content", [b"", b"PAR1 this is not parquet", pickle.dumps(SNAPSHOT)], ids=["empty", "junk", "pickle"]
)
def test_a_damaged_file_is_a_clear_error(tmp_path, content):
    path = tmp_path / "value.parquet"
    path.write_bytes(content)
    with pytest.raises(StoredValueError, match=r"value.parquet is not a readable stored asset value .*materialise"):
        load_value(path)


def test_a_parquet_file_written_by_something_else_is_a_clear_error(tmp_path):
    path = tmp_path / "value.parquet"
    SNAPSHOT.to_parquet(path)  # no note of which kind of value it is
    with pytest.raises(StoredValueError, match="not a readable stored asset value"):
        load_value(path)


def test_only_the_newest_values_of_a_partition_are_kept(tmp_path):
    runs = tmp_path / "runs"
    for age in range(KEEP_RUNS + 5):
        store_value(SNAPSHOT, runs / f"run-{age}.parquet")
        os.utime(runs / f"run-{age}.parquet", (1_000_000 - age, 1_000_000 - age))  # run-0 is the newest
    store_value(SNAPSHOT, tmp_path / "latest.parquet")
    prune(tmp_path)
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"run-{age}.parquet" for age in range(KEEP_RUNS))
    assert (tmp_path / "latest.parquet").exists()


def test_a_pickle_of_an_earlier_release_is_never_unpickled_and_is_pruned(tmp_path):
    class Exploding:
        def __reduce__(self):
            return (pytest.fail, ("an old pickle was unpickled",))

    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "run-1.pkl").write_bytes(pickle.dumps(Exploding()))
    (tmp_path / "latest.pkl").write_bytes(pickle.dumps(Exploding()))
    warnings: list[str] = []
    assert find_value(tmp_path, ["run-1"], latest_readable=True, warn=warnings.append) is None
    assert len(warnings) == 2 and all("never unpickled" in w for w in warnings)

    store_value(SNAPSHOT, tmp_path / "runs" / "run-2.parquet")
    prune(tmp_path)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == ["run-2.parquet"]


def test_a_run_reads_its_own_value_then_the_run_it_re_executes_then_latest(tmp_path):
    store_value(SNAPSHOT, tmp_path / "runs" / "parent.parquet")
    store_value(SNAPSHOT.iloc[:1], tmp_path / "latest.parquet")
    found = find_value(tmp_path, ["child", "parent"], latest_readable=True, warn=pytest.fail)
    pd.testing.assert_frame_equal(found, SNAPSHOT)
    assert len(find_value(tmp_path, ["other"], latest_readable=True, warn=pytest.fail)) == 1
    assert find_value(tmp_path, ["other"], latest_readable=False, warn=pytest.fail) is None


def test_a_snapshot_stored_after_its_check_comes_back_vouched_for_and_others_do_not(tmp_path):
    checked = SNAPSHOT.astype({"stock": "int64"})
    check_frame(SnapshotFrame, checked)
    store_value(checked, tmp_path / "checked.parquet")
    loaded = load_value(tmp_path / "checked.parquet")
    assert kept_contract(loaded) == SnapshotFrame.Config.name
    pd.testing.assert_frame_equal(loaded, checked)

    store_value(SNAPSHOT.astype({"stock": "int64"}), tmp_path / "unchecked.parquet")
    assert kept_contract(load_value(tmp_path / "unchecked.parquet")) is None  # the input check checks it all
    check_frame(PlanFrame, PLAN)
    store_value(PLAN, tmp_path / "plan.parquet")
    assert kept_contract(load_value(tmp_path / "plan.parquet")) is None  # only the snapshot's is remembered
