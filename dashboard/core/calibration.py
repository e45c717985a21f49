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
  construction. Grades are rounded to the MRC scale; rounding is monotone, so it moves quantiles only
  by the rounding. Each exam counts once (patients with more follow-ups weigh more).
* Groups with fewer than `min_patients` patients keep the published parameters and say so.
* Coverage is reported in-sample (with the assessment's own `expected_band`) and held out (patients
  split into folds; each fold scored on curves fitted without it), next to the published band's coverage.
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

from dashboard.core.curves import (
    PUBLISHED_REFERENCE,
    Reference,
    ReferenceError,
    expected_band,
    group_of,
    load_reference,
    modifier_flags,
    patient_factors,
)
from dashboard.core.grades import MRC_MAX
from dashboard.core.records import Records

SOURCE_KEY = "clinic-calibration"
TAU_BOUNDS = (1.0, 3650.0)
QUANTILES = {"median": 0.5, "low": 0.1, "high": 0.9}
OBSERVATION_COLUMNS = ["patient_id", "muscle", "side", "surgery_date", "exam_date", "day", "baseline_mrc", "mrc",
                       "fraction", "curve_group", "rmax_factor", "tau_factor", "age", "diabetes", "deficit_days"]
_GRID_R, _GRID_TAU = 26, 41


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
def observations(records: Records, reference: Reference) -> Observations:
    """Every post-operative exam with a baseline in a reference group, its day, fraction and modifiers.

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


def _pinball(residual: np.ndarray, q: float) -> np.ndarray:
    return np.maximum(q * residual, (q - 1) * residual)


def fit_quantile_curve(day: np.ndarray, fraction: np.ndarray, rmax_factor: np.ndarray, tau_factor: np.ndarray,
                       q: float, rmax_bounds: tuple[float, float] = (0.0, 1.0),
                       tau_bounds: tuple[float, float] = TAU_BOUNDS) -> tuple[float, float]:
    """(rmax, tau) of the model curve minimising the pinball loss at quantile q, within the bounds.

    The loss is piecewise linear (grades are discrete), so a coarse grid finds the basin and bounded
    Nelder-Mead refines it; both are vectorised over the exams.
    """
    day, fraction = np.asarray(day, float), np.asarray(fraction, float)
    rmax_factor, tau_factor = np.asarray(rmax_factor, float), np.asarray(tau_factor, float)
    r_lo, r_hi = rmax_bounds
    t_lo, t_hi = np.log(tau_bounds[0]), np.log(tau_bounds[1])

    def loss(rmax: float, log_tau: float) -> float:
        predicted = _curve(rmax, np.exp(log_tau), day, rmax_factor, tau_factor)
        return float(_pinball(fraction - predicted, q).mean())

    r_grid = np.linspace(r_lo, r_hi, _GRID_R if r_hi > r_lo else 1)
    t_grid = np.linspace(t_lo, t_hi, _GRID_TAU if t_hi > t_lo else 1)
    losses = np.empty((len(t_grid), len(r_grid)))
    for i, log_tau in enumerate(t_grid):  # a loop over grid points; each step is vectorised over exams
        predicted = _curve(r_grid[:, None], np.exp(log_tau), day[None, :], rmax_factor[None, :],
                           tau_factor[None, :])
        losses[i] = _pinball(fraction[None, :] - predicted, q).mean(axis=1)
    i, j = np.unravel_index(np.argmin(losses), losses.shape)
    best = np.array([r_grid[j], t_grid[i]])

    free = [k for k, (lo, hi) in enumerate(((r_lo, r_hi), (t_lo, t_hi))) if hi - lo > 1e-12]
    if free:
        bounds = [((r_lo, r_hi), (t_lo, t_hi))[k] for k in free]
        steps = [(r_grid[1] - r_grid[0]) if k == 0 else (t_grid[1] - t_grid[0]) for k in free]
        start = best[free]
        simplex = [start]
        for n, (step, (_lo, hi)) in enumerate(zip(steps, bounds, strict=True)):
            vertex = start.copy()
            vertex[n] = vertex[n] + step if vertex[n] + step <= hi else vertex[n] - step
            simplex.append(vertex)

        def objective(x: np.ndarray) -> float:
            full = best.copy()
            full[free] = x
            return loss(full[0], full[1])

        result = optimize.minimize(objective, start, method="Nelder-Mead", bounds=bounds,
                                   options={"initial_simplex": np.array(simplex), "xatol": 1e-4, "fatol": 1e-10})
        if result.fun <= objective(start):
            best[free] = np.clip(result.x, [b[0] for b in bounds], [b[1] for b in bounds])
    return float(best[0]), float(np.exp(best[1]))


def fit_group(day: np.ndarray, fraction: np.ndarray, rmax_factor: np.ndarray, tau_factor: np.ndarray) -> GroupFit:
    """Median curve first, then the band edges constrained around it (p10 <= median <= p90, fast <= slow)."""
    args = (day, fraction, rmax_factor, tau_factor)
    rmax_median, tau_median = fit_quantile_curve(*args, QUANTILES["median"])
    rmax_p10, tau_slow = fit_quantile_curve(*args, QUANTILES["low"], rmax_bounds=(0.0, rmax_median),
                                            tau_bounds=(tau_median, TAU_BOUNDS[1]))
    rmax_p90, tau_fast = fit_quantile_curve(*args, QUANTILES["high"], rmax_bounds=(rmax_median, 1.0),
                                            tau_bounds=(TAU_BOUNDS[0], tau_median))
    return GroupFit(rmax_p10, rmax_median, rmax_p90, tau_fast, tau_median, tau_slow)


def _held_out_coverage(rows: pd.DataFrame, folds: int, seed: int = 0) -> tuple[float, float] | None:
    """Share below the low and above the high edge, each fold scored on curves fitted without it."""
    codes, uniques = pd.factorize(rows["patient_id"])
    if folds < 2 or len(uniques) < 2 * folds:
        return None
    fold_of_patient = np.random.default_rng(seed).permutation(len(uniques)) % folds
    fold = fold_of_patient[codes]
    data = {name: rows[name].to_numpy(dtype=float) for name in ("day", "fraction", "rmax_factor", "tau_factor")}
    below = above = 0
    for k in range(folds):
        train, test = fold != k, fold == k
        fit = fit_group(*(data[n][train] for n in ("day", "fraction", "rmax_factor", "tau_factor"))).rounded()
        args = (data["day"][test], data["rmax_factor"][test], data["tau_factor"][test])
        low = _curve(fit.rmax_p10, fit.tau_slow, *args)
        high = _curve(fit.rmax_p90, fit.tau_fast, *args)
        below += int((data["fraction"][test] < low - 1e-9).sum())
        above += int((data["fraction"][test] > high + 1e-9).sum())
    return below / len(rows), above / len(rows)


def _coverage(rows: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Per group: share of exams below the band's low edge and above its high edge, by `expected_band`."""
    band = expected_band(rows["baseline_mrc"].to_numpy(), rows["day"].to_numpy(),
                         rows[["age", "diabetes", "deficit_days"]].reset_index(drop=True), reference)
    grade = rows["mrc"].to_numpy(dtype=float)
    frame = pd.DataFrame({"group": rows["curve_group"].to_numpy(),
                          "below": grade < band["expected_low"].to_numpy() - 1e-9,
                          "above": grade > band["expected_high"].to_numpy() + 1e-9})
    return frame.groupby("group")[["below", "above"]].mean()


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
    raw = yaml.safe_load(base_path.read_text(encoding="utf-8"))
    created = created or date.today()
    data = observations(records, reference)
    rows = data.rows

    summary = []
    fitted: dict[str, GroupFit] = {}
    for group in reference.groups.itertuples():
        in_group = rows[rows["curve_group"] == group.id]
        n_patients, n_exams = int(in_group["patient_id"].nunique()), len(in_group)
        entry = {"id": group.id, "n_patients": n_patients, "n_exams": n_exams}
        if n_patients < min_patients:
            entry["provenance"] = f"published (too few patients: {n_patients} < {min_patients})"
        else:
            fitted[group.id] = fit_group(*(in_group[n].to_numpy(dtype=float)
                                           for n in ("day", "fraction", "rmax_factor", "tau_factor"))).rounded()
            entry["provenance"] = f"fitted ({n_patients} patients, {n_exams} exams)"
            entry["held_out"] = _held_out_coverage(in_group, folds)
        summary.append(entry)
    if not fitted:
        counts = ", ".join(f"{e['id']} {e['n_patients']}" for e in summary)
        left = "; ".join(f"{n} {why}" for why, n in data.left_out.items() if n)
        raise CalibrationError(
            f"no group can be fitted: every group has fewer than {min_patients} patients with a baseline and "
            f"post-operative exams (patients per group: {counts})" + (f"; muscle-sides left out: {left}" if left
                                                                       else ""))

    calibrated = _calibrated_reference(reference, fitted)
    coverage = _coverage(rows, calibrated) if len(rows) else pd.DataFrame(columns=["below", "above"])
    published_coverage = _coverage(rows, reference) if len(rows) else coverage
    reference_id = _reference_id(source_name, created, fitted, summary)
    document = _document(raw, reference, fitted, summary, coverage, published_coverage, data.left_out,
                         reference_id=reference_id, source_name=source_name, created=created,
                         min_patients=min_patients, folds=folds)

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = out_path.with_name(f".{out_path.name}.tmp")
    temporary.write_text(_HEADER + yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=110),
                         encoding="utf-8")
    try:
        load_reference(temporary)
    except ReferenceError as problem:
        temporary.unlink(missing_ok=True)
        raise CalibrationError(f"the calibrated reference would not load: {problem}") from problem
    os.replace(temporary, out_path)
    return _report(out_path, reference_id, source_name, summary, fitted, reference, coverage, published_coverage,
                   data.left_out)


