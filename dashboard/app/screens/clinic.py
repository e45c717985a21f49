"""Clinic: every patient in follow-up, most urgent open prompt first; one click into the patient."""

from __future__ import annotations

import streamlit as st

from dashboard.app import data
from dashboard.app.auth import require_screen
from dashboard.clinical.prompt_performance import emergency_alarms
from dashboard.clinical.records.write import neutralise_formulas
from dashboard.clinical.summary import clinic_table
from dashboard.theme import STATUS_LABELS, URGENCY_ICONS, URGENCY_LABELS

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

URGENCY_SHORT = {"emergency": "Emergency", "urgent": "Urgent", "routine": "Routine"}

cohort = data.cohort()
assessment = cohort.assessment
prompts = data.prompts_with_decisions(assessment)
table = clinic_table(assessment, prompts)
alarms = emergency_alarms(prompts, assessment.as_of)  # open emergency prompts older than a day (docs/outcomes.md)
if len(alarms):
    st.error(f"ALARM: {len(alarms)} emergency prompt(s) open for more than a day — "
             + "; ".join(f"{p}: {q} ({d} days)" for p, q, d in alarms[["patient_id", "summary", "days_open"]]
                         .head(10).itertuples(index=False)), icon=":material/emergency:")

st.title("Clinic follow-up")
st.caption(f"Assessed as of {assessment.as_of:%d %b %Y} · reference: {assessment.reference.title} · "
           f"{len(table)} patients in follow-up")

counts = table["urgency"].value_counts()
# Tiles that wrap to a second line on a narrow screen rather than cut their labels.
with st.container(horizontal=True, gap="medium", key="clinic_tiles"):
    for urgency in ("emergency", "urgent", "routine"):
        st.metric(f"{URGENCY_ICONS[urgency]} {URGENCY_LABELS[urgency]}", int(counts.get(urgency, 0)),
                  help="Patients whose most urgent open prompt has this urgency", width="content", border=True)
    st.metric(":material/check_circle: No open prompt", int(table["urgency"].isna().sum()), width="content",
              border=True)
    st.metric("Prompts decided", int(table["decided_prompts"].sum()), width="content", border=True)

with st.expander("Muscle-side statuses across the cohort"):
    status_counts = assessment.muscles["status"].value_counts()
    st.dataframe(status_counts.rename(index=STATUS_LABELS).rename("muscle-sides").to_frame(),
                 width="content")

filters = st.columns([2, 2, 2, 3])
query = filters[0].text_input("Search", placeholder="Name, MRN or patient id")
surgeons = filters[1].multiselect("Surgeon", sorted(table["surgeon"].dropna().unique()))
statuses = filters[2].multiselect("Worst muscle status", list(STATUS_LABELS), format_func=STATUS_LABELS.get)
max_days = int(table["days_since_surgery"].max()) if len(table) else 0
weeks = filters[3].slider("Weeks since the operation", 0, max(1, max_days // 7 + 1), (0, max(1, max_days // 7 + 1)))
only_open = st.toggle("Only patients with open prompts", value=False)

people = assessment.patients.set_index("patient_id")
table = table.assign(name=table["patient_id"].map(people["name"]), mrn=table["patient_id"].map(people["mrn"]))
shown = table
if query:
    needle = query.strip()
    shown = shown[shown["patient_id"].str.contains(needle, case=False, regex=False)
                  | shown["name"].astype("string").str.contains(needle, case=False, regex=False).fillna(False)
                  | shown["mrn"].astype("string").str.contains(needle, case=False, regex=False).fillna(False)]
if surgeons:
    shown = shown[shown["surgeon"].isin(surgeons)]
if statuses:
    shown = shown[shown["worst_status"].isin(statuses)]
shown = shown[(shown["days_since_surgery"] >= weeks[0] * 7) & (shown["days_since_surgery"] <= weeks[1] * 7 + 6)]
if only_open:
    shown = shown[shown["open_prompts"] > 0]

display = shown.assign(
    urgency=shown["urgency"].map(URGENCY_SHORT).fillna("—"),
    worst_status=shown["worst_status"].map(STATUS_LABELS).fillna("Not examined"),
    weeks=(shown["days_since_surgery"] / 7).round(1),
    levels=shown["levels"].astype("string").str.replace(";", ", ", regex=False),
)[["patient_id", "name", "mrn", "urgency", "open_prompts", "prompt_summary", "worst_status", "weeks", "procedure",
   "levels", "surgeon"]]
# Record text shown in a table can be downloaded as CSV from its toolbar: no cell may start a formula.
display = neutralise_formulas(display)
st.caption("Select a row to open the patient.")
event = st.dataframe(
    display, hide_index=True, width="stretch", height=560, on_select="rerun", selection_mode="single-row",
    column_order=[c for c in display.columns if c != "patient_id"],
    column_config={
        "patient_id": "Id", "name": st.column_config.TextColumn("Name", width=135),
        "mrn": st.column_config.TextColumn("MRN", width=90),
        "urgency": st.column_config.TextColumn("Urgency", width=80, help="Most urgent open prompt"),
        "open_prompts": st.column_config.NumberColumn("Open", width=50, help="Open imaging prompts"),
        "prompt_summary": st.column_config.TextColumn("Why", width=150),
        "worst_status": st.column_config.TextColumn("Worst muscle", width=100),
        "weeks": st.column_config.NumberColumn("Weeks", format="%.1f", width=60, help="Weeks since the operation"),
        "procedure": st.column_config.TextColumn("Procedure", width=100),
        "levels": st.column_config.TextColumn("Levels", width=75),
        "surgeon": st.column_config.TextColumn("Surgeon", width=90),
    },
    key="clinic_table",
)
if event.selection.rows:
    st.session_state["patient_id"] = display.iloc[event.selection.rows[0]]["patient_id"]
    st.switch_page("screens/patient.py")
