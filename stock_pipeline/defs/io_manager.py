"""Stores asset values as pickled DataFrames under a base directory, written atomically.

- Partitioned assets (per account) are kept at `<asset>/<account>.pkl`: the offer map
  stays where a later run (or the near-real-time path) can read it.
- The unpartitioned snapshot is kept per run (`stock_snapshot/runs/<run_id>.pkl`) plus
  a `latest.pkl`. Several account runs materialise it at once; each run's diff must
  read the snapshot that its own run read and checked, not one another run wrote a
  moment later. A run that did not materialise it (a manual re-materialisation of
  the diff alone) reads `latest.pkl`.
Writes go to a temporary file and are renamed into place, so a reader never sees a
half-written file and a killed run leaves the previous value intact.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

from dagster import ConfigurableIOManager, InputContext, OutputContext

KEEP_SNAPSHOT_RUNS = 20


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


class AtomicPickleIOManager(ConfigurableIOManager):
    base_dir: str

    def _asset_dir(self, context: InputContext | OutputContext) -> Path:
        return Path(self.base_dir, *context.asset_key.path)

    def handle_output(self, context: OutputContext, obj) -> None:
        folder = self._asset_dir(context)
        if context.has_asset_partitions:
            _atomic_dump(obj, folder / f"{context.asset_partition_key}.pkl")
            return
        _atomic_dump(obj, folder / "runs" / f"{context.run_id}.pkl")
        _atomic_dump(obj, folder / "latest.pkl")
        self._prune(folder / "runs")

    def load_input(self, context: InputContext):
        folder = self._asset_dir(context)
        if context.has_asset_partitions:
            path = folder / f"{self._input_partition(context)}.pkl"
        else:
            path = folder / "runs" / f"{context.step_context.run_id}.pkl"
            if not path.exists():
                path = folder / "latest.pkl"
        if not path.exists():
            raise FileNotFoundError(f"{'/'.join(context.asset_key.path)} has not been materialised yet "
                                    f"(looked for {path}); materialise it first")
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
        files = sorted(runs.glob("*.pkl"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in files[KEEP_SNAPSHOT_RUNS:]:
            old.unlink(missing_ok=True)
