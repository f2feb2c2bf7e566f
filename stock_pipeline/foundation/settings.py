"""Settings read from the environment once, validated at start.

This is the one place the program reads its environment: `load_settings()` turns
`os.environ` into a validated, frozen `Settings`, and every module and Dagster resource
takes its values from that object (`stock_pipeline_tests/test_settings.py` fails on any
other `os.environ`, `os.getenv` or `EnvVar` under stock_pipeline/). Dagster itself still
reads DAGSTER_HOME and the `env:` entries of dagster.yaml; the pipeline's own use of
DAGSTER_HOME (the CLI's instance, the asset values beside it) goes through Settings.

Every variable has a default that makes the one-command demo work with nothing set;
a value that cannot be used raises SettingsError naming the variable and the value's
problem (never the value itself for secrets).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Mapping
from urllib.parse import urlparse, urlsplit, urlunsplit

from stock_pipeline.foundation.errors import SettingsError
from stock_pipeline.foundation.tokens import TokenCipher
from stock_pipeline.foundation.tokens import parse_keys as parse_token_keys

DEFAULT_PIPELINE_DB = "sqlite:///" + str(Path.home() / ".stock_pipeline" / "pipeline.db")
DEFAULT_STOCK_DB = "sqlite:///" + str(Path.home() / ".stock_pipeline" / "stock.db")
DEFAULT_DAGSTER_HOME = str(Path.home() / ".stock_pipeline" / "dagster_home")

# Secrets are the fields with repr=False (ALLEGRO_CLIENT_SECRET, TELEGRAM_BOT_TOKEN,
# TOKEN_ENCRYPTION_KEY): their values are never echoed in errors, reprs or logs.

# Settings whose values may carry a password (postgresql://user:password@host/db, redis://:password@host).
URL_WITH_PASSWORD_FIELDS = ("stock_database_url", "stock_pipeline_database_url", "redis_url")


def safe_url(url: str) -> str:
    """The URL without its password (redis://:secret@host → redis://:***@host)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


@dataclass(frozen=True, repr=False)
class Settings:
    allegro_api_url: str = "https://api.allegro.pl"
    allegro_auth_url: str = "https://allegro.pl/auth/oauth"
    allegro_client_id: str = "demo-client"
    allegro_client_secret: str = field(default="demo-secret", repr=False)
    stock_database_url: str = DEFAULT_STOCK_DB
    stock_query: str = "SELECT sku, stock FROM products"
    # Optional, for the live sync: the rows of the SKUs changed since :since, with the time
    # of each change (sku, stock, changed_at); each poll then reads only those (README, "Live sync").
    stock_changes_query: str | None = None
    stock_pipeline_database_url: str = DEFAULT_PIPELINE_DB
    redis_url: str | None = None
    telegram_api_url: str = "https://api.telegram.org"
    telegram_bot_token: str | None = field(default=None, repr=False)
    allegro_error_notification_chat_id: str | None = None
    allegro_sync_rate_limit: int = 9000
    allegro_sync_batch_size: int = 1000
    allegro_sync_retry_count: int = 3
    allegro_sync_retry_delay: float = 30.0
    allegro_sync_schedule: str = "*/30 * * * *"
    allegro_sync_http_timeout: float = 30.0
    allegro_sync_poll_first_after: float = 1.0
    allegro_sync_poll_timeout: float = 120.0
    allegro_sync_rate_limit_pause: float = 60.0
    allegro_sync_user_offer_changes_per_minute: int = 9000
    allegro_sync_user_offer_changes_per_hour: int = 250_000
    allegro_sync_user_patches_per_minute: int = 2500
    # Allegro answers in 0.1-0.5 s: one call at a time can never spend 150 calls/s. These many
    # calls of one account's run are in flight at once (every one still drawn from the shared
    # limiter), and these many accounts of a CLI sync run at once. 32: one account alone
    # reaches the client_id's 150 calls/s at 0.2 s an answer (16 measured ~100/s at 0.15 s).
    allegro_sync_concurrency: int = 32
    allegro_sync_parallel_accounts: int = 10
    # A run's own work (Dagster's steps and event log, Parquet, the diff) holds the GIL: a CLI
    # sync may spread its accounts over this many processes (0: one per core). One by default:
    # a spawned worker's start-up (importing Dagster, building the definitions) measured dearer
    # than a second core gave back (cli/sync_runner.py).
    allegro_sync_processes: int = 1
    dagster_webserver_url: str | None = None
    # Live sync (defs/live_sync.py): a sensor polls the warehouse and the accounts' Allegro
    # journals this often and writes only what changed, between the full syncs.
    live_sync: bool = True
    live_sync_poll_seconds: int = 5
    # A change touching more offers of an account than this is left to a full sync of it.
    live_sync_max_offers: int = 5000
    # With STOCK_CHANGES_QUERY, the whole STOCK_QUERY is still read this often: a deleted row
    # is in no changes query's answer.
    live_sync_full_read_seconds: int = 300
    stock_guard_max_snapshot_shrink: float = 0.3
    stock_guard_max_risky_share: float = 0.3
    stock_guard_min_risky_offers: int = 10
    # A stock value above this is a broken feed (a bad row), not stock; see core/snapshot.py.
    stock_max_plausible_stock: int = 1_000_000
    # How long a purchase on Allegro keeps a sync from raising that offer's stock back while
    # the warehouse has not booked the order (core/sale_holds.py says why an hour).
    stock_sale_hold_seconds: int = 3600
    # Fernet key(s) for the tokens at rest, comma-separated to rotate (stock_pipeline.foundation.tokens).
    token_encryption_key: str | None = field(default=None, repr=False)
    # The Dagster instance of the CLI and the demo (the daemon and the code server get theirs
    # from Dagster, which reads the same variable), and where asset values are kept.
    dagster_home: str = DEFAULT_DAGSTER_HOME
    stock_pipeline_storage_dir: str | None = None

    def __repr__(self) -> str:
        # The object travels inside the Dagster resources: its repr may end up in an error
        # message, so secrets are never shown and URLs lose their passwords.
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if not f.repr:
                value = "***" if value else value
            elif f.name in URL_WITH_PASSWORD_FIELDS and value:
                value = safe_url(value)
            shown.append(f"{f.name}={value!r}")
        return f"Settings({', '.join(shown)})"

    @property
    def frames_dir(self) -> str:
        """Asset values live beside the Dagster instance unless STOCK_PIPELINE_STORAGE_DIR says otherwise."""
        return self.stock_pipeline_storage_dir or str(Path(self.dagster_home) / "storage" / "frames")

    def token_cipher(self) -> TokenCipher:
        """What seals and opens the OAuth tokens at rest, with TOKEN_ENCRYPTION_KEY's keys."""
        return TokenCipher(parse_token_keys(self.token_encryption_key))

    def secret_values(self) -> tuple[str, ...]:
        """Every secret these settings hold, for the log redaction: the secret variables (each
        key of TOKEN_ENCRYPTION_KEY on its own) and the passwords inside the URLs."""
        values = [self.allegro_client_secret, self.telegram_bot_token, *(self.token_encryption_key or "").split(",")]
        values += [urlsplit(getattr(self, name) or "").password for name in URL_WITH_PASSWORD_FIELDS]
        return tuple(v.strip() for v in values if v and v.strip())


def _env_name(field_name: str) -> str:
    return field_name.upper()


def _parse_url(name: str, raw: str, schemes: tuple[str, ...]) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not (parsed.netloc or parsed.path):
        # The value is not echoed: URLs may carry a password (redis://:secret@host).
        raise SettingsError(
            f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)} "
            "(the value given is not shown: it may hold a password)"
        )
    return raw.rstrip("/")


