"""A sale on Allegro is never undone: the holds that keep a sync from raising an offer's
stock back over a unit a buyer has just bought. Pure: no I/O, no clock (`now` is given).

Allegro lowers an offer's stock itself when a buyer buys, long before the seller's
warehouse books the order. A sync in that window sees warehouse 5, Allegro 4, and would
write 5 back: a unit already sold, offered again. So every purchase (a line item of a
BOUGHT event of the order journal, `GET /order/events`) becomes a *hold* on its offer,
recording the warehouse target of that offer when the sale was recorded
(`warehouse_stock_at_sale`, as the account's policy computes it). While a hold is live, a
write that would raise the offer's stock is dropped from the plan and reported as held.

The rule, per hold (`apply_holds`):

- **live** while it has not expired (`hold_until = bought_at + STOCK_SALE_HOLD_SECONDS`)
  and the offer's warehouse target is still the value recorded at the sale: the order is
  not booked yet, so Allegro's lower stock is the truth and a raise would undo the sale;
- **released** when the target differs from the recorded one (the order was booked, a
  delivery came, the policy changed: whatever the cause, the warehouse now says something
  new and is believed again), or when the hold expired. Released holds are reported so
  a real sync has the store mark them released; the write goes ahead in this very run.

Only raises are held: a write that lowers stock or ends the offer goes ahead (it can only
make overselling less likely), and re-activating an offer counts as a raise whatever its
numbers. Decided edge cases:

- **Several sales of one offer**: each sale is its own hold (one per line item). The offer
  is held while any of its holds is live; holds whose recorded value the warehouse has
  moved past are released one by one. A known limit of "the value changed": when two
  sales were recorded at the same warehouse value and the warehouse books only the first,
  the value changes, both holds are released, and the second sale's unit is offered again
  until that order is booked too. The policy (reserve, percentage, combine mode) makes
  counting units back from the target unreliable, so the rule stays the one the issue
  states: the SKU's warehouse value changed.
- **Target changed, then changed back**: a change counts when a sync sees it. A real
  sync that saw the new value has released the hold for good, so the old value coming
  back later does not re-arm it. A change that came and went between two syncs is never
  seen: the hold stays live until it expires (the safe side: at worst a unit under-sold
  for the hold's length). A dry run releases nothing, so after one the hold still stands.
- **The SKU left the warehouse** (no row, or a bad row excluded it): nothing is written
  to that offer anyway, and an absent value says nothing about the order being booked (a
  feed hiccup looks the same), so the hold is neither used nor released: it stays until
  it expires or the SKU comes back (with the recorded value: still live; another: released).
- **The SKU was not in the warehouse when the sale was recorded**
  (`warehouse_stock_at_sale` missing): the first value the warehouse gives is a change,
  so the hold is released then.
- **An offer the listing did not return** (a partial listing): nothing is known of its
  target; its holds are kept as they are.

Why an hour by default (`STOCK_SALE_HOLD_SECONDS`, 3600): warehouses normally book an
order within minutes to an hour of the purchase (order import every few minutes, then
picking). A hold that runs out before the order is booked lets a sync re-offer the sold
unit (overselling, what sellers fear most); a hold that runs far longer keeps a unit off
Allegro whenever the booking went unseen (booked, then a delivery brought the value back
to where it was): under-selling. Any change
of the warehouse value releases a hold at once, so the hold's length only matters when
the warehouse is slow or silent.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from stock_pipeline.core.policy import StockPolicy, normalise_skus, offer_targets
from stock_pipeline.core.vocabulary import Action

BOUGHT = "BOUGHT"  # the order journal's event type of a purchase

SALE_COLUMNS = ["order_event_id", "line_item_id", "offer_id", "sku", "quantity", "bought_at"]
HOLD_COLUMNS = [
    "offer_id",
    "sku",
    "quantity",
    "warehouse_stock_at_sale",
    "bought_at",
    "hold_until",
    "order_event_id",
    "line_item_id",
]
# The writes a hold kept back: the diff's columns, then why.
HELD_COLUMNS = [
    "offer_id",
    "sku",
    "status",
    "before",
    "after",
    "action",
    "sales",
    "units_sold",
    "warehouse_stock_at_sale",
    "hold_until",
    "reason",
]
RELEASED_EXPIRED = "expired"
RELEASED_WAREHOUSE_CHANGED = "warehouse value changed"

_STRING_COLUMNS = ("order_event_id", "line_item_id", "offer_id", "sku")
_TIME = "datetime64[ns, UTC]"


class OrderEventError(ValueError):
    """An order event that is not what the order journal's schema says."""


# --- the order journal → sales --------------------------------------------------------------


