"""The write engine with many calls in flight, against the simulator over real HTTP and
the real audit in Postgres: calls overlap, yet an offer never has two writes in flight,
ACTIVATE follows its offer's confirmed quantity, every row is `sent` before its call,
and a run stopped midway leaves no success Allegro did not report."""

from __future__ import annotations

import json
import re
import threading
import time
import uuid
from dataclasses import dataclass, field

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.allegro.client import AllegroClient, WriteBudgets
from stock_pipeline.core.plan import PLAN_COLUMNS
from stock_pipeline.engine.apply_writes import PollPolicy, WriteApplier
from stock_pipeline.rate_limit import RateSpec, build_limiter
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.ended_offers import EndedOffers
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.schema import writes
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import register_account

ACCOUNT = "shop-a"
PATCH_PATH = re.compile(r"^/sale/product-offers/([^/]+)(/operations/.+)?$")


class Stopped(BaseException):
    """What the recording transport raises to stop a run midway, as an interrupt would."""


@dataclass
class Exchange:
    method: str
    path: str
    offer_ids: list[str]  # the offers the request acts on or asks about (none for a command's tasks)
    started: float
    ended: float = 0.0
    status: int | None = None  # None: the client never got the answer
    succeeded: set[str] = field(default_factory=set)  # offers a task report calls SUCCESS


class RecordingTransport(httpx.BaseTransport):
    """The client's real transport, recording each exchange with its times, the most
    requests in flight at once, and any offer with two requests in flight at once.
    `latency` stands for Allegro's answer time; `before_write` runs as a write goes out."""

    def __init__(self, latency: float = 0.02, before_write=None, stop_after_writes: int | None = None):
        self._inner = httpx.HTTPTransport()
        self._latency = latency
        self._before_write = before_write
        self._stop_after_writes = stop_after_writes
        self._lock = threading.Lock()
        self._busy: dict[str, int] = {}
        self._in_flight = 0
        self.most_in_flight = 0
        self.overlaps: list[str] = []
        self.exchanges: list[Exchange] = []
        self.writes_out = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        exchange = Exchange(request.method, request.url.path, _offers_of(request), time.monotonic())
        is_write = request.method in ("PUT", "PATCH")
        with self._lock:
            self.exchanges.append(exchange)
            self._in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self._in_flight)
            for offer_id in exchange.offer_ids:
                if self._busy.get(offer_id):
                    self.overlaps.append(f"{request.method} {request.url.path} while {offer_id} was busy")
                self._busy[offer_id] = self._busy.get(offer_id, 0) + 1
            self.writes_out += is_write
            stop = is_write and self.writes_out - 1 == self._stop_after_writes
        try:
            if is_write and self._before_write:
                self._before_write(request.method, exchange.offer_ids)
            time.sleep(self._latency)
            response = self._inner.handle_request(request)
            response.read()
            if stop:  # Allegro got it and acted; the client never hears the answer
                raise Stopped(request.url.path)
            exchange.status = response.status_code
            if request.url.path.endswith("/tasks") and response.status_code == 200:
                tasks = response.json().get("tasks") or []
                exchange.succeeded = {t["offer"]["id"] for t in tasks if t.get("status") == "SUCCESS"}
            return response
        finally:
            exchange.ended = time.monotonic()
            with self._lock:
                self._in_flight -= 1
                for offer_id in exchange.offer_ids:
                    self._busy[offer_id] -= 1

    def close(self) -> None:
        self._inner.close()


def _offers_of(request: httpx.Request) -> list[str]:
    match = PATCH_PATH.match(request.url.path)
    if match:
        return [match.group(1)]
    if request.method == "PUT":
        criteria = json.loads(request.content)["offerCriteria"]
        return [o["id"] for c in criteria for o in c["offers"]]
    return []


@pytest.fixture
def engine_parts(settings, simulator):
    """Builds (applier, transport) pairs for the account `shop-a`, closing their clients after."""
    register_account(settings, simulator, ACCOUNT)
    engine = engine_for(settings.stock_pipeline_database_url)
    clients = []

    def build(
        transport: RecordingTransport, concurrency: int = 8, run_id: str | None = None, write_budgets=None
    ) -> WriteApplier:
        tokens = AccountStore(engine, settings.token_cipher()).tokens_for(
            ACCOUNT,
            AllegroAuth(settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret),
        )
        limiter = build_limiter(
            settings.redis_url, f"allegro:rate:{settings.allegro_client_id}", [RateSpec(60_000, 60.0)]
        )
        client = AllegroClient(
            settings.allegro_api_url,
            tokens,
            limiter,
            retry_count=3,
            retry_delay=0.05,
            timeout=5.0,
            account=ACCOUNT,
            http=httpx.Client(transport=transport, timeout=5.0),
            write_budgets=write_budgets,
        )
        clients.append(client)
        return WriteApplier(
            client,
            WritesLog(engine),
            run_id=run_id or str(uuid.uuid4()),
            account=ACCOUNT,
            poll=PollPolicy(first_poll_after=0.05, max_interval=0.2, timeout=10.0),
            ended_offers=EndedOffers(engine),
            concurrency=concurrency,
        )

    yield build
    for client in clients:
        client.close()


