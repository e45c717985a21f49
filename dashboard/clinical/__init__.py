"""The clinical core: pure, importable alone (no Streamlit, Plotly, SQLAlchemy or FastAPI).

One module per clinical concept: the MRC scale, the record format and its validation, curves, status, the
imaging checklist, assessment, decisions, the patient view, the conference view, calibration and outcomes.
The only place a clinical rule or threshold lives."""
