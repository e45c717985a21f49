"""Widgets shared by the pages: sidebar settings, urgency badges and the checklist panel."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboard.core.decision_state import DECISION_LABELS
from dashboard.store import record_decision
from dashboard.theme import CATEGORY_LABELS, MODALITY_LABELS, URGENCY_COLOURS, URGENCY_ICONS, URGENCY_LABELS
from dashboard.ui import data
from dashboard.ui.auth import audit_event

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


def urgency_badge(urgency: str | None) -> str:
    if urgency is None or pd.isna(urgency):
        return f'<span style="{BADGE_STYLE.format(colour="#009E73")}">No open prompt</span>'
    return f'<span style="{BADGE_STYLE.format(colour=URGENCY_COLOURS[urgency])}">{URGENCY_LABELS[urgency]}</span>'


def checklist_panel(prompts: pd.DataFrame, clinician: str | None, allow_decisions: bool = True,
                    key_prefix: str = "") -> None:
    """Each prompt: urgency, modality, why (evidence with dates), source and the decision form."""
    if prompts.empty:
        st.success("No imaging prompt: nothing in the recorded findings calls for imaging.")
        return
    for prompt in prompts.itertuples(index=False):
        decided = bool(prompt.decision_current) and prompt.decision != "deferred"
        with st.container(border=True):
            st.markdown(
                f"{URGENCY_ICONS[prompt.urgency]} {urgency_badge(prompt.urgency)} &nbsp; "
                f"**{CATEGORY_LABELS[prompt.category]}** · `{prompt.rule_id}`", unsafe_allow_html=True)
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
                                              evidence_hash=prompt.evidence_hash, decision=choice, reason=reason,
                                              clinician=who)
            except ValueError as problem:
                st.error(str(problem))
            else:
                # The signed-in user, whoever is named as clinician; the code, never the free-text reason.
                audit_event("decision", patient_id=prompt.patient_id, rule_id=prompt.rule_id, decision=choice,
                            decision_id=decision_id)
                st.toast(f"Recorded: {DECISION_LABELS[choice]}")
                st.rerun()
