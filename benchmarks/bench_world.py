"""The benchmarks' world: the Allegro simulator in a process of its own, seller accounts
with offers, a warehouse that differs from them by a given share, scratch databases,
and the checks of what the offers hold afterwards. Imported by the benchmark scripts
beside it (`python benchmarks/NAME.py` puts this directory on the import path)."""

from __future__ import annotations

import random
import uuid
from contextlib import contextmanager
from multiprocessing.managers import BaseManager

import pandas as pd
import sqlalchemy as sa

from stock_pipeline.core.plan import minimum_calls
from stock_pipeline.core.vocabulary import Action
from stock_pipeline.simulator import AllegroSimulator

CLIENT_SECRET = "bench-secret"
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
        zeros = set(picked[: round(offers * to_zero)])
        for i, (sku, value) in enumerate(zip(skus, stock)):
            if i in zeros:
                value = 0
            elif i in picked:
                value = rng.choice([v for v in (rng.randint(51, 20_000), rng.randint(51, 20_000)) if v != value])
            rows.append((sku, value))
    return world, pd.DataFrame(rows, columns=["sku", "stock"])


def least_calls(world: dict, warehouse: pd.DataFrame, batch_size: int = 1000) -> dict[str, int]:
    """Per account: the minimum number of calls of a full sync (core.plan.minimum_calls)."""
    target = dict(zip(warehouse["sku"], warehouse["stock"]))
    least = {}
    for account, offers in world.items():
        rows = [
            (str(i), o["sku"], o["stock"], target[o["sku"]], Action.END if target[o["sku"]] == 0 else Action.SET)
            for i, o in enumerate(offers)
            if target[o["sku"]] != o["stock"]
        ]
        diff = pd.DataFrame(rows, columns=["offer_id", "sku", "before", "after", "action"])
        diff["action"] = diff["action"].astype(str)
        least[account] = minimum_calls(len(offers), diff, batch_size)
    return least


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
