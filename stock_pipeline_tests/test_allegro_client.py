"""The HTTP client against the simulator: paging, headers, retries, 401 handling, typed errors."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pandas as pd
import pytest
import redis

from stock_pipeline.allegro.auth import AllegroAuth
from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.allegro.http import error_detail, json_body
from stock_pipeline.core.diff import offers_frame
from stock_pipeline.defs.account_steps import read_offer_map
from stock_pipeline.foundation.errors import (
    AllegroApiError,
    AllegroOfferNotFoundError,
    AllegroRateLimitError,
    AllegroSyncError,
    OfferEventsCursorExpiredError,
)
from stock_pipeline.rate_limit import RateSpec, RedisTokenBucket, build_limiter
from stock_pipeline.store.accounts import AccountStore
from stock_pipeline.store.engine import engine_for
from stock_pipeline_tests.helpers import register_account


@pytest.fixture
def make_client(settings, simulator):
    register_account(settings, simulator, "shop-a")
    clients = []

    def build(retry_count=3, timeout=5.0, rate=6000, pause=0.2, concurrency=1, limiter=None):
        tokens = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).tokens_for(
            "shop-a", AllegroAuth(settings.allegro_auth_url, settings.allegro_client_id, settings.allegro_client_secret)
        )
        limiter = limiter or build_limiter(
            settings.redis_url, f"allegro:rate:{settings.allegro_client_id}", [RateSpec(limit=rate, period_seconds=60)]
        )
        client = AllegroClient(
            settings.allegro_api_url,
            tokens,
            limiter,
            retry_count=retry_count,
            retry_delay=0.02,
            timeout=timeout,
            rate_limit_pause=pause,
            account="shop-a",
            concurrency=concurrency,
        )
        clients.append(client)
        return client

    yield build
    for client in clients:
        client.close()


def all_offers(client):
    return [o for page, _ in client.iter_offer_pages() for o in page]


def test_listing_pages_by_1000_and_stops_at_total_count(make_client, simulator):
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(2000)])
    client = make_client()
    simulator.reset_requests()
    offers = all_offers(client)
    assert len({o["id"] for o in offers}) == 2000
    listing = [r for r in simulator.requests if r.path == "/sale/offers"]
    assert [r.query["offset"] for r in listing] == [["0"], ["1000"]]  # no third, empty call
    assert client.stats.total == 2


def test_every_call_carries_vendor_media_type_and_user_agent(make_client, simulator):
    simulator.add_offers("shop-a", [{"sku": "S", "stock": 1}])
    client = make_client()
    [offer] = all_offers(client)
    client.put_quantity_command(str(uuid.uuid4()), 3, [offer["id"]])
    client.patch_stock(offer["id"], 4)
    assert simulator.spec_violations == []
    for r in simulator.requests:
        if r.path.startswith("/sale/"):
            assert r.headers["accept"] == "application/vnd.allegro.public.v1+json"
            assert r.headers["user-agent"].startswith("stock_pipeline/")
            if r.body is not None:
                assert r.headers["content-type"] == "application/vnd.allegro.public.v1+json"


@pytest.mark.parametrize("kind", ["500", "503", "timeout", "drop", "429"])
def test_transient_faults_are_retried_until_the_listing_is_complete(make_client, simulator, kind):
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(3000)])
    simulator.fault_timeout_seconds = 1.0
    client = make_client(retry_count=8, timeout=0.5)
    simulator.set_faults(rate=0.3, kinds=(kind,), seed=7)
    offers = all_offers(client)
    simulator.clear_faults()
    assert len({o["id"] for o in offers}) == 3000
    assert client.stats.retries > 0


def test_a_faulted_write_retried_with_the_same_command_id_applies_once(make_client, simulator):
    [offer_id] = simulator.add_offers("shop-a", [{"sku": "S", "stock": 1}])
    client = make_client(retry_count=10)
    simulator.set_faults(rate=0.5, kinds=("500", "drop"), seed=3)
    command_id = str(uuid.uuid4())
    client.put_quantity_command(command_id, 7, [offer_id])
    simulator.clear_faults()
    time.sleep(0.2)
    tasks = client.command_tasks("offer-quantity-change-commands", command_id)
    assert [t["status"] for t in tasks] == ["SUCCESS"]
    assert simulator.offer(offer_id)["stock"] == 7


def test_retries_run_out_into_a_typed_error(make_client, simulator):
    client = make_client(retry_count=1)
    simulator.set_faults(rate=1.0, kinds=("429",), seed=1)
    with pytest.raises(AllegroRateLimitError):
        client.list_offers_page(0)
    assert client.stats.rate_limited == 2


def test_retry_after_on_429_is_honoured(settings, client_id):
    from stock_pipeline.simulator import AllegroSimulator

    with AllegroSimulator(
        client_id=client_id, client_secret="test-secret", rate_limit_per_minute=2, block_seconds=1.0
    ) as strict:
        strict.send_retry_after = True
        refresh = strict.add_seller("shop-a")
        auth = AllegroAuth(strict.auth_url, client_id, "test-secret")
        AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).save_tokens(
            "shop-a", auth.refresh(refresh)
        )
        tokens = AccountStore(engine_for(settings.stock_pipeline_database_url), settings.token_cipher()).tokens_for(
            "shop-a", auth
        )
        client = AllegroClient(
            strict.api_url,
            tokens,
            build_limiter(None, "k", [RateSpec(6000, 60)]),
            retry_count=1,
            retry_delay=0.01,
            rate_limit_pause=0.0,
        )
        client.list_offers_page(0)
        client.list_offers_page(0)
        started = time.monotonic()
        with pytest.raises(AllegroRateLimitError):
            client.list_offers_page(0)  # over the limit: 429 with Retry-After: 1, then once more
        assert time.monotonic() - started >= 0.9  # waited as told, not the 0.01 s backoff
        client.close()


def test_expired_access_token_mid_run_gets_one_refresh_and_the_call_is_retried(make_client, simulator):
    simulator.add_offers("shop-a", [{"sku": "S", "stock": 1}])
    client = make_client()
    all_offers(client)
    simulator.expire_access_tokens("shop-a")
    simulator.reset_requests()
    assert len(all_offers(client)) == 1
    token_calls = [r for r in simulator.requests if r.path.endswith("/token")]
    assert len(token_calls) == 1


def test_unknown_offer_and_rejected_values_raise_typed_errors(make_client, simulator):
    client = make_client()
    with pytest.raises(AllegroOfferNotFoundError):
        client.patch_stock("999999999", 3)
    with pytest.raises(ValueError, match="1..99999"):
        client.put_quantity_command(str(uuid.uuid4()), 0, ["1"])
    [offer_id] = simulator.add_offers("shop-a", [{"sku": "S", "stock": 1}])
    with pytest.raises(AllegroApiError) as info:
        client.request(
            "PATCH", f"/sale/product-offers/{offer_id}", route="PATCH", json={"stock": {"available": 100_000}}
        )
    assert info.value.status in (400, 422)


def test_bodies_are_decoded_as_json_and_one_that_is_not_raises_value_error():
    page = httpx.Response(200, content='{"offers": [{"id": "1", "name": "Łódź"}], "totalCount": 1}'.encode())
    assert json_body(page) == {"offers": [{"id": "1", "name": "Łódź"}], "totalCount": 1}
    # A proxy's HTML page answered 200: not JSON, as json.loads would say (JSONDecodeError).
    proxy_page = httpx.Response(200, content=b"<html>Gateway</html>")
    with pytest.raises(json.JSONDecodeError):
        json_body(proxy_page)
    with pytest.raises(ValueError):
        json_body(httpx.Response(200, content=b""))
    # An error answer that is not JSON is shown as its text.
    assert error_detail(httpx.Response(502, content=b"<html>Bad gateway</html>")) == "<html>Bad gateway</html>"


def test_a_429_slows_every_process_sharing_the_client_id(make_client, simulator):
    first, second = make_client(retry_count=0, pause=1.0), make_client(retry_count=0, pause=1.0)
    simulator.set_faults(rate=1.0, kinds=("429",), seed=1)
    with pytest.raises(AllegroRateLimitError):
        first.list_offers_page(0)
    simulator.clear_faults()
    started = time.monotonic()
    second.list_offers_page(0)  # another client on the same Redis bucket
    assert time.monotonic() - started >= 0.9


# ---- concurrent listing ------------------------------------------------------------------------


def most_in_flight(records) -> int:
    """The most requests the simulator was handling at one moment."""
    edges = sorted([(r.started_at, 1) for r in records] + [(r.answered_at, -1) for r in records])
    in_flight = peak = 0
    for _, step in edges:
        in_flight += step
        peak = max(peak, in_flight)
    return peak


def test_concurrent_listing_gets_every_offer_once_in_offset_order(make_client, simulator):
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(3500)])
    client = make_client(concurrency=4)
    simulator.listing_latency = 0.1  # long enough for the pages to be seen overlapping
    simulator.reset_requests()
    pages = list(client.iter_offer_pages())

    listed = [offer["id"] for page, _ in pages for offer in page]
    assert listed == [offer["id"] for offer in simulator.offers("shop-a")]  # each once, in listing order
    assert [total for _, total in pages] == [3500] * 4
    listing = [r for r in simulator.requests if r.path == "/sale/offers"]
    assert sorted(int(r.query["offset"][0]) for r in listing) == [0, 1000, 2000, 3000]  # no extra call
    assert most_in_flight(listing) == 3  # the three pages after the first, at once
    assert client.stats.by_route["GET /sale/offers"] == 4


def test_the_listing_as_columns_is_the_listing_of_whole_items(make_client, simulator):
    statuses = ("ACTIVE", "ENDED", "INACTIVE", "ACTIVATING")
    offers = [{"sku": f" S{i} " if i % 7 else None, "stock": i % 5, "status": statuses[i % 4]} for i in range(2500)]
    simulator.add_offers("shop-a", offers)
    client = make_client(concurrency=4)
    items = [(offers_frame(page), total) for page, total in client.iter_offer_pages()]
    columns = list(client.iter_offer_frames())
    assert [total for _, total in columns] == [total for _, total in items] == [2500] * 3
    for (frame, _), (expected, _) in zip(columns, items):
        pd.testing.assert_frame_equal(frame, expected)
    assert columns[0][0]["sku"].isna().any() and columns[0][0]["sku"].iloc[1] == "S1"


def test_offers_created_while_listing_are_listed_to_the_new_end(make_client, simulator):
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(2500)])
    pages = make_client(concurrency=4).iter_offer_frames()
    first, total = next(pages)
    assert (len(first), total) == (1000, 2500)
    simulator.add_offers("shop-a", [{"sku": f"N{i}", "stock": 1} for i in range(600)])  # at the end of the listing

    offer_map = read_offer_map("shop-a", [(first, total), *pages])
    assert offer_map.complete and offer_map.listed == offer_map.total_count == 3100


def test_offers_deleted_while_listing_leave_it_partial(make_client, simulator):
    """Deleted offers shift the later pages back: the offers that slide onto a page already
    listed are missed. The later pages' smaller totalCount must not make that look complete."""
    ids = simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(3000)])
    pages = make_client(concurrency=4).iter_offer_frames()
    first, total = next(pages)
    simulator.remove_offers(ids[:10])  # already listed on the first page

    offer_map = read_offer_map("shop-a", [(first, total), *pages])
    assert offer_map.listed == 2990  # 10 deleted ones listed, 10 live ones (ids[1000:1010]) missed
    assert not offer_map.complete and offer_map.total_count == 3000


