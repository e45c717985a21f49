"""Joins by row position instead of by text key.

Merging on Arrow-backed patient_id strings hashes every row again on each merge. Here a frame's key column
is looked up once in the other frame's (Arrow's hash kernel, `rows_in`), and columns are then taken by
those row numbers: the same result as a left merge on a unique key, at the cost of a take. Codes that
validation already worked out for a column are reused (`remember_codes`), so a million rows are hashed once.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc


def text_array(values: pd.Series | pa.Array) -> pa.Array | pa.ChunkedArray:
    """The Arrow array behind a text column (no copy when it is already Arrow-backed)."""
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        return values
    if isinstance(values.dtype, pd.StringDtype) and values.dtype.storage == "pyarrow":
        return pa.array(values.array)
    return pa.array(values.astype("string").array)


def one_array(values: pd.Series | pa.Array | pa.ChunkedArray) -> pa.Array:
    """`text_array`, in one piece (what set lookups take as their value set)."""
    array = text_array(values)
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


#: Codes already worked out for a column, by the identity of the data behind it (see `remember_codes`).
_REMEMBERED: dict[int, tuple[weakref.ref, np.ndarray, pa.Array]] = {}


def _data(values: pd.Series) -> object:
    """What a column's values are held in: the Arrow array behind an Arrow-backed column (pandas wraps it in a
    new array object when a frame is built or copied lazily, but the Arrow array stays), else its array."""
    array = values.array
    return getattr(array, "_pa_array", array)


def remember_codes(values: pd.Series, codes: np.ndarray, distinct: pa.Array) -> None:
    """Keep the codes of a text column for as long as its data lives, so that `encode` does not hash a
    million rows again: validation has them, the assessment of the same records needs them.

    `codes` give each row's position in `distinct` (-1 where missing; `distinct` holds each text once); they
    are held for this very data object, which is immutable, and dropped with it.
    """
    data = _data(values)
    if len(codes) != len(values):
        raise ValueError("one code per row")
    key = id(data)
    held = codes.astype(np.int32, copy=False)  # not copied: the caller hands them over and leaves them alone
    _REMEMBERED[key] = (weakref.ref(data, lambda _: _REMEMBERED.pop(key, None)), held, distinct)


def _remembered(values: pd.Series) -> tuple[np.ndarray, pa.Array] | None:
    if not isinstance(values, pd.Series):
        return None
    data = _data(values)
    found = _REMEMBERED.get(id(data))
    if found is None or found[0]() is not data:
        return None
    return found[1], found[2]


def encode(values: pd.Series, categories: Sequence[str] | None = None) -> tuple[np.ndarray, pa.Array]:
    """A text column as int32 codes (-1 where missing or not a category) and the texts they stand for:
    `categories` when given, else the distinct values in order of first appearance (or in the order of
    codes remembered for the column)."""
    remembered = _remembered(values)
    if remembered is not None:
        codes, distinct = remembered
        if categories is None:
            return codes, distinct
        positions = pc.index_in(distinct, value_set=pa.array(categories, distinct.type)).fill_null(-1)
        return np.append(positions.to_numpy(zero_copy_only=False), -1).astype(np.int32)[codes], \
            pa.array(categories, distinct.type)
    array = text_array(values)
    if categories is None:
        if _in_runs(array):
            return _encode_runs(array)
        encoded = array.dictionary_encode()
        if isinstance(encoded, pa.ChunkedArray):  # one dictionary for all chunks
            encoded = encoded.combine_chunks()
        codes, distinct = encoded.indices, encoded.dictionary
    else:
        distinct = pa.array(categories, array.type)
        codes = pc.index_in(array, value_set=distinct)
    if isinstance(codes, pa.ChunkedArray):
        codes = codes.combine_chunks()
    return (codes if codes.null_count == 0 else codes.fill_null(-1)).to_numpy(zero_copy_only=False), distinct


#: A column whose first rows come in runs this long on average (a file grouped by patient) is encoded by runs.
_LONG_RUNS = 8
_RUN_SAMPLE = 4096


def _in_runs(array: pa.Array | pa.ChunkedArray) -> bool:
    sample = array.slice(0, _RUN_SAMPLE)
    return len(sample) >= _RUN_SAMPLE and len(_runs(sample)[0]) * _LONG_RUNS <= len(sample)


def _runs(array: pa.Array | pa.ChunkedArray) -> tuple[pa.Array, np.ndarray]:
    """The value of each run of equal rows, and the run's length (a run split by chunks counts twice)."""
    runs = pc.run_end_encode(array)
    runs = runs.chunks if isinstance(runs, pa.ChunkedArray) else [runs]
    lengths = np.concatenate([np.diff(run.run_ends.to_numpy(), prepend=0) for run in runs])
    return pa.concat_arrays([run.values for run in runs]), lengths


def _encode_runs(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, pa.Array]:
    """`encode` of a column in long runs of equal values: each run's value is hashed once, not each row."""
    values, lengths = _runs(array)
    encoded = values.dictionary_encode()
    run_codes = encoded.indices.fill_null(-1) if encoded.indices.null_count else encoded.indices
    return np.repeat(run_codes.to_numpy(), lengths), encoded.dictionary


