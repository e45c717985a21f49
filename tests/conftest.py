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



#: The longest test files (tens of seconds each: see `--durations`), collected first. scripts/test.sh hands out
#: whole files in collection order (`--dist loadfile --no-loadscope-reorder`); by default pytest-xdist starts the
#: files with the most tests first, so these few-test, long files came last and ran alone at the end of the run.
LONGEST_FIRST = (
    "tests/store/test_reimport_fuzz.py",
    "tests/browser/test_layout.py",
    "tests/app/test_handout.py",
    "tests/browser/test_browser.py",
    "tests/store/test_data_safety.py",
    "tests/clinical/test_fuzz_import.py",
    "tests/app/test_auth.py",
    "tests/clinical/test_input_limits.py",
    "tests/store/test_audit.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {path: number for number, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable: the rest as found
