"""The seller's warehouse database, read-only: `stock_source.py` runs `STOCK_QUERY`
against `STOCK_DATABASE_URL` (any SQLAlchemy URL) and hands the raw rows, values
untouched, to `core.snapshot` to be judged."""
