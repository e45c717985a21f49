"""Case conference: build a case list, present it one de-identified case per screen, export the handout.

Everything shown while presenting comes from dashboard.clinical.conference ("Case k", weeks since the operation,
age bands, procedures as controlled terms, "Surgeon A"); no patient id, name, MRN, note, calendar date or
free text as recorded reaches this page's output, the surgeon filter included. Picking patients
by hand needs their ids: only surgeons can, in an edit panel that is closed before presenting.
"""

from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from dashboard.app import auth, data
from dashboard.app.auth import require_screen
from dashboard.app.widgets import session_document, urgency_chip
from dashboard.charts import muscles_with_weakness, normal_line, prom_figure, strength_figure
from dashboard.clinical.conference import (
    CASE_FILTERS,
    ConferenceCase,
    deidentify_patient,
    hand_picked,
    in_follow_up,
    select_cases,
    surgeon_pseudonyms,
    week_label,
)
from dashboard.clinical.decisions import open_prompts
from dashboard.clinical.imaging.checklist import no_prompt_text
from dashboard.clinical.mrc import format_mrc
from dashboard.clinical.wording import evidence_lines, plain, status_words
from dashboard.reports.handout import build_handout
from dashboard.theme import CATEGORY_LABELS, MODALITY_LABELS, STATUS_LABELS

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

# Larger text for a projected screen (this page only: the style goes when the page does).
PROJECTOR_CSS = """<style>
[data-testid="stMainBlockContainer"] [data-testid="stMarkdownContainer"] p,
[data-testid="stMainBlockContainer"] [data-testid="stMarkdownContainer"] li { font-size: 1.15rem; }
[data-testid="stMainBlockContainer"] [data-testid="stText"] { font-size: 1.15rem; }
@media (max-width: 1279px) {
  .st-key-conference_layout [data-testid="stHorizontalBlock"]:has(> [data-testid="stColumn"]) {
    flex-direction: column; }
  .st-key-conference_layout [data-testid="stColumn"] { width: 100% !important; flex: 1 1 100% !important; }
}
</style>"""

cohort = data.cohort()
assessment = cohort.assessment
prompts = data.prompts_with_decisions(assessment)
surgeons = surgeon_pseudonyms(assessment)  # "Surgeon A": the recorded surgeon field is free text
role = auth.current_role()
state = st.session_state

st.html(PROJECTOR_CSS)
st.title("Case conference")
st.caption("De-identified: cases are numbered in list order, times are weeks or months since the operation, "
           "ages are 5-year bands; names, MRNs, patient ids, notes and calendar dates are not shown.")

# ------------------------------------------------------------------------------------------- case list
HAND = "Hand-picked"
with st.expander("Case list", icon=":material/list:", expanded=False):
    modes = ["Filter", HAND] if role == "surgeon" else ["Filter"]
    mode = st.radio("Build the case list", modes, horizontal=True, key="conference_mode")
    if mode == HAND:
        if state.get("conference_editing", not state.get("conference_picked")):
            st.warning("Patient ids are shown while you pick: do not project this panel.", icon=":material/visibility:")
            picked = st.multiselect("Patients, in presentation order", in_follow_up(assessment),
                                    default=state.get("conference_picked", []), key="conference_picker")
            if st.button("Use these cases", type="primary", disabled=not picked):
                state["conference_picked"] = list(picked)
                state["conference_editing"] = False
                st.rerun()
        else:
            st.write(f"{len(state.get('conference_picked', []))} hand-picked cases.")
            if st.button("Edit the hand-picked list"):
                state["conference_editing"] = True
                st.rerun()
        try:
            ids = hand_picked(assessment, state.get("conference_picked", []))
        except KeyError:
            st.error("Some hand-picked patients are not in follow-up on this assessment day: pick again.")
            ids = []
    else:
        columns = st.columns([2, 3, 3])
        chosen = columns[0].selectbox("Patients with", list(CASE_FILTERS), format_func=CASE_FILTERS.get,
                                      key="conference_filter")
        statuses = columns[1].multiselect("Worst muscle status", list(STATUS_LABELS),
                                          format_func=STATUS_LABELS.get, key="conference_statuses")
        by_surgeon = columns[2].multiselect("Surgeon", surgeons.labels, key="conference_surgeons")
        ids = select_cases(assessment, prompts, filter=chosen, statuses=statuses, surgeons=by_surgeon)

if not ids:
    st.info("No case in the list: change the filter under **Case list**.")
    st.stop()

# A new list starts at case 1; the key is a digest, so no patient id lands in the session or the page.
list_key = hashlib.sha256("\n".join(ids).encode()).hexdigest()[:16]
if state.get("conference_list") != list_key:
    state["conference_list"] = list_key
    state["conference_case"] = 0
index = min(max(int(state.get("conference_case", 0)), 0), len(ids) - 1)


def _move(step: int) -> None:
    state["conference_case"] = min(max(int(state.get("conference_case", 0)) + step, 0), len(ids) - 1)


patient_prompts = prompts[prompts["patient_id"] == ids[index]]
case: ConferenceCase = deidentify_patient(assessment, ids[index], index + 1, patient_prompts,
                                          cohort.exam_index.exams, surgeons=surgeons)
head = case.header

# ------------------------------------------------------------------------------------------- one case
with st.container(horizontal=True, gap="medium", vertical_alignment="center", key="conference_nav"):
    st.button("Previous", icon=":material/chevron_left:", key="conference_previous", on_click=_move, args=(-1,),
              disabled=index == 0, width="content")
    st.markdown(f"**Case {index + 1} of {len(ids)}**", width="content")
    st.button("Next", icon=":material/chevron_right:", key="conference_next", on_click=_move, args=(1,),
              disabled=index == len(ids) - 1, width="content")

