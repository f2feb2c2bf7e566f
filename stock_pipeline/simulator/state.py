"""Sellers, offers, PATCH operations, batch commands, purchases and each seller's event
journals, kept in memory.

One lock guards all of it. What Allegro does asynchronously (a command's tasks, a PATCH
answered 202) is put on a timeline of due times and applied lazily: every access first
applies whatever has fallen due, in order. No background threads are needed, and a
client polling at any moment sees what it would see on Allegro at that moment.

Every change of an offer, whoever makes it (a PATCH, a command's task, a purchase,
set_offer), goes through Marketplace._change, which appends the seller's offer events
as Allegro does: only offers that were ACTIVE or ACTIVATING produce them.
- the stock of a live offer changed: OFFER_STOCK_CHANGED (a write of the same value
  changes nothing and produces nothing);
- a live offer ended (by the seller, an END command, stock set or sold down to 0):
  OFFER_ENDED, after the OFFER_STOCK_CHANGED of the same change;
- an offer became ACTIVE (an ACTIVATE command, set_offer): OFFER_ACTIVATED;
- a published offer left the listing (remove_offers): OFFER_ARCHIVED.
Offers added with add_offers are the world as it already is: no events, unless
`journal=True` (then each ACTIVE one appends OFFER_ACTIVATED, as a new listing would).
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Collection, Iterable, Mapping

from stock_pipeline.simulator.journals import (
    OFFER_ACTIVATED,
    OFFER_ARCHIVED,
    OFFER_ENDED,
    OFFER_EVENT_RETENTION_SECONDS,
    OFFER_STOCK_CHANGED,
    ORDER_EVENT_RETENTION_SECONDS,
    Journal,
    LineItem,
    OfferEvent,
    OrderEvent,
    offer_event_sequence,
)

OFFER_STATUSES = ("INACTIVE", "ACTIVATING", "ACTIVE", "ENDED")
ENDED_BY_VALUES = ("USER", "ADMIN", "EXPIRATION", "EMPTY_STOCK", "PRODUCT_DETACHMENT", "ERROR")
LIVE_STATUSES = ("ACTIVE", "ACTIVATING")
MAX_STOCK = 99_999
FIRST_GENERATED_OFFER_ID = 17_000_000_000  # real offer ids are 11-digit numbers
FIRST_SELLER_ID = 40_000_001
FIRST_ORDER_EVENT_ID = 1_532_603_898_317_497  # the spec's example; real ids are 16-digit numbers
FIRST_OFFER_EVENT_SEQUENCE = 1_563_865_391_563_846  # Allegro's example id MTU2Mzg2NTM5MTU2Mzg0Ng

QUANTITY = "quantity"
PUBLICATION = "publication"


class OfferNotFound(KeyError):
    """Unknown offer, or one that belongs to another seller (Allegro answers 404 for both)."""


class OperationInProgress(Exception):
    """A PATCH of the offer answered 202 is still being processed."""


class OfferLocked(Exception):
    """The offer cannot be edited now (Allegro refuses writes to offers under moderation
    or blocked by an administrator); test-only, set with Marketplace.lock_offers."""


class CommandIdInUse(Exception):
    """The command id was used before: command ids are idempotency keys."""


class PurchaseRefused(ValueError):
    """A buyer cannot buy that: the offer is not ACTIVE, or has fewer units than asked for."""


@dataclass(frozen=True)
class Purchase:
    """What a buyer's purchase did: the order (its checkout form and line item) and the
    offer's stock and status after it."""

    checkout_form_id: str
    line_item_id: str
    offer_id: str
    quantity: int
    available: int
    status: str
    order_event_ids: tuple[str, ...]

    def as_dict(self) -> dict:
        return {
            "checkoutFormId": self.checkout_form_id,
            "lineItemId": self.line_item_id,
            "offerId": self.offer_id,
            "quantity": self.quantity,
            "available": self.available,
            "status": self.status,
            "orderEventIds": list(self.order_event_ids),
        }


