"""Helpers shared by the test modules: plain functions and classes, no fixtures (those are
in conftest.py). Test modules import helpers from here, never from conftest.py or from
another test module.

Assertions in this module are rewritten by pytest (conftest.py registers it), so a
failing `assert` here reports its values as one in a test would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

import pytest
import sqlalchemy as sa

from stock_pipeline_tests.services import POSTGRES_URL

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
WRITE_ROUTES = ("/sale/product-offers/", "/sale/offer-quantity-change-commands/", "/sale/offer-publication-commands/")


# --- Postgres -------------------------------------------------------------------------


@contextmanager
def scratch_database(driver: str = "postgresql+psycopg"):
    """A database created for one test and dropped afterwards; yields its URL."""
    name = f"sp_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield (
            sa.engine.make_url(POSTGRES_URL).set(drivername=driver, database=name).render_as_string(hide_password=False)
        )
    finally:
        from stock_pipeline.store.engine import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


# --- the warehouse, accounts and tokens -----------------------------------------------


def write_stock(url: str, rows: list[tuple]) -> None:
    """Replaces the warehouse's `products` rows (the `stock_db` fixture's table) with `rows`."""
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM products"))
        if rows:
            conn.execute(
                sa.text("INSERT INTO products (sku, stock) VALUES (:sku, :stock)"),
                [{"sku": s, "stock": v} for s, v in rows],
            )
    engine.dispose()


def allegro_auth(settings):
    """The OAuth client the pipeline builds from `settings`."""
    from stock_pipeline.allegro.auth import AllegroAuth

    return AllegroAuth(settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret)


def register_account(settings, simulator, name: str) -> None:
    """The same exchange as `stock-pipeline accounts add NAME --refresh-token …`."""
    from stock_pipeline.store.accounts import AccountStore
    from stock_pipeline.store.engine import engine_for

    refresh = simulator.add_seller(name)
    auth = allegro_auth(settings)
    store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
    store.save_tokens(name, auth.refresh(refresh))
    auth.close()


def expire_stored_token(database_url: str, name: str) -> str:
    """Marks the account's stored access token expired; returns that token."""
    from stock_pipeline.store.engine import engine_for
    from stock_pipeline.store.schema import accounts

    engine = engine_for(database_url)
    with engine.begin() as conn:
        conn.execute(
            accounts.update()
            .where(accounts.c.name == name)
            .values(access_expires_at=datetime.now(timezone.utc) - timedelta(minutes=1))
        )
        return conn.execute(sa.select(accounts.c.access_token).where(accounts.c.name == name)).scalar_one()


# --- the simulator ----------------------------------------------------------------------


def seed(simulator, account: str, offers: list[tuple]) -> list[str]:
    """Adds (sku, stock, status) offers to `account`; returns their ids."""
    return simulator.add_offers(account, [{"sku": s, "stock": v, "status": st} for s, v, st in offers])


def listing_items(simulator, account):
    """The account's offers as GET /sale/offers lists them."""
    return [
        {
            "id": o["id"],
            "external": {"id": o["sku"]} if o["sku"] else None,
            "stock": {"available": o["stock"]},
            "publication": {"status": o["status"]},
        }
        for o in simulator.offers(account)
    ]


def write_requests(simulator, login=None):
    """The stock and publication writes the simulator received (of one seller, with `login`)."""
    return [
        r
        for r in simulator.requests
        if r.method in ("PUT", "PATCH") and r.path.startswith(WRITE_ROUTES) and (login is None or r.login == login)
    ]


def token_requests(simulator) -> int:
    return sum(1 for r in simulator.requests if r.path.endswith("/auth/oauth/token"))


def assert_every_offer_right(simulator, account, warehouse, before):
    """Every offer of `account` is what a sync to `warehouse` ({sku: stock}) leaves from `before`."""
    for offer in simulator.offers(account):
        was = before[offer["id"]]
        if not was["sku"] or was["sku"] not in warehouse or was["status"] != "ACTIVE":
            assert (offer["stock"], offer["status"]) == (was["stock"], was["status"]), offer
        elif warehouse[was["sku"]] == 0:
            assert offer["status"] == "ENDED", offer
        else:
            assert offer["stock"] == warehouse[was["sku"]] and offer["status"] == "ACTIVE", offer


def send_failure_alert(defs, instance, run) -> None:
    """Evaluates the run-failure sensor for `run`, as the daemon would."""
    from dagster import build_run_status_sensor_context

    telegram_on_run_failure = defs.resolve_sensor_def("telegram_on_run_failure")
    failure = next(
        e
        for e in instance.all_logs(run.run_id)
        if e.dagster_event and e.dagster_event.event_type_value == "PIPELINE_FAILURE"
    )
    # A context manager, as Dagster opens it: the resources hold the Settings as a nested
    # resource (stock_pipeline/defs/resources.py), which Dagster sets up inside a `with`.
    with build_run_status_sensor_context(
        sensor_name="telegram_on_run_failure",
        dagster_event=failure.dagster_event,
        dagster_instance=instance,
        dagster_run=run,
        resources={name: defs.resources[name] for name in ("telegram", "allegro", "pipeline_db")},
    ) as context:
        return telegram_on_run_failure(context.for_run_failure())


# --- processes --------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`stock-pipeline ARGS…` in a subprocess with this process's environment (tests that
    call it are marked `cli` by conftest.py)."""
    return subprocess.run(
        [sys.executable, "-m", "stock_pipeline.cli", *args],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=300,
    )


def dagster_bin(name: str) -> str:
    """A command installed beside this Python (`dagster`, `dagster-daemon`, …)."""
    return str(BIN / name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DagsterProcess:
    """A Dagster command in its own process group (its code servers and run workers
    are children), its output in a file; `stop()` ends the whole group."""

    def __init__(self, args: list[str], log_path: Path):
        self.args = args
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            args,
            cwd=REPO,
            env=os.environ.copy(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def tail(self, lines: int = 60) -> str:
        with self.log_path.open(errors="replace") as handle:
            return "".join(deque(handle, maxlen=lines))

    def report(self) -> str:
        state = "running" if self.proc.poll() is None else f"exited with {self.proc.returncode}"
        return f"--- {Path(self.args[0]).name} ({state}), last lines of {self.log_path} ---\n{self.tail()}"

    def stop(self) -> None:
        """SIGTERM to the group (the daemon stops its code server), then SIGKILL to whatever is left."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass  # the whole group has exited
        self.proc.wait()
        self._log.close()


def wait_for(what: str, check: Callable[[], object], timeout: float, process: DagsterProcess, interval: float = 1.0):
    """Polls `check` until it returns something truthy; fails with the process's log."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if process.proc.poll() is not None:
            pytest.fail(f"{what}: the process died\n{process.report()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s\n{process.report()}")
        time.sleep(interval)
