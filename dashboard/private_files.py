"""Files holding patient data are readable by their owner only.

The store, its WAL and shared-memory files, backups, safety copies, reports and handouts all carry names, MRNs
or notes. Under the usual umask 022 they would be world-readable (0644). Every entry point (the command line,
the Streamlit app, the CDS service) calls `owner_only()` first, so whatever it creates is 0600 (folders 0700),
and the store's own files are tightened when an older, looser one is opened.
"""

from __future__ import annotations

import os
from pathlib import Path

OWNER_ONLY_UMASK = 0o077


def owner_only() -> None:
    """Files and folders this process creates from now on: owner only."""
    os.umask(OWNER_ONLY_UMASK)


def tighten(path: Path) -> None:
    """Make an existing file owner-only (the SQLite store and its -wal/-shm files from an older version)."""
    for candidate in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            if candidate.stat().st_mode & 0o077:
                candidate.chmod(0o600)
        except FileNotFoundError:
            continue
