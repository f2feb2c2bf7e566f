"""A page of GET /sale/offers, decoded straight into the offer map's columns.

A listing page is ~450 KB of JSON for 1 000 offers, of which the pipeline reads four
fields per offer: id, external.id, stock.available, publication.status. Decoding it whole
(orjson) made a dict for every field of every offer, ~2.6 MB of objects per page, and
was the largest CPU cost of a million-offer listing. msgspec decodes against the few
fields declared here and skips the rest without making objects: ~5x less CPU and ~7x
less memory per page (benchmarks/listing_cpu.py). The columns are made as
core.diff.offers_frame makes them from whole items (tested to be the same frame).
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np
import pandas as pd

from stock_pipeline.core.diff import OFFER_COLUMNS, trimmed_sku
from stock_pipeline.core.vocabulary import PublicationStatus
from stock_pipeline.foundation.errors import AllegroSyncError

# Leaves are Any: a value of an unexpected type reaches the same conversions as before
# (str(), int()) instead of failing the decoding; a missing object is None.


class _External(msgspec.Struct):
    id: Any = None


class _Stock(msgspec.Struct):
    available: Any = None


class _Publication(msgspec.Struct):
    status: Any = None


class _Offer(msgspec.Struct):
    id: Any
    external: _External | None = None
    stock: _Stock | None = None
    publication: _Publication | None = None


class _Page(msgspec.Struct):
    offers: list[_Offer] | None = None
    totalCount: Any = 0  # Allegro's name


_decoder = msgspec.json.Decoder(_Page)


def offers_page(body: bytes) -> tuple[pd.DataFrame, int]:
    """The page's offers as the offer map's columns (core.diff.OFFER_COLUMNS), and the
    totalCount Allegro gave with it. AllegroSyncError when the body is not such a page."""
    try:
        page = _decoder.decode(body)
        return _offers_frame(page.offers or []), int(page.totalCount or 0)
    except (msgspec.DecodeError, TypeError, ValueError) as exc:
        raise AllegroSyncError(f"GET /sale/offers answered with something that is not a listing: {exc}") from None


def _offers_frame(offers: list[_Offer]) -> pd.DataFrame:
    unknown = PublicationStatus.UNKNOWN.value
    columns = {
        "offer_id": pd.array([str(o.id) for o in offers], dtype="string"),
        "sku": pd.array([trimmed_sku(e.id) if (e := o.external) else None for o in offers], dtype="string"),
        "stock": np.array([int(s.available or 0) if (s := o.stock) else 0 for o in offers], dtype="int64"),
        "status": pd.array([(p.status if (p := o.publication) else None) or unknown for o in offers], dtype="string"),
    }
    return pd.DataFrame(columns, columns=OFFER_COLUMNS)
