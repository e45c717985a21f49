"""Trajectory status per muscle and side: is this muscle recovering as expected after the index operation?

Vectorised over the whole cohort: one integer key per patient×muscle×side and one sort, never a Python
loop over patients. Thresholds come from the reference file (data/reference/).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.core.curves import Reference, expected_band
from dashboard.core.fast import codes_in, days, factorize
from dashboard.core.grades import MUSCLE_ROOTS, MUSCLES, SIDES

STATUSES = ("new_deficit", "deteriorating", "behind", "on_track", "recovered", "no_deficit", "no_baseline",
            "insufficient_data")

_EMPTY_DTYPES = {"_mrc": float, "date": "datetime64[s]", "_day": float, "_low": float, "high": float}
MUSCLE_COLUMNS = [
    "patient_id", "muscle", "root", "side", "baseline_mrc", "baseline_date", "first_post_mrc", "first_post_date",
    "best_prior_mrc", "best_prior_date", "latest_mrc", "latest_date", "latest_day", "expected_mrc",
    "expected_low", "expected_high", "curve_group", "status",
]


def index_surgeries(surgeries: pd.DataFrame) -> pd.DataFrame:
    """The index operation of each patient: the latest operation in the (as-of filtered) records."""
    dated = surgeries[surgeries["surgery_date"].notna()]
    latest = dated.loc[dated.groupby("patient_id", sort=False)["surgery_date"].idxmax()]
    return latest.reset_index(drop=True)


def _last_per_key(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For rows already sorted by key then by the ordering value: each key and its last row."""
    if not len(rows):
        return np.zeros(0, dtype=np.int64), rows
    last = np.r_[keys[rows][1:] != keys[rows][:-1], True]
    return keys[rows][last], rows[last]


def _first_per_key(keys: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if not len(rows):
        return np.zeros(0, dtype=np.int64), rows
    first = np.r_[True, keys[rows][1:] != keys[rows][:-1]]
    return keys[rows][first], rows[first]


def muscle_trajectories(strength: pd.DataFrame, index_ops: pd.DataFrame, factors: pd.DataFrame,
                        reference: Reference) -> pd.DataFrame:
    """One row per patient×muscle×side examined around the index operation, with its status.

    `strength` must already hold only what was known on the assessment day. Works on integer keys
    (patient code × 10 + muscle × 2 + side) and one sort, so a million exams take a fraction of a second.
    """
    patient_code, patient_ids = factorize(strength["patient_id"])
    op_of_patient = pd.Index(index_ops["patient_id"].astype(object)).get_indexer(patient_ids.astype(object))
    op_row = np.where(patient_code >= 0, op_of_patient[np.maximum(patient_code, 0)], -1) \
        if len(op_of_patient) else np.full(len(strength), -1)
    keep = np.flatnonzero(op_row >= 0)
    if not len(keep):
        return pd.DataFrame({column: pd.Series(dtype=_EMPTY_DTYPES.get(column[-4:], object))
                             for column in MUSCLE_COLUMNS})
    surgery_day = days(index_ops["surgery_date"])[op_row[keep]]
    exam_day = days(strength["exam_date"])[keep]
    grade = strength["mrc"].to_numpy(dtype=float)[keep]
    key = patient_code[keep] * 10 + codes_in(strength["muscle"], MUSCLES)[keep] * 2 \
        + codes_in(strength["side"], SIDES)[keep]
    day = exam_day - surgery_day

    by_date = np.lexsort((exam_day, key))  # rows by key, then by date
    pre = by_date[day[by_date] < 0]
    post = by_date[day[by_date] >= 0]
    picks = {
        "baseline": _last_per_key(key, pre),
        "first_post": _first_per_key(key, post),
        "latest": _last_per_key(key, post),
    }
    latest_rows = np.zeros(len(key), dtype=bool)
    latest_rows[picks["latest"][1]] = True
    earlier = np.flatnonzero((day >= 0) & ~latest_rows)
    by_grade = earlier[np.lexsort((exam_day[earlier], grade[earlier], key[earlier]))]
    picks["best_prior"] = _last_per_key(key, by_grade)  # the best grade, its latest date on a tie

    keys = np.unique(key)
    out = pd.DataFrame(index=pd.Index(keys, name="key"))
    exam_dates = strength["exam_date"].to_numpy()[keep]
    for name, (found_keys, rows) in picks.items():
        at = np.searchsorted(keys, found_keys)
        grades = np.full(len(keys), np.nan)
        grades[at] = grade[rows]
        dates = np.full(len(keys), np.datetime64("NaT"), dtype=exam_dates.dtype)
        dates[at] = exam_dates[rows]
        out[f"{name}_mrc"] = grades
        out[f"{name}_date"] = dates
    out["patient_id"] = patient_ids.to_numpy()[keys // 10]
    out["muscle"] = np.asarray(MUSCLES, dtype=object)[(keys % 10) // 2]
    out["side"] = np.asarray(SIDES, dtype=object)[keys % 2]
    out["root"] = out["muscle"].map(MUSCLE_ROOTS)
    latest_day = np.full(len(keys), np.nan)
    found_keys, rows = picks["latest"]
    latest_day[np.searchsorted(keys, found_keys)] = day[rows]
    out["latest_day"] = latest_day

    patient_factors = factors.set_index("patient_id").reindex(out["patient_id"])
    band = expected_band(out["baseline_mrc"].to_numpy(dtype=float), latest_day, patient_factors, reference)
    has_latest = ~np.isnan(out["latest_mrc"].to_numpy())
    for column in ("expected_mrc", "expected_low", "expected_high"):
        out[column] = np.where(has_latest, band[column].to_numpy(), np.nan)
    out["curve_group"] = band["curve_group"].to_numpy()
    out["status"] = classify(out, reference.status)
    return out.reset_index(drop=True)[MUSCLE_COLUMNS]


def classify(rows: pd.DataFrame, thresholds: dict[str, float]) -> np.ndarray:
    """The status of each row, in order of clinical priority (first match wins)."""
    normal = thresholds["normal_grade"]
    noise = thresholds["measurement_noise"]
    baseline = rows["baseline_mrc"].to_numpy(dtype=float)
    latest = rows["latest_mrc"].to_numpy(dtype=float)
    best = rows["best_prior_mrc"].to_numpy(dtype=float)
    low = rows["expected_low"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore"):
        baseline_normal = baseline >= normal
        conditions = [
            np.isnan(baseline),
            np.isnan(latest),
            (baseline_normal & (latest < normal - noise))
            | (~baseline_normal & (latest <= baseline - thresholds["marked_drop_from_baseline"])),
            ~np.isnan(best) & (latest <= best - thresholds["deterioration_drop"]),
            baseline_normal,
            latest >= normal - noise,
            latest < low - thresholds["behind_tolerance"],
        ]
    choices = ["no_baseline", "insufficient_data", "new_deficit", "deteriorating", "no_deficit", "recovered",
               "behind"]
    return np.select(conditions, choices, default="on_track")
