"""Size limits for records files, one named setting for the Import page, the reader and the command line.

$SPINE_DASHBOARD_MAX_UPLOAD_MB (default 200, Streamlit's own upload limit) caps an upload in all and every
records file read. A larger limit for uploads also needs Streamlit's `server.maxUploadSize`.
"""

from __future__ import annotations

import os

MAX_UPLOAD_MB_ENV = "SPINE_DASHBOARD_MAX_UPLOAD_MB"
DEFAULT_MAX_UPLOAD_MB = 200
MB = 1024 * 1024


def _setting() -> int:
    text = os.environ.get(MAX_UPLOAD_MB_ENV, "").strip()
    if not text:
        return DEFAULT_MAX_UPLOAD_MB
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"{MAX_UPLOAD_MB_ENV} must be a whole number of megabytes, not {text!r}") from None
    if value <= 0:
        raise ValueError(f"{MAX_UPLOAD_MB_ENV} must be positive, not {value}")
    return value


#: Megabytes (MiB) an upload may have in all, and any one records file.
MAX_UPLOAD_MB: int = _setting()


def max_file_bytes() -> int:
    """The per-file limit in bytes, read at call time so a test (or an operator's shell) can change it."""
    return MAX_UPLOAD_MB * MB
