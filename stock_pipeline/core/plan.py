"""Writes planned as data before they are sent: which offer goes by which call.

For each target value the cheaper of (one PATCH per offer) and (one command + one
poll per `batch_size` offers) is chosen; offers going to 0 likewise choose between a
PATCH with 0 (which ends the offer) and an END publication command. Ties go to PATCH:
it answers synchronously in the common case, a command always needs a poll.

Re-activating an offer is two steps: its quantity is set first (grouped with the
other quantity writes of that value) unless it already holds the target, then an
ACTIVATE publication command, which needs stock > 0 — so activation rows run in a
second phase, after the quantity writes.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from stock_pipeline.core.contracts import Action, Method, OfferMap

PLAN_COLUMNS = ["offer_id", "sku", "before", "after", "action", "method", "batch"]  # contracts.PlanFrame
CALLS_PER_COMMAND = 2  # the PUT and one read of its tasks


def command_calls(offers: np.ndarray | int, batch_size: int) -> np.ndarray:
    return CALLS_PER_COMMAND * np.ceil(np.asarray(offers) / batch_size).astype("int64")


def plan_writes(diff: pd.DataFrame, batch_size: int = 1000) -> pd.DataFrame:
    """One row per offer to write: `method` and, for commands, `batch` (rows of a batch
    share one command: one value, at most `batch_size` offers). PATCH rows have batch -1."""
    if not 1 <= batch_size <= 1000:
        raise ValueError(f"batch_size must be 1..1000 (Allegro's command maximum), got {batch_size}")
    if diff.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c in ("before", "after", "batch") else "string") for c in PLAN_COLUMNS}
        )
    writes, activations = _split_phases(diff[["offer_id", "sku", "before", "after", "action"]])
    plan = _concat([_plan_quantity_and_end(writes, batch_size), _plan_activations(activations, batch_size)])
    # Command batches numbered 0..k-1 across both phases.
    commands = plan["batch"] >= 0
    phase = plan["action"].eq(Action.ACTIVATE).astype(str)
    plan.loc[commands, "batch"] = pd.factorize((phase + ":" + plan["batch"].astype(str))[commands])[0]
    return plan[PLAN_COLUMNS].astype({"action": "string", "method": "string"})


def _split_phases(diff: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(quantity and end writes, activations): an offer coming back needs its quantity
    set first unless it already holds the target."""
    activations = diff[diff["action"] == Action.ACTIVATE]
    restock = activations[activations["before"] != activations["after"]].assign(action=Action.SET.value)
    return _concat([diff[diff["action"] != Action.ACTIVATE], restock]), activations


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    non_empty = [f for f in frames if not f.empty]
    return pd.concat(non_empty, ignore_index=True) if non_empty else frames[0].reset_index(drop=True)


def _plan_activations(activations: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    # No single-offer call activates: always a command, chunked.
    plan = activations.sort_values("offer_id", kind="stable").reset_index(drop=True)
    return plan.assign(
        method=Method.PUBLICATION_COMMAND.value, batch=(np.arange(len(plan)) // batch_size).astype("int64")
    )


def _plan_quantity_and_end(diff: pd.DataFrame, batch_size: int) -> pd.DataFrame:
    if diff.empty:
        return diff.assign(method=pd.Series(dtype="string"), batch=pd.Series(dtype="int64"))
    plan = diff.sort_values(["action", "after", "offer_id"], kind="stable").reset_index(drop=True)
    # Offers ending share one "value" group whatever their `after` (always 0).
    group_key = plan["action"] + ":" + plan["after"].astype("string")
    group_size = group_key.map(group_key.value_counts()).to_numpy()
    use_command = command_calls(group_size, batch_size) < group_size

    method = np.where(
        plan["action"].to_numpy() == Action.END, Method.PUBLICATION_COMMAND.value, Method.QUANTITY_COMMAND.value
    )
    method = np.where(use_command, method, Method.PATCH.value)
    chunk = plan.groupby(group_key, sort=False).cumcount().to_numpy() // batch_size
    batch_key = pd.Series(group_key.to_numpy() + "#" + chunk.astype(str))
    batch = batch_key.factorize()[0]
    plan["method"] = pd.Series(method, dtype="string")
    plan["batch"] = np.where(use_command, batch, -1).astype("int64")
    return plan


def minimum_calls(offers: OfferMap | int, diff: pd.DataFrame, batch_size: int = 1000) -> int:
    """The least number of API calls a full sync of this diff can cost (the yardstick
    for the ≤ 1.2× budget): listing pages plus the cheaper write route per value.

    `offers`: the account's offer map, which must be complete (the listing's cost is
    that of every offer), or the number of all its offers."""
    if isinstance(offers, OfferMap):
        offer_count = len(offers.require_complete("the minimum number of API calls"))
    else:
        offer_count = int(offers)
    listing = max(1, int(np.ceil(offer_count / 1000)))
    if diff.empty:
        return listing
    writes, activations = _split_phases(diff)
    key = writes["action"] + ":" + writes["after"].astype("string")
    sizes = key.value_counts().to_numpy()
    return (
        listing
        + int(np.minimum(sizes, command_calls(sizes, batch_size)).sum())
        + int(command_calls(len(activations), batch_size))
    )


__all__ = ["plan_writes", "minimum_calls", "command_calls", "PLAN_COLUMNS"]
