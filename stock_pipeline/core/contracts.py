"""The data contracts between the assets: the columns, dtypes and values each frame must
have (pandera models), over the words of core/vocabulary.py (re-exported here). Pure: no
Dagster, no I/O.

The models are checked at every asset boundary (`defs/contract_types.py` turns each into
a Dagster type), so a frame that breaks its contract fails the step with a sentence
naming the column, the check and the rows, instead of travelling on to the writes.

The offer map travels as an `OfferMap`: the frame plus whether the listing was complete.
Code that works on the listed offers (the diff) takes any map; code that draws
conclusions from an offer's *absence* (forgetting ended offers, the diff guard's count of
active offers, the minimum number of API calls) calls `require_complete` and refuses a
partial one with `IncompleteOfferMapError`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import StrEnum

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.engines import pandas_engine
from pandera.errors import SchemaError, SchemaErrors
from pandera.typing import Series

from stock_pipeline.core import frame_memo
from stock_pipeline.core.snapshot import MAX_QUANTITY
from stock_pipeline.core.vocabulary import Action, Method, PublicationStatus, WriteStatus
from stock_pipeline.foundation.errors import IncompleteOfferMapError


def _values(enum: type[StrEnum]) -> list[str]:
    return [member.value for member in enum]


# ---- frames -----------------------------------------------------------------------------


class SnapshotFrame(pa.DataFrameModel):
    """The cleaned warehouse snapshot: rows of one SKU may repeat (each account's policy
    combines them); stock may exceed 99 999 (the policy caps it)."""

    sku: Series[pd.StringDtype] = pa.Field(
        nullable=False, str_length={"min_value": 1}, description="trimmed, never empty"
    )
    stock: Series[np.int64] = pa.Field(ge=0, description="whole units in the warehouse")

    class Config:
        name = "StockSnapshot"
        strict = True


class OfferFrame(pa.DataFrameModel):
    """The account's offers as listed by GET /sale/offers, one row per offer."""

    offer_id: Series[pd.StringDtype] = pa.Field(nullable=False, unique=True)
    sku: Series[pd.StringDtype] = pa.Field(nullable=True, description="external.id, trimmed; null when none")
    stock: Series[np.int64] = pa.Field(description="stock.available")
    status: Series[pd.StringDtype] = pa.Field(isin=_values(PublicationStatus), description="publication.status")

    class Config:
        name = "OfferMap"
        strict = True


class DiffFrame(pa.DataFrameModel):
    """Offers whose stock differs from the warehouse (core.diff.compute_diff)."""

    offer_id: Series[pd.StringDtype] = pa.Field(nullable=False, unique=True)
    sku: Series[pd.StringDtype] = pa.Field(nullable=False)
    status: Series[pd.StringDtype] = pa.Field(isin=_values(PublicationStatus))
    before: Series[np.int64] = pa.Field(in_range={"min_value": 0, "max_value": MAX_QUANTITY})
    after: Series[np.int64] = pa.Field(in_range={"min_value": 0, "max_value": MAX_QUANTITY})
    action: Series[pd.StringDtype] = pa.Field(isin=_values(Action))

    class Config:
        name = "StockDiff"
        strict = True


class PlanFrame(pa.DataFrameModel):
    """The planned writes (core.plan.plan_writes): one row per offer and action (an offer
    coming back has its quantity set, then is activated)."""

    offer_id: Series[pd.StringDtype] = pa.Field(nullable=False)
    sku: Series[pd.StringDtype] = pa.Field(nullable=False)
    before: Series[np.int64] = pa.Field(in_range={"min_value": 0, "max_value": MAX_QUANTITY})
    after: Series[np.int64] = pa.Field(in_range={"min_value": 0, "max_value": MAX_QUANTITY})
    action: Series[pd.StringDtype] = pa.Field(isin=_values(Action))
    method: Series[pd.StringDtype] = pa.Field(isin=_values(Method))
    batch: Series[np.int64] = pa.Field(ge=-1, description="the command's number; -1 for a PATCH")

    class Config:
        name = "WritePlan"
        strict = True
        unique = ["offer_id", "action"]  # the audit's key within a run

    @pa.dataframe_check(description="a PATCH has batch -1, a command's offers a batch >= 0")
    @classmethod
    def batch_minus_one_exactly_for_patches(cls, frame: pd.DataFrame) -> pd.Series:
        return (frame["method"] == Method.PATCH.value) == (frame["batch"] == -1)


