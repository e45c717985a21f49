"""A real browser (Debian's Chromium via Playwright) against the real app on the shipped demo data.

Screenshots are saved under artifacts/screenshots/ for people to look at. Under CI=true a missing browser
fails the run instead of skipping.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.browser


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        message = "Debian's chromium is not installed (apt-get install chromium)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    """The app started as a user would, on its own empty store (seeded with the demo cohort)."""
    port = _free_port()
    store = tmp_path_factory.mktemp("store") / "browser.db"
    env = {**os.environ, "SPINE_DASHBOARD_DB_URL": f"sqlite:///{store}", "SPINE_DASHBOARD_MODE": "demo"}
    server = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "dashboard/app.py", "--server.headless", "true",
         "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the app did not start: " + server.stdout.read().decode(errors="replace")[-2000:])
    yield url
    server.terminate()
    server.wait(timeout=20)


def _sign_in(page, url: str) -> None:
    """Sign in as the demo surgeon; the re-login cookie then opens any page a link asks for (issue 8)."""
    page.goto(url, timeout=90_000)
    page.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
    page.get_by_role("textbox", name="User name").fill("surgeon")
    page.get_by_role("textbox", name="Password").fill("surgeon-demo")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=90_000)
    deadline = time.monotonic() + 90
    while "spine_dashboard_demo" not in {c["name"] for c in page.context.cookies()}:
        assert time.monotonic() < deadline, "the re-login cookie was not set"
        page.wait_for_timeout(200)


def _open(browser, url: str, path: str = ""):
    page = browser.new_page(viewport={"width": 1600, "height": 1100})
    _sign_in(page, url)
    page.goto(f"{url}/{path}", timeout=90_000)
    page.wait_for_selector('[data-testid="stApp"]', timeout=90_000)
    return page


def _wait_for_plots(page, count: int) -> None:
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length >= {count}", timeout=90_000)


def test_clinic_page_lists_patients_by_urgency(browser, app_url):
    page = _open(browser, app_url)
    page.get_by_text("Clinic follow-up").wait_for(timeout=90_000)
    page.get_by_text("Emergency — now, within hours").first.wait_for(timeout=30_000)
    page.locator('[data-testid="stDataFrame"]:visible').first.wait_for(timeout=60_000)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "clinic.png"), full_page=True)
    assert page.locator('[data-testid="stMetric"]').count() >= 4
    page.close()


def _demo_patient(scenario: str) -> str:
    scenarios = pd.read_csv(ROOT / "data" / "demo" / "scenarios.csv", dtype=str)
    return scenarios.loc[scenarios["scenario"] == scenario, "patient_id"].iloc[0]


def test_patient_page_renders_strength_charts_and_checklist(browser, app_url):
    page = _open(browser, app_url, f"patient?patient={_demo_patient('plateau_behind')}")
    page.get_by_text("Imaging checklist").wait_for(timeout=90_000)
    _wait_for_plots(page, 3)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "patient.png"), full_page=True)
    titles = " ".join(t.text_content() for t in page.locator(".js-plotly-plot .gtitle").all())
    assert "Strength against the expected recovery band" in titles
    assert "Pain and disability" in titles
    assert page.locator(".js-plotly-plot").first.locator("path.js-fill").count() >= 1  # a shaded band
    assert page.get_by_text("Suggested imaging:").count() >= 1
    assert page.get_by_text("compression-no-gain-3-months").count() >= 1
    page.close()


def test_patient_search_opens_the_patient_typed(browser, app_url):
    """Typing a whole id in the search box opens that patient, and the address then links to it."""
    first, target = _demo_patient("plateau_behind"), _demo_patient("calf_swelling")
    page = _open(browser, app_url, f"patient?patient={first}")
    page.get_by_role("heading", name=first).wait_for(timeout=90_000)
    search = page.get_by_role("textbox", name="Find a patient")
    search.fill(target.lower())
    search.press("Enter")
    page.get_by_role("heading", name=target).wait_for(timeout=90_000)
    page.wait_for_function(f"location.search.includes('patient={target}')", timeout=30_000)
    page.get_by_text("red-venous-thrombosis").first.wait_for(timeout=30_000)
    assert page.get_by_role("heading", name=first).count() == 0
    page.close()


def test_reference_page_draws_a_band_with_sources(browser, app_url):
    page = _open(browser, app_url, "reference")
    page.get_by_text("Expected recovery curves").wait_for(timeout=90_000)
    _wait_for_plots(page, 1)
    assert page.get_by_text("Parameters and their sources").count() == 1
    page.screenshot(path=str(SCREENSHOTS / "reference.png"), full_page=True)
    page.close()


def test_conference_page_presents_deidentified_cases(browser, app_url):
    """One case per screen with large charts, Next moves on, and nothing identifying in the main area."""
    patients = pd.read_csv(ROOT / "data" / "demo" / "patients.csv", dtype=str)

    def check_deidentified() -> None:
        page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                               ".some(t => t.textContent.includes('Pain and disability'))", timeout=90_000)
        main = page.locator('[data-testid="stMain"]').inner_text()
        assert "Imaging checklist" in main
        assert not re.search(r"\bP\d{5}\b|\d{4}-\d{2}-\d{2}|MRN\d+", main)
        assert not [n for n in patients["name"] if n in main], "a patient name on the conference page"

    page = _open(browser, app_url, "conference")
    page.get_by_text("Case 1 of").wait_for(timeout=90_000)
    check_deidentified()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "conference.png"), full_page=True)
    page.locator(".st-key-conference_next button").click()
    page.get_by_text("Case 2 of").wait_for(timeout=60_000)
    check_deidentified()
    page.close()
