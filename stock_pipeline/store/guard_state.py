"""What the guards remember between runs: the size of the last snapshot that passed,
and which bad rows the seller was last warned about."""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.store.schema import metadata

guard_state = sa.Table(
    "guard_state",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

LAST_GOOD_SNAPSHOT_SKUS = "last_good_snapshot_skus"
BAD_ROWS_FINGERPRINT = "bad_rows_fingerprint"  # of the bad rows last alerted about (0: none)


def read_value(engine: Engine, name: str) -> int | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(guard_state.c.value).where(guard_state.c.name == name)).scalar()


def write_value(engine: Engine, name: str, value: int) -> None:
    now = datetime.now(timezone.utc)
    with engine.begin() as conn:
        if not conn.execute(
            guard_state.update().where(guard_state.c.name == name).values(value=value, updated_at=now)
        ).rowcount:
            conn.execute(guard_state.insert().values(name=name, value=value, updated_at=now))
