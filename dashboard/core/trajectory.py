"""Trajectory status per muscle and side: is this muscle recovering as expected after the index operation?

Vectorised over the whole cohort: one integer key per patient×muscle×side and group-wise idxmax/idxmin,
never a Python loop over patients. Thresholds come from the reference file (data/reference/).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.core.curves import Reference, expected_band
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


def _row_at(frame: pd.DataFrame, key: str, by: str, how: str, columns: list[str], names: list[str]) -> pd.DataFrame:
    """For each key, the row where `by` is largest (how='max') or smallest (how='min')."""
    if frame.empty:
        return pd.DataFrame(columns=names, index=pd.Index([], name=key))
    grouped = frame.groupby(key, sort=False)[by]
    index = grouped.idxmax() if how == "max" else grouped.idxmin()
    picked = frame.loc[index.to_numpy(), [key, *columns]].set_index(key)
    picked.columns = names
    return picked


def muscle_trajectories(strength: pd.DataFrame, index_ops: pd.DataFrame, factors: pd.DataFrame,
                        reference: Reference) -> pd.DataFrame:
    """One row per patient×muscle×side examined around the index operation, with its status.

    `strength` must already hold only what was known on the assessment day.
    """
    surgery_date = index_ops.set_index("patient_id")["surgery_date"]
    exams = strength[strength["patient_id"].isin(surgery_date.index)]
    if exams.empty:
        return pd.DataFrame({column: pd.Series(dtype=_EMPTY_DTYPES.get(column[-4:], object))
                             for column in MUSCLE_COLUMNS})
    exams = exams.assign(surgery_date=exams["patient_id"].map(surgery_date))
    patient_code, patient_ids = pd.factorize(exams["patient_id"])
    muscle_code = pd.Categorical(exams["muscle"], categories=MUSCLES).codes
    side_code = pd.Categorical(exams["side"], categories=SIDES).codes
    exams = exams.assign(key=patient_code.astype(np.int64) * 10 + muscle_code * 2 + side_code)

    pre = exams[exams["exam_date"] < exams["surgery_date"]]
    post = exams[exams["exam_date"] >= exams["surgery_date"]]
    baseline = _row_at(pre, "key", "exam_date", "max", ["mrc", "exam_date"], ["baseline_mrc", "baseline_date"])
    latest_rows = post.groupby("key", sort=False)["exam_date"].idxmax() if not post.empty else pd.Series(dtype=int)
    latest = _row_at(post, "key", "exam_date", "max", ["mrc", "exam_date"], ["latest_mrc", "latest_date"])
    first = _row_at(post, "key", "exam_date", "min", ["mrc", "exam_date"], ["first_post_mrc", "first_post_date"])
    earlier = post.drop(index=latest_rows.to_numpy())
    best = _row_at(earlier, "key", "mrc", "max", ["mrc", "exam_date"], ["best_prior_mrc", "best_prior_date"])

    keys = np.unique(exams["key"].to_numpy())
    out = pd.DataFrame(index=pd.Index(keys, name="key"))
    out = out.join(baseline).join(first).join(best).join(latest)
    for column in ("baseline", "first_post", "best_prior", "latest"):
        out[f"{column}_mrc"] = out[f"{column}_mrc"].astype(float)
        out[f"{column}_date"] = pd.to_datetime(out[f"{column}_date"])
    out["patient_id"] = patient_ids[(keys // 10)].to_numpy() if len(keys) else []
    out["muscle"] = np.asarray(MUSCLES, dtype=object)[(keys % 10) // 2]
    out["side"] = np.asarray(SIDES, dtype=object)[keys % 2]
    out["root"] = out["muscle"].map(MUSCLE_ROOTS)
    out["latest_day"] = (out["latest_date"] - out["patient_id"].map(surgery_date)).dt.days

    patient_factors = factors.set_index("patient_id").reindex(out["patient_id"])
    band = expected_band(out["baseline_mrc"].to_numpy(dtype=float), out["latest_day"].to_numpy(dtype=float),
                         patient_factors, reference)
    has_latest = out["latest_mrc"].notna().to_numpy()
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
