"""Spine Recovery Dashboard — Streamlit entry point: `streamlit run dashboard/app.py`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # streamlit puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.ui.widgets import sidebar_settings  # noqa: E402

st.set_page_config(page_title="Spine Recovery Dashboard", page_icon=":material/monitor_heart:", layout="wide")

PAGES = {
    "Follow-up": [
        st.Page("pages/clinic.py", title="Clinic", icon=":material/groups:", default=True),
        st.Page("pages/patient.py", title="Patient", icon=":material/person:"),
        st.Page("pages/add_exam.py", title="Add exam / visit", icon=":material/edit_note:"),
    ],
    "Data and reference": [
        st.Page("pages/import_records.py", title="Import", icon=":material/upload_file:"),
        st.Page("pages/reference.py", title="Reference curves", icon=":material/show_chart:"),
    ],
}

navigation = st.navigation(PAGES)
sidebar_settings()
st.sidebar.caption("Decision support only: the clinician decides. Suggestions name their rule, evidence and "
                   "source.")
navigation.run()
