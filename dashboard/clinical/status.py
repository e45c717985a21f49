"""Trajectory status per muscle and side: is this muscle recovering as expected after the index operation?

Vectorised over the whole cohort: one integer key per patient×muscle×side and one sort, never a Python
loop over patients. Thresholds come from the reference file (data/reference/).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from dashboard.clinical.curves import Reference, band_arrays, modifier_multipliers
from dashboard.clinical.frames import (
    coded_text_column,
    encode,
    factorize,
    first_rows,
    one_array,
    rows_in,
    take_rows,
    text_array,
    text_column,
)
from dashboard.clinical.mrc import MUSCLES, ROOTS, SIDES

STATUSES = ("new_deficit", "deteriorating", "behind", "on_track", "recovered", "no_deficit", "no_baseline",
            "insufficient_data")

_EMPTY_DTYPES = {"_mrc": float, "date": "datetime64[s]", "_day": float, "_low": float, "high": float}
MUSCLE_COLUMNS = [
    "patient_id", "muscle", "root", "side", "baseline_mrc", "baseline_date", "first_post_mrc", "first_post_date",
    "best_prior_mrc", "best_prior_date", "latest_mrc", "latest_date", "latest_day", "expected_mrc",
    "expected_low", "expected_high", "curve_group", "status",
]


def index_surgeries(surgeries: pd.DataFrame) -> pd.DataFrame:
    """The index operation of each patient: the latest operation in the (as-of filtered) records.

    One row per patient, in order of the patient's first dated row; of two on the same date, the first.
    """
    dated = np.flatnonzero(surgeries["surgery_date"].notna().to_numpy())
    patient = factorize(surgeries["patient_id"].iloc[dated])[0]
    dated, patient = dated[patient >= 0], patient[patient >= 0]
    order = np.lexsort((-surgeries["surgery_date"].to_numpy()[dated].view(np.int64), patient))
    first = np.diff(np.r_[-1, patient[order]]) != 0
    return take_rows(surgeries, dated[order][first])


def _best_between(grade: np.ndarray, first: np.ndarray, stop: np.ndarray) -> np.ndarray:
    """For each range of positions [first, stop) (ascending, not empty): where its highest grade is, the last
    place on a tie; a missing grade counts as the highest (as a sort puts it last)."""
    length = stop - first
    offset = np.cumsum(length) - length  # where each range starts once they are put end to end
    rows = np.repeat(first - offset, length) + np.arange(length.sum(), dtype=first.dtype)
    values = grade[rows]
    top = np.repeat(np.maximum.reduceat(values, offset), length)  # NaN propagates
    at_top = (values == top) | (np.isnan(values) & np.isnan(top))
    return rows[np.maximum.reduceat(np.where(at_top, np.arange(len(values), dtype=rows.dtype), -1), offset)]


def _places_by_first_exam(code: np.ndarray, size: int) -> np.ndarray:
    """Each patient code's place in order of the patient's first row (codes not present, and -1, last)."""
    first = first_rows(code, size)
    first[first < 0] = len(code)
    place = np.empty(size + 1, dtype=np.int64)
    place[np.argsort(first, kind="stable")] = np.arange(size + 1)
    return place


def muscle_trajectories(strength: pd.DataFrame, index_ops: pd.DataFrame, factors: pd.DataFrame,
                        reference: Reference) -> pd.DataFrame:
    """One row per patient×muscle×side examined around the index operation, with its status.

    `strength` must already hold only what was known on the assessment day. Works on one integer per exam
    (key = patient code × 10 + muscle × 2 + side, then exam day) and one sort, so a million exams take a
    fraction of a second. Rows come by patient (in order of first exam), muscle (cranio-caudal), then side.
    """
    patient_code, patient_ids = encode(strength["patient_id"])
    op_of_patient = np.append(rows_in(patient_ids, index_ops["patient_id"]), -1)
    muscle = encode(strength["muscle"], MUSCLES)[0]
    side = encode(strength["side"], SIDES)[0]
    known = (op_of_patient[patient_code] >= 0) & (muscle >= 0) & (side >= 0)
    if not known.any():
        return pd.DataFrame({column: pd.Series(dtype=_EMPTY_DTYPES.get(column[-4:], object))
                             for column in MUSCLE_COLUMNS})
    exam_date = strength["exam_date"].to_numpy()
    exam_day = exam_date.astype("datetime64[D]").view(np.int64)
    undated = np.isnat(exam_date)
    dated_days = exam_day[~undated] if undated.any() else exam_day
    first_day, last_day = (dated_days.min(), dated_days.max()) if len(dated_days) else (0, 0)
    width = last_day - first_day + 2  # a place for each day, then one for undated exams

    # One stable sort of one integer per exam: by key, then day (undated last), ties in input order. Exams
    # outside a trajectory (no index operation, unknown muscle or side) get key -1 and come first.
    place = _places_by_first_exam(patient_code, len(patient_ids))
    exam_key = np.where(known, place[patient_code] * np.int64(10) + muscle * 2 + side, -1) * width
    exam_key += np.where(undated, width - 1, exam_day - first_day)
    order = np.argsort(exam_key, kind="stable")
    exam_key = exam_key[order]
    key = exam_key // width
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    start = start[key[start] >= 0]
    keys = key[start]
    patient = np.argsort(place)[keys // 10]  # each key's patient code

    # Each key's rows: the exams before the index operation, those after it, then undated ones.
    surgery_day = index_ops["surgery_date"].to_numpy().astype("datetime64[D]").view(np.int64)[
        op_of_patient[patient]]
    first_post = np.searchsorted(exam_key, keys * width + np.clip(surgery_day - first_day, 0, width - 1))
    dated_end = np.searchsorted(exam_key, keys * width + width - 1) if undated.any() else np.r_[start[1:], len(order)]
    latest = dated_end - 1
    n_pre, n_post = first_post - start, latest + 1 - first_post
    earlier = n_post > 1  # exams after the operation other than the latest
    grade = strength["mrc"].to_numpy(dtype=float)[order]  # in key order, as the picks are found
    best_prior = np.zeros(len(keys), dtype=np.int64)
    best_prior[earlier] = _best_between(grade, first_post[earlier], latest[earlier])  # the latest on a tie
    picks = {  # keys that have the pick, and its place in key order
        "baseline": (n_pre > 0, first_post - 1),
        "first_post": (n_post > 0, np.minimum(first_post, len(order) - 1)),
        "best_prior": (earlier, best_prior),
        "latest": (n_post > 0, latest),
    }
    columns = {
        "patient_id": coded_text_column(one_array(patient_ids), patient),
        "muscle": coded_text_column(pa.array(MUSCLES), (keys % 10) // 2),
        "root": coded_text_column(pa.array(ROOTS), (keys % 10) // 2),
        "side": coded_text_column(pa.array(SIDES), keys % 2),
    }
    for name, (has, at) in picks.items():
        columns[f"{name}_mrc"] = np.where(has, grade[at], np.nan)
        columns[f"{name}_date"] = np.where(has, exam_date[order[at]], np.datetime64("NaT"))
    columns["latest_day"] = np.where(n_post > 0, exam_day[order[latest]] - surgery_day, np.nan)

    factor_row = rows_in(patient_ids, factors["patient_id"])[patient]
    rmax_factor, tau_factor = (np.append(m, 1.0)[factor_row] for m in modifier_multipliers(factors, reference))
    curve_group, band = band_arrays(columns["baseline_mrc"], columns["latest_day"], rmax_factor, tau_factor,
                                    reference)
    has_latest = ~np.isnan(columns["latest_mrc"])
    for name, values in band.items():
        columns[name] = np.where(has_latest, values, np.nan)
    columns["curve_group"] = text_column(text_array(reference.groups["id"]), curve_group) if (curve_group >= 0).any() \
        else np.full(len(keys), None)  # as pandas keeps a column of None only
    columns["status"] = coded_text_column(pa.array(_STATUS_CHOICES), _status_codes(columns, reference.status))
    return pd.DataFrame(columns, columns=MUSCLE_COLUMNS, copy=False)


_STATUS_CHOICES = ("insufficient_data", "new_deficit", "deteriorating", "no_baseline", "no_deficit", "recovered",
                   "behind", "on_track")


def _status_codes(rows, thresholds: dict[str, float]) -> np.ndarray:
    """The position in _STATUS_CHOICES of each row's status, in order of clinical priority (first match wins).

    A fall between post-operative exams is `deteriorating` with or without a baseline: `no_baseline` never
    hides deterioration (shared/spec/assessment.md)."""
    normal = thresholds["normal_grade"]
    noise = thresholds["measurement_noise"]
    baseline = np.asarray(rows["baseline_mrc"], dtype=float)
    latest = np.asarray(rows["latest_mrc"], dtype=float)
    best = np.asarray(rows["best_prior_mrc"], dtype=float)
    low = np.asarray(rows["expected_low"], dtype=float)
    with np.errstate(invalid="ignore"):
        baseline_normal = baseline >= normal
        conditions = [
            np.isnan(latest),
            (baseline_normal & (latest < normal - noise))
            | (~baseline_normal & (latest <= baseline - thresholds["marked_drop_from_baseline"])),
            ~np.isnan(best) & (latest <= best - thresholds["deterioration_drop"]),
            np.isnan(baseline),
            baseline_normal,
            latest >= normal - noise,
            latest < low - thresholds["behind_tolerance"],
        ]
    return np.select(conditions, range(len(conditions)), default=len(conditions))


def classify(rows: pd.DataFrame, thresholds: dict[str, float]) -> np.ndarray:
    """The status of each row, in order of clinical priority (first match wins)."""
    return np.asarray(_STATUS_CHOICES)[_status_codes(rows, thresholds)]
