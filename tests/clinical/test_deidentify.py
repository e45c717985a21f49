"""De-identification for case conferences: wording, date rewriting, case lists and the whole demo cohort."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from dashboard.clinical.assessment import assess
from dashboard.clinical.conference import (
    age_band,
    conference_cases,
    hand_picked,
    identifiers,
    in_follow_up,
    leaks,
    rewrite_dates,
    select_cases,
    time_since_operation,
    week_label,
)
from dashboard.clinical.decisions import with_decisions
from dashboard.clinical.imaging.checklist import evidence_hash
from dashboard.clinical.patient_view import ExamIndex
from dashboard.clinical.records.validate import validate

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "data" / "demo"
ANCHOR = date(2026, 11, 20)  # the demo cohort's fixed day (data/demo/README.md)
ISO = re.compile(r"\d{4}-\d{2}-\d{2}")


@pytest.fixture(scope="module")
def demo():
    records, report = validate(DEMO)
    assert records is not None, report.error_lines()
    return records, assess(records, as_of=ANCHOR)


def test_age_bands_are_five_years_and_pool_the_very_old():
    assert age_band(37) == "35–39"
    assert age_band(40) == "40–44"
    assert age_band(89.6) == "85–89"
    assert age_band(90) == age_band(104) == "90+"
    assert age_band(None) == "age not recorded"


def test_weeks_count_from_the_operation_day():
    assert [week_label(d) for d in (0, 6, 7, 43)] == ["week 0", "week 0", "week 1", "week 6"]
    assert week_label(-1) == "week −1" and week_label(-8) == "week −2"
    assert time_since_operation(3) == "week 0 (day 3) after the operation"
    assert time_since_operation(100) == "week 14 after the operation"
    assert time_since_operation(400) == "13 months after the operation (week 57)"


def test_every_date_in_evidence_becomes_a_week_since_the_operation():
    line = "2026-04-20 ankle_dorsiflexion R 3 after 4+ on 2026-02-21"
    assert rewrite_dates(line, date(2026, 1, 1)) == "week 15 ankle_dorsiflexion R 3 after 4+ in week 7"
    assert rewrite_dates("seen 20 Apr 2026, before 2025-12-25T10:30:00Z", pd.Timestamp("2026-01-01")) == \
        "seen week 15, before week −1"
    assert rewrite_dates("letter of 03/04/2026", date(2026, 1, 1)) == "letter of [date removed]"
    assert rewrite_dates("on 2026-02-21", None) == "on [date removed]"
    assert rewrite_dates("back pain 8/10, CRP 121.2 mg/L (3.5–4.5)", date(2026, 1, 1)) == \
        "back pain 8/10, CRP 121.2 mg/L (3.5–4.5)"


def test_leak_check_names_the_kind_never_the_value():
    found = leaks("Case 1: Johanna Eklund, MRN7709378 seen 2026-01-02", ["johanna eklund", "MRN7709378"])
    assert found == ["patient identifier (id, name or MRN)", "calendar date"]
    assert leaks("Case 1, week 3", ["Johanna Eklund"]) == []


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, (list, tuple)):
        return [s for v in value for s in _strings(v)]
    return [] if value is None else [str(value)]


def test_whole_cohort_cases_carry_no_identifier_date_or_note(demo):
    records, assessment = demo
    ids = in_follow_up(assessment)
    assert len(ids) == 200
    cases = conference_cases(assessment, ids, exams=ExamIndex(assessment.records.strength).exams)
    patients = records.patients
    notes = {n.strip() for n in records.visits["notes"].dropna() if n.strip()}
    identifying = {v.lower() for v in identifiers(patients)}
    for number, case in enumerate(cases, start=1):
        assert case.label == f"Case {number}" and case.view.patient_id == case.label
        text = "\n".join(_strings(case.header) + _strings(case.prompts.to_dict("records")) + case.missing)
        assert not ISO.search(text), case.label
        lowered = text.lower()
        assert not any(value in lowered for value in identifying), case.label
        assert not any(note in text for note in notes), case.label
        for frame in (case.view.exams, case.view.visits, case.view.muscles, case.view.prompts):
            assert not {"patient_id", "name", "mrn", "notes", "exam_date", "visit_date", "latest_date",
                        "decided_at", "decision_reason", "decided_by"} & set(frame.columns)
            assert not any(pd.api.types.is_datetime64_any_dtype(frame[c]) for c in frame.columns)
        assert set(case.header) >= {"age_band", "sex", "follow_up", "surgeon"}
        assert not {"name", "mrn", "patient_id", "surgery_date", "as_of", "age"} & set(case.header)
    evidence = [line for case in cases for p in case.prompts.to_dict("records") for line in p["evidence"]]
    assert evidence and any(line.startswith("week ") for line in evidence)
    assert not any(ISO.search(line) for line in evidence)


def test_decisions_keep_what_was_decided_not_who_or_why(demo):
    records, assessment = demo
    prompt = assessment.prompts.iloc[0]
    name = records.patients.set_index("patient_id").loc[prompt["patient_id"], "name"]
    decided_at = pd.Timestamp(datetime(2026, 11, 19, 9, 30, tzinfo=UTC))
    decisions = pd.DataFrame([{
        "patient_id": prompt["patient_id"], "rule_id": prompt["rule_id"],
        "evidence_hash": evidence_hash(list(prompt["evidence"])),
        "decision": "not_indicated", "reason": f"{name} declined on 2026-11-19", "clinician": "Dr Example",
        "decided_at": decided_at}])
    prompts = with_decisions(assessment.prompts, decisions)
    case = conference_cases(assessment, [prompt["patient_id"]], prompts)[0]
    row = case.prompts[case.prompts["rule_id"] == prompt["rule_id"]].iloc[0]
    assert row["decision_label"] == "Not indicated" and row["decision_current"]
    assert row["decision_has_reason"] and row["decision_week"].startswith("week ")
    text = " ".join(_strings(case.prompts.to_dict("records")))
    assert name not in text and "declined" not in text and "Dr Example" not in text and not ISO.search(text)


def test_case_list_by_filter_status_surgeon_and_by_hand(demo):
    _, assessment = demo
    prompts = with_decisions(assessment.prompts, pd.DataFrame(columns=["patient_id", "rule_id", "evidence_hash",
                                                                       "decision", "reason", "clinician",
                                                                       "decided_at"]))
    urgent = select_cases(assessment, prompts, filter="urgent")
    flagged = set(prompts.loc[prompts["urgency"].isin(["urgent", "emergency"]), "patient_id"])
    assert urgent and set(urgent) == flagged
    emergency = set(prompts.loc[prompts["urgency"] == "emergency", "patient_id"])
    assert urgent[:len(emergency)] == [p for p in urgent if p in emergency]  # emergencies first
    assert set(select_cases(assessment, filter="emergency")) == emergency
    assert len(select_cases(assessment, filter="all")) == 200

    # A decided prompt is no longer open; a deferred one is.
    first = prompts[prompts["patient_id"] == urgent[0]]
    decided = first.assign(decision="ordered", decision_current=True)
    rest = prompts[prompts["patient_id"] != urgent[0]]
    assert urgent[0] not in select_cases(assessment, pd.concat([rest, decided]), filter="urgent")
    deferred = first.assign(decision="deferred", decision_current=True)
    assert urgent[0] in select_cases(assessment, pd.concat([rest, deferred]), filter="urgent")

    behind = select_cases(assessment, filter="all", statuses=["behind"])
    scenarios = pd.read_csv(DEMO / "scenarios.csv", dtype=str)
    assert set(scenarios.loc[scenarios["scenario"] == "plateau_behind", "patient_id"]) <= set(behind)
    surgeon = assessment.patients["surgeon"].dropna().iloc[0]
    by_surgeon = select_cases(assessment, filter="all", surgeons=[surgeon])
    assert by_surgeon and set(assessment.patients.set_index("patient_id").loc[by_surgeon, "surgeon"]) == {surgeon}

    picked = [urgent[2], urgent[0], urgent[2]]
    assert hand_picked(assessment, picked) == [urgent[2], urgent[0]]
    with pytest.raises(KeyError):
        hand_picked(assessment, ["P99999"])
    with pytest.raises(ValueError):
        select_cases(assessment, filter="nobody")