class WriteResultFrame(PlanFrame):
    """The plan with what each write did (apply_writes.WriteApplier.apply)."""

    command_id: Series[pd.StringDtype] = pa.Field(nullable=True, description="null for a PATCH")
    status: Series[pd.StringDtype] = pa.Field(isin=_values(WriteStatus))
    error: Series[pd.StringDtype] = pa.Field(nullable=True)

    class Config:  # strict, unique by (offer_id, action): inherited from PlanFrame's
        name = "WriteResults"


class RehearsalPlanFrame(PlanFrame):
    """A dry run's plan, with what the guards would say of it."""

    would_be_held: Series[bool]
    held_by: Series[pd.StringDtype] = pa.Field(nullable=True)

    class Config:  # strict, unique by (offer_id, action): inherited from PlanFrame's
        name = "RehearsalPlan"


class ContractError(ValueError):
    """A frame does not have the columns, dtypes or values its contract declares."""

    def __init__(self, contract: str, problems: list[str], failure_cases: pd.DataFrame):
        self.contract = contract
        self.problems = problems
        self.failure_cases = failure_cases
        super().__init__(f"{contract} breaks its contract: " + "; ".join(problems))


MAX_PROBLEMS = 8  # problems named in a message; the failure cases keep them all
MAX_ROWS = 5  # rows named per problem


def check_frame(model: type[pa.DataFrameModel], frame: object) -> pd.DataFrame:
    """The frame itself when it keeps `model`'s contract; otherwise ContractError naming,
    for each broken check, the column, the check and the first rows and values."""
    name = model.Config.name
    if not isinstance(frame, pd.DataFrame):
        raise ContractError(name, [f"expected a pandas DataFrame, got {type(frame).__name__}"], pd.DataFrame())
    if kept_contract(frame) == name:
        return frame
    try:
        checked = model.validate(frame, lazy=True)
    except SchemaErrors as exc:
        cases = exc.failure_cases
    except SchemaError as exc:  # not collected by lazy validation: one problem, in pandera's words
        raise ContractError(name, [str(exc)], pd.DataFrame()) from None
    else:
        # A frame whose values cannot change (read-only, shared between steps) keeps any
        # contract it passed for as long as its columns are the ones checked.
        for kept in (frame, checked):
            if name in CHECKED_ONCE or frame_memo.is_frozen(kept):
                frame_memo.remember(kept, _CONTRACT, name)
        return checked
    raise ContractError(name, describe_failures(cases, name), cases)


# ---- contracts checked once per frame ------------------------------------------------------

# The snapshot is a million rows that every account's step reads and none changes: once
# checked, the same frame is not checked again per account (0.1-0.2 s each), and a copy the
# IO manager stored after its check and loads back is vouched for (`vouch_for`).
CHECKED_ONCE = {SnapshotFrame.Config.name: SnapshotFrame}
_CONTRACT = "contract kept"


def kept_contract(frame: pd.DataFrame) -> str | None:
    """The contract this very frame passed (one of CHECKED_ONCE, or any for a read-only
    frame: core/frame_memo.freeze), if it is unchanged since."""
    return frame_memo.recall(frame, _CONTRACT)  # type: ignore[return-value]


