"""The Allegro simulator and the fake Telegram, exercised over real HTTP with httpx."""

from __future__ import annotations

import base64
import importlib.util
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from stock_pipeline.simulator import AllegroSimulator, FakeTelegram
from stock_pipeline.simulator.sale_api import listing_view
from stock_pipeline.simulator.spec_validation import SUBSET_PATH, SpecValidator
from stock_pipeline.simulator.state import OfferNotFound, PurchaseRefused

MEDIA = "application/vnd.allegro.public.v1+json"
USER_AGENT = "stock_pipeline-tests/1.0"
CLIENT = ("demo-client", "demo-secret")
QUANTITY = "/sale/offer-quantity-change-commands"
PUBLICATION = "/sale/offer-publication-commands"
SPEC_YAML = Path("/work/shared/allegro/spec.yaml")
REPO_ROOT = Path(__file__).resolve().parent.parent


def start_simulator(**options) -> AllegroSimulator:
    defaults = {"command_task_delay": 0.1, "operation_delay": 0.1, "validate_responses": True}
    sim = AllegroSimulator(**(defaults | options)).start()
    sim.device_interval = 0
    return sim


@pytest.fixture
def sim():
    simulator = start_simulator()
    yield simulator
    simulator.stop()
    # Every answer the simulator gave must match Allegro's spec; tests that send bad
    # requests on purpose clear what they expect with reset_requests().
    assert simulator.response_violations == []
    assert simulator.spec_violations == []


def token_call(sim: AllegroSimulator, auth=CLIENT, **params) -> httpx.Response:
    return httpx.post(f"{sim.auth_url}/token", params=params, auth=auth, headers={"User-Agent": USER_AGENT})


def refresh(sim: AllegroSimulator, refresh_token: str) -> httpx.Response:
    return token_call(sim, grant_type="refresh_token", refresh_token=refresh_token)


class Api:
    """One seller's authorised client, sending what Allegro asks of every request."""

    def __init__(self, sim: AllegroSimulator, login: str, timeout: float = 5.0):
        self.sim, self.login = sim, login
        tokens = refresh(sim, sim.add_seller(login)).json()
        self.http = httpx.Client(
            base_url=sim.api_url,
            timeout=timeout,
            headers={"Accept": MEDIA, "User-Agent": USER_AGENT, "Authorization": f"Bearer {tokens['access_token']}"},
        )

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def send(self, method: str, path: str, body: dict) -> httpx.Response:
        return self.http.request(method, path, json=body, headers={"Content-Type": MEDIA})

    def patch_stock(self, offer_id: str, available: int) -> httpx.Response:
        return self.send("PATCH", f"/sale/product-offers/{offer_id}", {"stock": {"available": available}})

    def command(self, resource: str, offer_ids: list[str], command_id: str | None = None, **change) -> httpx.Response:
        body = change | {"offerCriteria": [{"type": "CONTAINS_OFFERS", "offers": [{"id": i} for i in offer_ids]}]}
        return self.send("PUT", f"{resource}/{command_id or uuid.uuid4()}", body)

    def quantity(self, offer_ids: list[str], value: int, change_type: str = "FIXED", **kwargs) -> httpx.Response:
        return self.command(QUANTITY, offer_ids, modification={"changeType": change_type, "value": value}, **kwargs)

    def publication(self, offer_ids: list[str], action: str) -> httpx.Response:
        return self.command(PUBLICATION, offer_ids, publication={"action": action})

    def tasks(self, resource: str, command_id: str) -> list[dict]:
        response = self.get(f"{resource}/{command_id}/tasks")
        assert response.status_code == 200
        return response.json()["tasks"]


@pytest.fixture
def api(sim) -> Api:
    return Api(sim, "shop-a")


def includes(actual: dict, expected: dict) -> bool:
    return expected.items() <= actual.items()


def settle(delay: float = 0.15) -> None:
    """Waits past the simulator's command/operation delay (0.1 s in these tests)."""
    time.sleep(delay)


# ---- OAuth ---------------------------------------------------------------------------


def test_refresh_token_is_single_use_and_kills_the_old_access_token(sim):
    first = refresh(sim, sim.add_seller("shop-a")).json()
    assert first["token_type"] == "bearer" and first["allegro_api"] is True and first["expires_in"] == 43199
    old_access = {"Authorization": f"Bearer {first['access_token']}", "Accept": MEDIA, "User-Agent": USER_AGENT}
    assert httpx.get(f"{sim.api_url}/sale/offers", headers=old_access).status_code == 200

    second = refresh(sim, first["refresh_token"])
    assert second.status_code == 200
    assert second.json()["refresh_token"] != first["refresh_token"]

    replay = refresh(sim, first["refresh_token"])
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert replay.json()["error_description"].startswith("Invalid refresh token")
    stale = httpx.get(f"{sim.api_url}/sale/offers", headers=old_access)
    assert stale.status_code == 401 and stale.json()["error"] == "invalid_token"


def test_token_endpoint_checks_client_credentials_and_grant(sim):
    token = sim.add_seller("shop-a")
    wrong = token_call(sim, auth=("demo-client", "nope"), grant_type="refresh_token", refresh_token=token)
    assert wrong.status_code == 401 and wrong.json() == {
        "error": "invalid_client",
        "error_description": "Bad client credentials",
    }
    assert token_call(sim, grant_type="password").json()["error"] == "unsupported_grant_type"
    # The refused calls did not use the token up.
    assert refresh(sim, token).status_code == 200


def test_client_credentials_grant_gives_an_application_token_that_acts_for_no_seller(sim):
    token = sim.add_seller("shop-a")
    answer = token_call(sim, grant_type="client_credentials")
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 43199 and "refresh_token" not in body
    listing = httpx.get(
        f"{sim.api_url}/sale/offers",
        headers={"Authorization": f"Bearer {body['access_token']}", "Accept": MEDIA, "User-Agent": USER_AGENT},
    )
    assert listing.status_code == 401 and listing.json()["error"] == "invalid_token"
    wrong = token_call(sim, auth=("demo-client", "nope"), grant_type="client_credentials")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    assert refresh(sim, token).status_code == 200  # no seller's refresh token was touched


