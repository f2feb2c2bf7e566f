"""Sales on Allegro whose offers no sync may raise back yet (the rule: core/sale_holds.py).

One row per purchased line item, recorded from the order journal: recording is
idempotent (the same order event seen twice, by a replay or a restarted sensor, records
once). A hold the rule released is marked `released_at` rather than deleted, so a replay
of its event cannot bring it back; rows are deleted once their hold has run out
(`purge_expired`), when a replayed sale would make no hold anyway
(core.sale_holds.holds_for_sales).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stock_pipeline.core.sale_holds import HOLD_COLUMNS, empty_holds, typed_holds
from stock_pipeline.store.schema import metadata

sale_holds = sa.Table(
    "sale_holds",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("line_item_id", sa.String(64), primary_key=True),  # Allegro's order line item (a UUID)
    sa.Column("offer_id", sa.String(32), nullable=False),
    sa.Column("sku", sa.String(255), nullable=True),
    sa.Column("quantity", sa.Integer, nullable=False),
    sa.Column("warehouse_stock_at_sale", sa.Integer, nullable=True),  # NULL: the SKU was not in the warehouse
    sa.Column("bought_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("hold_until", sa.DateTime(timezone=True), nullable=False),
    sa.Column("order_event_id", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_sale_holds_account_offer", "account", "offer_id"),
)

_CHUNK = 1000


class SaleHolds:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(self, account: str, holds: pd.DataFrame) -> int:
        """Records `holds` (core.sale_holds.HOLD_COLUMNS, from holds_for_sales) of `account`;
        a line item recorded before (released or not) is left as it is. Returns how many
        were new."""
        if holds.empty:
            return 0
        missing = set(HOLD_COLUMNS) - set(holds.columns)
        if missing:
            raise ValueError(f"holds lack columns: {', '.join(sorted(missing))}")
        rows = {}
        for r in holds.itertuples(index=False):
            rows.setdefault(
                str(r.line_item_id),
                dict(
                    account=account,
                    line_item_id=str(r.line_item_id),
                    offer_id=str(r.offer_id),
                    sku=None if pd.isna(r.sku) else str(r.sku),
                    quantity=int(r.quantity),
                    warehouse_stock_at_sale=None
                    if pd.isna(r.warehouse_stock_at_sale)
                    else int(r.warehouse_stock_at_sale),
                    bought_at=pd.Timestamp(r.bought_at).to_pydatetime(),
                    hold_until=pd.Timestamp(r.hold_until).to_pydatetime(),
                    order_event_id=str(r.order_event_id),
                ),
            )
        with self.engine.begin() as conn:
            known = self._known(conn, account, list(rows))
            new = [row for line_item, row in rows.items() if line_item not in known]
            if new:
                conn.execute(sa_insert_ignoring_duplicates(conn), new)
        return len(new)

    @staticmethod
    def _known(conn: Connection, account: str, line_items: list[str]) -> set[str]:
        known: set[str] = set()
        for start in range(0, len(line_items), _CHUNK):
            known.update(
                conn.execute(
                    sa.select(sale_holds.c.line_item_id).where(
                        sale_holds.c.account == account,
                        sale_holds.c.line_item_id.in_(line_items[start : start + _CHUNK]),
                    )
                ).scalars()
            )
        return known

    def active(self, account: str, now: datetime | None = None) -> pd.DataFrame:
        """The account's holds neither released nor run out at `now` (HOLD_COLUMNS)."""
        now = now or datetime.now(timezone.utc)
        query = sa.select(*(sale_holds.c[c] for c in HOLD_COLUMNS)).where(
            sale_holds.c.account == account, sale_holds.c.released_at.is_(None), sale_holds.c.hold_until > now
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(sale_holds.c.bought_at, sale_holds.c.line_item_id)).mappings().all()
        if not rows:
            return empty_holds()
        # SQLite hands back naive datetimes: typed_holds reads them as the UTC they are.
        return typed_holds(pd.DataFrame(rows, columns=HOLD_COLUMNS))

    def release(self, account: str, line_item_ids: Iterable[str], now: datetime | None = None) -> int:
        """Releases these holds (core.sale_holds.apply_holds' `released`); returns how many were active."""
        return self._release(account, sale_holds.c.line_item_id, line_item_ids, now)

    def release_offers(self, account: str, offer_ids: Iterable[str], now: datetime | None = None) -> int:
        """Releases every hold of these offers, whichever sale made it."""
        return self._release(account, sale_holds.c.offer_id, offer_ids, now)

    def _release(self, account: str, column: sa.Column, keys: Iterable[str], now: datetime | None) -> int:
        keys = sorted(set(map(str, keys)))
        released = 0
        with self.engine.begin() as conn:
            for start in range(0, len(keys), _CHUNK):
                released += conn.execute(
                    sale_holds.update()
                    .where(
                        sale_holds.c.account == account,
                        column.in_(keys[start : start + _CHUNK]),
                        sale_holds.c.released_at.is_(None),
                    )
                    .values(released_at=now or datetime.now(timezone.utc))
                ).rowcount
        return released

    def purge_expired(self, now: datetime | None = None, account: str | None = None) -> int:
        """Deletes the holds that have run out (released or not), of one account or all."""
        query = sale_holds.delete().where(sale_holds.c.hold_until <= (now or datetime.now(timezone.utc)))
        if account is not None:
            query = query.where(sale_holds.c.account == account)
        with self.engine.begin() as conn:
            return conn.execute(query).rowcount


def sa_insert_ignoring_duplicates(conn: Connection):
    """An INSERT that skips a line item another process recorded since it was looked up
    (two sensors' ticks overlapping): Postgres and SQLite both say ON CONFLICT DO NOTHING."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        return sale_holds.insert()
    return insert(sale_holds).on_conflict_do_nothing(index_elements=["account", "line_item_id"])
