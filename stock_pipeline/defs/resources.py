"""Dagster resources: thin wiring of the adapters, every value from the validated Settings.

A resource's config (its fields) is what Dagster shows in the UI, stores in job snapshots
and lets a launchpad override, so it holds only values that are not secret. Secrets and
URLs that may carry a password (the client secret, the bot token, the token encryption
key, the database and Redis URLs) are read from the Settings object each resource holds
as a `ResourceDependency`: Dagster hands that object over as it is and shows only its
type name, never its contents (stock_pipeline_tests/test_secrets.py checks the snapshot).
The values cannot be overridden from a launchpad either: they are what Settings validated.
A resource with such a dependency is set up by Dagster inside a context manager, so a
sensor or schedule evaluated by hand needs `with build_sensor_context(...) as context:`.
"""

# No `from __future__ import annotations` here: Dagster must see `ResourceDependency[...]`
# as a type, not a string, to treat a field as a dependency rather than as config.
import threading
from pathlib import Path
from typing import Optional

from dagster import ConfigurableResource, ResourceDependency

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.allegro.client import AllegroClient, WriteBudgets
from stock_pipeline.core.guards import GuardLimits
from stock_pipeline.core.plan import WriteRates
from stock_pipeline.foundation.settings import Settings
from stock_pipeline.notify.telegram import TelegramNotifier
from stock_pipeline.observability.metrics import build_metrics
from stock_pipeline.rate_limit import RateSpec, build_limiter
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
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
    """Accounts, tokens and the writes log (`STOCK_PIPELINE_DATABASE_URL`, `TOKEN_ENCRYPTION_KEY`)."""

    settings: ResourceDependency[Settings]

    @property
    def url(self) -> str:
        return self.settings.stock_pipeline_database_url

    def engine(self):
        return engine_for(self.url)

    def accounts(self) -> AccountStore:
        return AccountStore(self.engine(), self.settings.token_cipher())

    def writes_log(self, guards_overridden: bool = False) -> WritesLog:
        return WritesLog(self.engine(), guards_overridden=guards_overridden)


class StockDatabase(ConfigurableResource):
    """The seller's warehouse (`STOCK_DATABASE_URL`, `STOCK_QUERY`, `STOCK_CHANGES_QUERY`)
    and the largest stock value believed (`STOCK_MAX_PLAUSIBLE_STOCK`)."""

    query: str
    max_plausible_stock: int
    changes_query: Optional[str] = None  # STOCK_CHANGES_QUERY: the live sync's reads of changed rows
    settings: ResourceDependency[Settings]

    @property
    def url(self) -> str:
        return self.settings.stock_database_url


class AllegroApi(ConfigurableResource):
    """Allegro REST API access through the shared rate limiter. Every value comes from
    Settings (build_resources), where the defaults live; the client secret and the Redis
    URL straight from the Settings object, never through config."""

    api_url: str
    auth_url: str
    client_id: str
    rate_limit_per_minute: int
    retry_count: int
    retry_delay: float
    timeout: float
    batch_size: int
    poll_first_after: float
    poll_timeout: float
    concurrency: int  # calls in flight at once per account run: listing pages and the write engine's workers
    rate_limit_pause: float
    user_offer_changes_per_minute: int
    user_offer_changes_per_hour: int
    user_patches_per_minute: int
    settings: ResourceDependency[Settings]

    @property
    def client_secret(self) -> str:
        return self.settings.allegro_client_secret

    @property
    def redis_url(self) -> str | None:
        return self.settings.redis_url

    def metrics(self):
        return shared_metrics(self.redis_url)

    @property
    def request_rate(self) -> RateSpec:
        return RateSpec(self.rate_limit_per_minute, 60.0)

    @property
    def patch_rate(self) -> RateSpec:
        return RateSpec(self.user_patches_per_minute, 60.0)

    @property
    def offer_change_rates(self) -> tuple[RateSpec, RateSpec]:
        return RateSpec(self.user_offer_changes_per_minute, 60.0), RateSpec(self.user_offer_changes_per_hour, 3600.0)

    def request_limiter(self):
        """The client_id's request budget, shared by every account and process."""
        return shared_limiter(self.redis_url, f"allegro:rate:{self.client_id}", (self.request_rate,))

    def write_rates(self, accounts_sharing: int) -> WriteRates:
        """The rates an account's writes are planned at (core/plan.py, routes by time): the
        client_id's rate shared evenly by `accounts_sharing` accounts, and the account's own
        budgets; each the rate its limiter lets through (a little under the limit: gcra.py)."""
        per_minute = self.offer_change_rates[0]
        return WriteRates(
            calls=1 / self.request_rate.emission_interval / max(1, accounts_sharing),
            patches=1 / self.patch_rate.emission_interval,
            command_offers=1 / per_minute.emission_interval,
            patch_burst=self.patch_rate.burst_size,
            command_wait=self.poll_first_after,
        )

    def auth(self) -> AllegroAuth:
        return AllegroAuth(self.auth_url, self.client_id, self.client_secret, timeout=self.timeout)

    def client_for(self, account: str, database: PipelineDatabase, record_metrics: bool = True) -> AllegroClient:
        """A client for one account. A rehearsal (dry run) passes record_metrics=False:
        it must leave the metrics as they were."""
        tokens = database.accounts().tokens_for(account, self.auth())
        limiter = self.request_limiter()
        user = f"allegro:rate:{self.client_id}:user:{account}"
        budgets = WriteBudgets(
            offer_changes=shared_limiter(self.redis_url, f"{user}:offer-changes", self.offer_change_rates),
            patches=shared_limiter(self.redis_url, f"{user}:patches", (self.patch_rate,)),
        )
        return AllegroClient(
            self.api_url,
            tokens,
            limiter,
            retry_count=self.retry_count,
            retry_delay=self.retry_delay,
            timeout=self.timeout,
            rate_limit_pause=self.rate_limit_pause,
            write_budgets=budgets,
            account=account,
            observe_response=self.metrics().observe_api_response if record_metrics else None,
            concurrency=self.concurrency,
        )


