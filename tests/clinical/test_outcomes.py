"""Cohort outcomes and prompt performance (issue 21): hand-worked numbers, the screen, the command line."""

from __future__ import annotations

import math
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dashboard.cli import main
from dashboard.clinical import cluster_bootstrap
from dashboard.clinical.assessment import known_on
from dashboard.clinical.curves import load_reference
from dashboard.clinical.decisions import with_decisions
from dashboard.clinical.imaging.checklist import evidence_hash
from dashboard.clinical.outcomes import DAYS_PER_MONTH, Outcomes, cohort_outcomes, recovery_curves, window_of
from dashboard.clinical.prompt_performance import emergency_alarms, first_seen, rule_performance
from dashboard.store import decision_history, import_records, latest_decisions, record_decision
from tests.app_fixtures import app_store, run_app
from tests.builders import day, exams, make_records, patient, surgery, visit, with_columns
from tests.store_fixtures import GOOD_FILES, TODAY, records_from, store_engine, store_url

FIXTURES = (app_store, store_engine, store_url)  # imported for pytest, which finds fixtures by name
AS_OF = date(2026, 11, 1)
Z = 1.959963984540054


# ------------------------------------------------------------------------------------- Kaplan-Meier by hand
#: Six weak muscle-sides (baseline 3): (day, event?) — P1 recovers on day 30, P2 is last seen unrecovered on
#: day 60, P3 recovers on day 90, P4 on day 120, P5 is last seen on day 150, P6 recovers on day 180.
KM_CASES = {"P1": (30, True), "P2": (60, False), "P3": (90, True), "P4": (120, True), "P5": (150, False),
            "P6": (180, True)}


def km_records():
    patients, surgeries, strength = [], [], []
    for pid, (last, event) in KM_CASES.items():
        patients.append(patient(pid, surgeon="Dr A" if pid in ("P1", "P2", "P3") else "Dr B"))
        surgeries.append(surgery(pid))
        grades = {-5: "3", 10: "3"}  # an unrecovered exam first: the event is the first exam that qualifies
        grades[last] = "4" if event else "3"
        if pid == "P1":
            grades[200] = "5"  # after the event: changes nothing for 'recovered', is the event for 'normal'
        strength += exams(pid, "ankle_dorsiflexion", "R", grades)
        strength += exams(pid, "great_toe_extension", "L", {-5: "5", last: "5"})  # not weak: left out
    return make_records(patients, surgeries, strength)


def test_kaplan_meier_matches_the_hand_worked_example() -> None:
    outcomes = cohort_outcomes(km_records(), AS_OF, load_reference())
    assert len(outcomes.sides) == 6
    assert outcomes.left_out["baseline normal or within noise of normal (5-)"] == 6
    curves, milestones = outcomes.recovery("all")
    # S(t): 5/6 after day 30; 5/6 * 3/4 after day 90 (4 at risk: P2 censored on 60); * 2/3 after 120; 0 after 180
    s = {30: 5 / 6, 90: 5 / 6 * 3 / 4, 120: 5 / 6 * 3 / 4 * 2 / 3, 180: 0.0}
    steps = curves.set_index("day")
    for t, survival in s.items():
        assert steps.loc[float(t), "share_recovered"] == pytest.approx(1 - survival)
    assert steps.loc[90.0, "at_risk"] == 4 and steps.loc[120.0, "at_risk"] == 3 and steps.loc[180.0, "at_risk"] == 1
    by_month = milestones.set_index("months")
    # 3 months = 91.3 days: S = 0.625, at risk 3 (P4, P5, P6 still followed and unrecovered)
    assert by_month.loc[3, "share_recovered"] == pytest.approx(0.375)
    assert by_month.loc[3, "at_risk"] == 3 and by_month.loc[3, "recovered_by"] == 2
    assert by_month.loc[6, "share_recovered"] == pytest.approx(1.0)  # 182.6 days: past P6's recovery on day 180
    assert by_month.loc[6, "at_risk"] == 0
    assert by_month.loc[12, "share_recovered"] == pytest.approx(1.0)  # S fell to 0: defined from then on
    # the interval (patient-cluster bootstrap, tested below) holds the estimate at every step and milestone
    assert (curves["low"] <= curves["share_recovered"]).all() and (curves["share_recovered"] <= curves["high"]).all()
    assert (milestones["low"] <= milestones["share_recovered"]).all()
    assert (milestones["share_recovered"] <= milestones["high"]).all()


