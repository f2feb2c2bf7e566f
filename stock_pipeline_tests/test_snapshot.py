from decimal import Decimal
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import OfferMap, SnapshotFrame, check_frame, kept_contract
from stock_pipeline.core.diff import offers_frame
from stock_pipeline.core.policy import StockPolicy, combined_stock
from stock_pipeline.core.snapshot import (
    bad_rows_preview,
    bad_rows_records,
    bad_rows_warning,
    capped_note,
    clean_snapshot,
    distinct_skus,
    shared,
)
from stock_pipeline.defs.account_steps import plan_account_offers, read_snapshot
from stock_pipeline.notify.telegram import bad_rows_message

MAX = 1_000_000
ABOVE_MAX = f"stock above the plausible maximum ({MAX})"


def clean(frame: pd.DataFrame, max_plausible: int = MAX):
    return clean_snapshot(frame, max_plausible=max_plausible)


def test_duplicate_rows_are_kept_for_the_policy_and_skus_trimmed():
    snapshot = clean(pd.DataFrame({"sku": ["A", " A ", "B"], "stock": [2, 3, 7]}))
    assert list(zip(snapshot.stock["sku"], snapshot.stock["stock"])) == [("A", 2), ("A", 3), ("B", 7)]
    assert snapshot.duplicate_skus == 1


@pytest.mark.parametrize(
    "sku,stock,problem",
    [
        (None, 3, "SKU is empty"),
        ("  ", 3, "SKU is empty"),
        ("A", None, "stock is NULL"),
        ("A", "many", "stock is not a number"),
        ("A", -2, "stock is negative"),
        ("A", 1.5, "stock is not a whole number"),
    ],
)
def test_bad_rows_are_excluded_and_counted(sku, stock, problem):
    snapshot = clean(pd.DataFrame({"sku": [sku, "OK"], "stock": [stock, 4]}, dtype=object))
    assert snapshot.stock["sku"].tolist() == ["OK"]
    assert snapshot.problems[problem] == 1
    assert len(snapshot.bad_rows) == 1


# Every kind of value that is not a whole number in 0..max, as a driver or a frame may
# hold it, with the raw text the reports must show.
BAD_VALUES = [
    pytest.param(2**63, ABOVE_MAX, "9223372036854775808", id="2^63 int"),
    pytest.param(99999999999999999999, ABOVE_MAX, "99999999999999999999", id="20 digits int"),
    pytest.param(Decimal("99999999999999999999"), ABOVE_MAX, "99999999999999999999", id="20 digits Decimal"),
    pytest.param("99999999999999999999", ABOVE_MAX, "'99999999999999999999'", id="20 digits text"),
    pytest.param(1e20, ABOVE_MAX, "1e+20", id="1e20 float"),
    pytest.param(MAX + 1, ABOVE_MAX, str(MAX + 1), id="max+1"),
    pytest.param(Decimal("1E+400"), ABOVE_MAX, "1E+400", id="Decimal beyond float"),
    pytest.param(float("inf"), "stock is not a finite number", "inf", id="inf"),
    pytest.param(float("-inf"), "stock is not a finite number", "-inf", id="-inf"),
    pytest.param(float("nan"), "stock is not a finite number", "nan", id="NaN"),
    pytest.param(Decimal("Infinity"), "stock is not a finite number", "Infinity", id="Decimal Infinity"),
    pytest.param(Decimal("NaN"), "stock is not a finite number", "NaN", id="Decimal NaN"),
    pytest.param("Infinity", "stock is text that is not a plain whole number", "'Infinity'", id="'Infinity'"),
    pytest.param("1e3", "stock is text that is not a plain whole number", "'1e3'", id="'1e3'"),
    pytest.param("12.5", "stock is text that is not a plain whole number", "'12.5'", id="'12.5'"),
    pytest.param("12.0", "stock is text that is not a plain whole number", "'12.0'", id="'12.0'"),
    pytest.param("abc", "stock is not a number", "'abc'", id="'abc'"),
    pytest.param("0x10", "stock is not a number", "'0x10'", id="'0x10'"),
    pytest.param("", "stock is not a number", "''", id="empty text"),
    pytest.param("1 000", "stock is not a number", "'1 000'", id="'1 000'"),
    pytest.param("٣", "stock is not a number", "'٣'", id="non-ASCII digit"),
    pytest.param("5\x00", "stock is not a number", "'5\\x00'", id="NUL byte"),
    pytest.param(12.5, "stock is not a whole number", "12.5", id="12.5 float"),
    pytest.param(Decimal("12.5"), "stock is not a whole number", "12.5", id="12.5 Decimal"),
    pytest.param(
        Decimal("12.0000000000000001"),
        "stock is not a whole number",
        "12.0000000000000001",
        id="fraction a float would round away",
    ),
    pytest.param(True, "stock is not a number", "True", id="True"),
    pytest.param(np.bool_(False), "stock is not a number", "False", id="numpy False"),
    pytest.param(-1, "stock is negative", "-1", id="-1"),
    pytest.param(Decimal("-3"), "stock is negative", "-3", id="Decimal -3"),
    pytest.param(" -5 ", "stock is negative", "' -5 '", id="text -5"),
    pytest.param("-99999999999999999999", "stock is negative", "'-99999999999999999999'", id="long negative text"),
    pytest.param(-(2**70), "stock is negative", str(-(2**70)), id="huge negative int"),
    pytest.param(None, "stock is NULL", "NULL", id="NULL"),
    pytest.param(pd.Timestamp("2024-01-01"), "stock is not a number", "2024-01-01 00:00:00", id="a date"),
]


