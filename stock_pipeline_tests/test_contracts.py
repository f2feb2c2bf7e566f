"""The data contracts between the assets, and the offer map that says whether it is
complete. Pure: no Postgres, no Redis, no simulator."""

from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest
from dagster import asset, materialize

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import (
    Action,
    ContractError,
    DiffFrame,
    Method,
    OfferFrame,
    OfferMap,
    PlanFrame,
    SnapshotFrame,
    WriteResultFrame,
    WriteStatus,
    check_frame,
    check_offer_map,
    kept_contract,
    vouch_for,
)
from stock_pipeline.core.diff import compute_diff, offers_frame
from stock_pipeline.core.guards import active_offer_count
from stock_pipeline.core.plan import minimum_calls, plan_writes
from stock_pipeline.core.policy import StockPolicy, apply_policy
from stock_pipeline.core.snapshot import clean_snapshot
from stock_pipeline.defs.account_steps import plan_account_offers, read_offer_map
from stock_pipeline.defs.assets import _forget_offers_ended_no_more
from stock_pipeline.defs.contract_types import OfferMapType, PlanType, SnapshotType, WriteResultsType
from stock_pipeline.foundation.errors import IncompleteOfferMapError


def item(offer_id, sku, stock, status="ACTIVE"):
    return {
        "id": str(offer_id),
        "external": {"id": sku} if sku else None,
        "stock": {"available": stock},
        "publication": {"status": status},
    }


ITEMS = [
    item(1, "A", 5),
    item(2, "A", 5),
    item(3, "B", 2),
    item(4, None, 1),
    item(5, "C", 0, "ENDED"),
    item(6, "D", 3, "INACTIVE"),
    item(7, "E", 9),
]
SNAPSHOT = pd.DataFrame({"sku": pd.Series(["A", "B", "C", "E"], dtype="string"), "stock": [7, 2, 4, 0]})


def full_map(items=ITEMS) -> OfferMap:
    return OfferMap.from_listing("shop-a", offers_frame(items), total_count=len(items))


def partial_map(items=ITEMS, missing=2) -> OfferMap:
    return OfferMap.from_listing("shop-a", offers_frame(items[:-missing]), total_count=len(items))


# ---- the vocabulary -------------------------------------------------------------------------


def test_the_stored_words_never_change():
    # Stored in the audit table and shown by `history`: the values are part of the data.
    assert [a.value for a in Action] == ["set", "end", "activate"]
    assert [m.value for m in Method] == ["patch", "quantity_command", "publication_command"]
    assert [s.value for s in WriteStatus] == ["planned", "sent", "success", "failed", "pending", "not_sent", "held"]
    assert Action.END == "end" and f"{WriteStatus.NOT_SENT}" == "not_sent" and {"pending": 1}[WriteStatus.PENDING] == 1


# ---- the frames the pipeline makes keep their contracts ---------------------------------------


def test_every_frame_the_pipeline_makes_keeps_its_contract():
    snapshot = clean_snapshot(
        pd.DataFrame({"sku": [" A ", "B", "C", "E", None], "stock": [7, 2, 4, 0, 3]}), max_plausible=1_000_000
    )
    check_frame(SnapshotFrame, snapshot.stock)
    check_frame(SnapshotFrame, apply_policy(snapshot.stock, StockPolicy()))
    offers = check_offer_map(full_map()).offers
    diff = check_frame(DiffFrame, compute_diff(offers, SNAPSHOT, ended_by_us={"5"}))
    assert set(diff["action"]) == {"set", "end", "activate"}
    plan = check_frame(PlanFrame, plan_writes(diff, batch_size=1))
    assert set(plan["method"]) == {"patch", "publication_command"}
    check_frame(PlanFrame, plan_writes(pd.concat([diff] * 1, ignore_index=True), batch_size=1000))
    results = plan.assign(
        command_id=pd.Series([None] * len(plan), dtype="string"),
        status=pd.Series([WriteStatus.SUCCESS.value] * len(plan), dtype="string"),
        error=pd.Series([None] * len(plan), dtype="string"),
    )
    check_frame(WriteResultFrame, results)


