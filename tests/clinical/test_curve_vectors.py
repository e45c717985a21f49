"""Reference vectors: the published figures the expected curves claim to reproduce (tests/vectors/curves.csv).

Each row names its source, population and the literal published figure, the check the model must pass and
its tolerance. Rows marked `reproduced: no` are known gaps, documented in docs/clinical-basis.md: they are
strict expected failures, so a change that closes a gap (or a figure that stops being a gap) is noticed.

Share checks read the band as if it were quantiles (lower edge = 10th, median, upper edge = 90th, linear in
between; 5% beyond each edge), the reading of the clinical review; no source reports percentiles.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dashboard.clinical.curves import curve_table, load_reference

REFERENCE = load_reference()
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "curves.csv"
ROWS = list(csv.DictReader(VECTORS.open(encoding="utf-8")))
NOISE = REFERENCE.status["measurement_noise"]
TOLERANCE = REFERENCE.status["behind_tolerance"]


def _edges(baseline: float, day: float) -> tuple[float, float, float]:
    """Lower edge, median and upper edge of the band for a patient without modifiers."""
    row = curve_table(baseline, {}, REFERENCE, np.array([day])).iloc[0]
    return float(row["expected_low"]), float(row["expected_mrc"]), float(row["expected_high"])


def _mix(text: str) -> list[tuple[float, float]]:
    """'0:18;1:34' -> [(baseline, weight)]; a plain '1;2;3' weighs each baseline 1."""
    out = []
    for part in text.split(";"):
        baseline, _, weight = part.partition(":")
        out.append((float(baseline), float(weight or 1)))
    return out


def _share_at_least(grade: float, baseline: float, day: float) -> float:
    low, median, high = _edges(baseline, day)
    if grade <= baseline + 1e-9:
        return 1.0
    if grade <= low:
        return 0.95
    if grade <= median:
        return 1 - (0.1 + 0.4 * (grade - low) / (median - low))
    if grade <= high:
        return 1 - (0.5 + 0.4 * (grade - median) / (high - median))
    return 0.05


def model_value(row: dict) -> float:
    """What the model gives for the row's check (for the limit checks: the worst baseline's margin)."""
    mix, day = _mix(row["baselines"]), float(row["day"])
    weights = np.array([w for _, w in mix])
    check = row["check"]
    if check == "mean_median_grade":
        return float(np.average([_edges(b, day)[1] for b, _ in mix], weights=weights))
    if check == "median_share_of_gain":
        (baseline, _), = mix
        return (_edges(baseline, day)[1] - baseline) / (_edges(baseline, 3650)[1] - baseline)
    if check == "lower_edge_within_one_step":
        return max(_edges(b, day)[0] - b for b, _ in mix)  # how far the lower edge rose above the baseline
    if check == "still_zero_is_behind":
        return min(_edges(b, day)[0] - TOLERANCE for b, _ in mix)  # above 0: a 0 is below edge - tolerance
    if check == "upper_edge_near_normal":
        return min(_edges(b, day)[2] for b, _ in mix)
    if check == "share_at_least_4":
        return float(np.average([_share_at_least(4.0, b, day) for b, _ in mix], weights=weights))
    if check == "share_improved":
        return float(np.average([_share_at_least(b + 1, b, day) for b, _ in mix], weights=weights))
    raise AssertionError(f"unknown check {check!r}")


def _passes(row: dict, value: float) -> bool:
    published, tolerance = float(row["published"]), float(row["tolerance"])
    check = row["check"]
    if check in ("mean_median_grade", "median_share_of_gain", "share_at_least_4", "share_improved"):
        return abs(value - published) <= tolerance
    if check == "lower_edge_within_one_step":
        assert published > 0.10, "the check applies where more than 10% do not improve"
        return value <= tolerance
    if check == "still_zero_is_behind":
        return value > 0
    if check == "upper_edge_near_normal":
        assert published >= 0.10, "the check applies where at least 10% recover fully"
        return value >= 5 - tolerance
    raise AssertionError(f"unknown check {check!r}")


def _param(row: dict):
    marks = [] if row["reproduced"] == "yes" else [pytest.mark.xfail(strict=True, reason=row["note"])]
    return pytest.param(row, id=row["id"], marks=marks)


@pytest.mark.parametrize("row", [_param(row) for row in ROWS])
def test_curves_reproduce_the_published_figure(row):
    value = model_value(row)
    assert _passes(row, value), (f"{row['id']} ({row['source']}, {row['population']}): published "
                                 f"{row['published_figure']}; model {value:.3f} fails {row['check']} "
                                 f"within {row['tolerance']}")


def test_every_vector_cites_a_source_of_the_reference_and_states_its_population():
    assert len(ROWS) >= 10
    for row in ROWS:
        assert row["source"] in REFERENCE.sources, row["id"]
        assert row["population"] and row["published_figure"] and row["note"], row["id"]
        assert row["reproduced"] in ("yes", "no")
    assert NOISE == TOLERANCE  # one MRC step is noise, for behind as for change
