"""Test-run plumbing shared by every module: what a run in several processes (pytest-xdist) would otherwise lose."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

#: Written by tests/clinical/test_fuzz_import.py at the end of its module: how many files were fuzzed, and their fate.
FUZZ_SUMMARY = Path(__file__).resolve().parents[1] / "artifacts" / "fuzz-summary.txt"
_STARTED = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_STARTED] = time.time()


def pytest_terminal_summary(terminalreporter, config: pytest.Config) -> None:  # noqa: ANN001 - pytest's reporter
    """A worker's printed lines never reach the terminal: repeat the fuzzing summary this run wrote."""
    if not config.getoption("numprocesses", default=None) or hasattr(config, "workerinput"):
        return  # in one process the fuzz module printed it itself
    if FUZZ_SUMMARY.exists() and FUZZ_SUMMARY.stat().st_mtime >= config.stash.get(_STARTED, float("inf")):
        terminalreporter.write_line(FUZZ_SUMMARY.read_text(encoding="utf-8").rstrip())

