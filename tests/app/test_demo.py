"""The synthetic demo cohort: deterministic, valid, realistic, and its scenarios read as intended."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.clinical.assessment import assess
from dashboard.clinical.mrc import MUSCLE_ROOTS
from dashboard.clinical.records.validate import validate
from dashboard.demo import (
    DEFAULT_ANCHOR,
    DEFICIT_MUSCLES,
    RECORD_FILES,
    SCENARIO_CATEGORIES,
    SCENARIO_PROPORTIONS,
    SCENARIO_TIMING_DEPENDENT,
    generate_cohort,
    write_cohort,
)

SHIPPED = Path(__file__).resolve().parents[2] / "data" / "demo"
ANCHOR = pd.Timestamp(DEFAULT_ANCHOR)
CLINICIAN_GRADES = {"0", "1", "2", "3", "4-", "4", "4+", "5-", "5"}
RED_FLAG_FIELDS = ("saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever", "wound_drainage",
                   "calf_swelling")


def digest(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def cohort() -> dict[str, pd.DataFrame]:
    return generate_cohort(2000, seed=11)


@pytest.fixture(scope="module")
def visits_by_day(cohort) -> pd.DataFrame:
    """Visits with the day since the index operation and the scenario."""
    index = cohort["surgeries"].assign(surgery_date=lambda f: pd.to_datetime(f["surgery_date"]))
    index = index.sort_values("surgery_date").groupby("patient_id").tail(1)[["patient_id", "surgery_date"]]
    visits = cohort["visits"].merge(index, on="patient_id").merge(cohort["scenarios"], on="patient_id")
    return visits.assign(day=(pd.to_datetime(visits["visit_date"]) - visits["surgery_date"]).dt.days)


@pytest.fixture(scope="module")
def shipped_assessment():
    records, report = validate(SHIPPED, today=DEFAULT_ANCHOR)
    assert report.ok, report.error_lines()[:10]
    return assess(records, as_of=DEFAULT_ANCHOR)


# ------------------------------------------------------------------------------------- determinism, files
def test_same_seed_gives_identical_files_and_another_seed_does_not(tmp_path):
    first, second = write_cohort(tmp_path / "a", 300, seed=5), write_cohort(tmp_path / "b", 300, seed=5)
    other = write_cohort(tmp_path / "c", 300, seed=6)
    assert digest(first) == digest(second)
    for name in RECORD_FILES:
        assert digest(first)[name] != digest(other)[name]
    assert {*RECORD_FILES, "scenarios.csv", "README.md"} == set(digest(first))


def test_shipped_demo_is_what_the_generator_writes(tmp_path):
    assert digest(write_cohort(tmp_path, 200, seed=7)) == digest(SHIPPED)


def test_shipped_demo_validates_without_errors_or_warnings():
    records, report = validate(SHIPPED, today=DEFAULT_ANCHOR)
    assert report.ok and report.warnings.empty, report.error_lines() + report.warning_lines()
    assert len(records.patients) == 200
    readme = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert "synthetic" in readme and "--seed 7" in readme
    assert all(name in readme for name in SCENARIO_PROPORTIONS)


def test_frames_hold_the_text_written_to_the_files(tmp_path):
    write_cohort(tmp_path, 120, seed=3)
    frames = generate_cohort(120, seed=3)
    for name, frame in frames.items():
        written = pd.read_csv(tmp_path / f"{name}.csv", dtype=str, keep_default_na=False, na_values=[""])
        pd.testing.assert_frame_equal(frame.astype(object).where(frame.notna(), None),
                                      written.astype(object).where(written.notna(), None), check_dtype=False)


# ------------------------------------------------------------------------------------------------ scenarios
def test_each_scenario_in_its_proportion(cohort):
    shares = cohort["scenarios"]["scenario"].value_counts(normalize=True)
    for scenario, share in SCENARIO_PROPORTIONS.items():
        assert shares[scenario] == pytest.approx(share, abs=0.005), scenario
    assert sum(SCENARIO_PROPORTIONS.values()) == pytest.approx(1.0)
    small = generate_cohort(200, seed=7)["scenarios"]["scenario"]
    assert set(small) == set(SCENARIO_PROPORTIONS)


def test_expected_categories_follow_the_scenario(cohort):
    table = cohort["scenarios"]
    # A new deficit after instrumentation is also a hematoma emergency in the first 14 days, and an
    # unexplained deficit (MRI) later while it has not improved: its categories depend on the exam days.
    varies = (table["scenario"] == "new_deficit_instrumented").to_numpy()
    assert set(table.loc[varies, "expected_rule_categories"]) <= {"hardware", "red_flag;hardware",
                                                                  "compression;hardware"}
    table = table[~varies]
    expected = table["scenario"].map(lambda s: ";".join(SCENARIO_CATEGORIES[s]) or np.nan)
    pd.testing.assert_series_equal(table["expected_rule_categories"], expected, check_names=False,
                                   check_dtype=False)


def test_shipped_statuses_and_prompts_match_the_assessment(shipped_assessment):
    """The contract with status.py and the checklist: each scenario reads as intended as of the anchor."""
    scenarios = pd.read_csv(SHIPPED / "scenarios.csv", dtype=str, keep_default_na=False)
    muscles = shipped_assessment.muscles
    merged = scenarios.merge(muscles, left_on=["patient_id", "affected_muscle", "affected_side"],
                             right_on=["patient_id", "muscle", "side"], how="left")
    wrong = merged[merged["status"] != merged["expected_status"]]
    assert wrong.empty, wrong[["patient_id", "scenario", "expected_status", "status"]].to_string()

    got = shipped_assessment.prompts.groupby("patient_id")["category"].agg(set)
    merged["got"] = merged["patient_id"].map(got).map(lambda c: c if isinstance(c, set) else set())
    expected = merged["expected_rule_categories"].map(lambda c: set(filter(None, c.split(";"))))
    allowed = [e | SCENARIO_TIMING_DEPENDENT.get(s, frozenset())
               for e, s in zip(expected, merged["scenario"], strict=True)]
    missing = [not e <= g for e, g in zip(expected, merged["got"], strict=True)]
    unexpected = [not g <= a for g, a in zip(merged["got"], allowed, strict=True)]
    wrong = merged[pd.Series(missing, index=merged.index) | pd.Series(unexpected, index=merged.index)]
    assert wrong.empty, wrong[["patient_id", "scenario", "expected_rule_categories", "got"]].to_string()


def test_only_the_affected_muscle_deviates(shipped_assessment):
    scenarios = pd.read_csv(SHIPPED / "scenarios.csv", dtype=str, keep_default_na=False)
    muscles = shipped_assessment.muscles.merge(scenarios, on="patient_id")
    others = muscles[(muscles["muscle"] != muscles["affected_muscle"]) | (muscles["side"] != muscles["affected_side"])]
    allowed = {"no_deficit", "on_track", "recovered", "no_baseline"}
    assert set(others["status"]) <= allowed


def test_red_flag_findings_only_in_their_scenarios(visits_by_day):
    post = visits_by_day[visits_by_day["day"] >= 0]
    for field in RED_FLAG_FIELDS:
        assert set(post.loc[post[field] == "yes", "scenario"]) <= {"cauda_equina", "wound_infection",
                                                                   "calf_swelling"}, field
    radicular = set(post.loc[post["radicular_pain"] == "yes", "scenario"])
    assert radicular == {"recurrent_radicular", "adjacent_segment"}
    radiograph = post[["screw_lucency", "implant_migration", "rod_fracture"]].eq("yes").any(axis=1)
    assert set(post.loc[radiograph, "scenario"]) == {"late_hardware"}
    assert (post.loc[radiograph, "day"] >= 180).all()


def test_wound_infection_crp_rises_again_after_day_7(visits_by_day):
    wound = visits_by_day[visits_by_day["scenario"] == "wound_infection"].assign(
        crp=lambda f: pd.to_numeric(f["crp_mg_l"]))
    for _, visits in wound.groupby("patient_id"):
        early = visits[(visits["day"] >= 3) & (visits["day"] <= 7)]["crp"].dropna()
        late = visits[(visits["day"] > 7) & (visits["fever"] == "yes")]
        assert len(late) == 1 and late["wound_drainage"].eq("yes").all()
        assert late["crp"].iloc[0] >= early.min() + 30
        assert late["day"].iloc[0] <= 28


def test_normal_crp_peaks_early_and_falls(visits_by_day):
    normal = visits_by_day[(visits_by_day["scenario"] == "normal_recovery") & visits_by_day["crp_mg_l"].notna()]
    assert not normal.empty and (normal["day"] <= 7).all()
    crp = pd.to_numeric(normal["crp_mg_l"])
    by_day = crp.groupby(normal["day"].to_numpy()).mean()
    assert by_day.idxmax() == 3 and by_day[5] > by_day[7]


def test_red_flag_surgeries_are_recent(cohort):
    surgeries = cohort["surgeries"].assign(surgery_date=lambda f: pd.to_datetime(f["surgery_date"]))
    index = surgeries.sort_values("surgery_date").groupby("patient_id").tail(1).merge(cohort["scenarios"])
    days = (ANCHOR - index["surgery_date"]).dt.days
    acute = index["scenario"] == "acute_progressive"
    assert days[acute].between(3, 5).all() and index.loc[acute, "instrumented"].eq("no").all()
    assert days[index["scenario"] == "wound_infection"].max() <= 42
    assert days[index["scenario"] == "cauda_equina"].max() <= 10
    instrumented = index["scenario"].isin(["new_deficit_instrumented", "late_hardware", "adjacent_segment"])
    assert index.loc[instrumented, "instrumented"].eq("yes").all()


# --------------------------------------------------------------------------------------------- the cohort
def test_no_date_after_the_anchor(cohort):
    for name, column in (("surgeries", "surgery_date"), ("surgeries", "deficit_onset_date"),
                         ("strength", "exam_date"), ("visits", "visit_date")):
        assert pd.to_datetime(cohort[name][column]).max() <= ANCHOR, column


def test_every_exam_grades_all_ten_muscle_sides_in_clinician_grades(cohort):
    strength = cohort["strength"]
    assert strength.groupby(["patient_id", "exam_date"]).size().eq(10).all()
    assert set(strength["mrc"]) <= CLINICIAN_GRADES and {"4-", "4+", "5-"} <= set(strength["mrc"])


def test_preop_deficits_are_l4_l5_s1_on_one_side(cohort):
    strength = cohort["strength"]
    surgeries = cohort["surgeries"].assign(surgery_date=lambda f: pd.to_datetime(f["surgery_date"]))
    index = surgeries.sort_values("surgery_date").groupby("patient_id").tail(1)[["patient_id", "surgery_date"]]
    exams = strength.merge(index, on="patient_id")
    pre = exams[pd.to_datetime(exams["exam_date"]) < exams["surgery_date"]]
    weak = pre[pre["mrc"] != "5"]
    assert set(weak["muscle"]) <= set(DEFICIT_MUSCLES)
    assert weak.groupby("patient_id")["side"].nunique().eq(1).all()
    roots = {MUSCLE_ROOTS[m] for m in DEFICIT_MUSCLES}
    assert roots == {"L4", "L5", "S1"}
    # Every patient but the no_preop_exam ones has exactly one pre-operative exam.
    per_patient = pre.groupby("patient_id")["exam_date"].nunique()
    no_preop = set(cohort["scenarios"].query("scenario == 'no_preop_exam'")["patient_id"])
    assert set(per_patient.index) == set(cohort["patients"]["patient_id"]) - no_preop
    assert per_patient.eq(1).all()


def test_patients_look_like_a_spine_clinic(cohort):
    patients = cohort["patients"]
    ages = DEFAULT_ANCHOR.year - patients["birth_year"].astype(int)
    assert ages.between(35, 85).all() and ages.mean() == pytest.approx(60, abs=2)
    assert patients["patient_id"].iloc[0] == "P00001" and patients["patient_id"].is_unique
    assert patients["mrn"].str.fullmatch(r"MRN\d{7}").all() and patients["mrn"].is_unique
    assert patients["name"].str.fullmatch(r"[A-Z][a-z]+ [A-Z][a-z]+").all()
    assert set(patients["sex"]) == {"F", "M", "X"} and (patients["sex"] == "X").mean() < 0.05
    for column, rate in (("diabetes", 0.18), ("smoker", 0.20)):
        assert (patients[column] == "yes").mean() == pytest.approx(rate, abs=0.03)
        assert 0 < patients[column].isna().mean() < 0.06
    assert patients["surgeon"].nunique() == 4


def test_operations_look_like_a_spine_clinic(cohort):
    surgeries = cohort["surgeries"]
    dates = pd.to_datetime(surgeries["surgery_date"])
    revisions = surgeries[surgeries["revision"] == "yes"]
    assert (revisions["patient_id"].nunique() / 2000) == pytest.approx(0.05, abs=0.015)
    assert surgeries.groupby("patient_id").size().max() == 2
    assert set(surgeries.loc[surgeries.duplicated("patient_id", keep=False), "patient_id"]) == set(
        revisions["patient_id"])
    index = surgeries.assign(date=dates).sort_values("date").groupby("patient_id").tail(1)
    assert (ANCHOR - index["date"]).dt.days.max() <= 913
    share = index["procedure"].value_counts(normalize=True)
    assert share["decompression"] == pytest.approx(0.15, abs=0.03)
    assert (index["instrumented"] == "yes").eq(index["procedure"] != "decompression").all()
    levels = index["levels"].value_counts(normalize=True)
    assert levels["L4-L5"] + levels["L5-S1"] > 0.7 and levels["L3-L4"] < 0.1
    onset = index["deficit_onset_date"].notna()
    assert 0.5 < onset.mean() < 0.9
    assert (pd.to_datetime(index.loc[onset, "deficit_onset_date"]) < index.loc[onset, "date"]).all()


def test_visits_improve_and_notes_sometimes_name_the_patient(visits_by_day, cohort):
    normal = visits_by_day[visits_by_day["scenario"] == "normal_recovery"]
    odi = pd.to_numeric(normal["odi"])
    assert odi[normal["day"] < 0].mean() > odi[normal["day"] > 180].mean() + 15
    leg = pd.to_numeric(normal["leg_pain_nrs"])
    assert leg[normal["day"] < 0].mean() > leg[normal["day"] > 90].mean() + 3
    assert visits_by_day["radicular_pain"].isna().any()
    notes = visits_by_day["notes"].dropna()
    last_names = cohort["patients"]["name"].str.split(" ").str[1]
    named = notes.str.contains("|".join(sorted(set(last_names))))
    assert 0.05 < named.mean() < 0.3
    assert not notes.str.contains(r"[,\"\n]").any()


def test_rejects_an_empty_cohort():
    with pytest.raises(ValueError):
        generate_cohort(0, seed=1)
