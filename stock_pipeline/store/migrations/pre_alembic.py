"""The tables `metadata.create_all` made before the pipeline had migrations, frozen here
like a released migration (never edit them: they describe databases that exist).

Migrations 0001 and 0002 create these tables, and a database with the pipeline's tables
but no version table is compared with `schemas()`: the revision whose schema it matches
exactly is the one it is stamped at before the remaining migrations run.

- "0001": the last release before migrations (commit 73ea1ae).
- "0002": main between that release and migrations (ec0359a…), whose `create_all` had
  already added `sync_status`.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa


class FrozenTable(NamedTuple):
    name: str
    columns: list[sa.Column]  # new Column objects on every call: a Column belongs to one table
    indexes: list[tuple[str, list[str]]]  # (name, columns)


def release_0001() -> list[FrozenTable]:
    def now():
        return sa.func.now()

    return [
        FrozenTable(
            "accounts",
            [
                sa.Column("name", sa.String(100), primary_key=True),
                sa.Column("status", sa.String(20), nullable=False, server_default="active"),
                sa.Column("access_token", sa.Text, nullable=True),
                sa.Column("refresh_token", sa.Text, nullable=True),
                sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
                sa.Column("last_error", sa.Text, nullable=True),
                sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now()),
                sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now()),
            ],
            [],
        ),
        FrozenTable(
            "writes",
            [
                sa.Column(
                    "id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True
                ),
                sa.Column("run_id", sa.String(64), nullable=False),
                sa.Column("account", sa.String(100), nullable=False),
                sa.Column("offer_id", sa.String(32), nullable=False),
                sa.Column("sku", sa.String(255), nullable=True),
                sa.Column("before", sa.Integer, nullable=True),
                sa.Column("after", sa.Integer, nullable=False),
                sa.Column("action", sa.String(16), nullable=False),
                sa.Column("method", sa.String(32), nullable=False),
                sa.Column("command_id", sa.String(64), nullable=True),
                sa.Column("operation_url", sa.Text, nullable=True),
                sa.Column("status", sa.String(16), nullable=False),
                sa.Column("error", sa.Text, nullable=True),
                sa.Column("guards_overridden", sa.Boolean, nullable=False, server_default=sa.false()),
                sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=now()),
                sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=now()),
            ],
            [
                ("ix_writes_account_offer", ["account", "offer_id"]),
                ("ix_writes_run", ["run_id"]),
                ("ix_writes_sku", ["sku"]),
                ("ix_writes_account_status", ["account", "status"]),
            ],
        ),
        FrozenTable(
            "ended_offers",
            [
                sa.Column("account", sa.String(100), primary_key=True),
                sa.Column("offer_id", sa.String(32), primary_key=True),
                sa.Column("run_id", sa.String(64), nullable=False),
                sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
            ],
            [],
        ),
        FrozenTable(
            "guard_state",
            [
                sa.Column("name", sa.String(100), primary_key=True),
                sa.Column("value", sa.BigInteger, nullable=False),
                sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            ],
            [],
        ),
        FrozenTable(
            "account_policies",
            [
                sa.Column("account", sa.String(100), primary_key=True),
                sa.Column("policy", sa.Text, nullable=False),
                sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
            ],
            [],
        ),
    ]


def sync_status_0002() -> list[FrozenTable]:
    return [
        FrozenTable(
            "sync_status",
            [
                sa.Column("account", sa.String(100), primary_key=True),
                sa.Column("last_run_id", sa.String(64), nullable=False),
                sa.Column("last_result", sa.String(16), nullable=False),
                sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=False),
                sa.Column("last_error", sa.Text, nullable=True),
                sa.Column("last_success_run_id", sa.String(64), nullable=True),
                sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
                sa.Column("offers", sa.Integer, nullable=True),
                sa.Column("changed", sa.Integer, nullable=True),
                sa.Column("written", sa.Integer, nullable=True),
                sa.Column("failed", sa.Integer, nullable=True),
                sa.Column("pending", sa.Integer, nullable=True),
            ],
            [],
        )
    ]


def create_tables(op, tables: list[FrozenTable]) -> None:
    """What a migration runs: each table, then its indexes (the order create_all used)."""
    for table in tables:
        op.create_table(table.name, *table.columns)
        for index, columns in table.indexes:
            op.create_index(index, table.name, columns)


def _metadata(tables: list[FrozenTable]) -> sa.MetaData:
    metadata = sa.MetaData()
    for frozen in tables:
        table = sa.Table(frozen.name, metadata, *frozen.columns)
        for index, columns in frozen.indexes:
            sa.Index(index, *(table.c[c] for c in columns))
    return metadata


def schemas() -> dict[str, sa.MetaData]:
    """Revision → the schema create_all made at that revision, newest first."""
    return {"0002": _metadata(release_0001() + sync_status_0002()), "0001": _metadata(release_0001())}
