"""Guards against a broken warehouse feed: pure verdicts, wired as blocking asset checks.

Ending hundreds of offers because the feed broke (an empty table, a wrong query, a
unit change) is the worst thing a stock sync can do, so writes are held when the
snapshot is empty or shrank sharply against the last snapshot that passed, or when a
diff would end or cut a large share of an account's offers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from stock_pipeline.core.contracts import Action, OfferMap, PublicationStatus


@dataclass(frozen=True)
class GuardLimits:
    max_snapshot_shrink: float  # share of SKUs that may vanish between two good snapshots
    max_risky_share: float  # share of an account's active offers that one run may end or cut
    min_risky_offers: int  # below this count a run is never held (small shops sell out for real)
    cut_ratio: float = 0.5  # an offer losing more than this share of its stock counts as cut


@dataclass(frozen=True)
class Verdict:
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def snapshot_verdict(skus: int, last_good_skus: int | None, limits: GuardLimits) -> Verdict:
    metadata = {
        "skus": skus,
        "last_good_skus": last_good_skus if last_good_skus is not None else -1,
        "max_shrink": limits.max_snapshot_shrink,
    }
    if skus == 0:
        return Verdict(
            False, "the stock snapshot is empty: writes held (a broken feed would end every offer)", metadata
        )
    if last_good_skus:
        shrink = 1 - skus / last_good_skus
        metadata["shrink"] = round(shrink, 4)
        if shrink > limits.max_snapshot_shrink:
            return Verdict(
                False,
                f"the stock snapshot shrank from {last_good_skus} to {skus} SKUs "
                f"(-{shrink:.0%}, more than the allowed {limits.max_snapshot_shrink:.0%}): writes held",
                metadata,
            )
    return Verdict(True, f"{skus} SKUs", metadata)


def active_offer_count(offer_map: OfferMap) -> int:
    """The diff guard's denominator: the account's ACTIVE offers. An offer missing from a
    partial listing would shrink it and make a normal run look like a collapse, so only a
    complete listing is counted."""
    offers = offer_map.require_complete("the diff guard's share of active offers")
    return int((offers["status"] == PublicationStatus.ACTIVE).sum())


def diff_verdict(diff: pd.DataFrame, active_offers: int, limits: GuardLimits) -> Verdict:
    ending = diff["action"] == Action.END
    cut = (diff["action"] == Action.SET) & (diff["after"] < diff["before"] * (1 - limits.cut_ratio))
    risky = int(ending.sum() + cut.sum())
    # No active offers to compare with while offers would still end: treat as all of them.
    share = risky / active_offers if active_offers else (1.0 if risky else 0.0)
    metadata = {
        "to_end": int(ending.sum()),
        "to_cut": int(cut.sum()),
        "active_offers": active_offers,
        "risky_share": round(share, 4),
        "max_risky_share": limits.max_risky_share,
    }
    if risky >= limits.min_risky_offers and share > limits.max_risky_share:
        return Verdict(
            False,
            f"this run would end {int(ending.sum())} and cut {int(cut.sum())} of {active_offers} "
            f"active offers ({share:.0%}, more than the allowed {limits.max_risky_share:.0%}): "
            "writes held",
            metadata,
        )
    return Verdict(True, f"{risky} offers ended or cut ({share:.0%})", metadata)
