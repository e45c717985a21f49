"""The plain columns rules are tested on: one kind per field, missing never satisfies a condition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.clinical.imaging.checklist import _lowest_before
from dashboard.clinical.imaging.rule_table import Table, column_of, holds


def _visits() -> pd.DataFrame:
    """Three visits, each column with one value missing."""
    return pd.DataFrame({
        "fever": pd.array([True, False, None], dtype="boolean"),
        "day": pd.array([3, None, 10], dtype="Int64"),
        "crp": [12.5, np.nan, 80.0],
        "visit_date": pd.to_datetime(["2026-01-02", None, "2026-03-04"]).astype("datetime64[us]"),
        "status": pd.Series(["behind", None, "on_track"], dtype="str"),
    })


def test_each_pandas_column_becomes_one_plain_kind_with_missing_kept_missing():
    frame = _visits()
    fever, day, crp, when, status = (column_of(frame[name]) for name in frame.columns)
    assert (fever.kind, day.kind, crp.kind, when.kind, status.kind) == ("flag", "number", "number", "date", "text")
    assert fever.known.tolist() == [True, True, False] and day.known.tolist() == [True, False, True]
    assert when.known.tolist() == [True, False, True] and status.known.tolist() == [True, False, True]
    assert [status.texts[code] if code >= 0 else None for code in status.values] == ["behind", None, "on_track"]


@pytest.mark.parametrize(("condition", "expected"), [
    ({"field": "fever", "is": True}, [True, False, False]),
    ({"field": "fever", "is": False}, [False, True, False]),
    ({"field": "day", "le": 3}, [True, False, False]),
    ({"field": "day", "ne": 3}, [False, False, True]),  # unknown is not "not 3"
    ({"field": "day", "in": [3, 10]}, [True, False, True]),
    ({"field": "crp", "ge": 30}, [False, False, True]),
    ({"field": "visit_date", "lt": "2026-02-01"}, [True, False, False]),
    ({"field": "visit_date", "in": ["2026-03-04"]}, [False, False, True]),
    ({"field": "status", "in": ["behind", "deteriorating"]}, [True, False, False]),
    ({"field": "status", "ne": "behind"}, [False, False, True]),
    ({"field": "status", "eq": "on_track"}, [False, False, True]),
])
def test_a_condition_holds_only_where_the_value_is_known_and_satisfies_it(condition, expected):
    frame = _visits()
    assert holds(column_of(frame[condition["field"]]), condition).tolist() == expected


def test_a_table_makes_a_column_only_when_it_is_read_and_only_once():
    made = []

    def maker(name):
        def make(_table):
            made.append(name)
            return column_of(pd.Series([1.0, 2.0, 3.0]))
        return make

    table = Table(np.array([0, 0, 1]), {"a": maker("a"), "b": maker("b")})
    some = table.take(np.array([2, 0]))
    assert made == []
    assert some["a"].values.tolist() == [3.0, 1.0] and some.patient.tolist() == [1, 0]
    assert table["a"].values.tolist() == [1.0, 2.0, 3.0]
    assert made == ["a"]  # "b" never read, "a" made once for the table and its rows


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.one_of(st.none(), st.floats(0, 300, allow_nan=False))),
                max_size=40))
def test_the_lowest_earlier_value_matches_a_grouped_running_minimum(rows):
    rows = sorted(rows, key=lambda row: row[0])  # each patient's rows together, as the visit table has them
    patient = np.array([row[0] for row in rows], dtype=np.int64)
    values = np.array([np.nan if row[1] is None else row[1] for row in rows], dtype=float)
    expected = [min((v for p, v in zip(patient[:i], values[:i], strict=True) if p == patient[i] and not np.isnan(v)),
                    default=np.nan) for i in range(len(rows))]
    np.testing.assert_array_equal(_lowest_before(values, patient), np.array(expected, dtype=float))
