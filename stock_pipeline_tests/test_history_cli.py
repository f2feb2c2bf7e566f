"""`stock-pipeline history`: filters (run, status, since), and table / JSON / CSV output
that reads back, against the writes log on Postgres."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from stock_pipeline.cli.history_view import parse_since
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.schema import writes
from stock_pipeline.store.writes_log import WritesLog
from stock_pipeline_tests.helpers import run_cli

RUN_OLD = "0a1b2c3d-0000-4000-8000-000000000001"
RUN_NEW = "9f8e7d6c-0000-4000-8000-000000000002"


def plan(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["offer_id", "sku", "before", "after", "action", "method"])


@pytest.fixture
def logged(settings):
    """Two runs: an old one (3 days ago, one failure) and a recent one (one pending write)."""
    engine = engine_for(settings.stock_pipeline_database_url)
    log = WritesLog(engine)
    log.record_planned(
        RUN_OLD, "shop-a", plan([("101", "A1", 5, 3, "set", "patch"), ("102", "A2", 4, 0, "end", "patch")])
    )
    log.mark_each(
        "shop-a",
        [
            (RUN_OLD, "101", "set", "success", None),
            (RUN_OLD, "102", "end", "failed", "offer 102 is not ACTIVE\nsecond line of detail"),
        ],
    )
    with engine.begin() as conn:
        conn.execute(
            writes.update()
            .where(writes.c.run_id == RUN_OLD)
            .values(created_at=datetime.now(timezone.utc) - timedelta(days=3, microseconds=123456))
        )
    log.record_planned(
        RUN_NEW, "shop-b", plan([("201", "B1", 1, 7, "set", "quantity_command"), ("202", None, 2, 8, "set", "patch")])
    )
    log.mark(RUN_NEW, "shop-b", "set", ["201"], "pending", command_id="cmd-1")
    log.mark(RUN_NEW, "shop-b", "set", ["202"], "success")
    return settings


def test_table_is_readable(logged):
    result = run_cli("history")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["time", "(UTC)", "account"] and "before→after" in lines[0]
    old_failure = next(line for line in lines if " 102 " in line)
    assert "4→0" in old_failure and RUN_OLD[:8] in old_failure and RUN_OLD not in old_failure
    assert "failed" in old_failure and "offer 102 is not ACTIVE" in old_failure and "second line" not in result.stdout
    stamp = old_failure.split()[0] + " " + old_failure.split()[1]
    assert datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S")  # to the second, no microseconds


def test_filters_by_run_status_and_since(logged):
    def offers(*args: str) -> list[str]:
        result = run_cli("history", "--format", "json", *args)
        assert result.returncode == 0, result.stderr
        return sorted(r["offer_id"] for r in json.loads(result.stdout))

    assert offers() == ["101", "102", "201", "202"]
    assert offers("--run", RUN_OLD) == ["101", "102"]
    assert offers("--run", RUN_NEW[:8]) == ["201", "202"]  # the short id the table shows
    assert offers("--status", "pending") == ["201"]
    assert offers("--status", "failed", "--account", "shop-a") == ["102"]
    assert offers("--since", "2h") == ["201", "202"]
    assert offers("--since", "4d") == ["101", "102", "201", "202"]
    two_days_ago = (datetime.now(timezone.utc) - timedelta(days=2)).date().isoformat()
    assert offers("--since", two_days_ago) == ["201", "202"]
    assert offers("--since", "2h", "--status", "success") == ["202"]

    bad = run_cli("history", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "--since 'yesterday-ish'" in bad.stderr
    assert run_cli("history", "--status", "done").returncode == 2


def test_json_and_csv_read_back_with_every_value_whole(logged, tmp_path):
    result = run_cli("history", "--format", "json", "--run", RUN_OLD)
    records = {r["offer_id"]: r for r in json.loads(result.stdout)}
    failed = records["102"]
    assert (failed["run_id"], failed["account"], failed["sku"], failed["before"], failed["after"]) == (
        RUN_OLD,
        "shop-a",
        "A2",
        4,
        0,
    )
    assert (failed["status"], failed["error"], failed["guards_overridden"]) == (
        "failed",
        "offer 102 is not ACTIVE\nsecond line of detail",
        False,
    )
    created = datetime.fromisoformat(failed["created_at"])
    assert created.tzinfo is not None and created.microsecond == 0

    out = tmp_path / "writes.csv"
    written = run_cli("history", "--format", "csv", "--output", str(out))
    assert written.returncode == 0 and written.stdout == "" and f"wrote 4 write(s) to {out}" in written.stderr
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 4
    pending = next(r for r in rows if r["offer_id"] == "201")
    assert (pending["run_id"], pending["status"], pending["command_id"], pending["before"], pending["after"]) == (
        RUN_NEW,
        "pending",
        "cmd-1",
        "1",
        "7",
    )
    no_sku = next(r for r in rows if r["offer_id"] == "202")
    assert no_sku["sku"] == "" and no_sku["status"] == "success"
    with_error = next(r for r in rows if r["offer_id"] == "102")
    assert with_error["error"] == "offer 102 is not ACTIVE\nsecond line of detail"  # quoted, not broken

    table_file = tmp_path / "writes.txt"
    assert run_cli("history", "--output", str(table_file)).returncode == 0
    assert "before→after" in table_file.read_text(encoding="utf-8")


def test_an_empty_selection(logged):
    assert "no writes recorded" in run_cli("history", "--account", "nobody").stdout
    assert json.loads(run_cli("history", "--account", "nobody", "--format", "json").stdout) == []
    assert run_cli("history", "--account", "nobody", "--format", "csv").stdout.startswith("id,created_at,")


def test_parse_since():
    now = datetime(2024, 5, 10, 12, 0, tzinfo=timezone.utc)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("30m", now) == now - timedelta(minutes=30)
    assert parse_since("3d", now) == now - timedelta(days=3)
    assert parse_since("1w", now) == now - timedelta(days=7)
    assert parse_since("2024-05-01", now) == datetime(2024, 5, 1, tzinfo=timezone.utc)
    assert parse_since("2024-05-01T10:30", now) == datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    assert parse_since("2024-05-01T12:30+02:00", now) == datetime(2024, 5, 1, 10, 30, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="neither a duration"):
        parse_since("soon", now)
