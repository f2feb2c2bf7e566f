"""`stock-pipeline history`: the writes log as a readable table, or as JSON / CSV that
other tools read back. Pure functions of the rows WritesLog.history returns."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pandas as pd

from stock_pipeline.cli.report_format import iso_utc, json_text, shorten, table, utc_time

# Machine formats keep every value whole (full run id, before and after apart).
RECORD_COLUMNS = [
    "id",
    "created_at",
    "updated_at",
    "run_id",
    "account",
    "offer_id",
    "sku",
    "before",
    "after",
    "action",
    "method",
    "command_id",
    "status",
    "error",
    "guards_overridden",
]
SHORT_RUN_ID = 8  # as Dagster's UI shows run ids
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, now: datetime) -> datetime:
    """`2h`, `30m`, `3d`, `1w` before `now`, or an ISO date / date-time (UTC unless it
    names its offset)."""
    found = _DURATION.match(text)
    if found:
        return now - timedelta(seconds=float(found[1]) * _UNIT_SECONDS[found[2].lower()])
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--since {text!r} is neither a duration (30m, 2h, 3d, 1w) nor an ISO date or "
            "date-time (2024-05-01, 2024-05-01T10:00)"
        ) from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _records(rows: pd.DataFrame) -> list[dict]:
    frame = rows.reindex(columns=RECORD_COLUMNS).astype(object)
    frame = frame.where(frame.notna(), None)
    records = frame.to_dict("records")
    for record in records:
        for key in ("id", "before", "after"):
            if record[key] is not None:
                record[key] = int(record[key])
        record["guards_overridden"] = bool(record["guards_overridden"])
        for key in ("created_at", "updated_at"):
            record[key] = iso_utc(record[key])
    return records


def history_table(rows: pd.DataFrame) -> str:
    records = _records(rows)
    return table(
        [
            "time (UTC)",
            "account",
            "offer",
            "sku",
            "before→after",
            "action",
            "method",
            "status",
            "run",
            "override",
            "error",
        ],
        [
            [
                utc_time(datetime.fromisoformat(r["created_at"])) if r["created_at"] else "",
                r["account"],
                r["offer_id"],
                r["sku"] or "",
                f"{'?' if r['before'] is None else r['before']}→{r['after']}",
                r["action"],
                r["method"],
                r["status"],
                (r["run_id"] or "")[:SHORT_RUN_ID],
                "yes" if r["guards_overridden"] else "",
                shorten(r["error"], 60),
            ]
            for r in records
        ],
    )


def history_json(rows: pd.DataFrame) -> str:
    return json_text(_records(rows))


def history_csv(rows: pd.DataFrame) -> str:
    return pd.DataFrame(_records(rows), columns=RECORD_COLUMNS).to_csv(index=False)


def render_history(rows: pd.DataFrame, fmt: str) -> str:
    if fmt == "json":
        return history_json(rows)
    if fmt == "csv":
        return history_csv(rows)
    return history_table(rows) + "\n"