@pytest.mark.parametrize("stock,problem,raw", BAD_VALUES)
def test_a_value_that_is_not_a_whole_number_in_range_is_a_bad_row_named_with_its_raw_value(stock, problem, raw):
    snapshot = clean(pd.DataFrame({"sku": ["BAD", "OK"], "stock": pd.Series([stock, 4], dtype=object)}))
    assert snapshot.stock.to_dict("records") == [{"sku": "OK", "stock": 4}]
    assert snapshot.problems == {problem: 1}
    assert bad_rows_records(snapshot, 10) == [{"sku": "BAD", "stock": raw, "problem": problem}]


GOOD_VALUES = [
    pytest.param(" 7 ", 7, id="text with spaces"),
    pytest.param("+7", 7, id="text with +"),
    pytest.param("0007", 7, id="text with leading zeros"),
    pytest.param("-0", 0, id="text -0"),
    pytest.param(Decimal("12.000"), 12, id="Decimal 12.000"),
    pytest.param(Decimal("1E+3"), 1000, id="Decimal 1E+3 (the column says number)"),
    pytest.param(1000.0, 1000, id="float 1000.0"),
    pytest.param(-0.0, 0, id="float -0.0"),
    pytest.param(np.int64(3), 3, id="numpy int"),
    pytest.param(150_000, 150_000, id="above Allegro's maximum, within the plausible one"),
    pytest.param(MAX, MAX, id="exactly the plausible maximum"),
    pytest.param(str(MAX), MAX, id="the plausible maximum as text"),
]


@pytest.mark.parametrize("stock,expected", GOOD_VALUES)
def test_a_whole_number_in_range_is_good_whatever_its_type(stock, expected):
    snapshot = clean(pd.DataFrame({"sku": ["A"], "stock": pd.Series([stock], dtype=object)}))
    assert snapshot.stock.to_dict("records") == [{"sku": "A", "stock": expected}]
    assert snapshot.problems == {} and snapshot.bad_rows.empty


