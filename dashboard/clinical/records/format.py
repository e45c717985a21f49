"""The records format v1 (docs/records-format.md) as data: files, columns, types and value checks.

Parsing text into types is ours (MRC grades, yes/no booleans and ISO dates have no pandas parser that
reports the bad value); the code lists and ranges a column's values must keep to are data here (`Allowed`),
checked on each column's distinct values; repeated keys are found by sorting
(dashboard.clinical.records.parse.repeated_rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from dashboard.clinical.mrc import MRC_EXPECTED, MUSCLES, SIDES

LUMBAR_SEGMENTS: tuple[str, ...] = ("L1-L2", "L2-L3", "L3-L4", "L4-L5", "L5-S1")
BOOLEAN_TEXT: dict[str, bool] = {
    "yes": True, "no": False, "true": True, "false": False, "y": True, "n": False, "1": True, "0": False,
}


@dataclass(frozen=True)
class Allowed:
    """The values a column may hold once parsed: one of `codes`, or from `low` to `high` inclusive (`high` None:
    no upper limit; `up_to_this_year`: the current year). Missing values are the parser's business."""

    what: str  # in plain words, for the message: "a sex code"
    codes: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None
    up_to_this_year: bool = False

    def _high(self, today: date) -> float | None:
        return today.year if self.up_to_this_year else self.high

    def message(self, today: date) -> str:
        """What a row with a value outside is told: "is not a sex code (F, M, X)", "is not a pain score (0–10)"."""
        if self.codes:
            return f"is not {self.what} ({', '.join(self.codes)})"
        high = self._high(today)
        return f"is not {self.what} (≥ {self.low:g})" if high is None else f"is not {self.what} ({self.low:g}–{high:g})"

    def outside(self, values: pd.Series, today: date) -> np.ndarray:
        """Which of the (present, parsed) `values` are not allowed."""
        if self.codes:
            inside = values.isin(self.codes)
        else:
            high = self._high(today)
            inside = values >= self.low if high is None else (values >= self.low) & (values <= high)
        return ~np.asarray(inside, dtype=bool)


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # text | code | date | boolean | integer | number | mrc | levels
    required: bool = False
    identifying: bool = False
    allowed: Allowed | None = None


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
        Column("birth_year", "integer", allowed=Allowed("a birth year", low=1900, up_to_this_year=True)),
        Column("sex", "code", allowed=Allowed("a sex code", codes=("F", "M", "X"))),
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
        Column("muscle", "code", required=True, allowed=Allowed("a muscle code", codes=MUSCLES)),
        Column("side", "code", required=True, allowed=Allowed("a side code", codes=SIDES)),
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
VISIT_SIGN_NUMBERS = {
    "respiratory_rate": Allowed("a respiratory rate in breaths/min", low=0, high=80),
    "systolic_bp": Allowed("a systolic blood pressure in mmHg", low=0, high=300),
}
PAIN_SCORE = Allowed("a pain score", low=0, high=10)
VISITS = FileSpec(
    "visits.csv", False,
    (
        Column("patient_id", "text", required=True),
        Column("visit_date", "date", required=True),
        Column("leg_pain_nrs", "number", allowed=PAIN_SCORE),
        Column("back_pain_nrs", "number", allowed=PAIN_SCORE),
        Column("odi", "number", allowed=Allowed("an ODI score", low=0, high=100)),
        *(Column(name, "boolean") for name in VISIT_BOOLEANS),
        Column("crp_mg_l", "number", allowed=Allowed("a CRP in mg/L", low=0)),
        *(Column(name, "boolean") for name in VISIT_SIGN_BOOLEANS),
        *(Column(name, "number", allowed=allowed) for name, allowed in VISIT_SIGN_NUMBERS.items()),
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

