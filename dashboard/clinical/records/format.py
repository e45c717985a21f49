"""The records format v1 (docs/records-format.md) as data: files, columns, types and value checks.

Parsing text into types is ours (MRC grades, yes/no booleans and ISO dates have no pandas parser that
reports the bad value); range and code-list checks are pandera schemas, run on each column's distinct values;
repeated keys are found by sorting (dashboard.clinical.records.parse.repeated_rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandera.pandas as pa

from dashboard.clinical.mrc import MRC_EXPECTED, MUSCLES, SIDES

LUMBAR_SEGMENTS: tuple[str, ...] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
BOOLEAN_TEXT: dict[str, bool] = {
    "yes": True, "no": False, "true": True, "false": False, "y": True, "n": False, "1": True, "0": False,
}


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | code | date | boolean | integer | number | mrc | levels
    required: bool = False
    identifying: bool = False


@dataclass(frozen=True)
class FileSpec:
    name: str
    required: bool
    columns: tuple[Column, ...]
    key: tuple[str, ...]  # natural key: one row per key

    @property
    def stem(self) -> str:
        return self.name.removesuffix(".csv")

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)


PATIENTS = FileSpec(
    "patients.csv", True,
    (
        Column("patient_id", "text", required=True),
        Column("name", "text", identifying=True),
        Column("mrn", "text", identifying=True),
        Column("birth_year", "integer"),
        Column("sex", "code"),
        Column("diabetes", "boolean"),
        Column("smoker", "boolean"),
        Column("surgeon", "text"),
    ),
    key=("patient_id",),
)
SURGERIES = FileSpec(
    "surgeries.csv", True,
    (
        Column("patient_id", "text", required=True),
        Column("surgery_date", "date", required=True),
        Column("procedure", "text", required=True),
        Column("levels", "levels", required=True),
        Column("instrumented", "boolean", required=True),
        Column("revision", "boolean"),
        Column("deficit_onset_date", "date"),
    ),
    key=("patient_id", "surgery_date"),
)
STRENGTH = FileSpec(
    "strength.csv", True,
    (
        Column("patient_id", "text", required=True),
        Column("exam_date", "date", required=True),
        Column("muscle", "code", required=True),
        Column("side", "code", required=True),
        Column("mrc", "mrc", required=True),
    ),
    key=("patient_id", "exam_date", "muscle", "side"),
)
VISIT_BOOLEANS = (
    "radicular_pain", "numbness", "saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever",
    "wound_drainage", "calf_swelling", "screw_lucency", "implant_migration", "rod_fracture",
)
#: Optional signs added to the format (docs/format-extensions.md, "Sepsis and cauda equina signs"): reduced anal
#: tone and perianal sensation for cauda equina, and the three qSOFA criteria (Sepsis-3) for sepsis. Blank is
#: unknown, never normal.
VISIT_SIGN_BOOLEANS = ("anal_tone_reduced", "perianal_sensation_reduced", "altered_mentation")
VISIT_SIGN_NUMBERS = ("respiratory_rate", "systolic_bp")
VISITS = FileSpec(
    "visits.csv", False,
    (
        Column("patient_id", "text", required=True),
        Column("visit_date", "date", required=True),
        Column("leg_pain_nrs", "number"),
        Column("back_pain_nrs", "number"),
        Column("odi", "number"),
        *(Column(name, "boolean") for name in VISIT_BOOLEANS),
        Column("crp_mg_l", "number"),
        *(Column(name, "boolean") for name in VISIT_SIGN_BOOLEANS),
        *(Column(name, "number") for name in VISIT_SIGN_NUMBERS),
        Column("notes", "text", identifying=True),
    ),
    key=("patient_id", "visit_date"),
)
FILES: tuple[FileSpec, ...] = (PATIENTS, SURGERIES, STRENGTH, VISITS)
IDENTIFYING_COLUMNS: frozenset[str] = frozenset(c.name for f in FILES for c in f.columns if c.identifying)

#: What a value of each kind must look like, for messages.
EXPECTED_BY_KIND = {
    "code": "a code",
    "date": "a date YYYY-MM-DD",
    "boolean": "a boolean (yes/no, true/false, y/n, 1/0)",
    "integer": "a whole number",
    "number": "a number",
    "mrc": MRC_EXPECTED,
    "levels": "lumbar segments L1-L2 … L5-S1 separated by ';'",
}


def _in(values: tuple[str, ...], what: str) -> pa.Check:
    return pa.Check.isin(list(values), error=f"is not {what} ({', '.join(values)})")


def _range(low: float, high: float | None, what: str) -> pa.Check:
    if high is None:
        return pa.Check.ge(low, error=f"is not {what} (≥ {low:g})")
    return pa.Check.in_range(low, high, error=f"is not {what} ({low:g}–{high:g})")


def value_schemas(today: date) -> dict[str, pa.DataFrameSchema]:
    """Pandera schemas for the parsed values: codes, ranges and required values (the parser gave each column
    its type; each column is checked on its distinct values, so no check may compare rows)."""
    def col(*checks, nullable=True) -> pa.Column:
        return pa.Column(None, checks=list(checks), nullable=nullable, required=False, coerce=False)

    nrs = _range(0, 10, "a pain score")
    return {
        "patients.csv": pa.DataFrameSchema({
            "birth_year": col(_range(1900, today.year, "a birth year")),
            "sex": col(_in(("F", "M", "X"), "a sex code")),
        }),
        "surgeries.csv": pa.DataFrameSchema({
            "procedure": col(nullable=False),
        }),
        "strength.csv": pa.DataFrameSchema({
            "muscle": col(_in(MUSCLES, "a muscle code"), nullable=False),
            "side": col(_in(SIDES, "a side code"), nullable=False),
        }),
        "visits.csv": pa.DataFrameSchema({
            "leg_pain_nrs": col(nrs),
            "back_pain_nrs": col(nrs),
            "odi": col(_range(0, 100, "an ODI score")),
            "crp_mg_l": col(_range(0, None, "a CRP in mg/L")),
            "respiratory_rate": col(_range(0, 80, "a respiratory rate in breaths/min")),
            "systolic_bp": col(_range(0, 300, "a systolic blood pressure in mmHg")),
        }),
    }
