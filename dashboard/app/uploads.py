"""Checking uploaded records files before anything is stored (used by the Import page, testable without it)."""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dashboard.clinical.records.format import FILES
from dashboard.clinical.records.limits import MAX_UPLOAD_MB, MB
from dashboard.clinical.records.validate import Records, ValidationReport, validate


class UploadRejected(ValueError):
    """Uploads that are not records files at all (wrong type, too large): said before any parsing."""


@dataclass
class CheckedUpload:
    records: Records | None
    report: ValidationReport
    source_name: str
    ignored: tuple[str, ...] = ()  # uploaded files that are not records files (e.g. scenarios.csv, README.md)


def _unzipped(name: str, content: bytes, budget: int) -> list[tuple[str, bytes]]:
    """The files of a zipped folder (sub-folders flattened to base names), within `budget` bytes in all."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise UploadRejected(f"{Path(name).name} is not a readable zip file.") from None
    members = [info for info in archive.infolist() if not info.is_dir() and "__MACOSX" not in info.filename
               and not Path(info.filename).name.startswith(".")]
    size = sum(info.file_size for info in members)
    if size > budget:
        raise UploadRejected(f"{Path(name).name} unpacks to {size / MB:.0f} MB; the limit is {budget / MB:.0f} MB.")
    return [(Path(info.filename.replace("\\", "/")).name, archive.read(info)) for info in members]


def check_uploads(files: list[tuple[str, bytes]], max_mb: int = MAX_UPLOAD_MB) -> CheckedUpload:
    """Validate uploaded CSV files, one workbook, or a zipped records folder exactly like a records folder on
    disk. Files that are not records files (a folder's README.md, the demo's scenarios.csv) are ignored and
    named in `ignored`; only when nothing is left is the upload refused."""
    if not files:
        raise UploadRejected("No file was uploaded.")
    total = sum(len(content) for _, content in files)
    if total > max_mb * MB:
        raise UploadRejected(f"The files add up to {total / MB:.0f} MB; the limit is {max_mb} MB.")
    expanded: list[tuple[str, bytes]] = []
    for name, content in files:
        base = Path(name.replace("\\", "/")).name  # an uploaded name never becomes a path
        if base.lower().endswith(".zip"):
            expanded += _unzipped(base, content, max_mb * MB - total + len(content))
        else:
            expanded.append((base, content))
    known = {spec.name for spec in FILES}
    books = [(name, content) for name, content in expanded if name.lower().endswith(".xlsx")]
    csvs = [(name, content) for name, content in expanded if name.lower() in known]
    ignored = tuple(name for name, _ in expanded if not name.lower().endswith(".xlsx") and name.lower() not in known)
    if books and (len(books) > 1 or csvs):
        raise UploadRejected("Upload either one workbook or the CSV files, not both.")
    if not books and not csvs:
        raise UploadRejected(f"Not a records file: {', '.join(ignored)}. Expected {', '.join(sorted(known))}, "
                             "a workbook or a zipped folder of them.")
    names = [name.lower() for name, _ in csvs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UploadRejected(f"{', '.join(repeated)} uploaded more than once: upload one records folder at a time.")
    chosen = books or csvs
    records, report = validate({name.lower(): content for name, content in chosen})  # no file is written
    source = books[0][0].lower() if books else ", ".join(sorted(names))
    return CheckedUpload(records, report, source, ignored)
