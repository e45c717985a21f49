"""Timing the store on a large synthetic cohort: `python -m dashboard.store.benchmark [--patients N] [--url URL]`.

40,000 patients × 5 muscles × 2 sides × 4 examinations = 1.6 million strength rows. Prints seconds for
validation, first import, re-import (all unchanged) and read-back. The cohort is random and fictional.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from dashboard.core.grades import MUSCLES
from dashboard.core.records import validate
from dashboard.store.db import get_engine
from dashboard.store.importer import import_records
from dashboard.store.loader import load_records

EXAM_OFFSETS_DAYS = (-7, 42, 90, 180)


def write_cohort(folder: Path, patients: int, seed: int = 1) -> int:
    """Write a fictional records folder; return the number of strength rows."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"B{i:06d}" for i in range(patients)])
    surgery = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.integers(0, 365, patients), unit="D")
    pd.DataFrame({
        "patient_id": ids, "birth_year": rng.integers(1940, 2000, patients),
        "sex": rng.choice(["F", "M"], patients), "diabetes": rng.choice(["yes", "no", ""], patients),
    }).to_csv(folder / "patients.csv", index=False)
    pd.DataFrame({
        "patient_id": ids, "surgery_date": surgery.strftime("%Y-%m-%d"), "procedure": "TLIF",
        "levels": "L4-L5", "instrumented": "yes", "revision": "no",
        "deficit_onset_date": (surgery - pd.Timedelta(days=30)).strftime("%Y-%m-%d"),
    }).to_csv(folder / "surgeries.csv", index=False)
    grid = pd.MultiIndex.from_product([range(patients), MUSCLES, ("L", "R"), EXAM_OFFSETS_DAYS],
                                      names=["p", "muscle", "side", "offset"]).to_frame(index=False)
    exam = surgery[grid["p"].to_numpy()] + pd.to_timedelta(grid["offset"].to_numpy(), unit="D")
    grades = np.array(["2", "3", "4-", "4", "4+", "5-", "5"])
    pd.DataFrame({
        "patient_id": ids[grid["p"].to_numpy()], "exam_date": exam.strftime("%Y-%m-%d"),
        "muscle": grid["muscle"], "side": grid["side"], "mrc": grades[rng.integers(0, len(grades), len(grid))],
    }).to_csv(folder / "strength.csv", index=False)
    return len(grid)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=40_000)
    parser.add_argument("--url", help="database URL (default: a throwaway SQLite file)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cohort"
        folder.mkdir()
        rows = write_cohort(folder, args.patients)
        engine = get_engine(args.url or f"sqlite:///{tmp}/bench.db")
        clock = time.perf_counter()
        records, report = validate(folder)
        assert records is not None, report.error_lines()[:5]
        print(f"{rows:,} strength rows; validate {time.perf_counter() - clock:.1f} s")
        for label in ("first import", "re-import"):
            result = import_records(engine, records, folder.name)
            print(f"{label}: {result.seconds:.1f} s ({result.summary()})")
        clock = time.perf_counter()
        loaded = load_records(engine)
        print(f"load_records: {time.perf_counter() - clock:.1f} s ({len(loaded.strength):,} strength rows)")
        engine.dispose()


if __name__ == "__main__":
    main()
