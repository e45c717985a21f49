"""What users wait for: `python benchmarks/bench.py [--sizes 200 2000 20000] [--postgres-url URL]`.

Each command is run the way a user runs it — a fresh `python -m dashboard …` process with its output written
to a file — and timed from start to exit, with the process's peak memory (its own rusage). The floor is a
fresh Python that imports pandas and reads the same four CSV files with pyarrow: what any tool that looks at
these files must pay. Every figure is shown as a ratio to the floor measured in the same run, and per patient
against the smallest cohort (flat = the cost per patient does not grow with the clinic).

Writes docs/performance.md above its hand-written analysis. A benchmark, not a test: it asserts nothing, and
the goals it reports are the issues' (issue 19: assess json/table and validate within 3× the floor;
export-fhir, handout and report with a flat cost per patient).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
AS_OF = "2026-11-20"  # the demo cohort's anchor day
ANALYSIS_MARKER = "<!-- analysis: written by hand, kept by benchmarks/bench.py -->"
GOAL_RATIO = 3.0  # assess json/table and validate: at most 3× the floor
#: The steps with a goal relative to the floor, measured in interleaved rounds (best of ROUNDS each).
AGAINST_THE_FLOOR = ("floor", "validate", "assess --format json", "assess --format table")
ROUNDS = 5
GOAL_FLAT = 1.3  # time per patient, largest against smallest cohort
FLOOR = ("import sys, pandas, pyarrow.csv as c; "
         "[c.read_csv(f'{sys.argv[1]}/{n}.csv') for n in ('patients', 'surgeries', 'strength', 'visits')]")


def commands(folder: Path, out: Path, store: str, first_ten: list[str]) -> dict[str, list[str]]:
    """Each step as a user types it (the store steps run after `import`); a conference handout of ten cases."""
    first_patient = first_ten[0]
    dashboard = [sys.executable, "-m", "dashboard"]
    return {
        "floor": [sys.executable, "-c", FLOOR, str(folder)],
        "validate": [*dashboard, "validate", str(folder)],
        "assess --format json": [*dashboard, "assess", str(folder), "--as-of", AS_OF, "--format", "json"],
        "assess --format table": [*dashboard, "assess", str(folder), "--as-of", AS_OF, "--format", "table"],
        "import (SQLite)": [*dashboard, "import", str(folder), "--database", store],
        "export-fhir --ndjson": [*dashboard, "export-fhir", str(out / "ndjson"), "--ndjson", "--database", store],
        "handout (HTML, 10 cases)": [*dashboard, "handout", str(folder), "--out", str(out / "handout.html"),
                                     "--as-of", AS_OF, "--patients", ",".join(first_ten)],
        "report (HTML, one patient)": [*dashboard, "report", str(folder), first_patient, "--out",
                                       str(out / "report.html"), "--as-of", AS_OF],
    }


def timed(command: list[str], stdout: Path) -> dict:
    """Wall time from start to exit and the process's peak memory; the output goes to a file.

    Linux carries the larger of the parent's and the child's peak across exec into the child's ru_maxrss, so
    this process imports nothing heavy (it is about 10 MB): the figure is the command's own."""
    with open(stdout, "wb") as sink:
        start = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, stdout=sink, stderr=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
    error = process.stderr.read().decode(errors="replace") if process.stderr else ""
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command[2:4])} failed ({process.returncode}):\n{error[-2000:]}")
    return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "output_mb": stdout.stat().st_size / 1e6}


