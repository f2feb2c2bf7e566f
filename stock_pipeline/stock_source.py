"""Reads the seller's warehouse stock (`STOCK_DATABASE_URL`, `STOCK_QUERY`)."""

from __future__ import annotations

import pandas as pd
import sqlalchemy as sa

from stock_pipeline.errors import AllegroSyncError


class StockSourceError(AllegroSyncError):
    """The warehouse database or the stock query cannot be used."""


def read_stock(database_url: str, query: str) -> pd.DataFrame:
    """Raw rows (`sku`, `stock`) as the warehouse returns them; cleaning happens in core.snapshot."""
    engine = sa.create_engine(database_url)
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(sa.text(query), conn)
    except sa.exc.OperationalError as exc:
        raise StockSourceError(f"cannot read the warehouse database (STOCK_DATABASE_URL "
                               f"{engine.url.render_as_string(hide_password=True)}): {_first_line(exc)}") from None
    except sa.exc.SQLAlchemyError as exc:
        raise StockSourceError(f"STOCK_QUERY failed: {_first_line(exc)}") from None
    finally:
        engine.dispose()
    frame.columns = [str(c).lower() for c in frame.columns]
    return frame


def _first_line(exc: sa.exc.SQLAlchemyError) -> str:
    return str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
