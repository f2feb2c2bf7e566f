"""The benchmarks' world: the Allegro simulator in a process of its own, seller accounts
with offers, a warehouse that differs from them by a given share, scratch databases,
and the checks of what the offers hold afterwards. Imported by the benchmark scripts
beside it (`python benchmarks/NAME.py` puts this directory on the import path)."""

from __future__ import annotations

import argparse
import random
import tempfile
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from multiprocessing.managers import BaseManager
from pathlib import Path
from typing import Callable

import pandas as pd
import sqlalchemy as sa

from stock_pipeline.core.plan import WriteRates, minimum_calls, plan_cost, plan_seconds, plan_writes
from stock_pipeline.core.vocabulary import Action
from stock_pipeline.simulator import AllegroSimulator

CLIENT_SECRET = "bench-secret"
RATE_PER_MINUTE = 9000  # Allegro's limit per client_id
PATCHES_PER_MINUTE = 2500  # Allegro's PATCH budget per user
OFFER_CHANGES_PER_MINUTE = 9000  # Allegro's budget per user of offers changed by commands
SEED = 2026


# ---- the simulator, in a process of its own --------------------------------------------


class Simulator:
    """What the benchmark asks of the simulator, as methods (a manager proxies methods only)."""

    def __init__(
        self,
        client_id: str,
        latency: float,
        listing_latency: float,
        command_task_delay: float,
        rate_limit_per_minute: int = 9000,
    ):
        self._sim = AllegroSimulator(
            client_id=client_id,
            client_secret=CLIENT_SECRET,
            command_task_delay=command_task_delay,
            rate_limit_per_minute=rate_limit_per_minute,
        ).start()
        self._sim.latency = latency
        self._sim.listing_latency = listing_latency

    def urls(self) -> tuple[str, str]:
        return self._sim.api_url, self._sim.auth_url

    def add_seller(self, login: str, offers: list[dict]) -> tuple[str, list[str]]:
        token = self._sim.add_seller(login)
        return token, self._sim.add_offers(login, offers)

    def offers(self, login: str) -> list[dict]:
        return self._sim.offers(login)

    def reset_requests(self) -> None:
        self._sim.reset_requests()

    def purchase(self, login: str, offer_id: str, quantity: int) -> dict:
        """A buyer buys (the simulator's test-only call, not an API call)."""
        return self._sim.purchase(login, offer_id, quantity)

    def offer_states(self, login: str, skus: list[str]) -> list[dict]:
        """The seller's offers of these SKUs as they are now: id, sku, stock, status."""
        return self._sim.offer_states(login, skus=skus)

    def offer_states_by_id(self, login: str, ids: list[str]) -> list[dict]:
        return self._sim.offer_states(login, ids=ids)

    def api_calls_between(self, start: float, end: float) -> int:
        """Calls to the API (sale and order resources; token exchanges left out) started in [start, end)."""
        return sum(
            1 for r in self._sim.requests if r.path.startswith(("/sale/", "/order/")) and start <= r.started_at < end
        )

    def sale_call_log(self) -> list[tuple[float, int | None, str | None]]:
        """(started_at, status, seller) of every call to the sale API."""
        return [(r.started_at, r.status, r.login) for r in self._sim.requests if r.path.startswith("/sale/")]

    def sale_calls(self) -> dict:
        """Calls to the sale API (token exchanges left out), by status."""
        records = [r for r in self._sim.requests if r.path.startswith("/sale/")]
        return {"calls": len(records), "429": sum(1 for r in records if r.status == 429)}

    def stop(self) -> None:
        self._sim.stop()


class _Manager(BaseManager):
    pass


_Manager.register("Simulator", Simulator)


# ---- the world -------------------------------------------------------------------------


def build_world(accounts: int, offers: int, changed: float, to_zero: float) -> tuple[dict, pd.DataFrame]:
    """Each account's offers (sku, stock) and the warehouse (sku, stock) they should follow."""
    rng = random.Random(SEED)
    world, rows = {}, []
    for a in range(accounts):
        account = f"shop-{a + 1:02d}"
        skus = [f"A{a + 1:02d}-{i:06d}" for i in range(offers)]
        stock = [rng.randint(1, 50) for _ in skus]
        world[account] = [{"sku": s, "stock": v, "status": "ACTIVE"} for s, v in zip(skus, stock)]
        picked = rng.sample(range(offers), round(offers * (changed + to_zero)))
        zeros, changed_ones = set(picked[: round(offers * to_zero)]), set(picked)  # sets: 100 000 offers look up
        for i, (sku, value) in enumerate(zip(skus, stock)):
            if i in zeros:
                value = 0
            elif i in changed_ones:
                value = rng.choice([v for v in (rng.randint(51, 20_000), rng.randint(51, 20_000)) if v != value])
            rows.append((sku, value))
    return world, pd.DataFrame(rows, columns=["sku", "stock"])