def test_patients_at_risk_count_each_patient_once_while_one_of_their_muscles_is_at_risk() -> None:
    """Issue 21 asks for patients at risk: P1 has two weak muscle-sides (right recovers on day 30, left is last
    seen unrecovered on day 60), P2 one (recovers on day 90)."""
    strength = (exams("P1", "ankle_dorsiflexion", "R", {-5: "3", 10: "3", 30: "4"})
                + exams("P1", "ankle_dorsiflexion", "L", {-5: "3", 10: "3", 60: "3"})
                + exams("P2", "ankle_dorsiflexion", "R", {-5: "3", 10: "3", 90: "4"}))
    records = make_records([patient("P1"), patient("P2")], [surgery("P1"), surgery("P2")], strength)
    curves, milestones = cohort_outcomes(records, AS_OF, load_reference()).recovery("all")
    steps = curves.set_index("day")
    assert steps.loc[30.0, ["at_risk", "patients_at_risk"]].tolist() == [3, 2]  # three sides of two patients
    assert steps.loc[90.0, ["at_risk", "patients_at_risk"]].tolist() == [1, 1]  # P1's left side censored on 60
    by_month = milestones.set_index("months")
    assert by_month.loc[3, ["muscle_sides", "patients", "at_risk", "patients_at_risk"]].tolist() == [3, 2, 0, 0]


def test_endpoints_and_groups() -> None:
    outcomes = cohort_outcomes(km_records(), AS_OF, load_reference())
    sides = outcomes.sides.set_index("patient_id")
    assert sides.loc["P1", "recovered_day"] == 30 and sides.loc["P1", "normal_day"] == 200
    assert not sides.loc["P2", "normal_event"] and sides.loc["P2", "normal_day"] == 60
    _, milestones = outcomes.recovery("surgeon")
    dr_a = milestones[(milestones["group"] == "Dr A") & (milestones["months"] == 3)].iloc[0]
    # Dr A: P1 recovers on 30, P2 censored on 60, P3 recovers on 90 -> S(91) = 2/3 * 0 ... = 1 - (2/3 * 0)
    assert dr_a["muscle_sides"] == 3
    assert dr_a["share_recovered"] == pytest.approx(1 - (2 / 3) * 0)  # at 90 the one left at risk recovers
    assert set(outcomes.sides["severity"]) == {"moderate"}
    with pytest.raises(ValueError):
        outcomes.recovery("all", "better")


def greenwood_interval(day: np.ndarray, event: np.ndarray, t: float) -> tuple[float, float]:
    """The interval the curves had before the bootstrap: lifelines' (Greenwood variance, log(-log) scale), of
    the share recovered at t. Kept as the baseline the bootstrap is compared with."""
    from lifelines import KaplanMeierFitter  # noqa: PLC0415

    interval = KaplanMeierFitter().fit(day, event).confidence_interval_survival_function_.loc[:t].iloc[-1]
    return 1 - float(interval.iloc[1]), 1 - float(interval.iloc[0])


def test_the_old_interval_is_lifelines_greenwood_by_hand() -> None:
    """The baseline the bootstrap tests compare with is what it says: moved here from the hand-worked example
    (the curves no longer use it). Greenwood variance and the log(-log) interval at 3 months, by hand."""
    days = np.array([t for t, _ in KM_CASES.values()], dtype=float)
    events = np.array([e for _, e in KM_CASES.values()])
    survival = 0.625
    greenwood = 1 / (6 * 5) + 1 / (4 * 3)
    spread = Z * math.sqrt(greenwood) / math.log(survival)
    low_s, high_s = (math.exp(-math.exp(math.log(-math.log(survival)) + sign * spread)) for sign in (-1, 1))
    low, high = greenwood_interval(days, events, 3 * DAYS_PER_MONTH)
    assert low == pytest.approx(1 - max(low_s, high_s), abs=1e-6)
    assert high == pytest.approx(1 - min(low_s, high_s), abs=1e-6)


# ----------------------------------------------------------------------- patient-cluster bootstrap interval
def test_weighted_product_limit_with_unit_weights_is_lifelines_kaplan_meier() -> None:
    from lifelines import KaplanMeierFitter  # noqa: PLC0415

    days = np.array([t for t, _ in KM_CASES.values()], dtype=float)
    events = np.array([e for _, e in KM_CASES.values()])
    counts = cluster_bootstrap.counts(np.array(list(KM_CASES)), days, events)
    survival = cluster_bootstrap.product_limit(counts, np.ones((6, 1)))[0]
    lifelines_s = KaplanMeierFitter().fit(days, events).survival_function_.iloc[:, 0]
    assert list(counts.times) == [30, 60, 90, 120, 150, 180]
    assert survival == pytest.approx(lifelines_s.loc[counts.times].to_numpy(), rel=1e-12, abs=1e-15)
    assert survival == pytest.approx([5 / 6, 5 / 6, 5 / 8, 5 / 12, 5 / 12, 0], rel=1e-12, abs=1e-15)


