"""The columns of records files parsed through their distinct values.

A cohort has few distinct dates, codes and grades: each is trimmed and parsed once, and the rows carry
integer codes into the distinct values, which the checks, and later the joins, group on.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from dashboard.clinical.frames import factorize, text_array
from dashboard.clinical.mrc import parse_mrc
from dashboard.clinical.records.format import BOOLEAN_TEXT, LUMBAR_SEGMENTS
from dashboard.clinical.records.read import DATE_DTYPE


def _clean(text: pd.Series) -> pd.Series:
    """Trim blanks; a cell of only blanks is missing."""
    return text.astype("string").str.strip().replace("", pd.NA)


class Parsed:
    """One column parsed through its distinct values.

    `codes` give each row's position in `uniques` (the distinct parsed values, equal values once), -1 where
    the cell is missing or does not parse; `missing` marks blank cells and `bad` cells that do not parse.
    """

    def __init__(self, values: pd.Series, missing: np.ndarray, bad: np.ndarray, codes: np.ndarray,
                 uniques: pd.Series) -> None:
        self.values, self.missing, self.bad, self.codes, self.uniques = values, missing, bad, codes, uniques

    def rows_where(self, unique_mask: np.ndarray) -> np.ndarray:
        """Rows whose value is one of the distinct values selected by `unique_mask`."""
        unique_mask = np.asarray(unique_mask, dtype=bool)
        if not unique_mask.any():  # what a valid file gives: no row to look at
            return np.zeros(len(self.codes), dtype=bool)
        return (self.codes >= 0) & unique_mask[np.maximum(self.codes, 0)]


def parse_column(raw: pd.Series, kind: str) -> Parsed:
    """Trim and parse a column of text through its distinct values, then spread them back to the rows."""
    raw_codes, raw_uniques = factorize(raw)
    if kind in ("text", "code") and _as_written(raw_uniques):  # every distinct text is a distinct valid value
        return Parsed(raw.astype("string"), raw_codes < 0, np.zeros(len(raw_codes), dtype=bool), raw_codes,
                      raw_uniques)
    cleaned = _clean(raw_uniques)
    blank = cleaned.isna().to_numpy()
    parsed = cleaned if kind in ("text", "code") else PARSERS[kind](cleaned)
    # Dates are numbered in time order, so a file sorted by patient and date gives increasing keys.
    canonical, uniques = pd.factorize(parsed.reset_index(drop=True), sort=kind == "date", use_na_sentinel=True)
    uniques = pd.Series(uniques, dtype=parsed.dtype)
    codes = np.append(canonical, -1)[raw_codes]  # raw code -1 (missing) picks the appended -1
    missing = (raw_codes < 0) | blank[raw_codes] if blank.any() else raw_codes < 0
    bad = ~missing & (codes < 0)
    values = pd.Series(pd.api.extensions.take(uniques.array, codes, allow_fill=True), dtype=parsed.dtype)
    values.index = raw.index
    return Parsed(values, missing, bad, codes, uniques)


def _as_written(texts: pd.Series) -> bool:
    """Whether distinct texts need no trimming and none is blank: then each is its own parsed value."""
    values = text_array(texts)
    return len(values) == 0 or (pc.min(pc.binary_length(values)).as_py() != 0 and
                                pc.all(pc.equal(pc.utf8_trim_whitespace(values), values)).as_py() is not False)


def absent_column(kind: str, index: pd.Index) -> Parsed:
    """A column the file does not have: missing everywhere, typed like a present one (PARSED_DTYPES)."""
    values = pd.Series(index=index, dtype=PARSED_DTYPES[kind])
    none = np.zeros(len(index), dtype=bool)
    return Parsed(values, ~none, none, np.full(len(index), -1, dtype=np.int64), values.iloc[:0])


def key_codes(columns: list[Parsed]) -> np.ndarray:
    """One int64 per row for a natural key over parsed columns (-1 where any part is missing)."""
    key = columns[0].codes.astype(np.int64)  # a copy: combined in place below
    room = 2**62 // max(len(columns[0].uniques), 1)
    for column in columns[1:]:
        size = max(len(column.uniques), 1)
        if size > room:  # keep the combined key inside int64: renumber what is combined so far
            key = pd.factorize(key)[0].astype(np.int64)
            room = 2**62 // max(int(key.max(initial=0)) + 1, 1)
        key *= size
        key += column.codes
        room //= size
    gaps = [column.codes < 0 for column in columns if column.codes.min(initial=0) < 0]  # none in a valid file
    if gaps:
        key[np.logical_or.reduce(gaps)] = -1
    return key


def repeated_rows(key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose complete key repeats an earlier row's, and the first row with that key.

    A stable sort, not a hash: records files are mostly in key order already, which the sort runs through.
    """
    in_order = bool((key[1:] >= key[:-1]).all())  # a file sorted by patient and date: no sort
    order = None if in_order else np.argsort(key, kind="stable")
    ordered = key if in_order else key[order]
    same = ordered[1:] == ordered[:-1]
    if not same.any() or not (same := same & (ordered[1:] >= 0)).any():
        return np.array([], dtype=np.int64), np.array([], dtype=np.int64)
    run_start = np.maximum.accumulate(np.where(np.concatenate(([True], ~same)), np.arange(len(key)), 0))
    later = np.flatnonzero(np.concatenate(([False], same)))
    first = run_start[later]
    return (later, first) if in_order else (order[later], order[first])


def _parse_date(raw: pd.Series) -> pd.Series:
    return pd.to_datetime(raw, format="%Y-%m-%d", errors="coerce").astype(DATE_DTYPE)


def _parse_boolean(raw: pd.Series) -> pd.Series:
    """Yes/no words, case aside (a column's few distinct values: a list is cheaper than three pandas steps)."""
    words = [BOOLEAN_TEXT.get(text.lower()) if isinstance(text, str) else None for text in raw.tolist()]
    return pd.Series(pd.array(words, dtype="boolean"), index=raw.index)


def _parse_integer(raw: pd.Series) -> pd.Series:
    number = pd.to_numeric(raw, errors="coerce")
    whole = number.where(np.isfinite(number) & (number == np.round(number)))
    return whole.astype("Float64").astype("Int64")


def _parse_number(raw: pd.Series) -> pd.Series:
    number = pd.to_numeric(raw, errors="coerce").astype(float)
    return number.where(np.isfinite(number))


def _parse_levels(raw: pd.Series) -> pd.Series:
    def one(text: str) -> str | None:
        parts = [p.strip().upper() for p in str(text).split(";") if p.strip()]
        if not parts or any(p not in LUMBAR_SEGMENTS for p in parts):
            return None
        return ";".join(sorted(set(parts), key=LUMBAR_SEGMENTS.index))

    return raw.map(one, na_action="ignore").astype("string")


PARSERS: dict[str, Callable[[pd.Series], pd.Series]] = {
    "code": lambda text: text,
    "date": _parse_date,
    "boolean": _parse_boolean,
    "integer": _parse_integer,
    "number": _parse_number,
    "mrc": parse_mrc,
    "levels": _parse_levels,
}

_NO_TEXT = pd.Series(pd.NA, index=pd.RangeIndex(0), dtype="string")
#: The type each kind of column has once parsed: what its parser gives (the parser on no value, once).
PARSED_DTYPES = {"text": _NO_TEXT.dtype, **{kind: parse(_NO_TEXT).dtype for kind, parse in PARSERS.items()}}
