"""Synthetic demo cohort in the records format v1 (docs/records-format.md), with known scenarios.

Everything is fictional and drawn from one numpy Generator, so a seed always gives the same files. Dates
are counted back from a fixed anchor day (never from today) and none lies after it. Rows are built with
array operations over all patients at once, so 100,000 patients (about 5 million strength rows) take
seconds rather than minutes.

Normal recoverers follow the published reference curve (data/reference/published.yaml): each patient
gets a position inside the expected range (the band) and keeps it, so their grades stay inside the band
after rounding to the grades clinicians write. The other scenarios deviate from that curve in ways the
trajectory statuses and the imaging checklist must recognise; `scenarios.csv` says, for one muscle of
each patient, which status it should get as of the anchor and which prompt categories should fire.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from dashboard.clinical.curves import Reference, expected_band, load_reference
from dashboard.clinical.mrc import MUSCLES, SIDES

DEFAULT_ANCHOR = date(2026, 11, 20)
DEFAULT_PATIENTS = 200
DEFAULT_SEED = 7

#: Share of the cohort in each scenario (exact counts by largest remainder, then shuffled).
SCENARIO_PROPORTIONS: dict[str, float] = {
    "normal_recovery": 0.50,
    "slow_severe": 0.08,
    "plateau_behind": 0.08,
    "recurrent_radicular": 0.06,
    "new_deficit_instrumented": 0.05,
    "late_hardware": 0.05,
    "cauda_equina": 0.02,
    "wound_infection": 0.03,
    "calf_swelling": 0.03,
    "acute_progressive": 0.02,
    "adjacent_segment": 0.03,
    "no_preop_exam": 0.05,
}
#: Prompt categories each scenario should raise (canonical order, ';'-joined in scenarios.csv).
SCENARIO_CATEGORIES: dict[str, tuple[str, ...]] = {
    "normal_recovery": (),
    "slow_severe": (),
    "plateau_behind": ("compression",),
    "recurrent_radicular": ("compression",),  # one MRI prompt (with contrast: recurrent disc or scar)
    "new_deficit_instrumented": ("hardware",),
    "late_hardware": ("hardware",),
    "cauda_equina": ("red_flag",),
    "wound_infection": ("red_flag",),
    "calf_swelling": ("red_flag",),
    "acute_progressive": ("red_flag",),
    "adjacent_segment": ("compression",),
    "no_preop_exam": (),
}
#: Categories a scenario may raise besides the above, depending on where its last exam falls: no gain by about
#: 3 months asks for MRI (compression) and, for a dense deficit (MRC ≤ 2), electrodiagnostics (recovery) —
#: rules compression-no-gain-3-months and recovery-electrodiagnostics (clinical review 2026-12, section 5).
SCENARIO_TIMING_DEPENDENT: dict[str, frozenset[str]] = {
    "slow_severe": frozenset({"compression", "recovery"}), "plateau_behind": frozenset({"recovery"}),
    "adjacent_segment": frozenset({"recovery"}), "late_hardware": frozenset({"compression"}),
}
SCENARIOS: tuple[str, ...] = tuple(SCENARIO_PROPORTIONS)
RECORD_FILES: tuple[str, ...] = ("patients.csv", "surgeries.csv", "strength.csv", "visits.csv")
#: The muscles a pre-operative deficit is drawn from (L4, L5, S1).
DEFICIT_MUSCLES: tuple[str, ...] = ("ankle_dorsiflexion", "great_toe_extension", "ankle_plantarflexion")

SURGEONS = ("Dr Okafor", "Dr Lindqvist", "Dr Tanaka", "Dr Moreau")
PROCEDURES = ("TLIF", "PLIF", "posterolateral fusion", "decompression")
LEVELS = ("L4-L5", "L5-S1", "L4-L5;L5-S1", "L3-L4", "L3-L4;L4-L5")
FIRST_F = ("Anna", "Beatrix", "Carla", "Dagny", "Elif", "Fatima", "Greta", "Hana", "Ines", "Johanna", "Kalinda",
           "Leonie", "Maren", "Nadia", "Olga", "Priya", "Quilla", "Rosa", "Signe", "Talia", "Ulla", "Vera",
           "Wilma", "Yasmin", "Zofia")
FIRST_M = ("Arvid", "Bruno", "Cedric", "Dario", "Emil", "Farid", "Gustav", "Hugo", "Ivo", "Jonas", "Kenji",
           "Lars", "Matteo", "Nils", "Oskar", "Pavel", "Rafael", "Stellan", "Tobias", "Umar", "Viktor",
           "Wendel", "Yusuf", "Zoltan", "Anselm")
LAST = ("Abernethy", "Birkeland", "Castellano", "Dunmore", "Eklund", "Fairweather", "Galloway", "Holmqvist",
        "Ibarra", "Jankowski", "Kowalczyk", "Lindgren", "Marchetti", "Nakamura", "Oyelaran", "Pettersen",
        "Quennell", "Rasmussen", "Sandoval", "Thorvaldsen", "Underhill", "Vasquez", "Wainwright", "Yilmaz",
        "Zamora", "Ashdown", "Brightwater", "Crowhurst", "Delacroix", "Everly", "Fennimore", "Grunwald",
        "Hartigan", "Ivanova", "Kettleby", "Larkspur", "Moorcroft", "Northcott", "Okonkwo", "Penhallow")

# MRC grades in thirds of a grade: 0 1 2 3 4- 4 4+ 5- 5 (integers, so comparisons are exact).
GRADE_THIRDS = np.array([0, 3, 6, 9, 11, 12, 13, 14, 15], dtype=np.int16)
GRADE_TOKENS = ("0", "1", "2", "3", "4-", "4", "4+", "5-", "5")
BAND_SLACK = 0.165  # a rounded grade may sit this far outside the band (behind_tolerance is 0.34)
PLANNED_DAYS = np.array([14, 42, 91, 182, 365, 730])  # after surgery; the pre-op exam comes first
MISSED_VISIT = 0.15
DAY_OFFSET = 100  # keeps (patient, day) keys positive: days run from -30 to 912
DAY_SPAN = 2048

# Scenario codes (index in SCENARIOS).
(NORMAL, SLOW, PLATEAU, RECURRENT, NEW_DEFICIT, LATE_HW, CAUDA, WOUND, CALF, ACUTE, ADJACENT,
 NO_PREOP) = range(len(SCENARIOS))
# Days since surgery at the anchor, per scenario (inclusive range; (0, 0): set from the event day instead).
DAYS_SINCE = {
    NORMAL: (20, 912), SLOW: (60, 912), PLATEAU: (200, 912), RECURRENT: (0, 0), NEW_DEFICIT: (16, 80),
    LATE_HW: (200, 912), CAUDA: (0, 0), WOUND: (0, 0), CALF: (0, 0), ACUTE: (3, 5), ADJACENT: (380, 912),
    NO_PREOP: (20, 912),
}
#: Scenarios whose event is the latest examination or visit (nothing recorded after it).
ENDS_AT_EVENT = [RECURRENT, ADJACENT, CAUDA, WOUND, CALF]
HAS_DEFICIT = {NORMAL: 0.75, SLOW: 1.0, PLATEAU: 1.0, RECURRENT: 1.0, NEW_DEFICIT: 0.6, LATE_HW: 0.8,
               CAUDA: 0.75, WOUND: 0.75, CALF: 0.75, ACUTE: 1.0, ADJACENT: 0.75, NO_PREOP: 0.75}


# ----------------------------------------------------------------------------------------------- public
def generate_cohort(n_patients: int, seed: int, anchor: date = DEFAULT_ANCHOR, first_id: int = 1
                    ) -> dict[str, pd.DataFrame]:
    """The demo cohort as text frames: patients, surgeries, strength, visits and scenarios.

    Every cell holds the text written to the CSV files (pandas `str` dtype, missing = not recorded).
    """
    tables = _build(n_patients, seed, anchor, first_id)
    return {name: _to_text_frame(table) for name, table in tables.items()}


def write_cohort(out_dir: str | Path, n_patients: int = DEFAULT_PATIENTS, seed: int = DEFAULT_SEED,
                 anchor: date = DEFAULT_ANCHOR, first_id: int = 1) -> Path:
    """Write the four records files, scenarios.csv and a README.md into out_dir; return the folder.

    `first_id`: the number of the first patient id (P00001 by default). A second cohort for the same store must
    start after the ids stored there, or its P00001 would be another person under a stored patient's id.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables = _build(n_patients, seed, anchor, first_id)
    # Plain CSV as clinicians' tools write it: no value holds a comma, quote or newline, so nothing is quoted
    # (the writer refuses rather than write a broken file).
    options = pacsv.WriteOptions(quoting_style="none", include_header=False)
    for name, table in tables.items():
        with open(out / f"{name}.csv", "wb") as handle:
            handle.write((",".join(table.column_names) + "\n").encode("utf-8"))
            pacsv.write_csv(table, handle, write_options=options)
    (out / "README.md").write_text(_readme(tables["scenarios"], n_patients, seed, anchor), encoding="utf-8")
    return out


