"""Trajectory statuses on hand-built patients with known answers; `--as-of` hides later data."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from dashboard.clinical.assessment import assess
from tests.builders import SURGERY, day, exams, make_records, patient, surgery

AS_OF = date(2026, 11, 1)
DF = "ankle_dorsiflexion"


def status_of(grades: dict[int, str], as_of: date = AS_OF, **patient_fields: str) -> dict:
    records = make_records([patient("P1", **patient_fields)], [surgery("P1")], exams("P1", DF, "R", grades))
    row = assess(records, as_of=as_of).muscles.iloc[0]
    return row.to_dict()


@pytest.mark.parametrize(("grades", "expected"), [
    ({-3: "5", 14: "5", 90: "5"}, "no_deficit"),
    ({-3: "5", 14: "5-", 90: "5"}, "no_deficit"),           # one ± step is measurement noise
    ({-3: "3", 42: "4", 180: "5"}, "recovered"),
    ({-3: "3", 42: "4-", 90: "4+"}, "on_track"),
    ({-3: "3", 42: "3", 180: "3"}, "on_track"),                 # no recovery is inside the expected range
    ({-3: "4-", 42: "3", 180: "3"}, "behind"),                  # weaker than before by 2 steps, not a grade
    ({-3: "0", 42: "0", 180: "0"}, "behind"),                   # MRC 0: everyone regains something (Liu 2013)
    ({-3: "3", 42: "4+", 120: "3"}, "deteriorating"),
    ({-3: "5", 2: "3"}, "new_deficit"),
    ({-3: "4", 2: "2", 30: "3"}, "new_deficit"),            # markedly weaker than an abnormal baseline
    ({14: "3", 42: "4"}, "no_baseline"),
    ({2: "4", 30: "2"}, "deteriorating"),                   # no baseline never hides a fall (assessment.md)
    ({-3: "3"}, "insufficient_data"),
])
def test_each_status_on_a_hand_built_patient(grades, expected):
    assert status_of(grades)["status"] == expected


def test_expected_values_come_from_the_curve_at_the_latest_exam():
    row = status_of({-3: "3", 42: "4-", 90: "4+"})
    assert row["latest_day"] == 90 and row["curve_group"] == "moderate"
    assert row["expected_low"] < row["expected_mrc"] < row["expected_high"]
    assert row["expected_low"] <= row["latest_mrc"] <= row["expected_high"]


def test_diabetes_lowers_the_band():
    plain = status_of({-3: "3", 42: "4-", 90: "4+"})
    diabetic = status_of({-3: "3", 42: "4-", 90: "4+"}, diabetes="yes")
    assert diabetic["expected_mrc"] < plain["expected_mrc"]


def test_as_of_hides_everything_recorded_later():
    grades = {-3: "3", 42: "4+", 120: "3"}
    assert status_of(grades)["status"] == "deteriorating"
    before = status_of(grades, as_of=SURGERY.replace(month=3))  # day 50: the fall was not known yet
    assert before["status"] == "on_track" and before["latest_date"].date().isoformat() == day(42)
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", DF, "R", grades))
    pre_op = assess(records, as_of=SURGERY.replace(day=9))  # not operated yet: not in follow-up
    assert pre_op.muscles.empty and pd.isna(pre_op.patients.loc[0, "surgery_date"])


def test_index_operation_is_the_latest_one_and_baseline_the_last_exam_before_it():
    records = make_records(
        [patient("P1")],
        [surgery("P1", when=0), surgery("P1", when=200, revision="yes")],
        exams("P1", DF, "R", {-3: "3", 42: "5", 190: "2", 230: "3"}),
    )
    result = assess(records, as_of=AS_OF)
    row = result.muscles.iloc[0]
    assert result.patients.loc[0, "surgery_date"].date().isoformat() == day(200)
    assert row["baseline_mrc"] == 2 and row["latest_mrc"] == 3 and row["latest_day"] == 30


def test_best_earlier_grade_is_the_highest_before_the_latest_exam_and_its_latest_date_on_a_tie():
    row = status_of({-3: "3", 0: "2", 14: "4", 42: "4", 90: "3"})
    assert (row["baseline_mrc"], row["baseline_date"].date().isoformat()) == (3, day(-3))
    assert (row["first_post_mrc"], row["first_post_date"].date().isoformat()) == (2, day(0))  # the day of the op
    assert (row["best_prior_mrc"], row["best_prior_date"].date().isoformat()) == (4, day(42))
    assert (row["latest_mrc"], row["latest_day"]) == (3, 90)


def test_rows_come_by_patient_in_order_of_first_exam_then_muscle_then_side():
    records = make_records(
        [patient("A"), patient("B"), patient("C")],
        [surgery("A"), surgery("B"), surgery("C", when=200)],  # C's operation is after the assessment day
        exams("B", "knee_extension", "R", {-3: "5", 30: "5"}) + exams("B", "hip_flexion", "R", {-3: "5", 30: "5"})
        + exams("C", DF, "R", {-3: "5"}) + exams("A", DF, "R", {-3: "3"}) + exams("B", "hip_flexion", "L", {-3: "5"}),
    )
    muscles = assess(records, as_of=SURGERY.replace(month=6)).muscles
    assert muscles[["patient_id", "muscle", "side"]].values.tolist() == [
        ["B", "hip_flexion", "L"], ["B", "hip_flexion", "R"], ["B", "knee_extension", "R"], ["A", DF, "R"]]
