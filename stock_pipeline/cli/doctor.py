"""`stock-pipeline doctor`: is this deployment able to sync? One check per thing the
pipeline depends on (settings, pipeline database, warehouse, rate limiter, Allegro
credentials, each account's tokens, Telegram), each saying what it found and, when
something is wrong, what to do.

Rules: nothing is written anywhere (no table is created, no refresh token is spent: the
Allegro check uses the client_credentials grant), a message goes to Telegram only with
`--send-test`, and no secret is ever printed (URLs lose their passwords, and every
line goes through the log redaction as well).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import sqlalchemy as sa

from stock_pipeline.cli.report_format import age, utc_time
from stock_pipeline.foundation.logs import redact_text
from stock_pipeline.foundation.settings import Settings, safe_url
from stock_pipeline.foundation.tokens import KEY_VARIABLE, MAKE_KEY, parse_keys

OK, WARN, FAIL = "ok", "warn", "FAIL"
# Network checks answer within this or count as unreachable: a doctor must not hang.
CHECK_TIMEOUT_SECONDS = 5.0
TEST_MESSAGE = "✅ <b>stock_pipeline doctor</b>: test message. Failed sync runs will alert this chat."


@dataclass(frozen=True)
class Check:
    name: str
    level: str  # ok / warn / FAIL
    found: str
    fix: str = ""

    def line(self, name_width: int = 24) -> str:
        text = f"{self.level:<4}  {self.name:<{name_width}} {self.found}"
        if self.fix:
            text += f"  → {self.fix}"
        return redact_text(text)  # a last guard: a secret that slipped into a message is blanked


def failed(checks: list[Check]) -> bool:
    return any(c.level == FAIL for c in checks)


def summary(checks: list[Check]) -> str:
    counts = {level: sum(1 for c in checks if c.level == level) for level in (OK, WARN, FAIL)}
    return f"{counts[OK]} ok, {counts[WARN]} warning(s), {counts[FAIL]} failed"


def _database_url(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _connect_args(url: str) -> dict:
    backend = sa.engine.make_url(url).get_backend_name()
    if backend == "sqlite":
        return {"timeout": CHECK_TIMEOUT_SECONDS}
    if backend == "postgresql":
        return {"connect_timeout": int(CHECK_TIMEOUT_SECONDS)}
    return {}


# ---- the checks ------------------------------------------------------------------------


def check_settings(settings: Settings) -> Check:
    # load_settings already refused any unusable value (the command stops with exit 2
    # before getting here); this line records what the checks below run with.
    return Check(
        "settings",
        OK,
        f"every variable is valid; schedule {settings.allegro_sync_schedule!r}, "
        f"{settings.allegro_sync_rate_limit} requests/min, API {settings.allegro_api_url}",
    )


def check_encryption_key(settings: Settings) -> Check:
    keys = parse_keys(settings.token_encryption_key)
    if not keys:
        return Check(
            "token encryption key",
            FAIL,
            f"{KEY_VARIABLE} is not set: tokens can be neither stored (accounts add) nor refreshed",
            f"make a key with {MAKE_KEY} and set {KEY_VARIABLE} in every process",
        )
    found = "1 key" if len(keys) == 1 else f"{len(keys)} keys (the first encrypts, all decrypt)"
    return Check("token encryption key", OK, found)


def _missing_sqlite_file(url: str) -> str | None:
    """The path of an SQLite database that does not exist (connecting would create it)."""
    parsed = sa.engine.make_url(url)
    path = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and path and path != ":memory:" and not Path(path).exists():
        return path
    return None


def check_pipeline_database(url: str) -> tuple[Check, set[str] | None]:
    """The check, and the tables present (None: the database could not be read)."""
    from stock_pipeline.store.migrate import AT_HEAD, current_metadata, describe, read_state

    metadata = current_metadata()
    shown = _database_url(url)
    if _missing_sqlite_file(url):
        return Check(
            "pipeline database",
            WARN,
            f"{shown} does not exist yet",
            "it is created by the first command that uses it (e.g. stock-pipeline accounts add NAME)",
        ), None
    engine = sa.create_engine(url, connect_args=_connect_args(url))
    try:
        with engine.connect() as conn:
            present = set(sa.inspect(conn).get_table_names())
            state = read_state(conn)
        schema, usable = describe(engine)  # reads only: the doctor migrates nothing
    except sa.exc.SQLAlchemyError as exc:
        return Check(
            "pipeline database",
            FAIL,
            f"cannot reach {shown}: {_first_line(exc)}",
            "check STOCK_PIPELINE_DATABASE_URL and that the database server is up",
        ), None
    finally:
        engine.dispose()
    if not usable:  # newer than this release, or tables it cannot recognise: the sentence says what to do
        return Check("pipeline database", FAIL, f"{shown} reachable, but {schema}"), present
    if state.status != AT_HEAD:
        return Check(
            "pipeline database", WARN, f"{shown} reachable; {schema}", "the user needs CREATE rights in it"
        ), present
    found = f"{shown} reachable, schema at revision {state.revision} (head), {len(metadata.tables)} tables present"
    if sa.engine.make_url(url).get_backend_name() == "sqlite":
        return Check(
            "pipeline database",
            WARN,
            found + " (SQLite)",
            "fine for the demo; use Postgres as soon as the daemon or several processes run",
        ), present
    return Check("pipeline database", OK, found), present


def check_warehouse(url: str, query: str, max_plausible: int) -> Check:
    from stock_pipeline.core.snapshot import clean_snapshot
    from stock_pipeline.foundation.errors import AllegroSyncError
    from stock_pipeline.warehouse.stock_source import read_stock

    shown = _database_url(url)
    if _missing_sqlite_file(url):  # reading it would create an empty file
        return Check("warehouse", FAIL, f"{shown} does not exist", "check STOCK_DATABASE_URL")
    try:
        snapshot = clean_snapshot(read_stock(url, query), max_plausible=max_plausible)
    except AllegroSyncError as exc:  # StockSourceError: its message names the variable and the cause
        return Check(
            "warehouse", FAIL, str(exc), "check STOCK_DATABASE_URL and STOCK_QUERY (it must return sku, stock)"
        )
    except ValueError as exc:  # columns sku/stock missing
        return Check(
            "warehouse",
            FAIL,
            f"STOCK_QUERY ran on {shown} but {exc}",
            "alias the columns in STOCK_QUERY: SELECT your_sku AS sku, your_qty AS stock FROM …",
        )
    if snapshot.rows_read == 0:
        return Check(
            "warehouse",
            FAIL,
            f"STOCK_QUERY returned no rows from {shown}: snapshot_guard would hold every run's writes",
            "check STOCK_QUERY and that the warehouse table is filled",
        )
    skus = int(snapshot.stock["sku"].nunique())
    found = f"{shown}: {snapshot.rows_read} rows, {skus} SKUs"
    if len(snapshot.bad_rows):
        problems = ", ".join(f"{problem}: {count}" for problem, count in snapshot.problems.items())
        return Check(
            "warehouse",
            WARN,
            f"{found}, {len(snapshot.bad_rows)} bad rows ({problems})",
            "fix those rows in the warehouse; until then their SKUs are left as they are on Allegro",
        )
    return Check("warehouse", OK, found + ", no bad rows")


def check_warehouse_changes(url: str, query: str) -> Check:
    """STOCK_CHANGES_QUERY, when set: it runs, returns sku, stock and changed_at, and its
    changed_at is a timestamp the live sync can resume from."""
    from stock_pipeline.core.changes_position import ChangesPositionError, advanced, since_of
    from stock_pipeline.foundation.errors import AllegroSyncError
    from stock_pipeline.warehouse.stock_source import CHANGED_AT, newest_change, read_stock_changes

    fix = "STOCK_CHANGES_QUERY must return sku, stock, changed_at (a timestamp) of the rows changed after :since"
    try:
        position = advanced(None, [newest_change(url, query, since_of(None))])
        if position is None:
            return Check("warehouse changes", WARN, "STOCK_CHANGES_QUERY returned no row", fix)
        rows = read_stock_changes(url, query, position.since())
        advanced(position, rows[CHANGED_AT])
    except (AllegroSyncError, ChangesPositionError) as exc:
        return Check("warehouse changes", FAIL, str(exc), fix)
    return Check(
        "warehouse changes",
        OK,
        f"newest change {position.newest}; {len(rows)} rows changed in the look-back window before it",
    )


def check_redis(url: str | None) -> Check:
    import redis

    if not url:
        return Check(
            "rate limiter",
            WARN,
            "REDIS_URL is not set: the in-process limiter is used, which is fine only "
            "while one process syncs (the demo, one `stock-pipeline sync` at a time)",
            "set REDIS_URL before running the daemon or several processes: they must share one budget",
        )
    client = redis.Redis.from_url(
        url, socket_timeout=CHECK_TIMEOUT_SECONDS / 2, socket_connect_timeout=CHECK_TIMEOUT_SECONDS / 2
    )
    try:
        client.ping()
    except redis.RedisError as exc:
        return Check(
            "rate limiter",
            FAIL,
            f"Redis at {safe_url(url)} does not answer PING ({type(exc).__name__}): "
            "every run would fail before calling Allegro",
            "start Redis or correct REDIS_URL",
        )
    finally:
        client.close()
    return Check("rate limiter", OK, f"Redis at {safe_url(url)} answers PING (shared token bucket)")


def check_allegro_client(settings: Settings) -> Check:
    from stock_pipeline.allegro.auth import AllegroAuth
    from stock_pipeline.foundation.errors import AllegroTokenError, InvalidClientError

    auth = AllegroAuth(
        settings.allegro_auth_url,
        settings.allegro_client_id,
        settings.allegro_client_secret,
        timeout=min(settings.allegro_sync_http_timeout, CHECK_TIMEOUT_SECONDS),
        connect_retries=0,
    )
    try:
        auth.check_client()
    except InvalidClientError as exc:
        return Check(
            "allegro credentials",
            FAIL,
            f"client_id {settings.allegro_client_id!r}: {exc}",
            "copy ALLEGRO_CLIENT_ID and ALLEGRO_CLIENT_SECRET from apps.developer.allegro.pl (sandbox "
            "applications are separate: ALLEGRO_AUTH_URL must match)",
        )
    except AllegroTokenError as exc:
        return Check("allegro credentials", FAIL, str(exc), "check ALLEGRO_AUTH_URL and the network")
    finally:
        auth.close()
    return Check(
        "allegro credentials",
        OK,
        f"{settings.allegro_auth_url} accepts client_id {settings.allegro_client_id!r} (client_credentials grant)",
    )


def _token_check(state, now: datetime) -> Check:
    from stock_pipeline.store.schema import ACCOUNT_NEEDS_REAUTH, ACCOUNT_PAUSED

    name = f"account {state.name}"
    if state.problem:
        return Check(
            name,
            FAIL,
            state.problem,
            f"set {KEY_VARIABLE} to the key they were stored with, or authorise again: "
            f"stock-pipeline accounts add {state.name}",
        )
    if state.status == ACCOUNT_NEEDS_REAUTH:
        return Check(
            name,
            FAIL,
            f"needs re-authorisation ({state.last_error or 'refresh token rejected'})",
            f"stock-pipeline accounts add {state.name}",
        )
    if not state.has_refresh_token:
        return Check(
            name, FAIL, f"{state.status}, but no refresh token is stored", f"stock-pipeline accounts add {state.name}"
        )
    expires = state.access_expires_at
    if expires is None or not state.has_access_token:
        access = "no access token yet (the next run gets one)"
    elif expires > now:
        access = f"access token valid until {utc_time(expires, minutes_only=True)} UTC"
    else:
        access = f"access token expired {age((now - expires).total_seconds())} (the next run refreshes it)"
    found = f"{state.status}; {access}; refresh token stored"
    if not state.encrypted:
        return Check(
            name,
            WARN,
            found + " unencrypted (written before encryption)",
            "the next token refresh stores them encrypted",
        )
    if state.status == ACCOUNT_PAUSED:
        return Check(
            name, WARN, found + " (encrypted); paused: not synced", f"stock-pipeline accounts resume {state.name}"
        )
    return Check(name, OK, found + " (encrypted)")


def check_accounts(settings: Settings, now: datetime | None = None) -> list[Check]:
    from stock_pipeline.store.accounts import AccountStore

    now = now or datetime.now(timezone.utc)
    url = settings.stock_pipeline_database_url
    # A plain engine, not engine_for: that one migrates the schema, and the doctor only looks.
    engine = sa.create_engine(url, connect_args=_connect_args(url))
    try:
        states = AccountStore(engine, settings.token_cipher()).stored_tokens()
    except sa.exc.SQLAlchemyError as exc:
        return [
            Check(
                "accounts",
                FAIL,
                f"cannot read the accounts table: {_first_line(exc)}",
                "check STOCK_PIPELINE_DATABASE_URL",
            )
        ]
    finally:
        engine.dispose()
    if not states:
        return [Check("accounts", WARN, "no account registered", "stock-pipeline accounts add NAME")]
    return [_token_check(state, now) for state in states]


def check_telegram(settings: Settings, send_test: bool) -> list[Check]:
    from stock_pipeline.notify.telegram import TelegramError, TelegramNotifier

    if not (settings.telegram_bot_token and settings.allegro_error_notification_chat_id):
        checks = [
            Check(
                "telegram",
                WARN,
                "not configured: failed runs alert no one",
                "set TELEGRAM_BOT_TOKEN and ALLEGRO_ERROR_NOTIFICATION_CHAT_ID",
            )
        ]
        if send_test:
            checks.append(
                Check(
                    "telegram test message",
                    FAIL,
                    "not sent: Telegram is not configured",
                    "set TELEGRAM_BOT_TOKEN and ALLEGRO_ERROR_NOTIFICATION_CHAT_ID",
                )
            )
        return checks
    chat = settings.allegro_error_notification_chat_id
    notifier = TelegramNotifier(
        settings.telegram_api_url, settings.telegram_bot_token, chat, timeout=CHECK_TIMEOUT_SECONDS, max_attempts=1
    )
    try:
        bot = notifier.bot_name()
    except TelegramError as exc:
        checks = [Check("telegram", FAIL, str(exc), "check TELEGRAM_BOT_TOKEN (from @BotFather) and TELEGRAM_API_URL")]
        if send_test:
            checks.append(Check("telegram test message", FAIL, "not sent: the bot token does not work", ""))
        return checks
    checks = [
        Check(
            "telegram",
            OK,
            f"bot {bot} answers; alerts go to chat {chat}"
            + ("" if send_test else " (add --send-test to send a test message)"),
        )
    ]
    if send_test:
        try:
            notifier.send(TEST_MESSAGE)
        except TelegramError as exc:
            checks.append(
                Check(
                    "telegram test message",
                    FAIL,
                    str(exc),
                    "check ALLEGRO_ERROR_NOTIFICATION_CHAT_ID; the bot must be in that chat (an admin of a channel)",
                )
            )
        else:
            checks.append(Check("telegram test message", OK, f"sent to chat {chat}"))
    return checks


def _guarded(name: str, check, *args) -> Check:
    """A check that breaks is reported as its own failed line; the other checks still run."""
    try:
        return check(*args)
    except Exception as exc:  # noqa: BLE001 - doctor must finish and say what it could not check
        return Check(
            name,
            FAIL,
            f"the check could not run: {type(exc).__name__}: {str(exc)[:300]}",
            "run with the same settings again; if it repeats, report it with this line",
        )


def run_checks(settings: Settings, *, send_test: bool = False) -> Iterator[Check]:
    """Every check in order, each yielded as soon as it is done (some wait on the network)."""
    yield check_settings(settings)
    yield check_encryption_key(settings)
    database, tables = check_pipeline_database(settings.stock_pipeline_database_url)
    yield database
    yield _guarded(
        "warehouse",
        check_warehouse,
        settings.stock_database_url,
        settings.stock_query,
        settings.stock_max_plausible_stock,
    )
    if settings.stock_changes_query:
        yield _guarded(
            "warehouse changes", check_warehouse_changes, settings.stock_database_url, settings.stock_changes_query
        )
    yield _guarded("redis", check_redis, settings.redis_url)
    yield _guarded("allegro credentials", check_allegro_client, settings)
    if tables is None and database.level == FAIL:
        yield Check("accounts", WARN, "not checked: the pipeline database is unreachable")
    elif tables is None or "accounts" not in tables:
        yield Check("accounts", WARN, "no account registered", "stock-pipeline accounts add NAME")
    else:
        yield from check_accounts(settings)
    yield from check_telegram(settings, send_test)
