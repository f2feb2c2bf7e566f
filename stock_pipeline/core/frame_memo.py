"""Values worked out from one frame object, kept while that object lives and its columns
are the same arrays, so work on a million-row snapshot is done once however many
accounts read it; and frames frozen to be shared between the account runs of a process.
Pure bookkeeping: no I/O.

A frame is unhashable (it is mutable), so entries are keyed by the object's id and
held through a weak reference: an entry dies with its frame and never outlives it. The
fingerprint (columns, dtypes, length, the address of each column's data) notices a
column replaced, added or dropped; a value written in place into the same array is not
noticed, so only frames that are not changed after they are made are remembered: the
warehouse snapshot, an asset value that every step only reads.

A frame shared by several runs is frozen (`freeze`: its arrays read-only, so writing a
value into it raises instead of changing what another run plans from) and each reader
gets a view of its own (`shared_view`: a new frame object over the same read-only
arrays, so adding or replacing a column changes that reader's frame only). A view holds
its frame alive and reads and adds to the frame's entries for as long as its columns are
still the frame's: the work is done once per frame, not once per reader.
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
# id(view) -> (weak reference to the view, the frozen frame it views, held by the entry).
_origins: dict[int, tuple[weakref.ref, pd.DataFrame]] = {}


def _fingerprint(frame: pd.DataFrame) -> tuple:
    return (
        tuple(frame.columns),
        tuple(frame.dtypes),
        len(frame),
        tuple(_address(frame[column]) for column in frame.columns),
    )


def _address(column: pd.Series) -> tuple[int, ...]:
    try:
        arrays = _values_arrays(column.array)
    except TypeError:  # np.asarray makes a new array each time: such a frame is never recalled
        arrays = [np.asarray(column.array)]
    return tuple(array.__array_interface__["data"][0] for array in arrays)


def _origin(frame: pd.DataFrame) -> pd.DataFrame:
    """The frozen frame `frame` is an unchanged view of (shared_view), else `frame` itself."""
    entry = _origins.get(id(frame))
    if entry is None or entry[0]() is not frame or _fingerprint(frame) != _fingerprint(entry[1]):
        return frame
    return entry[1]


def _values_of(frame: pd.DataFrame) -> dict[Hashable, object] | None:
    entry = _entries.get(id(frame))
    if entry is None or entry[0]() is not frame or entry[1] != _fingerprint(frame):
        return None
    return entry[2]


def recall(frame: pd.DataFrame, key: Hashable) -> object | None:
    """What was remembered of `frame` (or of the frame it is a view of) under `key`, or None."""
    with _lock:
        values = _values_of(_origin(frame))
        return None if values is None else values.get(key)


def remember(frame: pd.DataFrame, key: Hashable, value: object) -> None:
    with _lock:
        frame = _origin(frame)  # a view's findings are its frame's: every view of it sees them
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


# (id of the frame, key) -> the lock of the one computation under way: the runs that reach
# the same shared frame at the same moment wait for it instead of each doing it.
_computing: dict[tuple[int, Hashable], threading.Lock] = {}


def remembered(frame: pd.DataFrame, key: Hashable, compute: Callable[[], Value]) -> Value:
    """`compute()` the first time for this frame and key; the same value afterwards. Callers
    asking while it is being computed wait for it rather than compute it again."""
    found = recall(frame, key)
    if found is not None:
        return found  # type: ignore[return-value]
    with _lock:
        slot = (id(_origin(frame)), key)
        computing = _computing.setdefault(slot, threading.Lock())
    try:
        with computing:
            found = recall(frame, key)
            if found is None:
                found = compute()
                remember(frame, key, found)
    finally:
        with _lock:
            if _computing.get(slot) is computing:
                del _computing[slot]
    return found  # type: ignore[return-value]


# ---- frames shared between runs -------------------------------------------------------------


_MASKED = (pd.arrays.IntegerArray, pd.arrays.FloatingArray, pd.arrays.BooleanArray)


def _values_arrays(values: object) -> list[np.ndarray]:
    """The numpy arrays holding a column's (or a block's) values; TypeError for values that
    could change without one (pyarrow-backed columns replace their data in place)."""
    if isinstance(values, np.ndarray):
        return [values]
    if isinstance(values, _MASKED):  # nullable numbers and booleans: values and mask
        return [values._data, values._mask]
    if isinstance(getattr(values, "_ndarray", None), np.ndarray):  # numpy, python strings, categoricals, dates
        return [values._ndarray]
    raise TypeError(f"a column of dtype {getattr(values, 'dtype', values)} cannot be made read-only to be shared")


def _arrays(frame: pd.DataFrame) -> list[np.ndarray]:
    return [array for block in frame._mgr.blocks for array in _values_arrays(block.values)]


def freeze(frame: pd.DataFrame) -> pd.DataFrame:
    """Makes the arrays holding `frame`'s values read-only, so no value of it can be changed
    in place (pandas raises "assignment destination is read-only"); returns `frame`."""
    for array in _arrays(frame):
        array.flags.writeable = False
    return frame


def is_frozen(frame: pd.DataFrame) -> bool:
    try:
        return all(not array.flags.writeable for array in _arrays(frame))
    except TypeError:
        return False


def shared_view(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame object of its own over `frame`'s arrays, made read-only first: a reader may
    add, drop or replace columns of its view without touching `frame` or another reader's
    view, and cannot write a value into the shared arrays. What is remembered of `frame`
    is remembered of the view while its columns are unchanged, and the other way round."""
    with _lock:
        origin = _origin(frame)
        freeze(origin)
        view = origin.copy(deep=False)
        view_id = id(view)

        def forget(ref: weakref.ref, view_id: int = view_id) -> None:
            with _lock:
                if _origins.get(view_id, (None,))[0] is ref:
                    del _origins[view_id]

        _origins[view_id] = (weakref.ref(view, forget), origin)
        return view
