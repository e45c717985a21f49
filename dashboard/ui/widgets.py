"""Widgets shared by the pages: sidebar settings, urgency badges and the checklist panel."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboard.core.checklist import decision_fingerprint, no_prompt_text
from dashboard.core.decision_state import DECISION_LABELS
from dashboard.store import record_decision
from dashboard.theme import CATEGORY_LABELS, MODALITY_LABELS, URGENCY_COLOURS, URGENCY_ICONS, URGENCY_LABELS
from dashboard.ui import data
from dashboard.ui.auth import audit_event

#: Most patients the patient list offers at once: a search finds any other (a list of every patient in a
#: large clinic made each rerun of the Patient page slow to build, send and draw).
PICKER_OPTIONS = 200
BADGE_STYLE = ("display:inline-block;padding:2px 10px;border-radius:12px;color:white;font-weight:600;"
               "font-size:0.9rem;background:{colour}")


def sidebar_settings() -> None:
    """Assessment day and reference file, shared by every page."""
    with st.sidebar:
        st.date_input("Assess as of", key="as_of", value=st.session_state.get("as_of", date.today()),
                      max_value=date.today(), help="Everything recorded after this day is ignored.")
        files = data.reference_files()
        if len(files) > 1:
            titles = list(files)
            current = st.session_state.get("reference_path")
            index = next((i for i, t in enumerate(titles) if files[t] == current), 0)
            chosen = st.selectbox("Expected-recovery reference", titles, index=index)
            st.session_state["reference_path"] = files[chosen]


def patient_picker(cohort: data.Cohort, wanted: str | None) -> str:
    """The patient to show: `wanted` if in follow-up (else the most urgent), or the one the user picks.

    A search box finds any patient by id; typing a whole id opens that patient. Beside it, a list of the
    patients whose id contains the search (or, with no search, the most urgent ones), at most
    PICKER_OPTIONS, with the patient shown always among them.
    """
    current = (cohort.exact(wanted) if isinstance(wanted, str) else None) or cohort.in_follow_up[0]
    search, choice = st.columns([1, 2])
    text = search.text_input("Find a patient", key="patient_search", placeholder="Patient id, e.g. P00017",
                             on_change=_open_typed_patient,
                             help=f"Part of an id lists the matches; a whole id opens that patient. "
                                  f"{len(cohort.in_follow_up):,} patients in follow-up.")
    matches = cohort.find(text, PICKER_OPTIONS + 1)
    options = matches[:PICKER_OPTIONS]
    if current not in options:
        options = [current, *options]
    chosen = choice.selectbox("Patient", options, index=options.index(current),
                              help="Most urgent open prompt first" + (" (matching the search)" if text else ""))
    if text.strip() and not matches:
        search.caption(f"No patient id contains “{text.strip()}”.")
    elif len(matches) > PICKER_OPTIONS:
        search.caption(f"The {PICKER_OPTIONS} most urgent matches are listed: type more of the id.")
    return chosen


def _open_typed_patient() -> None:
    """Search box callback: a whole patient id opens that patient (before the page runs)."""
    match = data.cohort().exact(st.session_state.get("patient_search") or "")
    if match is not None:
        st.session_state["patient_id"] = match
        st.query_params["patient"] = match


def urgency_badge(urgency: str | None) -> str:
    if urgency is None or pd.isna(urgency):
        return f'<span style="{BADGE_STYLE.format(colour="#009E73")}">No open prompt</span>'
    return f'<span style="{BADGE_STYLE.format(colour=URGENCY_COLOURS[urgency])}">{URGENCY_LABELS[urgency]}</span>'


def checklist_panel(prompts: pd.DataFrame, clinician: str | None, allow_decisions: bool = True,
                    key_prefix: str = "") -> None:
    """Each prompt: urgency, modality, why (evidence with dates), source and the decision form."""
    if prompts.empty:
        st.markdown(f":gray[{no_prompt_text()}]")  # neutral: an empty checklist is not reassurance
        return
    for prompt in prompts.itertuples(index=False):
        decided = bool(prompt.decision_current) and prompt.decision != "deferred"
        with st.container(border=True):
            st.markdown(
                f"{URGENCY_ICONS[prompt.urgency]} {urgency_badge(prompt.urgency)} &nbsp; "
                f"**{CATEGORY_LABELS[prompt.category]}** · "
                + " + ".join(f"`{rule}`" for rule in _rule_ids(prompt)), unsafe_allow_html=True)
            st.markdown(f"#### {prompt.summary}")
            st.markdown(f"**Suggested imaging:** {MODALITY_LABELS[prompt.modality]}")
            st.markdown("**Why:**\n" + "\n".join(f"- {line}" for line in prompt.evidence))
            with st.expander("Source"):
                st.write(prompt.source)
            if isinstance(prompt.decision, str):
                when = pd.Timestamp(prompt.decided_at).strftime("%Y-%m-%d %H:%M UTC")
                reason = f" — {prompt.decision_reason}" if isinstance(prompt.decision_reason, str) else ""
                if prompt.decision_current:
                    st.info(f"Decision: **{DECISION_LABELS[prompt.decision]}**{reason} ({prompt.decided_by}, {when})")
                else:
                    st.warning(f"New evidence since the last decision ({DECISION_LABELS[prompt.decision]}{reason}, "
                               f"{prompt.decided_by}, {when}): please review again.")
            if allow_decisions and not decided:
                _decision_form(prompt, clinician, key_prefix)


def _rule_ids(prompt) -> list[str]:
    """The rules behind a prompt (one scan asked for by several rules is one prompt)."""
    ids = getattr(prompt, "rule_ids", None)
    return list(ids) if isinstance(ids, list | tuple) or hasattr(ids, "tolist") else [prompt.rule_id]


def _decision_form(prompt, clinician: str | None, key_prefix: str) -> None:
    key = f"{key_prefix}{prompt.patient_id}-{prompt.rule_id}"
    with st.form(f"decision-{key}", border=False):
        columns = st.columns([2, 3, 2])
        choice = columns[0].radio("Decision", list(DECISION_LABELS), format_func=DECISION_LABELS.get,
                                  key=f"choice-{key}", horizontal=False)
        reason = columns[1].text_input("Reason (required when not indicated)", key=f"reason-{key}")
        who = columns[2].text_input("Clinician", value=clinician or "", key=f"who-{key}")
        if st.form_submit_button("Record decision", type="primary"):
            try:
                decision_id = record_decision(data.engine(), patient_id=prompt.patient_id, rule_id=prompt.rule_id,
                                              evidence_hash=decision_fingerprint(prompt), decision=choice,
                                              reason=reason, clinician=who)
            except ValueError as problem:
                st.error(str(problem))
            else:
                # The signed-in user, whoever is named as clinician; the code, never the free-text reason.
                audit_event("decision", patient_id=prompt.patient_id, rule_id=prompt.rule_id, decision=choice,
                            decision_id=decision_id)
                st.toast(f"Recorded: {DECISION_LABELS[choice]}")
                st.rerun()