def test_empty_frames_keep_their_contracts():
    empty_offers = offers_frame([])
    check_frame(OfferFrame, empty_offers)
    empty_diff = compute_diff(empty_offers, SNAPSHOT)
    check_frame(DiffFrame, empty_diff)
    check_frame(PlanFrame, plan_writes(empty_diff))
    check_frame(SnapshotFrame, clean_snapshot(pd.DataFrame({"sku": [], "stock": []}), max_plausible=99_999).stock)


# ---- a frame that breaks its contract says where --------------------------------------------


def a_plan(**changes) -> pd.DataFrame:
    plan = plan_writes(compute_diff(full_map().offers, SNAPSHOT, ended_by_us={"5"}), batch_size=1)
    for column, (row, value) in changes.items():
        plan.loc[row, column] = value
    return plan


def test_a_broken_plan_names_the_column_the_check_and_the_row():
    with pytest.raises(ContractError) as raised:
        check_frame(PlanFrame, a_plan(after=(2, 100_000), action=(1, "delete")))
    message = str(raised.value)
    assert message.startswith("WritePlan breaks its contract: ")
    assert "column 'after' fails in_range(0, 99999) at row 2 (100000)" in message
    assert "column 'action' fails isin(['set', 'end', 'activate']) at row 1 ('delete')" in message


def test_a_wrong_dtype_a_missing_column_and_a_repeated_offer_are_named():
    snapshot = SNAPSHOT.astype({"stock": "float64"})
    with pytest.raises(ContractError, match="column 'stock' has dtype float64, the contract says int64"):
        check_frame(SnapshotFrame, snapshot)
    with pytest.raises(ContractError, match="missing column 'status'"):
        check_frame(OfferFrame, full_map().offers.drop(columns="status"))
    twice = offers_frame(ITEMS + [item(3, "B", 2)])
    with pytest.raises(
        ContractError, match=r"column 'offer_id' fails field_uniqueness .* at rows 2 \('3'\), 7 \('3'\)"
    ):
        check_frame(OfferFrame, twice)
    with pytest.raises(ContractError, match=r"column 'status' fails isin\(.*\) at row 0 \('ARCHIVED'\)"):
        check_frame(OfferFrame, offers_frame([item(1, "A", 1, "ARCHIVED")]))


def test_a_plan_row_whose_method_and_batch_disagree_is_named_with_its_values():
    plan = a_plan()
    patch = int(plan.index[plan["method"] == "patch"][0])
    plan.loc[patch, "batch"] = 3
    with pytest.raises(
        ContractError,
        match=rf"rows fail batch_minus_one_exactly_for_patches at row {patch} "
        r"\(offer_id='\d+'.*method='patch', batch=3\)",
    ):
        check_frame(PlanFrame, plan)


def test_the_dagster_types_fail_with_the_contracts_sentence():
    bad = a_plan(before=(0, -1))
    check = PlanType.type_check(None, bad)
    assert not check.success and "column 'before' fails in_range(0, 99999) at row 0 (-1)" in check.description
    assert check.metadata["failure_sample"].value.startswith("| column")
    assert PlanType.type_check(None, a_plan()).success
    assert WriteResultsType.type_check(None, a_plan()).description.startswith(
        "WriteResults breaks its contract: missing"
    )
    assert OfferMapType.type_check(None, full_map()).success
    stale = OfferMapType.type_check(None, full_map().offers)
    assert not stale.success and "materialise allegro_offers again" in stale.description
    lying = OfferMap("shop-a", full_map().offers, complete=True, total_count=99)
    assert (
        "says it is complete with 7 offers while Allegro reported 99"
        in OfferMapType.type_check(None, lying).description
    )


