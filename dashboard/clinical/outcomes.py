"""Cohort outcomes of the clinic's own patients (issue 21): recovery, band coverage, PROMs, follow-up.

Pure pandas/numpy over the whole cohort (no loop over patients; loops only over groups and windows).
Definitions (docs/outcomes.md gives them with their limits):

* Unit. An **operation** (episode): every dated operation, with the exams and visits dated on or after it
  and before the patient's next operation (records format v1: an exam belongs to the latest operation on or
  before its date). A patient with a revision counts once per operation.
* Weak muscle. A muscle-side whose baseline (latest exam before the operation) is below the reference's
  normal grade by more than the measurement noise (5 - 0.34: 4+ or weaker). A 5- baseline is within one
  modifier step of normal, which the dashboard does not call a change (O'Neill 2017, docs/clinical-basis.md).
* Recovery (endpoint `recovered`, the default): the first post-operative exam at which the muscle-side
  either reaches the normal grade within measurement noise (>= 5-, the threshold of the `recovered` status)
  or has gained at least one whole grade over its baseline, whichever comes first. The two parts are also
  available alone: `normal` (full recovery, as counted by Postacchini 2002 and Dubourg 2002) and `improved`
  (>= 1 grade: the "improved / not improved" of Liu 2013 and Macki 2016; a whole grade is the smallest change
  the dashboard treats as real). Time is days from the operation to that exam; a muscle-side without it is
  censored at its last post-operative exam. Kaplan-Meier estimates with lifelines (KaplanMeierFitter); the share
  recovered at t is 1 - S(t). Its 95% interval resamples patients, not muscle-sides (cluster_bootstrap.py):
  a patient's muscle-sides share one lesion, so Greenwood's variance, which treats them as independent, is
  too narrow.
* Follow-up schedule: 2 and 6 weeks, 3, 6, 12 and 24 months after the operation, each with a tolerance
  window (SCHEDULE: contiguous, about halfway to the neighbouring visits). A window is **due** once its last
  day has passed on the assessment day and the operation's follow-up was not ended by a later operation; it
  is **done** when the operation has a strength exam or a visit dated in it. **Lost to follow-up**: an
  operation whose two latest due windows were both missed (and none after them attended).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd

from dashboard.clinical import cluster_bootstrap
from dashboard.clinical.calibration import band_positions
from dashboard.clinical.controlled_terms import load_vocabulary
from dashboard.clinical.curves import Reference, group_index, group_of, load_reference
from dashboard.clinical.mrc import MUSCLES, SIDES
from dashboard.clinical.records.validate import Records

#: Follow-up schedule: (label, target day, first day, last day of the tolerance window).
SCHEDULE: tuple[tuple[str, int, int, int], ...] = (
    ("2 weeks", 14, 7, 24),
    ("6 weeks", 42, 25, 63),
    ("3 months", 91, 64, 135),
    ("6 months", 182, 136, 273),
    ("12 months", 365, 274, 547),
    ("24 months", 730, 548, 912),
)
WINDOWS = tuple(label for label, *_ in SCHEDULE)
MILESTONE_MONTHS = (3, 6, 12, 24)
DAYS_PER_MONTH = 365.25 / 12
ENDPOINTS = {
    "recovered": "normal grade (5- or better) or at least one whole grade gained, whichever first",
    "normal": "normal grade within measurement noise (5- or better)",
    "improved": "at least one whole grade gained over the baseline",
}
GROUPINGS = {
    "all": "All operations",
    "severity": "Pre-operative severity",
    "deficit_duration": "Deficit duration before the operation",
    "diabetes": "Diabetes",
    "age_band": "Age at the operation",
    "procedure": "Procedure",
    "instrumented": "Instrumented",
    "surgeon": "Surgeon",
}
UNKNOWN = "unknown"
AGE_BANDS = ((0, 50, "< 50"), (50, 60, "50–59"), (60, 70, "60–69"), (70, 200, "≥ 70"))
DEFICIT_BANDS = ((0, 21, "< 3 weeks"), (21, 91, "3 weeks – 3 months"), (91, 1e9, "> 3 months"))
PROMS = {"odi": "ODI (%)", "leg_pain_nrs": "Leg pain (NRS)", "back_pain_nrs": "Back pain (NRS)"}
#: Fewer muscle-sides than this: the group's curve is drawn but its estimates are flagged as unstable.
SMALL_GROUP = 10


@dataclass
class Outcomes:
    """Everything the outcomes screen and export show, computed once per store version and day."""

    as_of: date
    reference_id: str
    operations: pd.DataFrame  # one row per operation: patient, date, groups, follow-up done per window, lost
    sides: pd.DataFrame  # one row per weak muscle-side with post-operative exams: groups, day and event per endpoint
    coverage: pd.DataFrame  # grouping, group, window, muscle_sides, below, inside, above, share_*
    proms: pd.DataFrame  # grouping, group, window, measure, n, median, q1, q3
    follow_up: pd.DataFrame  # grouping, group, window, due, done, share_done
    lost: pd.DataFrame  # grouping, group, operations, followed, lost, share_lost
    left_out: dict[str, int] = field(default_factory=dict)  # weak-muscle counts not in the curves, by reason
    _recovery: dict = field(default_factory=dict, repr=False)

    def recovery(self, grouping: str = "all", endpoint: str = "recovered") -> tuple[pd.DataFrame, pd.DataFrame]:
        """Kaplan-Meier curves and milestone shares of one grouping (computed once, then kept)."""
        key = (grouping, endpoint)
        if key not in self._recovery:
            self._recovery[key] = recovery_curves(self.sides, grouping, endpoint)
        return self._recovery[key]


# ------------------------------------------------------------------------------------------------ grouping
def _bands(values: pd.Series, bands) -> np.ndarray:
    number = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    out = np.full(len(number), UNKNOWN, dtype=object)
    for low, high, label in bands:
        out[(number >= low) & (number < high)] = label
    return out


def _yes_no(values: pd.Series) -> np.ndarray:
    flag = values.astype("boolean")
    return np.where(flag.isna().to_numpy(), UNKNOWN, np.where(flag.fillna(False).to_numpy(dtype=bool), "yes", "no"))


def _text(values: pd.Series) -> np.ndarray:
    text = values.astype("string").str.strip()
    return text.mask(text == "").fillna(UNKNOWN).to_numpy(dtype=object)


def _procedure_terms(values: pd.Series) -> np.ndarray:
    """Procedures as controlled terms ("TLIF", "other procedure"): groups that mean one operation each, and
    no free text (a name or phone number typed into the field) in a table or export of aggregates."""
    codes, distinct = pd.factorize(values.astype("string").str.strip(), use_na_sentinel=True)
    vocabulary = load_vocabulary()
    terms = np.array([vocabulary.procedure(value) for value in distinct] + [UNKNOWN], dtype=object)
    return terms[np.where(codes >= 0, codes, len(distinct))]


def operations(records: Records, reference: Reference) -> pd.DataFrame:
    """One row per dated operation with its grouping columns and the end of its follow-up (next operation)."""
    ops = records.surgeries.loc[records.surgeries["surgery_date"].notna(),
                                ["patient_id", "surgery_date", "procedure", "instrumented", "deficit_onset_date"]]
    ops = ops.sort_values(["patient_id", "surgery_date"], kind="stable").drop_duplicates(
        ["patient_id", "surgery_date"]).reset_index(drop=True)
    ops["episode"] = np.arange(len(ops))
    ops["next_surgery"] = ops.groupby("patient_id", sort=False)["surgery_date"].shift(-1)
    patients = records.patients.set_index("patient_id")
    at = patients.index.get_indexer(ops["patient_id"])
    known = at >= 0

    def patient_column(name: str) -> pd.Series:
        column = patients[name].iloc[np.where(known, at, 0)].reset_index(drop=True)
        return column.where(pd.Series(known))

    birth = pd.to_numeric(patient_column("birth_year"), errors="coerce")
    age = ops["surgery_date"].dt.year - birth
    deficit = (ops["surgery_date"] - ops["deficit_onset_date"]).dt.days
    ops["age"] = age.astype("Float64")
    ops["deficit_days"] = deficit.astype("Float64")
    ops["diabetes_flag"] = patient_column("diabetes").astype("boolean")
    ops["all"] = "all"
    ops["deficit_duration"] = _bands(deficit, DEFICIT_BANDS)
    ops["diabetes"] = _yes_no(patient_column("diabetes"))
    ops["age_band"] = _bands(age, AGE_BANDS)
    ops["procedure"] = _procedure_terms(ops["procedure"])
    ops["instrumented"] = _yes_no(ops["instrumented"])
    ops["surgeon"] = _text(patient_column("surgeon"))
    return ops.drop(columns=["deficit_onset_date"])


_SPAN = np.int64(1 << 22)  # days per patient in a combined (patient, day) key: dates 1970 ± 5,000 years
_OFFSET = np.int64(1 << 21)


def _days(values: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Days since 1970 as integers, and which values are missing."""
    raw = values.to_numpy().astype("datetime64[D]")
    missing = np.isnat(raw)
    return np.where(missing, 0, raw.view(np.int64)), missing


