"""Reads the seller's warehouse stock (`STOCK_DATABASE_URL`, `STOCK_QUERY`) and, for the
live sync, the rows changed since a moment (`STOCK_CHANGES_QUERY`)."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import sqlalchemy as sa
from pandas.api.types import infer_dtype

from stock_pipeline.foundation.errors import AllegroSyncError


class StockSourceError(AllegroSyncError):
    """The warehouse database or the stock query cannot be used."""


def read_stock(
    database_url: str, query: str, params: dict | None = None, *, setting: str = "STOCK_QUERY"
) -> pd.DataFrame:
    """Raw rows (`sku`, `stock`) with the values the database driver returned; cleaning
    happens in core.snapshot.

    Not pd.read_sql_query: its type inference is lossy for exactly the values the
    cleaning must judge. An integer column with one NULL becomes float64 (2^63 - 1 reads
    as 9.223372036854776e18), NUMERIC becomes float (Decimal('12.0000000000000001') reads
    as 12.0), and NULL becomes NaN, indistinguishable from a NaN the warehouse stored."""
    engine = sa.create_engine(database_url)
    try:
        try:
            conn = engine.connect()
        except sa.exc.SQLAlchemyError as exc:
            raise StockSourceError(
                f"cannot connect to the warehouse database (STOCK_DATABASE_URL "
                f"{engine.url.render_as_string(hide_password=True)}): {_first_line(exc)}"
            ) from None
        # Connected: whatever fails now is the query's (SQLite reports a missing table as
        # an OperationalError, which is not a connection problem).
        with conn:
            # COPY takes no parameters; a parameterised query returns few rows anyway.
            copied = _copied_columns(conn, query) if engine.dialect.name == "postgresql" and not params else None
            try:
                if copied is None:
                    result = conn.execute(sa.text(query), params or {})
                    columns = [str(c).lower() for c in result.keys()]
                    values = _column_values(result, len(columns))
                else:
                    columns, values = copied
            except sa.exc.SQLAlchemyError as exc:
                raise StockSourceError(f"{setting} failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    return pd.DataFrame(
        {i: _exact_column(column) for i, column in enumerate(values)},
        index=pd.RangeIndex(len(values[0]) if values else 0),
    ).set_axis(columns, axis=1)


CHANGED_AT = "changed_at"


def read_stock_changes(database_url: str, query: str, since) -> pd.DataFrame:
    """The rows `STOCK_CHANGES_QUERY` returns for `:since`: `sku, stock, changed_at`, raw
    as read_stock gives them. The query must return every row of each SKU it names (a SKU's
    rows replace all its rows the live sync holds)."""
    rows = read_stock(database_url, query, {"since": since}, setting="STOCK_CHANGES_QUERY")
    missing = {"sku", "stock", CHANGED_AT} - set(rows.columns)
    if missing:
        raise StockSourceError(
            f"STOCK_CHANGES_QUERY must return columns sku, stock and {CHANGED_AT}; missing: "
            f"{', '.join(sorted(missing))} (got: {', '.join(map(str, rows.columns))})"
        )
    return rows


def newest_change(database_url: str, query: str, since):
    """The newest `changed_at` STOCK_CHANGES_QUERY returns for `:since`, read by the database
    (one row back, however many changed): where the live sync's changes reads start."""
    statement = query.strip().rstrip(";")
    rows = read_stock(
        database_url,
        f"SELECT max({CHANGED_AT}) AS newest FROM ({statement}) AS changes",
        {"since": since},
        setting="STOCK_CHANGES_QUERY",
    )
    return rows["newest"].iloc[0] if len(rows) else None


FETCH_ROWS = 100_000  # rows per fetch: a million rows never sit as row objects at once


def _column_values(result: sa.CursorResult, width: int) -> list[np.ndarray]:
    """The result's columns as object arrays of the driver's own values, built from the
    DBAPI cursor's plain tuples a batch at a time (SQLAlchemy's Row objects cost more
    than the values they hold)."""
    cursor = result.cursor
    batches: list[list[np.ndarray]] = [[] for _ in range(width)]
    while batch := cursor.fetchmany(FETCH_ROWS):
        for i, column in enumerate(zip(*batch)):
            batches[i].append(np.fromiter(column, dtype=object, count=len(batch)))
    return [np.concatenate(parts) if parts else np.empty(0, dtype=object) for parts in batches]


