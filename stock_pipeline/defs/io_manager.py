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

Assets listed in `shared` (the warehouse snapshot) are what every account run of a cycle
reads alike: a million rows that each of ten runs used to store, and load back twice, as
a copy of its own. Such a value is stored once per content: `content/<sha256>.parquet`,
the digest of the Parquet table (schema, metadata and data), and each run's file is a
symbolic link to it, so a run still materialises its own value (and its metadata) and
still reads only the version it stored. A process loads one stored version once: the
loads of the same file (same device, inode, size and modification time) share one frame,
made read-only, and each caller gets a view of its own (core/frame_memo.shared_view): no
run can change what another plans from, and the work remembered of the frame (its
contract, the combined stock) is done once. The value a run stores is that frame for the
loads that follow, so in the CLI's runs the snapshot is read and cleaned once, stored
once and never loaded back from disk. Content no run links to any more is pruned.

Any other value stored read-only (an offer map: defs/account_steps.read_offer_map) is
likewise handed to the steps after as views of the stored object, not read back three
times and checked against its contract each time; other values are read from the file.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
import threading
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import ConfigurableIOManager, InputContext, OutputContext

from stock_pipeline.core import frame_memo
from stock_pipeline.core.contracts import OfferMap, kept_contract, vouch_for
from stock_pipeline.foundation.single_flight import SingleFlight

KEEP_RUNS = 20
CONTENT = "content"  # a shared asset partition's stored values, by digest of their content
VALUES_KEPT = 64  # read-only values a process keeps at hand for the loads of the steps after
UNPARTITIONED = "_"
SUFFIX = ".parquet"
PICKLED_SUFFIX = ".pkl"  # an earlier release's values: never loaded
VALUE_KEY = b"stock_pipeline"  # schema metadata: which kind of value the frame is, and its facts


class StoredValueError(ValueError):
    """A stored asset value cannot be read back."""


def store_value(value: pd.DataFrame | OfferMap, path: Path) -> None:
    """Writes `value` to `path` as Parquet: to a temporary file, then renamed into place."""
    _write_table(_table(value), path)


def _table(value: pd.DataFrame | OfferMap) -> pa.Table:
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
    return table.replace_schema_metadata({**table.schema.metadata, VALUE_KEY: json.dumps(facts).encode()})


def _write_table(table: pa.Table, path: Path) -> None:
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
        return path.lstat().st_mtime  # a run's link to shared content: when the run stored it
    except FileNotFoundError:  # pruned by a concurrent run a moment ago
        return None


# ---- values shared by the runs of a cycle ------------------------------------------------


def content_digest(value: pd.DataFrame) -> tuple[str, pa.Table | None]:
    """The SHA-256 of the Parquet table `value` is stored as (its schema with every note,
    then each column's buffers), and the table when it had to be built: a read-only frame's
    digest is worked out once, however many runs store it."""
    built: list[pa.Table] = []

    def digest() -> str:
        built.append(_table(value))
        return _table_digest(built[0])

    if not frame_memo.is_frozen(value):
        return digest(), built[0]
    facts = (kept_contract(value),)  # the digest covers the notes the file would carry
    return frame_memo.remembered(value, ("stored content digest", facts), digest), (built[0] if built else None)


def _table_digest(table: pa.Table) -> str:
    digest = hashlib.sha256(table.schema.serialize())
    for column in table.columns:
        for chunk in column.chunks:
            digest.update(f"|{chunk.offset}:{len(chunk)}".encode())
            for buffer in chunk.buffers():
                digest.update(b"|-" if buffer is None else f"|{buffer.size}:".encode())
                if buffer is not None:
                    digest.update(buffer)
    return digest.hexdigest()


