"""Files with patient data are owner-only (issue 22 point 8): store, WAL/SHM, backups and reports, made by the
commands as a user runs them, under the usual umask 022."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from dashboard.private_files import tighten
from tests.store_fixtures import GOOD_FILES, write_folder

ROOT = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A command in a shell whose umask is the common 022 (files 0644 unless the command takes care)."""
    return subprocess.run(["sh", "-c", 'umask 022 && exec "$@"', "sh", sys.executable, "-m", "dashboard", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False, env=env)


def test_the_store_its_wal_backups_and_reports_are_owner_only(tmp_path: Path) -> None:
    records = write_folder(tmp_path / "records", GOOD_FILES)
    store = tmp_path / "var" / "dashboard.db"
    env = {**os.environ, "SPINE_DASHBOARD_DB_URL": f"sqlite:///{store}"}
    assert _run("import", str(records), env=env).returncode == 0
    assert _run("backup", str(tmp_path / "out" / "store.bak"), env=env).returncode == 0
    done = _run("report", str(records), "P1", "--out", str(tmp_path / "out" / "p1.html"), env=env)
    assert done.returncode == 0, done.stderr

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
