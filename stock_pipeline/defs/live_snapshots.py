"""The warehouse snapshots the live sensor compares, one Parquet file per version.

The sensor's cursor names the version it last compared against; the file outlives a
daemon restart, so the next tick compares the warehouse with exactly what the last
committed tick saw: a change is neither lost nor seen twice. Versions are written
atomically (a temporary file renamed into place) and only the newest few are kept.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pandas as pd

KEEP_VERSIONS = 5


class WarehouseVersions:
    def __init__(self, directory: str):
        self.directory = Path(directory)

    def _path(self, version: str) -> Path:
        if not version.isdigit():  # versions come from a cursor: never a path of their own
            raise ValueError(f"not a warehouse snapshot version: {version!r}")
        return self.directory / f"{version}.parquet"

    def save(self, stock: pd.DataFrame) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        version = str(time.time_ns())
        path = self._path(version)
        temporary = path.with_suffix(".tmp")
        stock.to_parquet(temporary, index=False)
        os.replace(temporary, path)
        self._prune()
        return version

    def load(self, version: str | None) -> pd.DataFrame | None:
        """The snapshot of `version`, or None when there is none (never saved, or pruned)."""
        if not version:
            return None
        try:
            return pd.read_parquet(self._path(version))
        except (FileNotFoundError, ValueError):
            return None

    def _prune(self) -> None:
        versions = sorted(self.directory.glob("*.parquet"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
        for old in versions[:-KEEP_VERSIONS]:
            old.unlink(missing_ok=True)
