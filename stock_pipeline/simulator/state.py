"""Sellers, offers, PATCH operations and batch commands, kept in memory.

One lock guards all of it. What Allegro does asynchronously (a command's tasks, a PATCH
answered 202) is put on a timeline of due times and applied lazily: every access first
applies whatever has fallen due, in order. No background threads are needed, and a
client polling at any moment sees what it would see on Allegro at that moment.
"""

from __future__ import annotations

import copy
import heapq
import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

OFFER_STATUSES = ("INACTIVE", "ACTIVATING", "ACTIVE", "ENDED")
ENDED_BY_VALUES = ("USER", "ADMIN", "EXPIRATION", "EMPTY_STOCK", "PRODUCT_DETACHMENT", "ERROR")
LIVE_STATUSES = ("ACTIVE", "ACTIVATING")
MAX_STOCK = 99_999
FIRST_GENERATED_OFFER_ID = 17_000_000_000  # real offer ids are 11-digit numbers

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
            self._sellers.setdefault(login, [])

    def has_seller(self, login: str) -> bool:
        with self._lock:
            return login in self._sellers

    def add_offers(self, login: str, specs: Iterable[Mapping[str, Any]]) -> list[str]:
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
            self._settle()
            for offer_id in set(offer_ids):
                offer = self._offers.pop(offer_id)
                self._sellers[offer.login].remove(offer_id)
                self._locked.discard(offer_id)

    def lock_offers(self, offer_ids: Iterable[str], locked: bool = True) -> None:
        with self._lock:
            (self._locked.update if locked else self._locked.difference_update)(set(offer_ids))

    def set_offer(self, offer_id: str, **changes: Any) -> None:
        """An out-of-band change (the seller in the web panel, another application)."""
        with self._lock:
            now = self._settle()
            _change_offer(self._offers[offer_id], now, **changes)

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
                _set_stock(offer, available, now)
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
        _set_stock(self._offers[operation.offer_id], operation.available, operation.due_at)
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

    @staticmethod
    def _apply_quantity(modification: dict, offer: Offer, task: Task, now: float) -> None:
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
        _change_offer(offer, now, stock=new_stock)
        task.status = "SUCCESS"

    @staticmethod
    def _apply_publication(publication: dict, offer: Offer, task: Task, now: float) -> None:
        if publication["action"] == "END":
            if offer.status == "INACTIVE":
                _fail(
                    task, "OfferCannotBeEndedException", f"Offer {offer.id} is a draft (INACTIVE) and cannot be ended"
                )
                return
            if offer.status in LIVE_STATUSES:
                _change_offer(offer, now, status="ENDED", ended_by="USER")
        else:  # ACTIVATE
            if offer.stock < 1:
                _fail(
                    task,
                    "OfferCannotBeActivatedException",
                    f"Offer {offer.id} cannot be activated: its stock must be greater than 0",
                )
                return
            if offer.status not in LIVE_STATUSES:
                _change_offer(offer, now, status="ACTIVE")
        task.status = "SUCCESS"


_NO_OFFER = Offer("", "", None, 0, "INACTIVE", None, "", 0.0, 0.0, None, None)  # owned by no seller


def _id_order(offer_id: str) -> tuple[int, str]:
    """Numeric order for the numeric ids Allegro uses."""
    return len(offer_id), offer_id


def _fail(task: Task, code: str, message: str) -> None:
    task.status, task.message, task.errors = "FAIL", message, [allegro_error(code, message)]


def _set_stock(offer: Offer, available: int, now: float) -> None:
    """Allegro ends an ACTIVE or ACTIVATING offer whose stock is set to 0."""
    if available == 0 and offer.status in LIVE_STATUSES:
        _change_offer(offer, now, stock=0, status="ENDED", ended_by="EMPTY_STOCK")
    else:
        _change_offer(offer, now, stock=available)


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
