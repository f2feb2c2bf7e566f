"""Tables of the pipeline database (Postgres in production, SQLite for the demo).

`create_all` is idempotent and runs at start; schema changes will need migrations
once there are deployments to carry along.
"""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.errors import PipelineDatabaseUnavailableError

metadata = sa.MetaData()

ACCOUNT_ACTIVE = "active"
ACCOUNT_NEEDS_REAUTH = "needs_reauth"
ACCOUNT_PAUSED = "paused"  # by the operator: kept, shown, never synced until resumed

accounts = sa.Table(
    "accounts", metadata,
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
    "writes", metadata,
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


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def engine_for(url: str) -> Engine:
    """One engine per URL per process, with the schema in place."""
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            if url.startswith("sqlite:///"):
                from pathlib import Path

                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
                engine = sa.create_engine(url, connect_args={"timeout": 30})
            else:
                engine = sa.create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=5)
            _create_schema(engine)
            _engines[url] = engine
        return engine


def _create_schema(engine: Engine) -> None:
    # Tables defined beside the code that uses them register on `metadata` when imported.
    from stock_pipeline.store import ended_offers, guard_state, policies, sync_status  # noqa: F401

    try:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Two processes starting together would race on CREATE TABLE.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(4242001)"))
            metadata.create_all(conn)
    except sa.exc.OperationalError as exc:
        engine.dispose()
        raise PipelineDatabaseUnavailableError(
            f"cannot reach the pipeline database {engine.url.render_as_string(hide_password=True)} "
            f"(STOCK_PIPELINE_DATABASE_URL): {str(exc.orig).strip().splitlines()[0] if exc.orig else exc}"
        ) from None


def dispose_engines() -> None:
    with _engines_lock:
        for engine in _engines.values():
            engine.dispose()
        _engines.clear()
