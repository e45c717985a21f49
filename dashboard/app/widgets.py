"""Widgets shared by the pages: sidebar settings, urgency badges and the checklist panel."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import audit_event, auth_config
from dashboard.clinical.decisions import DECISION_LABELS
from dashboard.clinical.imaging.checklist import decision_fingerprint, no_prompt_text
from dashboard.clinical.wording import evidence_lines
from dashboard.store import record_decision
from dashboard.store.decisions import REASON_REQUIRED
from dashboard.theme import CATEGORY_LABELS, MODALITY_LABELS, URGENCY_ICONS, URGENCY_LABELS

#: Most patients the patient list offers at once: a search finds any other (a list of every patient in a
#: large clinic made each rerun of the Patient page slow to build, send and draw).
PICKER_OPTIONS = 200


def sidebar_settings() -> None:
    """Assessment day and reference file (surgeons' clinical screens). The published reference is in force
    until the user chooses another here; the reference in force is always named."""
    with st.sidebar:
        default_day = data.default_assessment_day()
        st.date_input("Assess as of", key="as_of", value=st.session_state.get("as_of", default_day),
                      max_value=max(date.today(), default_day), help="Everything recorded after this day is ignored.")
        if data.demo_mode():
            st.caption(f"Demo data: shown as of {default_day:%d %b %Y}, the demo's day (synthetic patients).")
        files = data.reference_files()
        published = str(data.PUBLISHED_REFERENCE)
        current = st.session_state.get("reference_path", published)
        if len(files) > 1:
            titles = list(files)
            index = next((i for i, t in enumerate(titles) if files[t] == current),
                         next((i for i, t in enumerate(titles) if files[t] == published), 0))
            chosen = st.selectbox("Expected-recovery reference", titles, index=index,
                                  help="The published reference unless you choose another; a calibrated file is "
                                       "used only once chosen here. Each change is audited.")
            choose_reference(files[chosen], current)
        else:
            st.caption("Reference: " + next((t for t, path in files.items() if path == current), "published"))


def choose_reference(path: str, current: str) -> None:
    """Put the reference file `path` in force for this session; a change is audited first (`setting`, kind
    reference, the file's name), and not made when the entry cannot be written (issue 20: the choice was shown but
    not audited)."""
    if path == current:
        st.session_state["reference_path"] = path
        return
    try:
        audit_event("setting", kind="reference", file=Path(path).name)
    except Exception:  # noqa: BLE001 - any failure to write the entry: the change is not made
        st.session_state["reference_path"] = current
        st.sidebar.error("The reference was not changed: the change could not be written to the audit log.")
        return
    st.session_state["reference_path"] = path


def patient_picker(cohort: data.Cohort, wanted: str | None) -> str:
    """The patient to show: `wanted` if in follow-up (else the most urgent), or the one the user picks.

    A search box finds any patient by id; typing a whole id opens that patient. Beside it, a list of the
    patients whose id contains the search (or, with no search, the most urgent ones), at most
    PICKER_OPTIONS, with the patient shown always among them.
    """
    current = (cohort.exact(wanted) if isinstance(wanted, str) else None) or cohort.in_follow_up[0]
    search, choice = st.columns([1, 2])
    text = search.text_input("Find a patient", key="patient_search", placeholder="Name, MRN or patient id",
                             on_change=_open_typed_patient,
                             help=f"Part of a name, MRN or id lists the matches; a whole id opens that patient. "
                                  f"{len(cohort.in_follow_up):,} patients in follow-up.")
    matches = cohort.find(text, PICKER_OPTIONS + 1)
    options = matches[:PICKER_OPTIONS]
    if current not in options:
        options = [current, *options]
    labels = cohort.labels
    chosen = choice.selectbox("Patient", options, index=options.index(current),
                              format_func=lambda patient_id: labels.get(patient_id, patient_id),
                              help="Most urgent open prompt first" + (" (matching the search)" if text else ""))
    if text.strip() and not matches:
        search.caption(f"No patient name, MRN or id contains “{text.strip()}”.")
    elif len(matches) > PICKER_OPTIONS:
        search.caption(f"The {PICKER_OPTIONS} most urgent matches are listed: type more.")
    return chosen


def _open_typed_patient() -> None:
    """Search box callback: a whole patient id opens that patient (before the page runs)."""
    match = data.cohort().exact(st.session_state.get("patient_search") or "")
    if match is not None:
        st.session_state["patient_id"] = match
        st.query_params["patient"] = match


def urgency_chip(urgency: str | None) -> None:
    """The urgency as a Streamlit badge (no HTML): red, orange or blue; green for no open prompt."""
    if urgency is None or pd.isna(urgency):
        st.badge("No open prompt", icon=":material/check_circle:", color="green")
    else:
        st.badge(URGENCY_LABELS[urgency], icon=URGENCY_ICONS[urgency], color=URGENCY_BADGE[urgency])


URGENCY_BADGE = {"emergency": "red", "urgent": "orange", "routine": "blue"}
SEX_WORDS = {"F": "Female", "M": "Male", "X": "Other"}
#: The banner's look: one bordered band; the name first and larger (no record value in this style sheet).
BANNER_CSS = """<style>
.st-key-patient_banner { background: #F4F7FB; border-left: 6px solid #0072B2 !important; }
.st-key-patient_banner [data-testid="stText"] { font-size: 1rem; }
.st-key-patient_banner .st-key-banner_name [data-testid="stText"] { font-size: 1.35rem; font-weight: 700; }
</style>"""


def patient_banner(header: dict) -> None:
    """Who the patient is, as an EHR banner: name, MRN, birth year and age, sex; the index operation (procedure,
    levels, date, days since), surgeon and the most urgent open prompt. Identified screens only.

    Every record value goes through st.text (no Markdown, no HTML)."""
    st.html(BANNER_CSS)
    with st.container(border=True, key="patient_banner", gap="small"):
        with st.container(horizontal=True, gap="medium", vertical_alignment="center"):
            with st.container(key="banner_name", width="content"):
                st.text(_or_missing(header.get("name"), "Name not recorded"))
            mrn = _or_missing(header.get("mrn"))
            st.text(mrn if mrn.upper().startswith("MRN") else f"MRN {mrn}", width="content")
            age = header.get("age")  # the assessment year minus the birth year (records hold the year only)
            st.text(f"Born {header['as_of'].year - int(age)} (age {int(age)})" if age is not None
                    else "Birth year not recorded", width="content")
            st.text(SEX_WORDS.get(str(header.get("sex")), _or_missing(header.get("sex"), "Sex not recorded")),
                    width="content")
            st.text(f"Id {header.get('patient_id')}", width="content")
            urgency_chip(header.get("top_urgency"))
        st.text(operation_line(header))


def operation_line(header: dict) -> str:
    """'Operation: TLIF, L4–L5 and L5–S1, 12 Mar 2026 — day 43 (week 6) · surgeon Dr Tanaka' (plain text)."""
    if header.get("surgery_date") is None:
        return "No operation recorded on or before the assessment day."
    parts = [_or_missing(header.get("procedure"), "procedure not recorded")]
    if header.get("levels"):
        parts.append("levels " + str(header["levels"]).replace(";", ", "))
    parts.append(f"{header['surgery_date']:%d %b %Y}")
    days = header.get("days_since_surgery")
    since = "" if days is None else f" — day {int(days)} after the operation (week {int(days) // 7})"
    extras = []
    if header.get("instrumented") is not None:
        extras.append("instrumented" if header["instrumented"] else "not instrumented")
    if header.get("revision"):
        extras.append("revision")
    surgeon = f" · surgeon {header['surgeon']}" if header.get("surgeon") else ""
    return ("Operation: " + ", ".join(parts) + since + (" · " + ", ".join(extras) if extras else "") + surgeon)


def _or_missing(value, missing: str = "not recorded") -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)) or not str(value).strip():
        return missing
    return str(value)


def signed_in_clinician() -> str | None:
    """The signed-in user's display name (as the login configuration names them), for decisions."""
    name = st.session_state.get("display_name")
    if name:
        return str(name)
    try:
        user = auth_config().users.get(st.session_state.get("user_name") or "")
    except Exception:  # noqa: BLE001 - no configuration: no name (the decision is then refused)
        user = None
    return user.name if user is not None else None


def checklist_panel(prompts: pd.DataFrame, clinician: str | None, allow_decisions: bool = True,
                    key_prefix: str = "") -> None:
    """Each prompt: urgency, modality, why (evidence with dates), source and the decision form."""
    if prompts.empty:
        st.markdown(f":gray[{no_prompt_text()}]")  # neutral: an empty checklist is not reassurance
        return
    for prompt in prompts.itertuples(index=False):
        decided = bool(prompt.decision_current) and prompt.decision != "deferred"
        with st.container(border=True):
            with st.container(horizontal=True, gap="small", vertical_alignment="center"):
                urgency_chip(prompt.urgency)
                st.markdown(f"**{CATEGORY_LABELS[prompt.category]}**", width="content")
            st.markdown(f"#### {prompt.summary}")
            st.markdown(f"**Suggested imaging:** {MODALITY_LABELS[prompt.modality]}")
            st.markdown("**Why:**")
            for line in evidence_lines(prompt.evidence):
                st.text(f"• {line}")
            with st.expander("Source"):
                st.text(prompt.source)
                st.caption(f"Checklist rule {' + '.join(_rule_ids(prompt))}")
            if isinstance(prompt.decision, str):
                when = pd.Timestamp(prompt.decided_at).strftime("%d %b %Y %H:%M UTC")
                label = DECISION_LABELS[prompt.decision]
                if prompt.decision_current:
                    st.info(f"Decision: **{label}** ({when})", icon=":material/task_alt:")
                else:
                    st.warning(f"New evidence since the last decision (**{label}**, {when}): please review again.",
                               icon=":material/update:")
                by = f"By {prompt.decided_by}" if isinstance(prompt.decided_by, str) else ""
                reason = f"Reason: {prompt.decision_reason}" if isinstance(prompt.decision_reason, str) else ""
                st.text(" · ".join(part for part in (by, reason) if part))
            if allow_decisions and not decided:
                _decision_form(prompt, clinician, key_prefix)


def _rule_ids(prompt) -> list[str]:
    """The rules behind a prompt (one scan asked for by several rules is one prompt)."""
    ids = getattr(prompt, "rule_ids", None)
    return list(ids) if isinstance(ids, list | tuple) or hasattr(ids, "tolist") else [prompt.rule_id]


def _decision_form(prompt, clinician: str | None, key_prefix: str) -> None:
    """Nothing pre-selected; the clinician is the signed-in user; a reason where REASON_REQUIRED says."""
    key = f"{key_prefix}{prompt.patient_id}-{prompt.rule_id}"
    needs_reason = " and ".join(DECISION_LABELS[d] for d in REASON_REQUIRED)
    with st.form(f"decision-{key}", border=False):
        choice = st.radio("Decision", list(DECISION_LABELS), format_func=DECISION_LABELS.get, index=None,
                          key=f"choice-{key}", horizontal=True)
        reason = st.text_input(f"Reason (required for {needs_reason})", key=f"reason-{key}")
        st.caption(f"Recorded as {clinician}" if clinician else "No signed-in clinician: cannot record.")
        if st.form_submit_button("Record decision", type="primary", disabled=not clinician):
            if choice is None:
                st.error("Choose a decision first.")
                return
            try:
                decision_id = record_decision(data.engine(), patient_id=prompt.patient_id, rule_id=prompt.rule_id,
                                              evidence_hash=decision_fingerprint(prompt), decision=choice,
                                              reason=reason, clinician=clinician or "")
            except ValueError as problem:
                message = str(problem)
                st.error(message[:1].upper() + message[1:] + ".")
            else:
                # The signed-in user; the code, never the free-text reason.
                audit_event("decision", patient_id=prompt.patient_id, rule_id=prompt.rule_id, decision=choice,
                            decision_id=decision_id)
                st.toast(f"Decision recorded: {DECISION_LABELS[choice]}")
                st.rerun()


def session_document(slot: str, key: object, build: Callable) -> tuple[Callable[[], bytes], Callable[[], bytes]]:
    """(html, pdf) makers of a report kept in this session under `slot` (an object with .html and .pdf()):
    built once per `key`, so that both downloads share one build (its charts drawn once) and the PDF is printed
    once; rebuilt when the key (case list or patient, day, reference, decisions) changes."""
    kept: dict = st.session_state.setdefault(slot, {})

    def document():  # noqa: ANN202 — a Handout or a FollowUpReport
        if kept.get("key") != key:
            kept.clear()
            kept["document"], kept["key"] = build(), key
        return kept["document"]

    def pdf() -> bytes:
        made = document()
        if "pdf" not in kept:
            kept["pdf"] = made.pdf()
        return kept["pdf"]

    return (lambda: document().html.encode("utf-8")), pdf
