"""The clinician's decision: stored append-only, shown with its prompt, and the prompt comes back as new
when its evidence changes."""

from __future__ import annotations

from datetime import date

import pandas as pd

from dashboard.clinical.assessment import assess
from dashboard.clinical.decisions import open_prompts, with_decisions
from dashboard.clinical.imaging.checklist import decision_fingerprint, evidence_hash
from dashboard.store import decision_history, get_engine, import_records, latest_decisions, record_decision
from tests.builders import exams, make_records, patient, surgery, visit

DF = "ankle_dorsiflexion"
PLATEAU = {-3: "4-", 14: "3", 42: "3", 90: "3"}  # below the published-v2 expected range (weaker than before)


def prompts(records, as_of=date(2026, 6, 1)):
    return assess(records, as_of=as_of).prompts


def test_a_decision_holds_until_the_evidence_changes(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'store.db'}")
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", DF, "R", PLATEAU))
    import_records(engine, records, source_name="test")
    before = prompts(records)
    assert before["rule_id"].tolist() == ["compression-no-gain-3-months"]
    record_decision(engine, patient_id="P1", rule_id="compression-no-gain-3-months",
                    evidence_hash=evidence_hash(before["evidence"].iloc[0]), decision="deferred", reason="review",
                    clinician="Dr A")
    record_decision(engine, patient_id="P1", rule_id="compression-no-gain-3-months",
                    evidence_hash=evidence_hash(before["evidence"].iloc[0]), decision="not_indicated",
                    reason="Known foot drop, orthosis fitted", clinician="Dr A")
    shown = with_decisions(before, latest_decisions(engine))
    assert shown[["decision", "decision_reason", "decided_by", "decision_current"]].values.tolist() == [
        ["not_indicated", "Known foot drop, orthosis fitted", "Dr A", True]]
    assert open_prompts(shown).empty
    assert decision_history(engine, "P1")["decision"].tolist() == ["deferred", "not_indicated"]  # append-only

    later = make_records([patient("P1")], [surgery("P1")], exams("P1", DF, "R", {**PLATEAU, 140: "3"}))
    after = with_decisions(prompts(later), latest_decisions(engine))
    assert after["decision_current"].tolist() == [False]  # recorded against the evidence lines: they changed
    assert after["decision"].tolist() == ["not_indicated"]  # the earlier decision is still shown
    assert len(open_prompts(after)) == 1


EHL = "great_toe_extension"
NEW_DEFICIT = {-3: "5", 2: "3", 20: "3"}  # a new deficit at an instrumented level: CT (and MRI)


def decided_on(records, engine, as_of=date(2026, 2, 1)):
    current = prompts(records, as_of)
    ct = current[current["rule_id"] == "hardware-screw-position"].iloc[0]
    record_decision(engine, patient_id="P1", rule_id=ct.rule_id, evidence_hash=decision_fingerprint(ct),
                    decision="ordered", clinician="Dr A")
    return ct


def ct_state(strength, engine, as_of):
    records = make_records([patient("P1")], [surgery("P1")], strength)
    shown = with_decisions(prompts(records, as_of), latest_decisions(engine))
    return shown[shown["rule_id"] == "hardware-screw-position"].iloc[0]


def test_a_decision_stays_in_force_while_the_evidence_is_no_worse(tmp_path):
    # Was: any change of the evidence lines (a new exam, even a better grade) reopened the decision.
    engine = get_engine(f"sqlite:///{tmp_path / 'store.db'}")
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", EHL, "L", NEW_DEFICIT))
    import_records(engine, records, source_name="test")
    decided_on(records, engine)
    better = ct_state(exams("P1", EHL, "L", {**NEW_DEFICIT, 40: "4"}), engine, date(2026, 2, 25))
    assert bool(better.decision_current)  # improving: the CT decided on stays decided
    same = ct_state(exams("P1", EHL, "L", {**NEW_DEFICIT, 40: "3"}), engine, date(2026, 2, 25))
    assert bool(same.decision_current)  # the same grade at a later exam is no worse


def test_a_decision_reopens_when_the_evidence_is_worse_or_new(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'store.db'}")
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", EHL, "L", NEW_DEFICIT))
    import_records(engine, records, source_name="test")
    decided_on(records, engine)
    worse = ct_state(exams("P1", EHL, "L", {**NEW_DEFICIT, 24: "2"}), engine, date(2026, 2, 5))
    assert not worse.decision_current and worse.decision == "ordered"  # a grade lower: review again
    other = exams("P1", DF, "L", {-3: "5", 2: "5", 22: "3"})
    new_muscle = ct_state(exams("P1", EHL, "L", NEW_DEFICIT) + other, engine, date(2026, 2, 5))
    assert not new_muscle.decision_current  # a new muscle weak at the screw level: review again


