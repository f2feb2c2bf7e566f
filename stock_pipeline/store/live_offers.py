"""Each account's offer map kept current between full syncs, and where the live sync
stands per account.

`live_offers`: one row per offer (id, SKU, stock, status) with the time it was observed.
A full sync's complete listing is merged in; the live sync then keeps the rows current
from Allegro's offer-events journal (the offers it names are re-read) and from its own
confirmed writes. Every row carries `observed_at` and a merge keeps the newer
observation: a listing taken while the journal was being followed cannot put back a
value older than the one the journal already brought.

`live_accounts`: per account, when the offer map was last complete and since when the
offer-events journal is followed (its position is the live sensor's cursor: a tick
evaluated again after a crash reads the same events again), the order journal's position
(shared by the sensor and the full sync; a sale is recorded once per line item however
often it is read), and the figures shown in `accounts list` and the UI (last change seen,
last write, lag).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from stock_pipeline.core.diff import OFFER_COLUMNS
from stock_pipeline.core.vocabulary import Action, PublicationStatus, WriteStatus
from stock_pipeline.store.schema import aware_utc, metadata

live_offers = sa.Table(
    "live_offers",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("offer_id", sa.String(32), primary_key=True),
    sa.Column("sku", sa.String(255), nullable=True),
    sa.Column("stock", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("observed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_live_offers_account_sku", "account", "sku"),
)

live_accounts = sa.Table(
    "live_accounts",
    metadata,
    sa.Column("account", sa.String(100), primary_key=True),
    sa.Column("offers_listed_at", sa.DateTime(timezone=True), nullable=True),  # last complete listing merged
    # When the offer journal's position was taken: a listing is trusted only if it started after it.
    sa.Column("offer_events_since", sa.DateTime(timezone=True), nullable=True),
    sa.Column("order_events_cursor", sa.Text, nullable=True),
    sa.Column("last_change_seen_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_write_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("last_lag_seconds", sa.Float, nullable=True),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

_CHUNK = 1000  # ids per IN (...) and rows per INSERT: well under every driver's parameter limit


@dataclass(frozen=True)
class LiveAccount:
    account: str
    offers_listed_at: datetime | None
    offer_events_since: datetime | None
    order_events_cursor: str | None
    last_change_seen_at: datetime | None
    last_write_at: datetime | None
    last_lag_seconds: float | None

    @property
    def map_current(self) -> bool:
        """Whether the offer map can be kept current from the journal: a complete listing
        merged that started after the journal's position was taken (events before that
        position are not followed)."""
        return (
            self.offer_events_since is not None
            and self.offers_listed_at is not None
            and self.offers_listed_at >= self.offer_events_since
        )


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _insert(engine_or_conn) -> type:
    return postgresql.insert if engine_or_conn.dialect.name == "postgresql" else sqlite.insert


def _rows(account: str, offers: pd.DataFrame, observed_at: datetime) -> list[dict]:
    return [
        {"account": account, "offer_id": o, "sku": s, "stock": k, "status": t, "observed_at": observed_at}
        for o, s, k, t in zip(*_columns(offers))
    ]


def _columns(offers: pd.DataFrame) -> tuple[list, list, list, list]:
    """The offers' ids, SKUs (None where missing), stock and status as plain Python lists,
    one row per offer id (the last one given: the newest of one observation)."""
    offers = offers.drop_duplicates("offer_id", keep="last") if offers["offer_id"].duplicated().any() else offers
    skus = offers["sku"].astype(object)
    return (
        offers["offer_id"].astype(str).tolist(),
        skus.where(skus.notna(), None).tolist(),
        offers["stock"].astype("int64").tolist(),
        offers["status"].astype(str).tolist(),
    )


# PostgreSQL's upsert of a whole offer frame in one statement: the rows go as one JSON array
# of [offer_id, sku, stock, status] (orjson writes it in C) that the server takes apart. A
# 10 000-offer listing then costs the process a few milliseconds of the interpreter, where
# executemany (a parameter set built and sent per row) took ~0.25 s and psycopg's array
# parameters ~0.05 s (its list dumper is Python): the account runs of a CLI sync share that
# interpreter (the GIL) with every other run's writes (benchmarks/throughput.py, scale.py).
_UPSERT_JSON = sa.text(
    """
    INSERT INTO live_offers (account, offer_id, sku, stock, status, observed_at)
    SELECT :account, o ->> 0, o ->> 1, CAST(o ->> 2 AS integer), o ->> 3, :observed_at
    FROM json_array_elements(CAST(:offers AS json)) AS o
    ON CONFLICT (account, offer_id) DO UPDATE
    SET sku = excluded.sku, stock = excluded.stock, status = excluded.status, observed_at = excluded.observed_at
    WHERE live_offers.observed_at <= excluded.observed_at
    """
).bindparams(sa.bindparam("observed_at", type_=sa.DateTime(timezone=True)))


def confirmed_offers(results: pd.DataFrame, offers: pd.DataFrame) -> pd.DataFrame:
    """The offers of `offers` that a confirmed write of `results` changed, as they are now.
    An offer may have two writes (its quantity, then ACTIVATE): the last gives its stock,
    an END or ACTIVATE its status."""
    done = results.loc[results["status"] == WriteStatus.SUCCESS, ["offer_id", "after", "action"]]
    done = done.assign(offer_id=done["offer_id"].astype(str))
    known = offers.assign(offer_id=offers["offer_id"].astype(str)).drop_duplicates("offer_id").set_index("offer_id")
    done = done[done["offer_id"].isin(known.index)]
    stock = done.drop_duplicates("offer_id", keep="last").set_index("offer_id")["after"]
    frame = known.loc[stock.index].reset_index()
    frame["stock"] = stock.to_numpy(dtype="int64")
    status = frame["status"].astype(object).to_numpy()
    for action, now in ((Action.END, PublicationStatus.ENDED), (Action.ACTIVATE, PublicationStatus.ACTIVE)):
        status[frame["offer_id"].isin(done.loc[done["action"] == action, "offer_id"]).to_numpy()] = now.value
    frame["status"] = pd.array(status, dtype="string")
    return frame[OFFER_COLUMNS].astype({"offer_id": "string", "sku": "string", "stock": "int64"})


class LiveOffers:
    """The live offer map of every account (table `live_offers`) and the live state
    (table `live_accounts`)."""

    def __init__(self, engine: Engine):
        self.engine = engine

    # ---- the offer map ---------------------------------------------------------------

    def merge_listing(self, account: str, offers: pd.DataFrame, listing_started_at: datetime) -> None:
        """A complete listing that started at `listing_started_at`: it replaces every row
        observed before that moment (offers gone from it are deleted); rows observed since
        (the journal, a write) are newer than anything in it and stay."""
        with self.engine.begin() as conn:
            conn.execute(
                live_offers.delete().where(
                    live_offers.c.account == account, live_offers.c.observed_at < listing_started_at
                )
            )
            self._upsert(conn, account, offers, listing_started_at)
            self._touch(conn, account, offers_listed_at=listing_started_at)

    def observe(
        self,
        account: str,
        offers: pd.DataFrame,
        observed_at: datetime | None = None,
        *,
        gone: Iterable[str] = (),
    ) -> None:
        """Offers as Allegro showed them at `observed_at` (re-read, or a write it confirmed),
        and offers Allegro no longer has (`gone`), in one transaction."""
        observed_at = observed_at or _now()
        with self.engine.begin() as conn:
            self._upsert(conn, account, offers, observed_at)
            gone = sorted(set(map(str, gone)))
            for start in range(0, len(gone), _CHUNK):
                conn.execute(
                    live_offers.delete().where(
                        live_offers.c.account == account,
                        live_offers.c.offer_id.in_(gone[start : start + _CHUNK]),
                        live_offers.c.observed_at <= observed_at,
                    )
                )

    def observe_writes(self, account: str, results: pd.DataFrame, offers: pd.DataFrame) -> None:
        """The offers as Allegro holds them after the writes of `results` it confirmed
        (`offers`: the rows they were planned from)."""
        self.observe(account, confirmed_offers(results, offers))

    @staticmethod
    def _upsert(conn: Connection, account: str, offers: pd.DataFrame, observed_at: datetime) -> None:
        """The offers as observed at `observed_at`, each replacing its row unless that row
        holds a newer observation."""
        if offers.empty:
            return
        if conn.dialect.name == "postgresql":
            rows = orjson.dumps(list(zip(*_columns(offers)))).decode()
            conn.execute(_UPSERT_JSON, {"account": account, "observed_at": observed_at, "offers": rows})
            return
        # SQLite (the demo's database): one statement compiled once, its rows sent by executemany.
        statement = sqlite.insert(live_offers)
        excluded = statement.excluded
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=[live_offers.c.account, live_offers.c.offer_id],
                set_={c: excluded[c] for c in ("sku", "stock", "status", "observed_at")},
                where=live_offers.c.observed_at <= excluded.observed_at,
            ),
            _rows(account, offers, observed_at),
        )

    def offers(
        self,
        account: str,
        *,
        offer_ids: Iterable[str] | None = None,
        skus: Iterable[str] | None = None,
        fold_case: bool = False,
    ) -> pd.DataFrame:
        """The account's offers (all, or those with these ids or SKUs) as an offer frame.
        `fold_case`: `skus` are upper-case and match offers' SKUs of any case."""
        columns = [live_offers.c.offer_id, live_offers.c.sku, live_offers.c.stock, live_offers.c.status]
        base = sa.select(*columns).where(live_offers.c.account == account)
        selections: list = []
        sku_column = sa.func.upper(live_offers.c.sku) if fold_case else live_offers.c.sku
        for column, values in ((live_offers.c.offer_id, offer_ids), (sku_column, skus)):
            if values is not None:
                values = sorted(set(map(str, values)))
                selections += [base.where(column.in_(values[i : i + _CHUNK])) for i in range(0, len(values), _CHUNK)]
        if offer_ids is None and skus is None:
            selections = [base]
        rows: list = []
        with self.engine.connect() as conn:
            for selection in selections:
                rows += conn.execute(selection).all()
        frame = pd.DataFrame(rows, columns=OFFER_COLUMNS).drop_duplicates("offer_id").reset_index(drop=True)
        return frame.astype({"offer_id": "string", "sku": "string", "stock": "int64", "status": "string"})

    def active_count(self, account: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).where(
                        live_offers.c.account == account, live_offers.c.status == PublicationStatus.ACTIVE.value
                    )
                ).scalar_one()
            )

    # ---- the live state ----------------------------------------------------------------

    def state(self, account: str) -> LiveAccount | None:
        return self.states().get(account)

    def states(self) -> dict[str, LiveAccount]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(live_accounts)).mappings().all()
        return {
            row["account"]: LiveAccount(
                account=row["account"],
                offers_listed_at=aware_utc(row["offers_listed_at"]),
                offer_events_since=aware_utc(row["offer_events_since"]),
                order_events_cursor=row["order_events_cursor"],
                last_change_seen_at=aware_utc(row["last_change_seen_at"]),
                last_write_at=aware_utc(row["last_write_at"]),
                last_lag_seconds=row["last_lag_seconds"],
            )
            for row in rows
        }

    def set_order_events_cursor(self, account: str, cursor: str) -> None:
        with self.engine.begin() as conn:
            self._touch(conn, account, order_events_cursor=cursor)

    def start_following(self, account: str, since: datetime) -> None:
        """The offer journal is followed from its head as it was at `since`: the map is
        current again once a listing that started after `since` is merged."""
        with self.engine.begin() as conn:
            self._touch(conn, account, offer_events_since=since)

    def record_change_seen(self, accounts: Iterable[str], seen_at: datetime) -> None:
        with self.engine.begin() as conn:
            for account in accounts:
                self._touch(conn, account, last_change_seen_at=seen_at)

    def record_write(self, account: str, written_at: datetime, lag_seconds: float | None) -> None:
        with self.engine.begin() as conn:
            self._touch(conn, account, last_write_at=written_at, last_lag_seconds=lag_seconds)

    @staticmethod
    def _touch(conn: Connection, account: str, **values) -> None:
        values["updated_at"] = _now()
        statement = _insert(conn)(live_accounts).values(account=account, **values)
        conn.execute(statement.on_conflict_do_update(index_elements=[live_accounts.c.account], set_=values))

    def forget_account(self, account: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(live_offers.delete().where(live_offers.c.account == account))
            conn.execute(live_accounts.delete().where(live_accounts.c.account == account))