# PostgreSQL types whose every value CSV text gives back exactly, as the driver would:
# int2, int4, int8 (whole numbers within int64) and text, varchar. Any other type in the
# result (numeric, float, …) is read through the driver, whose values the cleaning judges.
_COPIED_TYPES = {21: pa.int64(), 23: pa.int64(), 20: pa.int64(), 25: pa.string(), 1043: pa.string()}


def _copied_columns(conn: sa.Connection, query: str) -> tuple[list[str], list[np.ndarray]] | None:
    """A PostgreSQL result of whole-number and text columns only, as COPY ... TO STDOUT in
    CSV read by pyarrow: the rows never become Python tuples (a million rows: several
    times faster than the cursor). None when the result has another type or COPY cannot
    run the query; the caller then reads it through the cursor, as before, and reports
    what is wrong with it."""
    statement = query.strip().rstrip(";")
    try:
        with conn.begin_nested():  # a query COPY or the probe refuses leaves the transaction usable
            cursor = conn.connection.driver_connection.cursor()
            cursor.execute(f"SELECT * FROM ({statement}) AS stock_query LIMIT 0")
            described = [(str(c.name).lower(), c.type_code) for c in cursor.description or ()]
            if not described or any(type_code not in _COPIED_TYPES for _, type_code in described):
                return None
            data = _copy_out(conn, cursor, f"COPY ({statement}) TO STDOUT (FORMAT csv)")
        names = [name for name, _ in described]
        if not data:
            return names, [np.empty(0, dtype=object) for _ in names]
        table = pa_csv.read_csv(
            pa.py_buffer(data),
            read_options=pa_csv.ReadOptions(column_names=[f"c{i}" for i in range(len(names))], use_threads=False),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True),
            # CSV NULL is an unquoted empty field; a quoted "" is an empty text.
            convert_options=pa_csv.ConvertOptions(
                column_types={f"c{i}": _COPIED_TYPES[t] for i, (_, t) in enumerate(described)},
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=False,
            ),
        )
    except Exception:  # any refusal (a statement COPY cannot wrap, an encoding): read through the cursor
        return None
    return names, [_driver_values(column) for column in table.columns]


def _copy_out(conn: sa.Connection, cursor, copy_sql: str) -> bytes:
    """What COPY … TO STDOUT sends. The server sends a CopyData message per row, and
    psycopg 3 hands them to Python one at a time (a million rows: 2.4-3.4 s of the GIL);
    psycopg2's copy_expert gathers them in C (0.5-0.65 s). psycopg2 is installed with
    dagster-postgres: a connection of its own to the same database reads the rows (the type
    probe before needs no shared transaction: it reads no rows). psycopg 3 reads them when
    psycopg2 cannot connect with this URL."""
    if hasattr(cursor, "copy_expert"):  # the warehouse URL names psycopg2 itself
        return _copy_expert(cursor, copy_sql)
    try:
        import psycopg2

        url = conn.engine.url.set(drivername="postgresql")
        connection = psycopg2.connect(url.render_as_string(hide_password=False))
    except Exception:  # not installed, or a URL form libpq does not take: the driver at hand reads
        connection = None
    if connection is not None:
        try:
            with connection.cursor() as own:
                return _copy_expert(own, copy_sql)
        finally:
            connection.close()
    data = bytearray()
    with cursor.copy(copy_sql) as copy:
        while chunk := copy.read():
            data += chunk
    return bytes(data)


def _copy_expert(cursor, copy_sql: str) -> bytes:
    buffer = io.BytesIO()
    cursor.copy_expert(copy_sql, buffer)
    return buffer.getvalue()


def _driver_values(column: pa.ChunkedArray) -> np.ndarray:
    """The values the driver would have given: str, int and None, as an object array (or
    int64 when no value is missing, which _exact_column would make of it anyway)."""
    if pa.types.is_integer(column.type) and column.null_count == 0:
        return column.to_numpy()
    return np.array(column.to_pylist() if pa.types.is_integer(column.type) else column.to_numpy(), dtype=object)


def _exact_column(column: np.ndarray) -> np.ndarray:
    """int64 or float64 when every value already is one (the cleaning's fast paths), else
    the driver's own objects: Python ints of any size, Decimals, str, None."""
    kind = infer_dtype(column, skipna=False)
    if kind == "integer":
        try:
            return column.astype(np.int64)
        except OverflowError:  # beyond int64: kept as Python ints, reported as too large
            return column
    if kind == "floating":
        return column.astype(np.float64)
    return column


def _first_line(exc: sa.exc.SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
