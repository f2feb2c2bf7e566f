"""The live sensor's warehouse side: what the warehouse holds now, and which SKUs changed
since the version the sensor's cursor names.

Two ways to read it:
- `STOCK_QUERY` whole, every tick, compared with the previous version (any warehouse;
  a million rows: a few seconds a tick, most of it the read);
- with `STOCK_CHANGES_QUERY`, only the rows of the SKUs changed since the cursor's
  position (core/changes_position.py), laid over the previous version; `STOCK_QUERY` is
  still read whole every LIVE_SYNC_FULL_READ_SECONDS, because a deleted row is in no
  changes query's answer.
Either way a version is saved only when something changed, the snapshot guard judges the
result before anything is launched, and the changed SKUs are what the live runs write.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime

import pandas as pd

from stock_pipeline.core.changes_position import ChangesPosition, ChangesPositionError, advanced, since_of
from stock_pipeline.core.guards import snapshot_verdict
from stock_pipeline.core.snapshot import clean_snapshot, distinct_skus
from stock_pipeline.core.warehouse_changes import overlay_changed_rows, warehouse_changes
from stock_pipeline.defs.account_steps import read_snapshot
from stock_pipeline.defs.live_snapshots import WarehouseVersions
from stock_pipeline.defs.resources import GuardConfig, LiveSyncConfig, StockDatabase
from stock_pipeline.store.guard_state import LAST_GOOD_SNAPSHOT_SKUS, read_value
from stock_pipeline.warehouse.stock_source import (
    CHANGED_AT,
    StockSourceError,
    newest_change,
    read_stock_changes,
)


@dataclass(frozen=True)
class WarehousePosition:
    """The warehouse's part of the sensor cursor."""

    version: str | None  # the snapshot version last compared (defs/live_snapshots.py)
    changes_since: dict | None = None  # ChangesPosition, when STOCK_CHANGES_QUERY is set
    full_read_at: str | None = None  # when STOCK_QUERY was last read whole
    skus: int | None = None  # distinct SKUs of that version: the snapshot guard's count, kept up to date


@dataclass(frozen=True)
class WarehouseTick:
    stock: pd.DataFrame  # the warehouse now: the snapshot version `position.version` names
    changed: pd.Index  # SKUs whose rows differ from the previous version
    position: WarehousePosition
    held: str | None = None  # the snapshot guard's reason when it holds the feed: nothing is launched


def read_warehouse(
    stock_db: StockDatabase,
    live: LiveSyncConfig,
    guards: GuardConfig,
    engine,
    position: WarehousePosition,
    now: datetime,
) -> WarehouseTick:
    versions = WarehouseVersions(live.versions_dir)
    previous = versions.load(position.version)
    since = ChangesPosition.parse(position.changes_since) if stock_db.changes_query else None
    if since is not None and previous is not None and not _full_read_due(position.full_read_at, now, live):
        return _changes_tick(stock_db, guards, engine, versions, previous, position, since)
    if stock_db.changes_query and since is None:
        # Where the changes reads start: the newest change before this tick's full read. A row
        # changed during the read is read again by the next tick, which finds it already there.
        since = _advanced(None, [newest_change(stock_db.url, stock_db.changes_query, since_of(None))])
    stock = read_snapshot(stock_db).stock
    skus = distinct_skus(stock)
    held = _held(skus, guards, engine)
    full_read_at = now.isoformat()
    changes_since = since.dump() if since is not None else None
    if held:
        return WarehouseTick(stock, pd.Index([], dtype="string"), position, held)
    if previous is None:  # the baseline: what is there now, the full sync covers
        version = versions.save(stock)
        return WarehouseTick(
            stock, pd.Index([], dtype="string"), WarehousePosition(version, changes_since, full_read_at, skus)
        )
    changed = pd.Index(warehouse_changes(previous, stock)["sku"], dtype="string")
    version = versions.save(stock) if len(changed) else position.version
    return WarehouseTick(stock, changed, WarehousePosition(version, changes_since, full_read_at, skus))


def _changes_tick(
    stock_db: StockDatabase,
    guards: GuardConfig,
    engine,
    versions: WarehouseVersions,
    previous: pd.DataFrame,
    position: WarehousePosition,
    since: ChangesPosition,
) -> WarehouseTick:
    rows = read_stock_changes(stock_db.url, stock_db.changes_query, since.since())
    newer = _advanced(since, rows[CHANGED_AT]).dump()
    try:
        clean = clean_snapshot(rows[["sku", "stock"]], max_plausible=stock_db.max_plausible_stock)
    except ValueError as exc:
        raise StockSourceError(f"STOCK_CHANGES_QUERY: {exc}") from None
    # Every SKU the query named, as the cleaning trims it: one whose rows all turned bad
    # leaves the snapshot, as it would on a full read.
    touched = pd.Index(rows["sku"].astype("string").str.strip().dropna().unique(), dtype="string")
    overlay = overlay_changed_rows(previous, touched, clean.stock)
    changed = pd.Index(overlay.changes["sku"], dtype="string")
    if not len(changed):
        return WarehouseTick(previous, changed, replace(position, changes_since=newer))
    before = position.skus if position.skus is not None else distinct_skus(previous)
    skus = before - overlay.skus_left + overlay.skus_came
    held = _held(skus, guards, engine)
    if held:
        return WarehouseTick(overlay.snapshot, pd.Index([], dtype="string"), position, held)
    version = versions.save(overlay.snapshot)
    return WarehouseTick(overlay.snapshot, changed, replace(position, version=version, changes_since=newer, skus=skus))


def _advanced(position: ChangesPosition | None, changed_at) -> ChangesPosition | None:
    try:
        return advanced(position, changed_at)
    except ChangesPositionError as exc:
        raise StockSourceError(f"STOCK_CHANGES_QUERY: {exc}") from None


def _full_read_due(full_read_at: str | None, now: datetime, live: LiveSyncConfig) -> bool:
    if not full_read_at:
        return True
    return (now - datetime.fromisoformat(full_read_at)).total_seconds() >= live.full_read_seconds


def _held(skus: int, guards: GuardConfig, engine) -> str | None:
    """The snapshot guard's rule (a broken feed launches nothing): the full sync's guard
    holds and alerts; the live side waits for a good feed."""
    verdict = snapshot_verdict(skus, read_value(engine, LAST_GOOD_SNAPSHOT_SKUS), guards.limits())
    return None if verdict.passed else verdict.description
