"""Writes planned as data before they are sent: which offer goes by which call.

For each target value the cheaper of (one PATCH per offer) and (one command + one
poll per `batch_size` offers) is chosen; offers going to 0 likewise choose between a
PATCH with 0 (which ends the offer) and an END publication command. Ties go to PATCH:
it answers synchronously in the common case, a command always needs a poll.

By time, when the account's write rates are known (`WriteRates`): calls are not the
whole cost. PATCHes also draw on a per-user budget (about 2 500/min) far below the
client_id's 9 000 requests/min, so an account writing thousands of distinct values alone
would wait minutes on that budget while its share of the client_id's rate sat idle. The
plan's time is the slowest of its three budgets (write calls at the account's share of
the client_id's rate, PATCHes at the PATCH budget, offers changed by commands at the
offer-changes budget); value groups move from PATCH to commands, those costing the
fewest extra calls per PATCH saved first, as long as that shortens the plan. When many
accounts share the client_id's rate, calls are what binds and nothing moves: the
by-calls plan is then also the fastest. The hourly offer-changes budget (250 000) is
not modelled: a plan moves PATCHes only while PATCHes bind, a few thousand offers.

Re-activating an offer is two steps: its quantity is set first (grouped with the
other quantity writes of that value) unless it already holds the target, then an
ACTIVATE publication command, which needs stock > 0 — so activation rows run in a
second phase, after the quantity writes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from stock_pipeline.core.contracts import Action, Method, OfferMap

PLAN_COLUMNS = ["offer_id", "sku", "before", "after", "action", "method", "batch"]  # contracts.PlanFrame
CALLS_PER_COMMAND = 2  # the PUT and one read of its tasks


@dataclass(frozen=True)
class WriteRates:
    """What one account's writes may spend per second: its share of the client_id's
    requests, its PATCH budget, and its budget of offers changed by commands; the PATCHes
    its budget lets go at once, and the least time a command takes (Allegro runs it before
    the first poll can see it done), which keeps a handful of PATCHes from ever moving."""

    calls: float
    patches: float
    command_offers: float
    patch_burst: int = 0
    command_wait: float = 0.0

    def __post_init__(self):
        if min(self.calls, self.patches, self.command_offers) <= 0:
            raise ValueError(f"write rates must be positive, got {self}")

    def seconds(self, calls, patches, command_offers):
        """The time writes of these sizes take: their slowest budget (vectorised)."""
        command_offers = np.asarray(command_offers)
        return np.maximum.reduce(
            [
                np.asarray(calls) / self.calls,
                np.maximum(np.asarray(patches) - self.patch_burst, 0) / self.patches,
                command_offers / self.command_offers,
                np.where(command_offers > 0, self.command_wait, 0.0),
            ]
        )


def command_calls(offers: np.ndarray | int, batch_size: int) -> np.ndarray:
    return CALLS_PER_COMMAND * np.ceil(np.asarray(offers) / batch_size).astype("int64")


def plan_writes(diff: pd.DataFrame, batch_size: int = 1000, rates: WriteRates | None = None) -> pd.DataFrame:
    """One row per offer to write: `method` and, for commands, `batch` (rows of a batch
    share one command: one value, at most `batch_size` offers). PATCH rows have batch -1.
    Routes are chosen by calls, or by time when `rates` are given (module docstring)."""
    if not 1 <= batch_size <= 1000:
        raise ValueError(f"batch_size must be 1..1000 (Allegro's command maximum), got {batch_size}")
    if diff.empty:
        return pd.DataFrame(
            {c: pd.Series(dtype="int64" if c in ("before", "after", "batch") else "string") for c in PLAN_COLUMNS}
        )
    writes, activations = _split_phases(diff[["offer_id", "sku", "before", "after", "action"]])
    quantity_and_end = _plan_quantity_and_end(writes, batch_size, rates, len(activations))
    plan = _concat([quantity_and_end, _plan_activations(activations, batch_size)])
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


def _plan_quantity_and_end(
    diff: pd.DataFrame, batch_size: int, rates: WriteRates | None, activations: int
) -> pd.DataFrame:
    if diff.empty:
        return diff.assign(method=pd.Series(dtype="string"), batch=pd.Series(dtype="int64"))
    plan = diff.sort_values(["action", "after", "offer_id"], kind="stable").reset_index(drop=True)
    # Offers ending share one "value" group whatever their `after` (always 0).
    group_key = plan["action"] + ":" + plan["after"].astype("string")
    sizes = group_key.value_counts()
    by_command = command_calls(sizes.to_numpy(), batch_size) < sizes.to_numpy()
    if rates is not None:
        by_command = _faster_by_command(sizes.to_numpy(), by_command, batch_size, rates, activations)
    use_command = group_key.map(pd.Series(by_command, index=sizes.index)).to_numpy(dtype=bool)

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


def _faster_by_command(
    sizes: np.ndarray, by_command: np.ndarray, batch_size: int, rates: WriteRates, activations: int
) -> np.ndarray:
    """`by_command` (the by-calls choice per value group of `sizes` offers) with the PATCH
    groups that make the plan fastest moved to commands (module docstring). Activations
    are always commands: they count in the calls and offers, they never move."""
    as_command = command_calls(sizes, batch_size)
    calls = int(np.where(by_command, as_command, sizes).sum()) + int(command_calls(activations, batch_size))
    patches = int(sizes[~by_command].sum())
    command_offers = int(sizes[by_command].sum()) + activations
    movable = np.flatnonzero(~by_command)
    if not len(movable):
        return by_command
    extra = as_command[movable] - sizes[movable]  # calls a move adds (<= 0 for a tie)
    order = movable[np.lexsort((-sizes[movable], extra / sizes[movable]))]
    moved = np.concatenate([[0], np.cumsum(sizes[order])])
    added = np.concatenate([[0], np.cumsum(as_command[order] - sizes[order])])
    seconds = rates.seconds(calls + added, patches - moved, command_offers + moved)
    best = int(np.argmin(seconds))  # the first of equals: no move that does not shorten the plan
    faster = by_command.copy()
    faster[order[:best]] = True
    return faster


def plan_cost(plan: pd.DataFrame) -> tuple[int, int, int]:
    """What `plan`'s writes spend: (calls, PATCHes, offers changed by commands)."""
    patches = int((plan["method"] == Method.PATCH).sum())
    commands = plan["batch"] >= 0
    return patches + CALLS_PER_COMMAND * int(plan.loc[commands, "batch"].nunique()), patches, int(commands.sum())


def plan_seconds(plan: pd.DataFrame, rates: WriteRates) -> float:
    """The time `plan`'s writes take at `rates`: its slowest budget."""
    return float(rates.seconds(*plan_cost(plan)))


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


__all__ = ["plan_writes", "plan_cost", "plan_seconds", "minimum_calls", "command_calls", "WriteRates", "PLAN_COLUMNS"]