def test_an_asset_whose_frame_breaks_its_contract_fails_the_step_naming_the_column(tmp_path):
    @asset(dagster_type=SnapshotType)
    def snapshot_with_a_negative_stock():
        return SNAPSHOT.assign(stock=[7, -2, 4, 0])

    result = materialize([snapshot_with_a_negative_stock], raise_on_error=False)
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert (
        "StockSnapshot breaks its contract: column 'stock' fails greater_than_or_equal_to(0) at row 1 (-2)" in message
    )


# ---- the offer map says whether it is complete ------------------------------------------------


def pages(items, total, page_size=3):
    """What AllegroClient.iter_offer_frames yields: pages of offers, each with the total."""
    chunks = [items[i : i + page_size] for i in range(0, len(items), page_size)] or [[]]
    return [(offers_frame(chunk), total) for chunk in chunks]


def test_a_listing_of_every_offer_is_complete():
    offer_map = read_offer_map("shop-a", pages(ITEMS, total=len(ITEMS)))
    assert offer_map.complete and offer_map.listed == offer_map.total_count == 7
    assert frame_memo.is_frozen(offer_map.offers)  # the steps after share it: none can change it
    assert offer_map.describe() == "7 offers, complete"
    assert read_offer_map("shop-a", pages([], total=0)).complete


def test_a_listing_that_ends_short_of_totalcount_is_partial():
    offer_map = read_offer_map("shop-a", pages(ITEMS[:4], total=7))
    assert not offer_map.complete and offer_map.listed == 4 and offer_map.total_count == 7
    assert offer_map.describe() == "partial: 4 offers listed of the 7 Allegro reported"


def test_a_listing_whose_pages_shifted_is_partial_and_lists_each_offer_once():
    # An offer created while listing pushes the last one of a page onto the next page.
    shifted = pages(ITEMS[:3], total=7) + pages(ITEMS[2:7], total=7)
    offer_map = read_offer_map("shop-a", shifted)
    check_offer_map(offer_map)  # offer ids unique: the contract holds
    assert offer_map.listed == 7 and not offer_map.complete


def test_the_offer_map_survives_pickling_and_a_store_that_keeps_the_frame_apart():
    offer_map = partial_map()
    again = pickle.loads(pickle.dumps(offer_map))
    assert (again.complete, again.total_count, again.account) == (False, 7, "shop-a")
    assert again.offers.equals(offer_map.offers)
    apart = OfferMap.from_companion(offer_map.offers, json.loads(json.dumps(offer_map.companion())))
    assert apart.companion() == offer_map.companion() and apart.offers.equals(offer_map.offers)


# ---- code that needs a complete map refuses a partial one -------------------------------------


def assert_refused(raised, purpose: str):
    message = str(raised.value)
    assert "account 'shop-a'" in message and purpose in message
    assert "5 offers listed of the 7 Allegro reported" in message
    assert raised.value.account == "shop-a" and (raised.value.listed, raised.value.total_count) == (5, 7)


class RememberedEnds:
    """EndedOffers as _forget_offers_ended_no_more uses it."""

    def __init__(self, ours: set[str]):
        self.remembered = set(ours)

    def ours(self, account: str) -> set[str]:
        return set(self.remembered)

    def forget(self, account: str, offer_ids) -> None:
        self.remembered -= set(offer_ids)


def test_forgetting_ended_offers_refuses_a_partial_map_and_forgets_nothing():
    # Offer 7 was ended by us and is missing from the partial listing: forgetting it would
    # mean never bringing it back.
    ends = RememberedEnds({"5", "7"})
    with pytest.raises(IncompleteOfferMapError) as raised:
        _forget_offers_ended_no_more(ends, "shop-a", partial_map())
    assert_refused(raised, "forgetting the offers we ended that the listing shows not ENDED")
    assert ends.remembered == {"5", "7"}


