"""read_stock + clean_snapshot on real databases: for each column type a warehouse may
declare, the values that type can hold reach the cleaning unchanged, bad ones are
excluded and named with their raw value, good ones pass."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from stock_pipeline.core.snapshot import bad_rows_records, clean_snapshot
from stock_pipeline.warehouse.stock_source import StockSourceError, read_stock
from stock_pipeline_tests.helpers import scratch_database

MAX = 1_000_000
ABOVE = f"stock above the plausible maximum ({MAX})"
NOT_FINITE = "stock is not a finite number"
NOT_WHOLE = "stock is not a whole number"
ODD_TEXT = "stock is text that is not a plain whole number"
NOT_A_NUMBER = "stock is not a number"
NEGATIVE = "stock is negative"
NULL = "stock is NULL"

# (column type, rows as (SKU, SQL literal, expected)): expected is the clean stock for a
# good row, or (problem, raw value as reported) for a bad one.
POSTGRES = [
    (
        "integer",
        [
            ("GOOD", "7", 7),
            ("NEG", "-3", (NEGATIVE, "-3")),
            ("NULL", "NULL", (NULL, "NULL")),
            ("CAPPED", "150000", 150_000),
            ("ABOVE", "1000001", (ABOVE, "1000001")),
        ],
    ),
    (
        "bigint",
        [
            ("GOOD", "1000000", 1_000_000),
            ("MAXINT", "9223372036854775807", (ABOVE, "9223372036854775807")),
            ("BIG", "9007199254740993", (ABOVE, "9007199254740993")),
            ("NULL", "NULL", (NULL, "NULL")),
        ],
    ),
    (
        "numeric",
        [
            ("GOOD", "12.000", 12),
            ("BIG", "99999999999999999999", (ABOVE, "99999999999999999999")),
            ("INF", "'Infinity'", (NOT_FINITE, "Infinity")),
            ("NAN", "'NaN'", (NOT_FINITE, "NaN")),
            ("FRAC", "12.5", (NOT_WHOLE, "12.5")),
            ("TINY", "12.0000000000000001", (NOT_WHOLE, "12.0000000000000001")),
            ("NULL", "NULL", (NULL, "NULL")),
        ],
    ),
    (
        "double precision",
        [
            ("GOOD", "1000.0", 1000),
            ("INF", "'Infinity'::float8", (NOT_FINITE, "inf")),
            ("NINF", "'-Infinity'::float8", (NOT_FINITE, "-inf")),
            ("NAN", "'NaN'::float8", (NOT_FINITE, "nan")),
            ("E20", "1e20", (ABOVE, "1e+20")),
            ("FRAC", "12.5", (NOT_WHOLE, "12.5")),
            ("NULL", "NULL", (NULL, "NULL")),
        ],
    ),
    (
        "text",
        [
            ("GOOD", "' 7 '", 7),
            ("PLUS", "'+7'", 7),
            ("E3", "'1e3'", (ODD_TEXT, "'1e3'")),
            ("FRAC", "'12.5'", (ODD_TEXT, "'12.5'")),
            ("INF", "'Infinity'", (ODD_TEXT, "'Infinity'")),
            ("ABC", "'abc'", (NOT_A_NUMBER, "'abc'")),
            ("HEX", "'0x10'", (NOT_A_NUMBER, "'0x10'")),
            ("BIG", "'99999999999999999999'", (ABOVE, "'99999999999999999999'")),
            ("NULL", "NULL", (NULL, "NULL")),
        ],
    ),
]

# SQLite converts by column affinity before anyone reads: 99999999999999999999 in an
# INTEGER column is stored as the REAL 1e20, '12.000' in NUMERIC as the integer 12, and
# '1e3' in NUMERIC as 1000 (so text forms are tested in the TEXT column).
SQLITE = [
    (
        "INTEGER",
        [
            ("GOOD", "7", 7),
            ("BIG", "99999999999999999999", (ABOVE, "1e+20")),
            ("MAXINT", "9223372036854775807", (ABOVE, "9223372036854775807")),
            ("INF", "9e999", (NOT_FINITE, "inf")),
            ("FRAC", "12.5", (NOT_WHOLE, "12.5")),
            ("ABC", "'abc'", (NOT_A_NUMBER, "'abc'")),
            ("NULL", "NULL", (NULL, "NULL")),
        ],
    ),
    (
        "BIGINT",
        [
            ("GOOD", "150000", 150_000),
            ("BIG", "99999999999999999999", (ABOVE, "1e+20")),
            ("NEG", "-1", (NEGATIVE, "-1")),
        ],
    ),
    (
        "NUMERIC",
        [
            ("GOOD", "'12.000'", 12),
            ("BIG", "99999999999999999999", (ABOVE, "1e+20")),
            ("FRAC", "12.5", (NOT_WHOLE, "12.5")),
            ("INF", "-9e999", (NOT_FINITE, "-inf")),
            ("ABC", "'abc'", (NOT_A_NUMBER, "'abc'")),
        ],
    ),
    (
        "REAL",
        [
            ("GOOD", "5", 5),
            ("INF", "9e999", (NOT_FINITE, "inf")),
            ("NINF", "-9e999", (NOT_FINITE, "-inf")),
            ("E20", "1e20", (ABOVE, "1e+20")),
            ("FRAC", "12.5", (NOT_WHOLE, "12.5")),
            ("NULL", "NULL", (NULL, "NULL")),
        ],
    ),
    (
        "TEXT",
        [
            ("GOOD", "' 7 '", 7),
            ("PLUS", "'+7'", 7),
            ("E3", "'1e3'", (ODD_TEXT, "'1e3'")),
            ("FRAC", "'12.5'", (ODD_TEXT, "'12.5'")),
            ("INF", "'Infinity'", (ODD_TEXT, "'Infinity'")),
            ("BIG", "'99999999999999999999'", (ABOVE, "'99999999999999999999'")),
            ("HEX", "'0x10'", (NOT_A_NUMBER, "'0x10'")),
        ],
    ),
]


@pytest.fixture(scope="module")
def postgres_warehouse():
    with scratch_database() as url:
        yield url


def server_version(url: str) -> int:
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        version = int(conn.execute(sa.text("SHOW server_version_num")).scalar())
    engine.dispose()
    return version


def fill(url: str, table: str, column_type: str, rows: list[tuple]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{table}" (sku text, stock {column_type})'))
        for sku, literal, _ in rows:
            conn.execute(sa.text(f"INSERT INTO \"{table}\" VALUES ('{sku}', {literal})"))
    engine.dispose()


def assert_cleaned(url: str, table: str, rows: list[tuple]) -> None:
    snapshot = clean_snapshot(read_stock(url, f'SELECT sku, stock FROM "{table}"'), max_plausible=MAX)
    good = {sku: expected for sku, _, expected in rows if isinstance(expected, int)}
    bad = {
        sku: {"sku": sku, "problem": expected[0], "stock": expected[1]}
        for sku, _, expected in rows
        if isinstance(expected, tuple)
    }
    assert dict(zip(snapshot.stock["sku"], snapshot.stock["stock"])) == good
    assert {r["sku"]: r for r in bad_rows_records(snapshot, 100)} == bad
    assert snapshot.capped_rows == sum(v > 99_999 for v in good.values())


@pytest.mark.parametrize("column_type,rows", POSTGRES, ids=[t for t, _ in POSTGRES])
def test_postgres_column_types(postgres_warehouse, column_type, rows):
    table = "stock_" + column_type.replace(" ", "_")
    if column_type == "numeric" and server_version(postgres_warehouse) < 140000:
        rows = [r for r in rows if r[0] != "INF"]  # numeric holds Infinity from PostgreSQL 14 on
    fill(postgres_warehouse, table, column_type, rows)
    assert_cleaned(postgres_warehouse, table, rows)


@pytest.mark.parametrize("column_type,rows", SQLITE, ids=[t for t, _ in SQLITE])
def test_sqlite_column_types(tmp_path, column_type, rows):
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    fill(url, "products", column_type, rows)
    assert_cleaned(url, "products", rows)


def test_a_failing_query_is_a_clear_error(postgres_warehouse):
    with pytest.raises(StockSourceError, match='STOCK_QUERY failed: relation "nowhere" does not exist'):
        read_stock(postgres_warehouse, "SELECT sku, stock FROM nowhere")


def test_an_empty_result_keeps_its_columns(tmp_path):
    url = f"sqlite:///{tmp_path / 'w.db'}"
    fill(url, "products", "INTEGER", [])
    frame = read_stock(url, "SELECT sku AS SKU, stock FROM products")
    assert list(frame.columns) == ["sku", "stock"] and frame.empty


TRICKY_TEXTS = ["plain", "", "  spaced  ", 'quote " inside', "comma, inside", "two\nlines", "back\\slash", "ząb€", None]


@pytest.mark.parametrize("driver", ["postgresql+psycopg", "postgresql+psycopg2"])
@pytest.mark.parametrize("stock_type", ["integer", "bigint", "smallint"])
def test_whole_numbers_and_text_read_by_copy_are_the_drivers_values(postgres_warehouse, stock_type, driver):
    """Such a result is read with COPY into Arrow (no row objects): every value must be the
    one the driver's cursor gives, odd texts, NULLs and the extremes of the type included,
    whichever driver the warehouse URL names."""
    postgres_warehouse = sa.engine.make_url(postgres_warehouse).set(drivername=driver).render_as_string(False)
    extremes = {"smallint": (-32768, 32767), "integer": (-(2**31), 2**31 - 1), "bigint": (-(2**63), 2**63 - 1)}
    table = f"copied_{stock_type}_{driver.rsplit('+', 1)[1]}"
    engine = sa.create_engine(postgres_warehouse)
    query = f'SELECT sku, stock FROM "{table}" ORDER BY stock NULLS FIRST'
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "{table}" (sku text, stock {stock_type})'))
        rows = [{"sku": t, "stock": i} for i, t in enumerate(TRICKY_TEXTS)]
        rows += [{"sku": "LOW", "stock": extremes[stock_type][0]}, {"sku": "HIGH", "stock": extremes[stock_type][1]}]
        conn.execute(sa.text(f'INSERT INTO "{table}" VALUES (:sku, :stock)'), rows)
        driver = [tuple(row) for row in conn.execute(sa.text(query))]

    read = read_stock(postgres_warehouse, query + ";")
    assert read["stock"].dtype == "int64"  # no NULL: the cleaning's fast path, as from the cursor
    assert list(zip(read["sku"], read["stock"])) == driver and read["sku"].tolist().count(None) == 1

    with engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO \"{table}\" VALUES ('NULL', NULL)"))
        driver = [tuple(row) for row in conn.execute(sa.text(query))]
    engine.dispose()
    read = read_stock(postgres_warehouse, query)
    assert list(zip(read["sku"], read["stock"])) == driver and read["stock"].iloc[0] is None
