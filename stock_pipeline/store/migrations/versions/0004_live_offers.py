"""live_offers and live_accounts: each account's offer map kept current between full
syncs (from the listing, the offer-events journal and confirmed writes), and per account
the live sync's state and figures (store/live_offers.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: Union[str, Sequence[str], None] = "0003"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "live_offers",
        sa.Column("account", sa.String(100), primary_key=True),
        sa.Column("offer_id", sa.String(32), primary_key=True),
        sa.Column("sku", sa.String(255), nullable=True),
        sa.Column("stock", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_live_offers_account_sku", "live_offers", ["account", "sku"])
    op.create_table(
        "live_accounts",
        sa.Column("account", sa.String(100), primary_key=True),
        sa.Column("offers_listed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("offer_events_since", sa.DateTime(timezone=True), nullable=True),
        sa.Column("order_events_cursor", sa.Text, nullable=True),
        sa.Column("last_change_seen_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_write_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_lag_seconds", sa.Float, nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("live_accounts")
    op.drop_index("ix_live_offers_account_sku", table_name="live_offers")
    op.drop_table("live_offers")
