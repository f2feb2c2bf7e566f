"""Cleaning the warehouse snapshot: pure, vectorised, every dropped row counted.

A stock value is good only when it is a whole number from 0 to the plausible maximum
(`STOCK_MAX_PLAUSIBLE_STOCK`). Anything else makes a bad row: NULL, a negative or
fractional number, inf/-inf/NaN, a boolean, text that is not a plain whole number
('1e3', '12.5', 'abc'), a number above the plausible maximum. A bad row is excluded,
counted and named with its raw value; it must never become a 0 on Allegro, so its SKU
is also excluded when another row of the same SKU is valid (a partial sum would
under-report stock).

Every value is classified in the type the warehouse gave it, before any cast: casting
first is how 99999999999999999999 wrapped to -2^63, was clipped to 0 and ended an offer.
"""

from __future__ import annotations

import numbers
import operator
from dataclasses import dataclass, field, replace
from decimal import Decimal

import numpy as np
import pandas as pd

from stock_pipeline.core import frame_memo

MAX_QUANTITY = 99_999  # Allegro's maximum stock of an offer
# Every whole number up to 2^53 is exact in a float64, so a float column can be
# judged against any allowed maximum without rounding deciding the verdict.
MAX_PLAUSIBLE_LIMIT = 2**53

SKU_EMPTY = "SKU is empty"
STOCK_NULL = "stock is NULL"
NOT_A_NUMBER = "stock is not a number"
NOT_PLAIN_TEXT = "stock is text that is not a plain whole number"
NOT_FINITE = "stock is not a finite number"
NOT_WHOLE = "stock is not a whole number"
NEGATIVE = "stock is negative"
SIBLING_OF_BAD = "valid row of a SKU that also has a bad row"


def above_maximum(max_plausible: int) -> str:
    return f"stock above the plausible maximum ({max_plausible})"


# '-' is matched only so that '-5' is reported as negative rather than as odd text.
_PLAIN_WHOLE = r"[+-]?[0-9]+"
_INT64_SAFE_DIGITS = 18  # every number of up to 18 digits fits in an int64

Classified = tuple[np.ndarray, np.ndarray]  # (value int64, problem: object array, None where good)


@dataclass(frozen=True)
class CleanSnapshot:
    stock: pd.DataFrame  # columns sku (str, trimmed; may repeat: combined per account policy), stock (int64)
    rows_read: int
    bad_rows: pd.DataFrame  # the rejected rows as read (raw values) with a `problem` column
    duplicate_skus: int
    max_plausible: int
    capped_rows: int  # good rows above MAX_QUANTITY: real stock, offered as at most 99 999 by the policy
    problems: dict[str, int] = field(default_factory=dict)


def clean_snapshot(raw: pd.DataFrame, *, max_plausible: int) -> CleanSnapshot:
    missing = {"sku", "stock"} - set(raw.columns)
    if missing:
        raise ValueError(
            f"the stock query must return columns sku and stock; missing: {', '.join(sorted(missing))} "
            f"(got: {', '.join(map(str, raw.columns))})"
        )
    if not MAX_QUANTITY <= max_plausible <= MAX_PLAUSIBLE_LIMIT:
        raise ValueError(f"max_plausible must be between {MAX_QUANTITY} and {MAX_PLAUSIBLE_LIMIT}, got {max_plausible}")
    sku = raw["sku"].astype("string").str.strip().reset_index(drop=True)
    value, problem = classify_stock(raw["stock"], max_plausible)
    sku_empty = sku.fillna("").eq("").to_numpy(dtype=bool)
    problem[sku_empty] = SKU_EMPTY

    bad = pd.notna(problem)
    bad_skus = sku[bad & ~sku_empty].unique()
    sibling = ~bad & sku.isin(bad_skus).to_numpy(dtype=bool)
    good = ~bad & ~sibling

    clean = pd.DataFrame({"sku": sku[good].reset_index(drop=True), "stock": value[good]})
    # Kept row by row: each account's policy says how rows of one SKU combine, and
    # caps the result, so a row above 99 999 is not cut here (a reserve may apply).
    duplicate_skus = int(clean["sku"].duplicated().sum())

    bad_rows = raw.iloc[np.flatnonzero(bad)].assign(problem=problem[bad])
    counts = {str(k): int(v) for k, v in pd.Series(problem[bad], dtype=object).value_counts().items()}
    if sibling.any():
        counts[SIBLING_OF_BAD] = int(sibling.sum())
    return CleanSnapshot(
        stock=clean,
        rows_read=len(raw),
        bad_rows=bad_rows,
        duplicate_skus=duplicate_skus,
        max_plausible=max_plausible,
        capped_rows=int((clean["stock"] > MAX_QUANTITY).sum()),
        problems=counts,
    )


