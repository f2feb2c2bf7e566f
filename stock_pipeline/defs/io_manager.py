"""Stores asset values as Parquet files, per run, written atomically.

Each value is kept at `<asset>/<account or _>/runs/<run_id>.parquet`, and a step reads the
value of its own run (or of the run it re-executes). So a run's diff always uses the
snapshot and offer map that this run read and its guards checked, concurrent account
runs never read each other's, and a plan held by a guard is never picked up later by a
run that did not compute it: materialising `stock_updates` alone fails with a clear
message instead of sending an old plan.

Assets listed in `latest_readable` (the offer map) are also kept as `latest.parquet` for
readers outside a run chain. Writes go to a temporary file renamed into place, so a
reader never sees a half-written file and a killed run leaves the previous value intact.
Only the newest KEEP_RUNS values of each asset partition are kept: the disk stays bounded.

Parquet rather than pickle: loading a pickle runs whatever code the file names, so a file
in the shared storage folder could take over every run worker; a Parquet file is data.
It is also columnar and compressed, several times smaller and faster for a million rows.
An OfferMap's facts beside its frame (complete, total_count, …) travel in the file's
schema metadata, and so does the contract a frame passed before it was stored (only the
snapshot's is recorded, core/contracts.CHECKED_ONCE): the frame loaded back is vouched for
when its columns and dtypes are the contract's, so each account's step does not check a
million rows again that the snapshot step checked (0.1-0.2 s each). Values pickled by an
earlier release (`*.pkl`) are never unpickled: they count as missing (with a warning), and
pruning removes them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext

from stock_pipeline.core.contracts import OfferMap, kept_contract, vouch_for

KEEP_RUNS = 20
UNPARTITIONED = "_"
SUFFIX = ".parquet"
PICKLED_SUFFIX = ".pkl"  # an earlier release's values: never loaded
VALUE_KEY = b"stock_pipeline"  # schema metadata: which kind of value the frame is, and its facts


class StoredValueError(ValueError):
    """A stored asset value cannot be read back."""


def store_value(value: pd.DataFrame | OfferMap, path: Path) -> None:
    """Writes `value` to `path` as Parquet: to a temporary file, then renamed into place."""
    if isinstance(value, OfferMap):
        frame, facts = value.offers, {"kind": "offer_map", **value.companion()}
    elif isinstance(value, pd.DataFrame):
        frame, facts = value, {"kind": "frame"}
        contract = kept_contract(value)  # this very frame passed it (the step's output check)
        if contract:
            facts["contract"] = contract
    else:
        raise TypeError(f"the frames IO manager stores DataFrames and OfferMaps, not {type(value).__name__}")
    table = pa.Table.from_pandas(frame)  # pandas' own metadata in the file restores the exact dtypes
    table = table.replace_schema_metadata({**table.schema.metadata, VALUE_KEY: json.dumps(facts).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    os.close(fd)
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_value(path: Path) -> pd.DataFrame | OfferMap:
    """The value `store_value` wrote to `path`; StoredValueError when the file is not one."""
    try:
        table = pq.read_table(path)
        facts = json.loads((table.schema.metadata or {})[VALUE_KEY])
        frame = table.to_pandas()
        if facts["kind"] == "offer_map":
            return OfferMap.from_companion(frame, facts)
        if facts["kind"] == "frame":
            if facts.get("contract"):
                vouch_for(frame, facts["contract"])
            return frame
        raise ValueError(f"unknown kind of value {facts['kind']!r}")
    except (pa.ArrowException, OSError, KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise StoredValueError(
            f"{path} is not a readable stored asset value ({type(exc).__name__}: {exc}); "
            "materialise the asset again (the file may be damaged or written by something else)"
        ) from None


def _mtime_or_none(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by a concurrent run a moment ago
        return None


class AtomicParquetIOManager(ConfigurableIOManager):
    base_dir: str
    latest_readable: list[str] = ["allegro_offers"]

    def _folder(self, context: InputContext | OutputContext, partition: str) -> Path:
        return Path(self.base_dir, *context.asset_key.path, partition)

    def handle_output(self, context: OutputContext, obj) -> None:
        partition = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED
        folder = self._folder(context, partition)
        store_value(obj, folder / "runs" / f"{context.run_id}{SUFFIX}")
        if context.asset_key.to_user_string() in self.latest_readable:
            store_value(obj, folder / f"latest{SUFFIX}")
        prune(folder)

    def load_input(self, context: InputContext):
        partition = self._input_partition(context) if context.has_asset_partitions else UNPARTITIONED
        folder = self._folder(context, partition)
        run = context.step_context.dagster_run
        # A re-execution reads what the run it re-executes produced.
        run_ids = [r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r]
        name = context.asset_key.to_user_string()
        found = find_value(folder, run_ids, name in self.latest_readable, context.log.warning)
        if found is not None:
            return found
        raise FileNotFoundError(
            f"{name} ({partition}) was not materialised in this run: materialise the whole account_sync job "
            "(Materialize all…) so every step works on values read and checked in the same run"
        )

    @staticmethod
    def _input_partition(context: InputContext) -> str:
        # An asset check of a partitioned asset is itself unpartitioned in Dagster 1.13 and
        # is handed "all partitions"; it means the partition its run materialised.
        keys = context.asset_partition_keys
        if len(keys) == 1:
            return keys[0]
        return context.step_context.dagster_run.tags["dagster/partition"]


def find_value(
    folder: Path, run_ids: list[str], latest_readable: bool, warn: Callable[[str], None]
) -> pd.DataFrame | OfferMap | None:
    """The value of the first of `run_ids` that stored one in `folder` (then `latest` when
    readable), or None. A value pickled by an earlier release is skipped with a warning."""
    stems = [folder / "runs" / run_id for run_id in dict.fromkeys(run_ids)]
    if latest_readable:
        stems.append(folder / "latest")
    for stem in stems:
        if stem.with_suffix(SUFFIX).exists():
            return load_value(stem.with_suffix(SUFFIX))
        if stem.with_suffix(PICKLED_SUFFIX).exists():
            warn(
                f"{stem.with_suffix(PICKLED_SUFFIX)} was pickled by an earlier release and is never unpickled "
                "(a pickle runs code as it loads): treated as not materialised"
            )
    return None


def prune(folder: Path) -> None:
    """Keeps the newest KEEP_RUNS values of one asset partition; removes an earlier
    release's pickles, which are never read."""
    for pickled in folder.glob(f"**/*{PICKLED_SUFFIX}"):
        pickled.unlink(missing_ok=True)
    runs = folder / "runs"
    dated = [(mtime, p) for p in runs.glob(f"*{SUFFIX}") if (mtime := _mtime_or_none(p)) is not None]
    for _, old in sorted(dated, reverse=True)[KEEP_RUNS:]:
        old.unlink(missing_ok=True)
