"""The last sync of each account, as the run itself recorded it: what `accounts list`,
`doctor` and the freshness figures read. One row per account, written at the end of
every real (not dry) run by the job's hooks, whatever started the run (CLI, schedule,
UI, backfill)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.store.schema import aware_utc, metadata

RESULT_SUCCESS = "success"
RESULT_FAILED = "failed"
RESULT_HELD = "held"  # a guard held the writes

sync_status = sa.Table(
    "sync_status",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("last_run_id", sa.String(64), nullable=False),
    sa.Column("last_result", sa.String(16), nullable=False),
    sa.Column("last_finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("last_success_run_id", sa.String(64), nullable=True),
    sa.Column("last_success_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("offers", sa.Integer, nullable=True),  # of the last run that listed them
    sa.Column("changed", sa.Integer, nullable=True),
    sa.Column("written", sa.Integer, nullable=True),
    sa.Column("failed", sa.Integer, nullable=True),
    sa.Column("pending", sa.Integer, nullable=True),
)


@dataclass(frozen=True)
class SyncStatus:
    account: str
    last_run_id: str
    last_result: str
    last_finished_at: datetime
    last_error: str | None
    last_success_run_id: str | None
    last_success_at: datetime | None
    offers: int | None
    changed: int | None
    written: int | None
    failed: int | None
    pending: int | None

    def age_seconds(self, now: datetime | None = None) -> float | None:
        """Seconds since the last successful sync (None: never synced)."""
        if self.last_success_at is None:
            return None
        return ((now or datetime.now(timezone.utc)) - self.last_success_at).total_seconds()


class SyncStatusStore:
    def __init__(self, engine: Engine):
        self.engine = engine

    def record(
        self,
        account: str,
        *,
        run_id: str,
        result: str,
        error: str | None = None,
        offers: int | None = None,
        changed: int | None = None,
        written: int | None = None,
        failed: int | None = None,
        pending: int | None = None,
        finished_at: datetime | None = None,
    ) -> None:
        """The outcome of one run. Counts left None keep the previous run's figures (a run
        that failed before listing still leaves the offer count known)."""
        now = finished_at or datetime.now(timezone.utc)
        values: dict = dict(
            last_run_id=run_id, last_result=result, last_finished_at=now, last_error=(error or None) and error[:2000]
        )
        if result == RESULT_SUCCESS:
            values.update(last_success_run_id=run_id, last_success_at=now)
        values.update(
            {
                k: v
                for k, v in dict(
                    offers=offers, changed=changed, written=written, failed=failed, pending=pending
                ).items()
                if v is not None
            }
        )
        with self.engine.begin() as conn:
            if not conn.execute(sync_status.update().where(sync_status.c.account == account).values(**values)).rowcount:
                conn.execute(sync_status.insert().values(account=account, **values))

    def all(self) -> dict[str, SyncStatus]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(sync_status)).mappings().all()
        return {
            r["account"]: SyncStatus(
                **{
                    **r,
                    "last_finished_at": aware_utc(r["last_finished_at"]),
                    "last_success_at": aware_utc(r["last_success_at"]),
                }
            )
            for r in rows
        }

    def get(self, account: str) -> SyncStatus | None:
        return self.all().get(account)

    def forget(self, account: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(sync_status.delete().where(sync_status.c.account == account))