def shared(snapshot: CleanSnapshot) -> CleanSnapshot:
    """The snapshot for one more reader: its frames are views of the same read-only arrays
    (core/frame_memo.shared_view), so the account runs of one process hold one copy of a
    million rows between them, and none can change what another plans from: writing a
    value raises, a column added or replaced changes that reader's view only. Frames whose
    arrays cannot be made read-only are copied instead."""
    try:
        stock, bad_rows = frame_memo.shared_view(snapshot.stock), frame_memo.shared_view(snapshot.bad_rows)
    except TypeError:
        stock, bad_rows = snapshot.stock.copy(), snapshot.bad_rows.copy()
    return replace(snapshot, stock=stock, bad_rows=bad_rows, problems=dict(snapshot.problems))


def distinct_skus(stock: pd.DataFrame) -> int:
    """How many distinct SKUs the snapshot holds; counted once per shared (read-only) frame,
    however many runs and checks ask."""
    if not frame_memo.is_frozen(stock):
        return int(stock["sku"].nunique())
    return frame_memo.remembered(stock, "distinct skus", lambda: int(stock["sku"].nunique()))


def classify_stock(stock: pd.Series, max_plausible: int) -> Classified:
    """Each value's whole number (0 where bad) and problem (None where good), by the
    column's type: int64/float64 columns stay on numpy paths, object columns are split
    by the Python type of each value."""
    dtype = stock.dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind in "iu":
            return _integers(stock.to_numpy(), max_plausible)
        if dtype.kind == "f":
            return _floats(stock.to_numpy(), max_plausible)
        if dtype.kind == "b":
            return np.zeros(len(stock), dtype=np.int64), np.full(len(stock), NOT_A_NUMBER, dtype=object)
    # Object columns and pandas' own types (Int64, string, boolean, categorical…): their
    # missing values become None, then every value goes by its Python type.
    return _objects(stock.astype(object).to_numpy(), max_plausible)


_NULL, _NOT_A_NUMBER, _INT, _FLOAT, _DECIMAL, _TEXT = range(6)


def _objects(values: np.ndarray, max_plausible: int) -> Classified:
    kinds = _kinds(values)
    value = np.zeros(len(values), dtype=np.int64)
    problem = np.full(len(values), None, dtype=object)
    for kind, classify in ((_INT, _integers), (_FLOAT, _floats_of_objects), (_DECIMAL, _decimals), (_TEXT, _texts)):
        rows = np.flatnonzero(kinds == kind)
        if len(rows):
            value[rows], problem[rows] = classify(values[rows], max_plausible)
    problem[kinds == _NULL] = STOCK_NULL
    problem[kinds == _NOT_A_NUMBER] = NOT_A_NUMBER
    return value, problem


def _kinds(values: np.ndarray) -> np.ndarray:
    """The kind of each value, decided once per distinct Python type, not per row."""
    codes, types = pd.factorize(np.fromiter(map(type, values), dtype=object, count=len(values)))
    return np.array([_kind_of(t) for t in types], dtype=np.int8)[codes]


def _kind_of(kind: type) -> int:
    if kind in (type(None), type(pd.NA), type(pd.NaT)):
        return _NULL
    if issubclass(kind, (bool, np.bool_)):  # a flag, even though Python counts True as 1
        return _NOT_A_NUMBER
    if issubclass(kind, numbers.Integral):
        return _INT
    if issubclass(kind, (float, np.floating)):
        return _FLOAT
    if issubclass(kind, Decimal):
        return _DECIMAL
    if issubclass(kind, str):
        return _TEXT
    return _NOT_A_NUMBER  # dates, bytes, complex…


