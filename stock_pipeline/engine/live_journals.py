"""Following an account's two Allegro journals between full syncs.

- The offer-events journal names the offers that changed (a purchase, another app, the
  seller's hand, our own writes) but carries no values: the offers it names are re-read
  (`GET /sale/offers?offer.id=…`, 100 per call) and stored in the live offer map. The
  position is the caller's (the live sensor's cursor): a tick evaluated again reads the
  same events again, and a re-read is idempotent (the newer observation wins).
- The order journal's BOUGHT events are the sales: each line item becomes a sale hold
  (core/sale_holds.py), recorded once per line item whatever the number of times the
  journal is read; the position moves on once the holds are stored.

An unknown or expired journal position (Allegro keeps 24 h) cannot be caught up: the
position is taken again at the journal's head and the account's offer map is trusted
again only after a full listing that started after that moment.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pandas as pd

from stock_pipeline.allegro.client import AllegroClient
from stock_pipeline.core.diff import offers_frame
from stock_pipeline.core.policy import StockPolicy
from stock_pipeline.core.sale_holds import BOUGHT, holds_for_sales, sales_from_order_events
from stock_pipeline.foundation.errors import OfferEventsCursorExpiredError
from stock_pipeline.foundation.logs import get_logger
from stock_pipeline.store.live_offers import LiveOffers
from stock_pipeline.store.sale_holds import SaleHolds

log = get_logger(__name__)

# The events that can change what the offer map holds (stock, status, SKU, existence).
OFFER_EVENT_TYPES = ("OFFER_STOCK_CHANGED", "OFFER_ENDED", "OFFER_ACTIVATED", "OFFER_CHANGED", "OFFER_ARCHIVED")
EVENTS_PER_CALL = 1000
MAX_EVENT_CALLS_PER_POLL = 20  # 20 000 events; more waits for the next poll, the position kept


@dataclass(frozen=True)
class OfferJournalRead:
    reread: pd.DataFrame = field(default_factory=lambda: offers_frame([]))  # the offers re-read, now current
    gone: tuple[str, ...] = ()  # offers the journal named that Allegro no longer lists
    # Offers whose stock Allegro lowered (or ended) since the map last saw them: a buyer's
    # doing, until the order journal says otherwise (or another app's; see defs/live_sync.py).
    fell: tuple[str, ...] = ()
    events: int = 0
    api_calls: int = 0
    position: str = ""  # the journal position after these events
    position_lost: bool = False  # the position expired: a full listing is needed


def follow_offer_journal(client: AllegroClient, live: LiveOffers, account: str, cursor: str) -> OfferJournalRead:
    """The events after `cursor` ("" = from the oldest), the offers they name re-read and
    stored with the new position."""
    calls_before = client.stats.total
    events: list = []
    position = cursor
    try:
        for _ in range(MAX_EVENT_CALLS_PER_POLL):
            page = client.offer_events(position or None, limit=EVENTS_PER_CALL, types=OFFER_EVENT_TYPES)
            events += page
            if page:
                position = page[-1].id
            if len(page) < EVENTS_PER_CALL:
                break
    except OfferEventsCursorExpiredError as exc:
        log.warning("offer_journal_position_lost", account=account, error=str(exc))
        return OfferJournalRead(position_lost=True, api_calls=client.stats.total - calls_before)
    if not events:
        return OfferJournalRead(position=cursor, api_calls=client.stats.total - calls_before)
    named = list(dict.fromkeys(e.offer_id for e in events))
    # Taken before the re-read: a write confirmed while it ran is newer and keeps its row.
    observed_at = datetime.now(timezone.utc)
    known = live.offers(account, offer_ids=named).set_index("offer_id")
    reread = offers_frame(client.offers_by_id(named)) if named else offers_frame([])
    gone = tuple(sorted(set(named) - set(reread["offer_id"])))
    live.observe(account, reread, observed_at, gone=gone)
    return OfferJournalRead(
        reread=reread,
        gone=gone,
        fell=_fell(known, reread),
        events=len(events),
        position=position,
        api_calls=client.stats.total - calls_before,
    )


def _fell(known: pd.DataFrame, reread: pd.DataFrame) -> tuple[str, ...]:
    now = reread.set_index("offer_id")
    both = now.index.intersection(known.index)
    lower = now.loc[both, "stock"].to_numpy() < known.loc[both, "stock"].to_numpy()
    ended = (now.loc[both, "status"].to_numpy() == "ENDED") & (known.loc[both, "status"].to_numpy() != "ENDED")
    return tuple(sorted(map(str, both[lower | ended])))


def start_following_offer_journal(client: AllegroClient, live: LiveOffers, account: str) -> str:
    """Take the journal's head as the account's position (the map waits for a listing that
    starts after this). An empty journal's position is "" (every event to come is after it)."""
    since = datetime.now(timezone.utc)
    head = client.offer_events_head() or ""
    live.start_following(account, since)
    return head


def follow_order_journal(
    client: AllegroClient,
    live: LiveOffers,
    holds: SaleHolds,
    account: str,
    snapshot_stock: pd.DataFrame,
    policy: StockPolicy,
    hold: timedelta,
) -> set[str]:
    """The BOUGHT events after the account's stored position, each line item recorded as a
    sale hold (once, however often it is read), then the position moved on. Returns the
    offers sold. With no position yet, it is taken at the journal's newest event: sales
    from before the pipeline followed the journal are not known to it."""
    state = live.state(account)
    position = state.order_events_cursor if state is not None else None
    if position is None:
        live.set_order_events_cursor(account, client.latest_order_event_id() or "")
        return set()
    events: list = []
    for _ in range(MAX_EVENT_CALLS_PER_POLL):
        page = client.order_events(position or None, types=(BOUGHT,), limit=EVENTS_PER_CALL)
        events += page
        if page:
            position = page[-1].id
        if len(page) < EVENTS_PER_CALL:
            break
    if not events:
        return set()
    now = datetime.now(timezone.utc)
    sales = sales_from_order_events(e.raw for e in events)
    recorded = holds.record(account, holds_for_sales(sales, snapshot_stock, policy, hold=hold, now=now))
    live.set_order_events_cursor(account, position)
    if recorded:
        log.info(
            "sales_held",
            account=account,
            holds=recorded,
            msg=f"{recorded} sale(s) on Allegro of account {account} recorded: those offers are not raised back "
            "until the warehouse books them",
        )
    return set(sales["offer_id"].astype(str))
