"""Spine Recovery Dashboard — Streamlit entry point: `streamlit run dashboard/app.py`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # streamlit puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.private_files import owner_only  # noqa: E402
from dashboard.runtime import keep_freed_memory  # noqa: E402
from dashboard.ui.auth import require_login  # noqa: E402
from dashboard.ui.widgets import sidebar_settings  # noqa: E402

owner_only()  # the store, reports and uploads' files hold patient data
keep_freed_memory()
st.set_page_config(page_title="Spine Recovery Dashboard", page_icon=":material/monitor_heart:", layout="wide")

# Each page with the roles that may open it; the entry point shows a user only their pages.
PAGES: dict[str, list[tuple[st.Page, tuple[str, ...]]]] = {
    "Follow-up": [
        (st.Page("pages/clinic.py", title="Clinic", icon=":material/groups:", default=True), ("surgeon",)),
        (st.Page("pages/patient.py", title="Patient", icon=":material/person:"), ("surgeon",)),
        (st.Page("pages/add_exam.py", title="Add exam / visit", icon=":material/edit_note:"), ("surgeon",)),
    ],
    "Conference": [
        (st.Page("pages/conference.py", title="Case conference", icon=":material/co_present:",
                 default=False), ("surgeon", "conference")),
    ],
    "Data and reference": [
        (st.Page("pages/import_records.py", title="Import", icon=":material/upload_file:"), ("surgeon", "admin")),
        (st.Page("pages/reference.py", title="Reference curves", icon=":material/show_chart:"),
         ("surgeon", "conference", "admin")),
    ],
    "Administration": [
        (st.Page("pages/audit.py", title="Audit", icon=":material/policy:"), ("admin",)),
    ],
}


def pages_for(role: str) -> dict[str, list[st.Page]]:
    visible = {group: [page for page, roles in pages if role in roles] for group, pages in PAGES.items()}
    return {group: pages for group, pages in visible.items() if pages}


role = require_login()  # the sign-in form until a user is signed in: no page runs before
navigation = st.navigation(pages_for(role))
if navigation.url_path != "conference":  # a calendar day beside "week N" would date a projected case
    sidebar_settings()
st.sidebar.caption("Decision support only: the clinician decides. Suggestions name their rule, evidence and "
                   "source.")
navigation.run()
