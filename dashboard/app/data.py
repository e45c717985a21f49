"""Cached access to the store and the cohort assessment for the Streamlit pages.

The assessment of the whole cohort is computed once per store version and assessment day and shared by
all sessions (st.cache_resource: no copy of large frames per rerun); an import bumps the store version,
so the next rerun recomputes. With it comes an index of each patient's rows, so that switching patient on
a large cohort costs that patient's rows, not a scan of the cohort.

Each assessment's prompts are written to the store's prompt log (only those not logged yet), so a prompt that
fires and goes away before anyone decides is still counted by prompt performance. Logging never stands between
the clinician and the prompts: when it fails, the prompts are shown all the same, a warning goes to the server
log, and a later rerun tries again (at most once a minute).
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import pandas as pd
import streamlit as st
from sqlalchemy import Engine, func, select

from dashboard.clinical.assessment import Assessment, assess
from dashboard.clinical.curves import PUBLISHED_REFERENCE, REFERENCE_DIR, load_reference
from dashboard.clinical.decisions import with_decisions
from dashboard.clinical.patient_view import CohortIndex, PatientView, patient_view
from dashboard.clinical.records.validate import validate
from dashboard.demo import DEFAULT_ANCHOR
from dashboard.mode import demo_mode
from dashboard.store import get_engine, import_records, latest_decisions, load_records
from dashboard.store.models import Import, Patient
from dashboard.store.prompt_log import record_prompts

#: The demo cohort's day: every demo record is counted back from it (dashboard/demo.py, data/demo/README.md).
DEMO_ANCHOR = DEFAULT_ANCHOR
DEMO_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"
CALIBRATED_DIR = Path(os.environ.get("SPINE_DASHBOARD_REFERENCE_DIR", REFERENCE_DIR))

log = logging.getLogger(__name__)
#: After a failure to write the prompt log, the next attempt waits this long (a store that refuses writes would
#: otherwise cost a failed write and a warning on every rerun of every session).
LOG_RETRY_SECONDS = 60.0


@dataclass
class Cohort:
    assessment: Assessment
    index: CohortIndex  # each patient's rows, looked up in constant time
    in_follow_up: list[str]  # patients with an index operation, most urgent open prompt first
    key: tuple  # (store version, assessment day, reference file): what the cohort was computed from
    prompts_logged: bool = False  # its prompts are in the store's prompt log (else the next use tries again)
    next_log_attempt: float = 0.0  # time.monotonic() before which no new attempt is made (after a failure)
    log_lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def exam_index(self) -> CohortIndex:
        """One patient's strength exams: `cohort.exam_index.exams(patient_id)`."""
        return self.index

    def find(self, text: str, limit: int) -> list[str]:
        """Patients in follow-up whose id, name or MRN contains `text` (any case), most urgent first, at most
        `limit`."""
        needle = text.strip().lower()
        if not needle:
            return self.in_follow_up[:limit]
        found = []
        searchable = self.searchable
        for patient_id in self.in_follow_up:
            if needle in searchable[patient_id]:
                found.append(patient_id)
                if len(found) == limit:
                    break
        return found

    def exact(self, text: str) -> str | None:
        """The patient in follow-up whose id is `text` (any case, surrounding spaces ignored), if any."""
        return self.by_lower_id.get(text.strip().lower())

    @functools.cached_property
    def labels(self) -> dict[str, str]:
        """Each patient in follow-up as the picker lists them: 'Name · MRN · id' (identified screens only)."""
        patients = self.assessment.patients
        names = patients["name"].astype("string").fillna("name not recorded").to_numpy()
        mrns = patients["mrn"].astype("string").fillna("no MRN").to_numpy()
        return {pid: f"{name} · {mrn} · {pid}" for pid, name, mrn in
                zip(patients["patient_id"].to_numpy(), names, mrns, strict=True)}

    @functools.cached_property
    def searchable(self) -> dict[str, str]:
        labels = self.labels
        return {patient_id: labels.get(patient_id, patient_id).lower() for patient_id in self.in_follow_up}

    @functools.cached_property
    def by_lower_id(self) -> dict[str, str]:
        return {patient_id.lower(): patient_id for patient_id in self.in_follow_up}


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


def store_version() -> int:
    """Changes whenever an import lands: the key that invalidates cached assessments."""
    with engine().connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(Import.__table__.c.id), 0))).scalar_one())


@st.cache_resource(show_spinner="Assessing the cohort…", max_entries=4)
def _cohort(version: int, as_of: date, reference_path: str) -> Cohort:
    records = load_records(engine())
    result = assess(records, as_of=as_of, reference=load_reference(reference_path))
    patients = result.patients
    in_follow_up = patients.loc[patients["surgery_date"].notna(), "patient_id"].tolist()
    computed = Cohort(result, CohortIndex(result), in_follow_up, (version, as_of, reference_path))
    log_prompts(computed)
    return computed