def test_refresh_grant_accepts_a_form_body(sim):
    token = sim.add_seller("shop-a")
    answer = httpx.post(
        f"{sim.auth_url}/token", data={"grant_type": "refresh_token", "refresh_token": token}, auth=CLIENT
    )
    assert answer.status_code == 200 and answer.json()["access_token"]


def test_device_flow_is_pending_until_the_seller_confirms(sim):
    sim.add_seller("shop-a")
    device = httpx.post(f"{sim.auth_url}/device", data={"client_id": "demo-client"}, auth=CLIENT).json()
    assert device["expires_in"] == 3600 and device["interval"] == 0
    assert device["verification_uri_complete"].endswith(device["user_code"])
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device["device_code"]}

    pending = token_call(sim, **grant)
    assert pending.status_code == 400 and pending.json()["error"] == "authorization_pending"
    sim.approve_device(device["user_code"], "shop-a")
    tokens = token_call(sim, **grant)
    assert tokens.status_code == 200 and tokens.json()["refresh_token"]
    assert token_call(sim, **grant).json()["error"] == "invalid_grant"  # a device code is used once


def test_device_flow_slow_down_and_auto_approval(sim):
    sim.add_seller("shop-b")
    sim.device_interval = 30
    device = httpx.post(f"{sim.auth_url}/device", params={"client_id": "demo-client"}, auth=CLIENT).json()
    grant = {"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": device["device_code"]}
    assert token_call(sim, **grant).json()["error"] == "authorization_pending"
    assert token_call(sim, **grant).json()["error"] == "slow_down"

    sim.device_interval = 0
    sim.auto_approve_device = "shop-b"
    device = httpx.post(f"{sim.auth_url}/device", params={"client_id": "demo-client"}, auth=CLIENT).json()
    answer = token_call(sim, grant_type=grant["grant_type"], device_code=device["device_code"])
    assert answer.status_code == 200
    assert [r.login for r in sim.requests if r.path.endswith("/token") and r.status == 200] == ["shop-b"]


def test_expired_access_tokens_revocation_and_the_session_cap(sim):
    api = Api(sim, "shop-a")
    sim.expire_access_tokens("shop-a")
    expired = api.get("/sale/offers")
    assert expired.status_code == 401 and expired.json()["error"] == "invalid_token"
    spare = sim.issue_refresh_token("shop-a")
    assert refresh(sim, spare).status_code == 200  # refresh tokens outlive the access tokens

    sim.revoke_tokens("shop-a")
    assert refresh(sim, sim.issue_refresh_token("shop-a")).status_code == 200  # a new session after revocation
    oldest = sim.issue_refresh_token("shop-a")
    for _ in range(20):
        sim.issue_refresh_token("shop-a")
    assert refresh(sim, oldest).json()["error"] == "invalid_grant"


def test_api_requests_need_a_bearer_token(sim):
    answer = httpx.get(f"{sim.api_url}/sale/offers", headers={"Accept": MEDIA, "User-Agent": USER_AGENT})
    assert answer.status_code == 401 and answer.json()["error"] == "invalid_token"
    assert sim.requests[-1].login is None and sim.requests[-1].client_id is None


# ---- offers --------------------------------------------------------------------------


def test_listing_pages_in_id_order_and_filters(sim, api):
    ids = sim.add_offers("shop-a", [{"sku": f"SKU-{n % 10}", "stock": n} for n in range(25)])
    sim.add_offers("shop-a", [{"sku": None, "stock": 1, "status": "INACTIVE"}])
    Api(sim, "shop-b")
    sim.add_offers("shop-b", [{"sku": "SKU-1", "stock": 1}])

    seen, offset = [], 0
    while True:
        page = api.get("/sale/offers", params={"limit": 10, "offset": offset}).json()
        assert page["totalCount"] == 26 and page["count"] == len(page["offers"])
        seen += page["offers"]
        offset += page["count"]
        if offset >= page["totalCount"]:
            break
    assert [offer["id"] for offer in seen[:25]] == ids
    assert seen[25]["external"] is None and seen[25]["publication"]["status"] == "INACTIVE"
    assert all("endedBy" not in offer["publication"] for offer in seen)
    assert seen[3]["stock"] == {"available": 3, "sold": 0}

    by_sku = api.get("/sale/offers", params=[("external.id", "SKU-1"), ("external.id", "SKU-2")]).json()
    assert sorted(o["id"] for o in by_sku["offers"]) == sorted([ids[1], ids[11], ids[21], ids[2], ids[12], ids[22]])
    by_id = api.get("/sale/offers", params={"offer.id": ids[5]}).json()
    assert [o["id"] for o in by_id["offers"]] == [ids[5]]
    inactive = api.get("/sale/offers", params={"publication.status": "INACTIVE"}).json()
    assert inactive["totalCount"] == 1
    assert api.get("/sale/offers").json()["count"] == 20  # the default limit
    foreign = sim.offers("shop-b")[0]["id"]
    named = api.get("/sale/offers", params=[("offer.id", i) for i in (ids[7], foreign, "404", ids[2])]).json()
    assert [o["id"] for o in named["offers"]] == [ids[2], ids[7]] and named["totalCount"] == 2
    both = api.get("/sale/offers", params=[("offer.id", ids[0]), ("offer.id", ids[1]), ("external.id", "SKU-1")])
    assert [o["id"] for o in both.json()["offers"]] == [ids[1]]


def test_offers_added_with_their_own_ids_are_listed_in_id_order(sim, api):
    generated = sim.add_offers("shop-a", [{"sku": "G", "stock": 1}])
    sim.add_offers("shop-a", [{"id": "99999999999", "sku": "B", "stock": 1}, {"id": "1200", "sku": "A", "stock": 1}])
    sim.add_offers("shop-a", [{"id": "1300", "sku": "C", "stock": 1}])

    page = api.get("/sale/offers", params={"limit": 3, "offset": 1}).json()
    assert [o["id"] for o in page["offers"]] == ["1300", *generated, "99999999999"] and page["totalCount"] == 4


