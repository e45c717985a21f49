"""FHIR Bundle and REDCap uploads for the Import page: checked like records files, stored only on confirmation.

Kept apart from the page so it can be tested without Streamlit; the page shows the same report table
and import button whatever the source.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dashboard.app.uploads import MAX_UPLOAD_MB, CheckedUpload, UploadRejected
from dashboard.interop.fhir import bundle_to_records, ndjson_to_records
from dashboard.interop.redcap import MappingError, export_to_records, load_mapping, mapping_from_dict, read_csv_text

RECORDS_FILES, FHIR_BUNDLE, REDCAP_EXPORT = "Records files", "FHIR Bundle", "REDCap export"
IMPORT_SOURCES = (RECORDS_FILES, FHIR_BUNDLE, REDCAP_EXPORT)
EXAMPLE_MAPPING = Path(__file__).resolve().parents[2] / "data" / "redcap" / "mapping.yaml"


@dataclass
class CheckedInteropUpload(CheckedUpload):
    source_kind: str = "fhir"


def interop_uploader(kind: str):  # noqa: ANN201 — Streamlit's UploadedFile list
    """The file picker for a FHIR Bundle or a REDCap export (with its mapping)."""
    import streamlit as st  # noqa: PLC0415

    if kind == FHIR_BUNDLE:
        st.caption("One FHIR R4 Bundle (.json), or the .ndjson files of a Bulk Data export, coded as in "
                   "docs/interoperability.md. Only spine operations and their patients are imported; other "
                   "Procedures, Patients, Encounters and resource types are skipped and counted.")
        return st.file_uploader("FHIR Bundle", type=["json", "ndjson"], accept_multiple_files=True,
                                help=f"Up to {MAX_UPLOAD_MB} MB.")
    st.caption("A REDCap flat CSV export (raw codes) and the mapping file that says which field fills which "
               "records column. Without a mapping file, the example data/redcap/mapping.yaml is used.")
    return st.file_uploader("REDCap export and mapping", type=["csv", "yaml", "yml"], accept_multiple_files=True,
                            help=f"Up to {MAX_UPLOAD_MB} MB in all.")


def check_interop_uploads(kind: str, files: list[tuple[str, bytes]],
                          max_mb: int = MAX_UPLOAD_MB) -> CheckedInteropUpload:
    """Validate a FHIR Bundle or a REDCap export exactly like a records folder."""
    if not files:
        raise UploadRejected("No file was uploaded.")
    total = sum(len(content) for _, content in files)
    if total > max_mb * 1024 * 1024:
        raise UploadRejected(f"The files add up to {total / 1024 / 1024:.0f} MB; the limit is {max_mb} MB.")
    if kind == FHIR_BUNDLE:
        if files and all(name.lower().endswith(".ndjson") for name, _ in files):  # a Bulk Data export's files
            source = ", ".join(name for name, _ in files)
            records, report = ndjson_to_records(list(files), source)
            return CheckedInteropUpload(records, report, source, source_kind="fhir")
        if len(files) != 1 or not files[0][0].lower().endswith(".json"):
            raise UploadRejected("Upload one FHIR Bundle as a .json file, or the .ndjson files of a Bulk Data "
                                 "export.")
        name, content = files[0]
        records, report = bundle_to_records(content, name)
        return CheckedInteropUpload(records, report, name, source_kind="fhir")
    if kind != REDCAP_EXPORT:
        raise UploadRejected(f"Unknown import source: {kind}")
    exports = [(n, c) for n, c in files if n.lower().endswith(".csv")]
    mappings = [(n, c) for n, c in files if n.lower().endswith((".yaml", ".yml"))]
    if len(exports) != 1 or len(mappings) > 1 or len(exports) + len(mappings) != len(files):
        raise UploadRejected("Upload one REDCap export (.csv) and at most one mapping file (.yaml).")
    try:
        if mappings:
            import yaml  # noqa: PLC0415

            try:
                raw = yaml.safe_load(mappings[0][1].decode("utf-8"))
            except (UnicodeDecodeError, yaml.YAMLError) as problem:
                raise MappingError(f"{mappings[0][0]}: cannot be read ({type(problem).__name__})") from problem
            mapping = mapping_from_dict(raw, mappings[0][0])
        else:
            mapping = load_mapping(EXAMPLE_MAPPING)
    except MappingError as problem:
        raise UploadRejected(f"The mapping cannot be used: {problem}") from problem
    name, content = exports[0]
    try:
        frame = read_csv_text(content)
    except (ValueError, UnicodeDecodeError) as problem:
        raise UploadRejected(f"{name} cannot be read as CSV ({type(problem).__name__}).") from problem
    records, report = export_to_records(frame, mapping, name)
    return CheckedInteropUpload(records, report, name, source_kind="redcap")