def log_prompts(computed: Cohort) -> None:
    """Write the cohort's prompts to the prompt log once (insert-if-absent). A failure is a warning in the server
    log, never an error on the page: the prompts are shown whatever happens here; the next use after
    LOG_RETRY_SECONDS tries again."""
    if computed.prompts_logged or time.monotonic() < computed.next_log_attempt:
        return
    if not computed.log_lock.acquire(blocking=False):  # another session is at it
        return
    started = time.perf_counter()
    try:
        added = record_prompts(engine(), computed.assessment.prompts, computed.assessment.as_of)
        computed.prompts_logged = True
        log.info("prompt log: %d new of %d prompts in %.2f s", added, len(computed.assessment.prompts),
                 time.perf_counter() - started)
    except Exception as problem:  # noqa: BLE001 — logged by type only (no patient data in logs)
        computed.next_log_attempt = time.monotonic() + LOG_RETRY_SECONDS
        log.warning("the prompts could not be written to the prompt log (%s); they are shown all the same, and "
                    "logging is tried again on the next use after %.0f s", type(problem).__name__, LOG_RETRY_SECONDS)
    finally:
        computed.log_lock.release()


def cohort() -> Cohort:
    """The assessment for the day and reference chosen in the sidebar (its prompts logged: log_prompts)."""
    computed = _cohort(store_version(), assessment_day(), st.session_state.get("reference_path",
                                                                               str(PUBLISHED_REFERENCE)))
    if not computed.prompts_logged:
        log_prompts(computed)
    return computed


@st.cache_resource(show_spinner=False, max_entries=32)
def _patient_view(key: tuple, patient_id: str, _cohort: Cohort) -> PatientView:
    return patient_view(_cohort.assessment, patient_id, index=_cohort.index)


def cached_patient_view(cohort: Cohort, patient_id: str) -> PatientView:
    """One patient's view, computed once per patient and cohort (a page reruns on every click).

    Shared, not copied: callers must not modify its frames.
    """
    return _patient_view(cohort.key, patient_id, cohort)


def warm_cohort() -> None:
    """Assess the store once when the server starts (the day and reference a new session opens on), so the
    first sign-in finds the clinic list ready instead of waiting for the store to be read (about 18 s at
    20,000 patients). Runs on a thread of its own; a failure only means the first screen does the work."""
    started = time.perf_counter()
    try:
        cohort = _cohort(store_version(), default_assessment_day(), str(PUBLISHED_REFERENCE))
        log.info("cohort ready: %d patients assessed in %.1f s", len(cohort.assessment.patients),
                 time.perf_counter() - started)
    except Exception as problem:  # noqa: BLE001 — logged by type only (no patient data in logs)
        log.warning("the cohort could not be prepared at start (%s)", type(problem).__name__)


def default_assessment_day() -> date:
    """Today; in demo mode the demo's anchor day (its records are counted back from it)."""
    return DEMO_ANCHOR if demo_mode() else date.today()


def assessment_day() -> date:
    return st.session_state.get("as_of") or default_assessment_day()


def prompts_with_decisions(assessment: Assessment) -> pd.DataFrame:
    """The cohort's prompts with the decision in force for each (read fresh: decisions are small)."""
    return with_decisions(assessment.prompts, latest_decisions(engine()))


def patient_prompts_with_decisions(cohort: Cohort, patient_id: str) -> pd.DataFrame:
    """One patient's prompts with the decision in force for each, read fresh from that patient's decisions.

    The same rows as prompts_with_decisions(...) filtered to the patient, without a pass over the cohort.
    """
    in_force = latest_decisions(engine(), patient_id)
    return with_decisions(cohort.index.prompts(patient_id).reset_index(drop=True), in_force)


@st.cache_data(ttl=60, show_spinner=False)
def reference_files() -> dict[str, str]:
    """Published and calibrated reference files, by title, the published one first (re-read at most once a
    minute)."""
    files = {}
    # The published reference first: it is the default everywhere; a calibrated file never is by sorting first.
    paths = sorted({*REFERENCE_DIR.glob("*.yaml"), *CALIBRATED_DIR.glob("*.yaml")},
                   key=lambda path: (path.resolve() != PUBLISHED_REFERENCE.resolve(), str(path)))
    for path in paths:
        try:
            reference = load_reference(path)
        except ValueError:
            continue
        files[f"{reference.title} ({reference.kind})"] = str(path)
    return files


def clear_caches() -> None:
    """After an import: the next rerun reloads and reassesses."""
    _cohort.clear()
    _patient_view.clear()
