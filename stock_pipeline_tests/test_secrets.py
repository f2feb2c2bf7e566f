"""Secrets: tokens encrypted at rest (TOKEN_ENCRYPTION_KEY), redaction of logs, and no
token anywhere a full run leaves text behind."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import sqlalchemy as sa
import structlog
from cryptography.fernet import Fernet
from dagster import DagsterInstance, serialize_value

from stock_pipeline.definitions import build_definitions
from stock_pipeline.foundation.errors import AccountNeedsReauthorisationError, SettingsError
from stock_pipeline.foundation.logs import REDACTED, configure_logging, redact_secrets, redact_settings, redact_text
from stock_pipeline.foundation.settings import load_settings
from stock_pipeline.foundation.tokens import TokenEncryptionError, TokenPair
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.schema import accounts
from stock_pipeline_tests.helpers import (
    allegro_auth,
    expire_stored_token,
    register_account,
    run_cli,
    send_failure_alert,
    token_requests,
    write_stock,
)

WRONG_KEY = (
    "cannot decrypt stored tokens of account 'shop-a': "
    "TOKEN_ENCRYPTION_KEY does not match the key they were stored with"
)


def stored(settings, name: str = "shop-a") -> tuple[str, str]:
    """The raw columns, as anyone reading the table would see them."""
    with engine_for(settings.stock_pipeline_database_url).connect() as conn:
        row = conn.execute(
            sa.text("SELECT access_token, refresh_token FROM accounts WHERE name = :n"), {"n": name}
        ).one()
    return row.access_token, row.refresh_token


def store() -> AccountStore:
    """A store built as the pipeline builds it, from settings loaded now: the tests change
    TOKEN_ENCRYPTION_KEY in the environment as an operator would between two starts."""
    settings = load_settings()
    return AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())


def write_plaintext_row(settings, simulator, name: str) -> TokenPair:
    """A row as a version without encryption wrote it."""
    pair = allegro_auth(settings).refresh(simulator.add_seller(name))
    with engine_for(settings.stock_pipeline_database_url).begin() as conn:
        conn.execute(
            accounts.insert().values(
                name=name,
                access_token=pair.access_token,
                refresh_token=pair.refresh_token,
                access_expires_at=pair.expires_at,
            )
        )
    return pair


# ---- tokens at rest ------------------------------------------------------------------


def test_tokens_at_rest_are_not_readable_in_the_table(settings, simulator, issued):
    register_account(settings, simulator, "shop-a")
    access, refresh = stored(settings)
    assert access.startswith("fernet:") and refresh.startswith("fernet:")
    assert not any(token in access + refresh for token in issued)
    assert store().tokens_for("shop-a", allegro_auth(settings)).current() in issued  # and the pipeline reads them


def test_rotation_first_key_encrypts_every_key_decrypts(settings, simulator, monkeypatch):
    old_key, new_key = settings.token_encryption_key, Fernet.generate_key().decode()
    register_account(settings, simulator, "shop-a")
    before = stored(settings)

    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", f"{new_key}, {old_key}")
    token = store().tokens_for("shop-a", allegro_auth(settings)).current()  # the old key still reads
    assert stored(settings) == before  # reading rewrites nothing
    expire_stored_token(settings.stock_pipeline_database_url, "shop-a")
    refreshed = store().tokens_for("shop-a", allegro_auth(settings)).current()
    assert refreshed != token

    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", new_key)  # the refresh re-encrypted with the first key
    assert store().tokens_for("shop-a", allegro_auth(settings)).current() == refreshed
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", old_key)
    with pytest.raises(TokenEncryptionError, match=WRONG_KEY):
        store().tokens_for("shop-a", allegro_auth(settings)).current()


def test_a_plaintext_row_of_an_older_version_is_read_then_encrypted_by_the_next_write(settings, simulator):
    pair = write_plaintext_row(settings, simulator, "shop-a")
    tokens = store().tokens_for("shop-a", allegro_auth(settings))
    assert tokens.current() == pair.access_token
    assert stored(settings) == (pair.access_token, pair.refresh_token)

    expire_stored_token(settings.stock_pipeline_database_url, "shop-a")
    # A later run: the refresh spends the plaintext refresh token and stores the new pair sealed.
    refreshed = store().tokens_for("shop-a", allegro_auth(settings)).current()
    access, refresh = stored(settings)
    assert access.startswith("fernet:") and refresh.startswith("fernet:") and refreshed not in access
    assert store().tokens_for("shop-a", allegro_auth(settings)).current() == refreshed


def test_postgres_without_a_key_refuses_accounts_add_and_refresh(settings, simulator, monkeypatch):
    pair = write_plaintext_row(settings, simulator, "shop-old")
    monkeypatch.delenv("TOKEN_ENCRYPTION_KEY")

    result = run_cli("accounts", "add", "shop-a", "--refresh-token", simulator.add_seller("shop-a"))
    assert result.returncode == 2, result.stderr
    assert (
        "refusing to store the tokens of account 'shop-a' unencrypted: TOKEN_ENCRYPTION_KEY is not set" in result.stderr
    )
    assert "Fernet.generate_key()" in result.stderr and "Traceback" not in result.stderr
    assert store().get("shop-a") is None

    # A plaintext row stays usable until it needs a refresh, which is refused before the refresh token is spent.
    tokens = store().tokens_for("shop-old", allegro_auth(settings))
    assert tokens.current() == pair.access_token
    expire_stored_token(settings.stock_pipeline_database_url, "shop-old")
    simulator.reset_requests()
    with pytest.raises(TokenEncryptionError, match="TOKEN_ENCRYPTION_KEY is not set"):
        store().tokens_for("shop-old", allegro_auth(settings)).current()  # a later run needs a refresh
    assert token_requests(simulator) == 0
    assert stored(settings, "shop-old") == (pair.access_token, pair.refresh_token)
    assert store().get("shop-old").status == "active"


def test_encrypted_tokens_without_a_key_or_with_another_key_are_a_clear_error(settings, simulator, monkeypatch):
    register_account(settings, simulator, "shop-a")
    write_stock(settings.stock_database_url, [("A", 1)])
    monkeypatch.delenv("TOKEN_ENCRYPTION_KEY")
    with pytest.raises(TokenEncryptionError, match="they are encrypted and TOKEN_ENCRYPTION_KEY is not set"):
        store().tokens_for("shop-a", allegro_auth(settings)).current()

    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    with pytest.raises(TokenEncryptionError, match=WRONG_KEY):
        store().tokens_for("shop-a", allegro_auth(settings)).current()
    result = run_cli("sync", "--account", "shop-a")  # through Dagster: the run fails with the message
    assert result.returncode == 2  # a configuration problem found during the run
    assert WRONG_KEY in result.stdout
    assert "Traceback" not in result.stdout + result.stderr
    assert store().get("shop-a").status == "active"  # the account is fine: the key is wrong


@pytest.mark.parametrize(
    "value, problem",
    [("not-a-key", "its value is not"), (f"{Fernet.generate_key().decode()},short", "key 2 of 2 is not")],
)
def test_a_bad_key_is_a_settings_error_naming_the_variable_and_the_fix(value, problem):
    with pytest.raises(SettingsError) as error:
        load_settings({"TOKEN_ENCRYPTION_KEY": value})
    message = str(error.value)
    assert message.startswith("TOKEN_ENCRYPTION_KEY must be a Fernet key") and problem in message
    assert "Fernet.generate_key().decode()" in message and "short" not in message and "not-a-key" not in message


def test_settings_never_show_the_key():
    settings = load_settings({"TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode()})
    assert settings.token_encryption_key and settings.token_encryption_key not in repr(settings)


# ---- redaction -----------------------------------------------------------------------

SECRET = "s3cr3t-t0ken-value_xyz"
JWT = "eyJhbGciOiJSUzI1NiJ9.eyJ1c2VyX25hbWUiOiIxMjMifQ.c2lnbmF0dXJlLXNpZ25hdHVyZQ"


@pytest.mark.parametrize(
    "event",
    [
        {"event": "call", "headers": {"Authorization": f"Bearer {SECRET}", "Accept": "application/json"}},
        {"event": "call", "headers": [("authorization", f"Basic {SECRET}")]},
        {"event": f"POST https://allegro.pl/auth/oauth/token?grant_type=refresh_token&refresh_token={SECRET}&x=1"},
        {"event": "poll", "url": f"https://allegro.pl/auth/oauth/token?device_code={SECRET}"},
        {"event": "answer", "body": {"access_token": SECRET, "refresh_token": SECRET, "token_type": "bearer"}},
        {"event": "answer", "body": f"{{'access_token': '{SECRET}', 'expires_in': 43199}}"},
        {"event": "answer", "body": f'{{"refresh_token": "{SECRET}"}}'},
        {"event": "telegram", "url": f"https://api.telegram.org/bot123456789:{SECRET}AAAAAAAAAAAAAA/sendMessage"},
        {"event": "failed", "error": f"invalid_grant: Invalid refresh token: {SECRET}"},
        {"event": "failed", "error": f"invalid_token: Access token expired: {JWT}"},
        {"event": "stored", "value": "fernet:" + Fernet(Fernet.generate_key()).encrypt(SECRET.encode()).decode()},
        {"event": "failed", "error": ValueError(f"Bearer {SECRET}")},
        {"event": "config", "client_secret": SECRET, "TELEGRAM_BOT_TOKEN": SECRET, "token_encryption_key": SECRET},
    ],
)
def test_the_processor_redacts_tokens_headers_and_secrets(event):
    rendered = json.dumps(redact_secrets(None, "info", event), default=str)
    assert not any(part in rendered for part in ("s3cr3t", "t0ken", "value_xyz", JWT[:12], JWT[-12:], "gAAAA"))
    assert REDACTED in rendered


def test_the_processor_leaves_ordinary_events_alone():
    event = {
        "event": "token_refreshed",
        "account": "shop-a",
        "expires_at": "2026-01-01T00:00:00+00:00",
        "error": "access token rejected twice (invalid_token: Invalid access token)",
        "offers": 3,
        "token_type": "bearer",
    }
    assert redact_secrets(None, "info", dict(event)) == event


def test_tokens_the_process_handled_and_secret_settings_are_redacted_even_bare(settings, simulator, issued):
    redact_settings(settings)  # as every entry point does with the settings it loaded
    register_account(settings, simulator, "shop-a")
    token = store().tokens_for("shop-a", allegro_auth(settings)).current()
    text = f"unexpected answer {token} / {settings.allegro_client_secret} / {settings.telegram_bot_token}"
    assert redact_text(text) == f"unexpected answer {REDACTED} / {REDACTED} / {REDACTED}"


@pytest.fixture
def restore_logging():
    """configure_logging binds the sys.stderr of the moment (a capture here): undo it afterwards."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)


