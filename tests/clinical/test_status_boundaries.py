"""The status thresholds at their edges: each side of every threshold, one epsilon apart.

`classify` is called on hand-set rows (baseline, latest, best earlier grade, band's lower edge), so the
edges are exact; the end-to-end cases go through `assess` with the published reference.
"""

from __future__ import annotations

import numpy as np
import pytest

from dashboard.clinical.assessment import assess
from dashboard.clinical.curves import curve_table, load_reference
from dashboard.clinical.mrc import MRC_TOKENS
from dashboard.clinical.status import classify
from tests.builders import exams, make_records, patient, surgery

REFERENCE = load_reference()
T = REFERENCE.status
EPS = 1e-9
NAN = np.nan


def status(baseline: float, latest: float, best: float = NAN, low: float = NAN) -> str:
    rows = {"baseline_mrc": [baseline], "latest_mrc": [latest], "best_prior_mrc": [best], "expected_low": [low]}
    return str(classify(rows, T)[0])


def test_behind_tolerance_is_one_step_the_same_as_measurement_noise():
    assert T["behind_tolerance"] == T["measurement_noise"] == pytest.approx(0.34)


@pytest.mark.parametrize(("offset", "expected"), [(-EPS, "behind"), (0.0, "on_track"), (EPS, "on_track")])
def test_behind_starts_strictly_below_lower_edge_minus_tolerance(offset, expected):
    low = 3.5
    assert status(3.0, low - T["behind_tolerance"] + offset, low=low) == expected


@pytest.mark.parametrize(("offset", "expected"), [(-EPS, "deteriorating"), (0.0, "deteriorating"),
                                                  (EPS, "on_track")])
def test_deterioration_is_a_whole_grade_below_the_best_earlier_grade(offset, expected):
    best = 13 / 3  # 4+
    assert status(3.0, best - T["deterioration_drop"] + offset, best=best) == expected


@pytest.mark.parametrize(("best", "latest", "expected"), [
    ("5-", "4-", "deteriorating"),   # 14/3 - 11/3 is 1.0000000000000004: a whole grade, counts
    ("4+", "4-", "on_track"),        # two steps: not a whole grade
    ("5", "4", "deteriorating"),
])
def test_deterioration_on_the_written_grades(best, latest, expected):
    assert status(3.0, MRC_TOKENS[latest], best=MRC_TOKENS[best]) == expected


@pytest.mark.parametrize(("offset", "expected"), [(-EPS, "new_deficit"), (0.0, "new_deficit"), (EPS, "on_track")])
def test_abnormal_baseline_new_deficit_at_a_whole_grade_below_it(offset, expected):
    assert status(4.0, 4.0 - T["marked_drop_from_baseline"] + offset) == expected


@pytest.mark.parametrize(("offset", "expected"), [(-EPS, "new_deficit"), (0.0, "no_deficit"), (EPS, "no_deficit")])
def test_normal_baseline_new_deficit_beyond_one_step(offset, expected):
    assert status(5.0, T["normal_grade"] - T["measurement_noise"] + offset) == expected


def test_normal_baseline_on_written_grades():
    assert status(5.0, MRC_TOKENS["5-"]) == "no_deficit"
    assert status(5.0, MRC_TOKENS["4+"]) == "new_deficit"


@pytest.mark.parametrize(("offset", "expected"), [(-EPS, "on_track"), (0.0, "recovered"), (EPS, "recovered")])
def test_recovered_from_within_one_step_of_normal(offset, expected):
    assert status(3.0, T["normal_grade"] - T["measurement_noise"] + offset, low=3.0) == expected


def test_priority_deterioration_before_behind_and_new_deficit_before_deterioration():
    # below the band and a grade under the best: deteriorating wins
    assert status(3.0, 3.0, best=4.0, low=4.0) == "deteriorating"
    # a grade under the baseline and under the best: new_deficit wins
    assert status(4.0, 3.0, best=4.0, low=4.0) == "new_deficit"


# ------------------------------------------------------------------ end to end with the published reference
DF = "ankle_dorsiflexion"


OP = -100  # the operation 100 days before the builders' standard day, so a year of follow-up is in the past


def assessed(grades: dict[int, str]) -> str:
    """Status of one muscle graded {day since the operation: grade}, assessed on its last exam day.

    Born 1980: no modifier applies (age under 60, no diabetes, onset unknown)."""
    records = make_records([patient("P1", birth_year="1980")], [surgery("P1", when=OP)],
                           exams("P1", DF, "R", {OP + d: g for d, g in grades.items()}))
    return str(assess(records, as_of=records.strength["exam_date"].max().date()).muscles.iloc[0]["status"])


def test_a_one_step_dip_early_after_surgery_is_not_behind():
    assert assessed({-3: "4", 2: "4-"}) == "on_track"   # was `behind` with the 0.17 tolerance and v1 bands
    assert assessed({-3: "4+", 2: "4-"}) == "behind"    # two steps below the baseline
    assert assessed({-3: "4", 2: "3"}) == "new_deficit"  # a whole grade below it


@pytest.mark.parametrize("baseline", ["1", "2", "3", "4-", "4", "4+"])
def test_no_recovery_at_one_year_is_inside_the_expected_range(baseline):
    assert assessed({-3: baseline, 42: baseline, 365: baseline}) == "on_track"


def test_a_complete_deficit_falls_behind_when_the_lower_edge_passes_the_tolerance():
    days = np.arange(0, 366)
    low = curve_table(0.0, {}, REFERENCE, days)["expected_low"].to_numpy()
    first = int(days[np.argmax(low - T["behind_tolerance"] > 0)])  # about 100 days with published-v2
    assert 60 < first < 180
    assert assessed({-3: "0", first - 1: "0"}) == "on_track"
    assert assessed({-3: "0", first: "0"}) == "behind"
    assert assessed({-3: "0", first: "1"}) == "on_track"
