"""The simulator's own HTTP endpoints under /_simulator/, for tests and benchmarks that
drive the simulated world from another process: outside Allegro's API, so without
authentication, spec check, latency, faults or rate limits, and not recorded among the
requests (`AllegroSimulator.requests`, which benchmarks count as API calls).

  POST /_simulator/purchases       {"login", "offerId", "quantity", "buyer"?, "paid"?}
       a buyer buys from the seller `login`: 201 with the purchase (checkoutFormId,
       lineItemId, offerId, quantity, available, status, orderEventIds); 404 unknown
       seller or offer; 422 refused (not ACTIVE, too few units, bad quantity)
  GET  /_simulator/offers?login=L&id=…&sku=…      (each repeatable)
       200 {"offers": [{id, sku, stock, status, ended_by}]}: the seller's offers with one
       of those ids or SKUs, as they are now
  POST /_simulator/offer-events/expire   {"login"}
       204: the seller's whole offer journal expires, every cursor into it is unknown
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Mapping, Protocol

from stock_pipeline.simulator.loopback import Reply
from stock_pipeline.simulator.state import OfferNotFound, PurchaseRefused

PREFIX = "/_simulator/"


class Harnessed(Protocol):
    """What the endpoints call on the simulator that serves them (`AllegroSimulator`)."""

    def purchase(self, login: str, offer_id: str, quantity: int, *, buyer: str, paid: bool) -> dict: ...

    def offer_states(self, login: str, *, ids: Iterable[str], skus: Iterable[str]) -> list[dict]: ...

    def expire_offer_events(self, login: str) -> None: ...


class _BadRequest(ValueError):
    pass


def _problem(status: int, message: str) -> Reply:
    return Reply(status, {"error": message})


def _json_object(raw_body: bytes) -> dict:
    try:
        body = json.loads(raw_body or b"null")
    except ValueError as exc:
        raise _BadRequest(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise _BadRequest("the body must be a JSON object")
    return body


_REQUIRED: Any = object()


def _field(body: Mapping[str, Any], name: str, kind: type, default: Any = _REQUIRED) -> Any:
    if name not in body:
        if default is _REQUIRED:
            raise _BadRequest(f"{name!r} missing")
        return default
    value = body[name]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _BadRequest(f"{name!r} must be a {kind.__name__}, got {value!r}")
    return value


def serve(sim: Harnessed, method: str, path: str, query: Mapping[str, list[str]], raw_body: bytes) -> Reply:
    try:
        if (method, path) == ("POST", PREFIX + "purchases"):
            body = _json_object(raw_body)
            purchase = sim.purchase(
                _field(body, "login", str),
                _field(body, "offerId", str),
                _field(body, "quantity", int),
                buyer=_field(body, "buyer", str, "buyer"),
                paid=_field(body, "paid", bool, True),
            )
            return Reply(201, purchase)
        if (method, path) == ("GET", PREFIX + "offers"):
            logins = query.get("login", [])
            if len(logins) != 1:
                raise _BadRequest("give one seller: ?login=…")
            return Reply(
                200, {"offers": sim.offer_states(logins[0], ids=query.get("id", []), skus=query.get("sku", []))}
            )
        if (method, path) == ("POST", PREFIX + "offer-events/expire"):
            sim.expire_offer_events(_field(_json_object(raw_body), "login", str))
            return Reply(204)
    except _BadRequest as problem:
        return _problem(400, str(problem))
    except OfferNotFound as missing:
        return _problem(404, f"no offer {missing.args[0]} of that seller")
    except KeyError as missing:  # an unknown seller
        return _problem(404, str(missing.args[0]))
    except PurchaseRefused as refused:
        return _problem(422, str(refused))
    return _problem(404, f"no simulator endpoint {method} {path}")
