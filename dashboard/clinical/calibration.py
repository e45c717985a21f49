"""Calibrate the expected recovery curves to a clinic's own follow-ups (`python -m dashboard calibrate`).

Published curves come from other surgeons' patients; a clinic that has followed enough of its own patients
can fit the same model to them and check the result (Kittelson 2020: a reference band is validated by its
coverage, the share of observations below its lower and above its upper centile).

Method, and why:

* Observations. Every post-operative exam belongs to its index operation (the latest operation on or
  before it, records format v1), and its baseline is the latest exam of the same muscle and side before
  that operation. The curve is fitted on the recovered fraction f = (g - b) / (5 - b), where the
  model is linear in Rmax, so all baseline grades of a group share one parameter set.
* Modifiers. The published modifiers are not removed from the data but built into the fitted curve,
  exactly as `expected_band` applies them: f_q(t) = min(Rmax_q * m_R, 1) * (1 - exp(-t / (tau_q * m_tau))).
  The fitted Rmax and tau therefore mean what the published ones mean (a patient without modifiers), and
  the assessment reproduces the fitted band for every patient. The alternative, fitting only patients
  without any modifier, was rejected: older, diabetic and late-operated patients are most of a fusion
  clinic and would be thrown away. The price is that the published multipliers are trusted (their
  confidence is low); the coverage report shows whether they fit the clinic. A patient whose modifier
  factor is unknown cannot be adjusted and is left out (counted in the report).
* Quantile (pinball-loss) regression of that parametric curve at the 50th, 10th and 90th percentiles,
  with scipy.optimize (coarse grid, then Nelder-Mead with bounds). The median is fitted first; the lower
  edge is then fitted with rmax.p10 <= rmax.median and tau.slow >= tau.median, the upper edge with
  rmax.p90 >= rmax.median and tau.fast <= tau.median: the order the reference file requires holds by
  construction. When rmax.p10 is 0 the low edge is flat and tau.slow is not identified (kept at tau.median).
  Each exam counts once (patients with more follow-ups weigh more).
* The MRC scale is coarse (whole grades up to 3, thirds above), and a smooth curve fitted to the rounded
  grades themselves is pulled onto the steps: in simulation the severe group's 10th percentile collapsed
  to "no recovery" and the mild group's median Rmax wandered by 0.1 between samples. So each grade is
  spread evenly over the interval of true grades that round to it (not below the baseline when it was
  graded at or above it: the model never falls below the baseline) before fitting: a deterministic form
  of jittering, the standard device for quantile regression of discrete outcomes (Machado & Santos Silva,
  JASA 2005). Decimal grades off the scale are taken as exact. The curves then mean what the published
  ones mean, the true grade's percentiles, and the assessment's `behind_tolerance` absorbs the rounding.
* Groups with fewer than `min_patients` patients keep the published parameters and say so.
* Coverage: each exam counts the part of its rounding interval beyond the band's edge, which estimates
  the share of true grades below the 10th and above the 90th percentile curve (near 10% each when the band
  fits). Alongside, the share of exams whose recorded grade is beyond the edge rounded to the scale: what
  a clinician sees, and lower on a coarse scale, where the 10th-percentile grade is shared by many exams.
  In-sample coverage uses the assessment's own `expected_band`; held-out coverage scores each fold of
  patients on curves fitted without it; the published band's coverage on the same exams is shown too.
* Coverage as the clinician reads it (`band_coverage`): each exam's recorded grade against the band with its
  edges rounded to the nearest MRC step (as the patient view shows it), counted below, inside and above, per
  group and overall, for the written band and for the published one; in the file (provenance.
  coverage_summary) and in the printout. Tested on a hand-made cohort with known shares.
* Checked on a simulated cohort with known parameters and MRC rounding (tests/clinical/test_calibration.py):
  median Rmax within 0.07 and tau within 22% (seeds 1-7); band edges where the scale resolves them.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import optimize

from dashboard.clinical.curves import (
    PUBLISHED_REFERENCE,
    Reference,
    ReferenceError,
    expected_band,
    group_of,
    load_reference,
    modifier_flags,
    patient_factors,
)
from dashboard.clinical.data_files import read_yaml
from dashboard.clinical.mrc import MRC_MAX, MRC_TOKENS
from dashboard.clinical.records.validate import Records

SOURCE_KEY = "clinic-calibration"
TAU_BOUNDS = (1.0, 3650.0)
QUANTILES = {"median": 0.5, "low": 0.1, "high": 0.9}
OBSERVATION_COLUMNS = ["patient_id", "muscle", "side", "surgery_date", "exam_date", "day", "baseline_mrc", "mrc",
                       "fraction", "curve_group", "rmax_factor", "tau_factor", "age", "diabetes", "deficit_days"]
SCALE = np.array(sorted(MRC_TOKENS.values()))
_CELL_EDGES = np.r_[SCALE[0], (SCALE[1:] + SCALE[:-1]) / 2, SCALE[-1]]  # grades that round to SCALE[k]
SPREAD_POINTS = 4  # points per rounding interval
_GRID_R, _GRID_TAU = 21, 31


class CalibrationError(ValueError):
    """Calibration that cannot produce a usable reference, with the reason in plain words."""


@dataclass(frozen=True)
class Observations:
    """Post-operative exams usable for calibration, and how many muscle-sides were left out and why."""

    rows: pd.DataFrame  # OBSERVATION_COLUMNS, one row per post-operative exam with a group
    left_out: dict[str, int]  # reason -> muscle-sides


@dataclass(frozen=True)
class GroupFit:
    """Fitted curve parameters of one group: the three quantile curves as (rmax, tau) pairs."""

    rmax_p10: float
    rmax_median: float
    rmax_p90: float
    tau_fast: float
    tau_median: float
    tau_slow: float

    def rounded(self) -> GroupFit:
        """As written to the file; rounding is monotone, so the required order survives it."""
        return GroupFit(*(round(float(v), 3) for v in (self.rmax_p10, self.rmax_median, self.rmax_p90)),
                        *(round(float(v), 1) for v in (self.tau_fast, self.tau_median, self.tau_slow)))


# --------------------------------------------------------------------------------------------- observations
def observations(records: Records, reference: Reference, keep_unknown_modifiers: bool = False) -> Observations:
    """Every post-operative exam with a baseline in a reference group, its day, fraction and modifiers.

    With `keep_unknown_modifiers`, exams whose modifier factors are unknown are kept (their band is drawn
    without the unknown modifiers, as the assessment draws it): for coverage as the clinic sees it, not fits.

    Vectorised: exams are matched to operations and baselines with as-of merges, never a loop over rows.
    """
    ops = records.surgeries.loc[records.surgeries["surgery_date"].notna(),
                                ["patient_id", "surgery_date", "deficit_onset_date"]]
    ops = ops.sort_values("surgery_date", kind="stable").reset_index(drop=True)
    ops["episode"] = np.arange(len(ops))
    exams = records.strength.loc[records.strength["exam_date"].notna() & records.strength["mrc"].notna(),
                                 ["patient_id", "exam_date", "muscle", "side", "mrc"]]
    exams = exams.sort_values("exam_date", kind="stable").reset_index(drop=True)

    post = pd.merge_asof(exams, ops[["patient_id", "surgery_date", "episode"]], left_on="exam_date",
                         right_on="surgery_date", by="patient_id", direction="backward")
    post = post[post["episode"].notna()].astype({"episode": np.int64})
    keys = post[["episode", "patient_id", "muscle", "side", "surgery_date"]].drop_duplicates()
    before = exams.rename(columns={"exam_date": "baseline_date", "mrc": "baseline_mrc"})
    baseline = pd.merge_asof(keys.sort_values("surgery_date", kind="stable"), before, left_on="surgery_date",
                             right_on="baseline_date", by=["patient_id", "muscle", "side"], direction="backward",
                             allow_exact_matches=False)
    post = post.merge(baseline[["episode", "muscle", "side", "baseline_mrc"]], on=["episode", "muscle", "side"],
                      how="left")

    factors = patient_factors(records.patients, ops).set_index(ops["episode"])
    flags = modifier_flags(factors.reset_index(drop=True), reference).set_index(ops["episode"])
    effective = reference.modifiers[(reference.modifiers["rmax_factor"] != 1)
                                    | (reference.modifiers["tau_factor"] != 1)]
    unknown = flags[list(effective["id"])].isna().any(axis=1) if len(effective) else \
        pd.Series(False, index=flags.index)
    rmax_factor = np.ones(len(flags))
    tau_factor = np.ones(len(flags))
    for modifier in reference.modifiers.itertuples():
        applies = flags[modifier.id].fillna(False).to_numpy(dtype=bool)
        rmax_factor = np.where(applies, rmax_factor * modifier.rmax_factor, rmax_factor)
        tau_factor = np.where(applies, tau_factor * modifier.tau_factor, tau_factor)

    side_key = ["episode", "muscle", "side"]
    no_baseline = post["baseline_mrc"].isna().to_numpy()
    groups = group_of(np.nan_to_num(post["baseline_mrc"].to_numpy(dtype=float), nan=-1), reference)
    no_group = ~no_baseline & (groups == "")
    unknown_rows = ~no_baseline & ~no_group & unknown.reindex(post["episode"]).to_numpy(dtype=bool)
    if keep_unknown_modifiers:
        unknown_rows = np.zeros(len(post), dtype=bool)
    left_out = {
        "no pre-operative exam (no baseline)": _count_sides(post[no_baseline], side_key),
        "baseline outside every group (normal strength)": _count_sides(post[no_group], side_key),
        "unknown modifier factor (" + ", ".join(sorted(set(effective["factor"]))) + ")":
            _count_sides(post[unknown_rows], side_key),
    }
    keep = ~no_baseline & ~no_group & ~unknown_rows
    rows = post[keep].copy()
    rows["curve_group"] = groups[keep]
    rows["day"] = (rows["exam_date"] - rows["surgery_date"]).dt.days.astype(float)
    rows["baseline_mrc"] = rows["baseline_mrc"].astype(float)
    rows["mrc"] = rows["mrc"].astype(float)
    rows["fraction"] = (rows["mrc"] - rows["baseline_mrc"]) / (MRC_MAX - rows["baseline_mrc"])
    position = pd.Index(ops["episode"]).get_indexer(rows["episode"])
    rows["rmax_factor"] = rmax_factor[position]
    rows["tau_factor"] = tau_factor[position]
    for name in ("age", "diabetes", "deficit_days"):
        rows[name] = factors[name].to_numpy()[position]
    return Observations(rows[OBSERVATION_COLUMNS].reset_index(drop=True), left_out)


def _count_sides(frame: pd.DataFrame, key: list[str]) -> int:
    return int(len(frame[key].drop_duplicates()))


# -------------------------------------------------------------------------------------------------- fitting
def _curve(rmax: np.ndarray | float, tau: np.ndarray | float, day: np.ndarray, rmax_factor: np.ndarray,
           tau_factor: np.ndarray) -> np.ndarray:
    """The recovered fraction of the model, with modifiers applied as in `expected_band`."""
    return np.minimum(rmax * rmax_factor, 1.0) * (1 - np.exp(-day / (tau * tau_factor)))


def _pinball_loss(residual: np.ndarray, q: float, axis: int | None = None) -> np.ndarray | float:
    """Mean pinball (quantile) loss: q * r above the curve, (q - 1) * r below it."""
    return q * residual.mean(axis=axis) - np.minimum(residual, 0).mean(axis=axis)


def fit_quantile_curve(day: np.ndarray, fraction: np.ndarray, rmax_factor: np.ndarray, tau_factor: np.ndarray,
                       q: float, rmax_bounds: tuple[float, float] = (0.0, 1.0),
                       tau_bounds: tuple[float, float] = TAU_BOUNDS,
                       start: tuple[float, float] | None = None) -> tuple[float, float]:
    """(rmax, tau) of the model curve minimising the pinball loss at quantile q, within the bounds.

    The loss is piecewise linear, so a coarse grid finds the basin (skipped when a `start` is given, e.g. a
    fit to similar data) and bounded Nelder-Mead refines it; both are vectorised over the exams.
    """
    day, fraction = np.asarray(day, float), np.asarray(fraction, float)
    rmax_factor, tau_factor = np.asarray(rmax_factor, float), np.asarray(tau_factor, float)
    bounds = np.array([rmax_bounds, np.log(tau_bounds)], dtype=float)

    def loss(x: np.ndarray) -> float:
        return float(_pinball_loss(fraction - _curve(x[0], np.exp(x[1]), day, rmax_factor, tau_factor), q))

    if start is None:
        r_grid = np.linspace(*bounds[0], _GRID_R)
        t_grid = np.linspace(*bounds[1], _GRID_TAU)
        capped = np.minimum(r_grid[:, None] * rmax_factor[None, :], 1.0)  # (R grid, exams)
        losses = np.empty((len(t_grid), len(r_grid)))
        for i, log_tau in enumerate(t_grid):  # a loop over grid points; each step is vectorised over exams
            rise = 1 - np.exp(-day / (np.exp(log_tau) * tau_factor))
            losses[i] = _pinball_loss(fraction[None, :] - capped * rise[None, :], q, axis=1)
        i, j = np.unravel_index(np.argmin(losses), losses.shape)
        best = np.array([r_grid[j], t_grid[i]])
    else:
        best = np.clip([start[0], np.log(start[1])], bounds[:, 0], bounds[:, 1])
    steps = np.minimum(np.diff(bounds, axis=1).ravel() / (np.array([_GRID_R, _GRID_TAU]) - 1), [0.04, 0.25])

    free = np.flatnonzero(np.diff(bounds, axis=1).ravel() > 1e-12)  # a parameter pinned by its bounds stays
    if len(free):
        simplex = [best[free]]
        for n, k in enumerate(free):
            vertex = best[free].copy()
            vertex[n] += steps[k] if vertex[n] + steps[k] <= bounds[k, 1] else -steps[k]
            simplex.append(vertex)

        def objective(x: np.ndarray) -> float:
            full = best.copy()
            full[free] = x
            return loss(full)

        result = optimize.minimize(objective, best[free], method="Nelder-Mead", bounds=bounds[free],
                                   options={"initial_simplex": np.array(simplex), "xatol": 1e-4, "fatol": 1e-10})
        if result.fun <= objective(best[free]):
            best[free] = np.clip(result.x, bounds[free, 0], bounds[free, 1])
    return float(best[0]), float(np.exp(best[1]))


def fit_group(day: np.ndarray, fraction: np.ndarray, rmax_factor: np.ndarray, tau_factor: np.ndarray,
              start: GroupFit | None = None) -> GroupFit:
    """Median curve first, then the band edges constrained around it (p10 <= median <= p90, fast <= slow)."""
    args = (day, fraction, rmax_factor, tau_factor)
    rmax_median, tau_median = fit_quantile_curve(
        *args, QUANTILES["median"], start=start and (start.rmax_median, start.tau_median))
    rmax_p10, tau_slow = fit_quantile_curve(
        *args, QUANTILES["low"], rmax_bounds=(0.0, rmax_median), tau_bounds=(tau_median, TAU_BOUNDS[1]),
        start=start and (start.rmax_p10, start.tau_slow))
    rmax_p90, tau_fast = fit_quantile_curve(
        *args, QUANTILES["high"], rmax_bounds=(rmax_median, 1.0), tau_bounds=(TAU_BOUNDS[0], tau_median),
        start=start and (start.rmax_p90, start.tau_fast))
    return GroupFit(rmax_p10, rmax_median, rmax_p90, tau_fast, tau_median, tau_slow)


def on_scale(grade: np.ndarray) -> np.ndarray:
    """Which grades are points of the MRC scale (decimals in between are taken as measured exactly)."""
    grade = np.asarray(grade, float)
    return np.isclose(grade[:, None], SCALE[None, :], atol=1e-6).any(axis=1)


def to_scale(grade: np.ndarray) -> np.ndarray:
    """The nearest grade of the MRC scale: what a clinician would record for a true grade."""
    return SCALE[np.clip(np.searchsorted(_CELL_EDGES[1:-1], np.asarray(grade, float)), 0, len(SCALE) - 1)]


def rounding_interval(grade: np.ndarray, baseline: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The true grades that a recorded grade stands for: those that round to it on the MRC scale.

    A grade at or above the baseline is not taken below it (the model never falls below the baseline);
    decimal grades off the scale are taken as exact (an empty interval).
    """
    grade, baseline = np.asarray(grade, float), np.asarray(baseline, float)
    cell = np.abs(grade[:, None] - SCALE[None, :]).argmin(axis=1)
    low, high = _CELL_EDGES[cell], _CELL_EDGES[cell + 1]
    low = np.where(grade >= baseline, np.maximum(low, np.minimum(baseline, grade)), low)
    exact = ~on_scale(grade)
    return np.where(exact, grade, low), np.where(exact, grade, high)


