"""Codes handed from validation to the assessment: used for that very column only, same answers."""

from __future__ import annotations

import gc
import pickle
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from dashboard.core import joins
from dashboard.core.assessment import assess
from dashboard.core.joins import encode, remember_codes, rows_in
from dashboard.core.records import Records, validate

DEMO = Path(__file__).resolve().parents[1] / "data" / "demo"


def test_remembered_codes_serve_that_array_only_and_go_with_it():
    column = pd.Series(["P2", "P1", "P2", None], dtype="string")
    remember_codes(column, np.array([1, 0, 1, -1]), pa.array(["P1", "P2"]))  # not first-appearance order
    codes, distinct = encode(column)
    assert codes.tolist() == [1, 0, 1, -1] and distinct.to_pylist() == ["P1", "P2"]  # the remembered ones
    assert encode(column, ["P2", "P9", "P1"])[0].tolist() == [0, 2, 0, -1]  # through categories
    assert rows_in(column, pd.Series(["P1", "P3", "P2"], dtype="string")).tolist() == [2, 0, 2, -1]

    same_texts = pd.Series(["P2", "P1", "P2", None], dtype="string")  # other data: worked out afresh
    codes, distinct = encode(same_texts)
    assert codes.tolist() == [0, 1, 0, -1] and distinct.to_pylist() == ["P2", "P1"]

    wrapped_anew = pd.DataFrame({"a": column, "b": same_texts})["a"]  # pandas re-wraps; the Arrow data stays
    assert wrapped_anew.array is not column.array and encode(wrapped_anew)[0].tolist() == [1, 0, 1, -1]

    key = id(joins._data(column))
    held_for = joins._REMEMBERED[key][0]
    del column, wrapped_anew
    gc.collect()
    assert held_for() is None and key not in joins._REMEMBERED  # dropped with the data


def test_assessing_validated_records_gives_what_a_copy_of_them_gives():
    today = date(2026, 11, 20)
    records, report = validate(DEMO, today=today)
    assert report.ok
    copied = Records(**{name: pickle.loads(pickle.dumps(frame)) for name, frame in records.frames().items()},
                     extra_columns=records.extra_columns)  # the same values in new Arrow arrays
    assert joins._remembered(records.strength["patient_id"]) is not None  # validation handed its codes on
    assert joins._remembered(copied.strength["patient_id"]) is None
    handed, afresh = assess(records, as_of=today), assess(copied, as_of=today)
    for name in ("patients", "muscles", "prompts", "visits"):
        pd.testing.assert_frame_equal(getattr(handed, name), getattr(afresh, name), obj=name)
    earlier = date(2026, 3, 1)  # rows after the day are left out: new frames, codes worked out afresh
    for name in ("patients", "muscles", "prompts"):
        pd.testing.assert_frame_equal(getattr(assess(records, as_of=earlier), name),
                                      getattr(assess(copied, as_of=earlier), name), obj=name)


def test_columns_coded_by_the_same_texts_join_by_their_codes_alone():
    patients = pd.Series(["P1", "P2", "P3"], dtype="string")
    visits = pd.Series(["P3", None, "P1", "P3"], dtype="string")
    same = pa.array(["P1", "P2", "P3"])
    remember_codes(patients, np.array([0, 1, 2]), same)
    remember_codes(visits, np.array([2, -1, 0, 2]), same)
    by_codes = rows_in(visits, patients)
    by_text = rows_in(pd.Series(["P3", None, "P1", "P3"], dtype="string"), pd.Series(["P1", "P2", "P3"],
                                                                                       dtype="string"))
    assert by_codes.tolist() == by_text.tolist() == [2, -1, 0, 2]
    assert rows_in(same, patients).tolist() == [0, 1, 2]  # the texts themselves

    taken = joins.take_rows(pd.DataFrame({"patient_id": visits}), np.array([2, -1, 0]))
    assert joins._remembered(taken["patient_id"])[0].tolist() == [0, -1, 2]  # codes go with the rows
    assert rows_in(taken["patient_id"], patients).tolist() == [0, -1, 2]


def test_validation_codes_every_files_patient_id_by_the_patients_file():
    records, report = validate(DEMO, today=date(2026, 11, 20))
    assert report.ok
    patient_codes, patient_texts = joins._remembered(records.patients["patient_id"])
    for frame in (records.surgeries, records.strength, records.visits):
        codes, texts = joins._remembered(frame["patient_id"])
        assert texts is patient_texts
        assert np.array_equal(np.asarray(patient_texts.to_pylist(), dtype=object)[codes],
                              frame["patient_id"].to_numpy(dtype=object))


def test_a_column_in_long_runs_is_coded_as_by_hashing_every_row():
    runs = ["P2"] * 5000 + [None] * 100 + ["P1"] * 3000 + ["P2"] * 10 + [None]
    column = pa.chunked_array([pa.array(runs[:3000], pa.large_string()), pa.array(runs[3000:], pa.large_string())])
    hashed = column.dictionary_encode().combine_chunks()

    codes, distinct = encode(pd.Series(pd.arrays.ArrowStringArray(column)))

    assert joins._in_runs(column)
    assert codes.tolist() == hashed.indices.fill_null(-1).to_numpy().tolist()
    assert distinct.to_pylist() == ["P2", "P1"]
    assert codes[5000] == -1 and codes[-1] == -1


def test_a_column_without_runs_is_hashed_row_by_row():
    assert not joins._in_runs(pa.array(["L", "R"] * 4000))
    assert not joins._in_runs(pa.array(["L"] * 100))  # too short to tell: hashed


def test_a_column_listing_known_values_in_runs_is_coded_by_its_runs():
    patients = pa.array(["P1", "P2", "P3"], pa.large_string())
    grouped = pd.Series(["P1", "P1", "P2", "P3", "P3", "P3"], dtype="str")

    assert joins.codes_by_runs(grouped, patients).tolist() == [0, 0, 1, 2, 2, 2]
    assert joins.codes_by_runs(pd.Series(["P1", "P2", "P1", "P3"], dtype="str"), patients) is None  # P1 twice
    assert joins.codes_by_runs(pd.Series(["P1", None, "P2", "P3"], dtype="str"), patients) is None
    assert joins.codes_by_runs(pd.Series(["P2", "P1", "P3"], dtype="str"), patients) is None  # another order


def test_rows_of_values_in_the_keys_own_order_are_found_without_a_lookup_chunked_or_not():
    keys = pa.array(["P1", "P2", "P3"])
    assert rows_in(pa.chunked_array([pa.array(["P1"]), pa.array(["P2", "P3"])]), keys).tolist() == [0, 1, 2]
    assert rows_in(pa.array(["P3", "P1", "P2"]), keys).tolist() == [2, 0, 1]