def vouch_for(frame: pd.DataFrame, contract: str) -> bool:
    """Takes `frame` as keeping `contract` without checking its values, because it is a
    copy of a frame that passed it (stored after its check, loaded back), when its columns
    and dtypes are the contract's: a store that lost a column or a dtype is caught here and
    left to the full check, which names the problem. True when vouched for."""
    model = CHECKED_ONCE.get(contract)
    if model is None:
        return False
    columns = model.to_schema().columns
    if set(frame.columns) != set(columns) or not all(
        pandas_engine.Engine.dtype(frame[name].dtype) == column.dtype for name, column in columns.items()
    ):
        return False
    frame_memo.remember(frame, _CONTRACT, contract)
    return True


def describe_failures(cases: pd.DataFrame, schema_name: str) -> list[str]:
    """One sentence per broken check: the frame's shape first (missing or extra columns,
    dtypes), then each column's checks, then the checks across columns, each naming its
    first rows with their values."""
    frame_wide = cases["schema_context"].eq("DataFrameSchema") & ~cases["check"].isin(_SHAPE_CHECKS)
    problems = []
    for (column, check), group in cases[~frame_wide].groupby(["column", "check"], sort=False, dropna=False):
        problems.append(
            (
                _rank(str(check)),
                _column_problem(
                    None if column == schema_name else column,
                    str(check),
                    group["failure_case"].tolist(),
                    _indices(group),
                ),
            )
        )
    for check, group in cases[frame_wide].groupby("check", sort=False):
        problems.append((3, _rows_problem(str(check), group)))
    ordered = [text for _, text in sorted(problems, key=lambda p: p[0])]
    if len(ordered) > MAX_PROBLEMS:
        ordered = ordered[:MAX_PROBLEMS] + [f"… and {len(ordered) - MAX_PROBLEMS} more problems"]
    return ordered


_SHAPE_CHECKS = ("column_in_dataframe", "column_in_schema")


def _rank(check: str) -> int:
    return 0 if check in _SHAPE_CHECKS else 1 if check.startswith("dtype(") else 2


def _indices(group: pd.DataFrame) -> list:
    return [r for r in group["index"].tolist() if r is not None and not pd.isna(r)]


def _column_problem(column: object, check: str, values: list, rows: list) -> str:
    if check == "column_in_dataframe":
        return "missing column " + ", ".join(f"'{v}'" for v in values)
    if check == "column_in_schema":
        return "column " + ", ".join(f"'{v}'" for v in values) + " is not in the contract"
    where = f"column '{column}'" if column is not None and not pd.isna(column) else "the frame"
    if check.startswith("dtype("):
        expected = check.removeprefix("dtype(").removesuffix(")").strip("'")
        return f"{where} has dtype {values[0]}, the contract says {expected}"
    if check == "not_nullable":
        return f"{where} is null at {_row_word(rows)} " + ", ".join(map(str, rows[:MAX_ROWS])) + _more(len(rows))
    if check == "field_uniqueness":
        check = "field_uniqueness (a value repeats)"
    if not rows:
        return f"{where} fails {check}: " + ", ".join(repr(v) for v in values[:MAX_ROWS]) + _more(len(values))
    shown = ", ".join(f"{row} ({value!r})" for row, value in zip(rows[:MAX_ROWS], values[:MAX_ROWS]))
    return f"{where} fails {check} at {_row_word(rows)} {shown}{_more(len(rows))}"


def _rows_problem(check: str, group: pd.DataFrame) -> str:
    """A check across columns: each failing row with the values it holds."""
    rows = list(dict.fromkeys(_indices(group)))
    if not rows:  # the check itself could not run (e.g. a column it reads is missing)
        return f"the frame fails {check}: " + "; ".join(map(str, group["failure_case"].unique()[:MAX_ROWS]))
    shown = []
    for row in rows[:MAX_ROWS]:
        cells = group[group["index"] == row]
        shown.append(f"{row} (" + ", ".join(f"{c}={v!r}" for c, v in zip(cells["column"], cells["failure_case"])) + ")")
    return f"rows fail {check} at {_row_word(rows)} {', '.join(shown)}{_more(len(rows))}"