def test_a_replicate_with_nobody_at_risk_takes_no_step() -> None:
    """P6 (the only one followed to day 180) not drawn: nobody is at risk on day 180, S stays at its day-150 value
    (no division by zero, no NaN). Drawn twice: two at risk, both recover, S falls to 0."""
    days = np.array([t for t, _ in KM_CASES.values()], dtype=float)
    events = np.array([e for _, e in KM_CASES.values()])
    counts = cluster_bootstrap.counts(np.array(list(KM_CASES)), days, events)
    weights = np.array([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 2]], dtype=float).T
    without, twice = cluster_bootstrap.product_limit(counts, weights)
    # without P6: day 30 4/5; day 90 (3 at risk) * 2/3; day 120 (2 at risk) * 1/2; day 180 nobody at risk
    assert without == pytest.approx([4 / 5, 4 / 5, 8 / 15, 4 / 15, 4 / 15, 4 / 15], rel=1e-12)
    # P6 twice: 7 at risk on day 30, then 5 on day 90, 4 on day 120, 2 on day 180 (both recover)
    assert twice == pytest.approx([6 / 7, 6 / 7, 24 / 35, 18 / 35, 18 / 35, 0], rel=1e-12)


#: Muscle-sides given identical exams in the copied cohort: one patient's lesion, four muscle-sides.
COPIES = (("ankle_dorsiflexion", "L"), ("ankle_dorsiflexion", "R"), ("great_toe_extension", "L"),
          ("great_toe_extension", "R"))
OPERATED = -400  # the operation, days before the builders' standard date: follow-up up to 573 days by AS_OF


def copied_cohort(copies: int, patients: int = 80) -> Outcomes:
    """80 patients, each with `copies` identical weak muscle-sides (baseline 3): patient i is last seen on day
    20 + 53 i mod 560, recovered (grade 4) unless i is a multiple of 4 (censored at 3)."""
    rows, surgeries, strength = [], [], []
    for i in range(patients):
        pid, last = f"P{i:03d}", 20 + (i * 53) % 560
        rows.append(patient(pid))
        surgeries.append(surgery(pid, when=OPERATED))
        for muscle, side in COPIES[:copies]:
            strength += exams(pid, muscle, side, {OPERATED - 5: "3", OPERATED + 10: "3",
                                                  OPERATED + last: "3" if i % 4 == 0 else "4"})
    return cohort_outcomes(make_records(rows, surgeries, strength), AS_OF, load_reference())


def test_copying_each_patients_side_four_times_narrows_greenwood_by_half_but_not_the_bootstrap() -> None:
    """Why the bootstrap: four identical muscle-sides per patient add no information about recovery (still 80
    patients), yet Greenwood, which counts muscle-sides, halves its interval. The patient-cluster interval does
    not move at all: the copies add to the same patient's counts, the same seed draws the same patients, and
    each replicate's events and numbers at risk are exactly 4 times those of the single-side cohort, so S and
    the percentiles are the same numbers (tolerance: floating point only)."""
    single, copied = copied_cohort(1), copied_cohort(4)
    assert (len(single.sides), len(copied.sides)) == (80, 320)
    assert copied.sides["patient_id"].nunique() == 80
    curves_1, milestones_1 = single.recovery("all")
    curves_4, milestones_4 = copied.recovery("all")
    pd.testing.assert_frame_equal(curves_1.drop(columns="at_risk"), curves_4.drop(columns="at_risk"), rtol=1e-12)
    pd.testing.assert_frame_equal(milestones_1.drop(columns=["muscle_sides", "at_risk", "recovered_by"]),
                                  milestones_4.drop(columns=["muscle_sides", "at_risk", "recovered_by"]), rtol=1e-12)
    for months in (3, 6, 12):
        t = months * DAYS_PER_MONTH
        widths = []
        for outcomes in (single, copied):
            low, high = greenwood_interval(outcomes.sides["recovered_day"].to_numpy(),
                                           outcomes.sides["recovered_event"].to_numpy(), t)
            widths.append(high - low)
        bootstrap = [m.set_index("months").loc[months] for m in (milestones_1, milestones_4)]
        bootstrap_widths = [row["high"] - row["low"] for row in bootstrap]
        assert bootstrap_widths[1] == pytest.approx(bootstrap_widths[0], rel=1e-12) and bootstrap_widths[0] > 0.1
        # the old method fails: Greenwood's variance of log(-log S) is exactly 1/4 with every count 4 times, half
        # the spread on that scale and close to half on the share scale (the back-transform bends it a little)
        assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.03), months