def test_listing_parameters_outside_the_spec_are_refused(sim, api):
    for params in (
        {"limit": 0},
        {"limit": 1001},
        {"offset": -1},
        {"externalId": "x"},
        [("external.id", str(n)) for n in range(101)],
        {"publication.status": "DELETED"},
    ):
        assert api.get("/sale/offers", params=params).status_code == 400, params
    assert len(sim.spec_violations) == 6
    assert "unknown query parameter 'externalId'" in sim.spec_violations[3]
    # Valid per parameter, but past Allegro's listing window: refused without a violation.
    sim.reset_requests()
    assert api.get("/sale/offers", params={"offset": 9_999_999, "limit": 2}).status_code == 400
    assert sim.spec_violations == []


def test_product_offer_shows_ended_by_and_hides_other_sellers_offers(sim, api):
    Api(sim, "shop-b")
    (own,) = sim.add_offers(
        "shop-a", [{"id": "7000000001", "sku": "X", "stock": 0, "status": "ENDED", "ended_by": "USER"}]
    )
    (foreign,) = sim.add_offers("shop-b", [{"sku": "Y", "stock": 3}])
    offer = api.get(f"/sale/product-offers/{own}").json()
    assert includes(offer["publication"], {"status": "ENDED", "endedBy": "USER"})
    assert offer["external"] == {"id": "X"} and offer["stock"]["available"] == 0
    assert api.get(f"/sale/product-offers/{foreign}").status_code == 404
    missing = api.get("/sale/product-offers/123")
    assert missing.status_code == 404 and missing.json()["errors"][0]["code"] == "OfferNotFoundException"
    assert missing.headers["content-type"] == MEDIA


def test_out_of_band_changes_show_through_the_api(sim, api):
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    sim.set_offer(offer_id, stock=2, status="ENDED")
    assert includes(
        api.get(f"/sale/product-offers/{offer_id}").json()["publication"], {"status": "ENDED", "endedBy": "USER"}
    )
    with pytest.raises(ValueError):
        sim.set_offer(offer_id, status="ACTIVE", ended_by="ADMIN")  # only an ended offer has ended_by
    assert sim.offer(offer_id) == {"id": offer_id, "sku": "A", "stock": 2, "status": "ENDED", "ended_by": "USER"}
    sim.set_offer(offer_id, status="ACTIVE")
    listed = api.get("/sale/offers", params={"publication.status": "ACTIVE"}).json()["offers"]
    assert [(offer["id"], offer["stock"]["available"]) for offer in listed] == [(offer_id, 2)]


def test_a_listing_shows_each_offer_as_it_is_now_after_it_was_listed_before(sim, api):
    # The simulator reuses each offer's encoded listing item: a change must still show.
    patched, commanded, ended, removed, kept = sim.add_offers("shop-a", [{"sku": s, "stock": 5} for s in "ABCDE"])

    def listing() -> dict[str, dict]:
        return {offer["id"]: offer for offer in api.get("/sale/offers", params={"limit": 1000}).json()["offers"]}

    before = listing()
    assert api.patch_stock(patched, 7).status_code == 200
    assert api.quantity([commanded], 9).status_code == 201
    settle()
    sim.set_offer(ended, stock=0, status="ENDED")
    sim.remove_offers([removed])
    sim.add_offers("shop-a", [{"id": removed, "sku": "R", "stock": 1, "status": "INACTIVE"}])

    after = listing()
    assert after[patched]["stock"]["available"] == 7 and after[commanded]["stock"]["available"] == 9
    assert after[ended]["stock"]["available"] == 0 and after[ended]["publication"]["status"] == "ENDED"
    assert "endedAt" in after[ended]["publication"] and "endedAt" not in before[ended]["publication"]
    assert after[removed]["external"] == {"id": "R"} and after[removed]["publication"]["status"] == "INACTIVE"
    assert after[kept] == before[kept]
    assert after == {
        offer.id: json.loads(json.dumps(listing_view(offer))) for offer in sim.marketplace.offers("shop-a")
    }


def test_patch_sets_stock_and_zero_ends_an_active_offer(sim, api):
    active, ended = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}, {"sku": "B", "stock": 0, "status": "ENDED"}])
    answer = api.patch_stock(active, 7)
    assert answer.status_code == 200 and answer.json()["stock"]["available"] == 7
    assert api.patch_stock(active, 0).json()["publication"]["endedBy"] == "EMPTY_STOCK"
    assert sim.offer(active) == {"id": active, "sku": "A", "stock": 0, "status": "ENDED", "ended_by": "EMPTY_STOCK"}
    api.patch_stock(active, 4)
    assert sim.offer(active)["status"] == "ENDED"  # raising stock never re-activates
    api.patch_stock(ended, 2)
    assert includes(sim.offer(ended), {"stock": 2, "status": "ENDED", "ended_by": "USER"})

    too_many = api.patch_stock(active, 100_000)
    assert too_many.status_code == 422 and too_many.json()["errors"][0]["path"] == "stock.available"
    assert api.patch_stock("999", 1).status_code == 404
    assert api.patch_stock(active, -1).status_code == 400  # below the spec's minimum
    assert len(sim.spec_violations) == 1
    sim.reset_requests()


def test_patch_answered_202_is_applied_later_and_blocks_other_patches(sim, api):
    sim.patch_async_probability = 1.0
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    accepted = api.patch_stock(offer_id, 9)
    assert accepted.status_code == 202 and accepted.headers["Retry-After"] == "1"
    location = accepted.headers["Location"]
    assert location.startswith(f"{sim.api_url}/sale/product-offers/{offer_id}/operations/")
    assert sim.offer(offer_id)["stock"] == 5
    assert api.patch_stock(offer_id, 3).status_code == 409

    running = api.get(location)
    assert running.status_code == 202 and running.json()["operation"]["status"] == "IN_PROGRESS"
    settle()
    done = api.get(location)
    assert done.status_code == 303 and done.headers["Location"] == f"{sim.api_url}/sale/product-offers/{offer_id}"
    assert sim.offer(offer_id)["stock"] == 9
    assert api.get(location.replace(offer_id, "1")).status_code == 404


# ---- batch commands ------------------------------------------------------------------


