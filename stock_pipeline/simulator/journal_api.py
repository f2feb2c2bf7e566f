"""What the simulated event journals answer: GET /sale/offer-events, GET /order/events and
GET /order/event-stats, once a request has been authenticated, admitted by the client
limit and found to conform to the spec (which has checked `limit` 1..1000 and the offer
event types). The journals' rules are in journals.py."""

from __future__ import annotations

import zlib
from typing import Callable, Collection, Mapping

from stock_pipeline.simulator.journals import OfferEvent, OrderEvent, UnknownEventId
from stock_pipeline.simulator.loopback import Reply
from stock_pipeline.simulator.sale_api import (
    MARKETPLACES,
    MEDIA_TYPE,
    SELLING_MODE,
    SaleRequest,
    SimulatorSetup,
    error_reply,
    iso_time,
)

DEFAULT_EVENTS_LIMIT = 100
# The spec declares this operation's 400 answer as application/json, not the vendor type.
OFFER_EVENTS_ERROR_MEDIA_TYPE = "application/json"


def offer_event_view(event: OfferEvent) -> dict:
    """SellerOfferBaseEvent: no stock or status, only which offer."""
    offer: dict = {"id": event.offer_id, "external": {"id": event.sku} if event.sku is not None else None}
    if event.ended_by is not None:
        offer["publication"] = {"endedBy": event.ended_by}
    return {"id": event.id, "occurredAt": iso_time(event.occurred_at), "type": event.type, "offer": offer}


def order_event_view(event: OrderEvent) -> dict:
    """OrderEvent: the order as it stood when the event occurred."""
    buyer = event.buyer_login
    return {
        "id": event.id,
        "occurredAt": iso_time(event.occurred_at),
        "type": event.type,
        "order": {
            "seller": {"id": event.seller_id},
            "buyer": {
                "id": str(zlib.crc32(buyer.encode())),
                "email": f"{buyer}@example.com",
                "login": buyer,
                "guest": False,
            },
            "lineItems": [
                {
                    "id": item.id,
                    "offer": {
                        "id": item.offer_id,
                        "name": item.offer_name,
                        "external": {"id": item.sku} if item.sku is not None else None,
                    },
                    "quantity": item.quantity,
                    "originalPrice": SELLING_MODE["price"],
                    "price": SELLING_MODE["price"],
                    "boughtAt": iso_time(item.bought_at),
                }
                for item in event.line_items
            ],
            "checkoutForm": {"id": event.checkout_form_id},
            "marketplace": {"id": MARKETPLACES["base"]["id"]},
        },
    }


def _limit(query: Mapping[str, list[str]]) -> int:
    return int(query["limit"][0]) if "limit" in query else DEFAULT_EVENTS_LIMIT


class JournalApi:
    def __init__(self, simulator: SimulatorSetup, order_event_types: Collection[str]):
        """`order_event_types`: the spec's OrderEventType (its `type` parameter lists none)."""
        self._sim = simulator
        self._order_event_types = frozenset(order_event_types)

    def routes(self) -> dict[tuple[str, str], Callable[[SaleRequest], Reply]]:
        return {
            ("GET", "/sale/offer-events"): self._offer_events,
            ("GET", "/order/events"): self._order_events,
            ("GET", "/order/event-stats"): self._order_event_stats,
        }

    def _offer_events(self, request: SaleRequest) -> Reply:
        query = request.query
        after = query["from"][0] if "from" in query else None
        try:
            events = self._sim.marketplace.offer_events(request.login, after, query.get("type", ()), _limit(query))
        except UnknownEventId:
            message = (
                f"Event {after!r} is unknown or older than the journal's 24 hours; "
                "read the offers again and the journal from its newest events"
            )
            return error_reply(
                400, "UnknownEventIdException", message, path="from", media_type=OFFER_EVENTS_ERROR_MEDIA_TYPE
            )
        return Reply(200, {"offerEvents": [offer_event_view(event) for event in events]}, content_type=MEDIA_TYPE)

    def _order_events(self, request: SaleRequest) -> Reply:
        query = request.query
        types = query.get("type", [])
        unknown = sorted(set(types) - self._order_event_types)
        if unknown:
            return error_reply(422, "ValidationException", f"unknown order event types {unknown}", path="type")
        after = query["from"][0] if "from" in query else None
        if after is not None and not after.isdigit():
            return error_reply(
                422, "ValidationException", f"from must be an order event id, got {after!r}", path="from"
            )
        events = self._sim.marketplace.order_events(
            request.login, None if after is None else int(after), types, _limit(query)
        )
        return Reply(200, {"events": [order_event_view(event) for event in events]}, content_type=MEDIA_TYPE)

    def _order_event_stats(self, request: SaleRequest) -> Reply:
        latest = self._sim.marketplace.latest_order_event(request.login)
        body = {} if latest is None else {"latestEvent": {"id": latest.id, "occurredAt": iso_time(latest.occurred_at)}}
        return Reply(200, body, content_type=MEDIA_TYPE)