def test_with_one_side_per_patient_the_bootstrap_is_close_to_greenwood() -> None:
    """Without clustering the two methods estimate the same spread. 400 patients, one muscle-side each
    (exponential recovery, mean 200 days; uniform censoring on days 30-800), at 3, 6 and 12 months.

    Tolerance: with 400 replicates the 2.5% and 97.5% percentiles each carry a Monte-Carlo error of about
    sqrt(0.025 * 0.975 / 400) / 0.058 = 0.13 standard errors of the estimate, i.e. 0.034 of the interval's
    width (3.92 standard errors); the width itself about 0.05. Endpoints within 0.12 of Greenwood's width and
    the width within 15% are about three Monte-Carlo errors, and far from what clustering does (a half, above)."""
    rng = np.random.default_rng(7)
    recovered_on, last_seen = np.ceil(rng.exponential(200, 400)), np.ceil(rng.uniform(30, 800, 400))
    sides = pd.DataFrame({"patient_id": [f"P{i:03d}" for i in range(400)], "all": "all",
                          "recovered_day": np.minimum(recovered_on, last_seen),
                          "recovered_event": recovered_on <= last_seen})
    _, milestones = recovery_curves(sides, "all")
    for months in (3, 6, 12):
        row = milestones.set_index("months").loc[months]
        low, high = greenwood_interval(sides["recovered_day"].to_numpy(), sides["recovered_event"].to_numpy(),
                                       months * DAYS_PER_MONTH)
        width = high - low
        assert abs(row["low"] - low) < 0.12 * width, (months, row["low"], low)
        assert abs(row["high"] - high) < 0.12 * width, (months, row["high"], high)
        assert (row["high"] - row["low"]) / width == pytest.approx(1, abs=0.15), months


def test_float32_sums_give_the_same_replicates_as_float64_and_the_percentiles(monkeypatch: pytest.MonkeyPatch) -> None:
    """The bootstrap sums counts in float32 while they stay below 2**24 (exact there) and falls back to float64
    beyond: both give the same numbers (a cohort too large for float32 is forced by lowering the bound)."""
    outcomes = copied_cohort(2)
    sides = outcomes.sides
    counts = cluster_bootstrap.counts(sides["patient_id"].to_numpy(), sides["recovered_day"].to_numpy(),
                                      sides["recovered_event"].to_numpy())
    assert (counts.patients, counts.most_sides) == (80, 2)
    assert cluster_bootstrap.weight_type(counts) is np.float32
    single = cluster_bootstrap.replicates(counts)
    monkeypatch.setattr(cluster_bootstrap, "FLOAT32_EXACT", 161)  # 80 patients x 2 sides = 160: still below
    assert cluster_bootstrap.weight_type(counts) is np.float32
    monkeypatch.setattr(cluster_bootstrap, "FLOAT32_EXACT", 160)  # no longer below
    assert cluster_bootstrap.weight_type(counts) is np.float64
    double = cluster_bootstrap.replicates(counts)
    assert single.shape == (cluster_bootstrap.REPLICATES, len(counts.times))
    np.testing.assert_array_equal(single, double)
    # the interval is numpy's percentile of the replicates (2.5 and 97.5, linear), of 1 - S; 1 before day one
    low, high = cluster_bootstrap.interval_at(counts, single, np.r_[0, counts.times])
    expected = np.percentile(1 - np.c_[np.ones(len(single)), single], [2.5, 97.5], axis=0)
    np.testing.assert_allclose(low, expected[0], rtol=0, atol=1e-14)
    np.testing.assert_allclose(high, expected[1], rtol=0, atol=1e-14)


