"""Values worked out from one frame object, kept while that object lives and its columns
are the same arrays, so work on a million-row snapshot is done once however many
accounts read it. Pure bookkeeping: no I/O.

A frame is unhashable (it is mutable), so entries are keyed by the object's id and
held through a weak reference: an entry dies with its frame and never outlives it. The
fingerprint (columns, dtypes, length, the address of each column's data) notices a
column replaced, added or dropped; a value written in place into the same array is not
noticed, so only frames that are not changed after they are made are remembered: the
warehouse snapshot, an asset value that every step only reads.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, Hashable, TypeVar

import numpy as np
import pandas as pd

Value = TypeVar("Value")

_lock = threading.RLock()  # reentrant: a weakref callback may run inside a locked section (gc)
# Account runs may share one process (the CLI runs accounts side by side), hence the lock.
_entries: dict[int, tuple[weakref.ref, tuple, dict[Hashable, object]]] = {}


def _fingerprint(frame: pd.DataFrame) -> tuple:
    return (
        tuple(frame.columns),
        tuple(frame.dtypes),
        len(frame),
        tuple(_address(frame[column]) for column in frame.columns),
    )


def _address(column: pd.Series) -> int:
    # np.asarray of a numpy-backed or python-string column is its own array, not a copy.
    return np.asarray(column.array).__array_interface__["data"][0]


def _values_of(frame: pd.DataFrame) -> dict[Hashable, object] | None:
    entry = _entries.get(id(frame))
    if entry is None or entry[0]() is not frame or entry[1] != _fingerprint(frame):
        return None
    return entry[2]


def recall(frame: pd.DataFrame, key: Hashable) -> object | None:
    """What was remembered of `frame` under `key`, or None."""
    with _lock:
        values = _values_of(frame)
        return None if values is None else values.get(key)


def remember(frame: pd.DataFrame, key: Hashable, value: object) -> None:
    with _lock:
        values = _values_of(frame)
        if values is None:
            frame_id = id(frame)

            def forget(ref: weakref.ref, frame_id: int = frame_id) -> None:
                with _lock:  # only this frame's entry: its id may already name a newer frame
                    if _entries.get(frame_id, (None,))[0] is ref:
                        del _entries[frame_id]

            values = {}
            _entries[frame_id] = (weakref.ref(frame, forget), _fingerprint(frame), values)
        values[key] = value


def remembered(frame: pd.DataFrame, key: Hashable, compute: Callable[[], Value]) -> Value:
    """`compute()` the first time for this frame and key; the same value afterwards."""
    found = recall(frame, key)
    if found is None:
        found = compute()
        remember(frame, key, found)
    return found  # type: ignore[return-value]
