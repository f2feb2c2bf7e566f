"""Each account's stock policy (reserve, cap, how duplicate SKU rows combine)."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.store.schema import metadata

account_policies = sa.Table(
    "account_policies",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("policy", sa.Text, nullable=False),  # JSON of StockPolicy
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


class PolicyStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def get(self, account: str) -> StockPolicy:
        with self.engine.connect() as conn:
            raw = conn.execute(
                sa.select(account_policies.c.policy).where(account_policies.c.account == account)
            ).scalar()
        return StockPolicy(**json.loads(raw)) if raw else StockPolicy()

    def set(self, account: str, policy: StockPolicy) -> None:
        values = dict(policy=json.dumps(policy.to_dict()), updated_at=datetime.now(timezone.utc))
        with self.engine.begin() as conn:
            if not conn.execute(
                account_policies.update().where(account_policies.c.account == account).values(**values)
            ).rowcount:
                conn.execute(account_policies.insert().values(account=account, **values))