def test_a_failed_page_fails_the_listing_and_sends_no_queued_page(make_client, simulator):
    simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": 1} for i in range(20_000)])
    client = make_client(concurrency=2, retry_count=0)
    pages = client.iter_offer_pages()
    next(pages)
    simulator.set_faults(rate=1.0, kinds=("500",), seed=1, paths=("/sale/offers",), count=1)
    simulator.reset_requests()
    with pytest.raises(AllegroSyncError):
        list(pages)
    # Pages are asked for 2 x concurrency ahead of the one yielded: the 500 hits one of the
    # first two in flight, so at most 5 pages were asked for, not the 19 left.
    assert len([r for r in simulator.requests if r.path == "/sale/offers"]) <= 5


# ---- a 429 pauses every worker ------------------------------------------------------------------


class PenaltyClock(RedisTokenBucket):
    """The real Redis bucket, noting when a 429 made a client pause it (time.time())."""

    def __init__(self, *args):
        super().__init__(*args)
        self.penalised_at: list[float] = []

    def penalise(self, seconds: float) -> None:
        self.penalised_at.append(time.time())
        super().penalise(seconds)


def test_after_a_429_no_worker_sends_until_the_pause_ends(make_client, simulator, settings):
    """Six workers in two processes (two buckets, two Redis connections, one key), paced a
    slot every 0.1 s: the first request gets a 429 while the others sleep on their slots."""
    pause = 0.5
    spec = [RateSpec(limit=600, period_seconds=60, burst=1)]
    key = f"allegro:rate:{settings.allegro_client_id}"
    buckets = [PenaltyClock(redis.Redis.from_url(settings.redis_url), key, spec) for _ in range(2)]
    clients = [make_client(pause=pause, limiter=bucket) for bucket in buckets]
    for client in clients:
        client.list_offers_page(0)  # tokens fetched, connections open: only the listing is timed below
    redis.Redis.from_url(settings.redis_url).delete(key)
    simulator.set_faults(rate=1.0, kinds=("429",), seed=1, count=1)
    simulator.reset_requests()

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(lambda worker: clients[worker % 2].list_offers_page(0), range(6)))

    [penalised_at] = [moment for bucket in buckets for moment in bucket.penalised_at]
    started = sorted(r.started_at for r in simulator.requests)
    assert [r.status for r in simulator.requests].count(429) == 1 and len(started) == 7  # 6 and the retry
    assert started[0] < penalised_at  # the refused request
    assert [moment for moment in started[1:] if moment < penalised_at + pause] == []