@dataclass(frozen=True)
class Floor:
    """What a full sync of the world cannot beat. `seconds`: the fewest calls at the
    client_id's rate, or, where it is longer, the busiest account alone at its per-user
    write budgets with its routes chosen by time (core.plan: PATCHes it would wait for go
    as commands while that is faster); each is a lower bound. `calls`: the calls of the
    plans that floor is reckoned on, the yardstick of calls made: the minimum when the
    client_id's rate binds, the time-routed plans' calls when an account's budget does."""

    seconds: float
    rate_seconds: float
    account_seconds: float
    least_calls: int
    calls: int

    def describe(self) -> str:
        return (
            f"{self.least_calls} calls at {RATE_PER_MINUTE}/min = {self.rate_seconds:.1f} s; the busiest account "
            f"alone at its write budgets ({PATCHES_PER_MINUTE} PATCHes/min): {self.account_seconds:.1f} s"
        )


def account_diffs(world: dict, warehouse: pd.DataFrame) -> dict[str, pd.DataFrame]:
    target = dict(zip(warehouse["sku"], warehouse["stock"]))
    diffs = {}
    for account, offers in world.items():
        rows = [
            (str(i), o["sku"], o["stock"], target[o["sku"]], Action.END if target[o["sku"]] == 0 else Action.SET)
            for i, o in enumerate(offers)
            if target[o["sku"]] != o["stock"]
        ]
        diff = pd.DataFrame(rows, columns=["offer_id", "sku", "before", "after", "action"])
        diff["action"] = diff["action"].astype(str)
        diffs[account] = diff
    return diffs