class GuardConfig(ConfigurableResource):
    """Thresholds of the guards against a broken warehouse feed (defaults in Settings)."""

    max_snapshot_shrink: float
    max_risky_share: float
    min_risky_offers: int

    def limits(self) -> GuardLimits:
        return GuardLimits(
            max_snapshot_shrink=self.max_snapshot_shrink,
            max_risky_share=self.max_risky_share,
            min_risky_offers=self.min_risky_offers,
        )


class LiveSyncConfig(ConfigurableResource):
    """The live sync's settings (LIVE_SYNC_*), where its warehouse versions are kept, and
    how long a sale on Allegro holds its offer's stock (STOCK_SALE_HOLD_SECONDS)."""

    versions_dir: str
    max_offers: int
    poll_seconds: int
    sale_hold_seconds: int
    full_read_seconds: int = 300  # with STOCK_CHANGES_QUERY, how often STOCK_QUERY is still read whole


class TelegramAlerts(ConfigurableResource):
    """Alerts to ALLEGRO_ERROR_NOTIFICATION_CHAT_ID; off when no bot token is set."""

    api_url: str
    chat_id: Optional[str]
    webserver_url: Optional[str]
    settings: ResourceDependency[Settings]

    @property
    def bot_token(self) -> str | None:
        return self.settings.telegram_bot_token

    def notifier(self) -> TelegramNotifier | None:
        if not (self.bot_token and self.chat_id):
            return None
        return TelegramNotifier(self.api_url, self.bot_token, self.chat_id)

    def run_url(self, run_id: str) -> str | None:
        return f"{self.webserver_url.rstrip('/')}/runs/{run_id}" if self.webserver_url else None


def build_resources(settings: Settings) -> dict:
    """The resources, from `settings` only: config gets the values that are not secret, the
    rest is read from `settings` itself (see the module docstring)."""
    return {
        "pipeline_db": PipelineDatabase(settings=settings),
        "stock_db": StockDatabase(
            query=settings.stock_query,
            max_plausible_stock=settings.stock_max_plausible_stock,
            changes_query=settings.stock_changes_query,
            settings=settings,
        ),
        "allegro": AllegroApi(
            api_url=settings.allegro_api_url,
            auth_url=settings.allegro_auth_url,
            client_id=settings.allegro_client_id,
            rate_limit_per_minute=settings.allegro_sync_rate_limit,
            retry_count=settings.allegro_sync_retry_count,
            retry_delay=settings.allegro_sync_retry_delay,
            timeout=settings.allegro_sync_http_timeout,
            batch_size=settings.allegro_sync_batch_size,
            poll_first_after=settings.allegro_sync_poll_first_after,
            poll_timeout=settings.allegro_sync_poll_timeout,
            concurrency=settings.allegro_sync_concurrency,
            rate_limit_pause=settings.allegro_sync_rate_limit_pause,
            user_offer_changes_per_minute=settings.allegro_sync_user_offer_changes_per_minute,
            user_offer_changes_per_hour=settings.allegro_sync_user_offer_changes_per_hour,
            user_patches_per_minute=settings.allegro_sync_user_patches_per_minute,
            settings=settings,
        ),
        "guards": GuardConfig(
            max_snapshot_shrink=settings.stock_guard_max_snapshot_shrink,
            max_risky_share=settings.stock_guard_max_risky_share,
            min_risky_offers=settings.stock_guard_min_risky_offers,
        ),
        "live": LiveSyncConfig(
            versions_dir=str(Path(settings.frames_dir) / "live_warehouse"),
            max_offers=settings.live_sync_max_offers,
            poll_seconds=settings.live_sync_poll_seconds,
            sale_hold_seconds=settings.stock_sale_hold_seconds,
            full_read_seconds=settings.live_sync_full_read_seconds,
        ),
        "telegram": TelegramAlerts(
            api_url=settings.telegram_api_url,
            chat_id=settings.allegro_error_notification_chat_id,
            webserver_url=settings.dagster_webserver_url,
            settings=settings,
        ),
    }