with st.container(horizontal=True, gap="medium", vertical_alignment="center"):
    st.header(case.label, width="content", anchor=False)
    urgency_chip(head["top_urgency"])
extras = [("instrumented" if head["instrumented"] else "not instrumented") if head["instrumented"] is not None
          else None, "revision" if head["revision"] else None]
# Controlled values only (procedure term, segments, "Surgeon A"), and still plain text: never Markdown or HTML.
st.text(f"{head['age_band']} · {head['sex'] or 'sex not recorded'} · {head['procedure']} {head['levels']}"
        + "".join(f", {e}" for e in extras if e) + f" · {head['follow_up']} · {head['surgeon']}")


def _yes_no(value) -> str:
    return "not recorded" if value is None or pd.isna(value) else ("yes" if value else "no")


st.caption(f"Diabetes {_yes_no(head['diabetes'])} · smoker {_yes_no(head['smoker'])} · "
           + ("duration of weakness before the operation not recorded" if head["weakness_before_operation"] is None
              else f"weak for {head['weakness_before_operation']} before the operation"))
for note in case.missing:
    st.warning(plain(note), icon=":material/warning:")


def case_checklist(case: ConferenceCase) -> None:
    """The checklist read-only: evidence with weeks, imaging, urgency, source and the decision taken."""
    if case.prompts.empty:
        st.markdown(f":gray[{no_prompt_text()}]")  # neutral: an empty checklist is not reassurance
        return
    for prompt in case.prompts.to_dict("records"):
        with st.container(border=True):
            with st.container(horizontal=True, gap="small", vertical_alignment="center"):
                urgency_chip(prompt["urgency"])
                st.markdown(f"**{CATEGORY_LABELS[prompt['category']]}**", width="content")
            st.markdown(f"#### {prompt['summary']}")
            st.markdown(f"**Suggested imaging:** {MODALITY_LABELS[prompt['modality']]}")
            st.markdown("**Why:**")
            for line in evidence_lines(prompt["evidence"]):
                st.text(f"• {line}")
            with st.expander("Source"):
                st.text(prompt["source"])
                st.caption(f"Checklist rule {prompt['rule_id']}")
            reason = " A reason is recorded in the patient's chart." if prompt["decision_has_reason"] else ""
            when = f" ({prompt['decision_week']})" if prompt["decision_week"] else ""
            if prompt["decision"] is None:
                st.caption("No decision recorded yet.")
            elif prompt["decision_current"]:
                st.info(f"Decision: **{prompt['decision_label']}**{when}.{reason}")
            else:
                st.warning(f"New evidence since the last decision ({prompt['decision_label']}{when}): "
                           f"to review again.{reason}")


with st.container(key="conference_layout"):  # stacked below 1280 px (PROJECTOR_CSS)
    left, right = st.columns([3, 2], gap="large")
with left:
    if muscles_with_weakness(case.view):
        st.plotly_chart(strength_figure(case.view, large=True), width="stretch", key="conference_strength")
    elif case.view.exams.empty:
        st.info("No strength examination recorded.")
    else:
        st.success("No motor deficit in any examined muscle.", icon=":material/check_circle:")
    if muscles_with_weakness(case.view) and normal_line(case.view):
        st.caption(normal_line(case.view))
    muscles = case.view.muscles
    shown = muscles[muscles["status"] != "no_deficit"]
    if not shown.empty:
        st.dataframe(pd.DataFrame({
            "Root": shown["root"], "Muscle": shown["label"], "Side": shown["side"],
            "Pre-op": shown["baseline_mrc"].map(format_mrc), "Latest": shown["latest_mrc"].map(format_mrc),
            "Latest exam": shown["latest_day"].map(lambda d: "—" if pd.isna(d) else week_label(d)),
            "Status": shown["status"].map(status_words),
        }), hide_index=True, width="stretch")
    st.plotly_chart(prom_figure(case.view, large=True), width="stretch", key="conference_proms")
with right:
    st.subheader("Imaging checklist")
    case_checklist(case)

# ------------------------------------------------------------------------------------------- handout
st.divider()
st.subheader("Handout")
open_count = open_prompts(prompts[prompts["patient_id"].isin(set(ids))])["patient_id"].nunique()
st.caption(f"{len(ids)} cases ({open_count} with open prompts), de-identified like this screen. Made when you "
           "click: a few seconds to start, then up to a second per case.")
decided = prompts.loc[prompts["patient_id"].isin(set(ids)), ["rule_id", "decision", "decided_at"]].astype(str)
handout_key = (list_key, str(assessment.as_of), assessment.reference.reference_id,
               hashlib.sha256(decided.to_csv(index=False).encode()).hexdigest()[:16])
_handout_html, _handout_pdf = session_document(
    "conference_handouts", handout_key, lambda: build_handout(assessment, ids, prompts, cohort.exam_index.exams))


downloads = st.columns(2)
for column, (label, fmt, make, mime) in zip(downloads, (
        ("Handout PDF", "pdf", _handout_pdf, "application/pdf"),
        ("Handout HTML", "html", _handout_html, "text/html")), strict=True):
    column.download_button(label, data=make, file_name=f"case-conference-handout.{fmt}", mime=mime,
                           icon=":material/download:", key=f"conference_handout_{fmt}", width="stretch",
                           on_click=auth.audit_export, args=("conference_handout", fmt),
                           kwargs={"patients": len(ids)})