_HEADER = ("# Calibrated motor-recovery reference, written by `python -m dashboard calibrate`.\n"
           "# Same model and structure as published.yaml: g(t) = b + (5 - b) * Rmax * (1 - exp(-t / tau));\n"
           "# band low edge = rmax.p10 with tau.slow, high edge = rmax.p90 with tau.fast; modifiers as published.\n")


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


def _share(table: pd.DataFrame, group_id: str, column: str) -> float | None:
    return round(float(table.at[group_id, column]), 3) if group_id in table.index else None


def _document(raw: dict, reference: Reference, fitted: dict[str, GroupFit], summary: list[dict],
              coverage: pd.DataFrame, published_coverage: pd.DataFrame, left_out: dict[str, int], *,
              reference_id: str, source_name: str, created: date, min_patients: int, folds: int) -> dict:
    by_id = {e["id"]: e for e in summary}
    groups = []
    for group in raw["groups"]:
        entry = by_id[group["id"]]
        out = {k: v for k, v in group.items() if k not in ("rmax", "tau_days", "sources", "n_patients")}
        fit = fitted.get(group["id"])
        if fit is None:
            out.update(rmax=group["rmax"], tau_days=group["tau_days"], sources=group["sources"])
        else:
            out.update(
                rmax={"p10": fit.rmax_p10, "median": fit.rmax_median, "p90": fit.rmax_p90},
                tau_days={"fast": fit.tau_fast, "median": fit.tau_median, "slow": fit.tau_slow},
                n_patients=entry["n_patients"],
                sources=[{"key": SOURCE_KEY, "figure": (
                    f"Quantile regression on {entry['n_patients']} patients, {entry['n_exams']} post-operative "
                    f"exams; {_percent(_share(coverage, group['id'], 'below'))} below the low and "
                    f"{_percent(_share(coverage, group['id'], 'above'))} above the high edge (target 10% each)")}],
                confidence="clinic",
            )
            out["note"] = (f"Calibrated from {source_name}; baseline range and modifiers as in "
                           f"{reference.reference_id}.")
        out["provenance"] = entry["provenance"]
        groups.append(out)

    provenance_groups = {}
    for entry in summary:
        held_out = entry.get("held_out")
        provenance_groups[entry["id"]] = {
            "parameters": "fitted" if entry["id"] in fitted else "published",
            "n_patients": entry["n_patients"],
            "n_exams": entry["n_exams"],
            "coverage": {
                "below_low": _share(coverage, entry["id"], "below"),
                "above_high": _share(coverage, entry["id"], "above"),
                "held_out_below_low": None if held_out is None else round(held_out[0], 3),
                "held_out_above_high": None if held_out is None else round(held_out[1], 3),
                "published_below_low": _share(published_coverage, entry["id"], "below"),
                "published_above_high": _share(published_coverage, entry["id"], "above"),
            },
        }
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
        "band": raw.get("band", {"low_percentile": 10, "high_percentile": 90}),
        "provenance": {
            "source_records": source_name,
            "created": created,
            "method": ("quantile (pinball-loss) regression of g(t) = b + (5 - b) * min(Rmax * m_R, 1) * "
                       "(1 - exp(-t / (tau * m_tau))) on (day, recovered fraction) of post-operative exams, "
                       "per baseline group; median first, band edges constrained around it; scipy.optimize "
                       "grid + bounded Nelder-Mead; published modifiers built in, patients with an unknown "
                       "modifier factor left out"),
            "based_on": reference.reference_id,
            "min_patients": min_patients,
            "coverage_folds": folds,
            "muscle_sides_left_out": dict(left_out),
            "groups": provenance_groups,
        },
        "groups": groups,
        "modifiers": raw["modifiers"],
        "status": raw["status"],
        "sources": sources,
    }