@dataclass
class Offer:
    id: str
    login: str
    sku: str | None
    stock: int
    status: str
    ended_by: str | None
    name: str
    created_at: float
    updated_at: float
    started_at: float | None
    ended_at: float | None

    def copy(self) -> Offer:
        """A detached copy, for callers outside the lock; a tenth of copy.copy's cost,
        which counts when a listing page copies 1000 offers under the lock."""
        clone = object.__new__(Offer)
        clone.__dict__.update(self.__dict__)
        return clone

    def summary(self) -> dict:
        return {"id": self.id, "sku": self.sku, "stock": self.stock, "status": self.status, "ended_by": self.ended_by}


@dataclass
class Operation:
    """A PATCH answered 202: its stock change is applied at `due_at`."""

    id: str
    offer_id: str
    login: str
    available: int
    started_at: float
    due_at: float
    done: bool = False


@dataclass
class Task:
    offer_id: str
    status: str = "NEW"
    message: str = ""
    errors: list[dict] = field(default_factory=list)
    finished_at: float | None = None


@dataclass
class Command:
    kind: str  # QUANTITY or PUBLICATION
    id: str
    login: str
    change: dict  # the request's `modification` or `publication` object
    created_at: float
    due_at: float
    tasks: list[Task]
    completed_at: float | None = None


def allegro_error(code: str, message: str, path: str | None = None) -> dict:
    """Allegro's error object, as in the `errors` of answers and of command tasks."""
    return {"code": code, "message": message, "details": None, "path": path, "userMessage": message}


