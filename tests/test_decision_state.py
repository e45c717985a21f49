"""The clinician's decision: stored append-only, shown with its prompt, and the prompt comes back as new
when its evidence changes."""

from __future__ import annotations

from datetime import date

from builders import exams, make_records, patient, surgery, visit

from dashboard.core.assessment import assess
from dashboard.core.checklist import evidence_hash
from dashboard.core.decision_state import open_prompts, with_decisions
from dashboard.store import decision_history, get_engine, import_records, latest_decisions, record_decision

DF = "ankle_dorsiflexion"
PLATEAU = {-3: "4-", 14: "3", 42: "3", 90: "3"}  # below the published-v2 expected range (weaker than before)


def prompts(records, as_of=date(2026, 6, 1)):
    return assess(records, as_of=as_of).prompts


def test_a_decision_holds_until_the_evidence_changes(tmp_path):
    engine = get_engine(f"sqlite:///{tmp_path / 'store.db'}")
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", DF, "R", PLATEAU))
    import_records(engine, records, source_name="test")
    before = prompts(records)
    assert before["rule_id"].tolist() == ["compression-behind-expected"]
    record_decision(engine, patient_id="P1", rule_id="compression-behind-expected",
                    evidence_hash=evidence_hash(before["evidence"].iloc[0]), decision="deferred", reason="review",
                    clinician="Dr A")
    record_decision(engine, patient_id="P1", rule_id="compression-behind-expected",
                    evidence_hash=evidence_hash(before["evidence"].iloc[0]), decision="not_indicated",
                    reason="Known foot drop, orthosis fitted", clinician="Dr A")
    shown = with_decisions(before, latest_decisions(engine))
    assert shown[["decision", "decision_reason", "decided_by", "decision_current"]].values.tolist() == [
        ["not_indicated", "Known foot drop, orthosis fitted", "Dr A", True]]
    assert open_prompts(shown).empty
    assert decision_history(engine, "P1")["decision"].tolist() == ["deferred", "not_indicated"]  # append-only

    later = make_records([patient("P1")], [surgery("P1")], exams("P1", DF, "R", {**PLATEAU, 140: "3"}))
    after = with_decisions(prompts(later), latest_decisions(engine))
    assert after["decision_current"].tolist() == [False]  # new exam, new evidence: review again
    assert after["decision"].tolist() == ["not_indicated"]  # the earlier decision is still shown
    assert len(open_prompts(after)) == 1


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