@pytest.mark.parametrize(
    "column,good,bad",
    [
        pytest.param(
            pd.Series([5, 2**63 - 1, -1, 150_000]),
            {"S0": 5, "S3": 150_000},
            {"S1": ABOVE_MAX, "S2": "stock is negative"},
            id="int64",
        ),
        pytest.param(pd.Series([2**64 - 1, 5], dtype="uint64"), {"S1": 5}, {"S0": ABOVE_MAX}, id="uint64"),
        pytest.param(
            pd.Series([5.0, np.inf, -np.inf, np.nan, 1e20, 12.5, 1000.0]),
            {"S0": 5, "S6": 1000},
            {
                "S1": "stock is not a finite number",
                "S2": "stock is not a finite number",
                "S3": "stock is not a finite number",
                "S4": ABOVE_MAX,
                "S5": "stock is not a whole number",
            },
            id="float64",
        ),
        pytest.param(
            pd.Series([True, False]), {}, {"S0": "stock is not a number", "S1": "stock is not a number"}, id="bool"
        ),
        pytest.param(
            pd.Series([5, None, 2_000_000], dtype="Int64"),
            {"S0": 5},
            {"S1": "stock is NULL", "S2": ABOVE_MAX},
            id="nullable Int64",
        ),
        pytest.param(
            pd.Series(["5", None, "1e3", " 8 "], dtype="string"),
            {"S0": 5, "S3": 8},
            {"S1": "stock is NULL", "S2": "stock is text that is not a plain whole number"},
            id="string dtype",
        ),
    ],
)
def test_every_column_type_is_classified_without_casting_first(column, good, bad):
    snapshot = clean(pd.DataFrame({"sku": [f"S{i}" for i in range(len(column))], "stock": column}))
    assert dict(zip(snapshot.stock["sku"], snapshot.stock["stock"])) == good
    assert dict(zip(snapshot.bad_rows["sku"], snapshot.bad_rows["problem"])) == bad
    assert snapshot.stock["stock"].dtype == "int64"


def test_one_infinity_does_not_crash_the_snapshot_and_the_other_rows_pass():
    snapshot = clean(pd.DataFrame({"sku": ["A", "B", "C"], "stock": [3.0, float("inf"), 4.0]}))
    assert dict(zip(snapshot.stock["sku"], snapshot.stock["stock"])) == {"A": 3, "C": 4}
    assert snapshot.problems == {"stock is not a finite number": 1}


def test_a_bad_row_removes_its_whole_sku_so_it_never_reads_as_less_stock():
    snapshot = clean(pd.DataFrame({"sku": ["A", "A", "B"], "stock": [5, "n/a", 1]}, dtype=object))
    assert "A" not in set(snapshot.stock["sku"])
    assert snapshot.problems["valid row of a SKU that also has a bad row"] == 1


@pytest.mark.parametrize(
    "huge", [99999999999999999999, Decimal("99999999999999999999"), "99999999999999999999", 1e20, 2**63]
)
def test_a_huge_value_removes_its_sku_even_beside_a_valid_row(huge):
    frame = pd.DataFrame({"sku": ["A", " A", "B"], "stock": pd.Series([5, huge, 1], dtype=object)})
    snapshot = clean(frame)
    assert snapshot.stock.to_dict("records") == [{"sku": "B", "stock": 1}]
    assert snapshot.problems == {ABOVE_MAX: 1, "valid row of a SKU that also has a bad row": 1}


def test_stock_between_allegros_maximum_and_the_plausible_one_is_kept_and_counted_as_capped():
    snapshot = clean(pd.DataFrame({"sku": ["A", "B", "C"], "stock": [150_000, 99_999, MAX]}))
    # Kept whole: the policy subtracts any reserve first, then caps at 99 999.
    assert snapshot.stock["stock"].tolist() == [150_000, 99_999, MAX]
    assert snapshot.capped_rows == 2
    assert "2 stock rows are above Allegro's maximum of 99999" in capped_note(snapshot)


def test_the_plausible_maximum_is_a_setting():
    frame = pd.DataFrame({"sku": ["A", "B"], "stock": [150_000, 5_000_000]})
    assert clean(frame, max_plausible=99_999).problems == {"stock above the plausible maximum (99999)": 2}
    assert clean(frame, max_plausible=10_000_000).problems == {}
    with pytest.raises(ValueError, match="max_plausible must be between 99999 and 9007199254740992"):
        clean(frame, max_plausible=2**53 + 1)


