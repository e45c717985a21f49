"""Case conference (being built: issue 7)."""

import streamlit as st

st.title("Case conference")
st.info("Coming soon: de-identified case lists, presentation mode and handouts.")