def _parse_number(name: str, raw: str, minimum: float, maximum: float, kind=int, what: str = "a whole number"):
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be {what}, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _parse_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    return _parse_number(name, raw, minimum, maximum)


def _parse_float(name: str, raw: str, minimum: float, maximum: float) -> float:
    return _parse_number(name, raw, minimum, maximum, kind=float, what="a number of seconds")


def _parse_switch(name: str, raw: str) -> bool:
    value = raw.lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be on or off (true/false, 1/0, yes/no), got {raw!r}")


def _parse_share(name: str, raw: str) -> float:
    """A percentage, as `--reserve-percent` takes it: "30%", or the same share as a fraction
    ("0.3"). A bare number above 1 is refused rather than guessed (30 → 30% or 3000%?)."""
    try:
        value = float(raw.rstrip("%")) / (100 if raw.endswith("%") else 1)
    except ValueError:
        raise SettingsError(f"{name} must be a percentage such as 30% (or the fraction 0.3), got {raw!r}") from None
    if not 0 <= value <= 1:
        hint = f"; for {raw}% write {raw}%" if not raw.endswith("%") and 1 < value <= 100 else ""
        raise SettingsError(f"{name} must be between 0% and 100% (or the fraction 0 to 1), got {raw!r}{hint}")
    return value


