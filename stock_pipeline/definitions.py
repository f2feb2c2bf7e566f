"""The code location: `dagster dev -m stock_pipeline.definitions` or workspace.yaml."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions

from stock_pipeline.defs.assets import allegro_offers, stock_diff, stock_snapshot, stock_updates
from stock_pipeline.defs.checks import diff_guard, snapshot_guard
from stock_pipeline.defs.automation import (
    account_partitions_sensor,
    account_sync_job,
    build_schedule,
    telegram_on_run_failure,
)
from stock_pipeline.defs.io_manager import AtomicPickleIOManager
from stock_pipeline.defs.resources import build_resources
from stock_pipeline.logs import configure_logging
from stock_pipeline.settings import Settings, load_settings


def frames_dir() -> str:
    """Asset values live beside the Dagster instance unless STOCK_PIPELINE_STORAGE_DIR says otherwise."""
    explicit = os.environ.get("STOCK_PIPELINE_STORAGE_DIR")
    if explicit:
        return explicit
    home = os.environ.get("DAGSTER_HOME") or str(Path.home() / ".stock_pipeline" / "dagster_home")
    return str(Path(home) / "storage" / "frames")


def build_definitions(settings: Settings) -> Definitions:
    return Definitions(
        assets=[stock_snapshot, allegro_offers, stock_diff, stock_updates],
        asset_checks=[snapshot_guard, diff_guard],
        jobs=[account_sync_job],
        schedules=[build_schedule(settings.allegro_sync_schedule)],
        sensors=[account_partitions_sensor, telegram_on_run_failure],
        resources=build_resources(settings) | {"frames_io_manager": AtomicPickleIOManager(base_dir=frames_dir())},
    )


configure_logging()
defs = build_definitions(load_settings())
