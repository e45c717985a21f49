"""Pure clinical core: no Streamlit, no Plotly. Works on whole cohorts with pandas."""