def _row_word(rows: list) -> str:
    return "row" if len(rows) == 1 else "rows"


def _more(count: int) -> str:
    return f" and {count - MAX_ROWS} more" if count > MAX_ROWS else ""


# ---- the offer map ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)  # a frame has no single truth value to compare by
class OfferMap:
    """An account's offers and whether the listing that produced them was complete.

    Complete means the listing returned as many distinct offers as Allegro's totalCount
    and none twice: only then does an offer's absence mean it is gone. Stored whole by the
    IO manager; `companion()` is the same facts as JSON for a store that keeps the frame
    apart (Parquet), and `from_companion` puts them back together.
    """

    account: str
    offers: pd.DataFrame  # OfferFrame
    complete: bool
    total_count: int  # what Allegro reported as the number of the account's offers
    listed_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))

    @classmethod
    def from_listing(
        cls,
        account: str,
        offers: pd.DataFrame,
        total_count: int,
        *,
        listed_twice: int = 0,
        listed_at: datetime | None = None,
    ) -> "OfferMap":
        """`offers` one row per offer; `listed_twice`: offers the listing returned more
        than once (its pages shifted while it ran), already dropped from `offers`."""
        complete = listed_twice == 0 and len(offers) == total_count
        return cls(account, offers, complete, int(total_count), listed_at or datetime.now(timezone.utc))

    @property
    def listed(self) -> int:
        return len(self.offers)

    def require_complete(self, purpose: str) -> pd.DataFrame:
        """The offers, when the listing was complete; IncompleteOfferMapError otherwise."""
        if not self.complete:
            raise IncompleteOfferMapError(self.account, self.listed, self.total_count, purpose)
        return self.offers

    def describe(self) -> str:
        return (
            f"{self.listed} offers, complete"
            if self.complete
            else f"partial: {self.listed} offers listed of the {self.total_count} Allegro reported"
        )

    def companion(self) -> dict:
        return {
            "account": self.account,
            "complete": self.complete,
            "total_count": self.total_count,
            "listed_at": self.listed_at.isoformat(),
        }

    @classmethod
    def from_companion(cls, offers: pd.DataFrame, companion: dict) -> "OfferMap":
        return cls(
            companion["account"],
            offers,
            bool(companion["complete"]),
            int(companion["total_count"]),
            datetime.fromisoformat(companion["listed_at"]),
        )


def check_offer_map(value: object) -> OfferMap:
    """The offer map when it keeps its contract (an OfferMap, its frame an OfferFrame, and
    a complete map holding exactly the reported number of offers); ContractError otherwise."""
    if not isinstance(value, OfferMap):
        raise ContractError(
            OfferFrame.Config.name,
            [
                f"expected an OfferMap (the offers and whether the listing was complete), got {type(value).__name__}"
                + (
                    "; a bare frame is an offer map stored by an earlier version: materialise allegro_offers again"
                    if isinstance(value, pd.DataFrame)
                    else ""
                )
            ],
            pd.DataFrame(),
        )
    check_frame(OfferFrame, value.offers)
    if value.complete and value.listed != value.total_count:
        raise ContractError(
            OfferFrame.Config.name,
            [f"says it is complete with {value.listed} offers while Allegro reported {value.total_count}"],
            pd.DataFrame(),
        )
    return value


__all__ = [
    "Action",
    "Method",
    "WriteStatus",
    "PublicationStatus",
    "SnapshotFrame",
    "OfferFrame",
    "DiffFrame",
    "PlanFrame",
    "WriteResultFrame",
    "RehearsalPlanFrame",
    "ContractError",
    "check_frame",
    "kept_contract",
    "vouch_for",
    "OfferMap",
    "check_offer_map",
    "IncompleteOfferMapError",
]