def test_httpx_request_lines_are_redacted(caplog, restore_logging):
    configure_logging(json=True)
    with caplog.at_level(logging.INFO, logger="httpx"):
        logging.getLogger("httpx").info(
            'HTTP Request: %s %s "%s"',
            "POST",
            f"https://allegro.pl/auth/oauth/token?grant_type=refresh_token&refresh_token={SECRET}",
            "HTTP/1.1 200 OK",
        )
    assert caplog.messages and SECRET not in caplog.text and "refresh_token=[REDACTED]" in caplog.text


def test_structlog_output_is_redacted(capsys, restore_logging):
    configure_logging(json=True)
    structlog.get_logger("t").warning("allegro_retry", error=f"401 Bearer {SECRET}", refresh_token=SECRET)
    assert SECRET not in capsys.readouterr().err


def test_the_secret_settings_are_redacted_once_the_process_loaded_them(tmp_path):
    """From the Settings object (not the environment): secrets, each key of a rotation list,
    and the passwords inside the database and Redis URLs."""
    keys = [Fernet.generate_key().decode() for _ in range(2)]
    settings = load_settings(
        {
            "ALLEGRO_CLIENT_SECRET": "cl1ent-secret-" + keys[0][:8],
            "TOKEN_ENCRYPTION_KEY": ",".join(keys),
            "STOCK_PIPELINE_DATABASE_URL": f"postgresql+psycopg://sp:pw-{keys[1][:10]}@db/sp",
            "DAGSTER_HOME": str(tmp_path),
        }
    )
    text = f"{settings.allegro_client_secret} {keys[0]} {keys[1]} pw-{keys[1][:10]}"
    assert redact_text(text) == text  # nothing known yet
    build_definitions(settings)  # what the code server, a run worker and `sync` do on start
    assert redact_text(text) == " ".join([REDACTED] * 4)