class Marketplace:
    def __init__(self):
        self._lock = threading.Lock()
        self._sellers: dict[str, list[str]] = {}  # login -> its offer ids, in listing order
        self._offers: dict[str, Offer] = {}
        self._operations: dict[str, Operation] = {}
        self._running_operation: dict[str, str] = {}  # offer id -> id of its PATCH still processed
        self._commands: dict[tuple[str, str], Command] = {}
        self._timeline: list[tuple[float, int, Callable[[], None]]] = []
        self._sequence = itertools.count()  # keeps the heap's order for equal due times
        self._next_offer_id = FIRST_GENERATED_OFFER_ID
        self._locked: set[str] = set()  # offers whose writes are refused
        self._seller_ids: dict[str, str] = {}  # login -> the numeric id order events show
        self._by_sku: dict[tuple[str, str | None], list[str]] = {}  # (login, sku) -> offer ids
        self._offer_journals: dict[str, Journal] = {}
        self._order_journals: dict[str, Journal] = {}
        self._event_sequence = itertools.count(FIRST_OFFER_EVENT_SEQUENCE)  # offer events of every seller
        self._order_event_sequence = itertools.count(FIRST_ORDER_EVENT_ID)
        # Seconds the journals keep events; read at each access, so tests may shorten them.
        self.offer_event_retention = OFFER_EVENT_RETENTION_SECONDS
        self.order_event_retention = ORDER_EVENT_RETENTION_SECONDS

    # ---- lazy asynchronous work ------------------------------------------------------

    def _schedule(self, due_at: float, action: Callable[[], None]) -> None:
        heapq.heappush(self._timeline, (due_at, next(self._sequence), action))

    def _settle(self) -> float:
        """Applies the work that has fallen due, oldest first; returns now. Lock held."""
        now = time.time()
        while self._timeline and self._timeline[0][0] <= now:
            heapq.heappop(self._timeline)[2]()
        return now

    # ---- sellers and offers ----------------------------------------------------------

    def add_seller(self, login: str) -> None:
        with self._lock:
            if login not in self._sellers:
                self._sellers[login] = []
                self._seller_ids[login] = str(FIRST_SELLER_ID + len(self._seller_ids))
                self._offer_journals[login] = Journal()
                self._order_journals[login] = Journal()

    def has_seller(self, login: str) -> bool:
        with self._lock:
            return login in self._sellers

    def add_offers(self, login: str, specs: Iterable[Mapping[str, Any]], *, journal: bool = False) -> list[str]:
        """`journal`: each new ACTIVE offer appends OFFER_ACTIVATED (an offer published
        now); without it the offers are the world as it was before any event."""
        with self._lock:
            now = self._settle()
            if login not in self._sellers:
                raise KeyError(f"no seller {login!r}; call add_seller first")
            specs = list(specs)
            requested = {str(spec["id"]) for spec in specs if spec.get("id") is not None}
            offers = [self._new_offer(login, spec, now, requested) for spec in specs]
            ids = [offer.id for offer in offers]
            if len(set(ids)) != len(ids):
                raise ValueError(f"offer ids repeat within the batch: {ids}")
            listed = self._sellers[login]
            for offer in offers:
                self._offers[offer.id] = offer
                self._by_sku.setdefault((login, offer.sku), []).append(offer.id)
                if journal and offer.status == "ACTIVE":
                    self._append_offer_event(offer, now, OFFER_ACTIVATED)
            # One merge per batch, not an insertion per offer: a seller of 100 000 offers is
            # added in one call. Generated ids already come after the listed ones: no sort.
            added = sorted(ids, key=_id_order)
            ordered = not listed or not added or _id_order(listed[-1]) < _id_order(added[0])
            listed.extend(added)
            if not ordered:
                listed.sort(key=_id_order)
            return ids

    def _new_offer(self, login: str, spec: Mapping[str, Any], now: float, reserved: set[str]) -> Offer:
        unknown = set(spec) - {"id", "sku", "stock", "status", "ended_by", "name"}
        if unknown:
            raise ValueError(f"unknown offer fields {sorted(unknown)}")
        offer_id = str(spec["id"]) if spec.get("id") is not None else self._generate_offer_id(reserved)
        if offer_id in self._offers:
            raise ValueError(f"offer {offer_id} exists already")
        offer = Offer(
            id=offer_id,
            login=login,
            sku=spec.get("sku"),
            stock=0,
            status="ACTIVE",
            ended_by=None,
            name=spec.get("name") or f"Simulated offer {offer_id}",
            created_at=now,
            updated_at=now,
            started_at=None if spec.get("status") == "INACTIVE" else now,
            ended_at=None,
        )
        _change_offer(offer, now, **{key: spec[key] for key in ("stock", "status", "ended_by") if key in spec})
        return offer

    def _generate_offer_id(self, reserved: set[str]) -> str:
        """The next numeric id that neither an offer nor the batch being added uses."""
        while str(self._next_offer_id) in self._offers or str(self._next_offer_id) in reserved:
            self._next_offer_id += 1
        self._next_offer_id += 1
        return str(self._next_offer_id - 1)

    def offers(self, login: str) -> list[Offer]:
        with self._lock:
            self._settle()
            return [self._offers[offer_id].copy() for offer_id in self._sellers[login]]

    def offer(self, offer_id: str) -> Offer:
        with self._lock:
            self._settle()
            return self._offers[offer_id].copy()

    def remove_offers(self, offer_ids: Iterable[str]) -> None:
        """Offers gone from the seller's listing (deleted drafts, archived ended offers)."""
        with self._lock:
            now = self._settle()
            for offer_id in sorted(set(offer_ids), key=_id_order):
                offer = self._offers.pop(offer_id)
                self._sellers[offer.login].remove(offer_id)
                self._by_sku[(offer.login, offer.sku)].remove(offer_id)
                self._locked.discard(offer_id)
                if offer.status != "INACTIVE":  # a draft is deleted; a published offer is archived
                    self._append_offer_event(offer, now, OFFER_ARCHIVED)

    def lock_offers(self, offer_ids: Iterable[str], locked: bool = True) -> None:
        with self._lock:
            (self._locked.update if locked else self._locked.difference_update)(set(offer_ids))

    def set_offer(self, offer_id: str, **changes: Any) -> None:
        """An out-of-band change (the seller in the web panel, another application)."""
        with self._lock:
            now = self._settle()
            self._change(self._offers[offer_id], now, **changes)

    def offer_states(self, login: str, *, offer_ids: Iterable[str] = (), skus: Iterable[str] = ()) -> list[Offer]:
        """The seller's offers with one of these ids or SKUs (None: no SKU), by id; looked
        up, not searched for, so a benchmark may read a few offers of a large seller often."""
        with self._lock:
            self._settle()
            if login not in self._sellers:
                raise KeyError(f"no seller {login!r}; call add_seller first")
            found = {i for i in offer_ids if self._offers.get(i, _NO_OFFER).login == login}
            for sku in skus:
                found.update(self._by_sku.get((login, sku), ()))
            return [self._offers[offer_id].copy() for offer_id in sorted(found, key=_id_order)]

    def list_offers(
        self, login: str, *, offer_ids: list[str], skus: list[str], statuses: list[str], offset: int, limit: int
    ) -> tuple[list[Offer], int]:
        """One page of the seller's offers matching every given filter, by id; and the total.

        The listing without filters, the one a sync pages through, slices the seller's
        ordered ids: a page costs its own offers, not the seller's, so the lock every call
        takes is held briefly even for a seller of 100 000 offers."""
        with self._lock:
            self._settle()
            listed = self._sellers[login]
            if not (offer_ids or skus or statuses):
                return [self._offers[offer_id].copy() for offer_id in listed[offset : offset + limit]], len(listed)
            if offer_ids:  # a few named offers: looked up, not searched for
                named = {offer_id for offer_id in offer_ids if self._offers.get(offer_id, _NO_OFFER).login == login}
                listed = sorted(named, key=_id_order)
            wanted_skus, wanted_statuses = set(skus), set(statuses)
            matching = [
                offer
                for offer in (self._offers[offer_id] for offer_id in listed)
                if (not wanted_skus or offer.sku in wanted_skus)
                and (not wanted_statuses or offer.status in wanted_statuses)
            ]
            return [offer.copy() for offer in matching[offset : offset + limit]], len(matching)

    def owned_offer(self, login: str, offer_id: str) -> Offer:
        with self._lock:
            self._settle()
            return self._owned(login, offer_id).copy()

    def _owned(self, login: str, offer_id: str) -> Offer:
        offer = self._offers.get(offer_id)
        if offer is None or offer.login != login:
            raise OfferNotFound(offer_id)
        return offer

    # ---- PATCH /sale/product-offers/{id} ---------------------------------------------

    def patch_stock(
        self, login: str, offer_id: str, available: int, delay: float | None
    ) -> tuple[Offer, Operation | None]:
        """Sets the stock now (delay None) or after `delay` seconds as an operation.
        Returns the offer as it is now and the operation, if any."""
        with self._lock:
            now = self._settle()
            offer = self._owned(login, offer_id)
            if offer_id in self._locked:
                raise OfferLocked(offer_id)
            if offer_id in self._running_operation:
                raise OperationInProgress(offer_id)
            if delay is None:
                self._set_stock(offer, available, now)
                return offer.copy(), None
            operation = Operation(
                id=str(uuid.uuid4()),
                offer_id=offer_id,
                login=login,
                available=available,
                started_at=now,
                due_at=now + delay,
            )
            self._operations[operation.id] = operation
            self._running_operation[offer_id] = operation.id
            self._schedule(operation.due_at, lambda: self._finish_operation(operation))
            return offer.copy(), copy.copy(operation)

    def _finish_operation(self, operation: Operation) -> None:
        self._set_stock(self._offers[operation.offer_id], operation.available, operation.due_at)
        operation.done = True
        del self._running_operation[operation.offer_id]

    def operation(self, login: str, offer_id: str, operation_id: str) -> Operation:
        with self._lock:
            self._settle()
            operation = self._operations.get(operation_id)
            if operation is None or operation.login != login or operation.offer_id != offer_id:
                raise KeyError(operation_id)
            return copy.copy(operation)

    # ---- batch commands --------------------------------------------------------------

    def command_exists(self, kind: str, command_id: str) -> bool:
        with self._lock:
            return (kind, command_id) in self._commands

    def create_command(
        self, kind: str, command_id: str, login: str, change: dict, offer_ids: list[str], delay: float
    ) -> Command:
        with self._lock:
            now = self._settle()
            if (kind, command_id) in self._commands:
                raise CommandIdInUse(command_id)
            command = Command(
                kind=kind,
                id=command_id,
                login=login,
                change=change,
                created_at=now,
                due_at=now + delay,
                tasks=[Task(offer_id) for offer_id in offer_ids],
            )
            self._commands[(kind, command_id)] = command
            self._schedule(command.due_at, lambda: self._run_command(command))
            return copy.deepcopy(command)

    def command(self, kind: str, login: str, command_id: str) -> Command:
        """KeyError for an unknown command or another seller's."""
        with self._lock:
            self._settle()
            command = self._commands[(kind, command_id)]
            if command.login != login:
                raise KeyError(command_id)
            return copy.deepcopy(command)

    def _run_command(self, command: Command) -> None:
        apply_task = self._apply_quantity if command.kind == QUANTITY else self._apply_publication
        for task in command.tasks:
            offer = self._offers.get(task.offer_id)
            if offer is None or offer.login != command.login:
                _fail(task, "OfferNotFoundException", f"Offer {task.offer_id} not found")
            elif offer.id in self._locked:
                _fail(task, "OfferLockedException", f"Offer {offer.id} is locked and cannot be edited now")
            else:
                apply_task(command.change, offer, task, command.due_at)
            task.finished_at = command.due_at
        command.completed_at = command.due_at

    def _apply_quantity(self, modification: dict, offer: Offer, task: Task, now: float) -> None:
        value = modification["value"]
        new_stock = value if modification["changeType"] == "FIXED" else offer.stock + value
        if not 1 <= new_stock <= MAX_STOCK:
            _fail(
                task,
                "ATTEMPT_TO_CHANGE_OFFER_QUANTITY_TO_INVALID_VALUE",
                f"Offer quantity would become {new_stock}; it must be between 1 and {MAX_STOCK}",
            )
            return
        # A command never ends or re-activates an offer: only the stock changes.
        self._change(offer, now, stock=new_stock)
        task.status = "SUCCESS"

    def _apply_publication(self, publication: dict, offer: Offer, task: Task, now: float) -> None:
        if publication["action"] == "END":
            if offer.status == "INACTIVE":
                _fail(
                    task, "OfferCannotBeEndedException", f"Offer {offer.id} is a draft (INACTIVE) and cannot be ended"
                )
                return
            if offer.status in LIVE_STATUSES:
                self._change(offer, now, status="ENDED", ended_by="USER")
        else:  # ACTIVATE
            if offer.stock < 1:
                _fail(
                    task,
                    "OfferCannotBeActivatedException",
                    f"Offer {offer.id} cannot be activated: its stock must be greater than 0",
                )
                return
            if offer.status not in LIVE_STATUSES:
                self._change(offer, now, status="ACTIVE")
        task.status = "SUCCESS"

    # ---- changes of offers and the offer journal -----------------------------------

    def _set_stock(self, offer: Offer, available: int, now: float) -> None:
        """Allegro ends an ACTIVE or ACTIVATING offer whose stock is set to 0."""
        if available == 0 and offer.status in LIVE_STATUSES:
            self._change(offer, now, stock=0, status="ENDED", ended_by="EMPTY_STOCK")
        else:
            self._change(offer, now, stock=available)

    def _change(self, offer: Offer, now: float, **changes: Any) -> None:
        """_change_offer, and the events the change makes Allegro append. Lock held."""
        stock_before, status_before = offer.stock, offer.status
        _change_offer(offer, now, **changes)
        was_live = status_before in LIVE_STATUSES
        if was_live and offer.stock != stock_before:
            self._append_offer_event(offer, now, OFFER_STOCK_CHANGED)
        if was_live and offer.status == "ENDED":
            self._append_offer_event(offer, now, OFFER_ENDED)
        if offer.status == "ACTIVE" and status_before != "ACTIVE":
            self._append_offer_event(offer, now, OFFER_ACTIVATED)

    def _append_offer_event(self, offer: Offer, now: float, kind: str) -> None:
        ended_by = offer.ended_by if kind == OFFER_ENDED else None
        event = OfferEvent(next(self._event_sequence), now, kind, offer.id, offer.sku, ended_by)
        self._offer_journals[offer.login].append(event)

    def offer_events(self, login: str, after: str | None, types: Collection[str], limit: int) -> list[OfferEvent]:
        """GET /sale/offer-events: UnknownEventId when `after` names no event the seller's
        journal still holds (expired, unknown, another seller's)."""
        with self._lock:
            now = self._settle()
            journal = self._offer_journals[login]
            journal.expire(now - self.offer_event_retention)
            sequence = None if after is None else offer_event_sequence(after)
            return journal.read(sequence, types, limit, exact=True)

    def expire_offer_events(self, login: str) -> None:
        """Test-only: the seller's whole offer journal expires at once (as 24 quiet hours
        would do), so every cursor into it becomes unknown."""
        with self._lock:
            self._settle()
            self._offer_journals[login].forget_all()

    # ---- purchases and the order journal -------------------------------------------

    def purchase(self, login: str, offer_id: str, quantity: int, buyer: str = "buyer", paid: bool = True) -> Purchase:
        """A buyer buys `quantity` units of the seller's ACTIVE offer: the stock drops (the
        offer ends at 0, EMPTY_STOCK), the offer journal gets its events and the order
        journal BOUGHT (then READY_FOR_PROCESSING when `paid`: the buyer paid at once).
        OfferNotFound for an offer that is not the seller's, PurchaseRefused otherwise."""
        if isinstance(quantity, bool) or not isinstance(quantity, int) or quantity < 1:
            raise PurchaseRefused(f"quantity must be a whole number of at least 1, got {quantity!r}")
        with self._lock:
            now = self._settle()
            offer = self._owned(login, offer_id)
            if offer.status != "ACTIVE":
                raise PurchaseRefused(f"offer {offer_id} is {offer.status}: only an ACTIVE offer can be bought")
            if quantity > offer.stock:
                raise PurchaseRefused(f"offer {offer_id} has {offer.stock} units available, {quantity} asked for")
            self._set_stock(offer, offer.stock - quantity, now)
            item = LineItem(str(uuid.uuid4()), offer.id, offer.name, offer.sku, quantity, now)
            checkout_form_id = str(uuid.uuid4())
            event_ids = []
            for kind in ("BOUGHT", "READY_FOR_PROCESSING") if paid else ("BOUGHT",):
                event = OrderEvent(
                    next(self._order_event_sequence),
                    now,
                    kind,
                    checkout_form_id,
                    self._seller_ids[login],
                    buyer,
                    (item,),
                )
                self._order_journals[login].append(event)
                event_ids.append(event.id)
            return Purchase(checkout_form_id, item.id, offer.id, quantity, offer.stock, offer.status, tuple(event_ids))

    def order_events(self, login: str, after: int | None, types: Collection[str], limit: int) -> list[OrderEvent]:
        """GET /order/events: the events whose id is larger than `after`."""
        with self._lock:
            now = self._settle()
            journal = self._order_journals[login]
            journal.expire(now - self.order_event_retention)
            return journal.read(after, types, limit, exact=False)

    def latest_order_event(self, login: str) -> OrderEvent | None:
        with self._lock:
            now = self._settle()
            journal = self._order_journals[login]
            journal.expire(now - self.order_event_retention)
            return journal.latest()


