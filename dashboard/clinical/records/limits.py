"""Input limits for records files: one place for the Import page, the reader and the command line.

Each limit is checked while reading, before memory grows (docs/security.md, "Input limits").
$SPINE_DASHBOARD_MAX_UPLOAD_MB (default 200, Streamlit's own upload limit) caps an upload in all and every
records file read; a larger limit for uploads also needs Streamlit's `server.maxUploadSize`.
$SPINE_DASHBOARD_MAX_ROWS (default 5,000,000) caps the rows of any one records file or sheet.
"""

from __future__ import annotations

import os

MAX_UPLOAD_MB_ENV = "SPINE_DASHBOARD_MAX_UPLOAD_MB"
MAX_ROWS_ENV = "SPINE_DASHBOARD_MAX_ROWS"
DEFAULT_MAX_UPLOAD_MB = 200
DEFAULT_MAX_ROWS = 5_000_000
MB = 1024 * 1024

#: Columns in one file's header (the format has 19 at most; the rest are extra columns).
MAX_COLUMNS = 200
#: Characters in one cell (a long note is a few hundred).
MAX_CELL_CHARS = 10_000
#: Line breaks in one cell: more means a quote opened and not closed where it should have been.
MAX_CELL_LINE_BREAKS = 50
#: Bytes a workbook may unpack to (its zip members' sizes, checked before any is opened).
MAX_WORKBOOK_UNPACKED_MB = 64
#: Cells (rows × header columns) a workbook may hold in all: a workbook is for a clinic's records, a larger
#: cohort comes as CSV files.
MAX_WORKBOOK_CELLS = 5_000_000
#: Lines shown of one kind of error (same file, column and message); the rest are counted.
MAX_ERROR_LINES = 1_000


def _setting(name: str, default: int, unit: str) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{name} must be a whole number of {unit}, not {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be positive, not {value}")
    return value


#: Megabytes (MiB) an upload may have in all, and any one records file.
MAX_UPLOAD_MB: int = _setting(MAX_UPLOAD_MB_ENV, DEFAULT_MAX_UPLOAD_MB, "megabytes")


def max_file_bytes() -> int:
    """The per-file limit in bytes, read at call time so a test (or an operator's shell) can change it."""
    return MAX_UPLOAD_MB * MB


def max_rows() -> int:
    """Rows one records file or sheet may have (the header not counted), read at call time."""
    return _setting(MAX_ROWS_ENV, DEFAULT_MAX_ROWS, "rows")
