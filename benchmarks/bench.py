"""Speed and memory benchmark: `python benchmarks/bench.py [--sizes 20000 100000] [--postgres-url URL]`.

For each cohort size it generates a demo cohort, then times, each in a fresh process so peak memory is the
step's own: the floor (pyarrow reading the four CSV files), validate, assess (the cohort assessment on
validated records), import into SQLite and into PostgreSQL; on the smallest size also a patient-page rerun
with Streamlit's AppTest. Times are the best of `--repeat` runs; each is shown as a ratio to the floor.
Writes a table to docs/performance.md. A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ("patients.csv", "surgeries.csv", "strength.csv", "visits.csv")
AS_OF = date(2026, 11, 20)  # the demo cohort's anchor day
#: Below this line docs/performance.md is written by hand (what limits each figure); a run keeps it.
ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/bench.py -->"
GOAL_RATIO = 2.0  # validate and assess: at most 2× the read floor
GOAL_FLAT = 1.3  # time per patient, largest against smallest cohort
GOAL_PEAK_MB = 1024  # at 20,000 patients
GOAL_PAGE_MS = 200


# ------------------------------------------------------------------------------------ one step per process
def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step(name: str, folder: Path, repeat: int, url: str | None) -> dict:
    sys.path.insert(0, str(ROOT))
    from dashboard.runtime import keep_freed_memory

    keep_freed_memory()  # as the command line and the app run (the floor too, though Arrow has its own pool)
    times = []
    if name == "floor":
        import pyarrow.csv as pcsv

        for _ in range(repeat):
            start = time.perf_counter()
            for file in FILES:
                pcsv.read_csv(folder / file)
            times.append(time.perf_counter() - start)
    elif name == "validate":
        from dashboard.core.records import validate

        for _ in range(repeat):  # each run's result is let go before the next, as the floor's tables are
            start = time.perf_counter()
            records, report = validate(folder, today=AS_OF)
            times.append(time.perf_counter() - start)
            assert report.ok
            del records, report
    elif name == "assess":
        from dashboard.core.assessment import assess
        from dashboard.core.records import validate

        records, _ = validate(folder, today=AS_OF)
        for _ in range(repeat):
            start = time.perf_counter()
            result = assess(records, as_of=AS_OF)
            times.append(time.perf_counter() - start)
            assert len(result.patients) > 0
            del result
    elif name in ("import-sqlite", "import-postgres"):
        from dashboard.core.records import validate
        from dashboard.store import get_engine, import_records

        records, _ = validate(folder, today=AS_OF)
        engine = get_engine(url)
        start = time.perf_counter()
        import_records(engine, records, source_name=folder.name, user="benchmark")
        times.append(time.perf_counter() - start)
    elif name == "page":
        times = _page_reruns(url, repeat)
    return {"seconds": min(times), "median": statistics.median(times), "peak_mb": _peak_mb()}


def _page_reruns(url: str, repeat: int) -> list[float]:
    """Patient-page reruns on a stored cohort, switching patient each time (the cohort is cached)."""
    os.environ["SPINE_DASHBOARD_DB_URL"] = url
    os.environ["SPINE_DASHBOARD_MODE"] = "demo"  # the store is not empty, so nothing is seeded
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=600)
    at.session_state["role"] = "surgeon"
    at.session_state["user_name"] = "surgeon"  # the demo surgeon, as the sign-in form leaves the session
    at.run()
    at.switch_page("screens/patient.py").run()  # loads and assesses the cohort once (cached)
    assert not at.exception, at.exception
    picker = next(box for box in at.selectbox if box.label == "Patient")  # the most urgent patients first
    ids = picker.options[1: max(repeat, 10) + 1]  # each a patient not shown before (the first is on screen)
    times = []
    for patient_id in ids:
        at.session_state["patient_id"] = patient_id
        at.query_params["patient"] = patient_id
        start = time.perf_counter()
        at.run()
        times.append(time.perf_counter() - start)
        assert not at.exception, at.exception
    return times


def run_step(name: str, folder: Path, repeat: int, url: str | None = None) -> dict:
    command = [sys.executable, __file__, "--step", name, "--folder", str(folder), "--repeat", str(repeat)]
    if url:
        command += ["--url", url]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- the whole run
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 100_000])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--postgres-url", default=os.environ.get("SPINE_TEST_POSTGRES_URL"))
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    parser.add_argument("--step"), parser.add_argument("--folder"), parser.add_argument("--url")
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step, Path(args.folder), args.repeat, args.url)))
        return 0

    sys.path.insert(0, str(ROOT))
    from dashboard.demo import write_cohort

    results: dict[int, dict[str, dict]] = {}
    rows: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as work:
        for size in args.sizes:
            folder = Path(work) / f"cohort-{size}"
            start = time.perf_counter()
            write_cohort(folder, n_patients=size, seed=1)
            print(f"{size}: generated in {time.perf_counter() - start:.1f} s", file=sys.stderr)
            rows[size] = sum(1 for _ in open(folder / "strength.csv")) - 1
            results[size] = {}
            for name in ("floor", "validate", "assess"):
                results[size][name] = run_step(name, folder, args.repeat)
                print(f"{size}: {name} {results[size][name]}", file=sys.stderr)
            sqlite_url = f"sqlite:///{Path(work) / f'store-{size}.db'}"
            results[size]["import-sqlite"] = run_step("import-sqlite", folder, 1, sqlite_url)
            print(f"{size}: import-sqlite {results[size]['import-sqlite']}", file=sys.stderr)
            if args.postgres_url:
                _reset_postgres(args.postgres_url)
                results[size]["import-postgres"] = run_step("import-postgres", folder, 1, args.postgres_url)
                print(f"{size}: import-postgres {results[size]['import-postgres']}", file=sys.stderr)
            if size == min(args.sizes):
                results[size]["page"] = run_step("page", folder, 10, sqlite_url)
                print(f"{size}: page {results[size]['page']}", file=sys.stderr)
    out = Path(args.out)
    kept = out.read_text(encoding="utf-8").partition(ANALYSIS_MARKER)[2] if out.exists() else ""
    out.write_text(render(results, rows, args) + "\n" + ANALYSIS_MARKER + kept, encoding="utf-8")
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


def _reset_postgres(url: str) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE; CREATE SCHEMA public"))
    engine.dispose()


def render(results: dict[int, dict[str, dict]], rows: dict[int, int], args: argparse.Namespace) -> str:
    sizes = sorted(results)
    lines = [
        "# Performance",
        "",
        f"Measured by `python benchmarks/bench.py` on {date.today().isoformat()} on this project's machine "
        f"({os.cpu_count()} cores). Times are the best of {args.repeat} runs (imports: one run), each step in "
        "a fresh process, each run's result let go before the next; peak memory is that process's maximum "
        "resident set. The floor is pyarrow reading the same four CSV files. Demo cohorts from "
        "`python -m dashboard demo` (seed 1).",
        "",
        "| step | " + " | ".join(f"{s:,} patients ({rows[s]:,} strength rows)" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    labels = {"floor": "floor: pyarrow read", "validate": "validate", "assess": "assess (validated records)",
              "import-sqlite": "import into SQLite", "import-postgres": "import into PostgreSQL",
              "page": "patient page rerun (AppTest, median)"}
    for name, label in labels.items():
        cells = []
        for size in sizes:
            result = results[size].get(name)
            if result is None:
                cells.append("—")
                continue
            seconds = result["median"] if name == "page" else result["seconds"]
            floor = results[size]["floor"]["seconds"]
            ratio = "" if name in ("floor", "page") else f", {seconds / floor:.1f}× floor"
            shown = f"{seconds * 1000:.0f} ms" if name == "page" else f"{seconds:.2f} s"
            cells.append(f"{shown}{ratio}, peak {result['peak_mb']:.0f} MB")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        lines += ["", "Time per patient, largest against smallest cohort (goal: within 1.3×):", ""]
        for name in ("validate", "assess", "import-sqlite", "import-postgres"):
            if name in results[small] and name in results[large]:
                per_small = results[small][name]["seconds"] / small * 1e6
                per_large = results[large][name]["seconds"] / large * 1e6
                lines.append(f"- {name}: {per_small:.0f} µs → {per_large:.0f} µs per patient "
                             f"({per_large / per_small:.2f}×)")
    lines += ["", "## Against the goals", "", "| goal | measured | met? |", "|---|---|---|"]
    lines += [f"| {goal} | {measured} | {'yes' if met else 'no'} |" for goal, measured, met in goals(results)]
    return "\n".join(lines) + "\n"


def goals(results: dict[int, dict[str, dict]]) -> list[tuple[str, str, bool]]:
    """Each goal of the issues with the measured figure and whether it is met."""
    sizes = sorted(results)
    small, large = results[sizes[0]], results[sizes[-1]]
    rows = []
    for name in ("validate", "assess"):
        ratio = small[name]["seconds"] / small["floor"]["seconds"]
        rows.append((f"{name}, {sizes[0]:,} patients: ≤ {GOAL_RATIO:g}× the read floor",
                     f"{ratio:.1f}× ({small[name]['seconds']:.2f} s against {small['floor']['seconds']:.2f} s)",
                     ratio <= GOAL_RATIO))
    peak = max(small[name]["peak_mb"] for name in ("validate", "assess"))
    rows.append((f"peak memory at {sizes[0]:,} patients: < 1 GiB", f"{peak:.0f} MB (validate, assess)",
                 peak < GOAL_PEAK_MB))
    if len(sizes) > 1:
        for name in ("validate", "assess", "import-sqlite", "import-postgres"):
            if name in small and name in large:
                flat = (large[name]["seconds"] / sizes[-1]) / (small[name]["seconds"] / sizes[0])
                rows.append((f"{name}: time per patient {sizes[0]:,} → {sizes[-1]:,} within {GOAL_FLAT:g}×",
                             f"{flat:.2f}×", flat <= GOAL_FLAT))
    if "page" in small:
        median = small["page"]["median"] * 1000
        rows.append((f"patient-page rerun, {sizes[0]:,}-patient store: ≤ {GOAL_PAGE_MS} ms",
                     f"{median:.0f} ms median, {small['page']['seconds'] * 1000:.0f} ms best",
                     median <= GOAL_PAGE_MS))
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