def _integers(values: np.ndarray, max_plausible: int) -> Classified:
    """int/uint arrays, or objects holding Python ints of any size: compared as they
    are, cast to int64 only once they are known to be in 0..max_plausible."""
    negative = np.asarray(values < 0, dtype=bool)
    above = np.asarray(values > max_plausible, dtype=bool)
    problem = np.full(len(values), None, dtype=object)
    problem[above] = above_maximum(max_plausible)
    problem[negative] = NEGATIVE
    return np.where(negative | above, 0, values).astype(np.int64), problem


def _floats(values: np.ndarray, max_plausible: int) -> Classified:
    """A float column says the value is a number: 1000.0 is 1000; NaN here is a real
    NaN (read_stock keeps a NULL as None, see stock_source)."""
    with np.errstate(invalid="ignore"):
        finite = np.isfinite(values)
        negative = finite & (values < 0)
        above = finite & (values > max_plausible)
        fraction = finite & (values != np.floor(values))
    problem = np.full(len(values), None, dtype=object)
    problem[fraction] = NOT_WHOLE
    problem[above] = above_maximum(max_plausible)
    problem[negative] = NEGATIVE
    problem[~finite] = NOT_FINITE
    good = finite & ~negative & ~above & ~fraction
    return np.where(good, values, 0).astype(np.int64), problem


def _floats_of_objects(values: np.ndarray, max_plausible: int) -> Classified:
    return _floats(values.astype(np.float64), max_plausible)


_is_finite = np.frompyfunc(operator.methodcaller("is_finite"), 1, 1)


def _decimals(values: np.ndarray, max_plausible: int) -> Classified:
    """NUMERIC columns (Decimal): finite and integral, Decimal('12.000') is 12. Judged
    through float64 (NaN and Infinity become nan and inf), then each row that passed is
    compared exactly with its whole number: a fraction the float rounded away, like
    12.0000000000000001, is caught there."""
    try:
        as_float = values.astype(np.float64)
    except ValueError:  # a signalling NaN refuses the conversion: set aside first
        finite = _is_finite(values).astype(bool)
        as_float = np.full(len(values), np.nan)
        as_float[finite] = values[finite].astype(np.float64)
    value, problem = _floats(as_float, max_plausible)
    # Beyond float range a finite Decimal (1E+400) reads as inf: it is just too large.
    overflow = np.flatnonzero(np.isinf(as_float))
    overflow = overflow[_is_finite(values[overflow]).astype(bool)]
    problem[overflow] = np.where(as_float[overflow] < 0, NEGATIVE, above_maximum(max_plausible))
    passed = np.flatnonzero(pd.isna(problem))
    inexact = passed[~np.asarray(values[passed] == value[passed], dtype=bool)]
    value[inexact], problem[inexact] = 0, NOT_WHOLE
    return value, problem


def _texts(values: np.ndarray, max_plausible: int) -> Classified:
    """Text columns: a plain whole number, optionally signed '+' and surrounded by
    spaces ('  7 ', '+7'). '1e3', '12.5', '0x10' are not: a feed writing numbers as
    text in another form is a feed to fix, not to guess at."""
    value = np.zeros(len(values), dtype=np.int64)
    problem = np.full(len(values), None, dtype=object)
    # The common case, nothing but up to 18 ASCII digits once trimmed of spaces and one
    # '+', is parsed by numpy in bulk; only the other texts go through the regular expression.
    trimmed = np.fromiter((text.strip().removeprefix("+") for text in values), dtype=object, count=len(values))
    lengths = np.fromiter(map(len, trimmed), dtype=np.int64, count=len(values))
    short = np.flatnonzero(
        (lengths >= 1)
        & (lengths <= _INT64_SAFE_DIGITS)
        & np.fromiter(map(str.isascii, trimmed), dtype=bool, count=len(values))
    )
    as_bytes = trimmed[short].astype(f"S{_INT64_SAFE_DIGITS}")
    # numpy drops trailing NUL bytes: '5\x00' must not pass as 5.
    digits = np.strings.isdigit(as_bytes) & (np.strings.str_len(as_bytes) == lengths[short])
    plain = short[digits]
    value[plain], problem[plain] = _integers(as_bytes[digits].astype(np.int64), max_plausible)
    rest = np.ones(len(values), dtype=bool)
    rest[plain] = False
    if rest.any():
        value[rest], problem[rest] = _other_texts(values[rest], max_plausible)
    return value, problem


