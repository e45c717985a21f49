"""Positional joins and text codes: the same values give the same answers, wherever they come from."""

from __future__ import annotations

import pickle
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa

from dashboard.clinical.assessment import assess
from dashboard.clinical.frames import encode, factorize, rows_in
from dashboard.clinical.records.validate import validate

DEMO = Path(__file__).resolve().parents[2] / "data" / "demo"


def test_factorize_gives_first_appearance_codes_for_equal_values_from_anywhere():
    """The review found validated columns coded in another order than fresh copies; now nothing is kept."""
    records, report = validate(DEMO, today=date(2026, 11, 20))
    assert report.ok
    validated = records.strength["patient_id"].iloc[::-1].reset_index(drop=True)  # later ids first
    fresh = pd.Series(validated.tolist(), dtype="string")
    (codes, distinct), (fresh_codes, fresh_distinct) = factorize(validated), factorize(fresh)
    assert codes.tolist() == fresh_codes.tolist() and distinct.tolist() == fresh_distinct.tolist()
    assert distinct.iloc[0] == validated.iloc[0] and codes[0] == 0  # order of first appearance

    column = pd.Series(["P2", "P1", "P2", None], dtype="string")
    assert factorize(column)[0].tolist() == [0, 1, 0, -1]
    assert rows_in(column, pd.Series(["P1", "P3", "P2"], dtype="string")).tolist() == [2, 0, 2, -1]
    assert encode(column, ["P2", "P9", "P1"])[0].tolist() == [0, 2, 0, -1]


def test_assessing_validated_records_gives_what_a_copy_of_them_gives():
    today = date(2026, 11, 20)
    records, report = validate(DEMO, today=today)
    assert report.ok
    copied = pickle.loads(pickle.dumps(records))  # the same values in new Arrow arrays
    handed, afresh = assess(records, as_of=today), assess(copied, as_of=today)
    for name in ("patients", "muscles", "prompts", "visits"):
        pd.testing.assert_frame_equal(getattr(handed, name), getattr(afresh, name), obj=name)
    earlier = date(2026, 3, 1)  # rows after the day are left out: new frames, codes worked out afresh
    for name in ("patients", "muscles", "prompts"):
        pd.testing.assert_frame_equal(getattr(assess(records, as_of=earlier), name),
                                      getattr(assess(copied, as_of=earlier), name), obj=name)


def test_a_column_in_long_runs_is_coded_as_by_hashing_every_row():
    runs = ["P2"] * 5000 + [None] * 100 + ["P1"] * 3000 + ["P2"] * 10 + [None]
    column = pa.chunked_array([pa.array(runs[:3000], pa.large_string()), pa.array(runs[3000:], pa.large_string())])
    hashed = column.dictionary_encode().combine_chunks()

    codes, distinct = encode(pd.Series(pd.arrays.ArrowStringArray(column)))

    assert codes.tolist() == hashed.indices.fill_null(-1).to_numpy().tolist()
    assert distinct.to_pylist() == ["P2", "P1"]
    assert codes[5000] == -1 and codes[-1] == -1


def test_rows_of_values_in_the_keys_own_order_are_found_without_a_lookup_chunked_or_not():
    keys = pa.array(["P1", "P2", "P3"])
    assert rows_in(pa.chunked_array([pa.array(["P1"]), pa.array(["P2", "P3"])]), keys).tolist() == [0, 1, 2]
    assert rows_in(pa.array(["P3", "P1", "P2"]), keys).tolist() == [2, 0, 1]
