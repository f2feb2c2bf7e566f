"""Dagster resources: thin wiring of the adapters. Secrets come from EnvVar so that
their values never appear in the UI's resource config or in run config."""

from __future__ import annotations

import os
import threading
from typing import Optional

from dagster import ConfigurableResource, EnvVar

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.allegro.client import AllegroClient, WriteBudgets
from stock_pipeline.core.guards import GuardLimits
from stock_pipeline.metrics import build_metrics
from stock_pipeline.notify.telegram import TelegramNotifier
from stock_pipeline.rate_limit import RateSpec, build_limiter
from stock_pipeline.settings import Settings
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.schema import engine_for
from stock_pipeline.store.writes_log import WritesLog

_limiters: dict[tuple, object] = {}
_limiters_lock = threading.Lock()
_metrics: dict[str | None, object] = {}


def shared_limiter(redis_url: str | None, key: str, specs: tuple[RateSpec, ...]):
    """One limiter object per process and budget: every account and asset draws from
    the same bucket (in Redis, shared with every other process too)."""
    with _limiters_lock:
        if (redis_url, key, specs) not in _limiters:
            _limiters[(redis_url, key, specs)] = build_limiter(redis_url, key, list(specs))
        return _limiters[(redis_url, key, specs)]


def shared_metrics(redis_url: str | None):
    """Counters in Redis beside the limiter (nothing without Redis), one object per process."""
    with _limiters_lock:
        if redis_url not in _metrics:
            _metrics[redis_url] = build_metrics(redis_url)
        return _metrics[redis_url]


class PipelineDatabase(ConfigurableResource):
    """Accounts, tokens and the writes log (`STOCK_PIPELINE_DATABASE_URL`)."""

    url: str

    def engine(self):
        return engine_for(self.url)

    def accounts(self) -> AccountStore:
        return AccountStore(self.engine())

    def writes_log(self, guards_overridden: bool = False) -> WritesLog:
        return WritesLog(self.engine(), guards_overridden=guards_overridden)


class StockDatabase(ConfigurableResource):
    """The seller's warehouse (`STOCK_DATABASE_URL`, `STOCK_QUERY`) and the largest stock
    value believed (`STOCK_MAX_PLAUSIBLE_STOCK`)."""

    url: str
    query: str
    max_plausible_stock: int


class AllegroApi(ConfigurableResource):
    """Allegro REST API access through the shared rate limiter. Every value comes from
    Settings (build_resources), where the defaults live."""

    api_url: str
    auth_url: str
    client_id: str
    client_secret: str
    redis_url: Optional[str]
    rate_limit_per_minute: int
    retry_count: int
    retry_delay: float
    timeout: float
    batch_size: int
    poll_first_after: float
    poll_timeout: float
    rate_limit_pause: float
    user_offer_changes_per_minute: int
    user_offer_changes_per_hour: int
    user_patches_per_minute: int

    def metrics(self):
        return shared_metrics(self.redis_url)

    def auth(self) -> AllegroAuth:
        return AllegroAuth(self.auth_url, self.client_id, self.client_secret, timeout=self.timeout)

    def client_for(self, account: str, database: PipelineDatabase, record_metrics: bool = True) -> AllegroClient:
        """A client for one account. A rehearsal (dry run) passes record_metrics=False:
        it must leave the metrics as they were."""
        tokens = database.accounts().tokens_for(account, self.auth())
        limiter = shared_limiter(self.redis_url, f"allegro:rate:{self.client_id}",
                                 (RateSpec(self.rate_limit_per_minute, 60.0),))
        user = f"allegro:rate:{self.client_id}:user:{account}"
        budgets = WriteBudgets(
            offer_changes=shared_limiter(self.redis_url, f"{user}:offer-changes", (
                RateSpec(self.user_offer_changes_per_minute, 60.0), RateSpec(self.user_offer_changes_per_hour, 3600.0))),
            patches=shared_limiter(self.redis_url, f"{user}:patches", (RateSpec(self.user_patches_per_minute, 60.0),)),
        )
        return AllegroClient(self.api_url, tokens, limiter, retry_count=self.retry_count,
                             retry_delay=self.retry_delay, timeout=self.timeout,
                             rate_limit_pause=self.rate_limit_pause, write_budgets=budgets, account=account,
                             observe_response=self.metrics().observe_api_response if record_metrics else None)