def spread_on_scale(grade: np.ndarray, baseline: np.ndarray, points: int = SPREAD_POINTS) -> np.ndarray:
    """Each grade spread evenly over its rounding interval: one row per exam, `points` columns."""
    low, high = rounding_interval(grade, baseline)
    position = (np.arange(points) + 0.5) / points
    return low[:, None] + (high - low)[:, None] * position[None, :]


def fit_exams(rows: pd.DataFrame, points: int = SPREAD_POINTS, start: GroupFit | None = None) -> GroupFit:
    """Fit one group's curves to its exams (OBSERVATION_COLUMNS), each grade spread over its rounding interval."""
    baseline = rows["baseline_mrc"].to_numpy(float)
    spread = spread_on_scale(rows["mrc"].to_numpy(float), baseline, points)
    fraction = ((spread - baseline[:, None]) / (MRC_MAX - baseline[:, None])).ravel()
    day, rmax_factor, tau_factor = (np.repeat(rows[n].to_numpy(float), points)
                                    for n in ("day", "rmax_factor", "tau_factor"))
    return fit_group(day, fraction, rmax_factor, tau_factor, start=start)


def _outside(grade: np.ndarray, baseline: np.ndarray, low: np.ndarray, high: np.ndarray) -> dict[str, float]:
    """Coverage of a band: the shares of exams below its low and above its high edge.

    `below_low`/`above_high` estimate the share of true grades outside (each exam counts the part of its
    rounding interval beyond the edge): the number that should be near 10%. `graded_below_low`/
    `graded_above_high` count exams whose recorded grade is beyond the edge rounded to the scale: what a
    clinician sees, and on a coarse scale lower, since the 10th-percentile grade is shared by many exams.
    """
    if not len(grade):
        return {}
    lo, hi = rounding_interval(grade, baseline)
    width = hi - lo
    with np.errstate(divide="ignore", invalid="ignore"):
        below = np.where(width > 0, np.clip((low - lo) / width, 0, 1), grade < low - 1e-9)
        above = np.where(width > 0, np.clip((hi - high) / width, 0, 1), grade > high + 1e-9)
    graded = on_scale(grade)
    low, high = np.where(graded, to_scale(low), low), np.where(graded, to_scale(high), high)
    return {"below_low": float(below.mean()), "above_high": float(above.mean()),
            "graded_below_low": float(np.mean(grade < low - 1e-6)),
            "graded_above_high": float(np.mean(grade > high + 1e-6))}


