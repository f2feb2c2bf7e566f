"""Allegro REST API client for one seller account.

Every call passes the shared rate limiter first, carries the vendor media type and a
User-Agent, and is retried (tenacity) on 429, 5xx, timeouts and dropped connections
with exponential backoff. Retried writes are safe: command ids are idempotency keys
and PATCH sets an absolute value. A 401 gets exactly one fresh token (re-read or
refreshed by the token source) and one more try.
"""

from __future__ import annotations

import contextvars
import threading
import time
from collections import Counter, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping, Protocol

import httpx
import pandas as pd
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from stock_pipeline.allegro.http import (
    DEFAULT_RATE_LIMIT_BACKOFF,
    MEDIA_TYPE,
    api_headers,
    backoff_seconds,
    error_detail,
    json_body,
    retry_after_seconds,
)
from stock_pipeline.allegro.listing import offers_page
from stock_pipeline.core.snapshot import MAX_QUANTITY
from stock_pipeline.foundation.errors import (
    AllegroApiError,
    AllegroOfferNotFoundError,
    AllegroRateLimitError,
    AllegroSyncError,
    AllegroTokenError,
    OfferEventsCursorExpiredError,
)
from stock_pipeline.foundation.logs import get_logger, redact_text

log = get_logger(__name__)

LISTING_PAGE_SIZE = 1000
COMMAND_MAX_OFFERS = 1000
TASKS_PAGE_SIZE = 1000
# A wait for a rate budget longer than this is logged (shorter ones are the normal pace).
LOGGED_WAIT_SECONDS = 1.0
EVENTS_PAGE_SIZE = 1000  # the most events GET /sale/offer-events and GET /order/events give per call
# offer.id values per GET /sale/offers call. The spec sets no cap (it caps external.id at
# 100); 100 ids of 11 digits make a URL of ~2.3 KB, well under the 8 KB many proxies and
# servers accept, and the answer one page (limit = the ids asked for).
OFFERS_BY_ID_CHUNK = 100
# The spec's offer event types (getOfferEvents), and those that can change stock or status.
OFFER_EVENT_TYPES = (
    "OFFER_ACTIVATED",
    "OFFER_CHANGED",
    "OFFER_ENDED",
    "OFFER_STOCK_CHANGED",
    "OFFER_PRICE_CHANGED",
    "OFFER_ARCHIVED",
    "OFFER_BID_PLACED",
    "OFFER_BID_CANCELED",
    "OFFER_TRANSLATION_UPDATED",
    "OFFER_VISIBILITY_CHANGED",
    "OFFER_DELIVERY_COUNTRIES_BLOCKED",
)
STOCK_EVENT_TYPES = ("OFFER_ACTIVATED", "OFFER_ENDED", "OFFER_STOCK_CHANGED", "OFFER_ARCHIVED")
# The spec's OrderEventType.
ORDER_EVENT_TYPES = (
    "BOUGHT",
    "FILLED_IN",
    "READY_FOR_PROCESSING",
    "BUYER_CANCELLED",
    "FULFILLMENT_STATUS_CHANGED",
    "BUYER_MODIFIED",
    "AUTO_CANCELLED",
)
# Allegro documents that an unknown or expired offer-events `from` is an error, not which
# status it gets (the simulator answers 400, the status the spec declares for bad
# parameters). Everything else the client sends is checked before sending, so any of
# these answers to a read with a cursor is about the cursor.
CURSOR_REFUSED = (400, 404, 422)


class AccessTokenSource(Protocol):
    def current(self) -> str:
        """A usable access token (refreshing first when it is near expiry)."""

    def after_unauthorised(self, rejected: str) -> str:
        """A token to try after `rejected` got 401: re-read first, refresh only if still the same."""


class RateLimiter(Protocol):
    def acquire(self, cost: int = 1) -> float: ...

    def penalise(self, seconds: float) -> None: ...


@dataclass(frozen=True)
class WriteBudgets:
    """Allegro's per-user write limits, on top of the per-client_id request limit:
    offer changes through commands (counted per offer) and PATCHes of product offers."""

    offer_changes: RateLimiter
    patches: RateLimiter


class _Retryable(AllegroSyncError):
    """Internal: a failure that another attempt may fix."""

    def __init__(self, message: str, retry_after: float | None = None, rate_limited: bool = False):
        super().__init__(message)
        self.retry_after = retry_after
        self.rate_limited = rate_limited