@dataclass(frozen=True)
class _OpIndex:
    """Integer keys of the operations (sorted by patient, then date): for sorted searches instead of merges."""

    patients: pd.Index  # patient ids; a patient's code is its position here
    code: np.ndarray  # patient code per operation
    day: np.ndarray  # operation day (days since 1970) per operation
    key: np.ndarray  # code * _SPAN + day + _OFFSET, ascending


def _op_index(ops: pd.DataFrame) -> _OpIndex:
    patients = pd.Index(ops["patient_id"].unique())
    code = patients.get_indexer(ops["patient_id"]).astype(np.int64)
    day = _days(ops["surgery_date"])[0]
    return _OpIndex(patients, code, day, code * _SPAN + day + _OFFSET)


def _episodes_of(index: _OpIndex, patient_ids: pd.Series, dates: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Each row's operation (position in the operations: the latest on or before its date; -1 for none) and its
    day since that operation. One sorted search over integer keys (patient code, day): no string sort, no merge."""
    code = index.patients.get_indexer(patient_ids).astype(np.int64)
    day, missing = _days(dates)
    at = np.searchsorted(index.key, code * _SPAN + day + _OFFSET, side="right") - 1
    ok = (code >= 0) & ~missing & (at >= 0) & (index.code[np.clip(at, 0, None)] == code)
    episode = np.where(ok, at, -1)
    return episode, np.where(ok, day - index.day[np.clip(episode, 0, None)], 0)


def window_of(day: np.ndarray) -> np.ndarray:
    """The position in SCHEDULE of each day's tolerance window, -1 outside every window."""
    day = np.asarray(day, dtype=float)
    first = np.array([w[2] for w in SCHEDULE], dtype=float)
    last = np.array([w[3] for w in SCHEDULE], dtype=float)
    at = np.searchsorted(first, day, side="right") - 1
    inside = (at >= 0) & (day <= last[np.clip(at, 0, len(SCHEDULE) - 1)])
    return np.where(inside, at, -1)


# ------------------------------------------------------------------------------------------------ recovery
def _post_exams(records: Records, ops: pd.DataFrame, index: _OpIndex) -> pd.DataFrame:
    """Every graded post-operative exam with its operation, day, muscle and side codes and its baseline (the
    latest exam of the same muscle-side before the operation; NaN without one). Integer keys, sorted searches."""
    strength = records.strength
    muscle = pd.Index(MUSCLES).get_indexer(strength["muscle"]).astype(np.int64)
    side = pd.Index(SIDES).get_indexer(strength["side"]).astype(np.int64)
    code = index.patients.get_indexer(strength["patient_id"]).astype(np.int64)
    day, missing = _days(strength["exam_date"])
    grade = strength["mrc"].to_numpy(dtype=float, na_value=np.nan)
    ok = (code >= 0) & (muscle >= 0) & (side >= 0) & ~missing & ~np.isnan(grade)
    code, muscle, side, day, grade = code[ok], muscle[ok], side[ok], day[ok], grade[ok]
    at = np.searchsorted(index.key, code * _SPAN + day + _OFFSET, side="right") - 1
    post = (at >= 0) & (index.code[np.clip(at, 0, None)] == code)
    episode = at[post]
    op_day = index.day[episode]
    # baseline: the last exam of the muscle-side with a day before the operation's
    side_key = code * 10 + muscle * 2 + side
    order = np.lexsort((day, side_key))
    sorted_key = side_key[order] * _SPAN + day[order] + _OFFSET
    wanted = side_key[post]
    before = np.searchsorted(sorted_key, wanted * _SPAN + op_day + _OFFSET, side="left") - 1
    has = (before >= 0) & (side_key[order][np.clip(before, 0, None)] == wanted)
    baseline = np.where(has, grade[order][np.clip(before, 0, None)], np.nan)
    return pd.DataFrame({"episode": episode, "muscle": muscle[post], "side": side[post],
                         "side_id": episode * 10 + muscle[post] * 2 + side[post], "day": day[post] - op_day,
                         "mrc": grade[post], "baseline_mrc": baseline})


def weak_sides(post: pd.DataFrame, ops: pd.DataFrame, reference: Reference) -> tuple[pd.DataFrame, dict[str, int]]:
    """One row per weak muscle-side with post-operative exams: baseline, severity and, per endpoint, the day of
    the event or of censoring and whether the event happened."""
    status = reference.status
    normal, noise = status["normal_grade"], status["measurement_noise"]
    per_side = post.groupby("side_id", sort=True).agg(episode=("episode", "first"), muscle=("muscle", "first"),
                                                      side=("side", "first"), baseline_mrc=("baseline_mrc", "first"),
                                                      last_day=("day", "max"))
    baseline = per_side["baseline_mrc"].to_numpy()
    weak = baseline < normal - noise - 1e-9
    left_out = {"no pre-operative exam (no baseline)": int(np.isnan(baseline).sum()),
                "baseline normal or within noise of normal (5-)": int((~weak & ~np.isnan(baseline)).sum())}
    out = per_side[weak]
    rows = post[post["side_id"].isin(out.index)]
    grade, base = rows["mrc"].to_numpy(), rows["baseline_mrc"].to_numpy()
    hits = {"normal": grade >= normal - noise - 1e-9, "improved": grade >= base + 1 - 1e-9}
    hits["recovered"] = hits["normal"] | hits["improved"]
    out = out.copy()
    for endpoint in ENDPOINTS:
        first = rows.loc[hits[endpoint]].groupby("side_id")["day"].min().reindex(out.index).to_numpy(dtype=float)
        out[f"{endpoint}_event"] = ~np.isnan(first)
        out[f"{endpoint}_day"] = np.where(np.isnan(first), out["last_day"].to_numpy(dtype=float), first)
    group = group_of(out["baseline_mrc"].to_numpy(dtype=float), reference)
    at = out["episode"].to_numpy()
    out = out.reset_index(drop=True)
    out.insert(1, "patient_id", ops["patient_id"].to_numpy()[at])
    out["muscle"] = np.asarray(MUSCLES, dtype=object)[out["muscle"].to_numpy()]
    out["side"] = np.asarray(SIDES, dtype=object)[out["side"].to_numpy()]
    out["severity"] = np.where(group == "", UNKNOWN, group)
    for name in GROUPINGS:
        if name != "severity":
            out[name] = ops[name].to_numpy()[at]
    return out, left_out


def _at(frame: pd.DataFrame, t: float) -> pd.Series:
    """A step function (indexed by time) at time t: the last row at or before t."""
    return frame.loc[:t].iloc[-1]


def recovery_curves(sides: pd.DataFrame, grouping: str = "all", endpoint: str = "recovered"
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Kaplan-Meier estimate of the share recovered over time, per group of `grouping`.

    Returns the curves (group, day, share_recovered, low, high, at_risk, patients_at_risk: a step function) and
    the milestones (group, months, day, muscle_sides, patients, at_risk, patients_at_risk, recovered_by,
    share_recovered, low, high; NaN past the group's
    longest follow-up, where the estimate is not defined). The estimate and the numbers at risk are lifelines';
    low and high are the patient-cluster bootstrap's percentile interval (cluster_bootstrap.py), because one
    patient's muscle-sides are not independent observations.
    """
    from lifelines import KaplanMeierFitter  # noqa: PLC0415 — a heavy import, only where curves are drawn

    if endpoint not in ENDPOINTS:
        raise ValueError(f"endpoint must be one of {', '.join(ENDPOINTS)}, not {endpoint!r}")
    curves, milestones = [], []
    times = np.array(MILESTONE_MONTHS) * DAYS_PER_MONTH
    # patients numbered once, in sorted order of their ids: the bootstrap's draws do not depend on row order
    numbered = sides.assign(patient_number=pd.factorize(sides["patient_id"], sort=True)[0])
    for group, part in numbered.groupby(grouping, sort=True):
        day = part[f"{endpoint}_day"].to_numpy(dtype=float)
        event = part[f"{endpoint}_event"].to_numpy(dtype=bool)
        fitter = KaplanMeierFitter().fit(day, event)
        survival = fitter.survival_function_.iloc[:, 0]
        table = fitter.event_table
        counts = cluster_bootstrap.counts(part["patient_number"].to_numpy(), day, event)
        steps = survival.index.to_numpy(dtype=float)
        low, high = cluster_bootstrap.interval_at(counts, cluster_bootstrap.replicates(counts), np.r_[steps, times])
        # a patient is at risk on day t while one of their muscle-sides is (still followed, not yet recovered)
        last_days = np.sort(part.groupby("patient_number")[f"{endpoint}_day"].max().to_numpy(dtype=float))

        def patients_at_risk(t: np.ndarray) -> np.ndarray:
            return len(last_days) - np.searchsorted(last_days, t, side="left")  # noqa: B023 — used at once

        curves.append(pd.DataFrame({
            "group": group, "day": steps, "share_recovered": 1 - survival.to_numpy(),
            "low": low[:len(steps)], "high": high[:len(steps)],
            "at_risk": table["at_risk"].reindex(survival.index).to_numpy(),
            "patients_at_risk": patients_at_risk(steps)}))
        milestone_patients = patients_at_risk(times)
        for months, t, t_low, t_high, patients in zip(MILESTONE_MONTHS, times, low[len(steps):], high[len(steps):],
                                                      milestone_patients, strict=True):
            estimable = t <= day.max() or survival.iloc[-1] == 0  # beyond the last exam only if S fell to 0
            milestones.append({
                "group": group, "months": months, "day": round(t), "muscle_sides": len(part),
                "patients": len(last_days), "at_risk": int((day >= t).sum()), "patients_at_risk": int(patients),
                "recovered_by": int(((day <= t) & event).sum()),
                "share_recovered": 1 - float(_at(survival.to_frame(), t).iloc[0]) if estimable else np.nan,
                "low": t_low if estimable else np.nan, "high": t_high if estimable else np.nan,
            })
    curve_columns = ["group", "day", "share_recovered", "low", "high", "at_risk", "patients_at_risk"]
    milestone_columns = ["group", "months", "day", "muscle_sides", "patients", "at_risk", "patients_at_risk",
                         "recovered_by", "share_recovered", "low", "high"]
    return (pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=curve_columns),
            pd.DataFrame(milestones, columns=milestone_columns))


# ------------------------------------------------------------------------------------------------ coverage
def _long_by_group(frame: pd.DataFrame, values: list[str], how) -> pd.DataFrame:
    """`how(frame grouped by [group, window])` for every grouping, stacked with a `grouping` column."""
    parts = []
    for grouping in GROUPINGS:
        codes, labels = pd.factorize(frame[grouping].to_numpy(dtype=object), sort=True)
        grouped = how(frame.assign(group=codes).groupby(["group", "window"], sort=True)).reset_index()
        grouped["group"] = np.asarray(labels, dtype=object)[grouped["group"].to_numpy()]
        parts.append(grouped.assign(grouping=grouping))
    if not parts:
        return pd.DataFrame(columns=["grouping", "group", "window", *values])
    out = pd.concat(parts, ignore_index=True)
    return out[["grouping", "group", "window", *[c for c in out.columns if c not in ("grouping", "group", "window")]]]


def band_coverage_by_window(post: pd.DataFrame, ops: pd.DataFrame, reference: Reference) -> pd.DataFrame:
    """Share of muscle-sides below, inside and above the expected band in each follow-up window, per group.

    The exams are those calibration observes (post-operative, baseline in a reference group; unlike a fit,
    unknown modifier factors are kept, their modifiers not applied, as the assessment does) scored by
    calibration's band_positions (band edges rounded to the MRC step, as the patient view shows them); a
    muscle-side examined twice in one window counts once, with its latest exam there.
    """
    columns = ["grouping", "group", "window", "muscle_sides", "below", "inside", "above", "share_below",
               "share_inside", "share_above"]
    group = group_index(post["baseline_mrc"].fillna(-1).to_numpy(), reference)
    window = window_of(post["day"].to_numpy())
    rows = post[(group >= 0) & (window >= 0)].assign(window=window[(group >= 0) & (window >= 0)],
                                                      curve_group=group[(group >= 0) & (window >= 0)])
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.iloc[np.lexsort((rows["day"].to_numpy(), rows["window"].to_numpy(), rows["side_id"].to_numpy()))]
    rows = rows[~rows.duplicated(["side_id", "window"], keep="last").to_numpy()]
    at = rows["episode"].to_numpy()
    factors = pd.DataFrame({"age": ops["age"].to_numpy()[at], "diabetes": ops["diabetes_flag"].array[at],
                            "deficit_days": ops["deficit_days"].array[at]})
    position = band_positions(_band_rows(rows, factors), reference)
    frame = pd.DataFrame({"window": rows["window"].to_numpy(), "below": position == "below",
                          "inside": position == "inside", "above": position == "above"})
    for grouping in GROUPINGS:  # object arrays: factorized by _long_by_group, never turned into Arrow text
        frame[grouping] = (reference.groups["id"].to_numpy(dtype=object)[rows["curve_group"].to_numpy()]
                           if grouping == "severity" else ops[grouping].to_numpy()[at])

    def count(grouped):
        out = grouped[["below", "inside", "above"]].sum()
        out.insert(0, "muscle_sides", out.sum(axis=1))
        return out

    out = _long_by_group(frame, columns[3:], count)
    for side in ("below", "inside", "above"):
        out[f"share_{side}"] = out[side] / out["muscle_sides"]
    out["window"] = np.asarray(WINDOWS, dtype=object)[out["window"].to_numpy(dtype=int)]
    return out[columns]


def _band_rows(rows: pd.DataFrame, factors: pd.DataFrame) -> pd.DataFrame:
    """The columns calibration.band_positions reads, one row per exam."""
    return pd.DataFrame({"baseline_mrc": rows["baseline_mrc"].to_numpy(), "day": rows["day"].to_numpy(dtype=float),
                         "mrc": rows["mrc"].to_numpy(), "age": factors["age"], "diabetes": factors["diabetes"],
                         "deficit_days": factors["deficit_days"]})


# --------------------------------------------------------------------------------------------------- PROMs
def proms_by_window(records: Records, ops: pd.DataFrame, index: _OpIndex) -> pd.DataFrame:
    """ODI, leg and back pain per follow-up window and group: visits, median and interquartile range.

    A visit belongs to the latest operation on or before it; the window is the visit's day since it; the
    pre-operative value ('before') is the latest recorded before the operation. One value per operation,
    window and measure (the latest there).
    """
    visits = records.visits
    present = [m for m in PROMS if m in visits.columns]
    columns = ["grouping", "group", "window", "measure", "n", "median", "q1", "q3"]
    if visits.empty or not present:
        return pd.DataFrame(columns=columns)
    episode, day = _episodes_of(index, visits["patient_id"], visits["visit_date"])
    window = window_of(day)
    code = index.patients.get_indexer(visits["patient_id"]).astype(np.int64)
    visit_day, missing = _days(visits["visit_date"])
    parts = []
    for measure in present:
        value = pd.to_numeric(visits[measure], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        known = ~np.isnan(value) & ~missing & (code >= 0)
        # after the operation, by window: the latest visit of each operation and window
        keep = known & (episode >= 0) & (window >= 0)
        order = np.flatnonzero(keep)[np.lexsort((visit_day[keep], window[keep], episode[keep]))]
        if len(order):
            last = np.r_[(episode[order][1:] != episode[order][:-1]) | (window[order][1:] != window[order][:-1]),
                         True]
            order = order[last]
        parts.append(pd.DataFrame({"episode": episode[order], "window": window[order], "measure": measure,
                                   "value": value[order]}))
        # before the operation: the latest visit with the measure on a day before the operation's
        sorted_rows = np.flatnonzero(known)[np.lexsort((visit_day[known], code[known]))]
        if not len(sorted_rows):
            continue
        sorted_key = code[sorted_rows] * _SPAN + visit_day[sorted_rows] + _OFFSET
        before = np.searchsorted(sorted_key, index.key, side="left") - 1
        has = (before >= 0) & (code[sorted_rows][np.clip(before, 0, None)] == index.code)
        parts.append(pd.DataFrame({"episode": np.flatnonzero(has), "window": -1, "measure": measure,
                                   "value": value[sorted_rows][before[has]]}))
    long = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()
    if long.empty:  # visits, but none records a PROM
        return pd.DataFrame(columns=columns)
    at = long["episode"].to_numpy()
    out = []
    long["measure"] = pd.Index(present).get_indexer(long["measure"])  # integer keys group fastest
    for grouping in GROUPINGS:
        codes, labels = pd.factorize(ops[grouping].to_numpy(dtype=object), sort=True)
        grouped = long.assign(group=codes[at]).groupby(["group", "window", "measure"], sort=True)
        values = grouped["value"]
        quartiles = values.quantile([0.25, 0.5, 0.75]).unstack()
        part = pd.DataFrame({"n": values.count(), "median": quartiles[0.5], "q1": quartiles[0.25],
                             "q3": quartiles[0.75]}).reset_index()
        part["group"] = np.asarray(labels, dtype=object)[part["group"].to_numpy()]
        out.append(part.assign(grouping=grouping))
    frame = pd.concat(out, ignore_index=True)
    frame["measure"] = np.asarray(present, dtype=object)[frame["measure"].to_numpy()]
    frame["window"] = np.asarray(["before", *WINDOWS], dtype=object)[frame["window"].to_numpy(dtype=int) + 1]
    return frame[columns]


# ------------------------------------------------------------------------------------------------ follow-up
def follow_up(records: Records, ops: pd.DataFrame, index: _OpIndex, as_of: date) -> pd.DataFrame:
    """Per operation and window: due (the window closed on the assessment day, follow-up not ended by a later
    operation) and done (a strength exam or a visit dated in it). Columns due_<k>, done_<k> per window k."""
    done = np.zeros((len(ops), len(SCHEDULE)), dtype=bool)
    for frame, column in ((records.strength, "exam_date"), (records.visits, "visit_date")):
        if frame.empty:
            continue
        episode, day = _episodes_of(index, frame["patient_id"], frame[column])
        window = np.where(episode >= 0, window_of(day), -1)
        inside = window >= 0
        done[episode[inside], window[inside]] = True
    today = pd.Timestamp(as_of)
    ends = ops["next_surgery"]
    due = np.column_stack([((ops["surgery_date"] + pd.Timedelta(days=last)) < today)
                           & (ends.isna() | ((ops["surgery_date"] + pd.Timedelta(days=last)) < ends)).to_numpy()
                           for _, _, _, last in SCHEDULE]) if len(ops) else np.zeros((0, len(SCHEDULE)), bool)
    frame = pd.DataFrame({**{f"due_{k}": due[:, k] for k in range(len(SCHEDULE))},
                          **{f"done_{k}": done[:, k] & due[:, k] for k in range(len(SCHEDULE))}})
    frame["lost"] = _lost(due, done)
    frame["windows_due"] = due.sum(axis=1)
    frame["windows_done"] = (done & due).sum(axis=1)
    return frame


def _lost(due: np.ndarray, done: np.ndarray) -> np.ndarray:
    """The two latest due windows both missed (windows fall due in order, so they are the last two due)."""
    n_due = due.sum(axis=1)
    rows = np.arange(len(due))
    last = np.clip(n_due - 1, 0, None)
    before = np.clip(n_due - 2, 0, None)
    return (n_due >= 2) & ~done[rows, last] & ~done[rows, before]


def follow_up_tables(frame: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Exams done against the schedule per window, and operations lost to follow-up, per group."""
    rows = []
    lost = []
    for grouping in GROUPINGS:
        for group, part in frame.groupby(grouping, sort=True):
            for k, (label, *_) in enumerate(SCHEDULE):
                due, done = int(part[f"due_{k}"].sum()), int(part[f"done_{k}"].sum())
                rows.append({"grouping": grouping, "group": group, "window": label, "due": due, "done": done,
                             "share_done": done / due if due else np.nan})
            followed = int((part["windows_due"] >= 2).sum())
            n_lost = int(part["lost"].sum())
            lost.append({"grouping": grouping, "group": group, "operations": len(part),
                         "patients": int(part["patient_id"].nunique()), "followed": followed, "lost": n_lost,
                         "share_lost": n_lost / followed if followed else np.nan})
    return (pd.DataFrame(rows, columns=["grouping", "group", "window", "due", "done", "share_done"]),
            pd.DataFrame(lost, columns=["grouping", "group", "operations", "patients", "followed", "lost",
                                        "share_lost"]))


# ------------------------------------------------------------------------------------------------ together
def cohort_outcomes(records: Records, as_of: date | None = None, reference: Reference | None = None) -> Outcomes:
    """All outcome tables of a cohort as known on `as_of` (records dated later must already be left out)."""
    as_of = as_of or date.today()
    reference = reference or load_reference()
    ops = operations(records, reference)
    index = _op_index(ops)
    post = _post_exams(records, ops, index)
    sides, left_out = weak_sides(post, ops, reference)
    # an operation's severity: its weakest muscle-side's baseline group ('no weak muscle' when none is weak)
    weakest = sides.groupby("episode")["baseline_mrc"].min()
    group = group_of(weakest.to_numpy(dtype=float), reference)
    severity = np.full(len(ops), "no weak muscle", dtype=object)
    severity[weakest.index.to_numpy()] = np.where(group == "", UNKNOWN, group)
    ops["severity"] = severity
    ops = pd.concat([ops, follow_up(records, ops, index, as_of)], axis=1)
    table, lost = follow_up_tables(ops)
    return Outcomes(
        as_of=as_of, reference_id=reference.reference_id, operations=ops, sides=sides,
        coverage=band_coverage_by_window(post, ops, reference),
        proms=proms_by_window(records, ops, index), follow_up=table, lost=lost, left_out=left_out)
