"""Add exam / visit: a form validated exactly like an import, then saved to the store."""

from __future__ import annotations

from datetime import date

import pandas as pd
import streamlit as st

from dashboard.core.grades import MRC_TOKENS, MUSCLE_LABELS, MUSCLES, SIDES
from dashboard.core.records import Records, validate_frames
from dashboard.core.schema import VISIT_BOOLEANS
from dashboard.core.text_records import to_text_frames
from dashboard.store import import_records, load_records
from dashboard.ui import data
from dashboard.ui.auth import require_screen

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

st.title("Add an examination or visit")
st.caption("Checked by the same validation as an import; nothing is saved when anything is wrong.")
assessment = data.cohort().assessment
ids = sorted(assessment.patients["patient_id"])
default = st.session_state.get("patient_id")
patient_id = st.selectbox("Patient", ids, index=ids.index(default) if default in ids else 0)

with st.form("add-exam", clear_on_submit=False):
    when = st.date_input("Date of examination / visit", value=date.today(), max_value=date.today())
    st.markdown("**Strength (MRC)** — leave blank what was not examined")
    grades: dict[tuple[str, str], str] = {}
    for muscle in MUSCLES:
        cols = st.columns([3, 1, 1])
        cols[0].markdown(MUSCLE_LABELS[muscle])
        for col, side in zip(cols[1:], SIDES, strict=True):
            grades[(muscle, side)] = col.selectbox(f"{muscle} {side}", ["", *MRC_TOKENS], key=f"g-{muscle}-{side}",
                                                   label_visibility="collapsed", placeholder=side)
    st.markdown("**Visit** — leave blank what was not asked or measured")
    cols = st.columns(4)
    leg = cols[0].text_input("Leg pain (NRS 0–10)")
    back = cols[1].text_input("Back pain (NRS 0–10)")
    odi = cols[2].text_input("ODI (0–100)")
    crp = cols[3].text_input("CRP (mg/L)")
    findings = {}
    cols = st.columns(4)
    for i, finding in enumerate(VISIT_BOOLEANS):
        findings[finding] = cols[i % 4].selectbox(finding.replace("_", " "), ["", "yes", "no"], key=f"f-{finding}")
    submitted = st.form_submit_button("Validate and save", type="primary")

if submitted:
    stored: Records = load_records(data.engine())
    text = to_text_frames(stored)
    mine = {name: frame[frame["patient_id"] == patient_id] for name, frame in text.items()}
    day = when.isoformat()
    new_strength = pd.DataFrame(
        [{"patient_id": patient_id, "exam_date": day, "muscle": m, "side": s, "mrc": g}
         for (m, s), g in grades.items() if g], dtype="string")
    visit_values = {"leg_pain_nrs": leg, "back_pain_nrs": back, "odi": odi, "crp_mg_l": crp, **findings}
    visit_values = {k: v.strip() for k, v in visit_values.items() if v and v.strip()}
    new_visits = pd.DataFrame([{"patient_id": patient_id, "visit_date": day, **visit_values}], dtype="string") \
        if visit_values else pd.DataFrame(columns=["patient_id", "visit_date"], dtype="string")
    if new_strength.empty and new_visits.empty:
        st.error("Nothing to save: enter at least one grade or one visit finding.")
        st.stop()
    raw = {
        "patients.csv": mine["patients.csv"],
        "surgeries.csv": mine["surgeries.csv"],
        "strength.csv": pd.concat([mine["strength.csv"], new_strength], ignore_index=True),
        "visits.csv": pd.concat([mine["visits.csv"], new_visits], ignore_index=True),
    }
    labels = {"strength.csv": "form (strength)", "visits.csv": "form (visit)", "patients.csv": "store (patient)",
              "surgeries.csv": "store (operations)"}
    records, report = validate_frames(raw, labels)
    if records is None:
        st.error("Not saved. Please correct:")
        st.dataframe(report.errors, hide_index=True, width="stretch")
    else:
        result = import_records(data.engine(), records, source_name="form", user=st.session_state.get("user_name"),
                                role=st.session_state.get("role"), source_kind="form", patient_id=patient_id)
        data.clear_caches()
        st.success(f"Saved for {patient_id} on {day}: {result.summary()}")