def test_quantity_command_tasks_go_from_new_to_success_or_fail(sim, api):
    Api(sim, "shop-b")
    active, ended = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}, {"sku": "B", "stock": 0, "status": "ENDED"}])
    (foreign,) = sim.add_offers("shop-b", [{"sku": "C", "stock": 5}])
    command_id = str(uuid.uuid4())
    created = api.quantity([active, ended, foreign, "404"], 8, command_id=command_id)
    assert created.status_code == 201
    assert includes(
        created.json(), {"id": command_id, "completedAt": None, "taskCount": {"total": 0, "success": 0, "failed": 0}}
    )
    assert {task["status"] for task in api.tasks(QUANTITY, command_id)} == {"NEW"}
    assert sim.offer(active)["stock"] == 5

    settle()
    tasks = api.tasks(QUANTITY, command_id)
    assert [task["status"] for task in tasks] == ["SUCCESS", "SUCCESS", "FAIL", "FAIL"]
    assert tasks[2]["message"] and tasks[2]["errors"][0]["code"] == "OfferNotFoundException"
    assert all(task["finishedAt"] and task["field"] == "stock" for task in tasks)
    report = api.get(f"{QUANTITY}/{command_id}").json()
    assert report["completedAt"] and report["taskCount"] == {"total": 4, "success": 2, "failed": 2}
    assert includes(sim.offer(ended), {"stock": 8, "status": "ENDED"})  # quantity changes, status stays
    assert sim.offer(foreign)["stock"] == 5

    assert api.get(f"{QUANTITY}/{command_id}/tasks", params={"limit": 1, "offset": 3}).json()["tasks"][0]["offer"] == {
        "id": "404"
    }
    assert api.quantity([active], 2, command_id=command_id).status_code == 409
    assert api.get(f"{QUANTITY}/{uuid.uuid4()}").status_code == 404


def test_quantity_command_validation(sim, api):
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    zero = api.quantity([offer_id], 0)
    assert zero.status_code == 422 and "FIXED quantity must be 1..99999" in zero.json()["errors"][0]["message"]
    assert api.quantity([str(n) for n in range(1001)], 1).status_code == 422
    assert api.quantity([], 1).status_code == 422
    assert api.quantity([offer_id], 1, command_id="not-a-uuid").status_code == 400
    assert sim.spec_violations == []

    lose = api.quantity([offer_id], 1, change_type="LOSE")  # the spec knows FIXED and GAIN only
    assert lose.status_code == 400 and "'LOSE' is not one of" in sim.spec_violations[0]
    sim.reset_requests()

    below_one, gain = str(uuid.uuid4()), str(uuid.uuid4())
    api.quantity([offer_id], -5, change_type="GAIN", command_id=below_one)
    settle()
    assert api.tasks(QUANTITY, below_one)[0]["status"] == "FAIL"
    api.quantity([offer_id], -4, change_type="GAIN", command_id=gain)
    settle()
    assert api.tasks(QUANTITY, gain)[0]["status"] == "SUCCESS" and sim.offer(offer_id)["stock"] == 1


def test_publication_command_ends_and_activates(sim, api):
    live, empty, stocked = sim.add_offers(
        "shop-a",
        [
            {"sku": "A", "stock": 5},
            {"sku": "B", "stock": 0, "status": "ENDED", "ended_by": "EMPTY_STOCK"},
            {"sku": "C", "stock": 3, "status": "ENDED"},
        ],
    )
    end = api.publication([live], "END")
    assert end.status_code == 201
    activate = api.publication([empty, stocked], "ACTIVATE")
    settle()
    assert includes(sim.offer(live), {"status": "ENDED", "ended_by": "USER"})
    tasks = api.tasks(PUBLICATION, activate.json()["id"])
    assert [task["status"] for task in tasks] == ["FAIL", "SUCCESS"]
    assert "stock" in tasks[0]["message"]
    assert sim.offer(empty)["status"] == "ENDED"
    assert includes(sim.offer(stocked), {"status": "ACTIVE", "ended_by": None})
    summary = api.get(f"{PUBLICATION}/{activate.json()['id']}").json()
    assert summary["taskCount"] == {"total": 2, "success": 1, "failed": 1}
    assert api.publication([live], "END").status_code == 201  # a new id; ending an ended offer is harmless


# ---- limits --------------------------------------------------------------------------


def test_client_limit_is_a_sliding_window_whose_block_is_prolonged_by_retries():
    sim = start_simulator(rate_limit_per_minute=30, rate_limit_window_seconds=1.0, block_seconds=1.0)
    try:
        api = Api(sim, "shop-a")
        assert [api.get("/sale/offers").status_code for _ in range(30)] == [200] * 30
        refused = api.get("/sale/offers")
        assert refused.status_code == 429 and "Retry-After" not in refused.headers
        assert includes(refused.json()["errors"][0], {"code": "RateLimitExceedException", "message": "Limit exceeded"})
        time.sleep(0.6)
        assert api.get("/sale/offers").status_code == 429  # during the block: refused, block starts afresh
        time.sleep(0.7)  # the first block and the window are over, the prolonged block is not
        sim.send_retry_after = True
        prolonged = api.get("/sale/offers")
        assert prolonged.status_code == 429 and prolonged.headers["Retry-After"] == "1"
        assert refresh(sim, sim.issue_refresh_token("shop-a")).status_code == 200  # auth is not limited
        time.sleep(1.2)
        assert api.get("/sale/offers").status_code == 200
        stats = sim.stats()
        assert stats["sent_429"] == 3 and stats["rate_limited"] == {"client": 3}
        assert stats["by_route"][("GET", "/sale/offers")] == 34
    finally:
        sim.stop()


def test_seller_write_limits_refuse_without_blocking_the_client():
    sim = start_simulator(user_patch_limit_per_minute=3, user_command_limit_per_minute=5, user_command_limit_per_hour=7)
    try:
        api = Api(sim, "shop-a")
        ids = sim.add_offers("shop-a", [{"sku": str(n), "stock": 1} for n in range(4)])
        assert [api.patch_stock(i, 2).status_code for i in ids] == [200, 200, 200, 429]
        assert api.get("/sale/offers").status_code == 200
        assert Api(sim, "shop-b").patch_stock("1", 1).status_code == 404  # another seller has its own limit

        assert api.quantity(ids[:3], 5).status_code == 201
        assert api.quantity(ids[:3], 5).status_code == 429  # 6 offer changes in a minute
        assert api.quantity(ids[:2], 5).status_code == 201
        assert api.publication(ids[:3], "END").status_code == 429  # 8 in an hour
        assert sim.stats()["rate_limited"] == {"seller": 3}
    finally:
        sim.stop()