# ---- offers by id and the event journals ---------------------------------------------------------


def test_offers_by_id_reads_listing_items_in_chunks_at_once(make_client, simulator):
    ids = simulator.add_offers("shop-a", [{"sku": f"S{i}", "stock": i + 1} for i in range(250)])
    simulator.add_seller("shop-b")
    (foreign,) = simulator.add_offers("shop-b", [{"sku": "S1", "stock": 1}])
    client = make_client(concurrency=4)
    simulator.listing_latency = 0.1
    simulator.reset_requests()

    wanted = ids[::-1] + [ids[0], foreign, "404"]  # repeats, another account's and a gone offer
    offers = client.offers_by_id(wanted)
    assert sorted(offer["id"] for offer in offers) == sorted(ids)
    frame = offers_frame(offers)  # the listing's item shape
    assert dict(zip(frame["offer_id"], frame["stock"]))[ids[9]] == 10

    calls = [r for r in simulator.requests if r.path == "/sale/offers"]
    assert sorted(len(r.query["offer.id"]) for r in calls) == [52, 100, 100]  # 252 distinct ids
    assert all(r.query["limit"] == [str(len(r.query["offer.id"]))] for r in calls)
    assert most_in_flight(calls) == 3 and client.stats.by_route["GET /sale/offers?offer.id"] == 3
    assert simulator.spec_violations == []
    assert client.offers_by_id([]) == [] and client.stats.total == 3


