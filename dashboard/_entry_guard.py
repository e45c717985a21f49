"""Make dashboard/app.py (and its login) the only way into the Streamlit pages.

Streamlit keeps a legacy mode for apps with a `pages/` folder next to the entry script: until `st.navigation`
is called once in the server process, a request for `/patient` runs `pages/patient.py` directly, skipping
app.py and so the login. The very first request after a (re)start could therefore show patient data
without signing in. On first import of the package inside a Streamlit script run, we switch the legacy mode
off and rerun, so the rerun goes through app.py. Outside Streamlit this does nothing (and imports nothing).
"""

from __future__ import annotations

import sys


def pages_only_through_the_entry_point() -> None:
    if "streamlit" not in sys.modules:  # command line, tests without Streamlit: nothing to guard
        return
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    legacy = PagesManager.uses_pages_directory
    PagesManager.uses_pages_directory = False
    if legacy and get_script_run_ctx() is not None:
        import streamlit as st

        st.rerun()  # this run may be a page file run directly; the rerun starts at app.py
