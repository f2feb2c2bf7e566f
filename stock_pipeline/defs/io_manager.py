"""Stores asset values as pickled DataFrames, per run, written atomically.

Each value is kept at `<asset>/<account or _>/runs/<run_id>.pkl`, and a step reads the
value of its own run (or of the run it re-executes). So a run's diff always uses the
snapshot and offer map that this run read and its guards checked, concurrent account
runs never read each other's, and a plan held by a guard is never picked up later by a
run that did not compute it: materialising `stock_updates` alone fails with a clear
message instead of sending an old plan.

Assets listed in `latest_readable` (the offer map) are also kept as `latest.pkl` for
readers outside a run chain. Writes go to a temporary file renamed into place, so a
reader never sees a half-written file and a killed run leaves the previous value intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

from dagster import ConfigurableIOManager, InputContext, OutputContext

KEEP_RUNS = 20
UNPARTITIONED = "_"


def _atomic_dump(value, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            pickle.dump(value, handle, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _mtime_or_none(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by a concurrent run a moment ago
        return None


class AtomicPickleIOManager(ConfigurableIOManager):
    base_dir: str
    latest_readable: list[str] = ["allegro_offers"]

    def _folder(self, context: InputContext | OutputContext, partition: str) -> Path:
        return Path(self.base_dir, *context.asset_key.path, partition)

    def handle_output(self, context: OutputContext, obj) -> None:
        partition = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED
        folder = self._folder(context, partition)
        _atomic_dump(obj, folder / "runs" / f"{context.run_id}.pkl")
        if context.asset_key.to_user_string() in self.latest_readable:
            _atomic_dump(obj, folder / "latest.pkl")
        self._prune(folder / "runs")

    def load_input(self, context: InputContext):
        partition = self._input_partition(context) if context.has_asset_partitions else UNPARTITIONED
        folder = self._folder(context, partition)
        run = context.step_context.dagster_run
        # A re-execution reads what the run it re-executes produced.
        for run_id in dict.fromkeys(r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r):
            path = folder / "runs" / f"{run_id}.pkl"
            if path.exists():
                return self._load(path)
        name = context.asset_key.to_user_string()
        if name in self.latest_readable and (folder / "latest.pkl").exists():
            return self._load(folder / "latest.pkl")
        raise FileNotFoundError(
            f"{name} ({partition}) was not materialised in this run: materialise the whole account_sync job "
            "(Materialize all…) so every step works on values read and checked in the same run"
        )

    @staticmethod
    def _load(path: Path):
        with path.open("rb") as handle:
            return pickle.load(handle)

    @staticmethod
    def _input_partition(context: InputContext) -> str:
        # An asset check of a partitioned asset is itself unpartitioned in Dagster 1.13 and
        # is handed "all partitions"; it means the partition its run materialised.
        keys = context.asset_partition_keys
        if len(keys) == 1:
            return keys[0]
        return context.step_context.dagster_run.tags["dagster/partition"]

    @staticmethod
    def _prune(runs: Path) -> None:
        dated = [(mtime, p) for p in runs.glob("*.pkl") if (mtime := _mtime_or_none(p)) is not None]
        for _, old in sorted(dated, reverse=True)[KEEP_RUNS:]:
            old.unlink(missing_ok=True)
