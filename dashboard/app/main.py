"""Spine Recovery Dashboard — Streamlit entry point: `streamlit run dashboard/app/main.py`."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # streamlit puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.app.auth import SCREEN_ROLES, require_login  # noqa: E402
from dashboard.app.widgets import sidebar_settings  # noqa: E402
from dashboard.private_files import owner_only  # noqa: E402
from dashboard.runtime import keep_freed_memory  # noqa: E402

owner_only()  # the store, reports and uploads' files hold patient data
keep_freed_memory()
st.set_page_config(page_title="Spine Recovery Dashboard", page_icon=":material/monitor_heart:", layout="wide")


def screen(name: str, title: str, icon: str, **options) -> tuple[st.Page, tuple[str, ...]]:
    """A screen of dashboard/app/screens/ at /name, with the roles that may open it: SCREEN_ROLES, the one table of
    roles, which each screen also checks itself as its first statement (`require_screen(__file__)`). The sign-in
    form answers at the same addresses until sign-in (dashboard.app.auth._only_page)."""
    return st.Page(f"screens/{name}.py", title=title, icon=icon, url_path=name, **options), SCREEN_ROLES[name]


CONFERENCE = screen("conference", "Case conference", ":material/co_present:")
# Each screen with the roles that may open it; the entry point shows a user only their screens.
PAGES: dict[str, list[tuple[st.Page, tuple[str, ...]]]] = {
    "Follow-up": [
        screen("clinic", "Clinic", ":material/groups:", default=True),
        screen("patient", "Patient", ":material/person:"),
        screen("add_exam", "Add exam / visit", ":material/edit_note:"),
    ],
    "Conference": [CONFERENCE],
    "Data and reference": [
        screen("import_records", "Import", ":material/upload_file:"),
        screen("reference", "Reference curves", ":material/show_chart:"),
        screen("outcomes", "Outcomes", ":material/monitoring:"),
    ],
    "Administration": [
        screen("audit", "Audit", ":material/policy:"),
        screen("users", "Users", ":material/manage_accounts:"),
    ],
}


def pages_for(role: str) -> dict[str, list[st.Page]]:
    visible = {group: [page for page, roles in pages if role in roles] for group, pages in PAGES.items()}
    return {group: pages for group, pages in visible.items() if pages}


role = require_login()  # the sign-in form until a user is signed in: no page runs before
navigation = st.navigation(pages_for(role))
# A calendar day beside "week N" would date a projected case. Not by url_path: the first screen of a role
# without the Clinic (conference) is its default, whose url_path is "".
# The day and reference controls are clinical settings: for surgeons only (the conference role sees no calendar
# day anywhere; the admin has no clinical screen).
if role == "surgeon" and navigation.title != CONFERENCE[0].title:
    sidebar_settings()
st.sidebar.caption("Decision support only: the clinician decides. Suggestions name their rule, evidence and "
                   "source.")
navigation.run()
