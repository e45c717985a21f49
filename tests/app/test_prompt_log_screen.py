"""The app logs the cohort's prompts (never at the cost of showing them), and the Outcomes screen's prompt tab
shows fired and went-away-undecided per rule, with the emergencies that went away undecided named."""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime

import pandas as pd
import pytest

from dashboard.app import data
from dashboard.store import get_engine
from dashboard.store.prompt_log import insert_rows, prompt_log, record_prompts
from dashboard.theme import URGENCY_LABELS
from tests.app_fixtures import app_store, run_app

FIXTURES = (app_store,)  # imported for pytest, which finds fixtures by name
SECTION = "How the prompts perform"


def _alarm(at) -> list[str]:  # noqa: ANN001 — an AppTest
    return [e.value for e in at.error if "ALARM" in e.value]


def _break_logging(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The store refuses the prompt log's writes; returns the list each attempt appends to."""
    calls: list[int] = []

    def broken(*_args, **_kwargs) -> int:
        calls.append(1)
        raise RuntimeError("the store is read-only")

    data.clear_caches()
    monkeypatch.setattr(data, "record_prompts", broken)
    return calls


def test_a_failure_to_log_hides_no_prompt_and_is_retried(app_store: str, monkeypatch: pytest.MonkeyPatch,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    calls = _break_logging(monkeypatch)
    monkeypatch.setattr(data, "LOG_RETRY_SECONDS", 0.0)
    with caplog.at_level(logging.WARNING, logger="dashboard.app.data"):
        at = run_app(user="surgeon", role="surgeon")
    assert _alarm(at) and at.dataframe[-1].value["urgency"].iloc[0] == "Emergency"  # the prompts are on screen
    assert ("the prompts could not be written to the prompt log (RuntimeError); they are shown all the same, and "
            "logging is tried again on the next use after 0 s") in caplog.text
    assert prompt_log(get_engine(app_store)).empty and len(calls) >= 1
    monkeypatch.setattr(data, "record_prompts", record_prompts)
    run_app(user="surgeon", role="surgeon")  # the same cached cohort: logged now
    log = prompt_log(get_engine(app_store))
    assert len(log) > 0 and not log.duplicated(["patient_id", "rule_id", "evidence_hash"]).any()
    assert set(log["as_of"].dt.date) == {data.DEMO_ANCHOR}


def test_after_a_failure_to_log_the_next_attempt_waits_a_minute(app_store: str, monkeypatch: pytest.MonkeyPatch
                                                                ) -> None:
    """A store that refuses writes costs one failed write a minute, not one per rerun of every session."""
    calls = _break_logging(monkeypatch)
    assert data.LOG_RETRY_SECONDS == 60
    for _ in range(3):
        at = run_app(user="surgeon", role="surgeon")
        assert _alarm(at)
    assert len(calls) == 1


def test_the_prompt_tab_shows_fired_and_what_went_away_undecided(app_store: str) -> None:
    run_app(user="surgeon", role="surgeon")  # the cohort's prompts are logged
    at = run_app("screens/outcomes.py", user="surgeon", role="surgeon")
    at.radio(key="outcomes_section").set_value(SECTION).run()
    assert not at.exception
    rules = at.dataframe[0].value
    assert {"fired", "went_away_undecided", "emergencies_went_away_undecided"} <= set(rules.columns)
    assert (rules["fired"] >= rules["prompts_now"]).all() and rules["went_away_undecided"].sum() == 0
    assert not [w for w in at.warning if "went away" in w.value]
    # An emergency prompt logged earlier whose patient no longer has it, and nobody decided on it.
    engine = get_engine(app_store)
    gone = pd.DataFrame([{
        "patient_id": "P00001", "rule_id": "red-cauda-equina", "decision_key": "scan:mri",
        "evidence_hash": "0123456789abcdef", "decision_basis": None, "urgency": "emergency", "modality": "mri",
        "first_seen": date(2026, 10, 1), "first_shown_at": datetime(2026, 10, 1, 9, tzinfo=UTC),
        "as_of": date(2026, 10, 1)}])
    fires_now = set(prompt_log(engine).query("rule_id == 'red-cauda-equina'")["patient_id"])
    assert "P00001" not in fires_now
    assert insert_rows(engine, gone) == 1
    at = run_app("screens/outcomes.py", user="surgeon", role="surgeon")  # the log grew: the tables are recomputed
    at.radio(key="outcomes_section").set_value(SECTION).run()
    row = at.dataframe[0].value.set_index("rule_id").loc["red-cauda-equina"]
    assert (row["went_away_undecided"], row["emergencies_went_away_undecided"]) == (1, 1)
    assert ("1 emergency prompt(s) went away with no decision recorded (missed follow-through?): see 'How the "
            "prompts perform'.") in [w.value for w in at.warning]
    listed = next(frame.value for frame in at.dataframe if "first_shown_at" in frame.value.columns)
    assert listed[["patient_id", "rule_id", "urgency"]].values.tolist() == [["P00001", "red-cauda-equina",
                                                                            URGENCY_LABELS["emergency"]]]