# ---- faults --------------------------------------------------------------------------


@pytest.mark.parametrize("kind, status", [("429", 429), ("500", 500), ("503", 503)])
def test_faults_answer_errors_before_any_effect(sim, api, kind, status):
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    sim.set_faults(rate=1.0, kinds=(kind,), seed=1)
    assert api.patch_stock(offer_id, 9).status_code == status
    assert refresh(sim, sim.issue_refresh_token("shop-a")).status_code == 200  # auth never fails
    sim.clear_faults()
    assert sim.offer(offer_id)["stock"] == 5
    assert api.patch_stock(offer_id, 9).status_code == 200
    assert sim.stats()["faults"] == {kind: 1}


def test_timeout_fault_outlasts_the_client_and_applies_nothing(sim):
    api = Api(sim, "shop-a", timeout=0.2)
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    sim.fault_timeout_seconds = 0.4
    sim.set_faults(rate=1.0, kinds=("timeout",))
    with pytest.raises(httpx.ReadTimeout):
        api.patch_stock(offer_id, 9)
    time.sleep(0.4)
    assert sim.offer(offer_id)["stock"] == 5
    assert sim.requests[-1].fault == "timeout" and sim.requests[-1].status == 504


def test_drop_fault_closes_the_connection_unanswered(sim, api):
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    sim.set_faults(rate=1.0, kinds=("drop",), paths=("/sale/product-offers",))
    assert api.get("/sale/offers").status_code == 200  # other paths are spared
    with pytest.raises(httpx.RemoteProtocolError):
        api.patch_stock(offer_id, 9)
    assert sim.offer(offer_id)["stock"] == 5
    assert sim.requests[-1].status is None


def test_a_fault_count_fails_only_that_many_requests(sim, api):
    sim.set_faults(rate=1.0, kinds=("429",), count=2)
    assert [api.get("/sale/offers").status_code for _ in range(4)] == [429, 429, 200, 200]


def test_fault_rate_is_a_seeded_share(sim, api):
    sim.set_faults(rate=0.3, kinds=("500",), seed=7)
    statuses = [api.get("/sale/offers").status_code for _ in range(100)]
    assert 15 <= statuses.count(500) <= 45 and set(statuses) == {200, 500}


# ---- latency ---------------------------------------------------------------------------


def test_latency_is_slept_per_request_so_30_requests_are_handled_at_once(sim, api):
    sim.latency = 0.5
    with ThreadPoolExecutor(max_workers=30) as pool:
        statuses = list(pool.map(lambda _: api.get("/sale/offers").status_code, range(30)))
    assert statuses == [200] * 30
    records = [r for r in sim.requests if r.path == "/sale/offers"]
    assert all(r.answered_at - r.started_at >= 0.5 for r in records)
    # Every request had arrived before the first was answered: none waited for another.
    assert max(r.started_at for r in records) < min(r.answered_at for r in records)


def test_listing_pages_take_their_own_latency(sim, api):
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    sim.latency, sim.listing_latency = 0.05, 0.3
    sim.reset_requests()
    api.get("/sale/offers")
    api.patch_stock(offer_id, 9)
    listing, patch = sim.requests
    assert listing.answered_at - listing.started_at >= 0.3
    assert patch.answered_at - patch.started_at >= 0.05
    sim.listing_latency = None  # then pages take `latency` too
    api.get("/sale/offers")
    assert sim.requests[-1].answered_at - sim.requests[-1].started_at >= 0.05


# ---- spec conformance ----------------------------------------------------------------


def test_requests_off_the_spec_are_recorded_and_refused(sim, api):
    bare = httpx.get(
        f"{sim.api_url}/sale/offers",
        headers={"Authorization": api.http.headers["Authorization"], "User-Agent": USER_AGENT},
    )
    assert bare.status_code == 406 and bare.json()["errors"][0]["code"] == "NotAcceptableException"
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    plain_json = api.http.patch(f"/sale/product-offers/{offer_id}", json={"stock": {"available": 1}})
    assert plain_json.status_code == 415
    anonymous = api.http.get("/sale/offers", headers={"User-Agent": ""})
    assert anonymous.status_code == 400
    assert api.send("PATCH", f"/sale/product-offers/{offer_id}", {"stock": {"available": "1"}}).status_code == 400
    assert api.get(f"/sale/offers/{offer_id}").status_code == 404  # removed from Allegro's API in 2024
    assert api.http.delete("/sale/offers").status_code == 405

    violations = sim.spec_violations
    assert len(violations) == 6
    assert violations[0].startswith("GET /sale/offers: Accept header must name application/vnd.allegro.public.v1+json")
    assert "Content-Type 'application/json'" in violations[1]
    assert "User-Agent" in violations[2]
    assert "'1' is not of type 'integer' at $.stock.available" in violations[3]
    assert sim.offer(offer_id)["stock"] == 5
    assert sim.stats()["spec_violations"] == 6
    sim.reset_requests()


def test_requests_are_recorded_with_their_details(sim, api):
    (offer_id,) = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}])
    sim.reset_requests()
    api.patch_stock(offer_id, 4)
    (record,) = sim.requests
    assert (record.method, record.path, record.route, record.status) == (
        "PATCH",
        f"/sale/product-offers/{offer_id}",
        "/sale/product-offers/{offerId}",
        200,
    )
    assert record.login == "shop-a" and record.client_id == "demo-client"
    assert record.body == {"stock": {"available": 4}} and record.headers["user-agent"] == USER_AGENT


def test_spec_validator_reports_answers_that_break_the_spec():
    validator = SpecValidator()
    bad_listing = {"offers": [{"id": 1, "stock": {"available": -1}}], "count": 1, "totalCount": 1}
    problems = validator.check_response("GET", "/sale/offers", 200, MEDIA, bad_listing)
    assert len(problems) == 2 and "$.offers[0].id" in problems[0]
    assert validator.check_response("GET", "/sale/offers", 200, "application/json", {}) != []
    # Nullable fields and Allegro's null external id are accepted.
    offer = {"id": "1", "external": None, "publication": {"status": "ENDED", "endedBy": None}, "stock": None}
    assert validator.check_response("GET", "/sale/product-offers/{offerId}", 200, MEDIA, offer) == []