def sync_floor(world: dict, warehouse: pd.DataFrame, batch_size: int = 1000) -> Floor:
    """The world's Floor (its docstring). Nominal limits, no burst counted: Allegro does not
    say how much of a minute's allowance may come at once."""
    alone = WriteRates(
        calls=RATE_PER_MINUTE / 60, patches=PATCHES_PER_MINUTE / 60, command_offers=OFFER_CHANGES_PER_MINUTE / 60
    )
    least, routed, slowest = 0, 0, 0.0
    for account, diff in account_diffs(world, warehouse).items():
        listing = max(1, -(-len(world[account]) // 1000))
        least += minimum_calls(len(world[account]), diff, batch_size)
        plan = plan_writes(diff.assign(status="ACTIVE"), batch_size, alone)
        routed += listing + plan_cost(plan)[0]
        slowest = max(slowest, plan_seconds(plan, alone))
    rate_seconds = least / (RATE_PER_MINUTE / 60)
    binds = slowest > rate_seconds
    return Floor(max(rate_seconds, slowest), rate_seconds, slowest, least, routed if binds else least)


def patches_needed(world: dict, warehouse: pd.DataFrame) -> dict[str, int]:
    target = dict(zip(warehouse["sku"], warehouse["stock"]))
    return {a: sum(1 for o in offers if 0 != target[o["sku"]] != o["stock"]) for a, offers in world.items()}


def offers_wrong(offers_now: list[dict], warehouse: dict[str, int]) -> int:
    wrong = 0
    for offer in offers_now:
        target = warehouse[offer["sku"]]
        if target == 0:
            wrong += offer["status"] != "ENDED"
        else:
            wrong += offer["status"] != "ACTIVE" or offer["stock"] != target
    return wrong


def print_sync_figures(
    wall: float,
    floor: Floor,
    calls: dict,
    wrong: int,
    *,
    wall_target: float,
    calls_target: float,
) -> bool:
    """Prints a full sync's wall time against its floor (Floor), its calls against the
    floor's calls, its 429s and the offers left wrong; returns whether every target was met."""
    print(f"  wall time              {wall:8.1f} s")
    print(f"  floor                  {floor.seconds:8.1f} s  ({floor.describe()})")
    print(f"  wall / floor           {wall / floor.seconds:8.2f}    (target <= {wall_target:g})")
    ratio = calls["calls"] / floor.calls
    what = "minimum" if floor.calls == floor.least_calls else f"minimum {floor.least_calls}; the floor's plans"
    target = f"(target <= {calls_target:g})"
    print(f"  calls                  {calls['calls']:8d}    {what} {floor.calls}: x{ratio:.2f} {target}")
    print(f"  429 answers            {calls['429']:8d}    (target 0)")
    print(f"  offers wrong after     {wrong:8d}    (target 0)")
    print(f"  calls per second       {calls['calls'] / wall:8.1f}    (limit {RATE_PER_MINUTE / 60:.0f})")
    return wall <= wall_target * floor.seconds and calls["429"] == 0 and ratio <= calls_target and wrong == 0


# ---- services --------------------------------------------------------------------------


@contextmanager
def scratch_database(admin_url: str, label: str):
    name = f"bench_{label}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        from stock_pipeline.store.engine import dispose_engines

        dispose_engines()
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@contextmanager
def simulator_process(client_id: str, latency: float, listing_latency: float, command_task_delay: float, **options):
    """The simulator in a process of its own (a manager's), as a proxy of `Simulator`."""
    manager = _Manager()
    manager.start()
    try:
        sim = manager.Simulator(client_id, latency, listing_latency, command_task_delay, **options)
        try:
            yield sim
        finally:
            sim.stop()
    finally:
        manager.shutdown()


# ---- the pipeline in this process, against that world ---------------------------------


def add_sync_arguments(parser: argparse.ArgumentParser, changed: float, to_zero: float) -> None:
    """The options of a full sync's world: how much changed, how Allegro answers, the services."""
    parser.add_argument("--changed", type=float, default=changed, help="share of SKUs with a new positive value")
    parser.add_argument("--to-zero", type=float, default=to_zero, help="share of SKUs sold out")
    parser.add_argument("--latency", type=float, default=0.15, help="seconds the simulator takes per answer")
    parser.add_argument("--listing-latency", type=float, default=0.3, help="seconds per GET /sale/offers page")
    parser.add_argument("--command-task-delay", type=float, default=1.0, help="seconds before a command's tasks end")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--setting", action="append", default=[], metavar="NAME=VALUE", help="a pipeline setting to override"
    )


@dataclass
class PipelineWorld:
    sim: Simulator  # a proxy of it: the simulator runs in a process of its own
    settings: object  # stock_pipeline.foundation.settings.Settings
    client_id: str
    api_url: str
    auth: object  # stock_pipeline.allegro.auth.AllegroAuth
    dagster_home: Path
    env: dict[str, str]  # the environment `settings` were loaded from: a `stock-pipeline` process's


def scratch_services(stack: ExitStack, postgres_url: str) -> tuple[str, str, Path]:
    """(pipeline database URL, warehouse database URL, DAGSTER_HOME): scratch databases, and a
    temporary Dagster home whose instance is on a third one, all gone when `stack` closes."""
    pipeline_db = stack.enter_context(scratch_database(postgres_url, "pipeline"))
    dagster_db = stack.enter_context(scratch_database(postgres_url, "dagster"))
    stock_db = stack.enter_context(scratch_database(postgres_url, "stock"))
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-dagster-")))
    (home / "dagster.yaml").write_text(
        "storage:\n  postgres:\n    postgres_url: "
        + sa.engine.make_url(dagster_db).set(drivername="postgresql").render_as_string(hide_password=False)
        + "\ntelemetry:\n  enabled: false\n"
    )
    return pipeline_db, stock_db, home


def pipeline_env(
    allegro: tuple[str, str, str], stock_db: str, pipeline_db: str, args: argparse.Namespace, extra: dict
) -> dict[str, str]:
    """The pipeline's environment against a benchmark's world: the simulator's (API URL, auth
    URL, client_id), the scratch databases, Redis, `extra`, then args.setting's overrides."""
    api_url, auth_url, client_id = allegro
    return {
        "ALLEGRO_API_URL": api_url,
        "ALLEGRO_AUTH_URL": auth_url,
        "ALLEGRO_CLIENT_ID": client_id,
        "ALLEGRO_CLIENT_SECRET": CLIENT_SECRET,
        "STOCK_DATABASE_URL": stock_db,
        "STOCK_PIPELINE_DATABASE_URL": pipeline_db,
        "REDIS_URL": args.redis_url,
        "TOKEN_ENCRYPTION_KEY": "YmVuY2htYXJrLW9ubHkta2V5LW5vdC1hLXNlY3JldDA=",
        **extra,
    } | dict(setting.split("=", 1) for setting in args.setting)


@contextmanager
def pipeline_world(world: dict, fill_warehouse: Callable[[str], None], args: argparse.Namespace):
    """The simulator holding the world's sellers and offers; scratch databases for the
    pipeline, the Dagster instance and the warehouse (filled by `fill_warehouse(url)`); a
    temporary DAGSTER_HOME on that Postgres instance; the settings of a `stock-pipeline
    sync` against all of it (with args.setting's overrides), and every account registered
    with its tokens. `args`: add_sync_arguments' options and --postgres-url."""
    client_id = f"bench-{uuid.uuid4().hex[:10]}"
    with ExitStack() as stack:
        sim = stack.enter_context(
            simulator_process(client_id, args.latency, args.listing_latency, args.command_task_delay)
        )
        api_url, auth_url = sim.urls()
        pipeline_db, stock_db, home = scratch_services(stack, args.postgres_url)
        fill_warehouse(stock_db)

        from stock_pipeline.allegro.auth import AllegroAuth
        from stock_pipeline.foundation.logs import configure_logging
        from stock_pipeline.foundation.settings import load_settings
        from stock_pipeline.store.accounts import AccountStore
        from stock_pipeline.store.engine import engine_for

        configure_logging(json=False, terminal_level=40)  # errors only: the figures are the output
        env = pipeline_env((api_url, auth_url, client_id), stock_db, pipeline_db, args, {"DAGSTER_HOME": str(home)})
        settings = load_settings(env)
        store = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher())
        auth = AllegroAuth(auth_url, client_id, CLIENT_SECRET)
        for account, offers in world.items():
            refresh_token, _ = sim.add_seller(account, offers)
            store.save_tokens(account, auth.refresh(refresh_token))
        yield PipelineWorld(sim, settings, client_id, api_url, auth, home, env)
