"""Time the prompt log on a large store: `python benchmarks/prompt_log.py [STORE_URL] [--patients N]`.

Without STORE_URL a demo cohort of --patients (default 20,000) is written and imported into a new SQLite store,
or the empty store --into URL (with `import_records`, which logs nothing). Then, for the demo's assessment day:
the store read and assessment (for scale), the first write of the cohort's prompts to the log, a repeat
(nothing new: the cost every later cohort computation pays), reading the log back, prompt performance with and
without the log, and the command line's import step (`log_store_prompts`: the whole store assessed chunk by
chunk as of today, its new prompts logged). A benchmark, not a test: it prints seconds and counts.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def timed(label: str, action):  # noqa: ANN001, ANN201 — any callable, its result
    start = time.perf_counter()
    result = action()
    print(f"{label}: {time.perf_counter() - start:.2f} s", flush=True)
    return result


def build_store(patients: int, folder: Path, into: str | None = None) -> str:
    """A demo cohort of `patients` imported into a new SQLite store, or the empty store `into` (no prompt
    logged): the store's URL."""
    from dashboard.clinical.records.validate import validate
    from dashboard.store import get_engine, import_records

    subprocess.run([sys.executable, "-m", "dashboard", "demo", str(folder / "cohort"), "--patients", str(patients),
                    "--seed", "1", "--first-id", "1", "--database", f"sqlite:///{folder / 'empty.db'}"], cwd=ROOT,
                   check=True, capture_output=True)
    records, report = validate(folder / "cohort")
    assert records is not None, report.error_lines()[:5]
    store = into or f"sqlite:///{folder / 'store.db'}"
    engine = get_engine(store)
    timed(f"import {patients:,} patients (records only)", lambda: import_records(engine, records, "bench", "bench"))
    engine.dispose()
    return store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store_url", nargs="?")
    parser.add_argument("--patients", type=int, default=20_000)
    parser.add_argument("--into", default=None, help="build the cohort into this empty store (e.g. PostgreSQL)")
    args = parser.parse_args(argv)
    from dashboard.batch import log_store_prompts
    from dashboard.clinical.assessment import assess
    from dashboard.clinical.imaging.checklist import load_rules
    from dashboard.clinical.prompt_performance import rule_performance
    from dashboard.demo import DEFAULT_ANCHOR
    from dashboard.store import decision_history, get_engine, load_records
    from dashboard.store.prompt_log import prompt_log, record_prompts

    with tempfile.TemporaryDirectory() as folder:
        store = args.store_url or build_store(args.patients, Path(folder), args.into)
        engine = get_engine(store)
        records = timed("store read", lambda: load_records(engine))
        result = timed(f"assessment as of {DEFAULT_ANCHOR}", lambda: assess(records, as_of=DEFAULT_ANCHOR))
        prompts = result.prompts
        print(f"{len(result.patients):,} patients, {len(prompts):,} prompts "
              f"({int((prompts['urgency'] == 'emergency').sum()):,} emergency)")
        added = timed("record_prompts, first write", lambda: record_prompts(engine, prompts, DEFAULT_ANCHOR))
        print(f"  rows added: {added:,}")
        again = timed("record_prompts, repeat", lambda: record_prompts(engine, prompts, DEFAULT_ANCHOR))
        print(f"  rows added: {again:,}")
        log = timed("prompt_log read", lambda: prompt_log(engine))
        history, rules = decision_history(engine), load_rules()
        timed("rule_performance without the log", lambda: rule_performance(prompts, history, result.visits,
                                                                            DEFAULT_ANCHOR, rules))
        timed(f"rule_performance with the log ({len(log):,} rows)", lambda: rule_performance(
            prompts, history, result.visits, DEFAULT_ANCHOR, rules, log=log))
        logged = timed(f"log_store_prompts as of {date.today()} (the import's step)",
                       lambda: log_store_prompts(engine, date.today()))
        print(f"  {logged.patients:,} patients, {logged.prompts:,} prompts, rows added: {logged.added:,}")
        logged = timed("log_store_prompts, repeat", lambda: log_store_prompts(engine, date.today()))
        print(f"  rows added: {logged.added:,}")
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