_NO_OFFER = Offer("", "", None, 0, "INACTIVE", None, "", 0.0, 0.0, None, None)  # owned by no seller


def _id_order(offer_id: str) -> tuple[int, str]:
    """Numeric order for the numeric ids Allegro uses."""
    return len(offer_id), offer_id


def _fail(task: Task, code: str, message: str) -> None:
    task.status, task.message, task.errors = "FAIL", message, [allegro_error(code, message)]


_UNSET: Any = object()


def _change_offer(
    offer: Offer, now: float, *, stock: int = _UNSET, status: str = _UNSET, ended_by: str | None = _UNSET
) -> None:
    """Checks every value before assigning any. Ending an offer without naming `ended_by`
    records USER (the seller ended it by hand); moving to another status clears it."""
    new_status = offer.status if status is _UNSET else status
    if ended_by is _UNSET:
        unchanged = new_status == offer.status
        ended_by = offer.ended_by if unchanged else ("USER" if new_status == "ENDED" else None)
    if stock is not _UNSET and (not isinstance(stock, int) or not 0 <= stock <= MAX_STOCK):
        raise ValueError(f"stock must be an integer 0..{MAX_STOCK}, got {stock!r}")
    if new_status not in OFFER_STATUSES:
        raise ValueError(f"status must be one of {OFFER_STATUSES}, got {new_status!r}")
    if ended_by is not None and (new_status != "ENDED" or ended_by not in ENDED_BY_VALUES):
        raise ValueError(f"ended_by must be None or, on an ENDED offer, one of {ENDED_BY_VALUES}; got {ended_by!r}")

    if stock is not _UNSET:
        offer.stock = stock
    if new_status == "ENDED" and offer.status != "ENDED":
        offer.ended_at = now
    if new_status in LIVE_STATUSES and offer.status not in LIVE_STATUSES:
        offer.started_at, offer.ended_at = now, None
    offer.status, offer.ended_by, offer.updated_at = new_status, ended_by, now