def _other_texts(values: np.ndarray, max_plausible: int) -> Classified:
    text = pd.Series(values, dtype=object).str.strip()
    plain = text.str.fullmatch(_PLAIN_WHOLE).to_numpy(dtype=bool)
    value = np.zeros(len(values), dtype=np.int64)
    problem = np.full(len(values), None, dtype=object)
    if (~plain).any():
        is_number = pd.to_numeric(text[~plain], errors="coerce").notna().to_numpy()
        problem[~plain] = np.where(is_number, NOT_PLAIN_TEXT, NOT_A_NUMBER)
    if plain.any():
        digits = text[plain]
        # Counted before converting: a 20-digit text must be reported, not overflow.
        long = digits.str.lstrip("+-").str.lstrip("0").str.len().to_numpy() > _INT64_SAFE_DIGITS
        negative = digits.str.startswith("-").to_numpy(dtype=bool)
        plain_value = np.zeros(len(digits), dtype=np.int64)
        plain_problem = np.full(len(digits), None, dtype=object)
        plain_value[~long], plain_problem[~long] = _integers(digits[~long].to_numpy().astype(np.int64), max_plausible)
        plain_problem[long] = np.where(negative[long], NEGATIVE, above_maximum(max_plausible))
        value[plain], problem[plain] = plain_value, plain_problem
    return value, problem


def raw_text(value: object) -> str:
    """A stock value as the warehouse gave it: text in quotes (so '1e3' reads as text and
    surrounding spaces show), NULL for a missing value, numbers as they print."""
    if value is None or value is pd.NA or value is pd.NaT:
        return "NULL"
    if isinstance(value, str):
        return repr(str(value))
    return str(value)


def _sku_text(value: object) -> str:
    return "NULL" if value is None or value is pd.NA or (isinstance(value, float) and np.isnan(value)) else str(value)


def bad_rows_records(snapshot: CleanSnapshot, limit: int) -> list[dict[str, str]]:
    """The first bad rows as text: SKU, the raw stock value, the problem."""
    head = snapshot.bad_rows.head(limit)
    return [
        {"sku": _sku_text(s), "stock": raw_text(v), "problem": str(p)}
        for s, v, p in zip(head["sku"], head["stock"], head["problem"])
    ]


def _md_cell(text: str) -> str:
    escaped = "".join("\\" + c if c in "\\`*_[]<>|#" else c for c in text)
    return escaped.replace("\r", " ").replace("\n", " ")


def bad_rows_preview(snapshot: CleanSnapshot, rows: int) -> str:
    """Markdown naming the first bad rows (SKU, stock as given, problem) and the counts
    by problem, for the snapshot's materialisation metadata."""
    if snapshot.bad_rows.empty:
        return "_no bad rows_"
    lines = ["| SKU | stock as given | problem |", "|---|---|---|"]
    lines += [
        f"| {_md_cell(r['sku'])} | {_md_cell(r['stock'])} | {_md_cell(r['problem'])} |"
        for r in bad_rows_records(snapshot, rows)
    ]
    if len(snapshot.bad_rows) > rows:
        lines += ["", f"… and {len(snapshot.bad_rows) - rows} more"]
    lines += ["", "| problem | rows |", "|---|---|"]
    lines += [f"| {_md_cell(problem)} | {count} |" for problem, count in snapshot.problems.items()]
    return "\n".join(lines)


def bad_rows_warning(snapshot: CleanSnapshot, first: int = 5) -> str:
    named = "; ".join(f"SKU {r['sku']} stock {r['stock']} ({r['problem']})" for r in bad_rows_records(snapshot, first))
    more = f"; … and {len(snapshot.bad_rows) - first} more" if len(snapshot.bad_rows) > first else ""
    counts = ", ".join(f"{problem}: {count}" for problem, count in snapshot.problems.items())
    return (
        f"excluded {len(snapshot.bad_rows)} bad stock rows, their SKUs are left as they are on Allegro "
        f"({counts}). First: {named}{more}"
    )


def capped_note(snapshot: CleanSnapshot) -> str:
    return (
        f"{snapshot.capped_rows} stock rows are above Allegro's maximum of {MAX_QUANTITY} (and within the "
        f"plausible maximum {snapshot.max_plausible}): they are offered as at most {MAX_QUANTITY}"
    )
