"""A real browser (Debian's Chromium via Playwright) against the real app on the shipped demo data.

Screenshots are saved under artifacts/screenshots/ for people to look at. Under CI=true a missing browser
fails the run instead of skipping.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pandas as pd
import pytest

from tests.live_server import app_server, browser
from tests.pdf_pages import pdf_text

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
pytestmark = pytest.mark.browser
FIXTURES = (browser,)  # imported for pytest, which finds fixtures by name


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    """The browser tests' own store, empty: the app seeds it with the demo cohort."""
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'browser.db'}"


@pytest.fixture(scope="module")
def app_url(store_url, tmp_path_factory):
    """The app started as a user would, in demo mode, on its own store."""
    env = {**os.environ, "SPINE_DASHBOARD_DB_URL": store_url, "SPINE_DASHBOARD_MODE": "demo"}
    with app_server(env, tmp_path_factory.mktemp("log") / "server.log") as url:
        yield url


def _sign_in(page, url: str) -> None:
    """Sign in as the demo surgeon; the HttpOnly session cookie then opens any page a link asks for (issue 8)."""
    page.goto(url, timeout=90_000)
    page.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
    page.get_by_role("textbox", name="User name").fill("surgeon")
    page.get_by_role("textbox", name="Password").fill("surgeon-demo")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=90_000)
    deadline = time.monotonic() + 90
    while "spine_dashboard_demo" not in {c["name"] for c in page.context.cookies()}:
        assert time.monotonic() < deadline, "the session cookie was not set"
        page.wait_for_timeout(200)


#: App url → a browser context signed in there as the demo surgeon: each test opens its page in a new tab of it,
#: as a clinician does once signed in (the session cookie), instead of signing in again (3 s a test).
_SIGNED_IN: dict[str, object] = {}


def _open(browser, url: str, path: str = ""):
    context = _SIGNED_IN.get(url)
    if context is None or context not in browser.contexts:
        context = browser.new_context(viewport={"width": 1600, "height": 1100})
        first = context.new_page()
        _sign_in(first, url)
        first.close()
        _SIGNED_IN[url] = context
    page = context.new_page()
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
    # Issue 22.6: no unaudited CSV download or copy of the identified list (client.disableDataExport).
    table = page.locator('[data-testid="stDataFrame"]:visible').first
    table.hover()
    toolbar = page.locator('[data-testid="stElementToolbar"]:visible').first
    toolbar.wait_for(timeout=10_000)
    labels = [b.get_attribute("aria-label") or b.inner_text() for b in toolbar.locator("button").all()]
    assert labels and not [label for label in labels if "download" in label.lower()], labels
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
    # Evidence in words (issue 20: "ankle_dorsiflexion R 3" and the rule id in code font were on screen)
    assert page.get_by_text("no gain in strength by about 3 months", exact=False).count() >= 1
    assert page.locator('[data-testid="stMain"] code').count() == 0
    page.close()


def test_patient_search_opens_the_patient_typed(browser, app_url):
    """Typing a whole id in the search box opens that patient, and the address then links to it."""
    first, target = _demo_patient("plateau_behind"), _demo_patient("calf_swelling")
    page = _open(browser, app_url, f"patient?patient={first}")
    page.get_by_text(f"Id {first}", exact=True).wait_for(timeout=90_000)  # the patient banner
    _wait_for_plots(page, 3)
    search = page.get_by_role("textbox", name="Find a patient")
    search.fill(target.lower())
    started = time.monotonic()
    search.press("Enter")
    page.get_by_text(f"Id {target}", exact=True).wait_for(timeout=90_000)
    page.get_by_text("Possible deep vein thrombosis?").first.wait_for(timeout=30_000)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=60_000)
    print(f"patient switch: {time.monotonic() - started:.2f} s to the new patient's settled page")
    page.wait_for_function(f"location.search.includes('patient={target}')", timeout=30_000)
    assert page.get_by_text(f"Id {first}", exact=True).count() == 0
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
        assert not re.search(r"\bP\d{5}\b|\d{4}-\d{2}-\d{2}|\b\d{1,2} [A-Z][a-z]{2} \d{4}\b|MRN\d+", main)
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