def test_reports_name_the_bad_rows_with_their_raw_values():
    frame = pd.DataFrame(
        {
            "sku": ["A|1", "B", "C", "OK"],
            "stock": pd.Series(["1e3", Decimal("Infinity"), 99999999999999999999, 4], dtype=object),
        }
    )
    snapshot = clean(frame)
    preview = bad_rows_preview(snapshot, rows=2)
    assert "| A\\|1 | '1e3' | stock is text that is not a plain whole number |" in preview  # a | is escaped
    assert "| B | Infinity | stock is not a finite number |" in preview
    assert "… and 1 more" in preview and f"| {ABOVE_MAX} | 1 |" in preview
    warning = bad_rows_warning(snapshot)
    assert warning.startswith("excluded 3 bad stock rows")
    assert "SKU C stock 99999999999999999999 (stock above the plausible maximum (1000000))" in warning
    assert bad_rows_preview(clean(pd.DataFrame({"sku": ["A"], "stock": [1]})), rows=2) == "_no bad rows_"


def test_the_telegram_warning_shows_the_raw_value_escaped():
    snapshot = clean(pd.DataFrame({"sku": ["<b>"], "stock": pd.Series(["<1e3>"], dtype=object)}))
    text = bad_rows_message(bad_rows=bad_rows_records(snapshot, 200), problems=snapshot.problems)
    assert "SKU <code>&lt;b&gt;</code> stock <code>'&lt;1e3&gt;'</code>: stock is not a number" in text


def test_missing_columns_name_what_is_missing():
    with pytest.raises(ValueError, match="missing: stock"):
        clean(pd.DataFrame({"sku": ["A"], "qty": [1]}))


# ---- one snapshot shared by the account runs of a process ---------------------------------


def listing(*offers: tuple[str, str, int]) -> OfferMap:
    items = [
        {"id": i, "external": {"id": sku}, "stock": {"available": n}, "publication": {"status": "ACTIVE"}}
        for i, sku, n in offers
    ]
    return OfferMap.from_listing("shop-a", offers_frame(items), total_count=len(items))


def test_a_run_cannot_change_the_snapshot_another_run_plans_from():
    read = clean(pd.DataFrame({"sku": ["A", "B", None], "stock": [5, 2, 1]}, dtype=object))
    mine, theirs = shared(read), shared(read)
    assert np.shares_memory(mine.stock["stock"].to_numpy(), theirs.stock["stock"].to_numpy())  # one copy
    offers = listing(("1", "A", 1), ("2", "B", 2))
    before = plan_account_offers(offers, theirs.stock, StockPolicy(), frozenset(), 1000).plan

    with pytest.raises(ValueError, match="read-only"):
        mine.stock.loc[mine.stock["sku"] == "B", "stock"] = 0  # would end offer 2 for every run
    with pytest.raises(ValueError, match="read-only"):
        mine.bad_rows.iloc[0, 0] = "A"
    mine.stock["stock"] = 0  # a column of its own: its view only
    mine.problems.clear()

    pd.testing.assert_frame_equal(
        plan_account_offers(offers, theirs.stock, StockPolicy(), frozenset(), 1000).plan, before
    )
    assert before["offer_id"].tolist() == ["1"] and theirs.stock["stock"].tolist() == [5, 2]
    assert theirs.problems == {"SKU is empty": 1} and len(theirs.bad_rows) == 1


def test_the_shared_snapshot_is_counted_and_combined_once_for_every_run():
    read = clean(pd.DataFrame({"sku": ["A", "A", "B"], "stock": [5, 2, 1]}))
    runs = [shared(read) for _ in range(3)]
    check_frame(SnapshotFrame, runs[0].stock)  # the first run's output check
    assert all(kept_contract(run.stock) == SnapshotFrame.Config.name for run in runs)  # not checked again
    assert [distinct_skus(run.stock) for run in runs] == [2, 2, 2]
    assert combined_stock(runs[1].stock, StockPolicy()) is combined_stock(runs[2].stock, StockPolicy())


def test_the_runs_of_a_process_read_the_warehouse_into_views_of_their_own(tmp_path):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (sku text, stock integer)"))
        conn.execute(sa.text("INSERT INTO products VALUES ('A', 3), ('B', NULL)"))
    stock_db = SimpleNamespace(url=url, query="SELECT sku, stock FROM products", max_plausible_stock=MAX)
    first, second = read_snapshot(stock_db), read_snapshot(stock_db)
    assert first.stock is not second.stock
    assert all(frame_memo.is_frozen(frame) for frame in (first.stock, first.bad_rows, second.stock))
    assert first.stock["sku"].tolist() == ["A"] and first.problems == {"stock is NULL": 1}
