"""Add exam / visit: a form validated exactly like an import, then saved to the store."""

from __future__ import annotations

import re
from datetime import date

import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import require_screen
from dashboard.app.widgets import patient_banner
from dashboard.clinical.mrc import MRC_TOKENS, MUSCLE_LABELS, MUSCLES, SIDES
from dashboard.clinical.records.format import VISIT_BOOLEANS, VISIT_SIGN_BOOLEANS
from dashboard.clinical.records.validate import Records, validate_frames
from dashboard.clinical.records.write import to_text_frames
from dashboard.clinical.wording import FINDING_WORDS, SIDE_WORDS, field_words, plain
from dashboard.store import import_records, load_records

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

#: The visit's number fields: record column, form label, key.
NUMBERS = (("leg_pain_nrs", "Leg pain (NRS 0–10)"), ("back_pain_nrs", "Back pain (NRS 0–10)"),
           ("odi", "ODI (0–100)"), ("crp_mg_l", "CRP (mg/L)"))
#: Cauda equina and sepsis (qSOFA) signs: optional columns the red-flag rules read as last recorded.
SIGN_NUMBERS = (("respiratory_rate", "Respiratory rate (/min)"), ("systolic_bp", "Systolic BP (mmHg)"))
FINDINGS = (*VISIT_BOOLEANS, *VISIT_SIGN_BOOLEANS)
ERRORS = "add_exam_errors"  # field → message of the last refused attempt (shown at the field)

cohort = data.cohort()
assessment = cohort.assessment
banner = st.container()
st.title("Add an examination or visit")
st.caption("Checked by the same validation as an import; nothing is saved when anything is wrong.")
ids = sorted(assessment.patients["patient_id"])
if not ids:
    st.info("No patient in the store yet: import records on the Import page.")
    st.stop()
default = st.session_state.get("patient_id")
labels = cohort.labels
patient_id = st.selectbox("Patient", ids, index=ids.index(default) if default in ids else 0,
                          format_func=lambda pid: labels.get(pid, pid), key="add_exam_patient")
if st.session_state.get("add_exam_for") != patient_id:  # another patient: earlier errors no longer apply
    st.session_state[ERRORS] = {}
    st.session_state["add_exam_for"] = patient_id
with banner:
    patient_banner(data.cached_patient_view(cohort, patient_id).header)
errors: dict[str, str] = st.session_state.get(ERRORS, {})
# Today; in demo mode the demo's day, the day its records are counted back from and every other screen opens on
# (a demo exam dated today would lie weeks after the demo cohort's last visit).
exam_day = data.default_assessment_day()


def blank_as_dash(option: str) -> str:
    """A blank choice reads '—' (not a placeholder cut to 'Choose an o' in a narrow box)."""
    return option or "—"


def at_field(field: str, container=st) -> None:
    """The error of the last attempt for this field, right under it."""
    if field in errors:
        container.error(errors[field], icon=":material/error:")


with st.form("add-exam", clear_on_submit=False):
    when = st.date_input("Date of examination / visit", value=exam_day, max_value=max(date.today(), exam_day),
                         key="ae-date")
    if data.demo_mode():
        st.caption(f"Demo data: the date starts on {exam_day:%d %b %Y}, the demo's day, not today (synthetic "
                   "patients).")
    at_field("date")
    st.markdown("**Strength (MRC)** — leave blank what was not examined")
    grades: dict[tuple[str, str], str] = {}
    heads = st.columns([3, 1, 1])
    heads[1].caption("Left")
    heads[2].caption("Right")
    for muscle in MUSCLES:
        cols = st.columns([3, 1, 1], vertical_alignment="center")
        cols[0].text(MUSCLE_LABELS[muscle])
        for col, side in zip(cols[1:], SIDES, strict=True):
            grades[(muscle, side)] = col.selectbox(f"{MUSCLE_LABELS[muscle]} {SIDE_WORDS[side]}", ["", *MRC_TOKENS],
                                                   key=f"g-{muscle}-{side}", label_visibility="collapsed",
                                                   format_func=blank_as_dash)
            at_field(f"{muscle}-{side}", col)
    st.markdown("**Visit** — leave blank what was not asked or measured")
    numbers = {}
    cols = st.columns(4)
    for col, (field, label) in zip(cols, NUMBERS, strict=True):
        numbers[field] = col.text_input(label, key=f"v-{field}")
        at_field(field, col)
    findings = {}
    cols = st.columns(4)
    for i, finding in enumerate(FINDINGS):
        words = FINDING_WORDS[finding]
        findings[finding] = cols[i % 4].selectbox(words[:1].upper() + words[1:], ["", "yes", "no"],
                                                  key=f"f-{finding}", format_func=blank_as_dash)
        at_field(finding, cols[i % 4])
    st.caption("Sepsis signs (qSOFA), read by the infection rule: its threshold is in the rules file.")
    cols = st.columns(4)
    for col, (field, label) in zip(cols, SIGN_NUMBERS, strict=False):
        numbers[field] = col.text_input(label, key=f"v-{field}")
        at_field(field, col)
    at_field("form")
    submitted = st.form_submit_button("Validate and save", type="primary")


