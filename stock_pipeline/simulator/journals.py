"""A seller's two event journals: offer events (GET /sale/offer-events) and order events
(GET /order/events, GET /order/event-stats). Kept by the Marketplace under its lock;
appending is O(1), reading after a cursor O(log n + the page).

Offer events (Allegro: `NOTES.md`, spec `getOfferEvents`):
- The journal keeps the last `Marketplace.offer_event_retention` seconds (Allegro: 24 h)
  of the simulator's clock (time.time()); older events are dropped when it is next read.
- An event id is opaque to clients: base64 of a decimal sequence number without padding,
  as Allegro's ids are (`MTEzMjQzODU3NA` is "1132438574"). Ids increase strictly in
  journal order; the sequence is shared by every seller, so a seller's ids have gaps.
- A `from` naming no event still in this seller's journal (expired, another seller's,
  made up, not base64) is refused: the simulator answers **400** with
  `{"errors":[{"code":"UnknownEventIdException","path":"from",…}]}`. Allegro documents that
  an unknown or expired `from` is an error but not its exact answer; the spec declares
  400 "Invalid parameters supplied in the request" for this operation, so the simulator
  uses it. A client cannot resume from there: it must list every offer again.
- Events carry no values: id, occurredAt, type and offer{id, external{id}} (OFFER_ENDED
  also `publication.endedBy`, as the spec's OfferEventEndedOffer requires).

Order events (spec `getOrderEventsUsingGET`): ids are decimal numbers increasing in
journal order; `from` returns the events with a larger id (a number no event has is
accepted, as with any sequence cursor; one that is not a number is refused with 422,
the status the spec documents for incorrect parameters). Allegro keeps 60 days of them.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import itertools
from dataclasses import dataclass
from operator import attrgetter
from typing import Collection

OFFER_EVENT_RETENTION_SECONDS = 24 * 3600
ORDER_EVENT_RETENTION_SECONDS = 60 * 24 * 3600
# Only these are produced; the spec knows more (OFFER_CHANGED, OFFER_PRICE_CHANGED, …).
OFFER_STOCK_CHANGED = "OFFER_STOCK_CHANGED"
OFFER_ENDED = "OFFER_ENDED"
OFFER_ACTIVATED = "OFFER_ACTIVATED"
OFFER_ARCHIVED = "OFFER_ARCHIVED"
# Expired events leave the list's head only once this many have accumulated, so
# trimming stays amortised O(1) per event.
_COMPACT_AFTER = 1024


class UnknownEventId(ValueError):
    """`from` names no event the journal still holds."""


@dataclass(frozen=True, slots=True)
class OfferEvent:
    sequence: int
    occurred_at: float
    type: str
    offer_id: str
    sku: str | None
    ended_by: str | None = None  # OFFER_ENDED only

    @property
    def id(self) -> str:
        return offer_event_id(self.sequence)


@dataclass(frozen=True, slots=True)
class LineItem:
    id: str  # a UUID
    offer_id: str
    offer_name: str
    sku: str | None
    quantity: int
    bought_at: float


@dataclass(frozen=True, slots=True)
class OrderEvent:
    sequence: int
    occurred_at: float
    type: str
    checkout_form_id: str
    seller_id: str
    buyer_login: str
    line_items: tuple[LineItem, ...]

    @property
    def id(self) -> str:
        return str(self.sequence)


def offer_event_id(sequence: int) -> str:
    return base64.b64encode(str(sequence).encode()).decode().rstrip("=")


def offer_event_sequence(event_id: str) -> int:
    """UnknownEventId for anything the journal never issued."""
    try:
        decoded = base64.b64decode(event_id + "=" * (-len(event_id) % 4), validate=True).decode("ascii")
    except (binascii.Error, ValueError):
        raise UnknownEventId(event_id) from None
    if not decoded.isdigit() or offer_event_id(int(decoded)) != event_id:
        raise UnknownEventId(event_id)
    return int(decoded)


_sequence_of = attrgetter("sequence")


class Journal:
    """One seller's events of one kind, oldest first."""

    def __init__(self):
        self._events: list = []
        self._start = 0  # events before it have expired

    def append(self, event) -> None:
        self._events.append(event)

    def expire(self, horizon: float) -> None:
        """Forgets the events that occurred before `horizon`."""
        events, start = self._events, self._start
        while start < len(events) and events[start].occurred_at < horizon:
            start += 1
        if start >= _COMPACT_AFTER and start * 2 >= len(events):
            del events[:start]
            start = 0
        self._start = start

    def forget_all(self) -> None:
        self._events.clear()
        self._start = 0

    def latest(self):
        return self._events[-1] if len(self._events) > self._start else None

    def read(self, after: int | None, types: Collection[str], limit: int, *, exact: bool):
        """Up to `limit` events after sequence `after` (from the oldest when None), of
        `types` (all when empty). `exact`: `after` must be an event still held, else
        UnknownEventId; otherwise any number is a position."""
        events = self._events
        index = self._start
        if after is not None:
            index = bisect.bisect_right(events, after, lo=self._start, key=_sequence_of)
            if exact and (index == self._start or events[index - 1].sequence != after):
                raise UnknownEventId(str(after))
        if not types:
            return events[index : index + limit]
        wanted, page = set(types), []
        for event in itertools.islice(events, index, None):
            if event.type in wanted:
                page.append(event)
                if len(page) == limit:
                    break
        return page