def measure(size: int, work: Path, repeat: int, only: set[str] | None) -> dict[str, dict]:
    folder = work / f"cohort-{size}"  # made by a child: this process stays small (see `timed`)
    subprocess.run([sys.executable, "-m", "dashboard", "demo", str(folder), "--patients", str(size), "--seed", "1",
                    "--first-id", "1"], cwd=ROOT, check=True, capture_output=True)
    out = work / f"out-{size}"
    out.mkdir()
    store = f"sqlite:///{work / f'store-{size}.db'}"
    results: dict[str, dict] = {}
    needs_store = only is not None and any(name.startswith("export-fhir") for name in only)
    wanted = None if only is None else {"floor", *only, *(["import (SQLite)"] if needs_store else [])}
    width = max(5, len(str(size)))
    steps = {name: command for name, command in commands(folder, out, store, [f"P{i:0{width}d}" for i in
                                                                               range(1, 11)]).items()
             if wanted is None or name in wanted}
    # The floor and the commands measured against it run in rounds, one of each per round, so that a change in
    # the machine's speed during the run (other virtual machines on the host) moves them together.
    rounds: dict[str, list[dict]] = {name: [] for name in steps if name in AGAINST_THE_FLOOR}
    for _ in range(max(repeat, ROUNDS)):
        for name in rounds:
            rounds[name].append(timed(steps[name], out / "stdout.txt"))
    for name, command in steps.items():
        if name in rounds:
            best = min(rounds[name], key=lambda r: r["seconds"])
        else:
            runs = 1 if name == "import (SQLite)" else repeat  # an import into the same store twice is a re-import
            best = min((timed(command, out / "stdout.txt") for _ in range(runs)), key=lambda r: r["seconds"])
        results[name] = best
        print(f"{size:>6}: {name:<28} {best['seconds']:7.2f} s  peak {best['peak_mb']:6.0f} MB", file=sys.stderr)
    return results


def render(results: dict[int, dict[str, dict]], repeat: int) -> str:
    sizes = sorted(results)
    names = [name for name in results[sizes[0]]]
    lines = [
        "# Performance: what users wait for",
        "",
        f"Measured by `python benchmarks/bench.py` on {date.today().isoformat()} on this project's machine "
        f"({os.cpu_count()} cores), all in one run. Each step is the command as a user runs it: a fresh "
        f"`python -m dashboard …` process, output written to a file, timed from start to exit (best of {repeat}; "
        f"the floor, validate and assess in {max(repeat, ROUNDS)} interleaved rounds, best of each; imports once). "
        "The floor is a fresh Python that imports pandas and reads the same four CSV files. "
        "Peak memory is the process's own maximum resident set. Demo cohorts from `python -m dashboard demo` "
        "(seed 1).",
        "",
        "| command | " + " | ".join(f"{s:,} patients" for s in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for name in names:
        cells = []
        for size in sizes:
            result, floor = results[size].get(name), results[size]["floor"]["seconds"]
            if result is None:
                cells.append("—")
                continue
            ratio = "" if name == "floor" else f" ({result['seconds'] / floor:.1f}× floor)"
            cells.append(f"{result['seconds']:.2f} s{ratio}, {result['peak_mb']:.0f} MB")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        lines += ["", f"Time per patient, {large:,} against {small:,} patients (flat: ≤ {GOAL_FLAT:g}×; "
                  "below 1 the fixed start-up cost dominates the small cohort):", ""]
        for name in names:
            if name != "floor" and name in results[large]:
                per = [results[s][name]["seconds"] / s * 1000 for s in (small, large)]
                lines.append(f"- {name}: {per[0]:.2f} ms → {per[1]:.2f} ms per patient ({per[1] / per[0]:.2f}×)")
    lines += ["", "## Against the goals", "", "| goal | measured | met? |", "|---|---|---|"]
    largest = results[sizes[-1]]
    for name in ("validate", "assess --format json", "assess --format table"):
        if name in largest:
            ratio = largest[name]["seconds"] / largest["floor"]["seconds"]
            lines.append(f"| {name}, {sizes[-1]:,} patients: ≤ {GOAL_RATIO:g}× the floor | {ratio:.1f}× | "
                         f"{'yes' if ratio <= GOAL_RATIO else 'no'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[200, 2_000, 20_000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="command names to run (the floor always runs)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "performance.md"))
    args = parser.parse_args(argv)
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory() as work:
        for size in sorted(args.sizes):
            results[size] = measure(size, Path(work), args.repeat, set(args.only) if args.only else None)
    out = Path(args.out)
    kept = out.read_text(encoding="utf-8").partition(ANALYSIS_MARKER)[2] if out.exists() else ""
    out.write_text(render(results, args.repeat) + "\n" + ANALYSIS_MARKER + kept, encoding="utf-8")
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
