"""The columns of records files parsed through their distinct values.

A cohort has few distinct dates, codes and grades: each is trimmed and parsed once, and the rows carry
integer codes into the distinct values, which the checks, and later the joins, group on.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from dashboard.core.fast import factorize
from dashboard.core.grades import parse_mrc
from dashboard.core.joins import codes_by_runs, one_array, text_array
from dashboard.core.reading import DATE_DTYPE, READ_AS
from dashboard.core.schema import BOOLEAN_TEXT, LUMBAR_SEGMENTS


def _clean(text: pd.Series) -> pd.Series:
    """Trim blanks; a cell of only blanks is missing."""
    return text.astype("string").str.strip().replace("", pd.NA)


class Parsed:
    """One column parsed through its distinct values: a cohort has few distinct dates, codes and grades.

    `codes` gives each row's position in `uniques` (the distinct parsed values, equal values once), -1 where
    the cell is missing or does not parse; `missing` marks blank cells and `bad` cells that do not parse.
    A column typed by the reader works its codes out only when a check asks for them.
    """

    def __init__(self, values: pd.Series, missing: np.ndarray, bad: np.ndarray,
                 encoding: tuple[np.ndarray, pd.Series] | Callable[[], tuple[np.ndarray, pd.Series]]) -> None:
        self.values, self.missing, self.bad = values, missing, bad
        self._encoding = encoding

    @cached_property
    def _encoded(self) -> tuple[np.ndarray, pd.Series]:
        return self._encoding() if callable(self._encoding) else self._encoding

    @property
    def codes(self) -> np.ndarray:
        return self._encoded[0]

    @property
    def uniques(self) -> pd.Series:
        return self._encoded[1]

    def rows_where(self, unique_mask: np.ndarray) -> np.ndarray:
        """Rows whose value is one of the distinct values selected by `unique_mask`."""
        unique_mask = np.asarray(unique_mask, dtype=bool)
        if not unique_mask.any():  # what a valid file gives: no row to look at
            return np.zeros(len(self.codes), dtype=bool)
        return (self.codes >= 0) & unique_mask[np.maximum(self.codes, 0)]


def parse_column(raw: pd.Series, kind: str, keyed: bool = False, likely: pd.Series | None = None) -> Parsed:
    """Parse a column; `keyed`: part of its file's key, so coded at once (in the thread that parses it);
    `likely`: the distinct values it probably holds, in order (patient ids: those of patients.csv)."""
    if kind in READ_AS and READ_AS[kind](raw.dtype):
        parsed = _typed_column(raw, kind)
    elif kind == "text" and not keyed and _as_written(raw):
        parsed = Parsed(raw.astype("string"), raw.isna().to_numpy(), np.zeros(len(raw), dtype=bool),
                        lambda: factorize(raw))  # coded only if a check asks
    else:
        parsed = _parse_distinct(raw, kind, likely)
    if keyed:
        parsed.codes  # noqa: B018 - worked out and kept now
    return parsed


def _as_written(text: pd.Series) -> bool:
    """Whether a text column needs no trimming and has no blank cell: then it is its own parsed value."""
    values = text_array(text)
    return pc.min(pc.binary_length(values)).as_py() != 0 and \
        pc.all(pc.equal(pc.utf8_trim_whitespace(values), values)).as_py() is not False


def _parse_distinct(raw: pd.Series, kind: str, likely: pd.Series | None = None) -> Parsed:
    """Trim and parse the distinct values only, then spread them back to the rows by integer codes."""
    in_runs = None if likely is None or not len(raw) else codes_by_runs(raw, one_array(likely))
    raw_codes, raw_uniques = factorize(raw) if in_runs is None else (in_runs, likely)
    if kind in ("text", "code") and _as_written(raw_uniques):  # every distinct text is a distinct valid value
        values = raw.astype("string")  # the column as read, no copy
        return Parsed(values, raw_codes < 0, np.zeros(len(raw_codes), dtype=bool), (raw_codes, raw_uniques))
    cleaned = _clean(raw_uniques)
    blank = cleaned.isna().to_numpy()
    parsed = cleaned if kind in ("text", "code") else PARSERS[kind](cleaned)
    # Dates are numbered in time order, so a file sorted by patient and date gives increasing keys.
    canonical, uniques = pd.factorize(parsed.reset_index(drop=True), sort=kind == "date", use_na_sentinel=True)
    uniques = pd.Series(uniques, dtype=parsed.dtype)
    if np.array_equal(canonical, np.arange(len(canonical))):
        codes = raw_codes  # the codes as they are
    else:
        codes = np.append(canonical, -1)[raw_codes]  # raw code -1 (missing) picks the appended -1
    missing = (raw_codes < 0) | blank[raw_codes] if blank.any() else raw_codes < 0
    bad_unique = ~blank & (canonical < 0)
    bad = ~missing & (codes < 0) if bad_unique.any() else np.zeros(len(codes), dtype=bool)
    values = pd.Series(pd.api.extensions.take(uniques.array, codes, allow_fill=True), dtype=parsed.dtype)
    values.index = raw.index
    return Parsed(values, missing, bad, (codes, uniques))


def _typed_column(values: pd.Series, kind: str) -> Parsed:
    """A column Arrow's reader has typed (dates, booleans, numbers): every value parsed, none bad."""
    missing = values.isna().to_numpy()
    return Parsed(values, missing, np.zeros(len(values), dtype=bool),
                  lambda: _days_encoding(values, missing) if kind == "date" else factorize(values))


def _days_encoding(dates: pd.Series, missing: np.ndarray) -> tuple[np.ndarray, pd.Series]:
    """Dates coded by their day, counted from the earliest: codes follow time order, as for dates read as text."""
    codes = dates.to_numpy().astype("datetime64[D]").view(np.int64)  # one new array, changed in place below
    gaps = missing.any()
    known = codes[~missing] if gaps else codes
    first = int(known.min()) if len(known) else 0
    codes -= first
    if gaps:
        codes[missing] = -1
    span = int(codes.max(initial=-1)) + 1
    return codes, pd.Series(np.arange(first, first + span).astype("datetime64[D]").astype(dates.dtype))


def absent_column(kind: str, index: pd.Index) -> Parsed:
    """A column the file does not have: missing everywhere, typed like a present one."""
    text = pd.Series(pd.NA, index=index, dtype="string")
    values = text if kind in ("text", "code") else PARSERS[kind](text)
    none = np.zeros(len(index), dtype=bool)
    return Parsed(values, ~none, none, (np.full(len(index), -1, dtype=np.int64), values.iloc[:0]))


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
    return raw.str.lower().map(BOOLEAN_TEXT).astype("boolean")


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
