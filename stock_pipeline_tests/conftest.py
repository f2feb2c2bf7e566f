"""Shared fixtures: a fresh Postgres database per test, unique Redis keys, the Allegro
simulator and fake Telegram over real HTTP, and an environment wiring them together."""

from __future__ import annotations

import os
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis as redis_lib
import sqlalchemy as sa
from cryptography.fernet import Fernet

import stock_pipeline

from stock_pipeline_tests.services import POSTGRES_URL, REDIS_URL


def _admin_engine():
    return sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")


@contextmanager
def scratch_database(driver: str = "postgresql+psycopg"):
    """A database created for one test and dropped afterwards; yields its URL."""
    name = f"sp_test_{uuid.uuid4().hex[:12]}"
    admin = _admin_engine()
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(POSTGRES_URL).set(drivername=driver, database=name).render_as_string(hide_password=False)
    finally:
        from stock_pipeline.store.schema import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(autouse=True)
def _no_dagster_state_storage_from_another_test():
    """Entering a DagsterInstance (`with instance:`) makes its storage the process's current
    definitions-state storage, a ContextVar; a test that leaves one behind makes every later
    `Definitions` load in this process fail once the garbage collector takes that instance
    ("Attempted to resolve undefined DagsterInstance weakref"). Each test starts clean."""
    from dagster._core.storage.defs_state.base import set_defs_state_storage

    with set_defs_state_storage(None):
        yield


@pytest.fixture
def postgres_url():
    with scratch_database() as url:
        yield url


@pytest.fixture
def postgres_dagster_home(pipeline_env, tmp_path, monkeypatch):
    """A Dagster instance on Postgres (dagster-postgres), as in production: SQLite
    storage cannot take several processes writing runs at once."""
    home = tmp_path / "dagster_home_pg"
    home.mkdir()
    with scratch_database(driver="postgresql") as url:
        (home / "dagster.yaml").write_text(
            "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_POSTGRES_URL\ntelemetry:\n  enabled: false\n")
        monkeypatch.setenv("DAGSTER_POSTGRES_URL", url)
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        yield home


@pytest.fixture
def redis_url():
    return REDIS_URL


@pytest.fixture
def client_id(redis_url):
    """A client_id of its own: the shared limiter's Redis key is per client_id."""
    cid = f"test-client-{uuid.uuid4().hex[:10]}"
    yield cid
    client = redis_lib.Redis.from_url(redis_url)
    for key in client.scan_iter(f"*{cid}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def simulator(client_id):
    from stock_pipeline.simulator import AllegroSimulator

    with AllegroSimulator(client_id=client_id, client_secret="test-secret", command_task_delay=0.05,
                          operation_delay=0.05) as sim:
        sim.device_interval = 0
        yield sim


@pytest.fixture
def issued(monkeypatch):
    """Every token and device code the simulator hands out from now on (its own store forgets used ones)."""
    from stock_pipeline.simulator import oauth

    tokens: list[str] = []
    new_token = oauth._new_token

    def recording() -> str:
        tokens.append(new_token())
        return tokens[-1]

    monkeypatch.setattr(oauth, "_new_token", recording)
    return tokens


@pytest.fixture
def telegram():
    from stock_pipeline.simulator import FakeTelegram

    with FakeTelegram() as fake:
        yield fake


@pytest.fixture
def stock_db(tmp_path):
    """The seller's warehouse: an SQLite file with a `products` table."""
    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE products (sku TEXT, stock INTEGER)"))
    engine.dispose()
    return url


def write_stock(url: str, rows: list[tuple]) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM products"))
        if rows:
            conn.execute(sa.text("INSERT INTO products (sku, stock) VALUES (:sku, :stock)"),
                         [{"sku": s, "stock": v} for s, v in rows])
    engine.dispose()


@pytest.fixture
def pipeline_env(monkeypatch, tmp_path, simulator, telegram, postgres_url, redis_url, client_id, stock_db):
    """Environment of a real deployment, pointed at the simulators; returns the variables."""
    env = {
        "ALLEGRO_API_URL": simulator.api_url,
        "ALLEGRO_AUTH_URL": simulator.auth_url,
        "ALLEGRO_CLIENT_ID": client_id,
        "ALLEGRO_CLIENT_SECRET": "test-secret",
        "STOCK_DATABASE_URL": stock_db,
        "STOCK_QUERY": "SELECT sku, stock FROM products",
        "STOCK_PIPELINE_DATABASE_URL": postgres_url,
        "REDIS_URL": redis_url,
        "TELEGRAM_API_URL": telegram.api_url,
        "TELEGRAM_BOT_TOKEN": "123456:test-bot-token",
        "ALLEGRO_ERROR_NOTIFICATION_CHAT_ID": "-100200300",
        "ALLEGRO_SYNC_RETRY_DELAY": "0.05",
        "ALLEGRO_SYNC_RATE_LIMIT_PAUSE": "0.2",
        "ALLEGRO_SYNC_POLL_FIRST_AFTER": "0.1",
        "ALLEGRO_SYNC_POLL_TIMEOUT": "10",
        "ALLEGRO_SYNC_HTTP_TIMEOUT": "5",
        "DAGSTER_HOME": str(tmp_path / "dagster_home"),
        "STOCK_PIPELINE_STORAGE_DIR": str(tmp_path / "frames"),
        "DAGSTER_WEBSERVER_URL": "http://dagster.example:3000",
        "TOKEN_ENCRYPTION_KEY": Fernet.generate_key().decode(),  # the whole suite stores tokens encrypted
    }
    Path(env["DAGSTER_HOME"]).mkdir()
    shutil.copy(Path(stock_pipeline.__file__).with_name("dagster_embedded.yaml"), Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(pipeline_env):
    from stock_pipeline.settings import load_settings

    return load_settings()


def register_account(settings, simulator, name: str) -> None:
    """The same exchange as `stock-pipeline accounts add NAME --refresh-token …`."""
    from stock_pipeline.allegro.auth import AllegroAuth
    from stock_pipeline.store.accounts import AccountStore
    from stock_pipeline.store.schema import engine_for

    refresh = simulator.add_seller(name)
    auth = AllegroAuth(settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret)
    AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).save_tokens(name, auth.refresh(refresh))
    auth.close()


os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


def send_failure_alert(defs, instance, run) -> None:
    """Evaluates the run-failure sensor for `run`, as the daemon would."""
    from dagster import build_run_status_sensor_context

    telegram_on_run_failure = defs.resolve_sensor_def("telegram_on_run_failure")
    failure = next(e for e in instance.all_logs(run.run_id)
                   if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE")
    # A context manager, as Dagster opens it: the resources hold the Settings as a nested
    # resource (stock_pipeline/defs/resources.py), which Dagster sets up inside a `with`.
    with build_run_status_sensor_context(
        sensor_name="telegram_on_run_failure", dagster_event=failure.dagster_event, dagster_instance=instance,
        dagster_run=run, resources={name: defs.resources[name] for name in ("telegram", "allegro", "pipeline_db")},
    ) as context:
        return telegram_on_run_failure(context.for_run_failure())