def test_offer_events_show_our_own_writes_and_page_by_cursor(make_client, simulator):
    a, b, c = simulator.add_offers("shop-a", [{"sku": "A", "stock": 5}, {"sku": "B", "stock": 5}, {"stock": 5}])
    client = make_client()
    assert client.offer_events(None) == [] and client.offer_events_head() is None

    client.patch_stock(a, 2)
    client.put_quantity_command(str(uuid.uuid4()), 9, [b, c])
    time.sleep(0.1)
    client.put_publication_command(str(uuid.uuid4()), "END", [b])
    time.sleep(0.1)
    client.put_publication_command(str(uuid.uuid4()), "ACTIVATE", [b])
    time.sleep(0.1)

    events = client.offer_events(None)
    assert [(e.type, e.offer_id, e.sku) for e in events] == [
        ("OFFER_STOCK_CHANGED", a, "A"),
        ("OFFER_STOCK_CHANGED", b, "B"),
        ("OFFER_STOCK_CHANGED", c, None),
        ("OFFER_ENDED", b, "B"),
        ("OFFER_ACTIVATED", b, "B"),
    ]
    assert client.offer_events(events[0].id, limit=2) == events[1:3]
    assert client.offer_events(events[2].id, types=("OFFER_ENDED",)) == [events[3]]
    assert client.offer_events(events[-1].id) == []

    simulator.reset_requests()
    assert client.offer_events_head() == events[-1].id and client.offer_events_head(events[1].id) == events[-1].id
    assert len(simulator.requests) == 2  # one call each: fewer than 1000 events to read
    assert [r.query.get("type") for r in simulator.requests] == [None, None]  # every type moves the head
    assert simulator.spec_violations == []


