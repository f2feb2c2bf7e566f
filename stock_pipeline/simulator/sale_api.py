"""What the simulated /sale operations do and answer, once a request has been
authenticated, admitted by the client limit and found to conform to the spec."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import lru_cache, partial
from typing import Any, Callable, Mapping, Protocol

import orjson

from stock_pipeline.simulator.loopback import Reply
from stock_pipeline.simulator.rate_limits import SellerWriteLimits
from stock_pipeline.simulator.state import (
    MAX_STOCK,
    PUBLICATION,
    QUANTITY,
    Command,
    CommandIdInUse,
    Marketplace,
    Offer,
    OfferLocked,
    OfferNotFound,
    OperationInProgress,
    Task,
    allegro_error,
)

MEDIA_TYPE = "application/vnd.allegro.public.v1+json"
MAX_OFFERS_PER_COMMAND = 1000
MAX_LISTING_WINDOW = 10_000_000  # offset + limit
LISTING_PARAMETERS = ("offer.id", "external.id", "publication.status", "limit", "offset")
OPERATION_RETRY_AFTER = "1"
COMMAND_RESOURCES = {"/sale/offer-quantity-change-commands": QUANTITY, "/sale/offer-publication-commands": PUBLICATION}

# What every simulated offer shares: the fields a stock sync does not touch.
CATEGORY = {"id": "257931"}
SELLING_MODE = {"format": "BUY_NOW", "price": {"amount": "49.99", "currency": "PLN"}}
MARKETPLACES = {"base": {"id": "allegro-pl"}, "additional": []}


class SimulatorSetup(Protocol):
    """What the sale API reads of the simulator that serves it (`AllegroSimulator`)."""

    api_url: str
    marketplace: Marketplace
    write_limits: SellerWriteLimits
    patch_async_probability: float
    operation_delay: float
    command_task_delay: float


class SellerLimitExceeded(Exception):
    """A per-seller write limit refused the request (429, the client is not blocked)."""


def error_reply(
    status: int,
    code: str,
    message: str,
    *,
    path: str | None = None,
    headers: dict[str, str] | None = None,
    media_type: str = MEDIA_TYPE,
) -> Reply:
    return Reply(status, {"errors": [allegro_error(code, message, path)]}, headers or {}, media_type)


# Offers added in one batch share their timestamps: a listing page formats a few, not 1 000.
@lru_cache(maxsize=4096)
def iso_time(timestamp: float | None) -> str | None:
    """Allegro's format: yyyy-MM-dd'T'HH:mm:ss.SSSZ."""
    if timestamp is None:
        return None
    moment = datetime.fromtimestamp(timestamp, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _external(offer: Offer) -> dict | None:
    return {"id": offer.sku} if offer.sku is not None else None


def listing_view(offer: Offer) -> dict:
    """An offer as GET /sale/offers shows it (OfferListingDto): no endedBy."""
    publication = {"status": offer.status, "marketplaces": MARKETPLACES}
    if offer.started_at is not None:
        publication["startedAt"] = iso_time(offer.started_at)
    if offer.ended_at is not None:
        publication["endedAt"] = iso_time(offer.ended_at)
    return {
        "id": offer.id,
        "name": offer.name,
        "category": CATEGORY,
        "sellingMode": SELLING_MODE,
        "stock": {"available": offer.stock, "sold": 0},
        "stats": {"watchersCount": 0, "visitsCount": 0},
        "publication": publication,
        "external": _external(offer),
        "isFulfillment": False,
    }


def _listed_fields(offer: Offer) -> tuple:
    """Every field of the offer listing_view shows, apart from the id: its encoding is
    reused while they are unchanged."""
    return offer.name, offer.sku, offer.stock, offer.status, offer.started_at, offer.ended_at


class EncodedListing:
    """Each offer's listing_view, encoded once and reused while the offer's listed fields
    stay the same; a page is its offers' encodings joined. Building and encoding 1 000
    views took ~17 ms per page, the bulk of a listing's cost in the simulator.

    Keyed by offer id and checked against the offer's fields at every use, so no change
    of an offer (a command, a PATCH, set_offer) can be missed. Handlers in several threads
    share it: a race only encodes an offer twice. Offers removed from the marketplace keep
    their entry; the simulator's offers are few enough for that."""

    def __init__(self):
        self._encoded: dict[str, tuple[tuple, bytes]] = {}

    def page(self, offers: list[Offer], total: int) -> bytes:
        """GET /sale/offers' answer (OfferListing) for these offers, as JSON bytes."""
        encoded = []
        for offer in offers:
            shown = _listed_fields(offer)
            known = self._encoded.get(offer.id)
            if known is None or known[0] != shown:
                known = self._encoded[offer.id] = (shown, orjson.dumps(listing_view(offer)))
            encoded.append(known[1])
        return b'{"offers":[%b],"count":%d,"totalCount":%d}' % (b",".join(encoded), len(offers), total)


def product_offer_view(offer: Offer) -> dict:
    """An offer as /sale/product-offers/{id} shows it (SaleProductOfferResponseV1)."""
    return {
        "id": offer.id,
        "name": offer.name,
        "category": CATEGORY,
        "sellingMode": SELLING_MODE,
        "stock": {"available": offer.stock, "unit": "UNIT"},
        "publication": {
            "status": offer.status,
            "endedBy": offer.ended_by,
            "duration": None,
            "endingAt": None,
            "republish": False,
            "marketplaces": MARKETPLACES,
        },
        "external": _external(offer),
        "language": "pl-PL",
        "createdAt": iso_time(offer.created_at),
        "updatedAt": iso_time(offer.updated_at),
    }


def general_report(command: Command) -> dict:
    """Counts stay zero until the command has run: Allegro's early reads look the same."""
    if command.completed_at is None:
        counts = {"total": 0, "success": 0, "failed": 0}
    else:
        successes = sum(task.status == "SUCCESS" for task in command.tasks)
        counts = {"total": len(command.tasks), "success": successes, "failed": len(command.tasks) - successes}
    return {
        "id": command.id,
        "createdAt": iso_time(command.created_at),
        "completedAt": iso_time(command.completed_at),
        "taskCount": counts,
    }


def task_page(command: Command, query: Mapping[str, list[str]]) -> dict:
    """TaskReport: the tasks from `offset`, at most `limit` (defaults 0 and 100)."""
    offset = _int_parameter(query, "offset", 0)
    page = command.tasks[offset : offset + _int_parameter(query, "limit", 100)]
    return {"tasks": [_task_view(command, task) for task in page]}


def _task_view(command: Command, task: Task) -> dict:
    return {
        "offer": {"id": task.offer_id},
        "field": "stock" if command.kind == QUANTITY else "publication",
        "message": task.message,
        "status": task.status,
        "scheduledAt": iso_time(command.created_at),
        "finishedAt": iso_time(task.finished_at),
        "errors": task.errors,
    }


def _int_parameter(query: Mapping[str, list[str]], name: str, default: int) -> int:
    """A query integer; the spec check has already refused values that are not one."""
    return int(query[name][0]) if name in query else default


@dataclass(frozen=True)
class SaleRequest:
    """A request that passed authentication, the client limit and the spec check."""

    login: str
    path_params: dict[str, str]
    query: Mapping[str, list[str]]
    body: Any


class SaleApi:
    def __init__(self, simulator: SimulatorSetup):
        # The simulator's knobs (delays, async share, api_url) may change between requests.
        self._sim = simulator
        self._random = random.Random()
        self._listing = EncodedListing()
        self._routes: dict[tuple[str, str], Callable[[SaleRequest], Reply]] = {
            ("GET", "/sale/offers"): self._list_offers,
            ("GET", "/sale/product-offers/{offerId}"): self._get_offer,
            ("PATCH", "/sale/product-offers/{offerId}"): self._patch_offer,
            ("GET", "/sale/product-offers/{offerId}/operations/{operationId}"): self._operation_status,
        }
        for resource, kind in COMMAND_RESOURCES.items():
            self._routes[("PUT", f"{resource}/{{commandId}}")] = partial(self._put_command, kind)
            self._routes[("GET", f"{resource}/{{commandId}}")] = partial(
                self._read_command, kind, lambda command, _query: general_report(command)
            )
            self._routes[("GET", f"{resource}/{{commandId}}/tasks")] = partial(self._read_command, kind, task_page)

    def add_routes(self, routes: Mapping[tuple[str, str], Callable[[SaleRequest], Reply]]) -> None:
        """Operations served beside /sale's (the event journals)."""
        self._routes.update(routes)

    def handle(self, method: str, route: str, request: SaleRequest) -> Reply:
        """Raises SellerLimitExceeded for the caller to answer 429."""
        return self._routes[(method, route)](request)

    # ---- offers ----------------------------------------------------------------------

    def _list_offers(self, request: SaleRequest) -> Reply:
        query = request.query
        unsupported = sorted(set(query) - set(LISTING_PARAMETERS))
        if unsupported:
            return error_reply(
                501,
                "NotImplementedInSimulator",
                f"the simulator does not implement GET /sale/offers parameters {unsupported}",
            )
        limit, offset = _int_parameter(query, "limit", 20), _int_parameter(query, "offset", 0)
        if offset + limit > MAX_LISTING_WINDOW:
            return error_reply(400, "ValidationException", f"offset + limit must not exceed {MAX_LISTING_WINDOW}")
        page, total = self._sim.marketplace.list_offers(
            request.login,
            offer_ids=query.get("offer.id", []),
            skus=query.get("external.id", []),
            statuses=query.get("publication.status", []),
            offset=offset,
            limit=limit,
        )
        return Reply(200, self._listing.page(page, total), content_type=MEDIA_TYPE)

    def _get_offer(self, request: SaleRequest) -> Reply:
        offer_id = request.path_params["offerId"]
        try:
            offer = self._sim.marketplace.owned_offer(request.login, offer_id)
        except OfferNotFound:
            return _offer_not_found(offer_id)
        return Reply(200, product_offer_view(offer), content_type=MEDIA_TYPE)

    def _patch_offer(self, request: SaleRequest) -> Reply:
        offer_id = request.path_params["offerId"]
        if not self._sim.write_limits.take_patch(request.login):
            raise SellerLimitExceeded
        if set(request.body) != {"stock"}:
            return error_reply(501, "NotImplementedInSimulator", "the simulator changes only stock.available by PATCH")
        available = request.body["stock"].get("available")
        if available is None or available > MAX_STOCK:
            return error_reply(
                422, "ValidationException", f"stock.available must be an integer 0..{MAX_STOCK}", path="stock.available"
            )
        asynchronous = self._random.random() < self._sim.patch_async_probability
        try:
            offer, operation = self._sim.marketplace.patch_stock(
                request.login, offer_id, available, self._sim.operation_delay if asynchronous else None
            )
        except OfferNotFound:
            return _offer_not_found(offer_id)
        except OfferLocked:
            return error_reply(422, "OfferLockedException", f"Offer {offer_id} is locked and cannot be edited now")
        except OperationInProgress:
            return error_reply(
                409, "ConflictException", f"The previous edition of offer {offer_id} is still being processed"
            )
        if operation is None:
            return Reply(200, product_offer_view(offer), content_type=MEDIA_TYPE)
        location = f"{self._sim.api_url}/sale/product-offers/{offer_id}/operations/{operation.id}"
        return Reply(
            202, product_offer_view(offer), {"Location": location, "Retry-After": OPERATION_RETRY_AFTER}, MEDIA_TYPE
        )

    def _operation_status(self, request: SaleRequest) -> Reply:
        offer_id, operation_id = request.path_params["offerId"], request.path_params["operationId"]
        try:
            operation = self._sim.marketplace.operation(request.login, offer_id, operation_id)
        except KeyError:
            return error_reply(404, "NotFoundException", f"No operation {operation_id} of offer {offer_id}")
        if operation.done:
            return Reply(303, headers={"Location": f"{self._sim.api_url}/sale/product-offers/{offer_id}"})
        return Reply(
            202,
            {
                "offer": {"id": offer_id},
                "operation": {"id": operation.id, "status": "IN_PROGRESS", "startedAt": iso_time(operation.started_at)},
            },
            {"Retry-After": OPERATION_RETRY_AFTER},
            MEDIA_TYPE,
        )

    # ---- batch commands --------------------------------------------------------------

    def _put_command(self, kind: str, request: SaleRequest) -> Reply:
        command_id, body = request.path_params["commandId"], request.body
        if not _is_uuid(command_id):
            return error_reply(400, "ValidationException", f"command id {command_id!r} is not a UUID")
        if self._sim.marketplace.command_exists(kind, command_id):
            return _command_id_in_use(command_id)
        change = body.get("modification" if kind == QUANTITY else "publication")
        if kind == PUBLICATION and (change or {}).get("scheduledFor") is not None:
            return error_reply(501, "NotImplementedInSimulator", "the simulator does not implement scheduledFor")
        offer_ids, problem = _command_offer_ids(body)
        problem = problem or (_quantity_problem(change) if kind == QUANTITY else _publication_problem(change))
        if problem:
            return error_reply(422, "ValidationException", problem)
        if not self._sim.write_limits.take_command_offers(request.login, len(offer_ids)):
            raise SellerLimitExceeded
        try:
            command = self._sim.marketplace.create_command(
                kind, command_id, request.login, change, offer_ids, self._sim.command_task_delay
            )
        except CommandIdInUse:
            return _command_id_in_use(command_id)
        return Reply(201, general_report(command), content_type=MEDIA_TYPE)

    def _read_command(
        self, kind: str, render: Callable[[Command, Mapping[str, list[str]]], dict], request: SaleRequest
    ) -> Reply:
        command_id = request.path_params["commandId"]
        try:
            command = self._sim.marketplace.command(kind, request.login, command_id)
        except KeyError:
            return _command_not_found(command_id)
        return Reply(200, render(command, request.query), content_type=MEDIA_TYPE)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _offer_not_found(offer_id: str) -> Reply:
    return error_reply(404, "OfferNotFoundException", f"Offer {offer_id} not found")


def _command_not_found(command_id: str) -> Reply:
    return error_reply(404, "NotFoundException", f"Command {command_id} not found")


def _command_id_in_use(command_id: str) -> Reply:
    return error_reply(409, "ConflictException", f"Command id {command_id} was already used")


def _command_offer_ids(body: dict) -> tuple[list[str], str | None]:
    """The offer ids a command names, or why they cannot be used."""
    offer_ids = [
        offer.get("id") for criterion in body.get("offerCriteria") or [] for offer in criterion.get("offers") or []
    ]
    if not offer_ids or None in offer_ids:
        return [], "offerCriteria must name at least one offer, each with an id"
    if len(offer_ids) > MAX_OFFERS_PER_COMMAND:
        return [], f"a command takes at most {MAX_OFFERS_PER_COMMAND} offers, got {len(offer_ids)}"
    return offer_ids, None


def _quantity_problem(modification: dict | None) -> str | None:
    if not modification or modification.get("changeType") is None or modification.get("value") is None:
        return "modification needs changeType and value"
    value = modification["value"]
    if modification["changeType"] == "FIXED" and not 1 <= value <= MAX_STOCK:
        return f"a FIXED quantity must be 1..{MAX_STOCK}, got {value}"
    return None


def _publication_problem(publication: dict | None) -> str | None:
    if not publication or publication.get("action") is None:
        return "publication needs an action (END or ACTIVATE)"
    return None
