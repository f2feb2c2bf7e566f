"""Where the warehouse changes query (`STOCK_CHANGES_QUERY`) resumes: pure, no I/O.

The query returns the rows of the SKUs changed since `:since`, with the time of each
row's change (`changed_at`). The position is the newest `changed_at` seen; the next read
asks from LOOKBACK before it. Why not from the position itself: a row's timestamp is
usually taken when its transaction starts (PostgreSQL's now(), a trigger), and a
transaction that commits later than another, newer one would otherwise fall behind the
position and never be read. Reading a window again costs a few rows and changes nothing:
the rows read are compared with the version the sensor holds, so a row that is already
there is no change (core/warehouse_changes.py).

Timestamps only: a counter (a sequence, a version number) has the same late-commit
problem and no unit to look back in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Iterable

LOOKBACK = timedelta(seconds=120)
# What `:since` is on the very first read, before any change has been seen: every row.
FIRST_SINCE = datetime(1970, 1, 1)


class ChangesPositionError(ValueError):
    """The changes query's `changed_at` is not a timestamp."""


@dataclass(frozen=True)
class ChangesPosition:
    newest: str  # the newest changed_at seen, as ISO text
    text: bool  # the warehouse gave it as text (SQLite has no timestamp type): bound back as text

    def since(self) -> datetime | str:
        """What `:since` binds: LOOKBACK before the newest change seen, in the warehouse's own form."""
        moment = datetime.fromisoformat(self.newest) - LOOKBACK
        if not self.text:
            return moment
        # Text compares as text: keep the separator the warehouse writes ('T' or ' ').
        separator = self.newest[10] if len(self.newest) > 10 else " "
        return moment.isoformat(sep=separator)

    def dump(self) -> dict:
        return {"newest": self.newest, "text": self.text}

    @classmethod
    def parse(cls, raw: dict | None) -> ChangesPosition | None:
        return cls(str(raw["newest"]), bool(raw["text"])) if raw else None


def since_of(position: ChangesPosition | None) -> datetime | str:
    return position.since() if position is not None else FIRST_SINCE


def advanced(position: ChangesPosition | None, changed_at: Iterable[Any]) -> ChangesPosition | None:
    """The position after rows with these `changed_at` values were read: the newest of
    them when newer than `position`. A NULL is skipped (the row is still applied: it is
    only no help in telling where to resume); any other non-timestamp is an error."""
    newest = None if position is None else (datetime.fromisoformat(position.newest), position)
    for value in changed_at:
        if value is None or value != value:  # NULL or NaN/NaT
            continue
        moment, candidate = _moment(value)
        try:
            if newest is None or moment > newest[0]:
                newest = (moment, candidate)
        except TypeError:  # naive against aware
            raise ChangesPositionError(
                "changed_at mixes timestamps with and without a time zone; cast it to one of them"
            ) from None
    return None if newest is None else newest[1]


def _moment(value: Any) -> tuple[datetime, ChangesPosition]:
    if isinstance(value, datetime):  # pandas' Timestamp too
        moment = value.to_pydatetime() if hasattr(value, "to_pydatetime") else value
        return moment, ChangesPosition(moment.isoformat(), text=False)
    if isinstance(value, date):
        moment = datetime(value.year, value.month, value.day)
        return moment, ChangesPosition(moment.isoformat(), text=False)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ChangesPositionError(f"changed_at must be a timestamp; got the text {value[:40]!r}") from None
        return moment, ChangesPosition(value.strip(), text=True)
    raise ChangesPositionError(f"changed_at must be a timestamp; got {type(value).__name__} {str(value)[:40]!r}")