def test_deferred_prompts_stay_open_and_other_patients_are_untouched():
    records = make_records([patient("P1"), patient("P2")], [surgery("P1"), surgery("P2")],
                           exams("P1", DF, "R", PLATEAU) + exams("P2", DF, "R", PLATEAU),
                           [visit("P2", 90, calf_swelling="yes")])
    current = prompts(records)
    decisions = current[current["patient_id"] == "P1"][["patient_id", "rule_id"]].assign(
        evidence_hash=[evidence_hash(lines) for lines in current.loc[current["patient_id"] == "P1", "evidence"]],
        decision="deferred", reason=None, clinician="Dr B", decided_at=None)
    shown = with_decisions(current, decisions)
    assert shown.loc[shown["patient_id"] == "P1", "decision_current"].all()
    assert len(open_prompts(shown)) == len(current)  # deferred stays on the list
    assert shown.loc[shown["patient_id"] == "P2", "decision"].isna().all()


def mri_state(visits, engine, as_of, grades=None):
    """The MRI prompt of P1 (a grade lost at an instrumented level on day 40) with its decision state."""
    strength = exams("P1", EHL, "L", grades or {-3: "5", 2: "5", 30: "5", 40: "4"})
    records = make_records([patient("P1")], [surgery("P1")], strength, visits)
    shown = with_decisions(prompts(records, as_of), latest_decisions(engine))
    return shown[shown["modality"].isin(["mri", "mri_contrast"])].iloc[0]


def test_a_merged_prompt_keeps_its_decision_when_another_rule_becomes_the_most_urgent(tmp_path):
    # Was: the decision key was the most urgent rule's id, so the MRI decided while wound drainage made
    # red-infection its most urgent rule came back undecided once the drainage stopped.
    engine = get_engine(f"sqlite:///{tmp_path / 'store.db'}")
    import_records(engine, make_records([patient("P1")], [surgery("P1")], exams("P1", EHL, "L", {-3: "5"})),
                   source_name="test")
    draining = [visit("P1", 45, wound_drainage="yes")]
    merged = mri_state(draining, engine, date(2026, 2, 25))
    assert merged.rule_ids == ["red-infection", "compression-progressive-weakness"]
    assert merged.rule_id == "red-infection" and merged.urgency == "emergency"
    record_decision(engine, patient_id="P1", rule_id=merged.rule_id, evidence_hash=decision_fingerprint(merged),
                    decision="ordered", clinician="Dr A")
    assert bool(mri_state(draining, engine, date(2026, 2, 25)).decision_current)

    stopped = draining + [visit("P1", 50, wound_drainage="no")]
    after = mri_state(stopped, engine, date(2026, 3, 2))
    assert after.rule_id == "compression-progressive-weakness"  # another rule is now the most urgent
    assert (after.decision, bool(after.decision_current)) == ("ordered", True)  # same scan, evidence no worse

    worse = mri_state(stopped, engine, date(2026, 3, 7), {-3: "5", 2: "5", 30: "5", 40: "4", 55: "3"})
    assert (worse.decision, bool(worse.decision_current)) == ("ordered", False)  # a lower grade reopens it
    returning = stopped + [visit("P1", 52, fever="yes"), visit("P1", 53, fever="yes")]
    new_finding = mri_state(returning, engine, date(2026, 3, 5))
    assert not new_finding.decision_current  # a new finding (sustained fever) reopens it


def test_the_latest_decision_of_any_rule_of_the_scan_is_the_one_in_force():
    current = prompts(make_records([patient("P1")], [surgery("P1")], exams("P1", DF, "R", PLATEAU)))
    row = current.iloc[0]
    decisions = pd.DataFrame({
        "patient_id": ["P1", "P1"], "rule_id": [row.rule_id, "compression-progressive-weakness"],
        "evidence_hash": [decision_fingerprint(row), "basis:v1|u=1|r=compression-progressive-weakness"],
        "decision": ["not_indicated", "ordered"], "reason": ["orthosis", None], "clinician": ["Dr A", "Dr B"],
        "decided_at": pd.to_datetime(["2026-05-02", "2026-05-01"], utc=True)})
    shown = with_decisions(current, decisions)
    assert shown[["decision", "decided_by", "decision_current"]].values.tolist() == [["not_indicated", "Dr A", True]]
    shown = with_decisions(current, decisions.assign(decided_at=pd.to_datetime(["2026-05-01", "2026-05-02"],
                                                                                 utc=True)))
    assert shown[["decision", "decided_by", "decision_current"]].values.tolist() == [["ordered", "Dr B", False]]
