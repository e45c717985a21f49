"""The dashboard's server: Streamlit's ASGI app (`st.App`) running dashboard/app/main.py, with the routes of
dashboard.app.routes beside it (the HttpOnly session cookie and identified downloads).

Start it with `streamlit run dashboard/app/server.py`: Streamlit finds `app` in this file and serves it with uvicorn
(`streamlit run dashboard/app/main.py` would still show the app, but without these routes no cookie is set and no
identified report downloads).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # streamlit puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.app.routes import ROUTES  # noqa: E402

app = st.App("main.py", routes=ROUTES)
