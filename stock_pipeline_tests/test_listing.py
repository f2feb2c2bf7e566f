"""A listing page decoded into the offer map's columns (allegro/listing.py) is the frame
core.diff.offers_frame makes of the whole items, whatever odd values the items carry."""

from __future__ import annotations

import orjson
import pandas as pd
import pytest

from stock_pipeline.allegro.listing import offers_page
from stock_pipeline.core.diff import offers_frame
from stock_pipeline.foundation.errors import AllegroSyncError

FULL_ITEM = {
    "id": "17000000001",
    "name": "A bike",
    "category": {"id": "257931"},
    "sellingMode": {"format": "BUY_NOW", "price": {"amount": "49.99", "currency": "PLN"}},
    "stock": {"available": 4, "sold": 1},
    "publication": {"status": "ACTIVE", "marketplaces": {"base": {"id": "allegro-pl"}}},
    "external": {"id": " SKU-1 "},
    "isFulfillment": False,
}
ODD_ITEMS = [
    FULL_ITEM,
    {"id": 17000000002, "external": None, "stock": {"available": None}, "publication": {"status": "ENDED"}},
    {"id": "3", "external": {"id": "   "}, "stock": {}, "publication": {}},
    {"id": "4", "external": {}, "publication": None},
    {"id": "5", "external": {"id": 12345}, "stock": None, "publication": {"status": None}},
    {"id": "6", "stock": {"available": 99_999}, "publication": {"status": "ACTIVATING"}},
]


@pytest.mark.parametrize("items", [[], [FULL_ITEM], ODD_ITEMS], ids=["empty", "one", "odd values"])
def test_a_page_decodes_to_the_frame_of_its_whole_items(items):
    frame, total = offers_page(orjson.dumps({"offers": items, "count": len(items), "totalCount": 120}))
    assert total == 120
    pd.testing.assert_frame_equal(frame, offers_frame(items))


def test_a_page_without_offers_is_an_empty_page():
    frame, total = offers_page(b'{"totalCount": 0}')
    assert total == 0
    pd.testing.assert_frame_equal(frame, offers_frame([]))


@pytest.mark.parametrize(
    "body",
    [b"<html>Service Unavailable</html>", b'{"offers": {"id": "1"}}', b'{"offers": [{"name": "no id"}]}'],
    ids=["not json", "offers not a list", "an offer without id"],
)
def test_a_body_that_is_not_a_listing_is_a_clear_error(body):
    with pytest.raises(AllegroSyncError, match="GET /sale/offers answered with something that is not a listing"):
        offers_page(body)