def _percent(share: float | None) -> str:
    return "—" if share is None else f"{100 * share:.1f}%"


def _report(out_path: Path, reference_id: str, source_name: str, summary: list[dict], fitted: dict[str, GroupFit],
            reference: Reference, coverage: pd.DataFrame, published_coverage: pd.DataFrame,
            left_out: dict[str, int]) -> str:
    params = reference.groups.set_index("id")
    table = []
    for entry in summary:
        group_id, held = entry["id"], entry.get("held_out")
        p = vars(fitted[group_id]) if group_id in fitted else params.loc[group_id]
        table.append({
            "group": group_id,
            "patients": entry["n_patients"],
            "exams": entry["n_exams"],
            "rmax p10/med/p90": f"{p['rmax_p10']:.2f}/{p['rmax_median']:.2f}/{p['rmax_p90']:.2f}",
            "tau fast/med/slow": f"{p['tau_fast']:.0f}/{p['tau_median']:.0f}/{p['tau_slow']:.0f}",
            "<low": _percent(_share(coverage, group_id, "below")),
            ">high": _percent(_share(coverage, group_id, "above")),
            "held-out <low/>high": f"{_percent(held[0])}/{_percent(held[1])}" if held else "—",
            "published <low/>high": (f"{_percent(_share(published_coverage, group_id, 'below'))}/"
                                     f"{_percent(_share(published_coverage, group_id, 'above'))}"),
            "parameters": entry["provenance"],
        })
    lines = [f"wrote {out_path} ({reference_id}) from {source_name}", "",
             pd.DataFrame(table).to_string(index=False), "",
             "coverage: share of exams below the 10th / above the 90th percentile curve (near 10% each is good)"]
    left = [f"  {n} {why}" for why, n in left_out.items() if n]
    if left:
        lines += ["muscle-sides left out:", *left]
    return "\n".join(lines)
