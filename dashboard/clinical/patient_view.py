"""Everything the patient page and the reports show about one patient, computed by the core.

Charts and pages only draw what is here: exams against their curves, PROMs, visits, prompts, and what is
missing (a missing value is said to be missing, never drawn as normal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from dashboard.clinical.assessment import Assessment
from dashboard.clinical.curves import FACTORS, Reference, expected_band
from dashboard.clinical.mrc import MRC_TOKENS, MUSCLE_LABELS, MUSCLES, SIDES, format_mrc

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
    band_label: str = ""  # what the band is ("expected range (expert estimate ...)"), for legends and headings


def patient_view(assessment: Assessment, patient_id: str, exams: pd.DataFrame | None = None,
                 index: CohortIndex | None = None) -> PatientView:
    """Detail for one patient.

    On a large cohort pass `index` (a CohortIndex of this assessment, built once): the patient's rows are
    then looked up instead of filtered out of the cohort's frames. `exams` may be passed when the caller has
    the patient's strength rows at hand.
    """
    if index is not None:
        info = index.patient(patient_id)
        muscles = index.muscles(patient_id)
        visits = index.visits(patient_id)
        prompts = index.prompts(patient_id)
        if exams is None:
            exams = index.exams(patient_id)
    else:
        patients = assessment.patients
        row = patients[patients["patient_id"] == patient_id]
        if row.empty:
            raise KeyError(f"no patient {patient_id}")
        info = row.iloc[0]
        muscles = assessment.muscles[assessment.muscles["patient_id"] == patient_id]
        visits = assessment.visits[assessment.visits["patient_id"] == patient_id]
        prompts = assessment.prompts[assessment.prompts["patient_id"] == patient_id]
        if exams is None:
            strength = assessment.records.strength
            exams = strength[strength["patient_id"] == patient_id]
    surgery_date = info["surgery_date"]
    exams = exams.assign(day=(exams["exam_date"] - surgery_date).dt.days if pd.notna(surgery_date) else np.nan)
    exams = exams.assign(phase=np.where(exams["day"] < 0, "pre-operative", "post-operative"))

    order = {m: i for i, m in enumerate(MUSCLES)}
    muscles = muscles.assign(label=muscles["muscle"].map(MUSCLE_LABELS),
                             _order=muscles["muscle"].map(order) * 2 + muscles["side"].map({"L": 0, "R": 1}))
    muscles = muscles.sort_values("_order").drop(columns="_order").reset_index(drop=True)
    muscles = with_band_text(muscles, assessment.reference)

    factors = {name: (None if pd.isna(info.get(name)) else info.get(name)) for name in FACTORS}
    horizon = int(max(CURVE_DAYS_MIN, (exams["day"].max() if exams["day"].notna().any() else 0) + 60))
    curves = _curves(muscles[muscles["curve_group"].notna()], factors, assessment, np.arange(0, horizon + 1, 3))

    visits = visits.sort_values("visit_date")
    prompts = prompts.reset_index(drop=True)
    header = _header(info, assessment)
    return PatientView(patient_id, header, muscles, exams.sort_values(["exam_date", "muscle", "side"]),
                       curves, visits.reset_index(drop=True), prompts, _missing(info, muscles, exams, visits),
                       _curve_sources(muscles, assessment), assessment.reference.band_label)


_SCALE = np.array(sorted(MRC_TOKENS.values()))
_CELL_EDGES = (_SCALE[1:] + _SCALE[:-1]) / 2  # a grade between two scale points belongs to the nearer one


def nearest_grades(values) -> np.ndarray:
    """The nearest point of the MRC scale (0 1 2 3 4- 4 4+ 5- 5) to each value; NaN stays NaN."""
    values = np.asarray(values, dtype=float)
    out = _SCALE[np.clip(np.searchsorted(_CELL_EDGES, np.nan_to_num(values, nan=0.0)), 0, len(_SCALE) - 1)]
    return np.where(np.isnan(values), np.nan, out)


def band_in_steps(expected, low, high) -> tuple[list[str], list[str]]:
    """Expected grade and expected range in MRC steps, as clinicians write grades: ('4', '4- to 4+').

    The model's tenths of a grade are finer than examination resolves (agreement on ± steps is 48%), so both
    are rounded to the nearest step of the scale; a range whose edges round to one step reads as that step.
    Missing (no curve) reads '—'.
    """
    grade, lo, hi = (nearest_grades(v) for v in (expected, low, high))
    shown_grade, shown_range = [], []
    for g, a, b in zip(grade, lo, hi, strict=True):
        if np.isnan(g):
            shown_grade.append("—")
            shown_range.append("—")
            continue
        shown_grade.append(format_mrc(g))
        shown_range.append(format_mrc(a) if a == b else f"{format_mrc(a)} to {format_mrc(b)}")
    return shown_grade, shown_range


def group_band_facts(reference: Reference) -> pd.DataFrame:
    """Per reference group: how sure the band is (confidence) and what it rests on (evidence), in words."""
    default = reference.band.get("evidence") or reference.band_label
    groups = reference.groups
    evidence = groups["evidence"] if "evidence" in groups else pd.Series([None] * len(groups), index=groups.index)
    return pd.DataFrame({
        "curve_group": groups["id"].to_numpy(dtype=object),
        "band_confidence": groups["confidence"].astype(str).to_numpy(dtype=object),
        "band_evidence": [e if isinstance(e, str) and e.strip() else str(default).strip() for e in evidence],
    })


def with_band_text(muscles: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """The muscle rows with the band in MRC steps (`expected_grade`, `expected_range`) and, beside each
    status, the group's `band_confidence` and `band_evidence` (None where no curve applies)."""
    grade, shown_range = band_in_steps(muscles["expected_mrc"], muscles["expected_low"], muscles["expected_high"])
    facts = group_band_facts(reference).set_index("curve_group")
    group = muscles["curve_group"].astype(object)
    return muscles.assign(expected_grade=grade, expected_range=shown_range,
                          band_confidence=group.map(facts["band_confidence"]).astype(object).where(group.notna(), None),
                          band_evidence=group.map(facts["band_evidence"]).astype(object).where(group.notna(), None))


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


