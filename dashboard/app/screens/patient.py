"""Patient: header, strength against the expected band, PROMs, timeline and the imaging checklist."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import audit_patient_view, identified_download, require_screen
from dashboard.app.widgets import checklist_panel, patient_banner, patient_picker, session_document, signed_in_clinician
from dashboard.charts import muscles_with_weakness, normal_line, prom_figure, strength_figure, timeline_figure
from dashboard.clinical.mrc import format_mrc
from dashboard.clinical.wording import plain, status_words
from dashboard.reports.follow_up import report_for
from dashboard.theme import MUSCLE_SHORT

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

#: Charts and checklist side by side from 1280 px; below, one column with the checklist first (at 1024 with the
#: sidebar open, two columns left the decision labels a letter per line and the panel titles on one another).
STACK_BELOW_1280 = """<style>
@media (max-width: 1279px) {
  .st-key-patient_layout [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"]) {
    flex-direction: column-reverse; }
  .st-key-patient_layout [data-testid="stColumn"] { width: 100% !important; flex: 1 1 100% !important; }
}
</style>"""

cohort = data.cohort()
assessment = cohort.assessment
if not cohort.in_follow_up:
    st.info("No patient in follow-up yet: import records on the Import page.")
    st.stop()
banner = st.container()  # the patient banner goes first, above the picker that decides the patient
# A link (?patient=ID) or the Clinic page (session state) says which patient; the picker can change it.
patient_id = patient_picker(cohort, st.query_params.get("patient") or st.session_state.get("patient_id"))
st.session_state["patient_id"] = patient_id
st.query_params["patient"] = patient_id  # a link to this page opens this patient
audit_patient_view(patient_id)  # before anything of the record is shown; stops if it cannot be logged
view = data.cached_patient_view(cohort, patient_id)
prompts = data.patient_prompts_with_decisions(cohort, patient_id)
h = view.header


def shown(value) -> str:
    if value is None:
        return "not recorded"
    return "yes" if bool(value) else "no"


with banner:
    patient_banner(h)
st.caption(f"Revision {shown(h['revision'])} · diabetes {shown(h['diabetes'])} · smoker {shown(h['smoker'])} · "
           + ("duration of weakness before the operation not recorded" if h["deficit_days"] is None
              else f"weakness for {h['deficit_days']:.0f} days before the operation"))
for note in view.missing:
    st.warning(plain(note), icon=":material/warning:")

st.html(STACK_BELOW_1280)
with st.container(key="patient_layout"):
    left, right = st.columns([3, 2], gap="large")
with left:
    weak = muscles_with_weakness(view)
    normal = normal_line(view)
    show_all = st.toggle("Show every examined muscle", value=False, key="show_all_muscles",
                         help="By default only muscles with a deficit on some side are drawn.") if normal else False
    if weak or show_all:
        st.plotly_chart(strength_figure(view, show_all=show_all), width="stretch", key="strength")
    elif view.exams.empty:
        st.info("No strength examination recorded.")
    if normal and not show_all:
        st.success(normal, icon=":material/check_circle:")
    table = pd.DataFrame({
        "Muscle": view.muscles["root"] + " " + view.muscles["muscle"].map(MUSCLE_SHORT),
        "Side": view.muscles["side"],
        "Status": view.muscles["status"].map(status_words),
        "Pre-op": view.muscles["baseline_mrc"].map(format_mrc),
        "Latest": view.muscles["latest_mrc"].map(format_mrc),
        "Expected": [e if r in ("—", e) else f"{e} ({r})" for e, r in
                     zip(view.muscles["expected_grade"], view.muscles["expected_range"], strict=True)],
        "Latest exam": view.muscles["latest_date"].dt.strftime("%d %b %y"),
    })
    st.dataframe(table, hide_index=True, width="stretch", column_config={
        "Muscle": st.column_config.TextColumn(width=140), "Side": st.column_config.TextColumn(width=38),
        "Status": st.column_config.TextColumn(width=105), "Pre-op": st.column_config.TextColumn(width=50),
        "Latest": st.column_config.TextColumn(width=50),
        "Expected": st.column_config.TextColumn(width=70, help="Expected grade (expected range)"),
        "Latest exam": st.column_config.TextColumn("Exam", width=75, help="Date of the latest exam")})
    st.caption(f"Expected (range): {view.band_label}; in MRC steps.")
    with st.expander("Where the expected curves come from"):
        st.caption(f"Reference: {assessment.reference.title} ({assessment.reference.kind}, "
                   f"{assessment.reference.reference_id})")
        st.dataframe(view.curve_sources, hide_index=True, width="stretch",
                     column_config={"url": st.column_config.LinkColumn("Link")})
    st.plotly_chart(prom_figure(view), width="stretch", key="proms")
    st.plotly_chart(timeline_figure(view), width="stretch", key="timeline")
with right:
    st.subheader("Imaging checklist")
    checklist_panel(prompts, clinician=signed_in_clinician())

st.divider()
st.subheader("Follow-up report")
st.caption("For the patient's chart: identified (name, MRN, dates), with the charts, checklist and decisions as "
           "shown here. Click to get a one-time download link for this browser; the report is made when you open "
           "it (a few seconds).")
report_key = (patient_id, str(assessment.as_of), assessment.reference.reference_id,
              prompts[["rule_id", "decision", "decided_at"]].astype(str).to_csv(index=False))
follow_up_html, follow_up_pdf = session_document(
    "follow_up_reports", report_key, lambda: report_for(assessment, patient_id, prompts, cohort.exam_index.exams))


# Identified (name, MRN): a click prepares a one-time link for this signed-in browser; the server audits the
# export, then builds the document, for the request carrying this session's cookie only (dashboard/app/server.py).
for column, (label, fmt, make, mime) in zip(st.columns(2), (
        ("Follow-up report PDF", "pdf", follow_up_pdf, "application/pdf"),
        ("Follow-up report HTML", "html", follow_up_html, "text/html")),
        strict=True):
    with column:
        identified_download(make, "follow_up_report", fmt, patient_id=patient_id, label=label,
                            file_name=f"follow-up-{patient_id}.{fmt}", mime=mime, key=f"follow_up_{fmt}")