def test_the_identified_follow_up_report_downloads_once_for_the_signed_in_session_only(browser, app_url, store_url):
    """Issue 22.10: the report is no longer a Streamlit media file anyone could fetch for a while. A click gives a
    one-time link; the server serves it to this browser's HttpOnly session cookie, once, audited first."""
    from dashboard.store import get_engine
    from dashboard.store.audit import audit_log

    patient = _demo_patient("plateau_behind")
    identity = pd.read_csv(ROOT / "data" / "demo" / "patients.csv", dtype=str).set_index("patient_id").loc[patient]
    page = _open(browser, app_url, f"patient?patient={patient}")
    page.get_by_role("button", name="Follow-up report PDF").click(timeout=90_000)
    link = page.get_by_role("link", name="Download follow-up report PDF")
    link.wait_for(timeout=60_000)
    url = app_url + link.get_attribute("href")
    with page.expect_download(timeout=120_000) as download:
        link.click()
    assert download.value.suggested_filename == f"follow-up-{patient}.pdf"
    pdf = Path(download.value.path()).read_bytes()
    text = pdf_text(pdf)
    assert pdf.startswith(b"%PDF") and identity["name"] in text and identity["mrn"] in text  # for the chart
    assert page.locator('[data-testid="stDownloadButton"]').count() == 0  # nothing goes to /media any more
    engine = get_engine(store_url)
    try:
        exports = audit_log(engine, actions=["export"], patient_id=patient)
    finally:
        engine.dispose()
    assert len(exports) == 1  # written before the report was built
    entry = exports.iloc[0]
    assert (entry["user_name"], entry["role"]) == ("surgeon", "surgeon")
    assert entry["details"]["kind"] == "follow_up_report" and entry["details"]["identified"] is True
    again = page.context.request.get(url)  # the same browser, its cookie: the link is spent
    assert again.status == 404 and b"%PDF" not in again.body()
    # A fresh link (clicked again), fetched first by a browser without the cookie: refused, and spent with it.
    page.locator("body").press("r")  # a run that shows the button again (the link is spent)
    page.get_by_role("button", name="Follow-up report PDF").click(timeout=90_000)
    link.wait_for(timeout=60_000)
    url = app_url + link.get_attribute("href")
    stranger = browser.new_context()
    try:
        refused = stranger.request.get(url)
        assert refused.status == 403 and b"%PDF" not in refused.body()
        assert stranger.request.get(url).status == 404
    finally:
        stranger.close()
    late = page.context.request.get(url)
    assert late.status == 404 and b"%PDF" not in late.body()
    engine = get_engine(store_url)
    try:
        assert len(audit_log(engine, actions=["export"], patient_id=patient)) == 1  # refused: nothing logged
    finally:
        engine.dispose()
    page.close()


# ------------------------------------------------------------------ sign-in right after a (re)start (issue 22.1)
#: Every screen's address, opened at once by anonymous browsers on a freshly started server.
SCREEN_PATHS = ("patient?patient={patient}", "add_exam", "clinic", "conference", "audit", "import_records",
                "reference")
#: What any screen would show: titles, panels, the identified report's buttons, the screens' own notice.
SCREEN_TEXT = ("Clinic follow-up", "Add an examination or visit", "Case conference", "Audit log", "Import records",
               "Expected recovery curves", "Imaging checklist", "Follow-up report", "Sign in first")
FRESH_STARTS = 1  # the cause (a pages/ folder) is checked in tests/clinical/test_architecture.py


@pytest.fixture(scope="module")
def production_env(tmp_path_factory) -> dict[str, str]:
    """Production mode: a clinic's login file (no demo users) and a store holding the demo cohort's patients."""
    from dashboard.clinical.records.validate import validate
    from dashboard.store import get_engine, import_records
    from tests.app_fixtures import write_clinic_config

    folder = tmp_path_factory.mktemp("production")
    url = f"sqlite:///{folder / 'store.db'}"
    records, report = validate(ROOT / "data" / "demo")
    assert records is not None, report.errors
    engine = get_engine(url)
    import_records(engine, records, source_name="data/demo", user="test-seed")
    engine.dispose()
    env = {**os.environ, "SPINE_DASHBOARD_DB_URL": url, "SPINE_DASHBOARD_MODE": "production",
           "SPINE_DASHBOARD_AUTH_FILE": str(write_clinic_config(folder / "auth.yaml"))}
    return env


