"""Clinical stories of the prompt log (issue 21, docs/outcomes.md "How the prompts perform"): an emergency prompt
that fired and went away with nobody deciding is counted as fired and as went-away-undecided; with a decision on
it (or one that held over it) it is not undecided; a prompt still asking for the scan on newer evidence has not
gone away.

P1 has saddle anaesthesia recorded on day 30 after a TLIF (red-cauda-equina: emergency MRI, Todd 2005 and the
rules file's sources); on day 33 it is recorded absent, so the prompt no longer fires from then on.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest
from sqlalchemy import Engine

from dashboard.clinical.assessment import assess
from dashboard.clinical.imaging.checklist import decision_fingerprint, load_rules
from dashboard.clinical.prompt_performance import rule_performance, went_away
from dashboard.store import decision_history, import_records, record_decision
from dashboard.store.decisions import _frame  # the empty decision history, as the command line makes it
from dashboard.store.prompt_log import prompt_log, record_prompts
from tests.builders import SURGERY, exams, make_records, patient, surgery, visit
from tests.store_fixtures import store_engine, store_url

FIXTURES = (store_engine, store_url)  # imported for pytest, which finds fixtures by name
RULE = "red-cauda-equina"


def on(n: int) -> date:
    return SURGERY + timedelta(days=n)


def _story(engine: Engine, visits: list[dict]):
    records = make_records([patient("P1")], [surgery("P1")], exams("P1", "ankle_dorsiflexion", "R", {-2: "5", 5: "5"}),
                           visits)
    import_records(engine, records, source_name="story", user="t")
    return records


def _shown(engine: Engine, records, n: int) -> pd.DataFrame:
    """The prompts the clinic computes on day n, logged as the app logs them."""
    prompts = assess(records, as_of=on(n)).prompts
    record_prompts(engine, prompts, on(n), shown_at=datetime.combine(on(n), datetime.min.time(), UTC))
    return prompts


def _decide(engine: Engine, prompt: pd.Series, n: int, decision: str = "ordered") -> None:
    """A decision recorded as the clinic screen records it (against the prompt's decision fingerprint)."""
    record_decision(engine, patient_id="P1", rule_id=prompt["rule_id"], evidence_hash=decision_fingerprint(prompt),
                    decision=decision, clinician="dr", decided_at=datetime.combine(on(n), datetime.min.time(), UTC))


def _rule(engine: Engine, records, n: int, with_log: bool = True) -> pd.Series:
    result = assess(records, as_of=on(n))
    table, _, _ = rule_performance(result.prompts, decision_history(engine), result.visits, on(n), load_rules(),
                                   log=prompt_log(engine) if with_log else None)
    return table.set_index("rule_id").loc[RULE]


def test_an_emergency_that_went_away_undecided_counts_as_fired_and_undecided(store_engine: Engine) -> None:
    records = _story(store_engine, [visit("P1", 30, saddle_anesthesia="yes"), visit("P1", 33, saddle_anesthesia="no")])
    assert len(_shown(store_engine, records, 31)) == 1
    assert _shown(store_engine, records, 34).empty  # the patient recovered: the prompt no longer fires
    row = _rule(store_engine, records, 34)
    assert (row["fired"], row["prompts_now"], row["patients"]) == (1, 0, 1)
    assert (row["went_away_undecided"], row["emergencies_went_away_undecided"]) == (1, 1)
    blind = _rule(store_engine, records, 34, with_log=False)  # without the log, as before: never seen
    assert (blind["fired"], blind["went_away_undecided"], blind["patients"]) == (0, 0, 0)


def test_with_a_decision_it_is_fired_once_and_not_undecided(store_engine: Engine) -> None:
    records = _story(store_engine, [visit("P1", 30, saddle_anesthesia="yes"), visit("P1", 33, saddle_anesthesia="no")])
    prompts = _shown(store_engine, records, 31)
    _decide(store_engine, prompts.iloc[0], 31)
    row = _rule(store_engine, records, 34)
    assert (row["fired"], row["ordered"]) == (1, 1)  # the decided prompt is the logged one, not a second
    assert (row["went_away_undecided"], row["emergencies_went_away_undecided"]) == (0, 0)


def test_time_to_a_decision_recorded_against_the_decision_basis(store_engine: Engine) -> None:
    """The screen records a decision against the prompt's decision basis: its day counts (evidence day 30,
    decided day 32: 2 days)."""
    records = _story(store_engine, [visit("P1", 30, saddle_anesthesia="yes")])
    prompts = _shown(store_engine, records, 31)
    _decide(store_engine, prompts.iloc[0], 32)
    row = _rule(store_engine, records, 33)
    assert row["median_days_to_decision"] == 2 and (row["fired"], row["open"], row["prompts_now"]) == (1, 0, 1)


def test_a_prompt_still_firing_on_newer_evidence_has_not_gone_away(store_engine: Engine) -> None:
    records = _story(store_engine, [visit("P1", 30, saddle_anesthesia="yes"), visit("P1", 33, saddle_anesthesia="yes")])
    _shown(store_engine, records, 31)
    _shown(store_engine, records, 34)  # recorded again: new evidence lines, the same scan asked for
    row = _rule(store_engine, records, 34)
    assert (row["fired"], row["prompts_now"], row["open"]) == (2, 1, 1)
    assert row["went_away_undecided"] == 0


def test_a_held_decision_covers_later_evidence_that_is_no_worse_and_not_worse_evidence(store_engine: Engine) -> None:
    """Ordered on day 31; saddle anaesthesia recorded again on day 33 (no worse: the decision held, the screen
    showed it decided), gone on day 36: nothing went away undecided. When day 33 adds urinary retention (worse:
    the prompt came back as new) and nobody decides, that prompt went away undecided."""
    for worse, expected in ((False, 0), (True, 1)):
        engine = store_engine
        pid = "P2" if worse else "P1"
        again = {"saddle_anesthesia": "yes", **({"urinary_retention": "yes"} if worse else {})}
        records = make_records([patient(pid)], [surgery(pid)],
                               exams(pid, "ankle_dorsiflexion", "R", {-2: "5", 5: "5"}),
                               [visit(pid, 30, saddle_anesthesia="yes"), visit(pid, 33, **again),
                                visit(pid, 36, saddle_anesthesia="no", urinary_retention="no")])
        import_records(engine, records, source_name=f"story {pid}", user="t")
        first = assess(records, as_of=on(31)).prompts
        record_prompts(engine, first, on(31))
        record_decision(engine, patient_id=pid, rule_id=RULE, evidence_hash=decision_fingerprint(first.iloc[0]),
                        decision="ordered", clinician="dr", decided_at=datetime.combine(on(31), datetime.min.time(),
                                                                                          UTC))
        assert record_prompts(engine, assess(records, as_of=on(34)).prompts, on(34)) == 1
        result = assess(records, as_of=on(37))
        assert result.prompts.empty
        away = went_away(prompt_log(engine), result.prompts, decision_history(engine), on(37))
        mine = away[away["patient_id"] == pid]
        assert mine["went_away_undecided"].tolist() == [False, bool(expected)], worse
        assert mine["decided"].tolist() == [True, not worse]


def test_a_prompt_first_seen_after_the_assessment_day_is_not_counted(store_engine: Engine) -> None:
    records = _story(store_engine, [visit("P1", 30, saddle_anesthesia="yes"), visit("P1", 33, saddle_anesthesia="no")])
    _shown(store_engine, records, 31)
    before = _rule(store_engine, records, 29)  # the evidence of day 30 was not known yet
    assert (before["fired"], before["went_away_undecided"]) == (0, 0)
    on_the_day = _rule(store_engine, records, 30)
    assert (on_the_day["fired"], on_the_day["prompts_now"], on_the_day["went_away_undecided"]) == (1, 1, 0)


@pytest.mark.parametrize("urgency", ["urgent", "routine"])
def test_only_emergencies_count_as_emergencies(urgency: str) -> None:
    log = pd.DataFrame({"patient_id": ["P9"], "rule_id": ["r"], "decision_key": ["rule:r"], "evidence_hash": ["h"],
                        "decision_basis": [None], "urgency": [urgency], "modality": ["ct"],
                        "first_seen": [pd.Timestamp("2026-02-01")], "first_shown_at": [pd.Timestamp("2026-02-01",
                                                                                                     tz="UTC")],
                        "as_of": [pd.Timestamp("2026-02-01")]})
    prompts = assess(make_records([patient("P1")], [surgery("P1")], exams("P1", "ankle_dorsiflexion", "R", {5: "5"})),
                     as_of=on(40)).prompts
    table, _, _ = rule_performance(prompts, _frame([]), pd.DataFrame({"patient_id": [], "visit_date": []}), on(40),
                                   log=log)
    row = table.set_index("rule_id").loc["r"]
    assert (row["fired"], row["went_away_undecided"], row["emergencies_went_away_undecided"]) == (1, 1, 0)
    assert (row["urgency"], row["modality"]) == (urgency, "ct")


def _log_row(rule: str, basis: str | None, urgency: str = "emergency") -> dict:
    return {"patient_id": "P9", "rule_id": rule, "decision_key": "scan:mri", "evidence_hash": "h1",
            "decision_basis": basis, "urgency": urgency, "modality": "mri", "first_seen": pd.Timestamp("2026-02-01"),
            "first_shown_at": pd.Timestamp("2026-02-01", tz="UTC"), "as_of": pd.Timestamp("2026-02-01")}


def test_a_decision_under_another_rule_of_the_same_scan_is_the_logged_prompt() -> None:
    """A merged prompt's most urgent rule may change: the decision recorded under the other rule, on this prompt's
    basis, is a decision on the logged prompt (fired once, not undecided); one on other evidence is a second
    prompt fired under its own rule, and the logged one stays undecided."""
    basis = "basis:v1|u=0|r=red-cauda-equina|f:red-cauda-equina:0=1.00"
    log = pd.DataFrame([_log_row("red-cauda-equina", basis)])
    prompts = assess(make_records([patient("P1")], [surgery("P1")], exams("P1", "ankle_dorsiflexion", "R", {5: "5"})),
                     as_of=on(40)).prompts
    visits = pd.DataFrame({"patient_id": [], "visit_date": []})
    for fingerprint, fired, undecided in ((basis, {"red-cauda-equina": 1, "compression-progressive-weakness": 0}, 0),
                                          ("other", {"red-cauda-equina": 1, "compression-progressive-weakness": 1}, 1)):
        history = _frame([(1, "P9", "compression-progressive-weakness", fingerprint, "ordered", None, "dr",
                           datetime(2026, 2, 2, tzinfo=UTC))])
        table, _, _ = rule_performance(prompts, history, visits, on(40), load_rules(), log=log)
        rows = table.set_index("rule_id")
        assert rows.loc[list(fired), "fired"].to_dict() == fired, fingerprint
        assert rows.loc["red-cauda-equina", "went_away_undecided"] == undecided, fingerprint
