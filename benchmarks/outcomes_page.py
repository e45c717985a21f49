"""Time the outcomes screen in a real browser: `python benchmarks/outcomes_page.py STORE_URL [--shot NAME.png]`.

Starts the app (demo mode) on the store, signs in as the demo surgeon, opens /outcomes once (the cohort and the
outcome tables are computed and cached), then opens it again `--repeat` times and prints, for each, the seconds
from navigation to a settled page: the title, the Kaplan-Meier chart drawn and Streamlit no longer running.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: The docs' one folder of screenshots (docs/*.md link to images/NAME.png).
DOC_IMAGES = ROOT / "docs" / "images"

SETTLED = ("() => document.querySelectorAll('.js-plotly-plot').length >= 1"
           " && !document.querySelector('[data-testid=\"stStatusWidget\"]')"
           " && [...document.querySelectorAll('h1')].some(h => h.textContent.includes('Outcomes'))")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store_url")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--shot", default=None, help="save a screenshot of the settled page as docs/images/NAME.png")
    parser.add_argument("--path", default="outcomes", help="the screen to time (default outcomes; e.g. '' for the "
                        "clinic, to compare)")
    parser.add_argument("--settled", default=None, help="a JavaScript predicate for a settled page (default: a chart "
                        "drawn, the title 'Outcomes', Streamlit not running)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from tests.browser.test_browser import _sign_in
    from tests.live_server import CHROMIUM, app_server

    env = {**os.environ, "SPINE_DASHBOARD_DB_URL": args.store_url, "SPINE_DASHBOARD_MODE": "demo"}
    with app_server(env, Path("/tmp/outcomes-page-server.log")) as url, sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1600, "height": 1100})
        _sign_in(page, url)
        times, menu = [], []
        for attempt in range(args.repeat + 1):
            start = time.perf_counter()
            page.goto(f"{url}/{args.path}", timeout=600_000)
            page.wait_for_timeout(50)  # let the rerun start before polling for its end
            page.wait_for_function(args.settled or SETTLED, timeout=600_000, polling=25)
            times.append(time.perf_counter() - start)
            print(f"{'first (computes)' if attempt == 0 else 'cached'}: {times[-1]:.2f} s", flush=True)
        if args.shot:
            DOC_IMAGES.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DOC_IMAGES / Path(args.shot).name), full_page=True)
        if args.path == "outcomes":  # opened from the menu, as a user does (the app's scripts already loaded)
            for _ in range(args.repeat):
                page.goto(f"{url}/clinic", timeout=600_000)
                page.get_by_text("Clinic follow-up").wait_for(timeout=600_000)
                page.wait_for_function("!document.querySelector('[data-testid=stStatusWidget]')", timeout=600_000)
                start = time.perf_counter()
                page.locator('[data-testid="stSidebarNav"]').get_by_text("Outcomes", exact=True).click()
                page.wait_for_timeout(50)
                page.wait_for_function(SETTLED, timeout=600_000, polling=25)
                menu.append(time.perf_counter() - start)
                print(f"from the menu: {menu[-1]:.2f} s", flush=True)
        if args.path == "outcomes":  # a rerun within the page: group the curves by surgeon, then back
            for grouping in ("Surgeon", "Pre-operative severity", "All operations"):
                start = time.perf_counter()
                page.get_by_test_id("stSelectbox").first.click()
                page.get_by_role("option", name=grouping).click()
                page.wait_for_timeout(50)
                page.wait_for_function(SETTLED, timeout=600_000, polling=25)
                print(f"rerun, group by {grouping}: {time.perf_counter() - start:.2f} s", flush=True)
        browser.close()
    warm = sorted(times[1:])
    print(f"cached median {warm[len(warm) // 2]:.2f} s, max {warm[-1]:.2f} s over {len(warm)} loads")
    if menu:
        menu.sort()
        print(f"from the menu: median {menu[len(menu) // 2]:.2f} s, max {menu[-1]:.2f} s over {len(menu)} openings")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