@contextmanager
def _content_lock(folder: Path) -> Iterator[None]:
    """Held while a run publishes its link to shared content and while pruning looks for
    content no run links to: across threads and processes (an advisory file lock)."""
    (folder / CONTENT).mkdir(parents=True, exist_ok=True)
    with open(folder / CONTENT / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def store_shared(value: pd.DataFrame, folder: Path, path: Path) -> Path:
    """Stores `value` as the run's `path` in asset partition `folder`: a link to the stored
    content when an identical value is there already, else written there first. Returns
    the file that holds the value."""
    digest, table = content_digest(value)
    content = folder / CONTENT / f"{digest}{SUFFIX}"
    with _content_lock(folder):
        if not content.exists():
            _write_table(table if table is not None else _table(value), content)
        try:
            _link(Path("..", CONTENT, content.name), path)
        except OSError:  # no symbolic links here: the run keeps a copy of its own
            store_value(value, path)
            return path
    return content


def _link(target: Path, path: Path) -> None:
    """Makes `path` a symbolic link to `target`, atomically (a link made aside, renamed in)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    os.symlink(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def hard_link_or_store(value: pd.DataFrame | OfferMap, stored: Path, path: Path) -> None:
    """`path` becomes the file `stored` (a hard link, renamed into place), or a copy of
    `value` where hard links cannot be made."""
    tmp = path.with_name(f".tmp-{uuid.uuid4().hex}")
    try:
        os.link(stored, tmp)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        store_value(value, path)


_loaded_lock = threading.Lock()
_loaded: OrderedDict[tuple, pd.DataFrame | OfferMap] = OrderedDict()  # file identity -> read-only value
_loads: SingleFlight[pd.DataFrame | OfferMap] = SingleFlight()


def _identity(path: Path) -> tuple:
    """One stored version of a file: it is never changed in place (only replaced by a rename)."""
    stat = path.stat()
    return (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)


def _frame_of(value: object) -> pd.DataFrame | None:
    frame = value.offers if isinstance(value, OfferMap) else value
    return frame if isinstance(frame, pd.DataFrame) else None


def _keep(identity: tuple, value: pd.DataFrame | OfferMap) -> None:
    with _loaded_lock:
        _loaded[identity] = value
        _loaded.move_to_end(identity)
        while len(_loaded) > VALUES_KEPT:
            _loaded.popitem(last=False)


def _kept(identity: tuple) -> pd.DataFrame | OfferMap | None:
    """A view of its own of the read-only value kept for `identity`, or None."""
    with _loaded_lock:
        value = _loaded.get(identity)
    if isinstance(value, OfferMap):
        return replace(value, offers=frame_memo.shared_view(value.offers))
    return None if value is None else frame_memo.shared_view(value)


def remember_stored(path: Path, value: pd.DataFrame | OfferMap) -> None:
    """The loads of the file at `path` that follow get views of `value`, the value just
    stored there, instead of reading it back; only a read-only value is handed out so
    (the snapshot, an offer map: core/frame_memo.freeze)."""
    frame = _frame_of(value)
    if frame is not None and frame_memo.is_frozen(frame):
        _keep(_identity(path), value)


def load_stored(path: Path) -> pd.DataFrame | OfferMap:
    """The value stored at `path`: a view of the read-only value this process stored there
    (remember_stored) or loaded from there, else read from the file."""
    kept = _kept(_identity(path))
    return kept if kept is not None else load_value(path)


def load_shared(path: Path) -> pd.DataFrame | OfferMap:
    """The value stored at `path`, read once per stored version in this process and made
    read-only: each caller gets a view of its own (core/frame_memo.shared_view)."""
    identity = _identity(path)
    kept = _kept(identity)
    if kept is not None:
        return kept

    def read() -> pd.DataFrame | OfferMap:
        value = load_value(path)
        try:
            frame_memo.freeze(_frame_of(value))
        except TypeError:  # a column that cannot be made read-only: each caller reads its own
            return value
        _keep(identity, value)
        return value

    _loads.run(identity, read)
    kept = _kept(identity)
    return kept if kept is not None else load_value(path)


class AtomicParquetIOManager(ConfigurableIOManager):
    base_dir: str
    latest_readable: list[str] = ["allegro_offers"]
    shared: list[str] = ["stock_snapshot"]

    def _folder(self, context: InputContext | OutputContext, partition: str) -> Path:
        return Path(self.base_dir, *context.asset_key.path, partition)

    def handle_output(self, context: OutputContext, obj) -> None:
        partition = context.asset_partition_key if context.has_asset_partitions else UNPARTITIONED
        folder = self._folder(context, partition)
        name = context.asset_key.to_user_string()
        path = folder / "runs" / f"{context.run_id}{SUFFIX}"
        if name in self.shared and isinstance(obj, pd.DataFrame):
            remember_stored(store_shared(obj, folder, path), obj)
        else:
            store_value(obj, path)
            remember_stored(path, obj)
        if name in self.latest_readable:
            hard_link_or_store(obj, path, folder / f"latest{SUFFIX}")
        prune(folder)

    def load_input(self, context: InputContext):
        partition = self._input_partition(context) if context.has_asset_partitions else UNPARTITIONED
        folder = self._folder(context, partition)
        run = context.step_context.dagster_run
        # A re-execution reads what the run it re-executes produced.
        run_ids = [r for r in (run.run_id, run.parent_run_id, run.root_run_id) if r]
        name = context.asset_key.to_user_string()
        load = load_shared if name in self.shared else load_stored
        found = find_value(folder, run_ids, name in self.latest_readable, context.log.warning, load)
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
    folder: Path,
    run_ids: list[str],
    latest_readable: bool,
    warn: Callable[[str], None],
    load: Callable[[Path], pd.DataFrame | OfferMap] = load_value,
) -> pd.DataFrame | OfferMap | None:
    """The value of the first of `run_ids` that stored one in `folder` (then `latest` when
    readable), or None. A value pickled by an earlier release is skipped with a warning."""
    stems = [folder / "runs" / run_id for run_id in dict.fromkeys(run_ids)]
    if latest_readable:
        stems.append(folder / "latest")
    for stem in stems:
        if stem.with_suffix(SUFFIX).exists():
            return load(stem.with_suffix(SUFFIX))
        if stem.with_suffix(PICKLED_SUFFIX).exists():
            warn(
                f"{stem.with_suffix(PICKLED_SUFFIX)} was pickled by an earlier release and is never unpickled "
                "(a pickle runs code as it loads): treated as not materialised"
            )
    return None


def prune(folder: Path) -> None:
    """Keeps the newest KEEP_RUNS values of one asset partition and the shared content they
    link to; removes an earlier release's pickles, which are never read."""
    for pickled in folder.glob(f"**/*{PICKLED_SUFFIX}"):
        pickled.unlink(missing_ok=True)
    runs = folder / "runs"
    dated = [(mtime, p) for p in runs.glob(f"*{SUFFIX}") if (mtime := _mtime_or_none(p)) is not None]
    for _, old in sorted(dated, reverse=True)[KEEP_RUNS:]:
        old.unlink(missing_ok=True)
    if (folder / CONTENT).is_dir():
        with _content_lock(folder):  # no run is between writing content and linking to it
            linked = {_link_target(p) for p in runs.glob(f"*{SUFFIX}")}
            for content in (folder / CONTENT).glob(f"*{SUFFIX}"):
                if content.name not in linked:
                    content.unlink(missing_ok=True)


def _link_target(path: Path) -> str | None:
    try:
        return Path(os.readlink(path)).name
    except OSError:  # a file of its own, or pruned a moment ago
        return None