def test_an_expired_offer_events_cursor_raises_its_own_error_at_once(make_client, simulator):
    (offer_id,) = simulator.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    client = make_client()
    client.patch_stock(offer_id, 4)
    [event] = client.offer_events(None)
    simulator.expire_offer_events("shop-a")

    with pytest.raises(OfferEventsCursorExpiredError) as refused:
        client.offer_events(event.id)
    assert isinstance(refused.value, AllegroApiError) and refused.value.status == 400
    assert refused.value.cursor == event.id and refused.value.account == "shop-a"
    assert "full listing" in str(refused.value) and event.id in str(refused.value)
    assert client.stats.retries == 0


def test_event_reads_are_checked_before_sending_and_retried_like_any_call(make_client, simulator):
    client = make_client()
    for bad in ({"limit": 0}, {"limit": 1001}, {"types": ("OFFER_SOLD",)}, {"types": "OFFER_ENDED"}):
        with pytest.raises(ValueError):
            client.offer_events(None, **bad)
    with pytest.raises(ValueError, match="SOLD"):
        client.order_events(None, types=("SOLD",))
    assert client.stats.total == 0

    simulator.set_faults(rate=1.0, kinds=("503", "drop"), seed=2, paths=("/sale/offer-events", "/order/"), count=2)
    assert client.offer_events(None) == []
    assert client.latest_order_event_id() is None
    assert client.stats.retries == 2


def test_order_events_name_the_offer_and_quantity_bought(make_client, simulator):
    offer_id, other = simulator.add_offers("shop-a", [{"sku": "SKU-A", "stock": 5}, {"sku": "B", "stock": 1}])
    client = make_client()
    assert client.latest_order_event_id() is None and client.order_events(None) == []

    first = simulator.purchase("shop-a", offer_id, 2)
    simulator.purchase("shop-a", other, 1)  # its last unit: the offer ends

    bought = client.order_events(None)
    assert [e.type for e in bought] == ["BOUGHT", "BOUGHT"]
    assert bought[0].checkout_form_id == first["checkoutFormId"]
    assert [(i.offer_id, i.sku, i.quantity) for e in bought for i in e.line_items] == [
        (offer_id, "SKU-A", 2),
        (other, "B", 1),
    ]
    every = client.order_events(None, types=())
    assert [e.type for e in every] == ["BOUGHT", "READY_FOR_PROCESSING"] * 2
    assert client.latest_order_event_id() == every[-1].id
    assert client.order_events(bought[0].id) == bought[1:]
    assert client.order_events(every[-1].id) == []

    offers = {o["id"]: o for o in client.offers_by_id([offer_id, other])}
    assert offers[offer_id]["stock"]["available"] == 3 and offers[other]["publication"]["status"] == "ENDED"
    assert [e.type for e in client.offer_events(None)] == ["OFFER_STOCK_CHANGED", "OFFER_STOCK_CHANGED", "OFFER_ENDED"]
    assert simulator.spec_violations == []
