"""Plain-text and JSON rendering shared by the operator commands (accounts list, history,
doctor): pure functions, no I/O, so each command's output is tested as a string."""

from __future__ import annotations

import json
import math
from datetime import date, datetime, timezone
from typing import Any, Iterable, Sequence

ELLIPSIS = "…"


def shorten(text: str | None, width: int) -> str:
    """The first line of `text`, cut to `width` characters (an error's first line says what
    happened; the rest is detail for `--format json`)."""
    if not text:
        return ""
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= width else line[: max(0, width - 1)] + ELLIPSIS


def utc_time(value: datetime | None, *, minutes_only: bool = False) -> str:
    """`2024-05-01 10:12:03` in UTC, without microseconds ("" when unknown)."""
    if value is None:
        return ""
    if value.tzinfo is None:  # everything stored is UTC
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M" if minutes_only else "%Y-%m-%d %H:%M:%S")


def iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC to the second, for machine-readable output."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc).isoformat(timespec="seconds")


def age(seconds: float | None) -> str:
    """`45 s ago`, `12 min ago`, `5 h ago`, `3 d ago`; `never` when there is no time."""
    if seconds is None:
        return "never"
    if seconds < 0:  # a clock a little ahead of the database's
        return "just now"
    if seconds < 60:
        return f"{int(seconds)} s ago"
    if seconds < 3600:
        return f"{int(seconds // 60)} min ago"
    if seconds < 48 * 3600:
        return f"{int(seconds // 3600)} h ago"
    return f"{int(seconds // 86400)} d ago"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[int] = ()) -> str:
    """Columns padded to their widest cell; the columns in `right` (numbers) right-aligned."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    widths = [max([len(header)] + [len(row[i]) for row in cells]) for i, header in enumerate(headers)]
    right = set(right)

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w) for i, (v, w) in enumerate(zip(values, widths))
        ).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(row) for row in cells)])


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return iso_utc(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy / pandas scalars
        return _plain(value.item())
    return value


def json_text(records: list[dict]) -> str:
    """JSON with times as ISO 8601 UTC and NaN as null, so any JSON reader takes it."""
    return json.dumps([{k: _plain(v) for k, v in r.items()} for r in records], indent=2, ensure_ascii=False) + "\n"