# ------------------------------------------------------------------------------------------- the model
def _build(n: int, seed: int, anchor: date, first_id: int = 1) -> dict[str, pa.Table]:
    if n < 1 or first_id < 1:
        raise ValueError("n_patients and first_id must be at least 1")
    rng = np.random.default_rng(seed)
    reference = load_reference()
    pats = _patients(rng, n, anchor)
    pats["first_id"] = np.array(first_id)
    _surgery(rng, pats)
    _deficits(rng, pats)
    exams = _exams(rng, pats)
    _choose_plateau_baseline(rng, pats, exams, reference)
    strength = _strength(rng, pats, exams, reference)
    visits = _visits(rng, pats, exams)
    return {
        "patients": _patients_table(pats),
        "surgeries": _surgeries_table(pats),
        "strength": strength,
        "visits": visits,
        "scenarios": _scenarios_table(pats, exams, strength),
    }


def _uniform_int(rng: np.random.Generator, low, high) -> np.ndarray:
    """Integers in [low, high] (arrays allowed), one draw per element."""
    low, high = np.asarray(low), np.asarray(high)
    size = np.broadcast(low, high).shape
    return (low + np.floor(rng.random(size) * (high - low + 1))).astype(np.int64)


def _pick(rng: np.random.Generator, n: int, weights) -> np.ndarray:
    cumulative = np.cumsum(np.asarray(weights, dtype=float))
    return np.searchsorted(cumulative / cumulative[-1], rng.random(n), side="right")


def _tristate(rng: np.random.Generator, n: int, p_yes: float, p_blank: float) -> np.ndarray:
    """1 = yes, 0 = no, -1 = not recorded."""
    u = rng.random(n)
    return np.where(u < p_blank, -1, np.where(u < p_blank + p_yes, 1, 0)).astype(np.int8)


