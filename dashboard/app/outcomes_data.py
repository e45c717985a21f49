"""Cached outcome tables for the outcomes screen: computed once per cohort (store version, assessment day,
reference) and shared by all sessions, like dashboard/app/data.py's cohort; the prompt performance once per
cohort, decision count and prompt-log size (both are appended to, never changed: a new decision or a newly logged
prompt changes the key)."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from sqlalchemy import func, select

from dashboard.app import data
from dashboard.clinical.imaging.checklist import load_rules
from dashboard.clinical.outcomes import GROUPINGS, Outcomes, cohort_outcomes
from dashboard.clinical.prompt_performance import rule_performance, went_away
from dashboard.store.decisions import decision_history
from dashboard.store.models import Decision
from dashboard.store.prompt_log import prompt_log, prompt_log_size


@st.cache_resource(show_spinner="Computing the cohort outcomes…", max_entries=4)
def _outcomes(key: tuple, _cohort: data.Cohort) -> Outcomes:
    assessment = _cohort.assessment
    outcomes = cohort_outcomes(assessment.records, assessment.as_of, assessment.reference)
    for grouping in GROUPINGS:  # every grouping's curves (default endpoint) before a page asks: 0.1-0.3 s each
        outcomes.recovery(grouping)
    return outcomes


def outcomes(cohort: data.Cohort) -> Outcomes:
    return _outcomes(cohort.key, cohort)


def decision_count() -> int:
    table = Decision.__table__
    with data.engine().connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())


@st.cache_resource(show_spinner="Measuring the prompts…", max_entries=4)
def _performance(key: tuple, decisions: int, logged: int, _cohort: data.Cohort
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    assessment = _cohort.assessment
    history, log = decision_history(data.engine()), prompt_log(data.engine())
    rules, states, reasons = rule_performance(assessment.prompts, history, assessment.visits, assessment.as_of,
                                              load_rules(), log=log)
    away = went_away(log, assessment.prompts, history, assessment.as_of)
    return rules, states, reasons, away[away["went_away_undecided"].to_numpy(dtype=bool)].reset_index(drop=True)


def prompt_performance(cohort: data.Cohort) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(per-rule table, prompt states, not-indicated reasons, logged prompts that went away undecided) for the
    cohort, the decisions recorded and the prompts logged now."""
    return _performance(cohort.key, decision_count(), prompt_log_size(data.engine()), cohort)


def clear() -> None:
    _outcomes.clear()
    _performance.clear()


@st.cache_resource(show_spinner=False, max_entries=64)
def _figure(key: tuple, kind: str, grouping: str, endpoint: str, measure: str, _outcomes: Outcomes):
    """A figure of the outcomes screen, built once per cohort and choice (building a Plotly figure costs more
    than drawing it). Shared by all sessions: callers must not modify it."""
    from dashboard.clinical.outcomes import PROMS  # noqa: PLC0415
    from dashboard.outcome_charts import coverage_figure, proms_figure, recovery_figure  # noqa: PLC0415

    if kind == "recovery":
        return recovery_figure(_outcomes.recovery(grouping, endpoint)[0])
    if kind == "coverage":
        coverage = _outcomes.coverage[_outcomes.coverage["grouping"] == grouping]
        return coverage_figure(coverage, "Where the clinic's muscle-sides fall against the expected band")
    proms = _outcomes.proms[_outcomes.proms["grouping"] == grouping]
    return proms_figure(proms, measure, PROMS[measure])


def figure(cohort: data.Cohort, outcomes: Outcomes, kind: str, grouping: str, endpoint: str = "",
           measure: str = ""):
    return _figure(cohort.key, kind, grouping, endpoint, measure, outcomes)
