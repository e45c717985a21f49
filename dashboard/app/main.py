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

owner_only()  # the store, reports and uploads' files hold patient data
st.set_page_config(page_title="Spine Recovery Dashboard", page_icon=":material/monitor_heart:", layout="wide")


#: Each screen of dashboard/app/screens/: (file name = url_path, title, icon), in menu groups, in menu order.
SCREENS: dict[str, list[tuple[str, str, str]]] = {
    "Follow-up": [("clinic", "Clinic", ":material/groups:"),
                  ("patient", "Patient", ":material/person:"),
                  ("add_exam", "Add exam / visit", ":material/edit_note:")],
    "Conference": [("conference", "Case conference", ":material/co_present:")],
    "Data and reference": [("import_records", "Import", ":material/upload_file:"),
                           ("reference", "Reference curves", ":material/show_chart:"),
                           ("outcomes", "Outcomes", ":material/monitoring:")],
    "Administration": [("audit", "Audit", ":material/policy:"),
                       ("users", "Users", ":material/manage_accounts:")],
}
CONFERENCE_TITLE = "Case conference"
#: The internal url_path of a role's home page (served at "/"): never an address of its own.
HOME = "home"


def pages_for(role: str) -> dict[str, list[st.Page]]:
    """The role's screens (SCREEN_ROLES, the one table of roles, which each screen also checks itself as its first
    statement), each at /its-name, and the role's first screen also at "/".

    Streamlit serves its default page at "/" only: a default page with url_path "clinic" made /clinic answer "Page
    not found". So the first screen is the default (shown in the menu, highlighted on landing) under the internal
    url_path HOME, and the same file is registered again, hidden from the menu, at its own name: /clinic (or
    /conference, /import_records for roles without the clinic) opens it like every other screen. The sign-in form
    answers at the same addresses until sign-in (dashboard.app.auth._only_page)."""
    mine = {group: [s for s in screens if role in SCREEN_ROLES[s[0]]] for group, screens in SCREENS.items()}
    mine = {group: screens for group, screens in mine.items() if screens}
    home = next(iter(mine.values()))[0][0] if mine else None
    pages: dict[str, list[st.Page]] = {}
    for group, screens in mine.items():
        pages[group] = []
        for name, title, icon in screens:
            script = f"screens/{name}.py"
            if name == home:
                pages[group] += [st.Page(script, title=title, icon=icon, url_path=HOME, default=True),
                                 st.Page(script, title=title, icon=icon, url_path=name, visibility="hidden")]
            else:
                pages[group].append(st.Page(script, title=title, icon=icon, url_path=name))
    return pages


role = require_login()  # the sign-in form until a user is signed in: no page runs before
navigation = st.navigation(pages_for(role))
# A calendar day beside "week N" would date a projected case. By title: the conference screen is also a role's home
# page, whose url_path is HOME.
# The day and reference controls are clinical settings: for surgeons only (the conference role sees no calendar
# day anywhere; the admin has no clinical screen).
if role == "surgeon" and navigation.title != CONFERENCE_TITLE:
    sidebar_settings()
st.sidebar.caption("Decision support only: the clinician decides. Suggestions name their rule, evidence and "
                   "source.")
navigation.run()
