"""The live sensor evaluated as the daemon evaluates it (its cursor carried from tick to
tick), and the runs it asks for executed in-process on the same instance."""

from __future__ import annotations

from dagster import DagsterInstance, RunRequest, SkipReason, build_sensor_context

from stock_pipeline.cli.sync_runner import sync_accounts
from stock_pipeline.definitions import build_definitions
from stock_pipeline.defs.live_sync import LIVE_JOB
from stock_pipeline.store.engine import engine_for
from stock_pipeline.store.live_offers import LiveOffers

SENSOR = "live_stock_sensor"


class LiveWorld:
    """The sensor ticking with its cursor kept, and the runs it asks for carried out."""

    def __init__(self, settings, simulator):
        self.settings = settings
        self.simulator = simulator
        self.defs = build_definitions(settings)
        self.instance = DagsterInstance.ephemeral()
        self.cursor: str | None = None
        self.sensor = self.defs.get_sensor_def(SENSOR)

    def tick(self, *, keep_cursor: bool = True):
        with build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources=self.defs.resources, sensor_name=SENSOR
        ) as context:
            result = self.sensor(context)
        if keep_cursor and not isinstance(result, SkipReason) and result.cursor is not None:
            self.cursor = result.cursor
        return [] if isinstance(result, SkipReason) else list(result.run_requests or [])

    def run(self, request: RunRequest):
        job = self.defs.resolve_job_def(request.job_name)
        if request.job_name != LIVE_JOB:  # a full sync, as the CLI runs it
            return sync_accounts(self.settings, [request.partition_key], instance=self.instance, defs=self.defs)[0]
        result = job.execute_in_process(
            run_config=request.run_config,
            partition_key=request.partition_key,
            instance=self.instance,
            tags=request.tags,
            raise_on_error=False,
        )
        return result

    def start(self, accounts):
        """First tick: each account starts following its journal and gets a full sync, which builds its map."""
        for account in accounts:
            self.instance.add_dynamic_partitions("accounts", [account])
        requests = self.tick()
        assert {r.partition_key for r in requests} == set(accounts)
        assert all(r.job_name == "account_sync" for r in requests)
        for request in requests:
            assert self.run(request).success
        states = LiveOffers(engine_for(self.settings.stock_pipeline_database_url)).states()
        assert all(states[a].map_current for a in accounts)
