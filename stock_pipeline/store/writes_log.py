"""The record of every planned and applied write (the audit trail).

Rows are inserted as `planned` before the first call, marked `sent` with their
command id just before the call, and get their final status only from Allegro's
answer (task report, PATCH status). So after a crash the log can hold `planned` or
`sent` rows, but never a `success` that did not happen. The write engine marks a whole
chunk of PATCHes `sent` in one statement (`mark_sent`) before any of them goes out and
records answers in bulk (`mark_each`) after they came: a row is `sent` from before its
call until its answer is stored.

Actions, methods and statuses are the enums of core/contracts.py; each value is checked
against its enum as it is stored, so the audit holds no other word.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, NamedTuple

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stock_pipeline.core.vocabulary import Action, Method, WriteStatus
from stock_pipeline.store.schema import writes


class Outcome(NamedTuple):
    """What Allegro said about one write (`mark_each`). An `operation_url` with status
    `sent` is an accepted (202) PATCH still to be checked; None keeps the stored one."""

    run_id: str
    offer_id: str
    action: str
    status: str
    error: str | None = None
    operation_url: str | None = None


class WritesLog:
    def __init__(self, engine: Engine, guards_overridden: bool = False):
        self.engine = engine
        self._guards_overridden = guards_overridden  # stamped on the writes of a run that overrode the guards

    def record_planned(self, run_id: str, account: str, plan: pd.DataFrame) -> None:
        self._insert(run_id, account, plan, WriteStatus.PLANNED)

    def record_held(self, run_id: str, account: str, held: pd.DataFrame) -> None:
        """Writes kept back for a sale (core/sale_holds.py), each with the call it would
        have been (`method`) and why in `error`: never sent, shown in the audit."""
        self._insert(run_id, account, held, WriteStatus.HELD, reasons=held["reason"])

    def _insert(
        self, run_id: str, account: str, plan: pd.DataFrame, status: WriteStatus, reasons: pd.Series | None = None
    ) -> None:
        if plan.empty:
            return
        now = datetime.now(timezone.utc)
        errors = [None] * len(plan) if reasons is None else [None if pd.isna(e) else str(e)[:2000] for e in reasons]
        rows = [
            dict(
                run_id=run_id,
                account=account,
                offer_id=str(r.offer_id),
                sku=None if pd.isna(r.sku) else str(r.sku),
                before=int(r.before),
                after=int(r.after),
                action=Action(r.action).value,
                method=Method(r.method).value,
                status=status.value,
                error=error,
                guards_overridden=self._guards_overridden,
                created_at=now,
                updated_at=now,
            )
            for r, error in zip(plan.itertuples(index=False), errors)
        ]
        with self.engine.begin() as conn:
            conn.execute(writes.insert(), rows)

    def mark(
        self,
        run_id: str,
        account: str,
        action: str,
        offer_ids: Iterable[str],
        status: str,
        *,
        command_id: str | None = None,
        operation_url: str | None = None,
        error: str | None = None,
    ) -> None:
        values: dict = dict(status=WriteStatus(status).value, updated_at=datetime.now(timezone.utc))
        if command_id is not None:
            values["command_id"] = command_id
        if operation_url is not None:
            values["operation_url"] = operation_url
        if error is not None:
            values["error"] = error[:2000]
        self._update(run_id, account, [(offer_id, action) for offer_id in offer_ids], values)

    def mark_sent(self, run_id: str, account: str, keys: Iterable[tuple[str, str]]) -> None:
        """Marks the writes (offer_id, action) of one run `sent`, in one statement: a chunk
        of PATCHes about to go out."""
        self._update(run_id, account, keys, dict(status=WriteStatus.SENT.value, updated_at=datetime.now(timezone.utc)))

    def _update(self, run_id: str, account: str, keys: Iterable[tuple[str, str]], values: dict) -> None:
        """Sets `values` on the run's writes (offer_id, action) in one transaction, a
        statement per 1000 writes."""
        pairs = sorted({(str(offer), Action(action).value) for offer, action in keys})
        if not pairs:
            return
        with self.engine.begin() as conn:
            for start in range(0, len(pairs), 1000):
                conn.execute(
                    writes.update()
                    .where(
                        writes.c.run_id == run_id,
                        writes.c.account == account,
                        sa.tuple_(writes.c.offer_id, writes.c.action).in_(pairs[start : start + 1000]),
                    )
                    .values(**values)
                )

    def mark_each(self, account: str, results: Iterable[tuple]) -> None:
        """Statuses that differ per offer, in one transaction: `Outcome`s, or plain tuples
        (run_id, offer_id, action, status, error[, operation_url])."""
        results = [Outcome(*r) for r in results]
        if not results:
            return
        statement = (
            writes.update()
            .where(
                writes.c.run_id == sa.bindparam("b_run"),
                writes.c.account == sa.bindparam("b_account"),
                writes.c.offer_id == sa.bindparam("b_offer"),
                writes.c.action == sa.bindparam("b_action"),
            )
            .values(
                status=sa.bindparam("b_status"),
                error=sa.bindparam("b_error"),
                operation_url=sa.func.coalesce(sa.bindparam("b_url", type_=sa.Text), writes.c.operation_url),
                updated_at=sa.bindparam("b_now"),
            )
        )
        now = datetime.now(timezone.utc)
        with self.engine.begin() as conn:
            conn.execute(
                statement,
                [
                    dict(
                        b_run=run_id,
                        b_account=account,
                        b_offer=str(offer),
                        b_action=Action(action).value,
                        b_status=WriteStatus(status).value,
                        b_error=(error or None) and error[:2000],
                        b_url=operation_url,
                        b_now=now,
                    )
                    for run_id, offer, action, status, error, operation_url in results
                ],
            )

    def pending(self, account: str) -> pd.DataFrame:
        """Writes of earlier runs whose outcome Allegro had not reported yet."""
        columns = ["run_id", "offer_id", "action", "method", "command_id", "operation_url"]
        query = sa.select(*(writes.c[c] for c in columns)).where(
            writes.c.account == account, writes.c.status == WriteStatus.PENDING.value
        )
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).mappings().all(), columns=columns)

    def offers_written_since(self, account: str, since: datetime, *, other_than_run: str) -> set[str]:
        """Offers another run sent a write to at or after `since`: a full sync whose
        warehouse read is older leaves them alone (a live run already wrote a newer value)."""
        query = sa.select(writes.c.offer_id).where(
            writes.c.account == account,
            writes.c.run_id != other_than_run,
            writes.c.created_at >= since,
            writes.c.status.in_([WriteStatus.SENT.value, WriteStatus.SUCCESS.value, WriteStatus.PENDING.value]),
        )
        with self.engine.connect() as conn:
            return set(conn.execute(query).scalars())

    def status_counts(self, run_id: str) -> dict[str, int]:
        """How many of a run's writes ended in each status: what the run's summary reports."""
        query = sa.select(writes.c.status, sa.func.count()).where(writes.c.run_id == run_id).group_by(writes.c.status)
        with self.engine.connect() as conn:
            return {status: int(count) for status, count in conn.execute(query)}

    def count_by_account(self, status: str) -> dict[str, int]:
        """How many writes of each account are in `status` now (e.g. pending: Allegro has
        not reported them yet), whichever run planned them."""
        query = (
            sa.select(writes.c.account, sa.func.count())
            .where(writes.c.status == WriteStatus(status).value)
            .group_by(writes.c.account)
        )
        with self.engine.connect() as conn:
            return {account: int(count) for account, count in conn.execute(query)}

    def history(
        self,
        *,
        sku: str | None = None,
        offer_id: str | None = None,
        account: str | None = None,
        run_id: str | None = None,
        status: str | None = None,
        since: datetime | None = None,
        run_id_prefix: str | None = None,
        limit: int = 200,
    ) -> pd.DataFrame:
        """The newest `limit` writes matching every filter given; `since` keeps writes
        planned at or after that moment, `run_id_prefix` the runs whose id starts so (the
        short ids tables show)."""
        query = sa.select(writes).order_by(writes.c.id.desc()).limit(limit)
        status = None if status is None else WriteStatus(status).value
        for column, value in (
            (writes.c.sku, sku),
            (writes.c.offer_id, offer_id),
            (writes.c.account, account),
            (writes.c.run_id, run_id),
            (writes.c.status, status),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(writes.c.created_at >= since)
        if run_id_prefix is not None:
            query = query.where(writes.c.run_id.startswith(run_id_prefix, autoescape=True))
        with self.engine.connect() as conn:
            return pd.DataFrame(conn.execute(query).mappings().all(), columns=[c.name for c in writes.columns])
