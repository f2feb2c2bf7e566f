"""`stock-pipeline doctor` against a real deployment's services (Postgres, Redis, the Allegro
simulator's OAuth, the fake Telegram), healthy and broken in each way an operator meets."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from stock_pipeline_tests.helpers import register_account, run_cli, write_stock

CHECKS = (
    "settings",
    "token encryption key",
    "pipeline database",
    "warehouse",
    "rate limiter",
    "allegro credentials",
    "account shop-a",
    "telegram",
)


def check_line(stdout: str, name: str) -> str:
    """The line of one check: `LEVEL  NAME…  what was found  → what to do`."""
    for line in stdout.splitlines():
        rest = line[6:]
        if (
            line[:4].strip() in ("ok", "warn", "FAIL")
            and rest.startswith(name + " ")
            and not (name == "telegram" and rest.startswith("telegram test message"))
        ):
            return line
    raise AssertionError(f"no line for check {name!r} in:\n{stdout}")


@pytest.fixture
def healthy(settings, simulator):
    register_account(settings, simulator, "shop-a")
    write_stock(settings.stock_database_url, [("A1", 3), ("A2", 0)])
    return settings


def no_secret_in(text: str, settings, *more: str) -> None:
    for secret in (settings.allegro_client_secret, settings.telegram_bot_token, settings.token_encryption_key, *more):
        assert secret not in text


def test_a_healthy_deployment_passes_every_check_and_sends_nothing(healthy, simulator, telegram):
    simulator.reset_requests()
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in CHECKS:
        assert check_line(result.stdout, name).startswith("ok"), result.stdout
    assert "2 rows, 2 SKUs" in check_line(result.stdout, "warehouse")
    assert "@fake_stock_bot" in check_line(result.stdout, "telegram")
    assert "refresh token stored (encrypted)" in check_line(result.stdout, "account shop-a")
    assert telegram.messages == []  # getMe only, without --send-test
    # The credentials were checked without spending the seller's refresh token.
    token_calls = [r for r in simulator.requests if r.path.endswith("/auth/oauth/token")]
    assert len(token_calls) == 1 and token_calls[0].login is None and token_calls[0].status == 200
    no_secret_in(result.stdout + result.stderr, healthy)


def test_send_test_sends_exactly_one_message(healthy, telegram):
    result = run_cli("doctor", "--send-test")
    assert result.returncode == 0, result.stdout + result.stderr
    assert check_line(result.stdout, "telegram test message").startswith("ok")
    assert len(telegram.messages) == 1
    assert telegram.messages[0]["chat_id"] == int(healthy.allegro_error_notification_chat_id)


def test_each_broken_dependency_fails_by_name_with_its_fix(healthy, monkeypatch):
    monkeypatch.setenv("STOCK_QUERY", "SELECT sku, qty FROM products")
    monkeypatch.setenv("REDIS_URL", "redis://:redis-password-1@127.0.0.1:1/0")
    monkeypatch.setenv("ALLEGRO_CLIENT_SECRET", "wrong-client-secret")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())  # not the key shop-a was stored with

    result = run_cli("doctor")

    assert result.returncode == 1, result.stdout + result.stderr
    warehouse = check_line(result.stdout, "warehouse")
    assert warehouse.startswith("FAIL") and "qty" in warehouse
    redis_line = check_line(result.stdout, "rate limiter")
    assert (
        redis_line.startswith("FAIL")
        and "127.0.0.1:1" in redis_line
        and "start Redis or correct REDIS_URL" in redis_line
    )
    credentials = check_line(result.stdout, "allegro credentials")
    assert credentials.startswith("FAIL") and "invalid_client" in credentials and "ALLEGRO_CLIENT_SECRET" in credentials
    account = check_line(result.stdout, "account shop-a")
    assert account.startswith("FAIL") and "cannot decrypt" in account
    assert "TOKEN_ENCRYPTION_KEY" in account and "stock-pipeline accounts add shop-a" in account
    assert check_line(result.stdout, "pipeline database").startswith("ok")
    assert "4 failed" in result.stdout
    no_secret_in(result.stdout + result.stderr, healthy, "wrong-client-secret", "redis-password-1")


def test_unconfigured_telegram_is_said_plainly_and_send_test_fails(healthy, monkeypatch, telegram):
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN")
    monkeypatch.delenv("ALLEGRO_ERROR_NOTIFICATION_CHAT_ID")
    result = run_cli("doctor")
    assert result.returncode == 0, result.stdout + result.stderr
    line = check_line(result.stdout, "telegram")
    assert line.startswith("warn") and "not configured: failed runs alert no one" in line

    asked = run_cli("doctor", "--send-test")
    assert asked.returncode == 1
    assert check_line(asked.stdout, "telegram test message").startswith("FAIL")
    assert telegram.messages == []


def test_a_rejected_bot_token_fails_without_showing_it(healthy, telegram):
    telegram.accepted_tokens = {"999:another-bot"}
    result = run_cli("doctor", "--send-test")
    assert result.returncode == 1
    line = check_line(result.stdout, "telegram")
    assert line.startswith("FAIL") and "401" in line and "TELEGRAM_BOT_TOKEN" in line
    assert telegram.messages == []
    no_secret_in(result.stdout + result.stderr, healthy)


def test_accounts_needing_attention_and_a_missing_key_are_reported(healthy, simulator, monkeypatch):
    from stock_pipeline.store.accounts import AccountStore
    from stock_pipeline.store.engine import engine_for

    register_account(healthy, simulator, "shop-b")
    register_account(healthy, simulator, "shop-c")
    store = AccountStore(engine_for(healthy.stock_pipeline_database_url), healthy.token_cipher())
    store.set_status("shop-b", "needs_reauth", "refresh token rejected by Allegro (invalid_grant)")
    store.pause("shop-c")
    result = run_cli("doctor")
    assert result.returncode == 1
    assert check_line(result.stdout, "account shop-a").startswith("ok")
    shop_b = check_line(result.stdout, "account shop-b")
    assert shop_b.startswith("FAIL") and "stock-pipeline accounts add shop-b" in shop_b
    shop_c = check_line(result.stdout, "account shop-c")
    assert shop_c.startswith("warn") and "stock-pipeline accounts resume shop-c" in shop_c

    monkeypatch.delenv("TOKEN_ENCRYPTION_KEY")
    keyless = run_cli("doctor")
    assert keyless.returncode == 1
    assert check_line(keyless.stdout, "token encryption key").startswith("FAIL")
    assert check_line(keyless.stdout, "account shop-a").startswith("FAIL")


def test_bad_rows_and_an_empty_warehouse(healthy):
    write_stock(healthy.stock_database_url, [("A1", 3), ("A2", -1), ("", 4)])
    result = run_cli("doctor")
    line = check_line(result.stdout, "warehouse")
    assert line.startswith("warn") and "3 rows" in line and "2 bad rows" in line and "stock is negative: 1" in line
    assert result.returncode == 0

    write_stock(healthy.stock_database_url, [])
    empty = run_cli("doctor")
    assert empty.returncode == 1 and check_line(empty.stdout, "warehouse").startswith("FAIL")


def test_unusable_settings_exit_2_naming_the_variable(healthy, monkeypatch):
    monkeypatch.setenv("ALLEGRO_SYNC_BATCH_SIZE", "5000")
    result = run_cli("doctor")
    assert result.returncode == 2 and "ALLEGRO_SYNC_BATCH_SIZE" in result.stderr


def test_the_changes_query_is_checked_when_set(healthy, monkeypatch):
    import sqlalchemy as sa

    engine = sa.create_engine(healthy.stock_database_url)
    with engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE products ADD COLUMN changed_at TEXT"))
        conn.execute(sa.text("UPDATE products SET changed_at = '2026-11-28 10:00:00'"))
    engine.dispose()
    assert "warehouse changes" not in run_cli("doctor").stdout  # not set: not checked

    monkeypatch.setenv("STOCK_CHANGES_QUERY", "SELECT sku, stock, changed_at FROM products WHERE changed_at > :since")
    good = run_cli("doctor")
    assert good.returncode == 0, good.stdout
    line = check_line(good.stdout, "warehouse changes")
    assert line.startswith("ok") and "newest change 2026-11-28 10:00:00; 2 rows" in line

    monkeypatch.setenv(
        "STOCK_CHANGES_QUERY", "SELECT sku, stock, 5 AS changed_at FROM products WHERE :since IS NOT NULL"
    )
    wrong = run_cli("doctor")
    line = check_line(wrong.stdout, "warehouse changes")
    assert wrong.returncode == 1 and line.startswith("FAIL") and "changed_at must be a timestamp; got int" in line
