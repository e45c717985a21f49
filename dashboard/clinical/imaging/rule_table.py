"""The rows a rule is tested on, as plain numpy columns made once per field.

A rule set tests a few fields of 100,000s of rows, rule after rule. On pandas' nullable columns every test
is a conversion and a mask; here each field is converted once, the first time a rule reads it, to one of
four kinds — numbers (float), yes/no findings (1.0/0.0), dates (datetime64) or text (codes into its
distinct texts) — with missing as NaN, NaT or code -1. A test is then one numpy operation, and a missing
value never satisfies it (unknown is not normal).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from pandas.api.types import is_bool_dtype, is_numeric_dtype

from dashboard.clinical.frames import encode

COMPARISONS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
               "ge": operator.ge}


@dataclass(frozen=True)
class Column:
    """One field of a scope's rows. `values` are floats (number, flag), datetime64 (date) or int32 codes
    into `texts` (text); missing is NaN, NaT or -1."""

    kind: str
    values: np.ndarray
    texts: tuple[str, ...] = ()

    @property
    def known(self) -> np.ndarray:
        if self.kind == "text":
            return self.values >= 0
        return ~np.isnat(self.values) if self.kind == "date" else ~np.isnan(self.values)

    def take(self, rows: np.ndarray | None) -> Column:
        return self if rows is None else Column(self.kind, self.values[rows], self.texts)


def column_of(values: pd.Series) -> Column:
    """A pandas column as a plain column of the matching kind."""
    dtype = values.dtype
    if is_bool_dtype(dtype):
        return Column("flag", values.to_numpy(dtype=float, na_value=np.nan))
    if dtype.kind == "M":
        return Column("date", values.to_numpy(dtype="datetime64[us]"))
    if is_numeric_dtype(dtype):
        return Column("number", values.to_numpy(dtype=float, na_value=np.nan))
    codes, distinct = encode(values if isinstance(dtype, pd.StringDtype) else values.astype("string"))
    return Column("text", codes, tuple(distinct.to_pylist()))


def number(values: np.ndarray) -> Column:
    return Column("number", np.asarray(values, dtype=float))


def flag(values: np.ndarray) -> Column:
    return Column("flag", np.asarray(values, dtype=float))


def holds(column: Column, condition: Mapping) -> np.ndarray:
    """Where a rule condition ({field, operator: value}) holds; never where the value is missing."""
    (test, value), = ((key, wanted) for key, wanted in condition.items() if key not in ("field", "label"))
    if column.kind == "text":  # decided once per distinct text, then spread by the codes
        per_text = [_text_holds(text, test, value) for text in column.texts]
        return np.array([*per_text, False], dtype=bool)[column.values]
    values = column.values
    if test == "is":
        return (values != 0) & column.known if value else values == 0
    if column.kind == "date":
        value = [np.datetime64(v) for v in value] if test == "in" else np.datetime64(value)
    if test == "in":
        return np.isin(values, value) & column.known
    with np.errstate(invalid="ignore"):
        result = COMPARISONS[test](values, value)
    return result & column.known if test == "ne" else result


def _text_holds(text: str, test: str, value) -> bool:
    if test == "in":
        return text in value
    if test == "is":
        return bool(text) == bool(value)
    return COMPARISONS[test](text, value)


#: Makes a field's column; given the table it is made for, so that a derived field reads the others from it
#: (a maker that held its own table would keep the table, and all it holds, alive until a garbage collection).
Maker = Callable[["Table"], Column]


class Table:
    """Rows of one scope, each belonging to a patient (`patient`: its row in the patients frame). A field's
    column is made when a rule first reads it, and kept; `take` gives some of the rows, made the same way."""

    def __init__(self, patient: np.ndarray, makers: Mapping[str, Maker]):
        self.patient = patient
        self._makers = dict(makers)
        self._made: dict[str, Column] = {}

    def __len__(self) -> int:
        return len(self.patient)

    def __contains__(self, field: str) -> bool:
        return field in self._makers

    def __getitem__(self, field: str) -> Column:
        if field not in self._made:
            self._made[field] = self._makers[field](self)
        return self._made[field]

    @property
    def fields(self) -> list[str]:
        return list(self._makers)

    def add(self, field: str, column: Column) -> None:
        """A field already made (it holds no table, so no cycle keeps this one alive)."""
        self._makers[field] = lambda _: column
        self._made[field] = column

    def take(self, rows: np.ndarray) -> Table:
        return Table(self.patient[rows], {field: taker(self, field, rows) for field in self._makers})


def taker(table: Table, field: str, rows: np.ndarray | None) -> Maker:
    """A maker of `table[field]` (another table's) at positions `rows` (all when None)."""
    return lambda _: table[field].take(rows)


def frame_makers(frame: pd.DataFrame, fields, rows: np.ndarray | None = None) -> dict[str, Maker]:
    """Makers of the columns `fields` of `frame` (those it has), at positions `rows` (all when None)."""
    return {field: _converter(frame, field, rows) for field in fields if field in frame.columns}


def _converter(frame: pd.DataFrame, field: str, rows: np.ndarray | None) -> Maker:
    return lambda _: column_of(frame[field]).take(rows)
