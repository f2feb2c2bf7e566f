import pandas as pd
import pytest

from stock_pipeline.core.snapshot import clean_snapshot


def test_duplicate_rows_are_kept_for_the_policy_and_skus_trimmed():
    clean = clean_snapshot(pd.DataFrame({"sku": ["A", " A ", "B"], "stock": [2, 3, 7]}))
    assert list(zip(clean.stock["sku"], clean.stock["stock"])) == [("A", 2), ("A", 3), ("B", 7)]
    assert clean.duplicate_skus == 1


@pytest.mark.parametrize("sku,stock,problem", [
    (None, 3, "SKU is empty"),
    ("  ", 3, "SKU is empty"),
    ("A", None, "stock is NULL"),
    ("A", "many", "stock is not a number"),
    ("A", -2, "stock is negative"),
    ("A", 1.5, "stock is not a whole number"),
])
def test_bad_rows_are_excluded_and_counted(sku, stock, problem):
    clean = clean_snapshot(pd.DataFrame({"sku": [sku, "OK"], "stock": [stock, 4]}, dtype=object))
    assert clean.stock["sku"].tolist() == ["OK"]
    assert clean.problems[problem] == 1
    assert len(clean.bad_rows) == 1


def test_a_bad_row_removes_its_whole_sku_so_it_never_reads_as_less_stock():
    clean = clean_snapshot(pd.DataFrame({"sku": ["A", "A", "B"], "stock": [5, "n/a", 1]}, dtype=object))
    assert "A" not in set(clean.stock["sku"])
    assert clean.problems["valid row of a SKU that also has a bad row"] == 1


def test_missing_columns_name_what_is_missing():
    with pytest.raises(ValueError, match="missing: stock"):
        clean_snapshot(pd.DataFrame({"sku": ["A"], "qty": [1]}))
