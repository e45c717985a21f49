"""Checking uploaded records files before anything is stored (used by the Import page, testable without it)."""

from __future__ import annotations

from dataclasses import dataclass

from dashboard.core.limits import MAX_UPLOAD_MB
from dashboard.core.records import Records, ValidationReport, validate
from dashboard.core.schema import FILES


class UploadRejected(ValueError):
    """Uploads that are not records files at all (wrong type, too large): said before any parsing."""


@dataclass
class CheckedUpload:
    records: Records | None
    report: ValidationReport
    source_name: str


def check_uploads(files: list[tuple[str, bytes]], max_mb: int = MAX_UPLOAD_MB) -> CheckedUpload:
    """Validate uploaded CSV files or one workbook exactly like a records folder on disk, from their bytes."""
    if not files:
        raise UploadRejected("No file was uploaded.")
    total = sum(len(content) for _, content in files)
    if total > max_mb * 1024 * 1024:
        raise UploadRejected(f"The files add up to {total / 1024 / 1024:.0f} MB; the limit is {max_mb} MB.")
    names = [name.lower() for name, _ in files]
    books = [name for name in names if name.endswith(".xlsx")]
    if books and len(files) > 1:
        raise UploadRejected("Upload either one workbook or the CSV files, not both.")
    known = {spec.name for spec in FILES}
    unknown = [name for name, _ in files if not books and name.lower() not in known]
    if unknown:
        raise UploadRejected(f"Not a records file: {', '.join(unknown)}. Expected {', '.join(sorted(known))}.")
    records, report = validate({name.lower(): content for name, content in files})  # no file is written
    source = books[0] if books else ", ".join(sorted(names))
    return CheckedUpload(records, report, source)