class _StillProcessing(Exception):
    """Internal: a PATCH answered 409, an earlier change of the offer is still being processed."""

    def __init__(self, retry_after: float | None):
        super().__init__("409")
        self.retry_after = retry_after


@dataclass
class CallStats:
    """Counts of HTTP requests sent (retries included), by route; the client's worker
    threads count concurrently, so every change is made under the lock."""

    by_route: Counter = field(default_factory=Counter)
    rate_limited: int = 0
    retries: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_route.values())

    def record(self, route: str) -> None:
        with self._lock:
            self.by_route[route] += 1

    def count_rate_limited(self) -> None:
        with self._lock:
            self.rate_limited += 1

    def count_retry(self) -> None:
        with self._lock:
            self.retries += 1


@dataclass(frozen=True)
class PatchOutcome:
    """200: done. 202: `operation_url` to poll."""

    status: int
    operation_url: str | None = None
    retry_after: float | None = None


@dataclass(frozen=True)
class OfferEvent:
    """An entry of the account's offer journal: which offer changed and how, never to
    what (re-read the offer: `offers_by_id`)."""

    id: str  # the cursor to read on from (`after`)
    type: str
    occurred_at: str  # ISO 8601, as Allegro sends it
    offer_id: str
    sku: str | None  # the offer's external.id

    @classmethod
    def from_json(cls, event: dict) -> OfferEvent:
        offer = event.get("offer") or {}
        return cls(event["id"], event["type"], event.get("occurredAt", ""), str(offer["id"]), _external_id(offer))


@dataclass(frozen=True)
class OrderLineItem:
    id: str
    offer_id: str
    sku: str | None  # the offer's external.id when bought
    quantity: int
    bought_at: str | None


@dataclass(frozen=True)
class OrderEvent:
    """An entry of the account's order journal (BOUGHT, READY_FOR_PROCESSING …): the
    only place that tells a sale from another application's change of stock."""

    id: str  # the cursor to read on from (`after`)
    type: str
    occurred_at: str
    checkout_form_id: str | None
    line_items: tuple[OrderLineItem, ...]
    # The event as Allegro sent it: core/sale_holds.py reads the sales from it, naming
    # anything missing in Allegro's own field names.
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, event: dict) -> OrderEvent:
        order = event.get("order") or {}
        items = tuple(
            OrderLineItem(
                str(item["id"]),
                str(item["offer"]["id"]),
                _external_id(item["offer"]),
                int(item["quantity"]),
                item.get("boughtAt"),
            )
            for item in order.get("lineItems") or []
        )
        return cls(
            str(event["id"]),
            event["type"],
            event.get("occurredAt", ""),
            (order.get("checkoutForm") or {}).get("id"),
            items,
            raw=event,
        )


def _external_id(offer: dict) -> str | None:
    return (offer.get("external") or {}).get("id")


def _events_query(after: str | None, limit: int, types: Iterable[str], known: tuple[str, ...]) -> list[tuple]:
    """The query of a journal read, checked first: Allegro's answer to a bad one would not say which part was wrong."""
    if not 1 <= limit <= EVENTS_PAGE_SIZE:
        raise ValueError(f"an events limit must be 1..{EVENTS_PAGE_SIZE}, got {limit}")
    if isinstance(types, str):
        raise ValueError(f"event types must be a collection of names, got the string {types!r}")
    types = list(dict.fromkeys(types))
    unknown = [kind for kind in types if kind not in known]
    if unknown:
        raise ValueError(f"unknown event types {unknown}; Allegro knows {', '.join(known)}")
    return [("limit", limit), *(("type", kind) for kind in types), *((("from", after),) if after is not None else ())]