def plan_rows(rows: list[dict]) -> pd.DataFrame:
    """A plan (core/plan.PLAN_COLUMNS) from rows with offer_id, before, after, action, method, batch."""
    frame = pd.DataFrame([{"sku": f"sku-{r['offer_id']}", **r} for r in rows], columns=PLAN_COLUMNS)
    return frame.astype({"offer_id": "string", "sku": "string", "action": "string", "method": "string"})


def patches(offer_ids: list[str], start: int = 2) -> list[dict]:
    """A PATCH per offer, each with its own value (so a plan would never group them)."""
    return [
        dict(offer_id=o, before=1, after=start + i, action="set", method="patch", batch=-1)
        for i, o in enumerate(offer_ids)
    ]


def audit(settings, run_id: str) -> pd.DataFrame:
    return WritesLog(engine_for(settings.stock_pipeline_database_url)).history(run_id=run_id, limit=100_000)


def test_calls_overlap_but_never_two_for_one_offer_and_each_is_sent_before_it_goes(settings, simulator, engine_parts):
    offer_ids = simulator.add_offers(ACCOUNT, [{"sku": f"s{i}", "stock": 1} for i in range(120)])
    simulator.patch_async_probability = 0.5  # half answer 202: their operations are polled too
    plan = plan_rows(patches(offer_ids))
    run_id = str(uuid.uuid4())
    engine = engine_for(settings.stock_pipeline_database_url)
    not_sent_first: list[str] = []

    def row_is_sent(method: str, offers: list[str]) -> None:
        with engine.connect() as conn:
            statuses = conn.execute(
                sa.select(writes.c.status).where(writes.c.run_id == run_id, writes.c.offer_id.in_(offers))
            ).scalars()
            not_sent_first.extend(s for s in statuses if s != "sent")

    transport = RecordingTransport(before_write=row_is_sent)
    results = engine_parts(transport, concurrency=8, run_id=run_id).apply(plan)

    assert transport.most_in_flight > 1  # the pool did overlap calls
    assert transport.most_in_flight <= 8
    assert transport.overlaps == []
    assert not_sent_first == []
    assert set(results["status"]) == {"success"}
    assert set(audit(settings, run_id)["status"]) == {"success"}
    assert any("/operations/" in e.path for e in transport.exchanges)
    for offer_id, after in zip(offer_ids, plan["after"]):
        assert simulator.offer(offer_id)["stock"] == after


