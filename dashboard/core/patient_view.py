"""Everything the patient page and the reports show about one patient, computed by the core.

Charts and pages only draw what is here: exams against their curves, PROMs, visits, prompts, and what is
missing (a missing value is said to be missing, never drawn as normal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboard.core.assessment import Assessment
from dashboard.core.curves import FACTORS, curve_table
from dashboard.core.grades import MUSCLE_LABELS, MUSCLES, SIDES

CURVE_DAYS_MIN = 730


@dataclass
class PatientView:
    patient_id: str
    header: dict
    muscles: pd.DataFrame  # trajectory rows, in root order, with a label
    exams: pd.DataFrame  # every strength exam with its day since the index operation
    curves: pd.DataFrame  # day, muscle, side, expected_mrc, expected_low, expected_high
    visits: pd.DataFrame
    prompts: pd.DataFrame
    missing: list[str]
    curve_sources: pd.DataFrame  # group, label, confidence, citation per curve used


def patient_view(assessment: Assessment, patient_id: str, exams: pd.DataFrame | None = None) -> PatientView:
    """Detail for one patient. `exams` may be passed when the caller has the patient's rows indexed."""
    patients = assessment.patients
    row = patients[patients["patient_id"] == patient_id]
    if row.empty:
        raise KeyError(f"no patient {patient_id}")
    info = row.iloc[0]
    surgery_date = info["surgery_date"]
    if exams is None:
        strength = assessment.records.strength
        exams = strength[strength["patient_id"] == patient_id]
    exams = exams.assign(day=(exams["exam_date"] - surgery_date).dt.days if pd.notna(surgery_date) else np.nan)
    exams = exams.assign(phase=np.where(exams["day"] < 0, "pre-operative", "post-operative"))

    muscles = assessment.muscles[assessment.muscles["patient_id"] == patient_id].copy()
    order = {m: i for i, m in enumerate(MUSCLES)}
    muscles = muscles.assign(label=muscles["muscle"].map(MUSCLE_LABELS),
                             _order=muscles["muscle"].map(order) * 2 + muscles["side"].map({"L": 0, "R": 1}))
    muscles = muscles.sort_values("_order").drop(columns="_order").reset_index(drop=True)

    factors = {name: (None if pd.isna(info.get(name)) else info.get(name)) for name in FACTORS}
    horizon = int(max(CURVE_DAYS_MIN, (exams["day"].max() if exams["day"].notna().any() else 0) + 60))
    days = np.arange(0, horizon + 1, 3)
    curves = []
    for m in muscles[muscles["curve_group"].notna()].itertuples():
        table = curve_table(m.baseline_mrc, factors, assessment.reference, days)
        curves.append(table.assign(muscle=m.muscle, side=m.side))
    curves = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(
        columns=["day", "curve_group", "expected_mrc", "expected_low", "expected_high", "muscle", "side"])

    visits = assessment.visits[assessment.visits["patient_id"] == patient_id].sort_values("visit_date")
    prompts = assessment.prompts[assessment.prompts["patient_id"] == patient_id].reset_index(drop=True)
    header = _header(info, assessment)
    return PatientView(patient_id, header, muscles, exams.sort_values(["exam_date", "muscle", "side"]),
                       curves, visits.reset_index(drop=True), prompts, _missing(info, muscles, exams, visits),
                       _curve_sources(muscles, assessment))


def _value(info: pd.Series, name: str):
    value = info.get(name)
    return None if value is None or pd.isna(value) else value


def _header(info: pd.Series, assessment: Assessment) -> dict:
    birth_year = _value(info, "birth_year")
    return {
        "patient_id": info["patient_id"],
        "name": _value(info, "name"),
        "mrn": _value(info, "mrn"),
        "age": None if birth_year is None else assessment.as_of.year - int(birth_year),
        "sex": _value(info, "sex"),
        "surgeon": _value(info, "surgeon"),
        "diabetes": _value(info, "diabetes"),
        "smoker": _value(info, "smoker"),
        "surgery_date": None if pd.isna(info["surgery_date"]) else info["surgery_date"].date(),
        "procedure": _value(info, "procedure"),
        "levels": _value(info, "levels"),
        "instrumented": _value(info, "instrumented"),
        "revision": _value(info, "revision"),
        "days_since_surgery": _value(info, "days_since_surgery"),
        "deficit_days": _value(info, "deficit_days"),
        "top_urgency": _value(info, "top_urgency"),
        "as_of": assessment.as_of,
    }


def _missing(info: pd.Series, muscles: pd.DataFrame, exams: pd.DataFrame, visits: pd.DataFrame) -> list[str]:
    """What the assessment could not know, in words: never shown as normal."""
    notes = []
    if pd.isna(info["surgery_date"]):
        notes.append("No operation on or before the assessment day: the patient is not in follow-up yet.")
        return notes
    if exams.empty or not (exams["day"] < 0).any():
        notes.append("No pre-operative strength examination: there is no baseline, so no expected curve.")
    else:
        no_baseline = muscles[muscles["status"] == "no_baseline"]
        if not no_baseline.empty:
            listed = ", ".join(f"{m} {s}" for m, s in zip(no_baseline["muscle"], no_baseline["side"], strict=True))
            notes.append(f"No pre-operative grade for {listed}.")
    examined = set(zip(muscles["muscle"], muscles["side"], strict=True))
    never = [f"{m} {s}" for m in MUSCLES for s in SIDES if (m, s) not in examined]
    if never:
        notes.append("Never examined: " + ", ".join(never) + ".")
    if not (exams["day"] >= 0).any():
        notes.append("No post-operative strength examination yet.")
    for factor, words in (("diabetes", "Diabetes status"), ("birth_year", "Birth year")):
        if pd.isna(info.get(factor)):
            notes.append(f"{words} not recorded: the expected curve does not adjust for it.")
    if pd.isna(info.get("deficit_onset_date")) and (muscles["baseline_mrc"] < 5).any():
        notes.append("Onset of the pre-operative weakness not recorded: the curve does not adjust for its duration.")
    if visits.empty:
        notes.append("No visits recorded: symptoms, PROMs and red-flag findings are unknown.")
    return notes


def _curve_sources(muscles: pd.DataFrame, assessment: Assessment) -> pd.DataFrame:
    reference = assessment.reference
    used = muscles["curve_group"].dropna().unique()
    rows = []
    for group in reference.groups[reference.groups["id"].isin(used)].itertuples():
        for source in group.sources:
            rows.append({"group": group.id, "label": group.label, "confidence": group.confidence,
                         "figure": source.get("figure", ""),
                         "citation": reference.sources[source["key"]]["citation"],
                         "url": reference.sources[source["key"]].get("url", "")})
    return pd.DataFrame(rows, columns=["group", "label", "confidence", "figure", "citation", "url"])


class ExamIndex:
    """One patient's exams in constant time on a large cohort: rows sorted once by patient."""

    def __init__(self, strength: pd.DataFrame):
        self._sorted = strength.sort_values(["patient_id", "exam_date"], kind="stable").reset_index(drop=True)
        self._ids = self._sorted["patient_id"].to_numpy(dtype=object)

    def exams(self, patient_id: str) -> pd.DataFrame:
        start = np.searchsorted(self._ids, patient_id, side="left")
        stop = np.searchsorted(self._ids, patient_id, side="right")
        return self._sorted.iloc[start:stop]