def test_forgetting_ended_offers_works_on_a_complete_map():
    ends = RememberedEnds({"5", "7"})
    _forget_offers_ended_no_more(ends, "shop-a", full_map())
    assert ends.remembered == {"5"}  # 7 is ACTIVE again: someone else re-activated it


def test_the_diff_guards_count_of_active_offers_refuses_a_partial_map():
    assert active_offer_count(full_map()) == 5  # offers 1, 2, 3, 4 and 7
    with pytest.raises(IncompleteOfferMapError) as raised:
        active_offer_count(partial_map())
    assert_refused(raised, "the diff guard's share of active offers")


def test_minimum_calls_refuses_a_partial_map():
    diff = compute_diff(full_map().offers, SNAPSHOT)
    assert minimum_calls(full_map(), diff) == minimum_calls(7, diff)
    with pytest.raises(IncompleteOfferMapError) as raised:
        minimum_calls(partial_map(), diff)
    assert_refused(raised, "the minimum number of API calls")


def test_the_diff_of_the_listed_offers_accepts_a_partial_map():
    partial = partial_map()
    planned = plan_account_offers(partial, SNAPSHOT, StockPolicy(), ended_by_us=frozenset({"5"}), batch_size=1000)
    check_frame(PlanFrame, planned.plan)
    assert planned.minimum_api_calls is None  # needs every offer: not reckoned on a partial listing
    assert set(planned.plan["offer_id"]) == {"1", "2", "5"}  # the listed offers that differ
    full = plan_account_offers(full_map(), SNAPSHOT, StockPolicy(), ended_by_us=frozenset({"5"}), batch_size=1000)
    assert full.minimum_api_calls == minimum_calls(7, compute_diff(full_map().offers, SNAPSHOT, {"5"}))


# ---- the snapshot is checked once per frame -------------------------------------------------


def a_snapshot() -> pd.DataFrame:
    return pd.DataFrame({"sku": pd.Series(["A", "B"], dtype="string"), "stock": [3, 0]})


def test_a_checked_snapshot_is_not_checked_again_until_a_column_is_replaced(monkeypatch):
    snapshot = a_snapshot()
    check_frame(SnapshotFrame, snapshot)
    validations = []
    monkeypatch.setattr(SnapshotFrame, "validate", lambda *a, **k: validations.append(a) or snapshot)
    assert check_frame(SnapshotFrame, snapshot) is snapshot and validations == []
    monkeypatch.undo()
    snapshot["stock"] = [3, -1]  # a new column array: the frame is no longer the one checked
    with pytest.raises(ContractError, match=r"column 'stock' fails greater_than_or_equal_to\(0\) at row 1 \(-1\)"):
        check_frame(SnapshotFrame, snapshot)


def test_only_the_snapshot_contract_is_remembered():
    plan = a_plan()
    check_frame(PlanFrame, plan)
    patch = int(plan.index[plan["method"] == "patch"][0])
    plan.loc[patch, "batch"] = 3  # changed in place after its check: still checked, still caught
    with pytest.raises(ContractError, match="batch_minus_one_exactly_for_patches"):
        check_frame(PlanFrame, plan)


def test_a_copy_is_vouched_for_only_with_the_contracts_columns_and_dtypes():
    assert vouch_for(a_snapshot(), SnapshotFrame.Config.name)
    lost_dtype = a_snapshot().astype({"stock": "float64"})
    assert not vouch_for(lost_dtype, SnapshotFrame.Config.name) and kept_contract(lost_dtype) is None
    with pytest.raises(ContractError, match="column 'stock' has dtype float64, the contract says int64"):
        check_frame(SnapshotFrame, lost_dtype)  # the full check names the problem
    assert not vouch_for(a_snapshot().assign(extra=1), SnapshotFrame.Config.name)
    assert not vouch_for(a_plan(), PlanFrame.Config.name)  # a contract not checked once per frame