def _held_out_coverage(rows: pd.DataFrame, full: GroupFit, folds: int, seed: int = 0) -> dict[str, float] | None:
    """Coverage on patients left out of the fit: each fold scored on curves fitted to the others.

    Each refit starts from the fit to all patients (`full`), which it only has to adjust.
    """
    codes, uniques = pd.factorize(rows["patient_id"])
    if folds < 2 or len(uniques) < 2 * folds:
        return None
    fold = (np.random.default_rng(seed).permutation(len(uniques)) % folds)[codes]
    day, rmax_factor, tau_factor = (rows[n].to_numpy(float) for n in ("day", "rmax_factor", "tau_factor"))
    baseline = rows["baseline_mrc"].to_numpy(float)
    room = MRC_MAX - baseline
    low, high = np.empty(len(rows)), np.empty(len(rows))
    for k in range(folds):  # a loop over folds; each fit is vectorised over exams
        test = fold == k
        fit = fit_exams(rows[~test], start=full).rounded()
        args = (day[test], rmax_factor[test], tau_factor[test])
        low[test] = baseline[test] + room[test] * _curve(fit.rmax_p10, fit.tau_slow, *args)
        high[test] = baseline[test] + room[test] * _curve(fit.rmax_p90, fit.tau_fast, *args)
    return _outside(rows["mrc"].to_numpy(float), baseline, low, high)


