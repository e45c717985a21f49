"""Audit (admins): who signed in, viewed which patient, imported, decided, exported, backed up or restored."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import require_screen
from dashboard.store.audit import audit_log, audit_users
from dashboard.store.models import AUDIT_ACTIONS

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

MAX_ROWS = 5_000

st.title("Audit log")
st.caption("Every sign-in, patient view, import, decision, export, backup and restore: who, what and when (UTC). "
           "Entries cannot be changed or deleted — the database refuses it.")

engine = data.engine()
columns = st.columns([2, 3, 2, 2])
users = audit_users(engine)
user = columns[0].selectbox("User", ["All users", *users], key="audit_user")
actions = columns[1].multiselect("Action", list(AUDIT_ACTIONS), key="audit_actions",
                                 placeholder="All actions")
today = date.today()
days = columns[2].date_input("Dates", value=(today - timedelta(days=30), today), max_value=today,
                             key="audit_dates", help="From and to, both included")
patient = columns[3].text_input("Patient id", key="audit_patient", placeholder="e.g. P00012")

since, until = (days[0], days[-1]) if isinstance(days, tuple | list) and days else (None, None)
entries = audit_log(engine, user=None if user == "All users" else user, actions=actions or None,
                    patient_id=patient.strip() or None, since=since, until=until, limit=MAX_ROWS + 1)
if len(entries) > MAX_ROWS:
    st.warning(f"Showing the newest {MAX_ROWS:,} entries: narrow the filters to see older ones.")
    entries = entries.head(MAX_ROWS)
st.markdown(f"**{len(entries):,} entries**")
shown = entries.assign(details=entries["details"].map(
    lambda d: "" if not isinstance(d, dict) else ", ".join(f"{k}: {v}" for k, v in d.items())))
st.dataframe(shown.drop(columns="id"), hide_index=True, width="stretch", column_config={
    "at": st.column_config.DatetimeColumn("When (UTC)", format="YYYY-MM-DD HH:mm:ss"),
    "user_name": "User", "role": "Role", "action": "Action", "patient_id": "Patient", "details": "Details"})
if not entries.empty:
    counts = entries["action"].value_counts().rename("entries").rename_axis("action").reset_index()
    with st.expander("Entries per action"):
        st.dataframe(pd.DataFrame(counts), hide_index=True)
