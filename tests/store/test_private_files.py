"""Files with patient data are owner-only (issue 22 point 8): store, WAL/SHM, backups and reports, made by the
commands as a user runs them, under the usual umask 022."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from dashboard.cli import main
from dashboard.private_files import tighten
from tests.store_fixtures import GOOD_FILES, write_folder


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run(*args: str) -> int:
    """A command through the command line's entry point in this process, started under the common umask 022
    (files 0644 unless the command takes care), as a shell would start it; the process's umask is put back."""
    before = os.umask(0o022)
    try:
        return main(list(args))
    finally:
        os.umask(before)


def test_the_store_its_wal_backups_and_reports_are_owner_only(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.reports import follow_up  # noqa: PLC0415

    # The files' modes are the subject: the report's charts are not drawn (a Chromium start; tests/app/test_handout.py
    # draws them), the report is written all the same.
    monkeypatch.setattr(follow_up, "render_pngs", lambda figures: [b"" for _ in figures])
    records = write_folder(tmp_path / "records", GOOD_FILES)
    store = tmp_path / "var" / "dashboard.db"
    monkeypatch.setenv("SPINE_DASHBOARD_DB_URL", f"sqlite:///{store}")
    assert _run("import", str(records)) == 0
    assert _run("backup", str(tmp_path / "out" / "store.bak")) == 0
    assert _run("report", str(records), "P1", "--out", str(tmp_path / "out" / "p1.html")) == 0

    made = [store, tmp_path / "out" / "store.bak", tmp_path / "out" / "p1.html",
            *(p for p in store.parent.iterdir() if p.name.startswith("dashboard.db-"))]
    assert {path.name: oct(_mode(path)) for path in made} == {path.name: "0o600" for path in made}
    assert _mode(store.parent) == 0o700


def test_an_older_world_readable_store_is_tightened_when_opened(tmp_path: Path) -> None:
    store = tmp_path / "dashboard.db"
    store.write_bytes(b"")
    store.chmod(0o644)
    (tmp_path / "dashboard.db-wal").write_bytes(b"")
    (tmp_path / "dashboard.db-wal").chmod(0o644)
    tighten(store)
    assert (_mode(store), _mode(tmp_path / "dashboard.db-wal")) == (0o600, 0o600)
