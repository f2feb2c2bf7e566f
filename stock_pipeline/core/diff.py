"""Which offers must change, and to what: a vectorised join of the offer map with the
stock snapshot. Pure: no I/O, no clock."""

from __future__ import annotations

import numpy as np
import pandas as pd

from stock_pipeline.core.snapshot import MAX_QUANTITY

OFFER_COLUMNS = ["offer_id", "sku", "stock", "status"]
DIFF_COLUMNS = ["offer_id", "sku", "status", "before", "after", "action"]

ACTION_SET = "set"
ACTION_END = "end"


def offers_frame(offers: list[dict]) -> pd.DataFrame:
    """The offer map from `GET /sale/offers` items: one row per offer (SKU may repeat)."""
    rows = {
        "offer_id": [str(o["id"]) for o in offers],
        "sku": [((o.get("external") or {}).get("id")) for o in offers],
        "stock": [int(((o.get("stock") or {}).get("available")) or 0) for o in offers],
        "status": [((o.get("publication") or {}).get("status")) or "UNKNOWN" for o in offers],
    }
    frame = pd.DataFrame(rows, columns=OFFER_COLUMNS)
    return frame.astype({"offer_id": "string", "sku": "string", "stock": "int64", "status": "string"})


def empty_diff() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c in ("before", "after") else "string") for c in DIFF_COLUMNS})


def compute_diff(offers: pd.DataFrame, stock: pd.DataFrame) -> pd.DataFrame:
    """Offers whose stock differs from the warehouse.

    Left alone: offers without an external.id, SKUs absent from the snapshot (we know
    nothing about them), and offers that are not ACTIVE (re-activation is decided
    elsewhere). Every offer of a SKU is updated.
    """
    if offers.empty or stock.empty:
        return empty_diff()
    keyed = offers.assign(sku=offers["sku"].str.strip())
    keyed = keyed[keyed["sku"].notna() & (keyed["sku"] != "") & (keyed["status"] == "ACTIVE")]
    joined = keyed.merge(stock.rename(columns={"stock": "target"}), on="sku", how="inner", validate="many_to_one")
    target = np.minimum(joined["target"].to_numpy(dtype="int64"), MAX_QUANTITY)
    changed = joined.assign(after=target)[target != joined["stock"].to_numpy(dtype="int64")]
    diff = pd.DataFrame({
        "offer_id": changed["offer_id"].astype("string"),
        "sku": changed["sku"].astype("string"),
        "status": changed["status"].astype("string"),
        "before": changed["stock"].astype("int64"),
        "after": changed["after"].astype("int64"),
        "action": np.where(changed["after"].to_numpy() == 0, ACTION_END, ACTION_SET),
    })
    diff["action"] = diff["action"].astype("string")
    return diff.sort_values(["action", "after", "offer_id"], kind="stable").reset_index(drop=True)
