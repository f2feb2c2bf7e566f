"""The frames IO manager's storage: Parquet round trips keep every dtype and the offer
map's facts, the disk stays bounded, a damaged file is a clear error, and a value
pickled by an earlier release is never unpickled."""

from __future__ import annotations

import os
import pickle
from datetime import datetime, timezone

import numpy as np
import pandas as pd
import pytest

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import (
    OfferFrame,
    OfferMap,
    PlanFrame,
    SnapshotFrame,
    check_frame,
    check_offer_map,
    kept_contract,
)
from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.plan import plan_writes
from stock_pipeline.defs.io_manager import (
    CONTENT,
    KEEP_RUNS,
    StoredValueError,
    content_digest,
    find_value,
    hard_link_or_store,
    load_shared,
    load_stored,
    load_value,
    prune,
    remember_stored,
    store_shared,
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


# ---- a value every run of a cycle reads alike (the snapshot) --------------------------------


def a_snapshot(stock=(7, 0, 120_000)) -> pd.DataFrame:
    return pd.DataFrame({"sku": pd.Series(["A", "B", "C"], dtype="string"), "stock": list(stock)})


def shared_snapshot(stock=(7, 0, 120_000)) -> pd.DataFrame:
    """As the snapshot step hands it over: a read-only view, its contract checked."""
    view = frame_memo.shared_view(a_snapshot(stock))
    check_frame(SnapshotFrame, view)
    return view


def test_an_identical_value_is_stored_once_and_each_run_links_to_it(tmp_path):
    for run in ("run-1", "run-2"):
        store_shared(shared_snapshot(), tmp_path, tmp_path / "runs" / f"{run}.parquet")
    store_shared(shared_snapshot(stock=(1, 2, 3)), tmp_path, tmp_path / "runs" / "run-3.parquet")
    contents = sorted((tmp_path / CONTENT).glob("*.parquet"))
    assert len(contents) == 2  # two distinct values, three runs
    runs = {p.name: p for p in (tmp_path / "runs").iterdir()}
    assert all(p.is_symlink() for p in runs.values())
    assert runs["run-1.parquet"].resolve() == runs["run-2.parquet"].resolve() != runs["run-3.parquet"].resolve()
    for name, stock in (("run-1.parquet", [7, 0, 120_000]), ("run-3.parquet", [1, 2, 3])):
        loaded = load_value(runs[name])
        pd.testing.assert_frame_equal(loaded, a_snapshot(stock))
        assert kept_contract(loaded) == SnapshotFrame.Config.name  # stored after its check, vouched for


def test_the_content_digest_follows_the_values_and_the_notes_not_the_object():
    digest = content_digest(shared_snapshot())[0]
    assert content_digest(shared_snapshot())[0] == digest
    assert content_digest(a_snapshot().astype({"stock": "int64"}))[0] != digest  # not checked: noted otherwise
    assert content_digest(shared_snapshot(stock=(7, 0, 120_001)))[0] != digest
    renamed = check_frame(SnapshotFrame, a_snapshot().assign(sku=pd.Series(["A", "B", "D"], dtype="string")))
    assert content_digest(renamed)[0] != digest


def test_the_runs_loads_of_one_stored_version_share_one_read_only_frame(tmp_path):
    path = tmp_path / "runs" / "run-1.parquet"
    store_value(shared_snapshot(), path)  # read back from disk, not the value stored
    first, second = load_shared(path), load_shared(path)
    assert first is not second and np.shares_memory(first["stock"].to_numpy(), second["stock"].to_numpy())
    pd.testing.assert_frame_equal(first, a_snapshot())
    assert kept_contract(second) == SnapshotFrame.Config.name
    with pytest.raises(ValueError, match="read-only"):
        first.loc[0, "stock"] = 0
    first["stock"] = 0  # this caller's own column
    assert load_shared(path)["stock"].tolist() == [7, 0, 120_000]

    store_value(shared_snapshot(stock=(1, 2, 3)), path)  # a new version in its place
    assert load_shared(path)["stock"].tolist() == [1, 2, 3]


def test_the_loads_after_a_store_get_the_stored_frame_itself(tmp_path):
    stored = shared_snapshot()
    remember_stored(store_shared(stored, tmp_path, tmp_path / "runs" / "run-1.parquet"), stored)
    loaded = load_shared(tmp_path / "runs" / "run-1.parquet")
    assert np.shares_memory(loaded["stock"].to_numpy(), stored["stock"].to_numpy())


def test_content_no_kept_run_links_to_is_pruned(tmp_path):
    runs = tmp_path / "runs"
    for age in range(KEEP_RUNS + 2):  # run-0 is the newest
        store_shared(shared_snapshot(stock=(age, 0, 0)), tmp_path, runs / f"run-{age}.parquet")
        os.utime(runs / f"run-{age}.parquet", (1_000_000 - age, 1_000_000 - age), follow_symlinks=False)
    store_shared(shared_snapshot(stock=(0, 0, 0)), tmp_path, runs / "run-again.parquet")  # run-0's content again
    prune(tmp_path)
    kept = sorted(p.name for p in runs.iterdir())
    assert kept == sorted([f"run-{age}.parquet" for age in range(KEEP_RUNS - 1)] + ["run-again.parquet"])
    assert len(list((tmp_path / CONTENT).glob("*.parquet"))) == KEEP_RUNS - 1  # run-0's content once
    for name in kept:
        assert load_value(runs / name)["stock"].iloc[0] == (0 if name == "run-again.parquet" else int(name[4:-8]))


def test_latest_is_the_runs_own_file_not_a_second_write(tmp_path):
    partial = OfferMap.from_listing("shop-1", OFFERS, total_count=9)
    store_value(partial, tmp_path / "runs" / "run-1.parquet")
    hard_link_or_store(partial, tmp_path / "runs" / "run-1.parquet", tmp_path / "latest.parquet")
    assert os.path.samefile(tmp_path / "latest.parquet", tmp_path / "runs" / "run-1.parquet")
    (tmp_path / "runs" / "run-1.parquet").unlink()  # pruned: latest stays
    assert load_value(tmp_path / "latest.parquet").total_count == 9


def test_the_steps_after_get_the_read_only_offer_map_that_was_stored_not_a_copy(tmp_path):
    offer_map = OfferMap.from_listing("shop-1", frame_memo.freeze(OFFERS.copy()), total_count=4)
    check_offer_map(offer_map)  # the output check, done once: the frame cannot change after it
    path = tmp_path / "runs" / "run-1.parquet"
    store_value(offer_map, path)
    remember_stored(path, offer_map)
    loaded = load_stored(path)
    assert isinstance(loaded, OfferMap) and loaded.complete and loaded.offers is not offer_map.offers
    assert np.shares_memory(loaded.offers["stock"].to_numpy(), offer_map.offers["stock"].to_numpy())
    assert kept_contract(loaded.offers) == OfferFrame.Config.name  # not checked again by each step
    with pytest.raises(ValueError, match="read-only"):
        loaded.offers.loc[0, "stock"] = 0

    plan_path = tmp_path / "runs" / "plan.parquet"
    store_value(PLAN, plan_path)
    remember_stored(plan_path, PLAN)  # writable: each step reads its own copy
    assert not np.shares_memory(load_stored(plan_path)["after"].to_numpy(), PLAN["after"].to_numpy())
