"""Offers this pipeline ended. Only these come back when stock returns: an offer the
seller (or another app) ended is never re-activated by us."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.store.schema import metadata

ended_offers = sa.Table(
    "ended_offers",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("offer_id", sa.String(32), primary_key=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
)


class EndedOffers:
    def __init__(self, engine: Engine):
        self.engine = engine

    def ours(self, account: str) -> set[str]:
        with self.engine.connect() as conn:
            return set(
                conn.execute(sa.select(ended_offers.c.offer_id).where(ended_offers.c.account == account)).scalars()
            )

    def record(self, account: str, offer_ids: Iterable[str], run_id: str) -> None:
        ids = sorted(set(map(str, offer_ids)))
        if not ids:
            return
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            self._delete(conn, account, ids)
            conn.execute(
                ended_offers.insert(), [dict(account=account, offer_id=o, run_id=run_id, ended_at=now) for o in ids]
            )

    def forget(self, account: str, offer_ids: Iterable[str]) -> None:
        ids = sorted(set(map(str, offer_ids)))
        if ids:
            with self.engine.begin() as conn:
                self._delete(conn, account, ids)

    @staticmethod
    def _delete(conn, account: str, ids: list[str]) -> None:
        for start in range(0, len(ids), 1000):
            conn.execute(
                ended_offers.delete().where(
                    ended_offers.c.account == account, ended_offers.c.offer_id.in_(ids[start : start + 1000])
                )
            )