def test_the_bootstrap_interval_is_reproducible_and_holds_the_estimate() -> None:
    """Same records, same interval (fixed seed), whatever the order of the rows (patients are numbered by id);
    the estimate lies inside its interval at every step and milestone. With the last patient censored (seen
    unrecovered on day 573; 24 months is day 730) the 24-month share stays undefined, and so does its interval."""
    sides = copied_cohort(2).sides
    last = sides["recovered_day"] == sides["recovered_day"].max()
    sides = sides.assign(recovered_event=sides["recovered_event"] & ~last)
    curves, milestones = recovery_curves(sides, "all")
    for other in (recovery_curves(sides, "all"), recovery_curves(sides.sample(frac=1, random_state=3), "all")):
        pd.testing.assert_frame_equal(curves, other[0])
        pd.testing.assert_frame_equal(milestones, other[1])
    assert (curves["low"] <= curves["share_recovered"]).all() and (curves["share_recovered"] <= curves["high"]).all()
    assert (curves["low"] < curves["high"]).sum() > len(curves) / 2  # a real interval, not the estimate twice
    by_month = milestones.set_index("months")
    for months in (3, 6, 12):
        assert by_month.loc[months, "low"] < by_month.loc[months, "share_recovered"] < by_month.loc[months, "high"]
    assert sides["recovered_day"].max() == 573 and not sides.loc[last, "recovered_event"].any()
    assert by_month.loc[24, ["share_recovered", "low", "high"]].isna().all()


# ------------------------------------------------------------------------------------------ band coverage
def test_band_coverage_per_window_on_a_hand_made_cohort() -> None:
    """Baseline 3 (moderate): at 2 weeks, grade 2 is below the band, 3 and 4 inside, 5 above; the 6-week exam
    of P2 counts in its own window; an earlier exam in the same window is replaced by the latest."""
    rows = {"P1": "2", "P2": "3", "P3": "4", "P4": "5"}
    patients = [patient(pid, surgeon="Dr A" if pid in ("P1", "P2") else "Dr B") for pid in rows]
    strength = []
    for pid, grade in rows.items():
        grades = {-3: "3", 14: grade}
        if pid == "P1":
            grades[10] = "4"  # earlier in the same window: replaced by day 14's grade 2
        if pid == "P2":
            grades[42] = "3"
        strength += exams(pid, "ankle_dorsiflexion", "L", grades)
    records = make_records(patients, [surgery(pid) for pid in rows], strength)
    coverage = cohort_outcomes(records, AS_OF, load_reference()).coverage
    two_weeks = coverage[(coverage["grouping"] == "all") & (coverage["window"] == "2 weeks")].iloc[0]
    assert (two_weeks["muscle_sides"], two_weeks["below"], two_weeks["inside"], two_weeks["above"]) == (4, 1, 2, 1)
    assert two_weeks["share_below"] == pytest.approx(0.25) and two_weeks["share_inside"] == pytest.approx(0.5)
    six_weeks = coverage[(coverage["grouping"] == "all") & (coverage["window"] == "6 weeks")].iloc[0]
    assert (six_weeks["muscle_sides"], six_weeks["inside"]) == (1, 1)
    dr_b = coverage[(coverage["grouping"] == "surgeon") & (coverage["group"] == "Dr B")
                    & (coverage["window"] == "2 weeks")].iloc[0]
    assert (dr_b["inside"], dr_b["above"], dr_b["share_above"]) == (1, 1, 0.5)
    severity = coverage[coverage["grouping"] == "severity"]
    assert set(severity["group"]) == {"moderate"}


def test_windows_proms_and_follow_up() -> None:
    assert list(window_of(np.array([0, 7, 24, 25, 100, 912, 913]))) == [-1, 0, 0, 1, 2, 5, -1]
    patients = [patient("P1", diabetes="yes"), patient("P2")]
    surgeries = [surgery("P1"), surgery("P2")]
    strength = exams("P1", "hip_flexion", "L", {-1: "3", 14: "3", 40: "4"}) + exams("P2", "hip_flexion", "L",
                                                                                     {-1: "5", 14: "5"})
    visits = [visit("P1", -2, odi="60", leg_pain_nrs="8"), visit("P1", 14, odi="40", leg_pain_nrs="4"),
              visit("P2", 14, odi="20", leg_pain_nrs="2"), visit("P1", 100, odi="30")]
    records = make_records(patients, surgeries, strength, visits)
    as_of = date.fromisoformat(day(400))
    outcomes = cohort_outcomes(known_on(records, as_of), as_of, load_reference())
    proms = outcomes.proms.set_index(["grouping", "group", "window", "measure"])
    assert proms.loc[("all", "all", "2 weeks", "odi"), "median"] == 30
    assert proms.loc[("all", "all", "2 weeks", "odi"), "q1"] == 25
    assert proms.loc[("all", "all", "before", "odi"), "n"] == 1
    assert proms.loc[("diabetes", "yes", "3 months", "odi"), "median"] == 30
    follow = outcomes.follow_up.set_index(["grouping", "group", "window"])
    assert follow.loc[("all", "all", "2 weeks"), ["due", "done"]].tolist() == [2, 2]
    assert follow.loc[("all", "all", "6 weeks"), ["due", "done"]].tolist() == [2, 1]
    assert follow.loc[("all", "all", "12 months"), ["due", "done"]].tolist() == [0, 0]  # closes on day 547
    lost = outcomes.lost.set_index(["grouping", "group"])
    # P2: seen at 2 weeks only; 6 weeks, 3 and 6 months missed -> lost. P1: 3 months attended, 6 months missed.
    assert lost.loc[("all", "all"), ["operations", "followed", "lost"]].tolist() == [2, 2, 1]
    assert outcomes.operations.set_index("patient_id").loc["P2", "lost"]
    assert outcomes.operations.set_index("patient_id").loc["P1", "severity"] == "moderate"


