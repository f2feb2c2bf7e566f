"""The code location: `dagster dev -m stock_pipeline.definitions` or workspace.yaml.

The module-level `defs` is where the code server (and each run worker, which imports
this module) loads the settings: once, and everything is built from that object."""

from __future__ import annotations

import structlog
from dagster import Definitions, mem_io_manager

from stock_pipeline.defs.assets import allegro_offers, stock_diff, stock_snapshot, stock_updates
from stock_pipeline.defs.automation import (
    account_partitions_sensor,
    account_sync_job,
    build_failure_sensor,
    build_schedule,
)
from stock_pipeline.defs.io_manager import AtomicParquetIOManager
from stock_pipeline.defs.live_sync import build_live_sensor, live_stock_updates, live_sync_job
from stock_pipeline.defs.rehearsal import REHEARSAL_IO_MANAGER, account_rehearsal
from stock_pipeline.defs.resources import build_resources
from stock_pipeline.foundation.logs import configure_logging, redact_settings
from stock_pipeline.foundation.settings import Settings, load_settings


def build_definitions(settings: Settings) -> Definitions:
    """The pipeline built from `settings` alone; its secrets are redacted from the logs of
    this process from now on."""
    redact_settings(settings)
    return Definitions(
        assets=[stock_snapshot, allegro_offers, stock_diff, stock_updates, live_stock_updates],
        jobs=[account_sync_job, account_rehearsal, live_sync_job],
        schedules=[build_schedule(settings.allegro_sync_schedule)],
        sensors=[
            account_partitions_sensor,
            build_live_sensor(settings.live_sync, settings.live_sync_poll_seconds),
            build_failure_sensor(
                bool(settings.telegram_bot_token and settings.allegro_error_notification_chat_id),
                also_monitored=(live_sync_job,),
            ),
        ],
        resources=build_resources(settings)
        | {
            "frames_io_manager": AtomicParquetIOManager(base_dir=settings.frames_dir),
            # A rehearsal's plan stays in its process: nothing of a dry run is stored.
            REHEARSAL_IO_MANAGER: mem_io_manager,
        },
    )


# The code server and run workers start here; a CLI that imported this module has already
# configured logging for its terminal, and keeps that.
if not structlog.is_configured():
    configure_logging()
defs = build_definitions(load_settings())
