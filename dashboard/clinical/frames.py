"""Frame helpers of the clinical core: joins by row position, codes and days as plain arrays.

Joins by row position instead of by text key.

Merging on Arrow-backed patient_id strings hashes every row again on each merge. Here a frame's key column
is looked up once in the other frame's (Arrow's hash kernel, `rows_in`), and columns are then taken by
those row numbers: the same result as a left merge on a unique key, at the cost of a take. Nothing is kept
between calls: the same values give the same answer wherever they come from.
"""

from __future__ import annotations

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


def encode(values: pd.Series, categories: Sequence[str] | None = None) -> tuple[np.ndarray, pa.Array]:
    """A text column as int32 codes (-1 where missing or not a category) and the texts they stand for:
    `categories` when given, else the distinct values in order of first appearance (equal values give equal
    codes, whatever array holds them)."""
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


def rows_in(values: pd.Series | pa.Array, keys: pd.Series | pa.Array) -> np.ndarray:
    """For each value, the row of `keys` that holds it (-1 where absent or missing); `keys` are unique."""
    if not len(values):
        return np.zeros(0, dtype=np.int64)
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
    """Rows by position under a fresh RangeIndex; row -1 comes out all missing, as in a left merge."""
    frame = frame.reset_index(drop=True)
    if len(rows) == len(frame) and np.array_equal(rows, np.arange(len(rows))):
        return frame
    if len(rows) and rows.min() < 0:
        taken = frame.reindex(rows).reset_index(drop=True)
    else:
        taken = frame.take(rows).reset_index(drop=True)
    return taken


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
    """`values[rows]` as a text column (row -1: missing)."""
    return text_column(text_array(values), rows)


def coded_text_column(distinct: pa.Array, codes: np.ndarray) -> pd.Series:
    """`text_column` of distinct texts by their codes (kept for its callers: the same as `text_column`)."""
    return text_column(distinct, codes)


def sort_rank(values: pd.Series) -> np.ndarray:
    """Each value's place in sorted order (missing last, equal values in input order): text sorted as integers."""
    order = pc.array_sort_indices(text_array(values), null_placement="at_end").to_numpy()
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    return rank


def factorize(values: pd.Series) -> tuple[np.ndarray, pd.Series]:
    """Integer codes (-1 where missing) and the distinct values, in order of first appearance.

    Text codes stay 32-bit, as Arrow makes them: a million-row column is not copied to widen them.
    """
    if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
        codes, distinct = encode(values)
        return codes, pd.Series(distinct.to_pandas(), dtype="string")
    codes, uniques = pd.factorize(values)
    return codes, pd.Series(uniques)


def codes_in(values: pd.Series, categories: pd.Index | list | tuple) -> np.ndarray:
    """Position of each value in `categories` (-1 where absent or missing), computed per distinct value."""
    codes, uniques = factorize(values)
    positions = pd.Index(categories).get_indexer(uniques.astype(object))
    return np.where(codes >= 0, positions[np.maximum(codes, 0)] if len(positions) else -1, -1)


def days(dates: pd.Series) -> np.ndarray:
    """Dates as whole days since 1970 (float, NaN where missing), for arithmetic on plain arrays."""
    out = dates.to_numpy(dtype="datetime64[D]").astype(np.int64).astype(float)
    out[dates.isna().to_numpy()] = np.nan
    return out