def test_visits_that_record_no_prom_give_empty_prom_tables_and_the_rest_of_the_outcomes() -> None:
    """Found by the prompt-log work: a clinic whose visits record signs but no ODI or pain score crashed the
    whole outcomes screen (KeyError in the PROM quartiles)."""
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", "hip_flexion", "L", {-1: "3", 14: "4"}),
                           [visit("P1", 14, fever="no"), visit("P1", 40, fever="no")])
    as_of = date.fromisoformat(day(100))
    outcomes = cohort_outcomes(known_on(records, as_of), as_of, load_reference())
    assert outcomes.proms.empty and list(outcomes.proms.columns) == ["grouping", "group", "window", "measure", "n",
                                                                     "median", "q1", "q3"]
    follow = outcomes.follow_up.set_index(["grouping", "group", "window"])
    assert follow.loc[("all", "all", "2 weeks"), ["due", "done"]].tolist() == [1, 1]


# ------------------------------------------------------------------------------------- prompt performance
def _prompt(pid: str, rule: str, urgency: str, modality: str, evidence: list[str]) -> dict:
    return {"patient_id": pid, "rule_id": rule, "category": "red_flag", "modality": modality, "urgency": urgency,
            "summary": "s", "evidence": evidence, "source": "x"}


def test_prompt_metrics_from_decisions_in_the_store(store_engine, tmp_path: Path) -> None:
    records = records_from(tmp_path / "r", GOOD_FILES)
    import_records(store_engine, records, source_name="test", user="t")
    prompts = pd.DataFrame([
        _prompt("P1", "red-cauda-equina", "emergency", "mri", ["2026-10-20 (day 283) saddle_anesthesia: yes"]),
        _prompt("P2", "red-cauda-equina", "emergency", "mri", ["2026-10-31 (day 272) urinary_retention: yes"]),
        _prompt("P3", "compression-behind-expected", "routine", "mri",
                ["2026-08-01 (day 153) hip_flexion R 3, after 3 on 2026-05-01"]),
        _prompt("P1", "compression-behind-expected", "routine", "mri", ["2026-10-01 (day 264) x"]),
    ])
    at = datetime(2026, 10, 25, 9, tzinfo=UTC)
    record_decision(store_engine, patient_id="P3", rule_id="compression-behind-expected",
                    evidence_hash=evidence_hash(list(prompts.loc[2, "evidence"])), decision="deferred",
                    reason="review at the next visit", clinician="dr", decided_at=datetime(2026, 8, 3, tzinfo=UTC))
    record_decision(store_engine, patient_id="P3", rule_id="compression-behind-expected",
                    evidence_hash=evidence_hash(list(prompts.loc[2, "evidence"])), decision="ordered",
                    clinician="dr", decided_at=datetime(2026, 8, 11, tzinfo=UTC))
    record_decision(store_engine, patient_id="P1", rule_id="compression-behind-expected",
                    evidence_hash=evidence_hash(list(prompts.loc[3, "evidence"])), decision="not_indicated",
                    reason="known, stable", clinician="dr", decided_at=at)
    # a decision on a prompt that no longer fires (P2, another rule): counts as fired and decided
    record_decision(store_engine, patient_id="P2", rule_id="compression-behind-expected", evidence_hash="old",
                    decision="already_done", clinician="dr", decided_at=at)
    history = decision_history(store_engine)
    visits = pd.DataFrame({"patient_id": ["P3", "P3", "P1"],
                           "visit_date": pd.to_datetime(["2026-07-01", "2026-08-20", "2026-10-28"]),
                           "imaging_modality": ["mri", "MRI", "ct"], "imaging_finding": ["no", "yes", "yes"]})
    table, states, reasons = rule_performance(prompts, history, visits, TODAY)
    rules = table.set_index("rule_id")
    cauda = rules.loc["red-cauda-equina"]
    assert (cauda["prompts_now"], cauda["patients"], cauda["open"]) == (2, 2, 2)
    assert (cauda["overdue"], cauda["alarms"]) == (1, 1)
    behind = rules.loc["compression-behind-expected"]
    assert (behind["prompts_now"], behind["patients"], behind["open"]) == (2, 3, 0)
    assert (behind["ordered"], behind["already_done"], behind["not_indicated"], behind["deferred"]) == (1, 1, 1, 0)
    # first decision on the evidence: P3 deferred on 3 Aug for evidence of 1 Aug (2 days); P1 25 Oct for 1 Oct (24)
    assert behind["median_days_to_decision"] == pytest.approx(13)
    assert (behind["imaging_results"], behind["imaging_found"], behind["imaging_yield"]) == (1, 1, 1.0)
    assert reasons.to_dict("records") == [{"rule_id": "compression-behind-expected", "reason": "known, stable",
                                           "decisions": 1}]
    alarm = states[states["alarm"]]
    assert alarm["patient_id"].tolist() == ["P1"] and alarm["days_open"].tolist() == [12]
    # the clinic banner's function agrees (from prompts with the decision in force)
    banner = emergency_alarms(with_decisions(prompts, latest_decisions(store_engine)), TODAY)
    assert banner[["patient_id", "rule_id", "days_open"]].values.tolist() == [["P1", "red-cauda-equina", 12]]


