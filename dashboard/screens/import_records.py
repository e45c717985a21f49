"""Import: upload CSV files or a workbook, see the whole validation report, store only on confirmation."""

from __future__ import annotations

import streamlit as st

from dashboard.interop.uploads import IMPORT_SOURCES, RECORDS_FILES, check_interop_uploads, interop_uploader
from dashboard.store import IdentityConflictError, StoreImportError, import_history, import_records
from dashboard.ui import data
from dashboard.ui.auth import audit_event, require_screen
from dashboard.ui.uploads import MAX_UPLOAD_MB, UploadRejected, check_uploads

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

st.title("Import records")
st.caption("Records format v1: patients.csv, surgeries.csv, strength.csv and optional visits.csv — or one .xlsx "
           "workbook with a sheet per file. An import with any error stores nothing.")
source_kind = st.radio("Import from", IMPORT_SOURCES, horizontal=True)
if source_kind == RECORDS_FILES:
    uploads = st.file_uploader("Records files", type=["csv", "xlsx"], accept_multiple_files=True,
                               help=f"Up to {MAX_UPLOAD_MB} MB in all.")
else:  # FHIR Bundle or REDCap export: converted, then validated exactly like records files
    uploads = interop_uploader(source_kind)

if uploads:
    try:
        files = [(u.name, u.getvalue()) for u in uploads]
        checked = check_uploads(files) if source_kind == RECORDS_FILES else check_interop_uploads(source_kind, files)
    except UploadRejected as problem:
        st.error(str(problem))
        st.stop()
    report = checked.report
    if report.issues.empty:
        st.success("No problems found.")
    else:
        st.subheader("Validation report")
        st.markdown(f"**{len(report.errors)} error(s), {len(report.warnings)} warning(s)**")
        st.dataframe(report.issues, hide_index=True, width="stretch", column_config={
            "severity": "Severity", "file": "File", "line": st.column_config.NumberColumn("Line", format="%d"),
            "column": "Column", "value": "Value", "message": "Problem"})
    if checked.records is None and report.ok:  # a whole FHIR record without a spine operation
        st.info("No spine operations found in this file: there is nothing to import.")
    elif checked.records is None:
        st.error("Nothing will be stored until every error is corrected.")
    else:
        try:  # the whole import, counted and rolled back: the preview is exactly what the import will do
            preview = import_records(data.engine(), checked.records, source_name=checked.source_name, dry_run=True)
        except IdentityConflictError as conflict:
            st.error(f"**Nothing will be stored.** {len(conflict.problems)} patient(s) in the file contradict who "
                     "the store says they are:")
            st.dataframe({"Problem": conflict.problems}, hide_index=True, width="stretch")
            st.stop()
        st.info(f"Ready to import: {preview.patients_summary()}. Rows: {preview.summary()}. Blank cells and "
                "absent columns keep what is stored.")
        if st.button("Import into the store", type="primary"):
            try:
                result = import_records(data.engine(), checked.records, source_name=checked.source_name,
                                        user=st.session_state.get("user_name"), role=st.session_state.get("role"),
                                        source_kind=getattr(checked, "source_kind", None))
            except (StoreImportError, IdentityConflictError) as problem:  # value-free message; nothing stored
                audit_event("import", file=checked.source_name, kind=getattr(checked, "source_kind", None),
                            status="failed", error=type(problem).__name__)
                st.error(f"Nothing was stored: {problem}.")
                st.stop()
            data.clear_caches()
            st.success(f"Imported ({result.patients_summary()}; {result.summary()}).")

st.subheader("Import history")
st.dataframe(import_history(data.engine()), hide_index=True, width="stretch")
