"""Import: upload CSV files or a workbook, see the whole validation report, store only on confirmation."""

from __future__ import annotations

import tempfile
from pathlib import Path

import streamlit as st

from dashboard.core.records import validate
from dashboard.core.schema import FILES
from dashboard.store import import_history, import_records
from dashboard.ui import data

MAX_UPLOAD_MB = 200

st.title("Import records")
st.caption("Records format v1: patients.csv, surgeries.csv, strength.csv and optional visits.csv — or one .xlsx "
           "workbook with a sheet per file. An import with any error stores nothing.")
uploads = st.file_uploader("Records files", type=["csv", "xlsx"], accept_multiple_files=True,
                           help=f"Up to {MAX_UPLOAD_MB} MB in all.")

if uploads:
    total = sum(u.size for u in uploads)
    books = [u for u in uploads if u.name.lower().endswith(".xlsx")]
    if total > MAX_UPLOAD_MB * 1024 * 1024:
        st.error(f"The files add up to {total / 1024 / 1024:.0f} MB; the limit is {MAX_UPLOAD_MB} MB.")
        st.stop()
    if books and len(uploads) > 1:
        st.error("Upload either one workbook or the CSV files, not both.")
        st.stop()
    known = {spec.name for spec in FILES}
    unknown = [u.name for u in uploads if not books and u.name.lower() not in known]
    if unknown:
        st.error(f"Not a records file: {', '.join(unknown)}. Expected {', '.join(sorted(known))}.")
        st.stop()
    with tempfile.TemporaryDirectory() as folder:
        for upload in uploads:
            (Path(folder) / upload.name.lower()).write_bytes(upload.getvalue())
        target = Path(folder) / books[0].name.lower() if books else Path(folder)
        records, report = validate(target)
    source = books[0].name if books else ", ".join(sorted(u.name for u in uploads))
    if report.issues.empty:
        st.success("No problems found.")
    else:
        st.subheader("Validation report")
        errors, warnings = len(report.errors), len(report.warnings)
        st.markdown(f"**{errors} error(s), {warnings} warning(s)**")
        st.dataframe(report.issues, hide_index=True, width="stretch", column_config={
            "severity": "Severity", "file": "File", "line": st.column_config.NumberColumn("Line", format="%d"),
            "column": "Column", "value": "Value", "message": "Problem"})
    if records is None:
        st.error("Nothing will be stored until every error is corrected.")
    else:
        counts = ", ".join(f"{len(frame)} {name}" for name, frame in records.frames().items())
        st.info(f"Ready to import: {counts}.")
        if st.button("Import into the store", type="primary"):
            result = import_records(data.engine(), records, source_name=source,
                                    user=st.session_state.get("user_name"))
            data.clear_caches()
            st.success(f"Imported ({result.summary()}).")

st.subheader("Import history")
st.dataframe(import_history(data.engine()), hide_index=True, width="stretch")
