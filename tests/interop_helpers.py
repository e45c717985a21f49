"""Shared by the interoperability tests: the demo cohort, subsets of it, and record comparisons."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pandas as pd

from dashboard.clinical.records.format import FILES
from dashboard.clinical.records.validate import Records, validate
from dashboard.clinical.records.write import to_text_frames

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "data" / "demo"
REDCAP = ROOT / "data" / "redcap"
SCENARIOS = pd.read_csv(DEMO / "scenarios.csv", dtype=str)


@cache
def demo_records() -> Records:
    records, report = validate(DEMO)
    assert records is not None, report.error_lines()
    return records


def one_per_scenario() -> list[str]:
    """The first demo patient of every scenario (normal recovery, red flags, hardware, no baseline, …)."""
    return SCENARIOS.groupby("scenario", sort=True)["patient_id"].first().tolist()


def subset(records: Records, patient_ids: list[str]) -> Records:
    return records.narrowed({name: frame["patient_id"].isin(patient_ids).to_numpy()
                             for name, frame in records.frames().items()}, renumber=True)


def text_frames(records: Records, drop: tuple[str, ...] = ()) -> dict[str, pd.DataFrame]:
    """The records as the text a CSV would hold, rows in key order: what 'the same records' means."""
    out = {}
    for spec in FILES:
        frame = to_text_frames(records)[spec.name].drop(columns=[c for c in drop], errors="ignore")
        out[spec.name] = frame.sort_values(list(spec.key), kind="stable").reset_index(drop=True)
    return out


def assert_same_records(actual: Records, expected: Records, drop: tuple[str, ...] = ()) -> None:
    got, want = text_frames(actual, drop), text_frames(expected, drop)
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], obj=name)


def demo_store(folder: Path) -> str:
    """A SQLite store in `folder` holding the demo cohort (as imported by a test user); its url."""
    from dashboard.store import get_engine, import_records  # noqa: PLC0415 — only the store tests need it

    url = f"sqlite:///{folder / 'store.db'}"
    engine = get_engine(url)
    import_records(engine, demo_records(), source_name="data/demo", user="test")
    engine.dispose()
    return url