def test_fresh_server_screens_opened_at_once_all_ask_to_sign_in(browser, production_env, tmp_path):
    """Streamlit's legacy pages/ mode ran page files directly, without app.py's sign-in, for the requests that
    came in together after a (re)start (issue 22.1: 8 of 10 restarts showed a patient or Add exam anonymously).
    Per fresh server: every screen's address at once, each in its own anonymous browser context."""
    patients = pd.read_csv(ROOT / "data" / "demo" / "patients.csv", dtype=str)
    patient = _demo_patient("plateau_behind")
    identifiers = [*patients["name"], *patients["mrn"]]
    for start in range(FRESH_STARTS):
        contexts = [browser.new_context(viewport={"width": 1200, "height": 900}) for _ in SCREEN_PATHS]
        pages = [context.new_page() for context in contexts]
        try:
            with app_server(production_env, tmp_path / f"server-{start}.log") as url:
                for page, path in zip(pages, SCREEN_PATHS, strict=True):  # all sent before any is answered
                    page.goto(f"{url}/{path.format(patient=patient)}", wait_until="commit", timeout=60_000)
                for page, path in zip(pages, SCREEN_PATHS, strict=True):
                    try:
                        # Positive markers: the sign-in form's button, and the script run over.
                        page.get_by_role("button", name="Sign in").wait_for(timeout=60_000)
                        page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(
                            timeout=60_000)
                        text = page.locator('[data-testid="stApp"]').inner_text()
                        assert not [t for t in SCREEN_TEXT if t in text], f"start {start}: /{path} shows a screen"
                        assert not re.search(r"\bP\d{5}\b", text), f"start {start}: /{path} shows a patient id"
                        assert not [i for i in identifiers if i in text], f"start {start}: /{path} shows a name or MRN"
                        for widget in ("stDataFrame", "stMetric", "stDownloadButton", "stPlotlyChart"):
                            assert page.locator(f'[data-testid="{widget}"]').count() == 0, (start, path, widget)
                    except Exception:
                        page.screenshot(path=str(tmp_path / f"start-{start}-{path.split('?')[0]}.png"))
                        raise
        finally:
            for context in contexts:
                context.close()


def test_the_demo_folder_imports_as_it_is_and_the_preview_then_goes(browser, app_url):
    """Issue 20: the shipped data/demo folder as it is (scenarios.csv and README.md ignored, and said so); after
    the import the "ready to import" box and its button go away and the result is said in words."""
    page = _open(browser, app_url, "import_records")
    page.get_by_text("Import records", exact=True).wait_for(timeout=90_000)
    files = sorted(str(path) for path in (ROOT / "data" / "demo").iterdir() if path.is_file())
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(files)
    page.get_by_text("Ready to import").wait_for(timeout=120_000)
    assert page.get_by_text("Ignored (not records files): README.md, scenarios.csv").count() == 1
    page.get_by_role("button", name="Import into the store").click()
    page.get_by_text("Imported: ").wait_for(timeout=120_000)
    page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=60_000)
    assert page.get_by_text("Ready to import").count() == 0
    assert page.get_by_role("button", name="Import into the store").count() == 0
    assert page.get_by_text("nothing new: everything in the files is already stored").count() == 1
    page.close()


def test_outcomes_page_in_a_real_browser(browser, app_url) -> None:
    """Issue 21: the recovery curves with their confidence band, and the prompts tab with the alarm count."""
    page = _open(browser, app_url, "outcomes")
    page.get_by_role("heading", name="Outcomes").wait_for(timeout=120_000)
    page.wait_for_function("[...document.querySelectorAll('.js-plotly-plot .gtitle')]"
                           ".some(t => t.textContent.includes('Share of weak muscle-sides recovered'))",
                           timeout=120_000)
    assert page.locator(".js-plotly-plot").first.locator("path.js-fill").count() >= 1  # the confidence band
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "outcomes.png"), full_page=True)
    page.get_by_text("How the prompts perform", exact=True).click()  # the radio, not the banner
    page.get_by_text("Prompts open past their urgency").first.wait_for(timeout=120_000)
    assert page.get_by_text("emergency prompt(s) open for more than a day").count() >= 1
    page.close()
