"""Who is using the app and in which role. Placeholder until login lands (issue 8): everyone is a surgeon.

Roles: surgeon (everything, records decisions), conference (de-identified views only), admin (imports,
users, audit).
"""

from __future__ import annotations

import streamlit as st

ROLES = ("surgeon", "conference", "admin")


def current_role() -> str:
    return st.session_state.get("role", "surgeon")


def current_user() -> str | None:
    return st.session_state.get("user_name")
