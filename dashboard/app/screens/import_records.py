"""Import: upload CSV files, a workbook or a zipped folder, see the whole validation report, store only on
confirmation."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.app import data
from dashboard.app.auth import audit_event, require_screen
from dashboard.app.uploads import MAX_UPLOAD_MB, UploadRejected, check_uploads
from dashboard.clinical.records.write import neutralise_formulas
from dashboard.clinical.wording import field_words
from dashboard.interop.uploads import IMPORT_SOURCES, RECORDS_FILES, check_interop_uploads, interop_uploader
from dashboard.store import IdentityConflictError, StoreImportError, import_history, import_records

require_screen(__file__)  # first: signed in, in a role of SCREEN_ROLES, before any data is read

#: The store's tables as people name what is in them.
ROWS = {"patients": ("patient", "patients"), "surgeries": ("operation", "operations"),
        "strength": ("strength grade", "strength grades"), "visits": ("visit", "visits")}


def counted(n: int, table: str) -> str:
    one, many = ROWS.get(table, (table, table))
    return f"{n:,} {one if n == 1 else many}"


def import_words(result) -> str:
    """'2 new patients and 1 changed (198 unchanged); added 3 operations, 120 strength grades; updated 1 visit.'"""
    patients = f"{len(result.new_patients):,} new patient{'s' if len(result.new_patients) != 1 else ''}"
    if result.changed_patients:
        patients += f" and {len(result.changed_patients):,} changed"
    patients += f" ({result.unchanged_patients:,} unchanged)"
    added = [counted(c.inserted, t) for t, c in result.counts.items() if c.inserted and t != "patients"]
    updated = [counted(c.updated, t) for t, c in result.counts.items() if c.updated and t != "patients"]
    parts = [patients]
    if added:
        parts.append("added " + ", ".join(added))
    if updated:
        parts.append("updated " + ", ".join(updated))
    if not added and not updated and not result.new_patients and not result.changed_patients:
        parts.append("nothing new: everything in the files is already stored")
    return "; ".join(parts) + "."


st.title("Import records")
st.caption("Records format v1: patients.csv, surgeries.csv, strength.csv and optional visits.csv — as the files "
           "of a folder, the folder zipped, or one .xlsx workbook with a sheet per file. Other files (a README, "
           "scenarios.csv) are ignored. An import with any error stores nothing.")
if (done := st.session_state.pop("import_done", None)) is not None:
    st.success(done, icon=":material/check_circle:")
source_kind = st.radio("Import from", IMPORT_SOURCES, horizontal=True)
round_ = st.session_state.setdefault("import_round", 0)  # a new uploader (empty) after each import
if source_kind == RECORDS_FILES:
    uploads = st.file_uploader("Records files, a zipped folder or a workbook", type=["csv", "xlsx", "zip", "md", "txt"],
                               accept_multiple_files=True, key=f"records_upload_{round_}",
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
    if getattr(checked, "ignored", ()):
        st.caption("Ignored (not records files): " + ", ".join(checked.ignored))
    report = checked.report
    if report.issues.empty:
        st.success("The files passed every check.", icon=":material/check_circle:")
    else:
        st.subheader("Validation report")
        st.markdown(f"**{len(report.errors)} error(s), {len(report.warnings)} warning(s)**")
        issues = report.issues.assign(column=report.issues["column"].map(
            lambda c: field_words(c) if isinstance(c, str) and c else ""))
        # The bad values come from the uploaded files: no cell of the table's CSV download may start a formula.
        st.dataframe(neutralise_formulas(issues), hide_index=True, width="stretch", column_config={
            "severity": "Severity", "file": "File", "line": st.column_config.NumberColumn("Line", format="%d"),
            "column": "Field", "value": "Value", "message": "Problem"})
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
        st.info(f"Ready to import: {import_words(preview)} Blank cells and absent columns keep what is stored.")
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
            st.session_state["import_done"] = f"Imported: {import_words(result)}"  # no file name in Markdown
            st.session_state["import_round"] = round_ + 1  # the next run shows an empty uploader, no button
            st.rerun()

st.subheader("Import history")
history = import_history(data.engine())


def _rows(frame: pd.DataFrame, kind: str) -> pd.Series:
    parts = [frame[f"{table}_{kind}"].fillna(0).astype(int).map(lambda n, t=table: counted(n, t) if n else "")
             for table in ("surgeries", "strength", "visits")]
    return pd.concat(parts, axis=1).apply(lambda row: ", ".join(p for p in row if p) or "—", axis=1) \
        if len(frame) else pd.Series(dtype="string")


readable = pd.DataFrame({
    "When": history["started_at"].dt.tz_convert("UTC").dt.strftime("%d %b %Y %H:%M UTC"),
    "Source": history["source_name"],
    "How": history["source_kind"].map({"folder": "Files", "workbook": "Workbook", "form": "Add-exam form"})
    .fillna(history["source_kind"]),
    "By": history["user_name"].fillna("—"),
    "Result": history["status"].map({"succeeded": "Imported", "failed": "Failed: nothing stored",
                                     "running": "Running"}).fillna(history["status"]),
    "Patients": [
        "—" if pd.isna(n) else f"{int(n)} new, {int(u or 0)} changed, {int(s or 0)} unchanged" for n, u, s in
        zip(history["patients_inserted"], history["patients_updated"], history["patients_unchanged"], strict=True)],
    "Added": _rows(history, "inserted"),
    "Updated": _rows(history, "updated"),
})
st.dataframe(neutralise_formulas(readable), hide_index=True, width="stretch")  # file names: no formulas