class AllegroClient:
    def __init__(
        self,
        api_url: str,
        tokens: AccessTokenSource,
        limiter: RateLimiter,
        *,
        retry_count: int = 3,
        retry_delay: float = 30.0,
        timeout: float = 30.0,
        rate_limit_pause: float = DEFAULT_RATE_LIMIT_BACKOFF,
        write_budgets: WriteBudgets | None = None,
        http: httpx.Client | None = None,
        account: str = "",
        observe_response: Callable[[str, float], None] | None = None,
        concurrency: int = 1,
    ):
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.api_url = api_url.rstrip("/")
        self._tokens = tokens
        self._limiter = limiter
        self._retry_count = retry_count
        self._retry_delay = retry_delay
        self._rate_limit_pause = rate_limit_pause
        self._write_budgets = write_budgets
        # Calls of this account in flight at once (ALLEGRO_SYNC_CONCURRENCY), each still
        # drawn from the shared limiter; every one of them keeps its connection alive.
        self.concurrency = concurrency
        self._http = http or httpx.Client(
            timeout=timeout, limits=httpx.Limits(max_keepalive_connections=max(8, concurrency))
        )
        self._account = account
        self._observe_response = observe_response
        self.stats = CallStats()

    def close(self) -> None:
        self._http.close()
        close_tokens = getattr(self._tokens, "close", None)
        if close_tokens:  # the token source's own HTTP client (OAuth)
            close_tokens()

    # ---- transport -------------------------------------------------------------------

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, _Retryable) else None
        if isinstance(exc, _Retryable) and exc.rate_limited and retry_after is None:
            retry_after = self._rate_limit_pause
        return backoff_seconds(state.attempt_number, self._retry_delay, retry_after)

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception()
        self.stats.count_retry()
        method, path = state.args[0], state.args[1]
        sleep = round(state.next_action.sleep, 2)
        log.warning(
            "allegro_retry",
            account=self._account,
            attempt=state.attempt_number,
            error=str(exc),
            sleep=sleep,
            call=f"{method} {path}",
            msg=f"retry {state.attempt_number}/{self._retry_count} of {method} {path} in {sleep:g} s: {exc}",
        )

    def _acquire(self, limiter: RateLimiter, cost: int, budget: str) -> None:
        waited = limiter.acquire(cost)
        if waited > LOGGED_WAIT_SECONDS:
            log.info(
                "rate_limit_wait",
                account=self._account,
                budget=budget,
                seconds=round(waited, 2),
                msg=f"waited {waited:.1f} s for the {budget}",
            )

    def request(
        self, method: str, path: str, *, route: str, params: Any = None, json: Any = None, allowed: tuple[int, ...] = ()
    ) -> httpx.Response:
        """Sends with retries; returns 2xx answers and those in `allowed`, raises typed errors otherwise."""
        retrying = Retrying(
            stop=stop_after_attempt(self._retry_count + 1),
            wait=self._wait,
            retry=retry_if_exception_type(_Retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        try:
            return retrying(self._send_authorised, method, path, route, params, json, allowed)
        except _Retryable as exc:
            if exc.rate_limited:
                raise AllegroRateLimitError(
                    f"{method} {path}: still rate limited after {self._retry_count} retries"
                ) from None
            raise AllegroSyncError(f"{method} {path}: {exc} (after {self._retry_count} retries)") from None

    def _send_authorised(self, method, path, route, params, json, allowed) -> httpx.Response:
        token = self._tokens.current()
        response = self._send_once(method, path, route, params, json, token)
        if response.status_code == 401:
            token = self._tokens.after_unauthorised(token)
            response = self._send_once(method, path, route, params, json, token)
            if response.status_code == 401:
                raise AllegroTokenError(
                    f"{method} {path}: access token rejected twice ({redact_text(error_detail(response))})"
                )
        return self._classify(method, path, response, allowed)

    def _send_once(self, method, path, route, params, json, token) -> httpx.Response:
        self._acquire(self._limiter, 1, "shared request budget (all accounts and processes)")
        headers = api_headers() | {"Authorization": f"Bearer {token}"}
        if json is not None:
            headers["Content-Type"] = MEDIA_TYPE
        started = time.monotonic()
        try:
            return self._http.request(method, self.api_url + path, params=params, json=json, headers=headers)
        except httpx.TimeoutException as exc:
            raise _Retryable(f"timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise _Retryable(f"connection failed ({type(exc).__name__})") from None
        finally:
            elapsed = time.monotonic() - started
            self.stats.record(route)
            if self._observe_response:
                self._observe_response(route, elapsed)

    def _classify(self, method: str, path: str, response: httpx.Response, allowed: tuple[int, ...]) -> httpx.Response:
        status = response.status_code
        if 200 <= status < 300 or status in allowed:
            return response
        if status == 429:
            self.stats.count_rate_limited()
            retry_after = retry_after_seconds(response)
            pause = retry_after if retry_after is not None else self._rate_limit_pause
            # Everyone sharing the client_id backs off, not just this caller.
            self._limiter.penalise(pause)
            log.warning(
                "rate_limit_pause",
                account=self._account,
                call=f"{method} {path}",
                seconds=round(pause, 2),
                retry_after=retry_after is not None,
                msg=f"429 on {method} {path}: every process sharing the client_id pauses {pause:g} s "
                f"({'Retry-After' if retry_after is not None else 'no Retry-After: ALLEGRO_SYNC_RATE_LIMIT_PAUSE'})",
            )
            raise _Retryable(f"429 {error_detail(response)}", retry_after=retry_after, rate_limited=True)
        if status >= 500:
            raise _Retryable(f"HTTP {status} {error_detail(response)}", retry_after=retry_after_seconds(response))
        if status == 404:
            raise AllegroOfferNotFoundError(f"{method} {path}: not found ({error_detail(response)})")
        raise AllegroApiError(method, path, status, error_detail(response))

    # ---- offers ------------------------------------------------------------------------

    def list_offers_page(self, offset: int, limit: int = LISTING_PAGE_SIZE) -> dict:
        return json_body(
            self.request("GET", "/sale/offers", route="GET /sale/offers", params={"limit": limit, "offset": offset})
        )

    def iter_offer_pages(self) -> Iterator[tuple[list[dict], int]]:
        """Every offer of the account, 1000 at a time and in offset order, each page with
        the total Allegro reports; stops at totalCount without an extra call.

        The first page's totalCount gives every other offset, so the rest are fetched
        `concurrency` at a time (each call through the limiter, like any other). Pages are
        asked for at fixed offsets: one that comes back short or empty leaves offers out,
        which the caller sees as fewer offers than the total. When the pages disagree on the
        total (offers created or deleted while listing) the largest one is given from then on,
        so a listing that shrank under it cannot pass for complete; a total that grew is
        listed on to its end.
        """
        return self._listing(self._offers_of_page)

    def iter_offer_frames(self) -> Iterator[tuple[pd.DataFrame, int]]:
        """The listing of iter_offer_pages, each page as the offer map's columns, decoded
        by the worker that fetched it (allegro/listing.py): of a page's ~450 KB only the
        four fields the pipeline reads become objects, and a page waiting to be read holds
        those columns rather than a dict for every field of 1 000 offers."""
        return self._listing(self._offers_frame_of_page)

    def _offers_of_page(self, offset: int) -> tuple[list[dict], int]:
        page = self.list_offers_page(offset)
        return page.get("offers") or [], int(page.get("totalCount", 0))

    def _offers_frame_of_page(self, offset: int) -> tuple[pd.DataFrame, int]:
        params = {"limit": LISTING_PAGE_SIZE, "offset": offset}
        return offers_page(self.request("GET", "/sale/offers", route="GET /sale/offers", params=params).content)

    def _listing(self, read_page: Callable[[int], tuple[Any, int]]) -> Iterator[tuple[Any, int]]:
        offers, total = read_page(0)
        self._log_listing_page(0, len(offers), total)
        yield offers, total
        if len(offers) == 0:
            return
        # Submitted ahead of the page being yielded, so no worker idles behind a slow page.
        look_ahead = 2 * self.concurrency
        pending: deque[tuple[int, Future]] = deque()
        next_offset = LISTING_PAGE_SIZE
        ended = False
        pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"listing-{self._account}")
        try:
            while True:
                while not ended and len(pending) < look_ahead and next_offset < total:
                    pending.append((next_offset, self._submit(pool, read_page, next_offset)))
                    next_offset += LISTING_PAGE_SIZE
                if not pending:
                    return
                offset, future = pending.popleft()
                offers, page_total = future.result()
                total = max(total, page_total)
                self._log_listing_page(offset, len(offers), total)
                yield offers, total
                ended = ended or len(offers) == 0  # past the end: the listing shrank, ask for nothing further
        finally:
            # A failed page or a caller that stopped reading: the queued pages are not sent.
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _submit(pool: ThreadPoolExecutor, fn: Callable, *args) -> Future:
        """`fn(*args)` in a worker, in a copy of this context: the run-log bridge and the
        bound log fields are ContextVars, which a pool's threads would not see otherwise."""
        return pool.submit(contextvars.copy_context().run, fn, *args)

    def _log_listing_page(self, offset: int, count: int, total: int) -> None:
        pages = max(1, -(-total // LISTING_PAGE_SIZE))
        log.info(
            "listing_page",
            account=self._account,
            offset=offset,
            count=count,
            total=total,
            msg=f"listing page {offset // LISTING_PAGE_SIZE + 1}/{pages} "
            + (f"(offers {offset}–{offset + count - 1} of {total})" if count else f"(empty, {total} offers)"),
        )

    def offers_by_id(self, offer_ids: Iterable[str]) -> list[dict]:
        """The listing items (as `iter_offer_pages` yields them) of these offers, each id
        once; an offer Allegro no longer has (or another account's) is simply absent.
        `GET /sale/offers?offer.id=…`, OFFERS_BY_ID_CHUNK ids a call, `concurrency` calls
        at once, in the order of the ids' chunks."""
        ids = list(dict.fromkeys(str(offer_id) for offer_id in offer_ids))
        chunks = [ids[start : start + OFFERS_BY_ID_CHUNK] for start in range(0, len(ids), OFFERS_BY_ID_CHUNK)]
        if len(chunks) <= 1 or self.concurrency == 1:
            return [offer for chunk in chunks for offer in self._offers_chunk(chunk)]
        workers = min(self.concurrency, len(chunks))
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"offers-by-id-{self._account}")
        try:
            futures = [self._submit(pool, self._offers_chunk, chunk) for chunk in chunks]
            return [offer for future in futures for offer in future.result()]
        finally:
            # A failed chunk fails the call: the chunks not yet sent are not sent.
            pool.shutdown(wait=True, cancel_futures=True)

    def _offers_chunk(self, offer_ids: list[str]) -> list[dict]:
        params = [("offer.id", offer_id) for offer_id in offer_ids] + [("limit", len(offer_ids)), ("offset", 0)]
        response = self.request("GET", "/sale/offers", route="GET /sale/offers?offer.id", params=params)
        return json_body(response).get("offers") or []

    # ---- event journals ----------------------------------------------------------------

    def offer_events(
        self, after: str | None, limit: int = EVENTS_PAGE_SIZE, types: Iterable[str] = STOCK_EVENT_TYPES
    ) -> list[OfferEvent]:
        """One page of the account's offer journal (`GET /sale/offer-events`): up to
        `limit` events after the event `after` (None: from the oldest kept, Allegro keeps
        24 h), oldest first, of `types` (empty: every type). The next read goes on from
        the last event's id (from `after` again when the page is empty). A page shorter
        than `limit` reached the journal's end as it stands.

        OfferEventsCursorExpiredError when Allegro refuses `after` (unknown, expired):
        the events since are lost, the offers must be listed in full again."""
        params = _events_query(after, limit, types, OFFER_EVENT_TYPES)
        response = self.request(
            "GET",
            "/sale/offer-events",
            route="GET /sale/offer-events",
            params=params,
            allowed=CURSOR_REFUSED if after is not None else (),
        )
        if response.status_code in CURSOR_REFUSED:
            raise OfferEventsCursorExpiredError(self._account, after, response.status_code, error_detail(response))
        return [OfferEvent.from_json(event) for event in json_body(response).get("offerEvents") or []]

    def offer_events_head(self, after: str | None = None) -> str | None:
        """The id of the newest event of the offer journal: the cursor to follow it from.
        `after`: a cursor known to be recent, to read from there (returned itself when
        nothing is newer); None: from the oldest event kept (returns None when the journal
        is empty, and None is then the cursor: every event to come is after it).

        Allegro has no call for it (as /order/event-stats is for orders), so the journal
        is read to its end, every type, EVENTS_PAGE_SIZE events a call: 1 + ⌊events
        read / 1000⌋ calls, up to a day's events from None. Take it before a full listing,
        not after, so the changes made while listing are read again rather than missed."""
        head = after
        while True:
            page = self.offer_events(head, EVENTS_PAGE_SIZE, types=())
            if page:
                head = page[-1].id
            if len(page) < EVENTS_PAGE_SIZE:
                return head

    def order_events(
        self, after: str | None, types: Iterable[str] = ("BOUGHT",), limit: int = EVENTS_PAGE_SIZE
    ) -> list[OrderEvent]:
        """One page of the account's order journal (`GET /order/events`, Allegro keeps 60
        days): up to `limit` events after the event `after` (None: from the oldest),
        oldest first, of `types` (empty: every type). Each event's line items name the
        offer (id, external.id) and the quantity bought."""
        params = _events_query(after, limit, types, ORDER_EVENT_TYPES)
        response = self.request("GET", "/order/events", route="GET /order/events", params=params)
        return [OrderEvent.from_json(event) for event in json_body(response).get("events") or []]

    def latest_order_event_id(self) -> str | None:
        """The id of the account's newest order event (`GET /order/event-stats`, one call):
        the cursor to follow the order journal from; None when it has no events."""
        response = self.request("GET", "/order/event-stats", route="GET /order/event-stats")
        return (json_body(response).get("latestEvent") or {}).get("id")

    def patch_stock(self, offer_id: str, available: int) -> PatchOutcome:
        """202 → poll `operation_url`; 409 (a change of this offer is still processed) is retried."""
        body = {"stock": {"available": int(available)}}
        if self._write_budgets:
            self._acquire(self._write_budgets.patches, 1, "account's PATCH budget")
        retrying = Retrying(
            stop=stop_after_attempt(self._retry_count + 1),
            wait=self._wait_still_processing,
            retry=retry_if_exception_type(_StillProcessing),
            retry_error_callback=self._still_processing_gave_up,
        )
        response = retrying(self._patch_once, f"/sale/product-offers/{offer_id}", body)
        return PatchOutcome(response.status_code, response.headers.get("Location"), retry_after_seconds(response))

    def _patch_once(self, path: str, body: dict) -> httpx.Response:
        response = self.request("PATCH", path, route="PATCH /sale/product-offers/{id}", json=body, allowed=(409,))
        if response.status_code == 409:
            raise _StillProcessing(retry_after_seconds(response))
        return response

    def _wait_still_processing(self, state: RetryCallState) -> float:
        return self._still_processing_pause(state.attempt_number, state.outcome.exception().retry_after)

    def _still_processing_gave_up(self, state: RetryCallState) -> None:
        # No pause after the last 409: nothing follows it but the error (the old loop slept here
        # for nothing, up to a minute per offer).
        raise AllegroApiError("PATCH", state.args[0], 409, "an earlier change of the offer is still being processed")

    def _still_processing_pause(self, attempt: int, retry_after: float | None) -> float:
        """Exponential from ALLEGRO_SYNC_RETRY_DELAY (at least 0.2 s); Retry-After wins when longer."""
        return backoff_seconds(attempt, max(self._retry_delay, 0.2), retry_after)

    def operation_done(self, operation_url: str) -> bool:
        """True once the PATCH operation finished (303), False while it runs (202)."""
        path = operation_url.removeprefix(self.api_url) if operation_url.startswith("http") else operation_url
        response = self.request("GET", path, route="GET /sale/product-offers/{id}/operations/{op}", allowed=(303,))
        return response.status_code != 202

    # ---- commands ----------------------------------------------------------------------

    def put_quantity_command(self, command_id: str, value: int, offer_ids: list[str]) -> dict:
        if not 1 <= value <= MAX_QUANTITY:
            raise ValueError(f"quantity command value must be 1..{MAX_QUANTITY}, got {value}")
        return self._put_command(
            "offer-quantity-change-commands",
            command_id,
            offer_ids,
            {"modification": {"changeType": "FIXED", "value": int(value)}},
        )

    def put_publication_command(self, command_id: str, action: str, offer_ids: list[str]) -> dict:
        if action not in ("END", "ACTIVATE"):
            raise ValueError(f"publication action must be END or ACTIVATE, got {action!r}")
        return self._put_command(
            "offer-publication-commands", command_id, offer_ids, {"publication": {"action": action}}
        )

    def _put_command(self, resource: str, command_id: str, offer_ids: list[str], body: dict) -> dict:
        if not 1 <= len(offer_ids) <= COMMAND_MAX_OFFERS:
            raise ValueError(f"a command takes 1..{COMMAND_MAX_OFFERS} offers, got {len(offer_ids)}")
        if self._write_budgets:
            self._acquire(self._write_budgets.offer_changes, len(offer_ids), "account's offer-changes budget")
        body = body | {"offerCriteria": [{"type": "CONTAINS_OFFERS", "offers": [{"id": str(i)} for i in offer_ids]}]}
        # A 409 means this id is registered already: a retry of a PUT that did reach Allegro.
        response = self.request(
            "PUT", f"/sale/{resource}/{command_id}", route=f"PUT /sale/{resource}/{{id}}", json=body, allowed=(409,)
        )
        return json_body(response) if response.status_code != 409 else {"id": command_id}

    def command_tasks(self, resource: str, command_id: str, offset: int = 0) -> list[dict]:
        response = self.request(
            "GET",
            f"/sale/{resource}/{command_id}/tasks",
            route=f"GET /sale/{resource}/{{id}}/tasks",
            params={"limit": TASKS_PAGE_SIZE, "offset": offset},
        )
        return json_body(response).get("tasks") or []
