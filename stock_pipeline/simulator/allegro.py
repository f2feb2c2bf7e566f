"""AllegroSimulator: Allegro's REST API (/sale, and the order journal under /order) and
authorisation server (/auth/oauth) as a real HTTP server on loopback, for tests and local
runs of the stock sync; and, outside the API, the test harness's endpoints under
/_simulator/ (harness.py: purchases by buyers, reads of offers, expiring a journal).

Every API request is served in its own thread (one per connection) and first waits the
configured latency there, so concurrent requests overlap as they do at Allegro; then it
passes, in this order: the spec check (violations are recorded
whatever happens next), fault injection (before anything has an effect), the bearer
token (401), the client_id rate limit (429 and a block), the answer to the first spec
violation (406/415/400/404/405), then the operation itself (which may hit a seller's
write limit, 429 without a block).
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Iterable, Mapping
from urllib.parse import parse_qs, parse_qsl, urlsplit

from stock_pipeline.simulator import harness
from stock_pipeline.simulator.faults import FAULT_KINDS, FaultInjector
from stock_pipeline.simulator.journal_api import JournalApi
from stock_pipeline.simulator.loopback import JsonRequestHandler, LoopbackServer, Reply
from stock_pipeline.simulator.oauth import InvalidToken, OAuthServer, TokenStore
from stock_pipeline.simulator.rate_limits import ClientRateLimit, SellerWriteLimits
from stock_pipeline.simulator.sale_api import MEDIA_TYPE, SaleApi, SaleRequest, SellerLimitExceeded, error_reply
from stock_pipeline.simulator.spec_validation import RequestCheck, SpecValidator
from stock_pipeline.simulator.state import Marketplace

AUTH_PREFIX = "/auth/oauth"
RATE_LIMIT_WINDOW_SECONDS = 60.0
FAULT_REPLIES = {
    "500": (500, "InternalServerErrorException", "Internal server error"),
    "503": (503, "ServiceUnavailableException", "Service temporarily unavailable"),
    "timeout": (504, "GatewayTimeoutException", "Gateway timeout"),
}


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: dict[str, list[str]]
    status: int | None  # None: the connection was dropped without an answer
    login: str | None  # the seller the request acted for, when its token was valid
    client_id: str | None  # the client it counted for, when the client was identified
    started_at: float  # time.time()
    body: Any  # the parsed JSON body, None when absent or not JSON
    headers: dict[str, str]  # lower-case names
    route: str | None = None  # the spec's path template, e.g. /sale/product-offers/{offerId}
    fault: str | None = None  # the injected fault, if any
    limited_by: str | None = None  # "client" or "seller" when a rate limit refused it
    answered_at: float | None = None  # time.time() once the answer was ready (after the latency)


@dataclass
class _Outcome:
    reply: Reply | None  # None: hang up without answering
    route: str | None = None
    login: str | None = None
    client_id: str | None = None
    fault: str | None = None
    limited_by: str | None = None


class _AllegroHandler(JsonRequestHandler):
    def handle_request(self) -> None:
        self.server.app.serve(self)


class AllegroSimulator(LoopbackServer):
    handler_class = _AllegroHandler

    def __init__(
        self,
        client_id: str = "demo-client",
        client_secret: str = "demo-secret",
        *,
        rate_limit_per_minute: int = 9000,
        block_seconds: float = 60.0,
        rate_limit_window_seconds: float = RATE_LIMIT_WINDOW_SECONDS,
        command_task_delay: float = 0.2,
        patch_async_probability: float = 0.0,
        operation_delay: float = 0.2,
        access_token_ttl: int = 43199,
        user_command_limit_per_minute: int = 9000,
        user_command_limit_per_hour: int = 250_000,
        user_patch_limit_per_minute: int = 2500,
        validate_responses: bool = False,
        latency: float = 0.0,
        listing_latency: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
    ):
        super().__init__(host, port)
        self.client_id = client_id
        # Knobs read at each request, so tests may change them while the server runs.
        self.command_task_delay = command_task_delay
        self.patch_async_probability = patch_async_probability
        self.operation_delay = operation_delay
        self.fault_timeout_seconds = 5.0
        self.send_retry_after = False
        self.validate_responses = validate_responses
        # Seconds each /sale answer takes (Allegro: 0.1-0.5 s), slept in the request's own
        # handler thread so concurrent requests overlap; GET /sale/offers pages take
        # `listing_latency` instead when it is set. Benchmarks set them; tests keep 0.
        self.latency = latency
        self.listing_latency = listing_latency

        self.marketplace = Marketplace()
        self.write_limits = SellerWriteLimits(
            user_command_limit_per_minute, user_command_limit_per_hour, user_patch_limit_per_minute
        )
        self._tokens = TokenStore(access_token_ttl)
        self._oauth = OAuthServer(client_id, client_secret, self._tokens)
        self._client_limit = ClientRateLimit(rate_limit_per_minute, rate_limit_window_seconds, block_seconds)
        self._faults = FaultInjector()
        self._validator = SpecValidator()
        self._sale_api = SaleApi(self)
        self._sale_api.add_routes(JournalApi(self, self._validator.schema_enum("OrderEventType")).routes())

        self._records_lock = threading.Lock()
        self._requests: list[RequestRecord] = []
        self._spec_violations: list[str] = []
        self._response_violations: list[str] = []

    # ---- addresses -------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return self.base_url

    @property
    def auth_url(self) -> str:
        return self.base_url + AUTH_PREFIX

    # ---- sellers, tokens and offers --------------------------------------------------

    def add_seller(self, login: str) -> str:
        """Creates the seller (if new); returns a fresh refresh token for it."""
        self.marketplace.add_seller(login)
        return self._tokens.new_session(login)

    def issue_refresh_token(self, login: str) -> str:
        """Another session's refresh token; a seller keeps the newest 20 sessions."""
        self._require_seller(login)
        return self._tokens.new_session(login)

    def revoke_tokens(self, login: str) -> None:
        """Every token of the seller stops working (as after a password change)."""
        self._tokens.revoke(login)

    def expire_access_tokens(self, login: str) -> None:
        """The seller's access tokens answer 401 invalid_token; refresh tokens still work."""
        self._tokens.expire_access_tokens(login)

    def approve_device(self, user_code: str, login: str) -> None:
        """The seller confirms the device flow showing `user_code`."""
        self._require_seller(login)
        self._tokens.approve_device(user_code, login)

    @property
    def auto_approve_device(self) -> str | None:
        """A login: every device flow is confirmed as that seller at its first poll."""
        return self._oauth.auto_approve_login

    @auto_approve_device.setter
    def auto_approve_device(self, login: str | None) -> None:
        if login is not None:
            self._require_seller(login)
        self._oauth.auto_approve_login = login

    @property
    def device_interval(self) -> float:
        """Seconds a device flow asks clients to wait between polls (faster polls get slow_down)."""
        return self._oauth.device_interval

    @device_interval.setter
    def device_interval(self, seconds: float) -> None:
        self._oauth.device_interval = seconds

    def _require_seller(self, login: str) -> None:
        if not self.marketplace.has_seller(login):
            raise KeyError(f"no seller {login!r}; call add_seller first")

    def add_offers(self, login: str, offers: Iterable[Mapping[str, Any]], *, journal: bool = False) -> list[str]:
        """Each offer: sku, stock, and optionally id, status (default ACTIVE), ended_by, name.
        The offers are the world as it already is, unknown to the offer journal; with
        `journal` each ACTIVE one appends OFFER_ACTIVATED, as a listing published now does."""
        return self.marketplace.add_offers(login, offers, journal=journal)

    def offers(self, login: str) -> list[dict]:
        return [offer.summary() for offer in self.marketplace.offers(login)]

    def offer(self, offer_id: str) -> dict:
        return self.marketplace.offer(offer_id).summary()

    def offer_states(self, login: str, *, ids: Iterable[str] = (), skus: Iterable[str | None] = ()) -> list[dict]:
        """The seller's offers with one of these ids or SKUs, as they are now (like
        `offers`, but looked up: cheap for a few offers of a large seller)."""
        self._require_seller(login)
        return [offer.summary() for offer in self.marketplace.offer_states(login, offer_ids=ids, skus=skus)]

    def purchase(self, login: str, offer_id: str, quantity: int, *, buyer: str = "buyer", paid: bool = True) -> dict:
        """A buyer buys `quantity` units of seller `login`'s ACTIVE offer, as on allegro.pl:
        the stock drops at once (the offer ends at 0, endedBy EMPTY_STOCK), the offer
        journal gets OFFER_STOCK_CHANGED (and OFFER_ENDED), the order journal BOUGHT and,
        when `paid`, READY_FOR_PROCESSING. Raises OfferNotFound (a KeyError) for an offer
        that is not the seller's, PurchaseRefused (a ValueError) for one not ACTIVE or
        with fewer units. Returns checkoutFormId, lineItemId, offerId, quantity,
        available, status (after the purchase) and orderEventIds."""
        self._require_seller(login)
        return self.marketplace.purchase(login, offer_id, quantity, buyer, paid).as_dict()

    def expire_offer_events(self, login: str) -> None:
        """The seller's offer journal expires at once, as after 24 quiet hours: every
        cursor into it becomes unknown (GET /sale/offer-events answers 400)."""
        self._require_seller(login)
        self.marketplace.expire_offer_events(login)

    def set_offer(self, offer_id: str, **changes: Any) -> None:
        """An out-of-band change of stock, status and/or ended_by (the seller, another app);
        the offer journal records it as it records the API's changes."""
        self.marketplace.set_offer(offer_id, **changes)

    def remove_offers(self, offer_ids: Iterable[str]) -> None:
        """Offers that leave the listing, e.g. while a client pages through it; those that
        were published append OFFER_ARCHIVED."""
        self.marketplace.remove_offers(offer_ids)

    def lock_offers(self, offer_ids: Iterable[str], locked: bool = True) -> None:
        """Offers whose writes Allegro refuses (PATCH 422, command task FAIL), as it does
        for offers under moderation: a partly failed run without any transport fault."""
        self.marketplace.lock_offers(offer_ids, locked)

    # ---- faults ----------------------------------------------------------------------

    def set_faults(
        self,
        rate: float,
        kinds: Iterable[str] = FAULT_KINDS,
        seed: int | None = None,
        paths: Iterable[str] | None = None,
        count: int | None = None,
    ) -> None:
        """Faults on `rate` of the API requests whose path starts with one of `paths`
        (all when None), the first `count` of them only when given (`rate=1, count=1`:
        the next request fails); authorisation requests never fail."""
        self._faults.configure(rate, kinds, seed, paths, count)

    def clear_faults(self) -> None:
        self._faults.clear()

    # ---- what was seen ---------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._records_lock:
            return list(self._requests)

    @property
    def spec_violations(self) -> list[str]:
        with self._records_lock:
            return list(self._spec_violations)

    @property
    def response_violations(self) -> list[str]:
        """How the simulator's own answers departed from the spec (with validate_responses)."""
        with self._records_lock:
            return list(self._response_violations)

    def reset_requests(self) -> None:
        """Forgets what was seen: requests, spec and response violations (not the rate limits)."""
        with self._records_lock:
            self._requests.clear()
            self._spec_violations.clear()
            self._response_violations.clear()

    def stats(self) -> dict:
        records = self.requests
        by_status = Counter(record.status for record in records)
        return {
            "requests": len(records),
            "by_route": dict(Counter((record.method, record.route or record.path) for record in records)),
            "by_status": dict(by_status),
            "sent_429": by_status[429],
            "rate_limited": dict(Counter(record.limited_by for record in records if record.limited_by)),
            "faults": dict(Counter(record.fault for record in records if record.fault)),
            "spec_violations": len(self.spec_violations),
        }

    # ---- serving ---------------------------------------------------------------------

    def serve(self, handler: JsonRequestHandler) -> None:
        started_at = time.time()
        url = urlsplit(handler.path)
        query = parse_qs(url.query, keep_blank_values=True)
        headers = {name.lower(): value for name, value in handler.headers.items()}
        raw_body = handler.read_body()
        if url.path.startswith(harness.PREFIX):
            # The harness's own calls: not Allegro's, so not recorded, delayed or limited.
            handler.send_reply(harness.serve(self, handler.command, url.path, query, raw_body))
            return
        if url.path == AUTH_PREFIX or url.path.startswith(AUTH_PREFIX + "/"):
            outcome = self._serve_auth(handler.command, url.path, url.query, headers, raw_body)
        else:
            self._answer_delay(handler.command, url.path)
            outcome = self._serve_api(handler.command, url.path, query, headers, raw_body)
        # Recorded before answering, so a client that got the answer finds the record.
        self._record(
            RequestRecord(
                method=handler.command,
                path=url.path,
                query=query,
                status=outcome.reply.status if outcome.reply else None,
                login=outcome.login,
                client_id=outcome.client_id,
                started_at=started_at,
                body=_json_or_none(raw_body),
                headers=headers,
                route=outcome.route,
                fault=outcome.fault,
                limited_by=outcome.limited_by,
                answered_at=time.time(),
            )
        )
        if outcome.reply is None:
            handler.drop_connection()
        else:
            handler.send_reply(outcome.reply)

    def _answer_delay(self, method: str, path: str) -> None:
        listing = method == "GET" and path == "/sale/offers"
        seconds = self.listing_latency if listing and self.listing_latency is not None else self.latency
        if seconds > 0:
            self.stopping.wait(seconds)  # stop() cuts it short

    def _record(self, record: RequestRecord) -> None:
        with self._records_lock:
            self._requests.append(record)

    def _serve_auth(
        self, method: str, path: str, query_string: str, headers: dict[str, str], raw_body: bytes
    ) -> _Outcome:
        params = dict(parse_qsl(query_string))
        if headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            params.update(parse_qsl(raw_body.decode("utf-8", "replace")))
        reply, login = self._oauth.handle(method, path[len(AUTH_PREFIX) :], params, headers.get("authorization", ""))
        client_identified = reply.status != 401
        return _Outcome(reply, route=path, login=login, client_id=self.client_id if client_identified else None)

    def _serve_api(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], raw_body: bytes
    ) -> _Outcome:
        check = self._validator.check_request(method, path, query, headers, raw_body)
        if check.problems:
            with self._records_lock:
                self._spec_violations.extend(problem.message for problem in check.problems)
        outcome = self._api_outcome(method, path, query, headers, check)
        if self.validate_responses and outcome.reply is not None and check.route is not None:
            problems = self._validator.check_response(
                method, check.route, outcome.reply.status, outcome.reply.content_type, outcome.reply.json_value()
            )
            with self._records_lock:
                self._response_violations.extend(problems)
        return outcome

    def _api_outcome(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], check: RequestCheck
    ) -> _Outcome:
        outcome = _Outcome(None, route=check.route)

        outcome.fault = self._faults.draw(path)
        if outcome.fault is not None:
            outcome.reply = self._fault_reply(outcome.fault)
            return outcome

        scheme, _, token = headers.get("authorization", "").partition(" ")
        try:
            if scheme.lower() != "bearer":
                raise InvalidToken("Bearer access token required")
            outcome.login = self._tokens.authenticate(token.strip())
        except InvalidToken as problem:
            outcome.reply = Reply(
                401, {"error": "invalid_token", "error_description": str(problem)}, content_type=MEDIA_TYPE
            )
            return outcome
        outcome.client_id = self.client_id

        blocked_for = self._client_limit.admit(self.client_id)
        if blocked_for is not None:
            retry_after = {"Retry-After": str(math.ceil(blocked_for))} if self.send_retry_after else {}
            outcome.reply, outcome.limited_by = _rate_limited(retry_after), "client"
            return outcome

        if check.problems:
            first = check.problems[0]
            media_type = self._validator.answer_media_type(method, check.route, first.status) or MEDIA_TYPE
            outcome.reply = error_reply(first.status, first.code, first.message, media_type=media_type)
            return outcome

        try:
            outcome.reply = self._sale_api.handle(
                method, check.route, SaleRequest(outcome.login, check.path_params, query, check.body)
            )
        except SellerLimitExceeded:
            outcome.reply, outcome.limited_by = _rate_limited({}), "seller"
        return outcome

    def _fault_reply(self, fault: str) -> Reply | None:
        if fault == "drop":
            return None
        if fault == "429":
            return _rate_limited({})
        if fault == "timeout":
            # Longer than the client waits; stop() cuts the wait short.
            self.stopping.wait(self.fault_timeout_seconds)
        return error_reply(*FAULT_REPLIES[fault])


def _rate_limited(headers: dict[str, str]) -> Reply:
    return error_reply(429, "RateLimitExceedException", "Limit exceeded", headers=headers)


def _json_or_none(raw_body: bytes) -> Any:
    if not raw_body:
        return None
    try:
        return json.loads(raw_body)
    except ValueError:
        return None