def _coverage(rows: pd.DataFrame, reference: Reference) -> dict[str, dict[str, float]]:
    """Per group, coverage of the band exactly as the assessment draws it (`expected_band`)."""
    if rows.empty:
        return {}
    band = expected_band(rows["baseline_mrc"].to_numpy(), rows["day"].to_numpy(),
                         rows[["age", "diabetes", "deficit_days"]].reset_index(drop=True), reference)
    grade, baseline = rows["mrc"].to_numpy(float), rows["baseline_mrc"].to_numpy(float)
    low, high = band["expected_low"].to_numpy(), band["expected_high"].to_numpy()
    groups = rows["curve_group"].to_numpy()
    return {group: _outside(grade[at], baseline[at], low[at], high[at])
            for group in np.unique(groups) for at in [groups == group]}


def band_positions(rows: pd.DataFrame, reference: Reference) -> np.ndarray:
    """Where each exam of `rows` (observations) falls against its band as the patient view shows it: 'below',
    'inside' or 'above' (edges rounded to the nearest MRC step for grades on the scale; modifiers applied)."""
    band = expected_band(rows["baseline_mrc"].to_numpy(), rows["day"].to_numpy(),
                         rows[["age", "diabetes", "deficit_days"]].reset_index(drop=True), reference)
    grade = rows["mrc"].to_numpy(float)
    graded = on_scale(grade)
    low, high = band["expected_low"].to_numpy(float), band["expected_high"].to_numpy(float)
    low, high = np.where(graded, to_scale(low), low), np.where(graded, to_scale(high), high)
    return np.select([grade < low - 1e-6, grade > high + 1e-6], ["below", "above"], "inside")