def literal(text: str) -> str:
    """Typed text shown inside a Markdown message as written: Markdown punctuation escaped (no links, images)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>~$:])", r"\\\1", text[:40])


def field_errors(report, new_strength: pd.DataFrame, first_new_line: int) -> dict[str, str]:
    """The report's errors as words, keyed by the form field they belong to ('form' for the rest)."""
    found: dict[str, str] = {}
    for issue in report.errors.itertuples(index=False):
        column, value, message = str(issue.column or ""), issue.value, str(issue.message)
        shown = "" if value is None or pd.isna(value) or str(value) == "" else f"'{literal(str(value))}' "
        if issue.file == "form (strength)" and column in ("mrc", "exam_date", "muscle", "side") and \
                pd.notna(issue.line) and int(issue.line) >= first_new_line:
            row = new_strength.iloc[int(issue.line) - first_new_line]
            field = f"{row['muscle']}-{row['side']}" if column != "exam_date" else "date"
            words = (f"{SIDE_WORDS[row['side']].capitalize()} {plain(row['muscle'])}" if column != "exam_date"
                     else "Date")
        elif issue.file == "form (visit)" and column in (*dict(NUMBERS), *dict(SIGN_NUMBERS), *FINDINGS,
                                                                  "visit_date"):
            field = "date" if column == "visit_date" else column
            words = "Date" if column == "visit_date" else field_words(column)
        else:
            field, words = "form", (f"{issue.file}, {field_words(column)}" if column else str(issue.file))
        text = f"{words}: {shown}{plain(message)}".replace("(0–10)", "0–10")
        found[field] = f"{found[field]} {text}" if field in found else text
    return found


if submitted:
    stored: Records = load_records(data.engine())
    text = to_text_frames(stored)
    mine = {name: frame[frame["patient_id"] == patient_id] for name, frame in text.items()}
    day = when.isoformat()
    new_strength = pd.DataFrame(
        [{"patient_id": patient_id, "exam_date": day, "muscle": m, "side": s, "mrc": g}
         for (m, s), g in grades.items() if g], dtype="string")
    visit_values = {**numbers, **findings}
    visit_values = {k: v.strip() for k, v in visit_values.items() if v and v.strip()}
    new_visits = pd.DataFrame([{"patient_id": patient_id, "visit_date": day, **visit_values}], dtype="string") \
        if visit_values else pd.DataFrame(columns=["patient_id", "visit_date"], dtype="string")
    if new_strength.empty and new_visits.empty:
        st.session_state[ERRORS] = {"form": "Nothing to save: enter at least one grade or one visit finding."}
        st.rerun()
    raw = {
        "patients.csv": mine["patients.csv"],
        "surgeries.csv": mine["surgeries.csv"],
        "strength.csv": pd.concat([mine["strength.csv"], new_strength], ignore_index=True),
        "visits.csv": pd.concat([mine["visits.csv"], new_visits], ignore_index=True),
    }
    labels = {"strength.csv": "form (strength)", "visits.csv": "form (visit)", "patients.csv": "stored patient",
              "surgeries.csv": "stored operations"}
    records, report = validate_frames(raw, labels)
    if records is None:
        st.session_state[ERRORS] = field_errors(report, new_strength, first_new_line=len(mine["strength.csv"]) + 2)
        st.session_state["add_exam_refused"] = True
        st.rerun()
    import_records(data.engine(), records, source_name="form", user=st.session_state.get("user_name"),
                   role=st.session_state.get("role"), source_kind="form", patient_id=patient_id)
    data.clear_caches()
    st.session_state[ERRORS] = {}
    grades_saved = len(new_strength)
    saved = [f"{grades_saved} grade{'s' if grades_saved != 1 else ''}" if grades_saved else "",
             "the visit" if visit_values else ""]
    st.session_state["add_exam_saved"] = (f"Saved {' and '.join(s for s in saved if s)} of {when:%d %b %Y}. "
                                          "The charts and checklist include them now.")
    st.rerun()

if st.session_state.pop("add_exam_refused", False) and errors:
    st.error("Not saved: please correct the fields marked above.", icon=":material/error:")
if (saved_message := st.session_state.pop("add_exam_saved", None)) is not None:
    st.success(saved_message, icon=":material/check_circle:")
