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
    """One statement, so account runs writing the same (warehouse-wide) value at once
    cannot both try to insert it."""
    now = datetime.now(timezone.utc)
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(guard_state).values(name=name, value=value, updated_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[guard_state.c.name], set_={"value": value, "updated_at": now}
    )
    with engine.begin() as conn:
        conn.execute(statement)