def _parse_schedule(name: str, raw: str) -> str:
    """Accepts a cron expression or, as the original design did, a number of seconds."""
    raw = raw.strip()
    if raw.isdigit():
        seconds = int(raw)
        if seconds < 60 or seconds % 60:
            raise SettingsError(f"{name} in seconds must be a whole number of minutes (>= 60), got {seconds}")
        minutes = seconds // 60
        if minutes < 60:
            if 60 % minutes:
                raise SettingsError(f"{name}={seconds}s does not divide an hour; use a cron expression instead")
            return f"*/{minutes} * * * *"
        if minutes % 60 or 24 % (minutes // 60):
            raise SettingsError(f"{name}={seconds}s does not divide a day; use a cron expression instead")
        return f"0 */{minutes // 60} * * *"
    from dagster._utils.schedules import is_valid_cron_string  # cron syntax check only

    if not is_valid_cron_string(raw):
        raise SettingsError(f"{name} must be a cron expression or a number of seconds, got {raw!r}")
    return raw


def _parse_directory(name: str, raw: str) -> str:
    path = os.path.expanduser(raw)
    if not os.path.isabs(path):
        # Dagster refuses a relative DAGSTER_HOME; a relative storage folder would differ between
        # processes started in different working directories (code server, run workers, CLI).
        raise SettingsError(f"{name} must be an absolute path (~ is allowed), got {raw!r}")
    return path


def _parse_sqlalchemy_url(name: str, raw: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(raw)
    except (ArgumentError, ValueError):
        raise SettingsError(
            f"{name} must be an SQLAlchemy database URL (e.g. postgresql+psycopg://user@host/db), "
            "got an unparsable value"
        ) from None
    return raw


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Builds Settings from `environ` (default: os.environ, the program's only read of its
    environment); empty strings count as unset."""
    env = os.environ if environ is None else environ
    defaults = Settings()
    values: dict[str, object] = {}
    for f in fields(Settings):
        name = _env_name(f.name)
        raw = env.get(name, "")
        if raw.strip() == "":
            continue
        raw = raw.strip()
        if f.name in ("allegro_api_url", "allegro_auth_url", "telegram_api_url", "dagster_webserver_url"):
            values[f.name] = _parse_url(name, raw, ("http", "https"))
        elif f.name == "redis_url":
            values[f.name] = _parse_url(name, raw, ("redis", "rediss", "unix"))
        elif f.name in ("stock_database_url", "stock_pipeline_database_url"):
            values[f.name] = _parse_sqlalchemy_url(name, raw)
        elif f.name == "allegro_sync_rate_limit":
            values[f.name] = _parse_int(name, raw, 2, 1_000_000)
        elif f.name.startswith("allegro_sync_user_"):
            values[f.name] = _parse_int(name, raw, 1000 if "offer_changes" in f.name else 2, 10_000_000)
        elif f.name in ("stock_guard_max_snapshot_shrink", "stock_guard_max_risky_share"):
            values[f.name] = _parse_share(name, raw)
        elif f.name == "stock_guard_min_risky_offers":
            values[f.name] = _parse_int(name, raw, 0, 10_000_000)
        elif f.name == "stock_max_plausible_stock":
            # At least Allegro's own maximum; at most 2^53, where float64 still holds every whole number.
            values[f.name] = _parse_int(name, raw, 99_999, 2**53)
        elif f.name == "stock_sale_hold_seconds":
            # A minute at least (shorter holds nothing a sync could race); a week at most (longer
            # keeps units off Allegro long after a delivery the warehouse value did not show).
            values[f.name] = _parse_int(name, raw, 60, 7 * 86400)
        elif f.name == "allegro_sync_batch_size":
            values[f.name] = _parse_int(name, raw, 1, 1000)  # Allegro's command maximum
        elif f.name in ("allegro_sync_concurrency", "allegro_sync_parallel_accounts"):
            values[f.name] = _parse_int(name, raw, 1, 256)
        elif f.name == "allegro_sync_processes":
            values[f.name] = _parse_int(name, raw, 0, 256)
        elif f.name == "allegro_sync_retry_count":
            values[f.name] = _parse_int(name, raw, 0, 20)
        elif f.name == "allegro_sync_retry_delay":
            values[f.name] = _parse_float(name, raw, 0.0, 3600.0)
        elif f.name == "allegro_sync_http_timeout":
            values[f.name] = _parse_float(name, raw, 0.1, 600.0)
        elif f.name in ("allegro_sync_poll_first_after", "allegro_sync_poll_timeout", "allegro_sync_rate_limit_pause"):
            values[f.name] = _parse_float(name, raw, 0.0, 3600.0)
        elif f.name == "live_sync":
            values[f.name] = _parse_switch(name, raw)
        elif f.name == "live_sync_poll_seconds":
            values[f.name] = _parse_int(name, raw, 1, 3600)
        elif f.name == "live_sync_max_offers":
            values[f.name] = _parse_int(name, raw, 1, 1_000_000)
        elif f.name == "live_sync_full_read_seconds":
            values[f.name] = _parse_int(name, raw, 10, 86_400)
        elif f.name == "token_encryption_key":
            parse_token_keys(raw)  # a bad key stops the start, not the first refresh
            values[f.name] = raw
        elif f.name in ("dagster_home", "stock_pipeline_storage_dir"):
            values[f.name] = _parse_directory(name, raw)
        elif f.name == "allegro_sync_schedule":
            values[f.name] = _parse_schedule(name, raw)
        elif f.name == "stock_query":
            if not raw.lower().startswith(("select", "with")):
                raise SettingsError(f"{name} must be a SELECT query returning columns sku and stock, got {raw[:80]!r}")
            values[f.name] = raw
        elif f.name == "stock_changes_query":
            if not raw.lower().startswith(("select", "with")) or not re.search(r"(?<![:\w]):since\b", raw):
                raise SettingsError(
                    f"{name} must be a SELECT query using :since and returning columns sku, stock and "
                    f"changed_at, got {raw[:80]!r}"
                )
            values[f.name] = raw
        else:
            values[f.name] = raw
    settings = Settings(**{**{f.name: getattr(defaults, f.name) for f in fields(Settings)}, **values})
    if bool(settings.telegram_bot_token) != bool(settings.allegro_error_notification_chat_id):
        missing = "ALLEGRO_ERROR_NOTIFICATION_CHAT_ID" if settings.telegram_bot_token else "TELEGRAM_BOT_TOKEN"
        raise SettingsError(
            f"Telegram alerts need both TELEGRAM_BOT_TOKEN and ALLEGRO_ERROR_NOTIFICATION_CHAT_ID; {missing} is not set"
        )
    return settings
