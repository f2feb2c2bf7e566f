"""One writer per account at a time, whatever launched the runs.

Dagster's queue (tag concurrency on the partition) normally keeps two runs of an
account apart; this lock makes a forced second run harmless too: it stops before
sending anything instead of racing the first one's writes. A Postgres session-level
advisory lock dies with its connection, so a killed run never leaves it held.
"""

from __future__ import annotations

import time
import zlib
from contextlib import contextmanager
from typing import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.foundation.errors import AllegroSyncError

LOCK_NAMESPACE = 0x5354  # "ST": keeps our keys apart from other advisory-lock users


class AccountBusyError(AllegroSyncError):
    """Another run is writing to this account right now."""


@contextmanager
def account_write_lock(engine: Engine, account: str, wait_seconds: float = 0.0) -> Iterator[None]:
    """`wait_seconds`: how long to wait for another run's writes to finish (a live run's
    are over in seconds) before giving up with AccountBusyError."""
    if engine.dialect.name != "postgresql":
        yield  # the embedded demo database: a single process
        return
    key = zlib.crc32(account.encode())
    deadline = time.monotonic() + wait_seconds
    with engine.connect() as conn:
        while True:
            acquired = conn.execute(
                sa.text("SELECT pg_try_advisory_lock(:ns, :key)"), {"ns": LOCK_NAMESPACE, "key": key - 2**31}
            ).scalar()
            conn.commit()
            if acquired or time.monotonic() >= deadline:
                break
            time.sleep(0.25)
        if not acquired:
            raise AccountBusyError(
                f"another run is writing to account {account!r} now; this run sent nothing "
                "(the next scheduled run will sync it)"
            )
        try:
            yield
        finally:
            conn.execute(sa.text("SELECT pg_advisory_unlock(:ns, :key)"), {"ns": LOCK_NAMESPACE, "key": key - 2**31})
            conn.commit()