def test_activate_goes_only_after_its_quantity_was_confirmed(settings, simulator, engine_parts):
    ended = simulator.add_offers(ACCOUNT, [{"sku": f"e{i}", "stock": 0, "status": "ENDED"} for i in range(60)])
    by_command, by_patch, locked = ended[:30], ended[30:55], ended[55:]
    simulator.lock_offers(locked)  # their quantity fails, so they must not be activated
    simulator.patch_async_probability = 0.5
    quantity = [  # two quantity commands (values 5 and 7), and a PATCH each for the rest
        dict(offer_id=o, before=0, after=5 + 2 * (i % 2), action="set", method="quantity_command", batch=i % 2)
        for i, o in enumerate(by_command)
    ] + patches(by_patch + locked, start=3)
    activate = [
        dict(offer_id=o, before=0, after=0, action="activate", method="publication_command", batch=2 + i // 20)
        for i, o in enumerate(ended)
    ]
    transport = RecordingTransport()
    results = engine_parts(transport, concurrency=8).apply(plan_rows(quantity + activate))

    confirmed_at: dict[str, float] = {}  # when the client first heard an offer's quantity is in place
    for e in transport.exchanges:
        heard = e.succeeded if e.path.endswith("/tasks") else set()
        if (
            e.method == "PATCH"
            and e.status == 200
            or e.method == "GET"
            and "/operations/" in e.path
            and e.status == 303
        ):
            heard = set(e.offer_ids)
        for offer_id in heard:
            confirmed_at[offer_id] = min(confirmed_at.get(offer_id, e.ended), e.ended)
    activations = [
        e for e in transport.exchanges if e.method == "PUT" and "publication" in e.path and e.status is not None
    ]
    activated = [o for e in activations for o in e.offer_ids]
    assert sorted(activated) == sorted(by_command + by_patch)
    for e in activations:
        for offer_id in e.offer_ids:
            assert confirmed_at[offer_id] <= e.started, offer_id
    status = dict(zip(zip(results["offer_id"], results["action"]), results["status"]))
    assert {status[(o, "activate")] for o in locked} == {"not_sent"}
    assert {status[(o, "activate")] for o in by_command + by_patch} == {"success"}
    assert {simulator.offer(o)["status"] for o in by_command + by_patch} == {"ACTIVE"}
    assert transport.overlaps == []


def test_commands_and_their_polls_are_not_queued_behind_patches_waiting_on_their_budget(
    settings, simulator, engine_parts
):
    """An account's PATCH budget is far below the client_id's rate: PATCHes waiting for it
    must not hold every worker while commands could go and be polled (core/plan.py routes
    values by command for exactly that time)."""
    offer_ids = simulator.add_offers(ACCOUNT, [{"sku": f"s{i}", "stock": 1} for i in range(30)])
    by_patch, by_command = offer_ids[:20], offer_ids[20:]
    commands = [
        dict(offer_id=o, before=1, after=100 + i, action="set", method="quantity_command", batch=i)
        for i, o in enumerate(by_command)
    ]
    key = f"test:{uuid.uuid4().hex}"
    budgets = WriteBudgets(
        offer_changes=build_limiter(settings.redis_url, f"{key}:changes", [RateSpec(60_000, 60.0)]),
        patches=build_limiter(settings.redis_url, f"{key}:patches", [RateSpec(240, 60.0)]),  # 4/s: 20 take ~5 s
    )
    transport = RecordingTransport()
    results = engine_parts(transport, concurrency=8, write_budgets=budgets).apply(
        plan_rows(patches(by_patch) + commands)
    )

    assert set(results["status"]) == {"success"}
    patch_starts = [e.started for e in transport.exchanges if e.method == "PATCH"]
    polls = [e for e in transport.exchanges if e.path.endswith("/tasks")]
    settled = max(e.ended for e in polls)
    # Every command was sent, polled and confirmed while PATCHes were still going out.
    assert settled < max(patch_starts) - 1.0, (settled, max(patch_starts))
    for offer_id, row in zip(by_command, commands):
        assert simulator.offer(offer_id)["stock"] == row["after"]


def test_a_run_stopped_midway_claims_no_success_allegro_did_not_report(settings, simulator, engine_parts):
    offer_ids = simulator.add_offers(ACCOUNT, [{"sku": f"s{i}", "stock": 1} for i in range(200)])
    plan = plan_rows(patches(offer_ids))
    run_id = str(uuid.uuid4())
    transport = RecordingTransport(stop_after_writes=40)  # the 41st write reaches Allegro, its answer is lost

    with pytest.raises(Stopped):
        engine_parts(transport, concurrency=8, run_id=run_id).apply(plan)

    history = audit(settings, run_id).set_index("offer_id")
    answered = {e.offer_ids[0] for e in transport.exchanges if e.method == "PATCH" and e.status == 200}
    reached_allegro = {e.offer_ids[0] for e in transport.exchanges if e.method == "PATCH"}
    assert set(history["status"]) <= {"planned", "sent", "success"}
    succeeded = set(history.index[history["status"] == "success"])
    assert succeeded <= answered  # a success only where Allegro's 200 reached the client …
    assert answered <= succeeded  # … and every 200 that did is stored before the error goes on
    unanswered = reached_allegro - answered
    assert unanswered and set(history.loc[sorted(unanswered), "status"]) == {"sent"}
    never_sent = set(offer_ids) - reached_allegro
    assert never_sent and set(history.loc[sorted(never_sent), "status"]) == {"planned"}
    for offer_id in succeeded:  # and what it calls success is what Allegro has
        assert simulator.offer(offer_id)["stock"] == history.loc[offer_id, "after"]


def test_a_plan_with_two_writes_of_one_offer_in_a_phase_is_refused_before_any_call(settings, simulator, engine_parts):
    [offer_id] = simulator.add_offers(ACCOUNT, [{"sku": "s", "stock": 1}])
    twice = patches([offer_id, offer_id])
    transport = RecordingTransport()
    with pytest.raises(ValueError, match="more than one write in a phase"):
        engine_parts(transport).apply(plan_rows(twice))
    assert transport.exchanges == []
