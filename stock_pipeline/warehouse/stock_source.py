"""Reads the seller's warehouse stock (`STOCK_DATABASE_URL`, `STOCK_QUERY`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pandas.api.types import infer_dtype

from stock_pipeline.foundation.errors import AllegroSyncError


class StockSourceError(AllegroSyncError):
    """The warehouse database or the stock query cannot be used."""


def read_stock(database_url: str, query: str) -> pd.DataFrame:
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
            try:
                result = conn.execute(sa.text(query))
                columns = [str(c).lower() for c in result.keys()]
                values = _column_values(result, len(columns))
            except sa.exc.SQLAlchemyError as exc:
                raise StockSourceError(f"STOCK_QUERY failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    return pd.DataFrame(
        {i: _exact_column(column) for i, column in enumerate(values)},
        index=pd.RangeIndex(len(values[0]) if values else 0),
    ).set_axis(columns, axis=1)


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
