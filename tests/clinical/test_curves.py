"""Expected recovery curves: sane by construction, and every parameter sourced."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from dashboard.clinical.curves import (
    PUBLISHED_REFERENCE,
    ReferenceError,
    curve_table,
    expected_band,
    load_reference,
)

REFERENCE = load_reference()
DAYS = np.arange(0, 1096)
FACTOR_CASES = [{}, {"diabetes": True}, {"age": 75.0}, {"deficit_days": 120.0},
                {"diabetes": True, "age": 80.0, "deficit_days": 400.0}]


@pytest.mark.parametrize("baseline", [0.0, 1.0, 2.0, 3.0, 11 / 3, 4.0, 13 / 3, 14 / 3])
@pytest.mark.parametrize("factors", FACTOR_CASES)
def test_curves_are_bounded_start_at_baseline_rise_and_hold_the_expected_value(baseline, factors):
    curve = curve_table(baseline, factors, REFERENCE, DAYS)
    for column in ("expected_mrc", "expected_low", "expected_high"):
        values = curve[column].to_numpy()
        assert values[0] == pytest.approx(baseline)
        assert ((values >= 0) & (values <= 5)).all()
        assert (np.diff(values) >= -1e-12).all(), f"{column} falls"
    assert (curve["expected_low"] <= curve["expected_mrc"] + 1e-12).all()
    assert (curve["expected_mrc"] <= curve["expected_high"] + 1e-12).all()


def test_band_opens_from_the_baseline_then_narrows_as_fast_recoverers_reach_normal():
    curve = curve_table(2.0, {}, REFERENCE, np.array([0, 14, 42, 90, 365, 730]))
    width = (curve["expected_high"] - curve["expected_low"]).to_numpy()
    assert width[0] == 0 and 0 < width[1] < width[2] < width[3]
    # grades 1-4+: no recovery at all stays inside the expected range (13-31% of published patients)
    mild = curve_table(4.0, {}, REFERENCE, np.array([42, 365]))
    np.testing.assert_allclose(mild["expected_low"], 4.0)
    assert mild["expected_high"].iloc[1] == pytest.approx(5.0)
    # MRC 0: everyone regains something (Liu 2013), so the lower edge rises and the range narrows late
    complete = curve_table(0.0, {}, REFERENCE, np.array([90, 365, 730]))
    complete_width = (complete["expected_high"] - complete["expected_low"]).to_numpy()
    assert complete["expected_low"].is_monotonic_increasing and complete_width[2] < complete_width[1]


def test_severity_and_modifiers_slow_recovery():
    at_90_days = {b: curve_table(b, {}, REFERENCE, np.array([90]))["expected_mrc"].iloc[0] for b in (1.0, 3.0, 4.0)}
    recovered_share = {b: (v - b) / (5 - b) for b, v in at_90_days.items()}
    assert recovered_share[1.0] < recovered_share[3.0] < recovered_share[4.0]
    plain = curve_table(3.0, {}, REFERENCE, np.array([180]))["expected_mrc"].iloc[0]
    for factors in FACTOR_CASES[1:]:
        assert curve_table(3.0, factors, REFERENCE, np.array([180]))["expected_mrc"].iloc[0] < plain


def test_normal_baseline_has_no_curve_and_unknown_factors_change_nothing():
    factors = pd.DataFrame({"deficit_days": [None, None], "diabetes": [None, None], "age": [None, None]})
    band = expected_band([5.0, 3.0], [100, 100], factors, REFERENCE)
    assert pd.isna(band.loc[0, "curve_group"]) and band.loc[1, "curve_group"] == "moderate"
    assert np.isnan(band.loc[0, "expected_mrc"])
    assert band.loc[1, "expected_mrc"] == curve_table(3.0, {}, REFERENCE, np.array([100]))["expected_mrc"].iloc[0]


def test_every_group_and_modifier_cites_a_listed_source():
    assert set(REFERENCE.groups["id"]) == {"complete", "severe", "moderate", "mild"}
    for cited in [*REFERENCE.groups["sources"], *REFERENCE.modifiers["sources"]]:
        assert cited and all(source["key"] in REFERENCE.sources and source["figure"] for source in cited)
    for source in REFERENCE.sources.values():
        assert source["citation"] and source["url"]


def test_a_bad_reference_file_names_the_group_and_field(tmp_path):
    raw = yaml.safe_load(PUBLISHED_REFERENCE.read_text())
    raw["groups"][1]["rmax"]["p10"] = 0.9
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ReferenceError, match="group 'severe': rmax must satisfy p10 <= median <= p90"):
        load_reference(bad)
    raw = yaml.safe_load(PUBLISHED_REFERENCE.read_text())
    raw["groups"][0]["sources"] = []
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ReferenceError, match="group 'complete': every parameter needs a source"):
        load_reference(bad)


def test_a_band_over_many_rows_is_each_row_on_its_own():
    factors = pd.DataFrame({"deficit_days": [None, 400.0, 10.0, None], "diabetes": [True, None, False, None],
                            "age": [80.0, 50.0, None, None]})
    baseline, days = [3.0, 1.0, 5.0, 4.0], [90, 365, 30, 0]
    band = expected_band(baseline, days, factors, REFERENCE)
    assert band["curve_group"].fillna("none").tolist() == ["moderate", "severe", "none", "mild"]
    for row in range(len(baseline)):
        alone = expected_band(baseline[row:row + 1], days[row:row + 1], factors.iloc[row:row + 1], REFERENCE)
        np.testing.assert_array_equal(band.iloc[row, 1:].to_numpy(dtype=float), alone.iloc[0, 1:].to_numpy(dtype=float))


def test_every_parameter_of_the_published_file_cites_its_source_or_says_judgement():
    from dashboard.clinical.curves import PARAMETERS, parameter_basis
    for group in REFERENCE.groups.itertuples():
        for parameter in PARAMETERS:
            basis = parameter_basis(group.basis, parameter)
            assert basis, f"{group.id}: {parameter} has no basis"
            assert "judgement" in basis or any(key in basis for key in REFERENCE.sources), (group.id, parameter)
        assert group.evidence and group.confidence in ("low", "medium", "high")
    cited = {source["key"] for sources in REFERENCE.groups["sources"] for source in sources}
    assert "overdevest-2014" not in cited  # no recovery figure from it was retrieved: supports no parameter


def test_a_basis_naming_no_parameter_is_refused(tmp_path):
    raw = yaml.safe_load(PUBLISHED_REFERENCE.read_text())
    raw["groups"][2]["basis"]["rmax.p50"] = "somewhere"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(raw))
    with pytest.raises(ReferenceError, match="group 'moderate': basis: 'rmax.p50' is not a parameter"):
        load_reference(bad)


def test_the_band_is_called_an_expected_range_not_a_percentile():
    assert REFERENCE.band_label == "expected range (expert estimate from published series, mostly decompression)"
    assert "decompression" in REFERENCE.band["evidence"]
    from dashboard.clinical.curves import band_label
    assert band_label({"low_percentile": 10, "high_percentile": 90}, "calibrated").startswith("10th–90th percentile")
    assert "percentile" not in band_label({}, "published")


@pytest.mark.parametrize(("expected", "low", "high", "grade", "shown"), [
    (4.2, 3.6, 4.8, "4+", "4- to 5-"),
    (3.0, 3.0, 3.1, "3", "3"),               # edges on one step read as that step
    (1.06, 1.0, 2.4, "1", "1 to 2"),
    (4.95, 4.0, 5.0, "5", "4 to 5"),
    (np.nan, np.nan, np.nan, "—", "—"),      # no curve (normal or missing baseline)
])
def test_the_band_is_shown_in_mrc_steps(expected, low, high, grade, shown):
    from dashboard.clinical.patient_view import band_in_steps
    assert band_in_steps([expected], [low], [high]) == ([grade], [shown])


def test_patient_view_gives_each_muscle_its_range_in_steps_with_confidence_and_evidence():
    from dashboard.clinical.assessment import assess
    from dashboard.clinical.patient_view import patient_view
    from tests.builders import exams, make_records, patient, surgery
    records = make_records([patient("P1", birth_year="1980")], [surgery("P1")],
                           exams("P1", "ankle_dorsiflexion", "R", {-3: "2", 42: "3"})
                           + exams("P1", "ankle_dorsiflexion", "L", {-3: "5", 42: "5"}))
    view = patient_view(assess(records, as_of=records.strength["exam_date"].max().date()), "P1")
    assert view.band_label == REFERENCE.band_label
    weak = view.muscles[view.muscles["side"] == "R"].iloc[0]
    assert weak["curve_group"] == "severe" and weak["band_confidence"] == "low"
    assert "PLIF" in weak["band_evidence"]
    assert " to " in weak["expected_range"] and weak["expected_range"].startswith("2")
    normal = view.muscles[view.muscles["side"] == "L"].iloc[0]
    assert normal["expected_range"] == "—" and normal["band_confidence"] is None