def test_spec_subset_is_small_and_matches_the_official_file():
    assert SUBSET_PATH.stat().st_size < 300_000
    if not SPEC_YAML.exists():
        pytest.skip(f"{SPEC_YAML} not available")
    spec = importlib.util.spec_from_file_location(
        "extract_spec_subset", REPO_ROOT / "scripts" / "extract_spec_subset.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.extract_subset(script.load_spec(SPEC_YAML)) == json.loads(SUBSET_PATH.read_text())


# ---- event journals ------------------------------------------------------------------


def offer_events(api: Api, **params) -> list[dict]:
    answer = api.get("/sale/offer-events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["offerEvents"]


def kinds(events: list[dict]) -> list[tuple[str, str]]:
    return [(event["type"], event["offer"]["id"]) for event in events]


def sequence_numbers(events: list[dict]) -> list[int]:
    """The simulator's ids are base64 of a sequence number; clients treat them as opaque."""
    return [int(base64.b64decode(event["id"] + "=" * (-len(event["id"]) % 4))) for event in events]


def test_offer_journal_records_every_change_of_a_live_offer_and_none_of_others(sim, api):
    a, b, draft, ended = sim.add_offers(
        "shop-a",
        [
            {"sku": "A", "stock": 5},
            {"sku": "B", "stock": 5},
            {"sku": "C", "stock": 5, "status": "INACTIVE"},
            {"sku": "D", "stock": 0, "status": "ENDED"},
        ],
    )
    assert offer_events(api) == []  # offers as they already were make no events

    api.patch_stock(a, 3)
    api.patch_stock(a, 3)  # the same value: nothing changed
    api.quantity([a, b], 7)
    settle()
    api.publication([b], "END")
    settle()
    api.patch_stock(b, 9)  # an ENDED offer: no event
    api.publication([b], "ACTIVATE")
    settle()
    api.patch_stock(draft, 4)  # INACTIVE: no event
    sim.set_offer(ended, stock=3)  # ENDED: no event
    api.patch_stock(a, 0)  # ends it
    sim.set_offer(b, stock=2)  # another application

    events = offer_events(api)
    assert kinds(events) == [
        ("OFFER_STOCK_CHANGED", a),
        ("OFFER_STOCK_CHANGED", a),
        ("OFFER_STOCK_CHANGED", b),
        ("OFFER_ENDED", b),
        ("OFFER_ACTIVATED", b),
        ("OFFER_STOCK_CHANGED", a),
        ("OFFER_ENDED", a),
        ("OFFER_STOCK_CHANGED", b),
    ]
    numbers = sequence_numbers(events)
    assert numbers == sorted(set(numbers))  # strictly increasing in journal order
    assert [event["occurredAt"] for event in events] == sorted(event["occurredAt"] for event in events)
    assert events[0]["offer"] == {"id": a, "external": {"id": "A"}}  # which offer, never its values
    assert events[3]["offer"]["publication"] == {"endedBy": "USER"}
    assert events[6]["offer"]["publication"] == {"endedBy": "EMPTY_STOCK"}
    assert offer_events(api, type="OFFER_ACTIVATED") == [events[4]]


def test_offer_journal_pages_by_cursor_and_filters_by_type(sim, api):
    ids = sim.add_offers("shop-a", [{"sku": f"S{n}", "stock": 5} for n in range(120)])
    api.quantity(ids, 8)
    settle()
    for offer_id in ids[:3]:
        api.patch_stock(offer_id, 0)
    everything = offer_events(api, limit=1000)
    assert len(everything) == 126 and len(offer_events(api)) == 100  # the spec's default limit

    read, cursor = [], None
    while True:
        page = offer_events(api, limit=50, **({"from": cursor} if cursor else {}))
        read += page
        if len(page) < 50:
            break
        cursor = page[-1]["id"]
    assert read == everything
    assert offer_events(api, **{"from": everything[-1]["id"]}) == []  # at the head: nothing new

    ended = api.get("/sale/offer-events", params=[("type", "OFFER_ENDED"), ("from", everything[0]["id"])]).json()
    assert kinds(ended["offerEvents"]) == [("OFFER_ENDED", offer_id) for offer_id in ids[:3]]
    both = api.get("/sale/offer-events", params=[("type", "OFFER_ENDED"), ("type", "OFFER_STOCK_CHANGED")]).json()
    assert len(both["offerEvents"]) == 100
    assert offer_events(api, type="OFFER_ARCHIVED") == []


def test_offer_journal_refuses_unknown_and_expired_cursors(sim, api):
    other = Api(sim, "shop-b")
    a, b = sim.add_offers("shop-a", [{"sku": "A", "stock": 5}, {"sku": "B", "stock": 5}])
    (foreign,) = sim.add_offers("shop-b", [{"sku": "A", "stock": 5}])
    api.patch_stock(a, 4)
    other.patch_stock(foreign, 4)
    cursor = offer_events(api)[0]["id"]
    foreign_cursor = offer_events(other)[0]["id"]

    for unknown in (foreign_cursor, "bogus", "MTIz", cursor + "x"):
        refused = api.get("/sale/offer-events", params={"from": unknown})
        assert refused.status_code == 400 and refused.headers["content-type"] == "application/json"
        assert includes(refused.json()["errors"][0], {"code": "UnknownEventIdException", "path": "from"})

    sim.expire_offer_events("shop-a")  # as after 24 quiet hours
    assert api.get("/sale/offer-events", params={"from": cursor}).status_code == 400
    assert offer_events(api) == []
    assert len(offer_events(other)) == 1  # another seller's journal is untouched
    api.patch_stock(b, 3)
    assert kinds(offer_events(api)) == [("OFFER_STOCK_CHANGED", b)]

    sim.marketplace.offer_event_retention = 0.3  # the 24 hours, shortened
    cursor = offer_events(api)[0]["id"]
    time.sleep(0.4)
    assert api.get("/sale/offer-events", params={"from": cursor}).status_code == 400
    assert offer_events(api) == []


def test_offer_journal_limits_and_types_are_checked_against_the_spec(sim, api):
    for params in ({"limit": 0}, {"limit": 1001}, {"limit": "many"}, {"type": "OFFER_SOLD"}):
        answer = api.get("/sale/offer-events", params=params)
        assert answer.status_code == 400 and answer.json()["errors"][0]["code"] == "VALIDATION_ERROR"
    assert len(sim.spec_violations) == 4
    assert api.get("/order/events", params={"limit": 1001}).status_code == 400
    assert api.get("/order/events", params={"type": "SOLD"}).status_code == 422  # the spec leaves it open
    assert api.get("/order/events", params={"from": "MTIz"}).status_code == 422
    sim.reset_requests()


def test_archived_and_newly_published_offers_are_journalled(sim, api):
    live, draft, ended = sim.add_offers(
        "shop-a",
        [{"sku": "A", "stock": 5}, {"sku": "B", "stock": 5, "status": "INACTIVE"}, {"stock": 0, "status": "ENDED"}],
    )
    sim.remove_offers([live, draft, ended])
    (new,) = sim.add_offers("shop-a", [{"sku": "N", "stock": 2}], journal=True)
    events = offer_events(api)
    assert kinds(events) == [("OFFER_ARCHIVED", live), ("OFFER_ARCHIVED", ended), ("OFFER_ACTIVATED", new)]
    assert events[1]["offer"]["external"] is None


def order_events(api: Api, **params) -> list[dict]:
    answer = api.get("/order/events", params=params)
    assert answer.status_code == 200, answer.text
    return answer.json()["events"]


def test_a_purchase_lowers_the_stock_and_is_journalled_as_an_order(sim, api):
    offer_id, other = sim.add_offers(
        "shop-a", [{"sku": "SKU-A", "stock": 5, "name": "Kubek"}, {"sku": "B", "stock": 1}]
    )
    assert api.get("/order/event-stats").json() == {} and order_events(api) == []

    bought = sim.purchase("shop-a", offer_id, 2, buyer="jan")
    assert includes(bought, {"offerId": offer_id, "quantity": 2, "available": 3, "status": "ACTIVE"})
    assert sim.offer(offer_id)["stock"] == 3
    events = order_events(api)
    assert [event["type"] for event in events] == ["BOUGHT", "READY_FOR_PROCESSING"]
    assert [event["id"] for event in events] == bought["orderEventIds"]
    order = events[0]["order"]
    assert order["checkoutForm"] == {"id": bought["checkoutFormId"]} and order["buyer"]["login"] == "jan"
    (item,) = order["lineItems"]
    assert item["id"] == bought["lineItemId"] and item["quantity"] == 2
    assert item["offer"] == {"id": offer_id, "name": "Kubek", "external": {"id": "SKU-A"}}
    assert kinds(offer_events(api)) == [("OFFER_STOCK_CHANGED", offer_id)]

    assert order_events(api, type="BOUGHT") == events[:1]
    assert order_events(api, **{"from": events[0]["id"]}) == events[1:]
    stats = api.get("/order/event-stats").json()
    assert stats == {"latestEvent": {"id": events[1]["id"], "occurredAt": events[1]["occurredAt"]}}

    unpaid = sim.purchase("shop-a", offer_id, 3, paid=False)  # the last units: the offer ends
    assert includes(unpaid, {"available": 0, "status": "ENDED"}) and len(unpaid["orderEventIds"]) == 1
    assert api.get(f"/sale/product-offers/{offer_id}").json()["publication"]["endedBy"] == "EMPTY_STOCK"
    assert kinds(offer_events(api))[1:] == [("OFFER_STOCK_CHANGED", offer_id), ("OFFER_ENDED", offer_id)]
    assert [event["type"] for event in order_events(api, **{"from": events[1]["id"]})] == ["BOUGHT"]


def test_purchases_that_cannot_happen_are_refused_and_change_nothing(sim, api):
    live, ended = sim.add_offers("shop-a", [{"sku": "A", "stock": 2}, {"sku": "B", "stock": 3, "status": "ENDED"}])
    Api(sim, "shop-b")
    for offer_id, quantity in ((live, 3), (live, 0), (live, 1.5), (ended, 1)):
        with pytest.raises(PurchaseRefused):
            sim.purchase("shop-a", offer_id, quantity)
    with pytest.raises(OfferNotFound):
        sim.purchase("shop-b", live, 1)  # another seller's offer
    with pytest.raises(KeyError, match="no seller"):
        sim.purchase("nobody", live, 1)
    assert sim.offer(live)["stock"] == 2 and order_events(api) == [] and offer_events(api) == []


def test_the_harness_endpoints_buy_read_and_expire_outside_the_api(sim, api):
    a, b = sim.add_offers("shop-a", [{"sku": "A", "stock": 2}, {"sku": "B", "stock": 4}])
    harness = httpx.Client(base_url=f"{sim.base_url}/_simulator")
    sim.latency = 5.0  # API answers would take long; the harness's do not wait
    sim.set_faults(rate=1.0, kinds=("500",))  # nor fail
    sim.reset_requests()

    bought = harness.post("/purchases", json={"login": "shop-a", "offerId": a, "quantity": 2, "buyer": "ola"})
    assert bought.status_code == 201 and includes(bought.json(), {"available": 0, "status": "ENDED"})
    assert harness.post("/purchases", json={"login": "shop-a", "offerId": a, "quantity": 1}).status_code == 422
    assert harness.post("/purchases", json={"login": "shop-a", "offerId": "1", "quantity": 1}).status_code == 404
    assert harness.post("/purchases", json={"login": "shop-a", "offerId": b, "quantity": "1"}).status_code == 400
    assert harness.post("/purchases", content=b"[").status_code == 400

    read = harness.get("/offers", params=[("login", "shop-a"), ("sku", "B"), ("id", a), ("id", "1")])
    assert read.json() == {
        "offers": [
            {"id": a, "sku": "A", "stock": 0, "status": "ENDED", "ended_by": "EMPTY_STOCK"},
            {"id": b, "sku": "B", "stock": 4, "status": "ACTIVE", "ended_by": None},
        ]
    }
    assert harness.get("/offers", params={"login": "nobody"}).status_code == 404
    assert harness.post("/offer-events/expire", json={"login": "shop-a"}).status_code == 204
    assert harness.get("/unknown").status_code == 404
    assert sim.requests == []  # not API calls: nothing recorded, nothing rate-limited

    sim.latency = 0
    sim.clear_faults()
    assert offer_events(api) == []  # expired
    assert [event["type"] for event in order_events(api)] == ["BOUGHT", "READY_FOR_PROCESSING"]


def test_journal_routes_are_limited_and_faulted_like_the_others(sim, api):
    sim.set_faults(rate=1.0, kinds=("503",), paths=("/sale/offer-events", "/order/"), count=3)
    assert [api.get(path).status_code for path in ("/sale/offer-events", "/order/events", "/order/event-stats")] == [
        503
    ] * 3
    assert api.get("/order/event-stats").status_code == 200
    assert {record.route for record in sim.requests if record.status == 503} == {
        "/sale/offer-events",
        "/order/events",
        "/order/event-stats",
    }


# ---- HTTP plumbing -------------------------------------------------------------------


def test_keep_alive_and_stop():
    sim = start_simulator()
    api = Api(sim, "shop-a")
    for _ in range(3):
        answer = api.get("/sale/offers")
        assert answer.headers["content-length"] == str(len(answer.content))
    sim.stop()
    with pytest.raises(httpx.TransportError):
        api.get("/sale/offers")


# ---- FakeTelegram --------------------------------------------------------------------


@pytest.fixture
def telegram():
    with FakeTelegram() as fake:
        yield fake


def send(telegram: FakeTelegram, **params) -> httpx.Response:
    return httpx.post(f"{telegram.api_url}/bot123:ABC/sendMessage", json=params)


def test_telegram_accepts_valid_messages(telegram):
    html = (
        '<b>Sync</b> <i>done</i>: <a href="https://allegro.pl/oferta/1">offer</a> '
        '<code>SKU&lt;1&gt;</code> &amp; <span class="tg-spoiler">x</span> &#39;ok&#x27;'
    )
    answer = send(telegram, chat_id=42, text=html, parse_mode="HTML", disable_web_page_preview=True)
    assert answer.status_code == 200 and answer.json()["ok"] is True
    result = answer.json()["result"]
    assert result["message_id"] == 1 and result["text"] == "Sync done: offer SKU<1> & x 'ok'"
    form = httpx.post(f"{telegram.api_url}/bot123:ABC/sendMessage", data={"chat_id": "-100", "text": "a < b"})
    assert form.status_code == 200
    assert telegram.messages == [
        {"token": "123:ABC", "chat_id": 42, "text": html, "parse_mode": "HTML", "message_id": 1},
        {"token": "123:ABC", "chat_id": -100, "text": "a < b", "parse_mode": None, "message_id": 2},
    ]
    telegram.reset()
    assert telegram.messages == []


@pytest.mark.parametrize(
    "text, problem",
    [
        ("<b>open", 'Can\'t find end tag corresponding to start tag "b"'),
        ("<b><i>x</b></i>", 'Unmatched end tag at byte offset 7, expected "</i>", found "</b>"'),
        ("line<br>next", 'Unsupported start tag "br" at byte offset 4'),
        ("<span>x</span>", 'Tag "span" must have class "tg-spoiler"'),
        ("a &nbsp; b", 'Unsupported entity "&nbsp;"'),
        ("fish & chips", 'Unescaped "&" at byte offset 5'),
        ("x</b>", "Unexpected end tag at byte offset 1"),
        ("a < b", "Unclosed start tag at byte offset 2"),
    ],
)
def test_telegram_refuses_html_it_cannot_parse(telegram, text, problem):
    answer = send(telegram, chat_id=1, text=text, parse_mode="HTML")
    assert answer.status_code == 400
    body = answer.json()
    assert body["ok"] is False and body["error_code"] == 400
    assert body["description"].startswith("Bad Request: can't parse entities: ") and problem in body["description"]
    assert telegram.messages == []


def test_telegram_checks_length_and_required_fields(telegram):
    assert send(telegram, chat_id=1, text="x" * 4096).status_code == 200
    too_long = send(telegram, chat_id=1, text="x" * 4097)
    assert too_long.json()["description"] == "Bad Request: message is too long"
    assert send(telegram, chat_id=1, text="<b>" + "x" * 4096 + "</b>", parse_mode="HTML").status_code == 200
    assert send(telegram, text="hi").json()["description"] == "Bad Request: chat_id is empty"
    assert send(telegram, chat_id=1, text="").json()["description"] == "Bad Request: message text is empty"
    assert httpx.post(f"{telegram.api_url}/bot123:ABC/getUpdates").status_code == 404


def test_telegram_get_me_answers_the_bot_and_unknown_tokens_get_401(telegram):
    me = httpx.get(f"{telegram.api_url}/bot123:ABC/getMe")
    assert me.status_code == 200 and me.json()["ok"] is True and me.json()["result"]["is_bot"] is True
    assert me.json()["result"]["username"] == "fake_stock_bot"
    telegram.accepted_tokens = {"123:ABC"}
    assert httpx.get(f"{telegram.api_url}/bot123:ABC/getMe").status_code == 200
    rejected = httpx.get(f"{telegram.api_url}/bot999:XYZ/getMe")
    assert rejected.status_code == 401 and rejected.json() == {
        "ok": False,
        "error_code": 401,
        "description": "Unauthorized",
    }
    assert httpx.post(f"{telegram.api_url}/bot999:XYZ/sendMessage", json={"chat_id": 1, "text": "x"}).status_code == 401
    assert telegram.messages == []


def test_telegram_fail_next_answers_429_with_retry_after(telegram):
    telegram.fail_next(2, retry_after=3)
    for _ in range(2):
        answer = send(telegram, chat_id=1, text="hi")
        assert answer.status_code == 429
        assert answer.json() == {
            "ok": False,
            "error_code": 429,
            "description": "Too Many Requests: retry after 3",
            "parameters": {"retry_after": 3},
        }
    assert send(telegram, chat_id=1, text="hi").status_code == 200
    assert len(telegram.messages) == 1
