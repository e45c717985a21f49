"""Patient stories from the literature (tests/clinical_cases/*.yaml): each gives the prompts and statuses a
careful spine surgeon would expect, with the source of that expectation. One test per story."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest
import yaml

from dashboard.clinical.assessment import assess
from dashboard.clinical.imaging.checklist import load_rules, no_prompt_text
from tests.builders import SURGERY, day, make_records

CASES = Path(__file__).parents[1] / "clinical_cases"
HAZARD_LOG = Path(__file__).resolve().parents[2] / "docs" / "hazard-log.md"
PATIENT = "CASE"


def _text(value) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def load_case(path: Path) -> dict:
    case = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert case["id"] == path.stem, f"{path.name}: id must be the file name"
    for field in ("hazards", "story", "source", "as_of_day", "strength", "expect"):
        assert case.get(field) not in (None, ""), f"{path.name}: '{field}' is missing"
    return case


def records_of(case: dict):
    surgeries = [{"patient_id": PATIENT, "surgery_date": day(int(op.get("day", 0))),
                  "procedure": op.get("procedure", "TLIF"), "levels": op.get("levels", "L4-L5"),
                  "instrumented": _text(op.get("instrumented", True))}
                 for op in case.get("surgeries") or [{}]]
    strength = [{"patient_id": PATIENT, "exam_date": day(int(d)), "muscle": key.split()[0], "side": key.split()[1],
                 "mrc": _text(grade)}
                for key, grades in case["strength"].items() for d, grade in grades.items()]
    visits = [{"patient_id": PATIENT, "visit_date": day(int(v["day"])),
               **{k: _text(x) for k, x in v.items() if k != "day"}} for v in case.get("visits") or []]
    patients = [{"patient_id": PATIENT, "birth_year": "1960", "sex": "F", "diabetes": "no"}]
    return make_records(patients, surgeries, strength, visits or None, today=date(2027, 12, 31))


PATHS = sorted(CASES.glob("*.yaml"))


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_clinical_case(path):
    case = load_case(path)
    as_of = SURGERY + timedelta(days=int(case["as_of_day"]))
    result = assess(records_of(case), as_of=as_of)
    prompts = result.prompts
    shown = [f"{p.rule_ids} {p.modality} {p.urgency} {p.evidence}" for p in prompts.itertuples()]
    expect = case["expect"]
    expected = expect.get("prompts") or []
    for wanted in expected:
        match = [p for p in prompts.itertuples() if wanted["rule"] in p.rule_ids]
        assert match, f"{case['id']}: no prompt from {wanted['rule']} (source: {case['source']}); got {shown}"
        prompt = match[0]
        assert (prompt.modality, prompt.urgency) == (wanted["modality"], wanted["urgency"]), (
            f"{case['id']}: {wanted['rule']} gave {prompt.modality}/{prompt.urgency}, expected "
            f"{wanted['modality']}/{wanted['urgency']} (source: {case['source']})")
        if wanted.get("evidence"):
            assert any(wanted["evidence"] in line for line in prompt.evidence), (
                f"{case['id']}: evidence should mention {wanted['evidence']!r}: {list(prompt.evidence)}")
        if wanted.get("evidence_absent"):
            assert not any(wanted["evidence_absent"] in line for line in prompt.evidence), (
                f"{case['id']}: evidence should not mention {wanted['evidence_absent']!r}: {list(prompt.evidence)}")
    if expect.get("only"):
        scans = {tuple(p.rule_ids) for p in prompts.itertuples()}
        wanted_scans = {p["rule"] for p in expected}
        assert all(set(ids) & wanted_scans for ids in scans), f"{case['id']}: unexpected prompts {shown}"
        assert set().union(*map(set, scans)) <= wanted_scans if scans else True, (
            f"{case['id']}: a rule not expected fired {shown}")
    for rule in expect.get("absent") or []:
        assert not any(rule in p.rule_ids for p in prompts.itertuples()), f"{case['id']}: {rule} fired: {shown}"
    for key, status in (expect.get("statuses") or {}).items():
        muscle, side = key.split()
        row = result.muscles[(result.muscles["muscle"] == muscle) & (result.muscles["side"] == side)]
        assert row["status"].tolist() == [status], f"{case['id']}: {key} is {row['status'].tolist()}"
    if not expected and expect.get("only"):
        assert prompts.empty
        text = no_prompt_text()
        assert "not recorded" in text.lower() or "never recorded" in text.lower()
        assert "nothing" not in text.lower() and "calls for imaging" not in text.lower()


def test_at_least_three_stories_per_hazard_the_rules_control():
    counted: dict[str, int] = {}
    for path in PATHS:
        for hazard in load_case(path)["hazards"]:
            counted[hazard] = counted.get(hazard, 0) + 1
    controlled = {hazard for rule in load_rules().rules for hazard in rule.hazards}
    thin = {hazard: counted.get(hazard, 0) for hazard in controlled if counted.get(hazard, 0) < 3}
    assert not thin, f"hazards with fewer than three clinical stories: {thin}"
