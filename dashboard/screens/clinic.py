"""Clinic: every patient in follow-up, most urgent open prompt first; one click into the patient."""

from __future__ import annotations

import streamlit as st

from dashboard.core.prompt_performance import emergency_alarms
from dashboard.core.summary import clinic_table
from dashboard.theme import STATUS_LABELS, URGENCY_ICONS, URGENCY_LABELS
from dashboard.ui import data
from dashboard.ui.auth import require_screen

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

cohort = data.cohort()
assessment = cohort.assessment
prompts = data.prompts_with_decisions(assessment)
table = clinic_table(assessment, prompts)
alarms = emergency_alarms(prompts, assessment.as_of)  # open emergency prompts older than a day (docs/outcomes.md)
if len(alarms):
    st.error(f"ALARM: {len(alarms)} emergency prompt(s) open for more than a day — "
             + ", ".join(f"{p} ({r}, {d} days)" for p, r, d in alarms[["patient_id", "rule_id", "days_open"]]
                         .head(10).itertuples(index=False)), icon=":material/emergency:")

st.title("Clinic follow-up")
st.caption(f"Assessed as of {assessment.as_of:%d %b %Y} · reference: {assessment.reference.title} · "
           f"{len(table)} patients in follow-up")

counts = table["urgency"].value_counts()
columns = st.columns(5)
for column, urgency in zip(columns, ("emergency", "urgent", "routine"), strict=False):
    column.metric(f"{URGENCY_ICONS[urgency]} {URGENCY_LABELS[urgency]}", int(counts.get(urgency, 0)),
                  help="Patients whose most urgent open prompt has this urgency")
columns[3].metric(":material/check_circle: No open prompt", int(table["urgency"].isna().sum()))
columns[4].metric("Prompts decided", int(table["decided_prompts"].sum()))

with st.expander("Muscle-side statuses across the cohort"):
    status_counts = assessment.muscles["status"].value_counts()
    st.dataframe(status_counts.rename(index=STATUS_LABELS).rename("muscle-sides").to_frame(),
                 width="content")

filters = st.columns([2, 2, 2, 3])
query = filters[0].text_input("Search patient id", placeholder="e.g. P00017")
surgeons = filters[1].multiselect("Surgeon", sorted(table["surgeon"].dropna().unique()))
statuses = filters[2].multiselect("Worst muscle status", list(STATUS_LABELS), format_func=STATUS_LABELS.get)
max_days = int(table["days_since_surgery"].max()) if len(table) else 0
weeks = filters[3].slider("Weeks since the operation", 0, max(1, max_days // 7 + 1), (0, max(1, max_days // 7 + 1)))
only_open = st.toggle("Only patients with open prompts", value=False)

shown = table
if query:
    shown = shown[shown["patient_id"].str.contains(query.strip(), case=False, regex=False)]
if surgeons:
    shown = shown[shown["surgeon"].isin(surgeons)]
if statuses:
    shown = shown[shown["worst_status"].isin(statuses)]
shown = shown[(shown["days_since_surgery"] >= weeks[0] * 7) & (shown["days_since_surgery"] <= weeks[1] * 7 + 6)]
if only_open:
    shown = shown[shown["open_prompts"] > 0]

display = shown.assign(
    urgency=shown["urgency"].map(URGENCY_LABELS).fillna("—"),
    worst_status=shown["worst_status"].map(STATUS_LABELS).fillna("not examined"),
    weeks=(shown["days_since_surgery"] / 7).round(1),
)[["patient_id", "urgency", "open_prompts", "prompt_summary", "worst_status", "weeks", "procedure", "levels",
   "surgeon"]]
st.caption("Select a row to open the patient.")
event = st.dataframe(
    display, hide_index=True, width="stretch", height=560, on_select="rerun", selection_mode="single-row",
    column_config={
        "patient_id": "Patient", "urgency": "Most urgent open prompt", "open_prompts": "Open prompts",
        "prompt_summary": st.column_config.TextColumn("Why", width="large"), "worst_status": "Worst muscle",
        "weeks": st.column_config.NumberColumn("Weeks since op", format="%.1f"), "procedure": "Procedure",
        "levels": "Levels", "surgeon": "Surgeon",
    },
    key="clinic_table",
)
if event.selection.rows:
    st.session_state["patient_id"] = display.iloc[event.selection.rows[0]]["patient_id"]
    st.switch_page("screens/patient.py")
