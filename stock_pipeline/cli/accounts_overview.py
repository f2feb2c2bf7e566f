"""How each account stands, for `stock-pipeline accounts list` and for `sync` when it
has nothing to do. The rows are computed from what the stores hold (accounts, the last
sync of each, the writes still pending) by pure functions; `load_overview` is the thin
adapter that reads them."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from typing import Mapping, Sequence

from stock_pipeline.cli.report_format import age, iso_utc, json_text, shorten, table, utc_time
from stock_pipeline.core.vocabulary import WriteStatus
from stock_pipeline.foundation.settings import Settings
from stock_pipeline.store.accounts import Account, AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.live_offers import LiveAccount, LiveOffers
from stock_pipeline.store.schema import ACCOUNT_ACTIVE, ACCOUNT_NEEDS_REAUTH, ACCOUNT_PAUSED
from stock_pipeline.store.sync_status import SyncStatus, SyncStatusStore
from stock_pipeline.store.writes_log import WritesLog

FRESH, STALE = "ok", "STALE"
# A sync is late once two schedule periods passed without a success: one missed tick can
# be a slow run or a restart, two mean something is wrong (as the README's alert rule says).
STALE_AFTER_PERIODS = 2


@dataclass(frozen=True)
class AccountOverview:
    account: str
    status: str
    last_success_at: datetime | None
    last_success_age_seconds: float | None
    last_result: str | None  # success / failed / held; None: never ran
    last_error: str | None
    last_finished_at: datetime | None
    last_run_id: str | None
    offers: int | None
    pending_writes: int
    freshness: str  # ok / STALE
    access_token_expires_at: datetime | None
    # The live sync (store/live_offers.py): when it last saw a warehouse change for the
    # account, when its last writes were confirmed, and the seconds between the two.
    live_following: bool = False  # its offer map is kept current from the journal
    last_change_seen_at: datetime | None = None
    last_live_write_at: datetime | None = None
    live_lag_seconds: float | None = None

    def to_record(self) -> dict:
        return {
            **asdict(self),
            "last_change_seen_at": iso_utc(self.last_change_seen_at),
            "last_live_write_at": iso_utc(self.last_live_write_at),
            "live_lag_seconds": None if self.live_lag_seconds is None else round(self.live_lag_seconds, 1),
            "last_success_at": iso_utc(self.last_success_at),
            "last_finished_at": iso_utc(self.last_finished_at),
            "access_token_expires_at": iso_utc(self.access_token_expires_at),
            "last_success_age_seconds": None
            if self.last_success_age_seconds is None
            else round(self.last_success_age_seconds),
        }


def schedule_period(cron: str, now: datetime) -> timedelta:
    """The gap between the schedule's two latest ticks: the period in force now (for a
    cron with uneven gaps, such as weekdays only, the one that just passed)."""
    from dagster._utils.schedules import reverse_cron_string_iterator  # the daemon's own cron reading

    ticks = reverse_cron_string_iterator(now.timestamp(), cron, "UTC")
    latest = next(ticks)
    return latest - next(ticks)


def freshness(last_success_at: datetime | None, now: datetime, period: timedelta) -> str:
    if last_success_at is None or now - last_success_at > STALE_AFTER_PERIODS * period:
        return STALE
    return FRESH


def overview(
    accounts: Sequence[Account],
    statuses: Mapping[str, SyncStatus],
    pending: Mapping[str, int],
    now: datetime,
    period: timedelta,
    live: Mapping[str, LiveAccount] | None = None,
) -> list[AccountOverview]:
    rows = []
    for account in accounts:
        status = statuses.get(account.name)
        following = (live or {}).get(account.name)
        last_success = status.last_success_at if status else None
        rows.append(
            AccountOverview(
                account=account.name,
                status=account.status,
                last_success_at=last_success,
                last_success_age_seconds=status.age_seconds(now) if status else None,
                last_result=status.last_result if status else None,
                # The account's own error (a rejected refresh token) when no run recorded one.
                last_error=(status.last_error if status else None) or account.last_error,
                last_finished_at=status.last_finished_at if status else None,
                last_run_id=status.last_run_id if status else None,
                offers=status.offers if status else None,
                pending_writes=int(pending.get(account.name, 0)),
                freshness=freshness(last_success, now, period),
                access_token_expires_at=account.access_expires_at,
                live_following=bool(following and following.map_current),
                last_change_seen_at=following.last_change_seen_at if following else None,
                last_live_write_at=following.last_write_at if following else None,
                live_lag_seconds=following.last_lag_seconds if following else None,
            )
        )
    return rows


def _live(row: AccountOverview, now: datetime) -> str:
    if not row.live_following:
        return "off" if row.last_live_write_at is None else "listing needed"
    if row.last_live_write_at is None:
        return "following, no write yet"
    lag = "" if row.live_lag_seconds is None else f", lag {row.live_lag_seconds:.1f}s"
    return f"last write {age((now - row.last_live_write_at).total_seconds())}{lag}"


def _seen(row: AccountOverview, now: datetime) -> str:
    return "-" if row.last_change_seen_at is None else age((now - row.last_change_seen_at).total_seconds())


def _last_success(row: AccountOverview) -> str:
    if row.last_success_at is None:
        return "never"
    return f"{age(row.last_success_age_seconds)} ({utc_time(row.last_success_at, minutes_only=True)} UTC)"


def _last_result(row: AccountOverview) -> str:
    if row.last_result is None:
        return "-"
    if row.last_result != "success" and row.last_error:
        return f"{row.last_result}: {shorten(row.last_error, 60)}"
    return row.last_result


def overview_table(rows: Sequence[AccountOverview], now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return table(
        [
            "account",
            "status",
            "last successful sync",
            "last result",
            "offers",
            "pending writes",
            "freshness",
            "last change seen",
            "live sync",
        ],
        [
            [
                r.account,
                r.status,
                _last_success(r),
                _last_result(r),
                "-" if r.offers is None else r.offers,
                r.pending_writes,
                r.freshness,
                _seen(r, now),
                _live(r, now),
            ]
            for r in rows
        ],
        right=(4, 5),
    )


def overview_json(rows: Sequence[AccountOverview]) -> str:
    return json_text([r.to_record() for r in rows])


def nothing_to_sync(accounts: Sequence[Account]) -> str:
    """Why `sync` has no account to run, naming the command that fixes each."""
    if not accounts:
        return "no account to sync; add one with: stock-pipeline accounts add NAME"
    reasons = []
    for a in accounts:
        if a.status == ACCOUNT_NEEDS_REAUTH:
            reasons.append(f"{a.name} needs re-authorisation (run: stock-pipeline accounts add {a.name})")
        elif a.status == ACCOUNT_PAUSED:
            reasons.append(f"{a.name} is paused (stock-pipeline accounts resume {a.name})")
        else:
            reasons.append(f"{a.name} is {a.status}")
    return "no account to sync: " + ", ".join(reasons)


def paused_message(name: str, status_before: str) -> str:
    if status_before == ACCOUNT_PAUSED:
        return f"account {name} was already paused"
    return (
        f"account {name} paused: no schedule, `sync` or launched run will sync it until "
        f"`stock-pipeline accounts resume {name}` (a run already writing finishes)"
    )


def resumed_message(name: str, status: str) -> str:
    if status == ACCOUNT_ACTIVE:
        return f"account {name} is active; the next scheduled run (or `stock-pipeline sync`) syncs it"
    return f"account {name} is not paused but {status}; authorise it again with: stock-pipeline accounts add {name}"


# ---- adapters ---------------------------------------------------------------------------


def load_overview(settings: Settings, now: datetime | None = None) -> list[AccountOverview]:
    now = now or datetime.now(timezone.utc)
    engine = engine_for(settings.stock_pipeline_database_url)
    # Pending writes from the writes log, not the last run's count: a later run may have
    # settled an earlier run's pending writes, and the log is what the next run will ask about.
    return overview(
        AccountStore(engine, settings.token_cipher()).list(),
        SyncStatusStore(engine).all(),
        WritesLog(engine).count_by_account(WriteStatus.PENDING),
        now,
        schedule_period(settings.allegro_sync_schedule, now),
        LiveOffers(engine).states(),
    )


def why_nothing_to_sync(settings: Settings) -> str:
    return nothing_to_sync(
        AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).list()
    )