def test_first_seen_is_the_latest_date_of_the_evidence() -> None:
    prompts = pd.DataFrame([_prompt("P1", "r", "urgent", "ct", ["2026-03-04 (day 5) a after 2 on 2026-03-01",
                                                                  "2026-02-01 b"]),
                            _prompt("P2", "r", "urgent", "ct", ["no date"])])
    seen = first_seen(prompts)
    assert seen.iloc[0] == pd.Timestamp("2026-03-04") and pd.isna(seen.iloc[1])


# --------------------------------------------------------------------------------------- command line, app
def test_the_command_writes_html_and_csv(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    folder = tmp_path / "records"
    km_records()  # the same cohort, written as files
    from tests.store_fixtures import write_folder

    rows = []
    for pid, (last, event) in KM_CASES.items():
        rows += [f"{pid},{day(-5)},ankle_dorsiflexion,R,3",
                 f"{pid},{day(last)},ankle_dorsiflexion,R,{4 if event else 3}"]
    write_folder(folder, {
        "patients.csv": "patient_id,surgeon\n" + "".join(f"{pid},Dr A\n" for pid in KM_CASES),
        "surgeries.csv": "patient_id,surgery_date,procedure,levels,instrumented\n"
                         + "".join(f"{pid},{day(0)},TLIF,L4-L5,yes\n" for pid in KM_CASES),
        "strength.csv": "patient_id,exam_date,muscle,side,mrc\n" + "\n".join(rows) + "\n"})
    html, csv = tmp_path / "o.html", tmp_path / "o.csv"
    assert main(["outcomes", str(folder), "--out", str(html), "--as-of", "2026-11-01"]) == 0
    assert main(["outcomes", str(folder), "--out", str(csv), "--as-of", "2026-11-01"]) == 0
    text = html.read_text(encoding="utf-8")
    assert "<svg" in text and "Content-Security-Policy" in text and "<script" not in text
    frame = pd.read_csv(csv)
    assert set(frame["table"]) >= {"recovery", "follow_up", "prompt_performance"}
    three = frame[(frame["table"] == "recovery") & (frame["grouping"] == "all") & (frame["months"] == 3)].iloc[0]
    assert three["share_recovered"] == pytest.approx(0.375, abs=1e-3)
    assert "P1" not in csv.read_text(encoding="utf-8")  # aggregates only
    assert main(["outcomes", str(folder), "--out", str(tmp_path / "o.pdf")]) == 2
    assert main(["outcomes"]) == 2
    assert main(["outcomes", str(folder), "--as-of", "2026-11-01"]) == 0
    assert "weak muscle-sides" in capsys.readouterr().out


def test_the_command_reads_a_store(store_url: str, tmp_path: Path) -> None:
    from dashboard.store import get_engine

    engine = get_engine(store_url)
    import_records(engine, records_from(tmp_path / "r", GOOD_FILES), source_name="test", user="t")
    engine.dispose()
    out = tmp_path / "store.csv"
    assert main(["outcomes", "--database", store_url, "--out", str(out), "--as-of", "2026-11-01"]) == 0
    frame = pd.read_csv(out)
    lost = frame[(frame["table"] == "lost_to_follow_up") & (frame["grouping"] == "all")].iloc[0]
    assert lost["operations"] == 4 and lost["patients"] == 3


def test_screen_renders_for_surgeon_and_admin_only(app_store: str) -> None:
    for user, role in (("surgeon", "surgeon"), ("admin", "admin")):
        at = run_app("screens/outcomes.py", user=user, role=role)
        assert at.title[0].value == "Outcomes"
        assert any("Kaplan" in c.value for c in at.caption)
        assert at.get("plotly_chart")
    sections = at.radio(key="outcomes_section")
    for section in sections.options[1:]:  # each section renders, grouped by surgeon
        at.selectbox(key="outcomes_grouping").set_value("surgeon")
        at.radio(key="outcomes_section").set_value(section).run()
        assert not at.exception, (section, at.exception)
        assert at.dataframe, section
    at = run_app(user="conference", role="conference")
    with pytest.raises(ValueError, match="Could not find a navigation page"):  # not in the conference navigation
        at.switch_page("screens/outcomes.py")


def test_screen_export_is_prepared(app_store: str) -> None:
    at = run_app("screens/outcomes.py", user="surgeon", role="surgeon")
    at.button(key="outcomes_prepare").click().run()
    assert not at.exception
    html, csv = at.session_state["outcomes_export"]
    assert html.startswith("<!DOCTYPE html>") and csv.startswith("table,")
    assert DAYS_PER_MONTH > 30


def test_imaging_results_survive_the_store_as_extra_columns(store_engine, tmp_path: Path) -> None:
    """The documented extension: imaging_modality and imaging_finding on visits are kept as extra columns by the
    reader and the store, and the imaging yield reads them back."""
    from dashboard.store import load_records

    files = dict(GOOD_FILES)
    files["visits.csv"] = ("patient_id,visit_date,odi,imaging_modality,imaging_finding\n"
                           "P1,2026-02-20,30,,\nP1,2026-03-01,,MRI,yes\nP3,2026-04-01,,ct,no\n")
    records = records_from(tmp_path / "r", files)
    assert {"imaging_modality", "imaging_finding"} <= set(records.extra_columns["visits"])
    import_records(store_engine, records, source_name="test", user="t")
    stored = load_records(store_engine).visits
    assert {"imaging_modality", "imaging_finding"} <= set(stored.columns)
    prompts = pd.DataFrame([_prompt("P1", "compression-behind-expected", "routine", "mri", ["2026-02-20 x"]),
                            _prompt("P3", "hardware-screw-loosening", "routine", "ct", ["2026-03-20 y"])])
    table, _, _ = rule_performance(prompts, decision_history(store_engine), stored, TODAY)
    rules = table.set_index("rule_id")
    assert rules.loc["compression-behind-expected", ["imaging_results", "imaging_found"]].tolist() == [1, 1]
    assert rules.loc["hardware-screw-loosening", ["imaging_results", "imaging_found"]].tolist() == [1, 0]
    assert rules.loc["hardware-screw-loosening", "imaging_yield"] == 0


def test_clinic_screen_shows_the_emergency_alarm(app_store: str) -> None:
    """The demo cohort has emergency prompts nobody decided on, fired more than a day before today."""
    at = run_app(user="surgeon", role="surgeon")
    alarm = [e.value for e in at.error if "ALARM" in e.value]
    assert alarm and "emergency prompt(s) open for more than a day" in alarm[0]
    assert "Possible cauda equina compression?" in alarm[0] and "red-" not in alarm[0]  # words, not rule ids


def test_procedure_groups_are_controlled_terms_never_the_text_as_written(tmp_path: Path) -> None:
    # Issue 22 point 10: a name, phone number or date typed into the procedure field must not become a group
    # label of the outcomes screen or its export (aggregates only).
    from dashboard.reports.outcomes import outcomes_csv  # noqa: PLC0415
    from tests.planted import PROCEDURES, found  # noqa: PLC0415

    records = records_from(tmp_path / "r", GOOD_FILES)
    planted = with_columns(records, {"surgeries.csv": {
        "procedure": [PROCEDURES[i % len(PROCEDURES)] for i in range(len(records.surgeries))]}})
    outcomes = cohort_outcomes(planted, TODAY, load_reference())
    groups = set(outcomes.operations["procedure"])
    assert groups <= {"TLIF", "PLIF", "posterolateral fusion", "decompression", "other procedure"}, groups
    no_prompts = pd.DataFrame({"rule_id": pd.Series(dtype="string")})
    assert found(outcomes_csv(outcomes, no_prompts)) == []