def _curves(muscles: pd.DataFrame, factors: dict, assessment: Assessment, days: np.ndarray) -> pd.DataFrame:
    """The expected curve of each muscle-side with a curve, over `days`: one band computation for all of them.

    The same rows as curve_table(baseline, factors, reference, days) per muscle-side, stacked in muscle order.
    """
    columns = ["day", "curve_group", "expected_mrc", "expected_low", "expected_high", "muscle", "side"]
    if muscles.empty:
        return pd.DataFrame(columns=columns)
    n = len(muscles)
    frame = pd.DataFrame({name: [factors.get(name)] * (n * len(days)) for name in FACTORS})
    band = expected_band(np.repeat(muscles["baseline_mrc"].to_numpy(dtype=float), len(days)), np.tile(days, n),
                         frame, assessment.reference)
    band.insert(0, "day", np.tile(days, n))
    band["muscle"] = np.repeat(muscles["muscle"].to_numpy(dtype=object), len(days))
    band["side"] = np.repeat(muscles["side"].to_numpy(dtype=object), len(days))
    return band[columns]


def _curve_sources(muscles: pd.DataFrame, assessment: Assessment) -> pd.DataFrame:
    reference = assessment.reference
    used = set(muscles["curve_group"].dropna())
    groups = reference.groups
    rows = []
    for group_id, label, confidence, sources in zip(groups["id"], groups["label"], groups["confidence"],
                                                    groups["sources"], strict=True):
        if group_id not in used:
            continue
        for source in sources:
            rows.append({"group": group_id, "label": label, "confidence": confidence,
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


class _Rows:
    """The rows of one patient in a cohort-wide frame, in the frame's order: a slice of a copy sorted once."""

    def __init__(self, frame: pd.DataFrame):
        self._sorted = frame.sort_values("patient_id", kind="stable").reset_index(drop=True)
        self._ids = self._sorted["patient_id"].to_numpy(dtype=object)

    def __call__(self, patient_id: str) -> pd.DataFrame:
        start = np.searchsorted(self._ids, patient_id, side="left")
        stop = np.searchsorted(self._ids, patient_id, side="right")
        return self._sorted.iloc[start:stop]


class CohortIndex(ExamIndex):
    """Everything patient_view reads about one patient, looked up in constant time on a large cohort.

    Built once per assessment (the app keeps it with its cached cohort): a patient switch then costs the
    patient's own rows, not a scan of the cohort's frames.
    """

    def __init__(self, assessment: Assessment):
        super().__init__(assessment.records.strength)
        self._patients = assessment.patients
        self._patient_row = {pid: i for i, pid in enumerate(self._patients["patient_id"])}
        self.muscles = _Rows(assessment.muscles)
        self.visits = _Rows(assessment.visits)
        self.prompts = _Rows(assessment.prompts)

    def patient(self, patient_id: str) -> pd.Series:
        """The patient's row of assessment.patients; KeyError for an unknown id."""
        if patient_id not in self._patient_row:
            raise KeyError(f"no patient {patient_id}")
        return self._patients.iloc[self._patient_row[patient_id]]
