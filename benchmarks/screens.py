"""The screens' waits in a real browser on a large store: `python benchmarks/screens.py [STORE_URL] [--patients N]`.

Issue 20's goals, each timed from the user's action to a settled page (the screen's own text for the new state
drawn, its charts drawn, Streamlit no longer running), on a 20,000-patient store:

- sign-in to a usable clinic list (goal ≤ 3 s): submitting the form → the clinic's heading and table. The first
  sign-in after the app starts also assesses the cohort (cold); later ones find it cached (warm) — what every user
  but the first of the day waits for: in a new browser context (nothing cached, e.g. the table's script loads
  then) and in the same browser after signing out (its cache kept, as a returning user's);
- switching patient (≤ 1 s): typing a patient id in the patient page's search box → that patient's banner and
  charts;
- next case in conference (≤ 1 s): the Next button → the next case and its charts.

Without STORE_URL the store is built first (`python -m dashboard demo` then `import`, in a temporary folder).
Starts the app (demo mode) on the store and signs in as the demo surgeon. A benchmark, not a test: it asserts
nothing. It prints each figure and the machine's load (`/proc/loadavg`): the machine is shared, so compare figures
taken under a similar load. With --shot NAME, it saves the settled clinic as docs/images/NAME-clinic.png.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DOC_IMAGES = ROOT / "docs" / "images"  # the docs' one folder of screenshots
GOALS = {"sign-in (cold)": 3.0, "sign-in (warm, new browser)": 3.0, "sign-in (warm, same browser)": 3.0,
         "switch patient": 1.0, "next case (conference)": 1.0}
NOT_RUNNING = ("!document.querySelector('[data-testid=\"stStatusWidget\"] "
               "[data-testid=\"stStatusWidgetRunningIcon\"], [data-testid=\"stSkeleton\"]')")


def settled(text: str, plots: int = 0) -> str:
    """A JavaScript predicate: `text` on the page, at least `plots` charts drawn, Streamlit not running."""
    return (f"() => document.body.innerText.includes({text!r})"
            f" && document.querySelectorAll('.js-plotly-plot .main-svg').length >= {plots}"
            f" && {NOT_RUNNING}")


def build_store(patients: int, folder: Path) -> str:
    """A demo cohort of `patients` imported into a new SQLite store: the store's URL."""
    store = f"sqlite:///{folder / 'store.db'}"
    run = [sys.executable, "-m", "dashboard"]
    started = time.perf_counter()
    subprocess.run([*run, "demo", str(folder / "cohort"), "--patients", str(patients), "--seed", "1",
                    "--first-id", "1", "--database", f"sqlite:///{folder / 'empty.db'}"], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL)
    subprocess.run([*run, "import", str(folder / "cohort"), "--database", store], cwd=ROOT,
                   check=True, stdout=subprocess.DEVNULL)
    print(f"built a {patients:,}-patient store in {time.perf_counter() - started:.1f} s", flush=True)
    return store


def timed(page, action, predicate: str, name: str = "") -> float:
    """Seconds from `action()` to `predicate` holding (polled every 25 ms), printed under `name`."""
    started = time.perf_counter()
    action()
    page.wait_for_timeout(30)  # let the rerun start before polling for its end
    page.wait_for_function(predicate, timeout=300_000, polling=25)
    seconds = time.perf_counter() - started
    print(f"{name}: {seconds:.2f} s", flush=True)
    return seconds


def sign_in(browser, url: str, page=None) -> tuple[object, float]:
    """Sign in as the demo surgeon, in a new browser context or in `page` (signed out): the page and the seconds
    to a usable clinic list."""
    page = page or browser.new_context(viewport={"width": 1440, "height": 900}).new_page()
    page.goto(url, timeout=600_000)
    page.get_by_role("button", name="Sign in").wait_for(timeout=600_000)
    page.get_by_role("textbox", name="User name").fill("surgeon")
    page.get_by_role("textbox", name="Password").fill("surgeon-demo")
    usable = ("() => document.body.innerText.includes('Clinic follow-up')"
              " && document.querySelector('[data-testid=\"stDataFrame\"] canvas') !== null"
              f" && {NOT_RUNNING}")
    return page, timed(page, lambda: page.get_by_role("button", name="Sign in").click(), usable, "sign-in")


def load() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3]) + f" on {os.cpu_count()} cores"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store_url", nargs="?", help="a store to use (default: build one of --patients)")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--switches", type=int, default=8, help="patient switches and conference steps to time")
    parser.add_argument("--shot", default=None, help="save the settled clinic as docs/images/NAME-clinic.png")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from tests.live_server import CHROMIUM, app_server

    with tempfile.TemporaryDirectory(prefix="screens-bench-") as temp:
        store = args.store_url or build_store(args.patients, Path(temp))
        env = {**os.environ, "SPINE_DASHBOARD_DB_URL": store, "SPINE_DASHBOARD_MODE": "demo"}
        times: dict[str, list[float]] = {name: [] for name in GOALS}
        print(load(), "(before)", flush=True)
        with app_server(env, Path(temp) / "server.log") as url, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            page, cold = sign_in(browser, url)
            times["sign-in (cold)"].append(cold)
            for _ in range(2):  # signing out may end every session of the user: go on in the last one
                page.context.close()
                page, warm = sign_in(browser, url)
                times["sign-in (warm, new browser)"].append(warm)
                page.get_by_role("button", name="Sign out").click()
                page.get_by_role("button", name="Sign in").wait_for(timeout=600_000)
                times["sign-in (warm, same browser)"].append(sign_in(browser, url, page)[1])
            if args.shot:
                DOC_IMAGES.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(DOC_IMAGES / f"{Path(args.shot).stem}-clinic.png"))

            ids = [f"P{n:05d}" for n in random.Random(1).sample(range(1, args.patients + 1), args.switches + 1)]
            page.goto(f"{url}/patient?patient={ids[0]}", timeout=600_000)
            page.wait_for_function(settled(f"Id {ids[0]}", 1), timeout=600_000, polling=25)
            search = page.get_by_role("textbox", name="Find a patient")
            for patient_id in ids[1:]:
                def switch(patient_id: str = patient_id) -> None:
                    search.fill(patient_id)
                    search.press("Enter")
                times["switch patient"].append(timed(page, switch, settled(f"Id {patient_id}", 1), "switch patient"))

            page.goto(f"{url}/conference", timeout=600_000)
            page.wait_for_function(settled("Case 1 of", 1), timeout=600_000, polling=25)
            for step in range(2, args.switches + 2):
                times["next case (conference)"].append(timed(
                    page, lambda: page.get_by_role("button", name="Next").click(), settled(f"Case {step} of", 1),
                    "next case"))
            browser.close()
        print(load(), "(after)", flush=True)

    print(f"\n| wait ({args.patients:,} patients) | median | max | runs | goal |\n|---|---|---|---|---|")
    for name, goal in GOALS.items():
        runs = times[name]
        verdict = "met" if statistics.median(runs) <= goal else "not met"
        print(f"| {name} | {statistics.median(runs):.2f} s | {max(runs):.2f} s | {len(runs)} | ≤ {goal:g} s: "
              f"{verdict} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
