"""Cached access to the store and the cohort assessment for the Streamlit pages.

The assessment of the whole cohort is computed once per store version and assessment day and shared by
all sessions (st.cache_resource: no copy of large frames per rerun); an import bumps the store version,
so the next rerun recomputes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pandas as pd
import streamlit as st
from sqlalchemy import Engine, func, select

from dashboard.core.assessment import Assessment, assess
from dashboard.core.curves import PUBLISHED_REFERENCE, REFERENCE_DIR, load_reference
from dashboard.core.decision_state import with_decisions
from dashboard.core.patient_view import ExamIndex
from dashboard.core.records import validate
from dashboard.store import get_engine, import_records, latest_decisions, load_records
from dashboard.store.models import Import, Patient

DEMO_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"
CALIBRATED_DIR = Path(os.environ.get("SPINE_DASHBOARD_REFERENCE_DIR", REFERENCE_DIR))


@dataclass
class Cohort:
    assessment: Assessment
    exam_index: ExamIndex


@st.cache_resource(show_spinner="Opening the store…")
def engine() -> Engine:
    """The store's engine; an empty store in demo mode gets the shipped demo cohort."""
    store = get_engine()
    if demo_mode():
        with store.connect() as conn:
            empty = conn.execute(select(func.count()).select_from(Patient.__table__)).scalar_one() == 0
        if empty and DEMO_DIR.exists():
            records, report = validate(DEMO_DIR)
            if records is not None:
                import_records(store, records, source_name="data/demo", user="demo-seed")
    return store


def demo_mode() -> bool:
    return os.environ.get("SPINE_DASHBOARD_MODE", "demo") == "demo"


def store_version() -> int:
    """Changes whenever an import lands: the key that invalidates cached assessments."""
    with engine().connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Import.__table__.c.id), 0))).scalar_one())


@st.cache_resource(show_spinner="Assessing the cohort…", max_entries=4)
def _cohort(version: int, as_of: date, reference_path: str) -> Cohort:
    records = load_records(engine())
    result = assess(records, as_of=as_of, reference=load_reference(reference_path))
    return Cohort(result, ExamIndex(result.records.strength))


def cohort() -> Cohort:
    """The assessment for the day and reference chosen in the sidebar."""
    return _cohort(store_version(), assessment_day(), st.session_state.get("reference_path",
                                                                           str(PUBLISHED_REFERENCE)))


def assessment_day() -> date:
    return st.session_state.get("as_of") or date.today()


def prompts_with_decisions(assessment: Assessment) -> pd.DataFrame:
    """The cohort's prompts with the decision in force for each (read fresh: decisions are small)."""
    return with_decisions(assessment.prompts, latest_decisions(engine()))


@st.cache_data(ttl=60, show_spinner=False)
def reference_files() -> dict[str, str]:
    """Published and calibrated reference files, by title (re-read at most once a minute)."""
    files = {}
    for path in sorted({*REFERENCE_DIR.glob("*.yaml"), *CALIBRATED_DIR.glob("*.yaml")}):
        try:
            reference = load_reference(path)
        except ValueError:
            continue
        files[f"{reference.title} ({reference.kind})"] = str(path)
    return files


def clear_caches() -> None:
    """After an import: the next rerun reloads and reassesses."""
    _cohort.clear()
