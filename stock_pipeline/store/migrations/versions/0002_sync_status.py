"""sync_status: the last run of each account (result, last success, counts), read by
`accounts list`, `doctor` and the freshness figures. The only schema change between the
last release before migrations (73ea1ae) and the first with them.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from typing import Sequence, Union

from alembic import op

from stock_pipeline.store.migrations.pre_alembic import create_tables, sync_status_0002

revision: str = "0002"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Frozen in pre_alembic.py: main's create_all made this same table before migrations.
    create_tables(op, sync_status_0002())


def downgrade() -> None:
    op.drop_table("sync_status")
