"""Tables of the pipeline database (Postgres in production, SQLite for the demo).

The tables are declared here and in the modules that use them (ended_offers,
guard_state, policies, sync_status), all on `metadata`: the schema this release's code
expects. The database gets that schema only through migrations
(`store/migrations/versions/`, run by `store/migrate.py`): `store/engine.py`'s `engine_for` brings the
database to the head revision when a process first opens it, under a lock so that
processes starting together migrate once, recognises (and stamps) a database made by a
release from before migrations, and refuses one that is newer than this release with
PipelineDatabaseSchemaError. `stock-pipeline db upgrade` / `db current` do it or report
it on demand.

A change to any table here is a new migration in the same commit (see README,
"Upgrading"); stock_pipeline_tests/test_migrations.py fails while the migrated schema
and `metadata` differ.
"""

from __future__ import annotations

from datetime import datetime, timezone

import sqlalchemy as sa

metadata = sa.MetaData()

ACCOUNT_ACTIVE = "active"
ACCOUNT_NEEDS_REAUTH = "needs_reauth"
ACCOUNT_PAUSED = "paused"  # by the operator: kept, shown, never synced until resumed

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("name", sa.String(100), primary_key=True),
    sa.Column("status", sa.String(20), nullable=False, server_default=ACCOUNT_ACTIVE),
    sa.Column("access_token", sa.Text, nullable=True),
    sa.Column("refresh_token", sa.Text, nullable=True),
    sa.Column("access_expires_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
)

# One row per offer per planned write: inserted as `planned` before anything is sent,
# so a killed process leaves `planned`/`sent` rows, never a phantom `success`.
writes = sa.Table(
    "writes",
    metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(64), nullable=False),
    sa.Column("account", sa.String(100), nullable=False),
    sa.Column("offer_id", sa.String(32), nullable=False),
    sa.Column("sku", sa.String(255), nullable=True),
    sa.Column("before", sa.Integer, nullable=True),
    sa.Column("after", sa.Integer, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("method", sa.String(32), nullable=False),
    sa.Column("command_id", sa.String(64), nullable=True),
    sa.Column("operation_url", sa.Text, nullable=True),  # an asynchronous PATCH (202) to check later
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("guards_overridden", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()),
    sa.Index("ix_writes_account_offer", "account", "offer_id"),
    sa.Index("ix_writes_run", "run_id"),
    sa.Index("ix_writes_sku", "sku"),
    sa.Index("ix_writes_account_status", "account", "status"),
)


def aware_utc(value: datetime | None) -> datetime | None:
    """SQLite hands back naive datetimes; everything stored is UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value