COVERAGE_COLUMNS = ["group", "patients", "muscle_sides", "exams", "below", "inside", "above", "share_below",
                    "share_inside", "share_above"]


def band_coverage(rows: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Where the clinic's own exams fall against a band, as the clinician reads it: per group and overall.

    `rows` are `observations(...).rows` (post-operative exams with a baseline in a group, modifiers known).
    Each exam is compared with the band `expected_band` draws for it (modifiers applied), its edges rounded to
    the nearest MRC step as the patient view shows them ("4- to 4+"): below the lower edge, inside, or above
    the upper edge. Counts and shares of exams, with the patients and muscle-sides behind them; the last row
    ('all') pools the groups. An exact share per exam, no rounding interval: what a clinic sees.
    """
    if rows.empty:
        return pd.DataFrame(columns=COVERAGE_COLUMNS)
    where = band_positions(rows, reference)
    frame = rows.assign(_where=where, _side=rows["patient_id"].astype(str) + "|" + rows["muscle"].astype(str)
                        + "|" + rows["side"].astype(str))
    out = []
    groups = [g for g in reference.groups["id"] if (frame["curve_group"] == g).any()]
    for name, part in [*((g, frame[frame["curve_group"] == g]) for g in groups), ("all", frame)]:
        counts = part["_where"].value_counts()
        n = len(part)
        entry = {"group": name, "patients": int(part["patient_id"].nunique()),
                 "muscle_sides": int(part["_side"].nunique()), "exams": n}
        for side in ("below", "inside", "above"):
            entry[side] = int(counts.get(side, 0))
            entry[f"share_{side}"] = entry[side] / n
        out.append(entry)
    return pd.DataFrame(out, columns=COVERAGE_COLUMNS)


def _coverage_lines(title: str, table: pd.DataFrame) -> list[str]:
    shown = pd.DataFrame({
        "group": table["group"], "patients": table["patients"], "muscle-sides": table["muscle_sides"],
        "exams": table["exams"],
        **{side: [f"{n} ({100 * s:.1f}%)" for n, s in zip(table[side], table[f"share_{side}"], strict=True)]
           for side in ("below", "inside", "above")},
    })
    return [title, shown.to_string(index=False)]


def _coverage_summary(table: pd.DataFrame) -> dict:
    return {row["group"]: {"patients": int(row["patients"]), "muscle_sides": int(row["muscle_sides"]),
                           "exams": int(row["exams"]), "below": int(row["below"]), "inside": int(row["inside"]),
                           "above": int(row["above"]), "share_below": round(float(row["share_below"]), 3),
                           "share_inside": round(float(row["share_inside"]), 3),
                           "share_above": round(float(row["share_above"]), 3)}
            for _, row in table.iterrows()}


# ------------------------------------------------------------------------------------------------- the file
def calibrate_reference(records: Records, out_path: str | Path, source_name: str = "records",
                        min_patients: int = 30, base: str | Path | None = None, created: date | None = None,
                        folds: int = 5) -> str:
    """Fit each baseline group to the clinic's records and write a calibrated reference file.

    Groups with fewer than `min_patients` patients keep the base (published) parameters and are marked so.
    Returns a printable report; raises CalibrationError when no group can be fitted or the result would not
    load. The file is written only after it has passed `load_reference`.
    """
    if min_patients < 1:
        raise CalibrationError(f"min_patients must be at least 1, found {min_patients}")
    base_path = Path(base or PUBLISHED_REFERENCE)
    try:
        reference = load_reference(base_path)
    except ReferenceError as problem:
        raise CalibrationError(f"the base reference cannot be used: {problem}") from problem
    raw = read_yaml(base_path.read_text(encoding="utf-8"))
    created = created or date.today()
    data = observations(records, reference)
    rows = data.rows

    summary: list[dict] = []
    fitted: dict[str, GroupFit] = {}
    for group in reference.groups.itertuples():  # a loop over groups; each fit is vectorised over exams
        in_group = rows[rows["curve_group"] == group.id]
        entry = {"id": group.id, "n_patients": int(in_group["patient_id"].nunique()), "n_exams": len(in_group),
                 "held_out": None}
        if entry["n_patients"] < min_patients:
            entry["provenance"] = f"published (too few patients: {entry['n_patients']} < {min_patients})"
        else:
            fitted[group.id] = fit_exams(in_group).rounded()
            entry["provenance"] = f"fitted ({entry['n_patients']} patients, {entry['n_exams']} exams)"
            entry["held_out"] = _held_out_coverage(in_group, fitted[group.id], folds)
        summary.append(entry)
    if not fitted:
        counts = ", ".join(f"{e['id']} {e['n_patients']}" for e in summary)
        left = "; ".join(f"{n} {why}" for why, n in data.left_out.items() if n)
        raise CalibrationError(
            f"no group can be fitted: every group has fewer than {min_patients} patients with a baseline and "
            f"post-operative exams (patients per group: {counts})"
            + (f"; muscle-sides left out: {left}" if left else ""))

    calibrated = _calibrated_reference(reference, fitted)
    coverage = _coverage(rows, calibrated)
    published = _coverage(rows, reference)
    graded = {"calibrated": band_coverage(rows, calibrated), "published": band_coverage(rows, reference)}
    for entry in summary:
        entry["coverage"] = coverage.get(entry["id"], {})
        entry["published"] = published.get(entry["id"], {})
    reference_id = _reference_id(source_name, created, fitted, summary)
    document = _document(raw, reference, fitted, summary, data.left_out, reference_id=reference_id,
                         source_name=source_name, created=created, min_patients=min_patients, folds=folds)
    document["provenance"]["coverage_summary"] = {
        "what": ("post-operative exams of the clinic's own patients against the band as shown (edges rounded to "
                 "the nearest MRC step, modifiers applied): counts and shares below, inside and above, per group "
                 "and overall ('all'); 'calibrated' is this file's band, 'published' the band it was based on"),
        **{name: _coverage_summary(table) for name, table in graded.items()}}

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(f".{out_path.name}.tmp")
    temporary.write_text(_HEADER + yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                                             width=110), encoding="utf-8")
    try:
        load_reference(temporary)
    except ReferenceError as problem:
        temporary.unlink(missing_ok=True)
        raise CalibrationError(f"the calibrated reference would not load: {problem}") from problem
    os.replace(temporary, out_path)
    return _report(out_path, reference_id, source_name, summary, fitted, reference, data.left_out, graded)


class _Dumper(yaml.SafeDumper):
    """Safe YAML without anchors and aliases: the file is read by people as well as by `load_reference`."""

    def ignore_aliases(self, data) -> bool:
        return True


_HEADER = ("# Calibrated motor-recovery reference, written by `python -m dashboard calibrate`.\n"
           "# Same model and structure as published.yaml: g(t) = b + (5 - b) * Rmax * (1 - exp(-t / tau));\n"
           "# band low edge = rmax.p10 with tau.slow, high edge = rmax.p90 with tau.fast; modifiers as published.\n"
           "# provenance.groups.*.coverage: estimated shares of the clinic's grades outside the band (near 0.10).\n")


def _calibrated_reference(reference: Reference, fitted: dict[str, GroupFit]) -> Reference:
    groups = reference.groups.copy()
    for group_id, fit in fitted.items():
        at = groups["id"] == group_id
        for name, value in vars(fit).items():
            groups.loc[at, name] = value
    return replace(reference, groups=groups)


def _reference_id(source_name: str, created: date, fitted: dict[str, GroupFit], summary: list[dict]) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", source_name.lower()).strip("-") or "records"
    digest = hashlib.sha1(repr((sorted((k, vars(v)) for k, v in fitted.items()),
                                [(e["id"], e["n_patients"], e["n_exams"]) for e in summary])).encode())
    return f"calibrated-{slug}-{created.isoformat()}-{digest.hexdigest()[:8]}"


def _rounded(shares: dict[str, float] | None) -> dict[str, float] | None:
    return None if not shares else {k: round(v, 3) for k, v in shares.items()}


def _document(raw: dict, reference: Reference, fitted: dict[str, GroupFit], summary: list[dict],
              left_out: dict[str, int], *, reference_id: str, source_name: str, created: date, min_patients: int,
              folds: int) -> dict:
    """The calibrated reference as a YAML document with the structure of the published file."""
    by_id = {e["id"]: e for e in summary}
    groups = []
    for group in raw["groups"]:
        entry = by_id[group["id"]]
        out = {k: v for k, v in group.items()
               if k not in ("rmax", "tau_days", "basis", "evidence", "sources", "n_patients", "note")}
        fit = fitted.get(group["id"])
        if fit is None:
            out.update(rmax=group["rmax"], tau_days=group["tau_days"], sources=group["sources"])
            for key in ("basis", "evidence"):
                if key in group:
                    out[key] = group[key]
            if "note" in group:
                out["note"] = group["note"]
        else:
            cover = entry["coverage"]
            out.update(
                rmax={"p10": fit.rmax_p10, "median": fit.rmax_median, "p90": fit.rmax_p90},
                tau_days={"fast": fit.tau_fast, "median": fit.tau_median, "slow": fit.tau_slow},
                n_patients=entry["n_patients"],
                sources=[{"key": SOURCE_KEY, "figure": (
                    f"Quantile regression on {entry['n_patients']} patients, {entry['n_exams']} post-operative "
                    f"exams; an estimated {_percent(cover.get('below_low'))} of true grades below the low and "
                    f"{_percent(cover.get('above_high'))} above the high edge (target 10% each)")}],
                confidence="clinic",
                evidence=(f"Fitted to {entry['n_patients']} of the clinic's own patients ({source_name}); see the "
                          "coverage in this file's provenance."),
                note=f"Calibrated from {source_name}; baseline range and modifiers as in {reference.reference_id}.",
            )
        out["provenance"] = entry["provenance"]
        groups.append(out)

    sources = dict(raw["sources"])
    sources[SOURCE_KEY] = {"citation": (
        f"Calibration to the clinic's own follow-up records '{source_name}' on {created.isoformat()}: "
        f"pinball-loss quantile regression (10th, 50th, 90th percentile) of the published curve model on the "
        f"recovered fraction of every post-operative exam, published modifiers ({reference.reference_id}) "
        f"built into the curve; groups with fewer than {min_patients} patients keep the published "
        f"parameters.")}
    return {
        "reference_id": reference_id,
        "title": f"Calibrated motor-recovery reference ({source_name}, {created.isoformat()})",
        "kind": "calibrated",
        "created": created,
        "based_on": reference.reference_id,
        "band": {
            "label": ("10th–90th percentile fitted to the clinic's patients (groups marked 'published' keep "
                      "the published expected range)"),
            "evidence": (f"Quantile regression on {source_name}; coverage of the band on the same patients is in "
                         "provenance.coverage_summary and per group."),
            "low_percentile": 10, "high_percentile": 90,
        },
        "provenance": {
            "source_records": source_name,
            "created": created,
            "method": ("quantile (pinball-loss) regression of f(t) = min(Rmax * m_R, 1) * (1 - exp(-t / (tau * "
                       "m_tau))) on (day since the index operation, recovered fraction (g - b) / (5 - b)) of every "
                       "post-operative exam, per baseline group: median first, then the band edges constrained "
                       "around it; scipy.optimize grid + bounded Nelder-Mead. Published modifiers (m_R, m_tau) "
                       "are built into the curve; muscle-sides with an unknown modifier factor are left out."),
            "based_on": reference.reference_id,
            "min_patients": min_patients,
            "coverage": ("below_low / above_high: estimated share of true grades beyond the band's edges (each "
                         "exam counts the part of its rounding interval beyond the edge; near 0.10 each is good); "
                         "graded_*: share of exams whose recorded grade is beyond the edge rounded to the MRC "
                         f"scale. In-sample, held out (patients split into {folds} folds, each scored on curves "
                         "fitted without it) and for the published band on the same exams."),
            "muscle_sides_left_out": dict(left_out),
            "groups": {e["id"]: {
                "parameters": "fitted" if e["id"] in fitted else "published",
                "warnings": fit_warnings(fitted[e["id"]]) if e["id"] in fitted else [],
                "n_patients": e["n_patients"],
                "n_exams": e["n_exams"],
                "coverage": _rounded(e["coverage"]),
                "held_out_coverage": _rounded(e["held_out"]),
                "published_coverage": _rounded(e["published"]),
            } for e in summary},
        },
        "groups": groups,
        "modifiers": raw["modifiers"],
        "status": raw["status"],
        "sources": sources,
    }


def fit_warnings(fit: GroupFit) -> list[str]:
    """Parameters that ended on a bound: the data did not pin them down (few or inconsistent exams)."""
    checks = [
        (fit.tau_fast <= TAU_BOUNDS[0], f"tau.fast at its lower bound ({TAU_BOUNDS[0]:g} day)"),
        (fit.tau_slow >= TAU_BOUNDS[1], f"tau.slow at its upper bound ({TAU_BOUNDS[1]:g} days)"),
        (fit.tau_fast == fit.tau_median, "tau.fast equals tau.median"),
        (fit.rmax_p10 > 0 and fit.tau_slow == fit.tau_median, "tau.slow equals tau.median"),
        (fit.rmax_median in (0.0, 1.0), f"rmax.median at {fit.rmax_median:g}"),
    ]
    return [text for hit, text in checks if hit]


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.1f}%"


def _low_high(shares: dict[str, float] | None) -> str:
    if not shares:
        return "—"
    return f"{_percent(shares['below_low'])} / {_percent(shares['above_high'])}"


def _report(out_path: Path, reference_id: str, source_name: str, summary: list[dict], fitted: dict[str, GroupFit],
            reference: Reference, left_out: dict[str, int], graded: dict[str, pd.DataFrame] | None = None) -> str:
    params = reference.groups.set_index("id")
    table = []
    for entry in summary:
        group_id = entry["id"]
        p = vars(fitted[group_id]) if group_id in fitted else params.loc[group_id]
        cover = entry["coverage"]
        table.append({
            "group": group_id,
            "patients": entry["n_patients"],
            "exams": entry["n_exams"],
            "rmax p10/med/p90": f"{p['rmax_p10']:.2f}/{p['rmax_median']:.2f}/{p['rmax_p90']:.2f}",
            "tau fast/med/slow": f"{p['tau_fast']:.0f}/{p['tau_median']:.0f}/{p['tau_slow']:.0f}",
            "<low / >high": _low_high(cover),
            "as graded": "—" if not cover else
            f"({_percent(cover['graded_below_low'])} / {_percent(cover['graded_above_high'])})",
            "held out": _low_high(entry["held_out"]),
            "published band": _low_high(entry["published"]),
            "parameters": entry["provenance"],
        })
    lines = [f"wrote {out_path} ({reference_id}) from {source_name}", "",
             pd.DataFrame(table).to_string(index=False), "",
             "coverage: estimated share of true grades below the band's 10th / above its 90th percentile curve "
             "(near 10% each is good; each exam counts the part of its rounding interval beyond the edge); in "
             "brackets, exams graded beyond the edge rounded to the MRC scale (lower on a coarse scale)"]
    for name, title in (("calibrated", "coverage of this file's band on the clinic's own exams (recorded grade "
                                        "against the band in MRC steps):"),
                        ("published", f"the same for the published band ({reference.reference_id}):")):
        if graded and not graded[name].empty:
            lines += ["", *_coverage_lines(title, graded[name])]
    left = [f"  {n} {why}" for why, n in left_out.items() if n]
    if left:
        lines += ["muscle-sides left out:", *left]
    warnings = [f"  {group_id}: {'; '.join(fit_warnings(fit))}" for group_id, fit in fitted.items()
                if fit_warnings(fit)]
    if warnings:
        lines += ["check before use (parameters on a bound are not determined by the data):", *warnings]
    return "\n".join(lines)
