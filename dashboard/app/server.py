"""The dashboard's server: Streamlit's ASGI app (`st.App`) running dashboard/app/main.py, with the routes of
dashboard.app.routes beside it (the HttpOnly session cookie and identified downloads).

Start it with `streamlit run dashboard/app/server.py`: Streamlit finds `app` in this file and serves it with uvicorn
(`streamlit run dashboard/app/main.py` would still show the app, but without these routes no cookie is set and no
identified report downloads).
"""

from __future__ import annotations

import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # streamlit puts only this file's folder on the path
    sys.path.insert(0, str(ROOT))

import streamlit as st  # noqa: E402

from dashboard.app.data import warm_cohort  # noqa: E402
from dashboard.app.routes import ROUTES  # noqa: E402


@asynccontextmanager
async def prepare_cohort(_app: st.App) -> AsyncIterator[None]:
    """Start assessing the store as the server starts, beside it: the first sign-in then waits for the
    assessment only if it comes sooner than the assessment is done."""
    threading.Thread(target=warm_cohort, name="warm-cohort", daemon=True).start()
    yield None


app = st.App("main.py", routes=ROUTES, lifespan=prepare_cohort)
