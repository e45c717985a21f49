"""Clinic: every patient in follow-up, most urgent open prompt first; one click into the patient."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import audit_clinic_view, require_screen
from dashboard.clinical.prompt_performance import emergency_alarms
from dashboard.clinical.records.write import neutralise_formulas
from dashboard.clinical.summary import clinic_table
from dashboard.theme import STATUS_LABELS, URGENCY_ICONS, URGENCY_LABELS

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

URGENCY_SHORT = {"emergency": "Emergency", "urgent": "Urgent", "routine": "Routine"}
#: The table's columns and their widths in pixels. They add up to what fits at 1024×768 beside the sidebar (about
#: 640 px once NARROW_CSS narrows the page's margins, less the row-selection column), so no column hides behind
#: sideways scrolling; wider screens stretch every column (issue 20). Procedure and levels share one column; the
#: number of open prompts leads the Why cell when there are several.
#: The name, MRN and urgency are never cut at 1024; the other columns may be there, and read whole from 1440 on.
TABLE_WIDTHS = {"name": 110, "mrn": 90, "urgency": 74, "prompt_summary": 104, "worst_status": 84, "weeks": 46,
                "operation": 66, "surgeon": 56}
#: Streamlit's wide layout keeps 5rem margins at every width: on a narrow screen the clinic table needs that room.
NARROW_CSS = """<style>
@media (max-width: 1200px) {
  [data-testid="stMainBlockContainer"] { padding-left: 1.5rem; padding-right: 1.5rem; }
}
</style>"""

#: Most rows the table sends to the browser, most urgent first; search and filters reach any other patient. The
#: whole list of a 20,000-patient clinic cost more to send and draw than the rest of the screen (issue 20, Speed).
TABLE_ROWS = 500


@st.cache_resource(show_spinner=False, max_entries=8)
def patients_table(key: tuple, decisions: int, _assessment, _prompts: pd.DataFrame) -> pd.DataFrame:
    """The clinic list with names and MRNs, once per cohort (`key`) and state of the decisions (`decisions`): a
    page reruns on every click, and the list of a large clinic took most of the rerun to build. Shared, not
    copied: the page filters it into new frames and never modifies it."""
    table = clinic_table(_assessment, _prompts)
    people = _assessment.patients.set_index("patient_id")
    return table.assign(name=table["patient_id"].map(people["name"]), mrn=table["patient_id"].map(people["mrn"]))


cohort = data.cohort()
assessment = cohort.assessment
prompts = data.prompts_with_decisions(assessment)
decided = prompts[["patient_id", "rule_id", "decision", "decision_current", "decided_at"]]
table = patients_table(cohort.key, int(pd.util.hash_pandas_object(decided, index=False).sum()), assessment, prompts)
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

matching = len(shown)
shown = shown.head(TABLE_ROWS)  # the table is sorted most urgent first
operation = (shown["procedure"].astype("string").fillna("") + " "
             + shown["levels"].astype("string").fillna("").str.replace(";", ", ", regex=False)).str.strip()
display = shown.assign(
    urgency=shown["urgency"].map(URGENCY_SHORT).fillna("—"),
    worst_status=shown["worst_status"].map(STATUS_LABELS).fillna("Not examined"),
    weeks=(shown["days_since_surgery"] / 7).round(1),
    operation=operation.replace("", "—"),
    prompt_summary=shown["prompt_summary"].where(shown["open_prompts"] <= 1,
                                                 "(" + shown["open_prompts"].astype(str) + ") "
                                                 + shown["prompt_summary"]),
)[["patient_id", *TABLE_WIDTHS]]
# Record text shown in a table can be downloaded as CSV from its toolbar: no cell may start a formula.
display = neutralise_formulas(display)
audit_clinic_view(len(display))  # names and MRNs are shown below: logged first, or not shown
st.html(NARROW_CSS)
st.caption("Select a row to open the patient." if matching <= TABLE_ROWS else
           f"Select a row to open the patient. The {TABLE_ROWS} most urgent of {matching:,} patients are listed: "
           "search or filter to find the others.")
labels = {"name": "Name", "mrn": "MRN", "urgency": "Urgency", "prompt_summary": "Why", "worst_status": "Muscles",
          "weeks": "Weeks", "operation": "Operation", "surgeon": "Surgeon"}
helps = {"urgency": "Most urgent open prompt", "prompt_summary": "The open imaging prompts; (2) when two are open",
         "worst_status": "Worst muscle status", "weeks": "Weeks since the operation",
         "operation": "Procedure and levels of the index operation"}
event = st.dataframe(
    display, hide_index=True, width="stretch", height=560, on_select="rerun", selection_mode="single-row",
    column_order=list(TABLE_WIDTHS),
    column_config={
        "patient_id": "Id",
        **{column: st.column_config.TextColumn(labels[column], width=width, help=helps.get(column))
           for column, width in TABLE_WIDTHS.items()},
        "weeks": st.column_config.NumberColumn("Weeks", format="%.1f", width=TABLE_WIDTHS["weeks"],
                                               help=helps["weeks"]),
    },
    key="clinic_table",
)
if event.selection.rows:
    st.session_state["patient_id"] = display.iloc[event.selection.rows[0]]["patient_id"]
    st.switch_page("screens/patient.py")
