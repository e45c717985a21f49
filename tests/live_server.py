"""What the tests that run real processes share: a free local port, Debian's Chromium (required under CI), a
browser for a test module, and the app started as a user starts it."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def require_chromium(why: str = "") -> None:
    """Under CI=true a missing browser fails the test (CI never skips); elsewhere it is skipped, saying why."""
    if Path(CHROMIUM).exists():
        return
    message = "Debian's chromium is not installed (apt-get install chromium)" + (f": {why}" if why else "")
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium (Playwright driving Debian's browser) for the test module."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        yield chromium
        chromium.close()


@contextlib.contextmanager
def app_server(env: dict[str, str], log: Path) -> Iterator[str]:
    """`streamlit run dashboard/app/server.py` as a user starts it, a direct child process; its url once it answers
    its health check; stopped by its own PID."""
    port = free_port()
    with log.open("ab") as output:
        server = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "dashboard/app/server.py", "--server.headless", "true",
             "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the app did not start: " + log.read_text(errors="replace")[-2000:])
                time.sleep(0.1)
        yield url
    finally:
        stop(server, timeout=20)


def stop(process: subprocess.Popen, timeout: float = 10) -> None:
    """Ask a server the test started to stop; kill it if it has not within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)