def codes_by_runs(values: pd.Series | pa.Array, distinct: pa.Array) -> np.ndarray | None:
    """Codes of a column that holds `distinct` in that order, each value in one run of rows (a file grouped by
    patient in the order of the patients file): found from its runs alone, no row hashed. None when it does not."""
    run_values, lengths = _runs(one_array(values))  # in one piece: no run split by chunks
    if len(run_values) != len(distinct) or not run_values.equals(distinct.cast(run_values.type)):
        return None
    return np.repeat(np.arange(len(distinct), dtype=np.int32), lengths)


def rows_in(values: pd.Series | pa.Array, keys: pd.Series | pa.Array) -> np.ndarray:
    """For each value, the row of `keys` that holds it (-1 where absent or missing); `keys` are unique."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
    key_codes, remembered = _remembered(keys), _remembered(values)
    if key_codes is not None and (values is key_codes[1] or remembered is not None and remembered[1] is key_codes[1]):
        row_of_code = first_rows(key_codes[0], len(key_codes[1]))  # codes of the same texts: no text compared
        return row_of_code[:-1] if remembered is None else row_of_code[remembered[0]]
    if remembered is not None:  # look up each distinct value once, then spread by the codes
        codes, distinct = remembered
        return np.append(rows_in(distinct, keys), -1)[codes]
    values, keys = text_array(values), one_array(keys)
    if len(values) == len(keys) and one_array(values).equals(keys):  # the same texts in order: nothing to look up
        return np.arange(len(keys))
    found = pc.index_in(values, value_set=keys)
    return found.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def first_rows(codes: np.ndarray, size: int) -> np.ndarray:
    """For each code 0…size-1, the first row that has it (-1: none), then -1 for code -1.

    A first row starts a run of equal codes, so only run starts are looked at: few in a grouped file."""
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]]) if len(codes) else np.zeros(0, dtype=np.int64)
    starts = starts[codes[starts] >= 0][::-1]
    first = np.full(size + 1, -1, dtype=np.int64)
    first[codes[starts]] = starts  # the earliest start of a code is written last
    return first



def take_rows(frame: pd.DataFrame, rows: np.ndarray) -> pd.DataFrame:
    """Rows by position under a fresh RangeIndex; row -1 comes out all missing, as in a left merge. Codes
    remembered for a text column go with the rows taken."""
    frame = frame.reset_index(drop=True)
    if len(rows) == len(frame) and np.array_equal(rows, np.arange(len(rows))):
        return frame
    if len(rows) and rows.min() < 0:
        taken = frame.reindex(rows).reset_index(drop=True)
    else:
        taken = frame.take(rows).reset_index(drop=True)
    for column in frame.columns:
        _carry_codes(frame[column], taken[column], rows)
    return taken


def _carry_codes(values: pd.Series, taken: pd.Series, rows: np.ndarray) -> None:
    """`taken` is `values[rows]` (row -1: missing): it gets the codes remembered for `values` at those rows."""
    remembered = _remembered(values)
    if remembered is not None:
        remember_codes(taken, np.append(remembered[0], -1)[rows], remembered[1])


def join_rows(left: pd.DataFrame, right: pd.DataFrame, rows: np.ndarray, on: str = "patient_id",
              suffixes: tuple[str, str] = ("_x", "_y")) -> pd.DataFrame:
    """`left.merge(right, on=on, how="left")` where `rows` (from `rows_in`) are the matching rows of `right`."""
    overlap = left.columns.intersection(right.columns).drop(on)
    left = left.rename(columns={column: column + suffixes[0] for column in overlap}).reset_index(drop=True)
    taken = take_rows(right.drop(columns=on), rows)
    taken = taken.rename(columns={column: column + suffixes[1] for column in overlap})
    columns = {**{name: left[name] for name in left.columns}, **{name: taken[name] for name in taken.columns}}
    return pd.DataFrame(columns, copy=False)  # not pd.concat: that puts text columns in new Arrow arrays


def text_column(values: pa.Array | pa.ChunkedArray, rows: np.ndarray) -> pd.Series:
    """`values[rows]` as a text column; row -1 gives a missing value."""
    missing = rows < 0
    taken = values.take(pa.array(rows, mask=missing if missing.any() else None)) if len(values) else \
        pa.nulls(len(rows), pa.string())
    return pd.Series(taken, dtype="str")


def take_text(values: pd.Series, rows: np.ndarray) -> pd.Series:
    """`values[rows]` as a text column (row -1: missing), with any codes remembered for `values`."""
    column = text_column(text_array(values), rows)
    _carry_codes(values, column, rows)
    return column


def coded_text_column(distinct: pa.Array, codes: np.ndarray) -> pd.Series:
    """`text_column` of distinct texts, its codes remembered: grouping or joining on it later hashes nothing."""
    column = text_column(distinct, codes)
    remember_codes(column, codes, distinct)
    return column


def sort_rank(values: pd.Series) -> np.ndarray:
    """Each value's place in sorted order (missing last, equal values in input order): text sorted as integers."""
    order = pc.array_sort_indices(text_array(values), null_placement="at_end").to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank
