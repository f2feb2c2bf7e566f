"""Shared fixtures: a fresh Postgres database per test, unique Redis keys, the Allegro
simulator and fake Telegram over real HTTP, and an environment wiring them together.
Also the test tiers: `pytest_collection_modifyitems` marks `services` and `cli` tests
(see the end of this file). Helpers that are not fixtures live in helpers.py."""

from __future__ import annotations

import inspect
import os
import shutil
import types
import uuid
from pathlib import Path

import pytest
import redis as redis_lib
import sqlalchemy as sa
from cryptography.fernet import Fernet

pytest.register_assert_rewrite("stock_pipeline_tests.helpers")

from stock_pipeline_tests.helpers import scratch_database  # noqa: E402 (after the rewrite hook)
from stock_pipeline_tests.services import REDIS_URL  # noqa: E402


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
            "storage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_POSTGRES_URL\ntelemetry:\n  enabled: false\n"
        )
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

    with AllegroSimulator(
        client_id=client_id, client_secret="test-secret", command_task_delay=0.05, operation_delay=0.05
    ) as sim:
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
    from stock_pipeline.cli.sync_runner import EMBEDDED_INSTANCE_CONFIG

    Path(env["DAGSTER_HOME"]).mkdir()
    shutil.copy(EMBEDDED_INSTANCE_CONFIG, Path(env["DAGSTER_HOME"]) / "dagster.yaml")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def settings(pipeline_env):
    from stock_pipeline.foundation.settings import load_settings

    return load_settings()


os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")


# --- test tiers -------------------------------------------------------------------------
# `services`: the test needs Postgres or Redis. `make test-fast` (pytest -m "not services")
# deselects these and runs without either. A test is marked when
#   - its fixture closure holds a service fixture (SERVICE_FIXTURES; every fixture built
#     on them, such as `simulator` via `client_id`, is in the closure too), or
#   - the code it runs names a service directly (SERVICE_NAMES): the test function, its
#     fixtures, and the functions of this package those call, followed by name, or
#   - its module says so: `pytestmark = pytest.mark.services`.
# `cli`: that same code starts `python -m stock_pipeline.cli` in a subprocess (run_cli
# and its like). `daemon`, `ui` and `faults` are module markers (one line at the top of
# test_daemon.py, test_ui.py, test_faults.py). The markers are registered in pyproject.toml.

SERVICE_FIXTURES = frozenset(
    {"postgres_url", "redis_url", "client_id", "pipeline_env", "settings", "postgres_dagster_home"}
)
SERVICE_NAMES = frozenset({"scratch_database", "POSTGRES_URL", "REDIS_URL"})
CLI_MODULE = "stock_pipeline.cli"
PACKAGE = __name__.split(".")[0]  # stock_pipeline_tests


def _own_function(obj) -> types.FunctionType | None:
    """`obj` if it is a function written in this package (a fixture: the function under it)."""
    try:
        func = inspect.unwrap(obj) if callable(obj) else None
    except ValueError:  # a __wrapped__ cycle
        return None
    if isinstance(func, types.FunctionType) and (func.__module__ or "").split(".")[0] == PACKAGE:
        return func
    return None


def _names_and_constants(code: types.CodeType) -> tuple[set[str], set[object]]:
    names, constants = set(code.co_names), set()
    for const in code.co_consts:
        if isinstance(const, types.CodeType):  # nested functions, lambdas, comprehensions
            inner_names, inner_constants = _names_and_constants(const)
            names |= inner_names
            constants |= inner_constants
        elif isinstance(const, str):
            constants.add(const)
    return names, constants


def _code_facts(item: pytest.Item) -> tuple[set[str], set[object]]:
    """Names and string constants in the code `item` runs that this package wrote: the test
    function, its fixtures, and the package's functions they call by a global name."""
    roots = [getattr(item, "function", None)]
    fixture_info = getattr(item, "_fixtureinfo", None)
    for definitions in fixture_info.name2fixturedefs.values() if fixture_info else ():
        roots += [getattr(definition, "func", None) for definition in definitions]
    todo = [f for f in map(_own_function, roots) if f]
    seen: set[types.FunctionType] = set()
    names: set[str] = set()
    constants: set[object] = set()
    while todo:
        func = todo.pop()
        if func in seen:
            continue
        seen.add(func)
        own_names, own_constants = _names_and_constants(func.__code__)
        names |= own_names
        constants |= own_constants
        todo += [f for f in (_own_function(func.__globals__.get(name)) for name in own_names) if f]
    return names, constants


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config, items):
    for item in items:
        names, constants = _code_facts(item)
        if SERVICE_FIXTURES & set(getattr(item, "fixturenames", ())) or SERVICE_NAMES & names:
            item.add_marker(pytest.mark.services)
        if CLI_MODULE in constants:
            item.add_marker(pytest.mark.cli)
