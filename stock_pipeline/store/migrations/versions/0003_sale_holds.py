"""sale_holds: purchases on Allegro whose offers no sync may raise back until the
warehouse books the order or the hold runs out (store/sale_holds.py, core/sale_holds.py).
A new table: existing rows are untouched.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0002"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Written out, not imported from store/sale_holds.py: a released migration never changes.
    op.create_table(
        "sale_holds",
        sa.Column("account", sa.String(100), primary_key=True),
        sa.Column("line_item_id", sa.String(64), primary_key=True),
        sa.Column("offer_id", sa.String(32), nullable=False),
        sa.Column("sku", sa.String(255), nullable=True),
        sa.Column("quantity", sa.Integer, nullable=False),
        sa.Column("warehouse_stock_at_sale", sa.Integer, nullable=True),
        sa.Column("bought_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("hold_until", sa.DateTime(timezone=True), nullable=False),
        sa.Column("order_event_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_sale_holds_account_offer", "sale_holds", ["account", "offer_id"])


def downgrade() -> None:
    op.drop_index("ix_sale_holds_account_offer", table_name="sale_holds")
    op.drop_table("sale_holds")
