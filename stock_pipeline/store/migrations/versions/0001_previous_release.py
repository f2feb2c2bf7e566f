"""The schema of the last release before migrations (commit 73ea1ae): accounts, writes
(the audit) with its indexes, ended_offers, guard_state, account_policies, exactly as
`metadata.create_all` made them, on Postgres and SQLite.

A database made by that release has these tables and no version table: it is recognised
(`pre_alembic.py`) and stamped at this revision instead of running it.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from typing import Sequence, Union

from alembic import op

from stock_pipeline.store.migrations.pre_alembic import create_tables, release_0001

revision: str = "0001"
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # The tables are frozen in pre_alembic.py, which also recognises databases that release made.
    create_tables(op, release_0001())


def downgrade() -> None:
    # Drops every table, the audit included: only for developers (stock-pipeline never downgrades).
    for table in ("account_policies", "guard_state", "ended_offers", "writes", "accounts"):
        op.drop_table(table)
