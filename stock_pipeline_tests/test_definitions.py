"""Snapshot of the asset graph and the automation: a change here is a change to operators."""

from dagster import DefaultScheduleStatus, DefaultSensorStatus

from stock_pipeline.definitions import build_definitions
from stock_pipeline.foundation.settings import load_settings


def test_asset_graph_snapshot():
    defs = build_definitions(load_settings({}))
    graph = defs.resolve_asset_graph()
    edges = {
        key.to_user_string(): sorted(p.to_user_string() for p in graph.get(key).parent_keys)
        for key in graph.get_all_asset_keys()
    }
    assert edges == {
        "stock_snapshot": [],
        "allegro_offers": ["stock_snapshot"],  # the warehouse is read (and checked) before any Allegro call
        "stock_diff": ["allegro_offers", "stock_snapshot"],
        "stock_updates": ["allegro_offers", "stock_diff"],
        # Written by live runs from the live offer map and the newest warehouse version (defs/live_sync.py).
        "live_stock_updates": [],
    }
    checks = {key.name: key.asset_key.to_user_string() for key in graph.asset_check_keys}
    assert checks == {
        "snapshot_guard": "stock_snapshot",
        "diff_guard": "stock_diff",
        "writes_confirmed": "stock_updates",
    }
    partitioned = {key.to_user_string() for key in graph.get_all_asset_keys() if graph.get(key).partitions_def}
    assert partitioned == {"allegro_offers", "stock_diff", "stock_updates", "live_stock_updates"}


def test_automation_is_on_by_default():
    defs = build_definitions(load_settings({"ALLEGRO_SYNC_SCHEDULE": "*/15 * * * *"}))
    schedule = defs.resolve_schedule_def("account_sync_schedule")
    assert schedule.cron_schedule == "*/15 * * * *"
    assert schedule.default_status == DefaultScheduleStatus.RUNNING
    for name in ("telegram_on_run_failure", "account_partitions_sensor", "live_stock_sensor"):
        assert defs.resolve_sensor_def(name).default_status == DefaultSensorStatus.RUNNING
    job = defs.resolve_job_def("account_sync")
    assert job.partitions_def.name == "accounts"


def test_dry_runs_are_a_job_that_materialises_nothing():
    defs = build_definitions(load_settings({}))
    rehearsal = defs.resolve_job_def("account_rehearsal")
    assert rehearsal.partitions_def.name == "accounts"
    assert [node.name for node in rehearsal.nodes] == ["rehearse_account_sync"]
    assert defs.resolve_sensor_def("telegram_on_run_failure").description.startswith("NOT CONFIGURED")


def test_the_live_sync_is_a_setting_away_and_its_failures_alert():
    on = build_definitions(load_settings({"LIVE_SYNC_POLL_SECONDS": "12"}))
    assert on.resolve_sensor_def("live_stock_sensor").minimum_interval_seconds == 12
    monitored = on.resolve_sensor_def("telegram_on_run_failure")._monitored_jobs  # no public accessor
    assert {job.name for job in monitored} == {"account_sync", "live_stock_sync"}
    off = build_definitions(load_settings({"LIVE_SYNC": "off"}))
    assert off.resolve_sensor_def("live_stock_sensor").default_status == DefaultSensorStatus.STOPPED
