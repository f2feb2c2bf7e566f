"""STOCK_CHANGES_QUERY read from real warehouses (warehouse/stock_source.py): PostgreSQL
with a timestamptz change column, SQLite with text timestamps."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from stock_pipeline.core.changes_position import advanced, since_of
from stock_pipeline.warehouse.stock_source import StockSourceError, newest_change, read_stock_changes
from stock_pipeline_tests.helpers import scratch_database

CHANGES = "SELECT sku, stock, changed_at FROM products WHERE changed_at > :since"
T0 = datetime(2026, 11, 28, 10, 0, tzinfo=timezone.utc)


def fill(url: str, column_type: str, rows: list[tuple]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE products (sku text, stock integer, changed_at {column_type})"))
        conn.execute(
            sa.text("INSERT INTO products VALUES (:sku, :stock, :changed_at)"),
            [{"sku": s, "stock": v, "changed_at": t} for s, v, t in rows],
        )
    engine.dispose()


@pytest.fixture
def postgres_warehouse():
    with scratch_database() as url:
        fill(
            url, "timestamptz", [("A", 1, T0), ("B", 2, T0 + timedelta(minutes=10)), ("C", 3, T0 + timedelta(hours=1))]
        )
        yield url


def test_postgres_changed_rows_from_a_position_and_the_newest_change(postgres_warehouse):
    assert newest_change(postgres_warehouse, CHANGES, since_of(None)) == T0 + timedelta(hours=1)
    position = advanced(None, [T0 + timedelta(minutes=11)])  # LOOKBACK (2 min) before it: B is read again
    rows = read_stock_changes(postgres_warehouse, CHANGES, position.since())
    assert sorted(rows["sku"]) == ["B", "C"]
    assert list(rows.columns) == ["sku", "stock", "changed_at"]
    assert advanced(position, rows["changed_at"]).since() == T0 + timedelta(hours=1) - timedelta(minutes=2)


def test_sqlite_text_timestamps(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    fill(url, "TEXT", [("A", 1, "2026-11-28 10:00:00"), ("B", 2, "2026-11-28 10:10:00")])
    newest = newest_change(url, CHANGES, since_of(None))
    assert newest == "2026-11-28 10:10:00"
    position = advanced(None, [newest])
    assert list(read_stock_changes(url, CHANGES, position.since())["sku"]) == ["B"]


def test_a_changes_query_without_changed_at_or_that_fails_is_a_clear_error(postgres_warehouse):
    with pytest.raises(StockSourceError, match="STOCK_CHANGES_QUERY must return columns sku, stock and changed_at"):
        read_stock_changes(postgres_warehouse, "SELECT sku, stock FROM products WHERE changed_at > :since", T0)
    with pytest.raises(StockSourceError, match='STOCK_CHANGES_QUERY failed: relation "nowhere" does not exist'):
        read_stock_changes(postgres_warehouse, "SELECT sku, stock, changed_at FROM nowhere WHERE 1 > :since", T0)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT sku, stock, changed_at FROM products",  # no :since
        "SELECT sku, stock, changed_at FROM products WHERE note = 'a::since'",  # a cast, not the parameter
        "DELETE FROM products WHERE changed_at > :since",
    ],
)
def test_the_setting_is_checked_at_start(query):
    from stock_pipeline.foundation.errors import SettingsError
    from stock_pipeline.foundation.settings import load_settings

    with pytest.raises(SettingsError, match="STOCK_CHANGES_QUERY must be a SELECT query using :since"):
        load_settings({"STOCK_CHANGES_QUERY": query})


def test_a_valid_setting_is_taken():
    from stock_pipeline.foundation.settings import load_settings

    assert load_settings({"STOCK_CHANGES_QUERY": CHANGES}).stock_changes_query == CHANGES
