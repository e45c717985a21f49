"""De-identification for case conferences: wording, date rewriting, case lists, the whole demo cohort, free text
as controlled values (procedure vocabulary, levels, surgeon pseudonyms) and identifiers planted in it."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd
import pytest

from dashboard.clinical.assessment import assess
from dashboard.clinical.conference import (
    age_band,
    conference_cases,
    deidentify_patient,
    deidentify_view,
    hand_picked,
    identifiers,
    in_follow_up,
    leaks,
    rewrite_dates,
    select_cases,
    surgeon_pseudonyms,
    time_since_operation,
    visible_text,
    week_label,
)
from dashboard.clinical.controlled_terms import (
    SurgeonPseudonyms,
    VocabularyError,
    levels_term,
    load_vocabulary,
    procedure_term,
)
from dashboard.clinical.decisions import with_decisions
from dashboard.clinical.imaging.checklist import evidence_hash
from dashboard.clinical.patient_view import ExamIndex, patient_view
from dashboard.clinical.records.validate import validate
from tests.planted import NEEDLES, PROCEDURES, SURGEONS, found, plant

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
    kinds = leaks("Case 1: Johanna Eklund, MRN7709378 seen 2026-01-02", ["johanna eklund", "MRN7709378"])
    assert kinds == ["patient identifier (id, name or MRN)", "calendar date"]
    assert leaks("Case 1, week 3", ["Johanna Eklund"]) == []
    assert leaks("write to j.e@example.org", []) == ["e-mail address"]


def test_leak_check_finds_short_names_as_words_in_what_a_reader_sees():
    """A patient named "Li" was refused: "li" is in <li>, "lift", "decompression"'s neighbours. Names are
    now looked for as whole words of the visible text; a short name that is really there is still found."""
    page = ("<html><head><style>li { line-height: 1 }</style></head><body><ul><li>Lift the leg: slight "
            "loss</li><li>Al&shy;ways</li></ul><p>Edema, bone, wound</p></body></html>")
    for name in ("Li", "Al", "Bo", "Ng", "Wu", "Jo", "Ed", "O"):
        assert leaks(page, [name]) == [], name
    assert leaks("<li>seen by Li</li>", ["Li"]) == ["patient identifier (id, name or MRN)"]
    assert leaks("<p>LI: wound</p>", ["li"]) == ["patient identifier (id, name or MRN)"]
    assert leaks("<p>Anna&nbsp;Lee</p>", ["Anna  Lee"]) == ["patient identifier (id, name or MRN)"]
    assert leaks("<p>Anna Leeway</p>", ["Anna Lee"]) == []
    assert leaks("<p>P00012</p>", ["P0001"]) == []  # another id that begins with this one
    assert visible_text("<p>a &amp; b</p>\n<b>c</b>") == "a & b c"
    assert leaks("<p>Jo&shy;hanna Ek\u200blund</p>", ["Johanna Eklund"]) == ["patient identifier (id, name or MRN)"]


def test_known_procedures_map_to_their_term_and_anything_else_to_other_procedure():
    assert [procedure_term(text) for text in (
        "TLIF", "tlif L4-L5", "MIS-TLIF at L4/5", "TLIF L4-5, L5-S1", "L4-L5 TLIF", "PLIF (L4L5)",
        "Posterolateral fusion", "PLF", "decompression", "Laminectomy", "Decompression and fusion L3-L4 and L4-L5",
        "XLIF", "TLIF + decompression", "TLIF + TLIF")] == [
        "TLIF", "TLIF", "TLIF", "TLIF", "TLIF", "PLIF",
        "posterolateral fusion", "posterolateral fusion", "decompression", "decompression",
        "decompression and fusion", "LLIF", "TLIF + decompression", "TLIF"]
    # A known name with anything around it is not that name: nothing of the text passes through.
    for text in ("TLIF, call daughter Anna", "TLIF Dr Li", "fusion", "TLIF + Anna", "TLIF +", "@@image-999@@",
                 *PROCEDURES):
        assert procedure_term(text) == "other procedure", text
    assert procedure_term(None) == procedure_term("  ") == procedure_term(float("nan")) == "operation not recorded"
    assert load_vocabulary().other == "other procedure"


def test_levels_become_lumbar_segments_and_anything_else_other_level():
    assert levels_term("L4-L5;L5-S1") == "L4–L5, L5–S1"
    assert levels_term("l3-l4") == "L3–L4"
    assert levels_term("L4-L5;Bed 12B;MRN8812345") == "L4–L5, other level"
    assert levels_term(None) == levels_term("") == "levels not recorded"


def test_a_vocabulary_spelling_under_two_terms_is_an_error_naming_both(tmp_path):
    path = tmp_path / "procedures.yaml"
    path.write_text("other: other procedure\nterms:\n  - {term: TLIF, recorded: [tlif]}\n"
                    "  - {term: PLIF, recorded: [plif, TLIF]}\n", encoding="utf-8")
    with pytest.raises(VocabularyError) as problem:
        load_vocabulary(path)
    assert str(problem.value) == f"{path}: term 2 (PLIF): spelling 'TLIF' is already listed under TLIF"
    path.write_text("terms: []\n", encoding="utf-8")
    with pytest.raises(VocabularyError, match="needs 'other' and a list 'terms'"):
        load_vocabulary(path)


def test_surgeons_get_stable_pseudonyms_that_say_nothing_of_the_name():
    recorded = ["Dr Tanaka", "Dr Okafor", "dr  tanaka", "Tanaka", "Dr Moreau", None, "Dr Lindqvist"]
    pseudonyms = SurgeonPseudonyms.of(recorded)
    assert pseudonyms == SurgeonPseudonyms.of(list(reversed(recorded)))  # the order of the records does not matter
    assert pseudonyms.labels == ["Surgeon A", "Surgeon B", "Surgeon C", "Surgeon D"]
    assert pseudonyms.pseudonym("DR TANAKA") == pseudonyms.pseudonym("Tanaka") == pseudonyms.pseudonym("Dr Tanaka")
    assert len({pseudonyms.pseudonym(s) for s in recorded if s}) == 4
    assert pseudonyms.pseudonym(None) == "surgeon not recorded"
    assert pseudonyms.pseudonym("Dr Unknown") == "surgeon not shown"
    many = SurgeonPseudonyms.of([f"Dr {i}" for i in range(30)])
    assert many.labels[:2] == ["Surgeon A", "Surgeon B"] and many.labels[-4:] == ["Surgeon AA", "Surgeon AB",
                                                                                    "Surgeon AC", "Surgeon AD"]


def _case_text(case) -> str:
    return "\n".join(_strings(case.header) + _strings(case.prompts.to_dict("records")) + case.missing)


def test_identifiers_planted_in_procedure_and_surgeon_reach_no_conference_case(demo):
    records, _ = demo
    assessment = assess(plant(records), as_of=ANCHOR)
    ids = in_follow_up(assessment)
    cases = conference_cases(assessment, ids, exams=ExamIndex(assessment.records.strength).exams)
    assert len(cases) == 200
    text = "\n".join(_case_text(case) for case in cases)
    assert found(text) == []
    assert set(NEEDLES) == {"a relative's name", "a relative's phone number", "a date", "a hospital", "a bed number",
                            "another MRN", "an e-mail address", "an address", "a name in the surgeon field",
                            "a forged image slot"}
    assert found("\n".join(PROCEDURES + SURGEONS)) == list(NEEDLES)  # each kind really is planted
    procedures = {case.header["procedure"] for case in cases}
    assert procedures == {"other procedure"}  # each planted text holds a known name, with identifiers around it
    assert {case.header["surgeon"] for case in cases} == {"Surgeon A", "Surgeon B", "Surgeon C", "Surgeon D",
                                                           "Surgeon E"}


def test_the_same_surgeon_is_the_same_pseudonym_on_every_case(demo):
    records, assessment = demo
    cases = conference_cases(assessment, in_follow_up(assessment))
    recorded = assessment.patients.set_index("patient_id")["surgeon"]
    pairs = {(recorded[pid], case.header["surgeon"]) for pid, case in zip(in_follow_up(assessment), cases,
                                                                          strict=True)}
    assert len(pairs) == 4 and len({p for _, p in pairs}) == 4  # 4 surgeons, 4 pseudonyms, one each
    assert {p for _, p in pairs} == set(surgeon_pseudonyms(assessment).labels)
    assert {case.header["procedure"] for case in cases} == {"TLIF", "PLIF", "posterolateral fusion", "decompression"}
    levels = {case.header["levels"] for case in cases}
    assert levels == {"L4–L5", "L5–S1", "L4–L5, L5–S1", "L3–L4", "L3–L4, L4–L5"}
    pid = in_follow_up(assessment)[0]
    alone = deidentify_view(patient_view(assessment, pid), 1)  # no cohort pseudonyms: the surgeon is left out
    assert alone.header["surgeon"] == "surgeon not shown"
    assert deidentify_patient(assessment, pid, 1).header["surgeon"] == cases[0].header["surgeon"]


def test_other_free_text_in_a_case_becomes_controlled_too(demo):
    """Levels and sex are checked on import, but a case must not rely on that; and a rule whose evidence
    quoted the recorded procedure gets the controlled term instead."""
    _, assessment = demo
    pid = assessment.prompts["patient_id"].iloc[0]
    patients = assessment.patients.copy()
    row = patients["patient_id"] == pid
    patients.loc[row, ["levels", "sex", "procedure"]] = ["L4-L5;bed 12B", "Ingrid Halvorsen", PROCEDURES[0]]
    changed = dataclasses.replace(assessment, patients=patients)
    prompts = assessment.prompts[assessment.prompts["patient_id"] == pid].copy()
    prompts["evidence"] = [[f"Operation: {PROCEDURES[0]}", *lines] for lines in prompts["evidence"]]
    case = deidentify_patient(changed, pid, 1, prompts)
    assert case.header["levels"] == "L4–L5, other level" and case.header["sex"] is None
    assert case.header["procedure"] == "other procedure"
    assert case.prompts["evidence"].iloc[0][0] == "Operation: other procedure"
    assert found(_case_text(case)) == []


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
    pseudonym = surgeon_pseudonyms(assessment).pseudonym(surgeon)
    assert select_cases(assessment, filter="all", surgeons=[pseudonym]) == by_surgeon  # as a case shows it
    assert select_cases(assessment, filter="all", surgeons=["Surgeon Z"]) == []

    picked = [urgent[2], urgent[0], urgent[2]]
    assert hand_picked(assessment, picked) == [urgent[2], urgent[0]]
    with pytest.raises(KeyError):
        hand_picked(assessment, ["P99999"])
    with pytest.raises(ValueError):
        select_cases(assessment, filter="nobody")