def sales_from_order_events(events: Iterable[Mapping]) -> pd.DataFrame:
    """One row per line item of the BOUGHT events (SALE_COLUMNS), other event types
    ignored, each line item once (the first event naming it: the journal is oldest
    first). A line item of quantity 0 sold nothing and is left out. `bought_at` is the
    line item's `boughtAt`, or the event's `occurredAt` when it has none (optional in
    the schema), in UTC. An event missing what a sale needs raises OrderEventError
    naming the event and the field."""
    rows: list[tuple] = []
    for position, event in enumerate(events):
        if not isinstance(event, Mapping):
            raise OrderEventError(f"order event #{position} is not an object: {event!r:.80}")
        if event.get("type") != BOUGHT:
            continue
        event_id = _required(event, "id", f"order event #{position}")
        where = f"order event {event_id}"
        order = event.get("order")
        items = order.get("lineItems") if isinstance(order, Mapping) else None
        if not isinstance(items, list):
            raise OrderEventError(f"{where}: order.lineItems is missing or not a list")
        for index, item in enumerate(items):
            item_where = f"{where}, order.lineItems[{index}]"
            if not isinstance(item, Mapping):
                raise OrderEventError(f"{item_where} is not an object")
            offer = item.get("offer")
            if not isinstance(offer, Mapping):
                raise OrderEventError(f"{item_where}: offer is missing")
            external = offer.get("external")
            sku = external.get("id") if isinstance(external, Mapping) else None
            rows.append(
                (
                    event_id,
                    _required(item, "id", item_where),
                    _required(offer, "id", f"{item_where}.offer"),
                    sku.strip() or None if isinstance(sku, str) else None,
                    _quantity(item.get("quantity"), item_where),
                    item.get("boughtAt") or event.get("occurredAt"),
                    item_where,
                )
            )
    if not rows:
        return empty_sales()
    frame = pd.DataFrame(rows, columns=[*SALE_COLUMNS, "where"])
    frame["bought_at"] = _times(frame["bought_at"], frame["where"])
    frame = frame[frame["quantity"] > 0].drop_duplicates("line_item_id", keep="first")
    return _typed(frame[SALE_COLUMNS].reset_index(drop=True), SALE_COLUMNS)


def _required(mapping: Mapping, key: str, where: str) -> str:
    value = mapping.get(key)
    if value is None or (isinstance(value, str) and not value.strip()) or isinstance(value, (dict, list, bool)):
        raise OrderEventError(f"{where}: {key} is missing or empty")
    return str(value).strip()


def _quantity(value: object, where: str) -> int:
    # JSON numbers: 2 and 2.0 are the same whole quantity; anything else is not a quantity.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 0:
        raise OrderEventError(f"{where}: quantity must be a whole number >= 0, got {value!r}")
    return int(value)


