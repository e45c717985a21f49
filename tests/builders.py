"""Small hand-built cohorts for clinical scenario tests: rows as dicts of text, as a CSV would hold them."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd

from dashboard.clinical.records.validate import Records, validate_frames
from dashboard.clinical.records.write import to_text_frames

SURGERY = date(2026, 1, 10)


def day(n: int) -> str:
    """The ISO date n days after the standard test operation (negative: before)."""
    return (SURGERY + timedelta(days=n)).isoformat()


def exams(patient_id: str, muscle: str, side: str, grades: dict[int, str]) -> list[dict]:
    """Strength rows for one muscle-side: {day since operation: grade text}."""
    return [{"patient_id": patient_id, "exam_date": day(d), "muscle": muscle, "side": side, "mrc": g}
            for d, g in grades.items()]


def make_records(patients: list[dict], surgeries: list[dict], strength: list[dict],
                 visits: list[dict] | None = None, today: date = date(2026, 11, 1)) -> Records:
    """Validate rows like files; fail loudly if the test data itself is invalid."""
    def frame(rows: list[dict]) -> pd.DataFrame:
        return pd.DataFrame(rows, dtype="string") if rows else pd.DataFrame()

    raw = {"patients.csv": frame(patients), "surgeries.csv": frame(surgeries), "strength.csv": frame(strength),
           "visits.csv": frame(visits) if visits else None}
    records, report = validate_frames(raw, {}, today=today)
    assert records is not None, report.error_lines()
    return records


def patient(patient_id: str, **fields: str) -> dict:
    return {"patient_id": patient_id, "birth_year": "1965", "sex": "F", "diabetes": "no", **fields}


def surgery(patient_id: str, instrumented: str = "yes", levels: str = "L4-L5", when: int = 0, **fields: str) -> dict:
    return {"patient_id": patient_id, "surgery_date": day(when), "procedure": "TLIF", "levels": levels,
            "instrumented": instrumented, **fields}


def visit(patient_id: str, on_day: int, **fields: str) -> dict:
    return {"patient_id": patient_id, "visit_date": day(on_day), **fields}


def with_columns(records: Records, changes: dict[str, dict[str, object]], today: date | None = None) -> Records:
    """The records with whole columns replaced (`{"patients.csv": {"surgeon": [...]}}`, values as a CSV holds
    them), validated again: Records are made only by validation. Fails loudly if the result is invalid."""
    frames = to_text_frames(records)
    for file, columns in changes.items():
        frames[file] = frames[file].copy()
        for column, values in columns.items():
            frames[file][column] = pd.array(list(values), dtype="string")
    edited, report = validate_frames(frames, {}, today=today)
    assert edited is not None, report.error_lines()
    return edited


def edited_records(records: Records, file: str, row: object, column: str, text: str | None,
                   today: date | None = None) -> Records:
    """The records with one value replaced (`file` as "visits.csv", `row` an index label, `text` as a CSV
    holds it), validated again: Records are made only by validation, in tests too. Fails loudly if the
    edited records are invalid."""
    frames = to_text_frames(records)
    frames[file] = frames[file].copy()
    frames[file].loc[row, column] = text
    edited, report = validate_frames(frames, {}, today=today)
    assert edited is not None, report.error_lines()
    return edited