def _scenario_counts(n: int) -> np.ndarray:
    shares = np.array(list(SCENARIO_PROPORTIONS.values())) * n
    counts = np.floor(shares).astype(int)
    order = np.argsort(-(shares - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return counts


def _patients(rng: np.random.Generator, n: int, anchor: date) -> dict[str, np.ndarray]:
    scenario = rng.permutation(np.repeat(np.arange(len(SCENARIOS)), _scenario_counts(n)))
    sex = _pick(rng, n, [0.49, 0.49, 0.02])  # F M X
    first_f, first_m = np.array(FIRST_F, dtype=object), np.array(FIRST_M, dtype=object)
    first_any = np.concatenate([first_f, first_m])
    first = np.where(sex == 0, first_f[rng.integers(len(FIRST_F), size=n)],
                     np.where(sex == 1, first_m[rng.integers(len(FIRST_M), size=n)],
                              first_any[rng.integers(len(first_any), size=n)]))
    last = np.array(LAST, dtype=object)[rng.integers(len(LAST), size=n)]
    mrn = rng.choice(9_000_000, size=n, replace=False) + 1_000_000
    age = np.clip(np.rint(rng.normal(60, 11, n)), 35, 85).astype(np.int64)
    return {
        "n": np.array(n),
        "anchor_epoch": np.array((anchor - date(1970, 1, 1)).days),
        "scenario": scenario,
        "sex": sex,
        "first": first,
        "last": last,
        "mrn": mrn,
        "birth_year": anchor.year - age,
        "diabetes": _tristate(rng, n, 0.18, 0.03),
        "smoker": _tristate(rng, n, 0.20, 0.03),
        "surgeon": _pick(rng, n, [0.3, 0.25, 0.25, 0.2]),
    }


def _surgery(rng: np.random.Generator, p: dict) -> None:
    """Index operation (and an earlier one for revisions), days since it and the scenario's event day."""
    n, sc = int(p["n"]), p["scenario"]
    low = np.array([DAYS_SINCE[s][0] for s in range(len(SCENARIOS))])[sc]
    high = np.array([DAYS_SINCE[s][1] for s in range(len(SCENARIOS))])[sc]
    ds = _uniform_int(rng, low, high)
    # Event days (after surgery) for the scenarios that have one; 0 where none.
    recurrent_day = _uniform_int(rng, np.full(n, 105), 180)
    ds = np.where(sc == RECURRENT, recurrent_day + _uniform_int(rng, np.zeros(n), 14), ds)
    event = np.zeros(n, dtype=np.int64)
    event = np.where(sc == RECURRENT, recurrent_day, event)
    event = np.where(sc == ADJACENT, ds - _uniform_int(rng, np.zeros(n), np.clip(ds - 365, 0, 60)), event)
    event = np.where(sc == LATE_HW, np.maximum(180, ds - _uniform_int(rng, np.zeros(n), 60)), event)
    # Red flags are current: their visit is the patient's latest, a few days before the anchor at most.
    for code, first, last, lag in ((CAUDA, 1, 7, 2), (WOUND, 10, 28, 7), (CALF, 7, 56, 7)):
        day = _uniform_int(rng, np.full(n, first), last)
        event = np.where(sc == code, day, event)
        ds = np.where(sc == code, day + _uniform_int(rng, np.zeros(n), lag), ds)
    event = np.where(sc == NEW_DEFICIT, _uniform_int(rng, np.ones(n), 2), event)
    event = np.where(sc == ACUTE, 3, event)

    procedure = _pick(rng, n, [0.38, 0.20, 0.27, 0.15])
    fusion = _pick(rng, n, [0.45, 0.20, 0.35])
    procedure = np.where(np.isin(sc, [NEW_DEFICIT, LATE_HW, ADJACENT]) & (procedure == 3), fusion, procedure)
    procedure = np.where(sc == ACUTE, 3, procedure)  # decompression: the fall is a red flag, not hardware
    levels = _pick(rng, n, [0.50, 0.30, 0.12, 0.05, 0.03])
    levels = np.where(sc == ADJACENT, np.where(rng.random(n) < 0.6, 0, 1), levels)
    levels = np.where((sc == NEW_DEFICIT) & (levels == 3), 0, levels)  # an L5 or S1 root at the fusion
    revision = rng.random(n) < 0.05
    p.update(
        days_since=ds, event_day=event, procedure=procedure, levels=levels,
        instrumented=procedure != 3, revision=revision,
        revision_blank=(~revision) & (rng.random(n) < 0.03),
        earlier_gap=_uniform_int(rng, np.full(n, 365), 1800),
        earlier_procedure=np.where(rng.random(n) < 0.6, 3, 2),
        surgery_epoch=int(p["anchor_epoch"]) - ds,
    )
    p["surgery_year"] = p["surgery_epoch"].astype("datetime64[D]").astype("datetime64[Y]").astype(int) + 1970


def _deficits(rng: np.random.Generator, p: dict) -> None:
    """Pre-operative grades (in thirds) of the 10 muscle-sides and the scenario's affected muscle."""
    n, sc = int(p["n"]), p["scenario"]
    # Root most often compressed at each level set: L4 = 2, L5 = 3, S1 = 4 (muscle index in MUSCLES).
    by_level = np.array([[0.3, 0.7, 0.0], [0.0, 0.35, 0.65], [0.15, 0.5, 0.35], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    cumulative = np.cumsum(by_level, axis=1)[p["levels"]]
    primary = 2 + np.minimum((rng.random(n)[:, None] > cumulative).sum(axis=1), 2)
    side = rng.integers(2, size=n)
    has = rng.random(n) < np.array([HAS_DEFICIT[s] for s in range(len(SCENARIOS))])[sc]

    grade = GRADE_THIRDS[np.array([2, 3, 4, 5, 6])[_pick(rng, n, [0.05, 0.2, 0.2, 0.3, 0.25])]]
    grade = np.where(sc == SLOW, np.where(rng.random(n) < 0.4, 3, 6), grade)
    grade = np.where(sc == PLATEAU, 0, grade)  # 4- for some, once their band is known
    grade = np.where(sc == RECURRENT, np.where(rng.random(n) < 0.5, 9, 11), grade)
    grade = np.where(sc == ACUTE, np.array([9, 11, 12])[rng.integers(3, size=n)], grade)

    base = np.full((n, 10), 15, dtype=np.int16)
    rows = np.arange(n)
    base[rows[has], (primary * 2 + side)[has]] = grade[has]
    # A milder second deficit in another L4/L5/S1 muscle on the same side for some.
    second = 2 + (primary - 2 + 1 + rng.integers(2, size=n)) % 3
    second_grade = np.maximum(grade, np.array([11, 12, 13])[rng.integers(3, size=n)])
    with_second = has & (rng.random(n) < 0.25) & ~np.isin(sc, [SLOW, PLATEAU])
    base[rows[with_second], (second * 2 + side)[with_second]] = second_grade[with_second]

    muscle, aff_side = primary.copy(), side.copy()
    new = sc == NEW_DEFICIT  # a normal L5 or S1 muscle whose root is at the fusion, other side from any deficit
    muscle = np.where(new, np.where(np.isin(p["levels"], [1, 2]), 3 + rng.integers(2, size=n), 3), muscle)
    aff_side = np.where(new, 1 - side, aff_side)
    adjacent = sc == ADJACENT  # a normal L2 or L3 muscle
    muscle = np.where(adjacent, rng.integers(2, size=n), muscle)
    aff_side = np.where(adjacent, rng.integers(2, size=n), aff_side)

    onset_days = _uniform_int(rng, np.full(n, 3), 180)
    onset_days = np.where(sc == SLOW, _uniform_int(rng, np.full(n, 90), 365), onset_days)
    deficit = (base < 15).any(axis=1)
    onset_known = deficit & ((rng.random(n) >= 0.15) | (sc == SLOW))
    p.update(baseline=base, affected=muscle * 2 + aff_side, has_deficit=deficit,
             onset_days=np.where(onset_known, onset_days, -1),
             position=np.where(sc == SLOW, rng.uniform(0.05, 0.45, n), rng.uniform(0.05, 0.95, n)),
             steps=rng.random(n))  # per-patient draw for scenario grade variants


def _exams(rng: np.random.Generator, p: dict) -> dict[str, np.ndarray]:
    """Examination days per patient: planned schedule with jitter and misses, plus scenario exams."""
    n, sc, ds, event = int(p["n"]), p["scenario"], p["days_since"], p["event_day"]
    post = np.rint(PLANNED_DAYS * (1 + rng.uniform(-0.1, 0.1, (n, len(PLANNED_DAYS))))).astype(np.int64)
    days = np.column_stack([-_uniform_int(rng, np.ones(n), 30), post])
    keep = np.ones_like(days, dtype=bool)
    keep[:, 1:] = rng.random(post.shape) >= MISSED_VISIT
    keep[sc == RECURRENT, 2:4] = True  # the recovery before the fall must be seen
    keep[sc == PLATEAU, 4:] = True  # the plateau is seen at 6 months or later
    keep[:, 0] &= sc != NO_PREOP
    keep[np.isin(sc, ENDS_AT_EVENT)[:, None] & (days > event[:, None])] = False
    keep &= days <= ds[:, None]
    lonely = ~keep[:, 1:].any(axis=1) & (days[:, 1] <= ds) & (event == 0)
    keep[lonely, 1] = True  # everyone operated long enough ago has at least one post-op exam
    pid = np.repeat(np.arange(n), days.shape[1])[keep.ravel()]
    day = days.ravel()[keep.ravel()]

    has_event = np.isin(sc, [RECURRENT, NEW_DEFICIT, LATE_HW, CAUDA, WOUND, CALF, ACUTE, ADJACENT])
    acute = np.flatnonzero(sc == ACUTE)
    pid = np.concatenate([pid, np.flatnonzero(has_event), acute])
    day = np.concatenate([day, event[has_event], np.ones(len(acute), dtype=np.int64)])
    key = np.unique(pid.astype(np.int64) * DAY_SPAN + day + DAY_OFFSET)
    pid, day = key // DAY_SPAN, key % DAY_SPAN - DAY_OFFSET
    latest = np.append(pid[1:] != pid[:-1], True)
    return {"key": key, "pid": pid, "day": day, "latest": latest}


def _factors(p: dict, pid: np.ndarray) -> pd.DataFrame:
    """Recovery factors as the assessment derives them from the records (unknown stays <NA>)."""
    onset, diabetes = p["onset_days"][pid], p["diabetes"][pid]
    return pd.DataFrame({
        "deficit_days": pd.array(np.where(onset >= 0, onset, np.nan), dtype="Float64"),
        "diabetes": pd.arrays.BooleanArray(diabetes == 1, diabetes < 0),
        "age": pd.array(p["surgery_year"][pid] - p["birth_year"][pid], dtype="Float64"),
    })


def _band(p: dict, pid: np.ndarray, baseline_thirds: np.ndarray, day: np.ndarray,
          reference: Reference) -> tuple[np.ndarray, np.ndarray]:
    band = expected_band(baseline_thirds / 3, day, _factors(p, pid), reference)
    return band["expected_low"].to_numpy(float), band["expected_high"].to_numpy(float)


def _choose_plateau_baseline(rng: np.random.Generator, p: dict, exams: dict, reference: Reference) -> None:
    """Plateau patients have a complete deficit (0) that never recovers, where the expected range's lower edge
    at the last exam lies clearly above 0 (everyone in Liu 2013 regained a grade); the others (slow
    modifiers, a half at random) start at 4- and stay at 3 after the operation: weaker than before by two
    steps, less than a grade. For baselines 1-4+ no recovery at all is inside the expected range."""
    patients = np.flatnonzero(p["scenario"] == PLATEAU)
    if not len(patients):
        return
    last_day = exams["day"][exams["latest"]][np.searchsorted(exams["pid"][exams["latest"]], patients)]
    low, _ = _band(p, patients, np.zeros(len(patients)), last_day, reference)
    clear = low - reference.status["behind_tolerance"] >= 0.1
    change = patients[~clear | (rng.random(len(patients)) < 0.5)]
    p["baseline"][change, p["affected"][change]] = 11


def _grade_in_band(value: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The MRC grade (in thirds) nearest to value that still reads as inside [low, high].

    Grades are whole below 3 and a third apart above it, so plain rounding can leave the band by up to
    half a grade; step towards the band when it does (the band edges get BAND_SLACK of grace).
    """
    nearest = GRADE_THIRDS[np.searchsorted((GRADE_THIRDS[:-1] + GRADE_THIRDS[1:]) / 2, value * 3)]
    floor, ceiling = (low - BAND_SLACK) * 3, (high + BAND_SLACK) * 3
    below_ceiling = GRADE_THIRDS[np.maximum(np.searchsorted(GRADE_THIRDS, ceiling + 1e-9, side="right") - 1, 0)]
    grade = np.where((nearest > ceiling) & (below_ceiling >= floor), below_ceiling, nearest)
    above_floor = GRADE_THIRDS[np.minimum(np.searchsorted(GRADE_THIRDS, floor - 1e-9), len(GRADE_THIRDS) - 1)]
    return np.where(grade < floor, above_floor, grade)


def _strength(rng: np.random.Generator, p: dict, exams: dict, reference: Reference) -> pa.Table:
    """All 5 muscles x 2 sides at every exam: baseline before surgery, then the curve or the scenario."""
    n_exams = len(exams["pid"])
    pid = np.repeat(exams["pid"], 10)
    day = np.repeat(exams["day"], 10)
    ms = np.tile(np.arange(10), n_exams)
    pre = day < 0
    base = p["baseline"][pid, ms]
    grade = np.where(pre, base, 15).astype(np.int16)

    # Deficits recover along the published curve, at the patient's own position inside the band.
    rec = np.flatnonzero(~pre & (base < 15))
    low, high = _band(p, pid[rec], base[rec], day[rec], reference)
    position = np.clip(p["position"][pid[rec]] + rng.normal(0, 0.05, len(rec)), 0, 1)
    thirds = _grade_in_band(low + position * (high - low), low, high)
    thirds = pd.Series(thirds).groupby(pid[rec] * 10 + ms[rec]).cummax().to_numpy()
    # A latest 5- sits within measurement noise of 5 (recovered or on_track, by the reading): keep the last
    # grade clear-cut: 5 when 5 is in the band, else 4+ when that is, else 5 (just above a band capped by
    # the patient's modifiers).
    last_5minus = np.repeat(exams["latest"], 10)[rec] & (thirds == 14)
    five_fits = 15 <= (high + BAND_SLACK) * 3
    four_plus_fits = 13 >= (low - BAND_SLACK) * 3
    thirds = np.where(last_5minus, np.where(~five_fits & four_plus_fits, 13, 15), thirds)
    grade[rec] = thirds

    # The affected muscle of the deviating scenarios (a few rows: work on those only).
    special = np.isin(p["scenario"], [PLATEAU, RECURRENT, NEW_DEFICIT, ACUTE, ADJACENT])
    rows = np.flatnonzero(~pre & special[pid] & (ms == p["affected"][pid]))
    who, d, b = pid[rows], day[rows], base[rows].astype(np.int64)
    sc, steps, event = p["scenario"][who], p["steps"][who], p["event_day"][who]
    coin, coin2 = steps * 4 % 1 < 0.5, steps * 8 % 1 < 0.5  # independent-looking bits of one draw
    # plateau_behind: a complete deficit with no gain at all, or 4- that stays at 3 after the operation.
    plateau = np.where(b == 11, 9, b)
    # recurrent_radicular: partial gain at 2 weeks, 4+ or 5 by 6 weeks–3 months, then a fall at the event.
    best = np.where((b == 9) & (steps < 0.5), 13, 15)
    fallen = np.where((b == 9) & (best == 15) & coin2, 11, b)
    recurrent = np.where(d == event, fallen, np.where(d < 30, np.where(b == 9, 11, 12) + coin, best))
    # new_deficit_instrumented: 2 or 3 from day 1–2, for some one grade better (at most 4-) from 6 weeks.
    first = np.where(steps < 0.5, 6, 9)
    new_deficit = np.where((d >= 35) & coin, np.minimum(first + 3, 11), first)
    # acute_progressive: better on day 1, at least 1 1/3 grades worse on day 3 (not below baseline by 1).
    day1 = np.where(b == 9, 13, np.where(b == 11, 14 + (steps < 0.5), 15))
    acute = np.where(d == 1, day1, np.where(b == 12, 11, 9))
    # adjacent_segment: 4+ in a previously normal L2/L3 muscle at the event.
    adjacent = np.where(d == event, 13, 15)
    grade[rows] = np.select([sc == PLATEAU, sc == RECURRENT, sc == NEW_DEFICIT, sc == ACUTE],
                            [plateau, recurrent, new_deficit, acute], adjacent)

    token = np.searchsorted(GRADE_THIRDS, grade).astype(np.int8)
    return pa.table({
        "patient_id": _dict(pid, _patient_ids(p)),
        "exam_date": _dates(p["surgery_epoch"][pid] + day),
        "muscle": _dict(ms // 2, MUSCLES),
        "side": _dict(ms % 2, SIDES),
        "mrc": _dict(token, GRADE_TOKENS),
    })


def _visits(rng: np.random.Generator, p: dict, exams: dict) -> pa.Table:
    """A visit on every exam day, inpatient CRP days for some, and the scenarios' event visits."""
    n, sc, ds, event = int(p["n"]), p["scenario"], p["days_since"], p["event_day"]
    crp_patient = (rng.random(n) < 0.25) | (sc == WOUND)
    crp_days = np.array([1, 3, 5, 7])
    crp_take = crp_patient[:, None] & (crp_days <= ds[:, None])
    crp_take[:, 3] &= (rng.random(n) < 0.5) | (sc == WOUND)
    crp_take &= ~(np.isin(sc, ENDS_AT_EVENT)[:, None] & (crp_days > event[:, None]))
    has_event = event > 0
    key = np.unique(np.concatenate([
        exams["key"],
        (np.repeat(np.arange(n), 4) * DAY_SPAN + np.tile(crp_days, n) + DAY_OFFSET)[crp_take.ravel()],
        np.flatnonzero(has_event) * DAY_SPAN + event[has_event] + DAY_OFFSET,
    ]))
    pid, day = key // DAY_SPAN, key % DAY_SPAN - DAY_OFFSET
    m = len(key)
    pre, post = day < 0, day >= 0
    s = sc[pid]

    # Pain and disability: high before, better after, a surgical back-pain bump in the first days.
    leg0 = rng.uniform(5, 9, n)[pid]
    back0 = rng.uniform(3, 8, n)[pid]
    odi0 = rng.uniform(30, 68, n)[pid]
    residual = np.where(s == PLATEAU, 0.5, 0.15)
    # Smooth falling courses plus at most one point of noise: pain never "comes back" by 3 points by chance.
    leg = np.rint(np.where(pre, leg0, leg0 * (residual + 0.35 * np.exp(-day / 45)))) + rng.integers(-1, 2, m)
    back = np.rint(np.where(pre, back0, back0 * 0.4 + 3.5 * np.exp(-day / 10))) + rng.integers(-1, 2, m)
    odi = np.where(pre, odi0, odi0 * (0.4 + 0.5 * np.exp(-day / 60))) + rng.normal(0, 4, m)
    leg_blank, back_blank = rng.random(m) < 0.05, rng.random(m) < 0.05
    odi_blank = (rng.random(m) < 0.1) | (post & (day < 14))

    col: dict[str, np.ndarray] = {
        "radicular_pain": np.where(pre, _tristate(rng, m, 0.8, 0.05), _tristate(rng, m, 0.0, 0.1)),
        "numbness": np.where(pre, _tristate(rng, m, 0.5, 0.05), _tristate(rng, m, 0.0, 0.15)),
    }
    for name in ("saddle_anesthesia", "urinary_retention", "fecal_incontinence"):
        col[name] = _tristate(rng, m, 0.0, 0.15)
    early = post & (day <= 42)
    for name in ("fever", "wound_drainage"):
        col[name] = np.where(early, _tristate(rng, m, 0.0, 0.1), _tristate(rng, m, 0.0, 0.5))
    col["calf_swelling"] = np.where(post & (day <= 90), _tristate(rng, m, 0.0, 0.2), _tristate(rng, m, 0.0, 0.6))
    radiograph = p["instrumented"][pid] & (day >= 35) & (rng.random(m) < 0.75)
    for name in ("screw_lucency", "implant_migration", "rod_fracture"):
        col[name] = np.where(radiograph, 0, -1).astype(np.int8)

    # CRP: peak on day 2–3, then halves every 2.6 days; an infection falls slowly and rises again.
    peak = np.where(p["instrumented"], rng.uniform(60, 160, n), rng.uniform(30, 80, n))[pid]
    peak_day = rng.integers(2, 4, n)[pid]
    half_life = np.where(s == WOUND, 4.0, 2.6)
    peak = np.where(s == WOUND, rng.uniform(70, 110, n)[pid], peak)
    rising = peak * (0.6 + 0.4 * (day - 1) / (peak_day - 1))
    crp = np.where(day <= peak_day, rising, peak * 0.5 ** ((day - peak_day) / half_life))
    crp = crp * rng.uniform(0.92, 1.08, m)
    crp_row = np.isin(day, crp_days) & crp_patient[pid]
    crp = np.where(crp_row, crp, np.nan)

    # Scenario events.
    at = has_event[pid] & (day == event[pid])
    on = {code: at & (s == code) for code in (RECURRENT, ADJACENT, LATE_HW, CAUDA, WOUND, CALF, ACUTE)}
    u = rng.random(m)
    for code, low, high in ((RECURRENT, 6, 8), (ADJACENT, 5, 7), (CALF, 4, 6)):
        leg = np.where(on[code], low + u * (high - low), leg)
    for code in (RECURRENT, ADJACENT):
        col["radicular_pain"] = np.where(on[code], 1, col["radicular_pain"])
        col["numbness"] = np.where(on[code] & (u < 0.5), 1, col["numbness"])
    finding = rng.integers(3, size=m)
    for i, name in enumerate(("screw_lucency", "implant_migration", "rod_fracture")):
        col[name] = np.where(on[LATE_HW], (finding == i).astype(np.int8), col[name])
    back = np.where(on[LATE_HW], 6 + 3 * u, back)
    odi = np.where(on[LATE_HW], 40 + 20 * u, odi)
    odi_blank &= ~on[LATE_HW]
    col["saddle_anesthesia"] = np.where(on[CAUDA], 1, col["saddle_anesthesia"])
    col["urinary_retention"] = np.where(on[CAUDA], 1, col["urinary_retention"])
    col["fecal_incontinence"] = np.where(on[CAUDA], (u < 0.3).astype(np.int8), col["fecal_incontinence"])
    col["fever"] = np.where(on[WOUND], 1, col["fever"])
    col["wound_drainage"] = np.where(on[WOUND], 1, col["wound_drainage"])
    crp = np.where(on[WOUND], rng.uniform(95, 170, m), crp)
    back = np.where(on[WOUND], 6 + 2 * u, back)
    col["calf_swelling"] = np.where(on[CALF], 1, col["calf_swelling"])
    leg = np.where(on[ACUTE], 8 + 2 * u, leg)
    col["numbness"] = np.where(on[ACUTE], 1, col["numbness"])
    for flag in (leg_blank, back_blank):
        flag &= ~at

    notes = _notes(rng, p, pid, day, s, at)
    return pa.table({
        "patient_id": _dict(pid, _patient_ids(p)),
        "visit_date": _dates(p["surgery_epoch"][pid] + day),
        "leg_pain_nrs": pa.array(np.clip(np.rint(leg), 0, 10).astype(np.int64), mask=leg_blank),
        "back_pain_nrs": pa.array(np.clip(np.rint(back), 0, 10).astype(np.int64), mask=back_blank),
        "odi": pa.array(np.clip(np.rint(odi), 0, 100).astype(np.int64), mask=odi_blank),
        **{name: _bool(col[name]) for name in ("radicular_pain", "numbness", "saddle_anesthesia",
                                               "urinary_retention", "fecal_incontinence", "fever",
                                               "wound_drainage")},
        "crp_mg_l": pa.array(np.round(crp, 1), mask=np.isnan(crp)),
        **{name: _bool(col[name]) for name in ("calf_swelling", "screw_lucency", "implant_migration",
                                               "rod_fracture")},
        "notes": pa.array(notes, type=pa.string(), from_pandas=True),
    })


PRE_NOTES = ("Consented for surgery.", "Foot slapping when walking.", "Leg pain worse at night.",
             "MRI reviewed with patient.", "Uses a stick outdoors.", "{name} consented for surgery today.")
EARLY_NOTES = ("Wound clean and dry.", "Mobilising with physio.", "Drain out.", "Leg pain much better.",
               "Stairs assessed.", "{name} walking the ward with a frame.", "Seen with family; {name} keen to go home.")
LATE_NOTES = ("Walking without aids.", "Back at work part time.", "Physio twice a week.", "X-ray reviewed.",
              "Doing well.", "{name} reports less leg pain.", "Daughter reports {name} is much more active.")
EVENT_NOTES = {
    RECURRENT: "Leg pain back for two weeks; foot weaker again.",
    ADJACENT: "New thigh pain and weakness climbing stairs.",
    LATE_HW: "Back pain worse since last review; radiograph findings discussed.",
    CAUDA: "Numb in saddle area and unable to pass urine.",
    WOUND: "Temperature 38.6; wound oozing.",
    CALF: "Swollen tender calf on one side.",
    ACUTE: "Severe leg pain overnight; foot weaker than yesterday.",
}


def _notes(rng: np.random.Generator, p: dict, pid: np.ndarray, day: np.ndarray, s: np.ndarray,
           at: np.ndarray) -> np.ndarray:
    """Short free text; about one note in seven names the patient (to test that notes never leak)."""
    m = len(pid)
    title = np.array(["Ms", "Mr", "Mx"], dtype=object)[p["sex"]]
    full = p["first"] + " " + p["last"]
    formal = title + " " + p["last"]
    notes = np.full(m, None, dtype=object)
    for phase, pool in ((day < 0, PRE_NOTES), ((day >= 0) & (day <= 14), EARLY_NOTES), (day > 14, LATE_NOTES)):
        plain = np.array([t for t in pool if "{name}" not in t], dtype=object)
        named = [t.split("{name}") for t in pool if "{name}" in t]
        before = np.array([b for b, _ in named], dtype=object)
        after = np.array([a for _, a in named], dtype=object)
        choice_plain = plain[rng.integers(len(plain), size=m)]
        pick = rng.integers(len(named), size=m)
        who = np.where(rng.random(m) < 0.5, full[pid], formal[pid])
        choice_named = before[pick] + who + after[pick]
        u = rng.random(m)
        text = np.where(u < 0.08, choice_named, np.where(u < 0.55, choice_plain, None))
        notes = np.where(phase, text, notes)
    for code, text in EVENT_NOTES.items():
        notes = np.where(at & (s == code), text, notes)
    return notes


# ------------------------------------------------------------------------------------------- output
def _patient_ids(p: dict) -> list[str]:
    """P00001, P00002, … from the cohort's first number (a later cohort starts after the ids already stored)."""
    first, n = int(p["first_id"]), int(p["n"])
    width = max(5, len(str(first + n - 1)))
    return [f"P{i:0{width}d}" for i in range(first, first + n)]


def _dict(indices: np.ndarray, values, mask: np.ndarray | None = None) -> pa.Array:
    """Text column from codes: stored as a dictionary, written as the text."""
    codes = pa.array(np.asarray(indices, dtype=np.int32), mask=mask)
    return pa.DictionaryArray.from_arrays(codes, pa.array(list(values), type=pa.string()))


def _bool(tristate: np.ndarray) -> pa.Array:
    return _dict(np.maximum(tristate, 0), ("no", "yes"), mask=tristate < 0)


def _dates(epoch_days: np.ndarray, mask: np.ndarray | None = None) -> pa.Array:
    return pa.array(np.asarray(epoch_days, dtype=np.int32), type=pa.date32(), mask=mask)


def _patients_table(p: dict) -> pa.Table:
    mrn = pd.Series(p["mrn"]).astype(str).str.zfill(7)
    return pa.table({
        "patient_id": pa.array(_patient_ids(p)),
        "name": pa.array(p["first"] + " " + p["last"], type=pa.string()),
        "mrn": pa.array(("MRN" + mrn).tolist(), type=pa.string()),
        "birth_year": pa.array(p["birth_year"]),
        "sex": _dict(p["sex"], ("F", "M", "X")),
        "diabetes": _bool(p["diabetes"]),
        "smoker": _bool(p["smoker"]),
        "surgeon": _dict(p["surgeon"], SURGEONS),
    })


def _surgeries_table(p: dict) -> pa.Table:
    n = int(p["n"])
    earlier = np.flatnonzero(p["revision"])
    pid = np.concatenate([earlier, np.arange(n)])
    epoch = np.concatenate([p["surgery_epoch"][earlier] - p["earlier_gap"][earlier], p["surgery_epoch"]])
    procedure = np.concatenate([p["earlier_procedure"][earlier], p["procedure"]])
    levels = np.concatenate([p["levels"][earlier], p["levels"]])
    revision = np.concatenate([np.zeros(len(earlier), np.int8), p["revision"].astype(np.int8)])
    revision_blank = np.concatenate([np.zeros(len(earlier), bool), p["revision_blank"]])
    onset = np.concatenate([np.full(len(earlier), -1), p["onset_days"]])
    order = np.lexsort((epoch, pid))
    pid, epoch, procedure, levels = pid[order], epoch[order], procedure[order], levels[order]
    revision, revision_blank, onset = revision[order], revision_blank[order], onset[order]
    return pa.table({
        "patient_id": _dict(pid, _patient_ids(p)),
        "surgery_date": _dates(epoch),
        "procedure": _dict(procedure, PROCEDURES),
        "levels": _dict(levels, LEVELS),
        "instrumented": _bool((procedure != 3).astype(np.int8)),
        "revision": _bool(np.where(revision_blank, -1, revision).astype(np.int8)),
        "deficit_onset_date": _dates(epoch - np.maximum(onset, 0), mask=onset < 0),
    })


def _scenarios_table(p: dict, exams: dict, strength: pa.Table) -> pa.Table:
    """For each patient: scenario, one muscle to check, its expected status and expected prompt categories."""
    n, sc, aff = int(p["n"]), p["scenario"], p["affected"]
    # Latest grade of the affected muscle (rows are in exam order, 10 per exam).
    latest_rows = np.flatnonzero(exams["latest"]) * 10 + aff[exams["pid"][exams["latest"]]]
    latest = np.full(n, -1)
    tokens = strength["mrc"].combine_chunks().indices.to_numpy()
    latest[exams["pid"][exams["latest"]]] = GRADE_THIRDS[tokens[latest_rows]]
    base = p["baseline"][np.arange(n), aff]
    status = np.where(base == 15, "no_deficit", np.where(latest == 15, "recovered", "on_track")).astype(object)
    fixed = {PLATEAU: "behind", RECURRENT: "deteriorating", NEW_DEFICIT: "new_deficit", ACUTE: "deteriorating",
             ADJACENT: "new_deficit", NO_PREOP: "no_baseline"}
    for code, value in fixed.items():
        status = np.where(sc == code, value, status)
    categories = np.array([";".join(SCENARIO_CATEGORIES[name]) for name in SCENARIOS], dtype=object)[sc]
    # new_deficit_instrumented: within 14 days the deficit is also a hematoma emergency; later, while it has
    # not improved since the first post-operative exam, an unexplained deficit (MRI) as well as the CT.
    latest_day = np.full(n, -1)
    latest_day[exams["pid"][exams["latest"]]] = exams["day"][exams["latest"]]
    unchanged = latest == np.where(p["steps"] < 0.5, 6, 9)
    categories = np.where((sc == NEW_DEFICIT) & (latest_day <= 14), "red_flag;hardware", categories)
    categories = np.where((sc == NEW_DEFICIT) & (latest_day > 14) & unchanged, "compression;hardware", categories)
    return pa.table({
        "patient_id": pa.array(_patient_ids(p)),
        "scenario": _dict(sc, SCENARIOS),
        "affected_muscle": _dict(aff // 2, MUSCLES),
        "affected_side": _dict(aff % 2, SIDES),
        "expected_status": pa.array(status, type=pa.string()),
        "expected_rule_categories": pa.array(np.where(categories == "", None, categories), type=pa.string(),
                                             from_pandas=True),
    })


def _to_text_frame(table: pa.Table) -> pd.DataFrame:
    text = pa.table({name: table[name].cast(pa.string()) for name in table.column_names})
    return text.to_pandas()


def _readme(scenarios: pa.Table, n: int, seed: int, anchor: date) -> str:
    counts = scenarios["scenario"].combine_chunks().indices.to_numpy()
    lines = [
        "# Demo cohort (synthetic)",
        "",
        "**Every record here is synthetic.** Names, MRNs, dates and findings were drawn at random by",
        "`dashboard/demo.py`; they describe no real person. Names and MRNs are deliberately realistic so",
        "that de-identification (conference mode, exports, logs) can be tested; some visit notes name the",
        "patient for the same reason.",
        "",
        f"Made with `python -m dashboard demo OUT_DIR --patients {n} --seed {seed}` (or",
        f"`python -m dashboard.demo OUT_DIR --patients {n} --seed {seed}`); the same seed always gives the same",
        f"files. All dates count back from the fixed anchor day **{anchor.isoformat()}**, and none lies after it:",
        f"assess with `--as-of {anchor.isoformat()}` to get the statuses listed in `scenarios.csv`.",
        "",
        "Files: `patients.csv`, `surgeries.csv`, `strength.csv`, `visits.csv` (records format v1) and",
        "`scenarios.csv` (not a records file; the reader ignores it): for each patient its scenario, one",
        "muscle and side to check, the trajectory status that muscle should get as of the anchor, and the",
        "prompt categories that should fire (`;`-joined, empty for none). Expected statuses assume the",
        "published reference `data/reference/published.yaml` (published-v2).",
        "",
        "| scenario | target share | patients here | expected status | expected categories | what happens |",
        "|---|---|---|---|---|---|",
    ]
    what = {
        "normal_recovery": ("on_track / recovered / no_deficit", "follows the published curve at the patient's "
                            "own position inside the expected range; about a quarter have no deficit"),
        "slow_severe": ("on_track", "baseline 1–2, weak for 3–12 months before surgery, slow recovery in the band"),
        "plateau_behind": ("behind", "complete deficit (0) with no gain at all, below the expected range from "
                           "about 3 months (everyone regains a grade, Liu 2013); or 4- that stays at 3 after "
                           "the operation (weaker than before by two steps, less than a grade)"),
        "recurrent_radicular": ("deteriorating", "recovers to 4+/5 by 6 weeks–3 months, falls back at 3–6 "
                                "months (≥ 1 1/3 grades) with radicular pain the same day"),
        "new_deficit_instrumented": ("new_deficit", "instrumented, 16–80 days ago; a normal L5/S1 muscle whose "
                                     "root is at the fused level is 2–3 on day 1–2 and stays weak (≤ 4-)"),
        "late_hardware": ("on_track / recovered / no_deficit", "instrumented, normal recovery, then at ≥ 6 "
                          "months screw lucency, implant migration or rod fracture with back pain up"),
        "cauda_equina": ("on_track / recovered / no_deficit", "saddle anaesthesia and urinary retention at a "
                         "visit on day 1–7 after surgery, the latest visit (0–2 days before the anchor)"),
        "wound_infection": ("on_track / recovered / no_deficit", "CRP falls slowly to ~30–55 by day 7, then "
                            "95–170 with fever and wound drainage on day 10–28, the latest visit (0–7 days ago)"),
        "calf_swelling": ("on_track / recovered / no_deficit", "calf swelling at a visit in weeks 1–8, the "
                          "latest visit (0–7 days ago)"),
        "acute_progressive": ("deteriorating", "decompression 3–5 days ago; better on day 1, ≥ 1 1/3 grades "
                              "worse on day 3 (the latest exam), with severe leg pain"),
        "adjacent_segment": ("new_deficit", "single-level L4-L5/L5-S1 fusion; after ≥ 12 months a normal L2/L3 "
                             "muscle is 4+ with radicular pain"),
        "no_preop_exam": ("no_baseline", "no pre-operative strength examination"),
    }
    for code, name in enumerate(SCENARIOS):
        status, text = what[name]
        lines.append(f"| {name} | {SCENARIO_PROPORTIONS[name]:.0%} | {int((counts == code).sum())} | {status} | "
                     f"{', '.join(SCENARIO_CATEGORIES[name]) or '—'} | {text} |")
    lines += [
        "",
        "Cohort: ages about 35–85 (mean about 60), sex F/M with a few X, diabetes about 18 %, smokers about",
        "20 % (a few unknown), four surgeons, surgeries spread over the 2.5 years before the anchor; levels",
        "mostly L4-L5 and L5-S1 with some two-level and a few L3-L4 operations; TLIF, PLIF and posterolateral",
        "fusion (instrumented) and about 15 % decompression; about 5 % revisions with the earlier operation",
        "listed. Strength: all five key muscles on both sides at every examination; pre-operative deficits",
        "only in L4/L5/S1 muscles on one side. Examinations before surgery (1–30 days) and at 2 and 6 weeks,",
        "3, 6, 12 and 24 months (±10 %), about 15 % missed, plus the scenarios' extra examinations.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m dashboard.demo OUT_DIR [--patients N] [--seed S]`."""
    parser = argparse.ArgumentParser(prog="python -m dashboard.demo", description=__doc__.splitlines()[0])
    parser.add_argument("out_dir")
    parser.add_argument("--patients", type=int, default=DEFAULT_PATIENTS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    print(write_cohort(args.out_dir, args.patients, args.seed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