class GuardConfig(ConfigurableResource):
    """Thresholds of the guards against a broken warehouse feed (defaults in Settings)."""

    max_snapshot_shrink: float
    max_risky_share: float
    min_risky_offers: int

    def limits(self) -> GuardLimits:
        return GuardLimits(max_snapshot_shrink=self.max_snapshot_shrink, max_risky_share=self.max_risky_share,
                           min_risky_offers=self.min_risky_offers)


class TelegramAlerts(ConfigurableResource):
    """Alerts to ALLEGRO_ERROR_NOTIFICATION_CHAT_ID; off when no bot token is set."""

    api_url: str
    bot_token: Optional[str]
    chat_id: Optional[str]
    webserver_url: Optional[str]

    def notifier(self) -> TelegramNotifier | None:
        if not (self.bot_token and self.chat_id):
            return None
        return TelegramNotifier(self.api_url, self.bot_token, self.chat_id)

    def run_url(self, run_id: str) -> str | None:
        return f"{self.webserver_url.rstrip('/')}/runs/{run_id}" if self.webserver_url else None


def _from_env(name: str, fallback: str | None):
    """EnvVar when the variable is set: Dagster stores and shows its name, never its
    value (secrets, and URLs that may carry a password). Otherwise the demo default."""
    return EnvVar(name) if os.environ.get(name) else fallback


def build_resources(settings: Settings) -> dict:
    return {
        "pipeline_db": PipelineDatabase(url=_from_env("STOCK_PIPELINE_DATABASE_URL", settings.stock_pipeline_database_url)),
        "stock_db": StockDatabase(url=_from_env("STOCK_DATABASE_URL", settings.stock_database_url),
                                  query=settings.stock_query, max_plausible_stock=settings.stock_max_plausible_stock),
        "allegro": AllegroApi(
            api_url=settings.allegro_api_url, auth_url=settings.allegro_auth_url,
            client_id=settings.allegro_client_id,
            client_secret=_from_env("ALLEGRO_CLIENT_SECRET", settings.allegro_client_secret),
            redis_url=_from_env("REDIS_URL", settings.redis_url), rate_limit_per_minute=settings.allegro_sync_rate_limit,
            retry_count=settings.allegro_sync_retry_count, retry_delay=settings.allegro_sync_retry_delay,
            timeout=settings.allegro_sync_http_timeout, batch_size=settings.allegro_sync_batch_size,
            poll_first_after=settings.allegro_sync_poll_first_after, poll_timeout=settings.allegro_sync_poll_timeout,
            rate_limit_pause=settings.allegro_sync_rate_limit_pause,
            user_offer_changes_per_minute=settings.allegro_sync_user_offer_changes_per_minute,
            user_offer_changes_per_hour=settings.allegro_sync_user_offer_changes_per_hour,
            user_patches_per_minute=settings.allegro_sync_user_patches_per_minute,
        ),
        "guards": GuardConfig(
            max_snapshot_shrink=settings.stock_guard_max_snapshot_shrink,
            max_risky_share=settings.stock_guard_max_risky_share,
            min_risky_offers=settings.stock_guard_min_risky_offers,
        ),
        "telegram": TelegramAlerts(
            api_url=settings.telegram_api_url, bot_token=_from_env("TELEGRAM_BOT_TOKEN", settings.telegram_bot_token),
            chat_id=settings.allegro_error_notification_chat_id, webserver_url=settings.dagster_webserver_url,
        ),
    }