def _times(values: pd.Series, where: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(values, utc=True, errors="coerce", format="ISO8601")
    bad = parsed.isna()
    if bad.any():
        first = int(np.flatnonzero(bad.to_numpy())[0])
        raise OrderEventError(
            f"{where.iloc[first]}: boughtAt (or the event's occurredAt) must be an ISO date-time, "
            f"got {values.iloc[first]!r}"
        )
    return parsed.astype(_TIME)


def empty_sales() -> pd.DataFrame:
    return _typed(pd.DataFrame({c: [] for c in SALE_COLUMNS}), SALE_COLUMNS)


# --- sales → holds --------------------------------------------------------------------------


def holds_for_sales(
    sales: pd.DataFrame,
    snapshot_stock: pd.DataFrame,
    policy: StockPolicy,
    *,
    hold: timedelta,
    now: datetime,
) -> pd.DataFrame:
    """A hold per sale (HOLD_COLUMNS): `warehouse_stock_at_sale` is the target the
    account's `policy` makes of the sale's SKU in `snapshot_stock` (the cleaned snapshot,
    rows of one SKU combined as the policy says; missing when the warehouse has no such
    SKU or the line item named none), `hold_until = bought_at + hold`. A sale whose hold
    has already run out at `now` makes no hold: replaying old journal events records
    nothing."""
    if hold <= timedelta(0):
        raise ValueError(f"hold must be a positive duration, got {hold}")
    if sales.empty:
        return empty_holds()
    missing = set(SALE_COLUMNS) - set(sales.columns)
    if missing:
        raise ValueError(f"sales lack columns: {', '.join(sorted(missing))}")
    sku = normalise_skus(sales["sku"].astype("string"), policy)
    named = sku.notna().to_numpy(dtype=bool)
    found = np.zeros(len(sales), dtype=bool)
    target = np.zeros(len(sales), dtype="int64")
    if named.any():
        found[named], target[named] = offer_targets(snapshot_stock, policy, sku[named])
    holds = sales.assign(
        warehouse_stock_at_sale=pd.array(np.where(found, target, 0), dtype="Int64"),
        hold_until=pd.to_datetime(sales["bought_at"], utc=True) + hold,
    )
    holds.loc[~found, "warehouse_stock_at_sale"] = pd.NA
    holds = holds[holds["hold_until"] > pd.Timestamp(now)]
    return typed_holds(holds.reset_index(drop=True))


def empty_holds() -> pd.DataFrame:
    return typed_holds(pd.DataFrame({c: [] for c in HOLD_COLUMNS}))


def typed_holds(frame: pd.DataFrame) -> pd.DataFrame:
    """HOLD_COLUMNS in their dtypes (times in UTC; naive ones are taken as UTC)."""
    return _typed(frame[HOLD_COLUMNS], HOLD_COLUMNS)


def _typed(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    dtypes = {c: "string" for c in _STRING_COLUMNS if c in columns}
    dtypes.update({c: "int64" for c in ("quantity",) if c in columns})
    dtypes.update({c: "Int64" for c in ("warehouse_stock_at_sale",) if c in columns})
    frame = frame.astype(dtypes)
    for column in ("bought_at", "hold_until"):
        if column in columns:
            frame[column] = pd.to_datetime(frame[column], utc=True).astype(_TIME)
    return frame


# --- holds applied to a diff ------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HoldOutcome:
    diff: pd.DataFrame  # the diff without the held writes: what plan_writes gets
    held: pd.DataFrame  # HELD_COLUMNS, one row per offer whose raise was held
    released: pd.DataFrame  # HOLD_COLUMNS + `reason`: holds to release; a dry run only shows them


def apply_holds(
    diff: pd.DataFrame,
    holds: pd.DataFrame,
    *,
    now: datetime,
    targets: pd.Series | None = None,
) -> HoldOutcome:
    """Holds applied to an account's diff (core.diff.diff_offers' frame, before
    plan_writes), by the rule of this module's docstring.

    `targets`: the warehouse target of each offer now, indexed by offer_id, for (at least)
    the held offers whose SKU the warehouse holds; an offer not in it has no known target
    (its SKU is absent, or it was not listed) and its holds stay as they are. None: the
    targets the diff carries (`after`), so holds of offers outside the diff are neither
    used nor released."""
    if holds.empty:
        return HoldOutcome(diff, _empty_held(), empty_released())
    if targets is None:
        targets = pd.Series(diff["after"].to_numpy(dtype="int64"), index=pd.Index(diff["offer_id"], dtype="string"))
    current = pd.Series(targets.reindex(pd.Index(holds["offer_id"], dtype="string")).to_numpy(), index=holds.index)
    known = current.notna()
    recorded = holds["warehouse_stock_at_sale"].astype("Int64")
    expired = holds["hold_until"] <= pd.Timestamp(now)
    same = (recorded.astype("Float64") == current.astype("Float64")).fillna(False).astype(bool)
    release = expired | (known & ~same)
    live = known & same & ~expired  # holds that keep raises of their offers back now

    released = holds[release].assign(
        reason=pd.Series(np.where(expired[release], RELEASED_EXPIRED, RELEASED_WAREHOUSE_CHANGED), dtype="string")
    )
    holding = holds[live]
    raising = (diff["after"] > diff["before"]) | (diff["action"] == Action.ACTIVATE)
    held_mask = (raising & diff["offer_id"].isin(holding["offer_id"])).to_numpy(dtype=bool)
    if not held_mask.any():
        return HoldOutcome(diff, _empty_held(), released.reset_index(drop=True))
    per_offer = holding.groupby("offer_id", sort=False).agg(
        sales=("line_item_id", "size"),
        units_sold=("quantity", "sum"),
        warehouse_stock_at_sale=("warehouse_stock_at_sale", "first"),
        hold_until=("hold_until", "max"),
    )
    held = diff[held_mask].join(per_offer, on="offer_id")
    held["reason"] = pd.Series(
        [
            f"held for {n} sale{'s' if n != 1 else ''} ({units} unit{'s' if units != 1 else ''}) on Allegro not yet "
            f"booked in the warehouse: its value is still {at_sale}, as when it was sold; raising {before} → {after} "
            f"would offer sold units again. Held until {until:%Y-%m-%dT%H:%M:%SZ} or until the warehouse value changes"
            for n, units, at_sale, before, after, until in zip(
                held["sales"],
                held["units_sold"],
                held["warehouse_stock_at_sale"],
                held["before"],
                held["after"],
                held["hold_until"],
            )
        ],
        index=held.index,
        dtype="string",
    )
    held = held[HELD_COLUMNS].astype({"sales": "int64", "units_sold": "int64", "warehouse_stock_at_sale": "int64"})
    return HoldOutcome(
        diff[~held_mask].reset_index(drop=True), held.reset_index(drop=True), released.reset_index(drop=True)
    )


def _empty_held() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="string") for c in HELD_COLUMNS})
    frame = frame.astype({c: "int64" for c in ("before", "after", "sales", "units_sold", "warehouse_stock_at_sale")})
    frame["hold_until"] = pd.Series(dtype=_TIME)
    return frame


def empty_released() -> pd.DataFrame:
    return empty_holds().assign(reason=pd.Series(dtype="string"))


__all__ = [
    "BOUGHT",
    "HELD_COLUMNS",
    "HOLD_COLUMNS",
    "HoldOutcome",
    "OrderEventError",
    "SALE_COLUMNS",
    "apply_holds",
    "empty_holds",
    "empty_released",
    "empty_sales",
    "holds_for_sales",
    "sales_from_order_events",
    "typed_holds",
]