def _snapshot_text(defs) -> str:
    """Everything the code server hands the webserver about these definitions: resource
    config shown in the UI (Deployment → Resources), job snapshots with their config schema
    and defaults (stored with every run)."""
    from dagster._core.remote_representation.external_data import RepositorySnap

    return serialize_value(RepositorySnap.from_def(defs.get_repository_def()))


def test_no_secret_or_password_in_the_resource_config_dagster_shows(tmp_path):
    values = {
        "ALLEGRO_CLIENT_ID": "visible-client-id",
        "ALLEGRO_CLIENT_SECRET": "client-secret-Zq81",
        "TELEGRAM_BOT_TOKEN": "123456789:bot-token-Wx52",
        "ALLEGRO_ERROR_NOTIFICATION_CHAT_ID": "-100",
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),
        "STOCK_DATABASE_URL": "postgresql+psycopg://shop:warehouse-pw-Kd33@db/shop",
        "STOCK_PIPELINE_DATABASE_URL": "postgresql+psycopg://sp:pipeline-pw-Hv07@db/sp",
        "REDIS_URL": "redis://:redis-pw-Tn49@cache:6379/0",
        "DAGSTER_HOME": str(tmp_path),
    }
    secrets = [
        "client-secret-Zq81",
        "bot-token-Wx52",
        values["TOKEN_ENCRYPTION_KEY"],
        "warehouse-pw-Kd33",
        "pipeline-pw-Hv07",
        "redis-pw-Tn49",
    ]
    defs = build_definitions(load_settings(values))
    snapshot = _snapshot_text(defs)
    assert "visible-client-id" in snapshot and "SELECT sku, stock FROM products" in snapshot  # config is there
    assert [s for s in secrets if s in snapshot] == []
    shown = {name: repr(resource) for name, resource in defs.resources.items()}  # e.g. in an error message
    assert [(name, s) for name, text in shown.items() for s in secrets if s in text] == []
    # and the resources still have them, from the Settings object
    assert defs.resources["allegro"].client_secret == "client-secret-Zq81"
    assert defs.resources["telegram"].bot_token == "123456789:bot-token-Wx52"
    assert "pipeline-pw-Hv07" in defs.resources["pipeline_db"].url


# ---- the grep test -------------------------------------------------------------------


def _everything_written(instance, outputs: list[str], telegram, pipeline_env) -> dict[str, str]:
    """Every text a run leaves behind, by where it was found."""
    texts = {f"cli output {i}": text for i, text in enumerate(outputs)}
    for run in instance.get_runs():
        texts[f"run {run.run_id}"] = serialize_value(run)  # run config and tags included
        texts[f"run config {run.run_id}"] = json.dumps(run.run_config, default=str) + json.dumps(run.tags)
        texts[f"job snapshot {run.run_id}"] = serialize_value(instance.get_job_snapshot(run.job_snapshot_id))
        for n, record in enumerate(instance.all_logs(run.run_id)):
            texts[f"event {run.run_id}/{n}"] = serialize_value(record)
    for directory in (pipeline_env["DAGSTER_HOME"], pipeline_env["STOCK_PIPELINE_STORAGE_DIR"]):
        for path in Path(directory).rglob("*"):  # storage databases, compute logs, stored asset values
            if path.is_file():
                texts[str(path)] = path.read_bytes().decode("latin-1")
    texts.update({f"telegram message {i}": m["text"] for i, m in enumerate(telegram.messages)})
    return texts


def test_no_token_or_secret_in_any_output_event_or_config_of_a_full_run(
    settings, simulator, telegram, pipeline_env, issued
):
    outputs = []

    def cli(*args: str, expect: int = 0) -> None:
        result = run_cli(*args)
        outputs.append(result.stdout + result.stderr)
        assert result.returncode == expect, result.stdout + result.stderr

    cli("accounts", "add", "shop-a", "--refresh-token", simulator.add_seller("shop-a"))
    simulator.add_seller("shop-b")
    simulator.auto_approve_device = "shop-b"
    cli("accounts", "add", "shop-b")  # the device flow: device code and its tokens
    for account, prefix in (("shop-a", "A"), ("shop-b", "B")):
        simulator.add_offers(account, [{"sku": f"{prefix}{i % 40}", "stock": 1} for i in range(120)])
    write_stock(settings.stock_database_url, [(f"{p}{i}", 2 + i % 5) for p in "AB" for i in range(40)] + [("A0", 0)])

    simulator.expire_access_tokens("shop-a")  # a 401 mid-run: re-read, then refresh
    expire_stored_token(settings.stock_pipeline_database_url, "shop-b")  # a refresh before the first call
    cli("sync", "--verbose")
    simulator.revoke_tokens("shop-b")  # the failing run: invalid_grant
    expire_stored_token(settings.stock_pipeline_database_url, "shop-b")
    cli("sync", "--verbose", expect=1)  # everything on the terminal: more places for a leak to show
    cli("sync", "--verbose", "--account", "shop-b", expect=1)  # needs_reauth: refused without a call
    cli("accounts", "list")
    cli("history", "--limit", "5")
    with pytest.raises(AccountNeedsReauthorisationError):
        store().tokens_for("shop-b", allegro_auth(settings)).current()

    instance = DagsterInstance.get()
    failed = [r for r in instance.get_runs() if r.status.value == "FAILURE"]
    assert failed
    defs = build_definitions(settings)
    for run in failed:
        send_failure_alert(defs, instance, run)

    # The recording saw the tokens actually used, and the runs did log around them.
    bearer = {
        r.headers["authorization"].removeprefix("Bearer ")
        for r in simulator.requests
        if r.headers.get("authorization", "").startswith("Bearer ")
    }
    assert bearer and bearer <= set(issued) and len(issued) >= 7
    logged = "\n".join(outputs)
    assert '"event": "token_refreshed"' in logged and '"event": "account_needs_reauthorisation"' in logged
    assert telegram.messages

    secrets = {f"issued token {i}": token for i, token in enumerate(issued)}
    secrets |= {
        "client secret": settings.allegro_client_secret,
        "bot token": settings.telegram_bot_token,
        "TOKEN_ENCRYPTION_KEY": settings.token_encryption_key,
    }
    leaks = [
        (what, where)
        for where, text in _everything_written(instance, outputs, telegram, pipeline_env).items()
        for what, secret in secrets.items()
        if secret in text
    ]
    assert leaks == []
