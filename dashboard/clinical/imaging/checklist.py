"""The imaging checklist: declarative rules (data/rules/imaging_rules.yaml) evaluated over a cohort.

A rule looks at one scope of the assessment — a visit, a muscle trajectory, or a muscle trajectory with a
visit near its latest exam — and fires when all its conditions hold. Each prompt carries the rule id,
evidence with values and dates, modality, urgency and the published source. Vectorised: each scope is one
whole-cohort table of plain columns (imaging.rule_table), and each condition one numpy test over it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from dashboard.clinical.data_files import read_yaml
from dashboard.clinical.frames import rows_in, sort_rank, take_text, text_column
from dashboard.clinical.imaging.rule_table import (
    COMPARISONS,
    Column,
    Maker,
    Table,
    column_of,
    flag,
    frame_makers,
    holds,
    number,
    taker,
)
from dashboard.clinical.mrc import MUSCLE_LABELS, format_mrc

RULES_PATH = Path(__file__).resolve().parents[3] / "data" / "rules" / "imaging_rules.yaml"
CATEGORIES = ("red_flag", "compression", "recurrence", "hardware", "recovery")
#: `electrodiagnostics` (EMG/nerve conduction) is a non-imaging prompt: an extension (docs/format-extensions.md).
MODALITIES = ("mri", "mri_contrast", "ct", "ct_myelography", "radiograph", "flexion_extension_radiograph",
              "venous_duplex", "electrodiagnostics")
#: Modalities answered by one scan: a contrast MRI protocol includes the sequences without contrast, so two
#: prompts asking for MRI of one patient are one prompt (one scan, one prompt, one decision).
SCAN_OF_MODALITY = {"mri": "mri", "mri_contrast": "mri"}
HAZARD_ID = re.compile(r"H\d\d")
URGENCIES = ("emergency", "urgent", "routine")
SCOPES = ("visit", "muscle", "muscle_visit")
OPERATORS = (*COMPARISONS, "in", "is")
PROMPT_COLUMNS = ["patient_id", "rule_id", "category", "modality", "urgency", "summary", "evidence", "source",
                  "rule_ids", "decision_basis"]
#: Red-flag findings that stay in force until a later visit records them absent: a visit that leaves them
#: blank does not resolve them (unknown is not resolved). Each gives `<finding>_last` (its last recorded
#: value), `<finding>_date` and `<finding>_day` (when that was recorded).
CARRIED_FINDINGS = ("saddle_anesthesia", "urinary_retention", "fecal_incontinence", "calf_swelling", "fever",
                    "wound_drainage", "anal_tone_reduced", "perianal_sensation_reduced", "altered_mentation",
                    "respiratory_rate", "systolic_bp")
#: qSOFA (Sepsis-3): respiratory rate 22/min or more, systolic blood pressure 100 mmHg or less, altered
#: mentation; each read as last recorded, and a criterion never recorded never counts (it is unknown).
QSOFA_RESPIRATORY_RATE, QSOFA_SYSTOLIC_BP = 22, 100
CARRIED_FIELDS = tuple(f"{finding}_{part}" for finding in CARRIED_FINDINGS for part in ("last", "date", "day"))
#: The last CRP measured (a later visit without CRP leaves it in force) and when, with its rise from the
#: lowest earlier value measured from day 3 (after the normal post-operative peak has begun to fall).
CRP_FIELDS = ("crp_last", "crp_last_date", "crp_last_day", "crp_rise_last", "fever_visits")
#: Radiating pain and leg pain as last recorded: whether the radiating pain was new (an earlier post-operative
#: visit recorded it absent), and the leg pain's rise from its lowest since the operation at its last record.
PAIN_FIELDS = ("radicular_pain_last", "radicular_pain_date", "radicular_pain_day", "radicular_pain_new",
               "radicular_pain_new_last", "leg_pain_last", "leg_pain_date", "leg_pain_rise_last")
#: Visits within this many days of a muscle's latest exam give its `leg_pain_near` (the highest leg pain).
NEAR_VISIT_DAYS = 7

PATIENT_FIELDS = ("instrumented", "revision", "days_since_surgery", "age", "diabetes", "smoker", "procedure",
                  "levels", "implants", "implant_levels", "operated_levels")
VISIT_FIELDS = ("visit_date", "day", "leg_pain_nrs", "back_pain_nrs", "odi", "radicular_pain", "numbness",
                "saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever", "wound_drainage",
                "crp_mg_l", "calf_swelling", "screw_lucency", "implant_migration", "rod_fracture",
                "anal_tone_reduced", "perianal_sensation_reduced", "altered_mentation", "respiratory_rate",
                "systolic_bp", "qsofa", "crp_rise_from_nadir", "back_pain_rise", "leg_pain_rise", "is_latest_visit",
                "days_ago",
                *CARRIED_FIELDS, *CRP_FIELDS, *PAIN_FIELDS, "new_neuro_deficit")
MUSCLE_FIELDS = ("muscle", "root", "side", "baseline_mrc", "baseline_date", "first_post_mrc", "first_post_date",
                 "best_prior_mrc", "best_prior_date", "latest_mrc", "latest_date", "latest_day", "expected_mrc",
                 "expected_low", "expected_high", "status", "drop_from_best", "drop_from_first",
                 "gain_before_drop", "root_at_operated_level", "root_at_implant_level", "first_post_day",
                 "no_baseline", "new_vs_baseline", "newly_weak", "loss", "gain", "weaker_both_sides",
                 "leg_pain_near", "muscle_label", "side_label", "gain_since_first", "first_post_new",
                 "start_mrc", "days_since_best", "leg_pain_rise_near")
FIELDS_BY_SCOPE = {
    "visit": set(PATIENT_FIELDS) | set(VISIT_FIELDS),
    "muscle": set(PATIENT_FIELDS) | set(MUSCLE_FIELDS),
    "muscle_visit": set(PATIENT_FIELDS) | set(VISIT_FIELDS) | set(MUSCLE_FIELDS),
}
TEXT = pa.large_string()  # the Arrow type of evidence text (that of pandas' Arrow strings)
GRADE_FIELDS = {"baseline_mrc", "first_post_mrc", "best_prior_mrc", "latest_mrc"}
#: Nerve roots at risk at each lumbar segment: the exiting and the traversing root.
SEGMENT_ROOTS = {"L1-L2": ("L1", "L2"), "L2-L3": ("L2", "L3"), "L3-L4": ("L3", "L4"), "L4-L5": ("L4", "L5"),
                 "L5-S1": ("L5", "S1")}
#: The roots that supply each key muscle (a muscle is at an operated level when any of them is): tibialis
#: anterior L4–L5 (foot drop involved L5 in 93% of Liu 2013's cohort), quadriceps L3–L4, iliopsoas L1–L3.
MUSCLE_ROOT_SETS = {"hip_flexion": ("L1", "L2", "L3"), "knee_extension": ("L3", "L4"),
                    "ankle_dorsiflexion": ("L4", "L5"), "great_toe_extension": ("L5",),
                    "ankle_plantarflexion": ("S1",)}


#: Muscles as evidence lines name them ("great-toe extension (EHL)").
MUSCLE_WORDS = {muscle: label[0].lower() + label[1:] for muscle, label in MUSCLE_LABELS.items()}


class RulesError(ValueError):
    """A rules file that cannot be used; the message names the rule and the field."""


@dataclass(frozen=True)
class Rule:
    id: str
    category: str
    modality: str
    urgency: str
    scope: str
    summary: str
    conditions: tuple[dict, ...]
    any_of: tuple[dict, ...]
    evidence: tuple[str, ...]
    source_keys: tuple[str, ...]
    window_days: int
    rationale: str
    hazards: tuple[str, ...] = ()
    escalate_if: tuple[dict, ...] = ()  # any of these: emergency instead of the rule's urgency
    note_if: tuple[dict, ...] = ()  # any of these (when not escalated): its label is one more evidence line


    @functools.cached_property
    def fields(self) -> frozenset[str]:
        """The fields the rule reads: in its conditions and in its evidence templates."""
        return frozenset(field for item in self.conditions + self.any_of + self.escalate_if + self.note_if
                         for field in _item_fields(item)) | frozenset(
            field for template in self.evidence for field in re.findall(r"{(\w+)}", template) if field != "finding")


def _item_fields(item: dict) -> list[str]:
    """The fields a condition, or a group of conditions ({all: [...]}), reads, with those of its label."""
    fields = [f for c in item["all"] for f in _item_fields(c)] if "all" in item else [item["field"]]
    return fields + re.findall(r"{(\w+)}", item.get("label", ""))


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    sources: dict[str, dict]
    path: Path
    no_prompt: dict = dataclasses.field(default_factory=dict)

    def source_text(self, rule: Rule) -> str:
        return "; ".join(self.sources[key]["citation"] for key in rule.source_keys)

    @property
    def no_prompt_text(self) -> str:
        """What to say when no rule fired: neutral, what was checked and what the rules cannot see. Never
        'nothing calls for imaging': the rules cover only what was recorded."""
        parts = [self.no_prompt.get("checked", "No rule fired on the recorded findings."),
                 self.no_prompt.get("not_seen", "Findings that were not recorded are not checked.")]
        return " ".join(" ".join(str(part).split()) for part in parts)


# ------------------------------------------------------------------------------------------------- loading
def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and check the file once per version of it (cached by path and modification time)."""
    path = Path(path or RULES_PATH).resolve()
    return _load_rules_cached(path, path.stat().st_mtime_ns if path.exists() else 0)


@functools.lru_cache(maxsize=16)
def _load_rules_cached(path: Path, _mtime: int) -> RuleSet:
    return _read_rules(path)


def _read_rules(path: str | Path | None = None) -> RuleSet:
    """Read and check a rules file; a problem is reported with the rule id and field."""
    path = Path(path or RULES_PATH)
    try:
        raw = read_yaml(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as problem:
        raise RulesError(f"{path}: cannot be read: {problem}") from problem
    if not isinstance(raw, dict) or not isinstance(raw.get("rules"), list):
        raise RulesError(f"{path}: expected a mapping with a 'rules' list")
    sources = raw.get("sources") or {}
    for key, source in sources.items():
        if not isinstance(source, dict) or not source.get("citation"):
            raise RulesError(f"{path}: source '{key}': field 'citation' is missing")
    rules, seen = [], set()
    for position, entry in enumerate(raw["rules"], start=1):
        rule = _check_rule(path, position, entry, sources)
        if rule.id in seen:
            raise RulesError(f"{path}: rule '{rule.id}': field 'id': appears twice")
        seen.add(rule.id)
        rules.append(rule)
    no_prompt = raw.get("no_prompt") or {}
    if not isinstance(no_prompt, dict) or not no_prompt.get("checked") or not no_prompt.get("not_seen"):
        raise RulesError(f"{path}: 'no_prompt' needs 'checked' and 'not_seen' (what the rules cannot see)")
    return RuleSet(tuple(rules), sources, path, no_prompt)


def _check_rule(path: Path, position: int, entry: dict, sources: dict) -> Rule:
    if not isinstance(entry, dict):
        raise RulesError(f"{path}: rule #{position}: expected a mapping")
    rule_id = entry.get("id") or f"#{position}"

    def fail(field: str, message: str) -> RulesError:
        return RulesError(f"{path}: rule '{rule_id}': field '{field}': {message}")

    for field in ("id", "category", "modality", "urgency", "scope", "summary", "evidence", "source"):
        if not entry.get(field):
            raise fail(field, "is missing")
    for field, allowed in (("category", CATEGORIES), ("modality", MODALITIES), ("urgency", URGENCIES),
                           ("scope", SCOPES)):
        if entry[field] not in allowed:
            raise fail(field, f"'{entry[field]}' is not one of {', '.join(allowed)}")
    scope = entry["scope"]
    conditions = tuple(entry.get("when") or ())
    any_of = tuple(entry.get("any_of") or ())
    if not conditions and not any_of:
        raise fail("when", "a rule needs at least one condition")
    escalate_if = tuple(entry.get("escalate_if") or ())
    note_if = tuple(entry.get("note_if") or ())
    for item in note_if:
        if not isinstance(item, dict) or not item.get("label"):
            raise fail("note_if", f"{item!r}: a note needs a 'label' (the evidence line it adds)")
    for group, name in ((conditions, "when"), (any_of, "any_of"), (escalate_if, "escalate_if"),
                        (note_if, "note_if")):
        for condition in group:
            _check_item(condition, scope, lambda message, name=name: fail(name, message), name != "when")
    hazards = entry.get("hazards")
    if not hazards or not isinstance(hazards, list) or not all(HAZARD_ID.fullmatch(str(h)) for h in hazards):
        raise fail("hazards", "must list the ids of the hazards the rule controls (H01, H02, …; docs/hazard-log.md)")
    evidence = entry["evidence"] if isinstance(entry["evidence"], list) else [entry["evidence"]]
    for template in evidence:
        for field in re.findall(r"{(\w+)}", template):
            if field not in FIELDS_BY_SCOPE[scope] and field != "finding":
                raise fail("evidence", f"'{{{field}}}' is not a field of scope '{scope}'")
    source_keys = entry["source"] if isinstance(entry["source"], list) else [entry["source"]]
    for key in source_keys:
        if key not in sources:
            raise fail("source", f"'{key}' is not in the file's 'sources'")
    return Rule(rule_id, entry["category"], entry["modality"], entry["urgency"], scope, entry["summary"],
                conditions, any_of, tuple(evidence), tuple(source_keys), int(entry.get("window_days", 14)),
                entry.get("rationale", ""), tuple(hazards), escalate_if, note_if)


def _check_item(item, scope: str, fail, groups_allowed: bool) -> None:
    """A condition, or (in any_of and escalate_if) a group {all: [conditions], label}; labels are templates."""
    if isinstance(item, dict) and "all" in item and groups_allowed:
        if set(item) - {"all", "label"} or not isinstance(item["all"], list) or not item["all"]:
            raise fail(f"{item!r}: a group has 'all' (a list of conditions) and an optional 'label'")
        for condition in item["all"]:
            _check_condition(condition, scope, fail)
    else:
        _check_condition(item, scope, fail)
    if isinstance(item, dict):
        for field in re.findall(r"{(\w+)}", item.get("label", "")):
            if field not in FIELDS_BY_SCOPE[scope]:
                raise fail(f"label: '{{{field}}}' is not a field of scope '{scope}'")


def _check_condition(condition, scope: str, fail) -> None:
    if not isinstance(condition, dict) or "field" not in condition:
        raise fail(f"{condition!r} must be a mapping with 'field' and one operator")
    if condition["field"] not in FIELDS_BY_SCOPE[scope]:
        raise fail(f"'{condition['field']}' is not a field of scope '{scope}'")
    operators = [key for key in condition if key not in ("field", "label")]
    if len(operators) != 1 or operators[0] not in OPERATORS:
        raise fail(f"condition on '{condition['field']}' needs exactly one of {', '.join(OPERATORS)}")


# ---------------------------------------------------------------------------------------------- evaluation
def _rule_rows(table: Table, rule: Rule) -> np.ndarray:
    """The rows where a rule fires; each condition is tested only on the rows that passed the ones before."""
    rows = None  # all of them

    def passing(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask) if rows is None else rows[mask]

    for condition in rule.conditions:
        rows = passing(holds(table[condition["field"]].take(rows), condition))
    if rule.any_of and (rows is None or len(rows)):
        rows = passing(np.logical_or.reduce([_item_holds(table, item, rows) for item in rule.any_of]))
    return np.arange(len(table)) if rows is None else rows


def _item_holds(table: Table, item: dict, rows: np.ndarray | None = None) -> np.ndarray:
    """Where a condition, or every condition of a group, holds on `rows` of `table` (all when None)."""
    if "all" in item:
        return np.logical_and.reduce([holds(table[c["field"]].take(rows), c) for c in item["all"]])
    return holds(table[item["field"]].take(rows), item)


def _patient_table(patients: pd.DataFrame) -> Table:
    return Table(np.arange(len(patients)), frame_makers(patients, PATIENT_FIELDS))


def _patient_makers(patient_table: Table, patient: np.ndarray) -> dict:
    """The patient's fields on each row of another scope (`patient`: the rows' patients)."""
    return {field: taker(patient_table, field, patient) for field in patient_table.fields}


def _visit_table(patient_table: Table, patient_rank: np.ndarray, patient_ids: pd.Series,
                 visits: pd.DataFrame) -> Table:
    """Visits after the index operation, by patient (in `patient_rank` order) and date, with changes since
    the patient's earlier visits and the patient's fields (visits of others are left out)."""
    patient = rows_in(visits["patient_id"], patient_ids)
    day = column_of(visits["day"]).values
    with np.errstate(invalid="ignore"):
        rows = np.flatnonzero((day >= 0) & (patient >= 0))
    rows = rows[_by_patient_then_date(patient_rank[patient[rows]], visits["visit_date"].to_numpy()[rows])]
    patient = patient[rows]

    def rise(field: str, from_day: int = 0) -> Maker:
        def make(table: Table) -> Column:
            values = np.where(table["day"].values >= from_day, table[field].values, np.nan)
            return number(values - _lowest_before(values, patient))
        return make

    def days_ago(table: Table) -> Column:
        return number(patient_table["days_since_surgery"].values[patient] - table["day"].values)

    def carried(field: str, part: str, source: str | None = None) -> Maker:
        """`part` ('last', 'date', 'day') of the last visit up to each row that recorded `field`."""
        def make(table: Table) -> Column:
            if field not in table:  # a frame without the column (an optional one): unknown everywhere
                return Column("date", np.full(len(patient), np.datetime64("NaT"), "datetime64[us]")) \
                    if part == "date" else number(np.full(len(patient), np.nan))
            at = _last_known(table[field].known, patient)
            column = table[source or field] if part == "last" else table["visit_date" if part == "date" else "day"]
            empty = np.datetime64("NaT") if column.kind == "date" else np.nan
            values = np.where(at >= 0, column.values[np.maximum(at, 0)], empty)
            return Column(column.kind if column.kind != "text" else "number", values)
        return make

    def fever_visits(table: Table) -> Column:
        return number(_count_before(holds(table["fever"], {"is": True}), patient) + holds(table["fever"], {"is": True}))

    def radicular_pain_new(table: Table) -> Column:
        """Radiating pain recorded at this visit after an earlier post-operative visit recorded it absent."""
        if "radicular_pain" not in table:
            return flag(np.full(len(patient), np.nan))
        present, absent = holds(table["radicular_pain"], {"is": True}), holds(table["radicular_pain"], {"is": False})
        return flag(present & (_count_before(absent, patient) > 0))

    def qsofa(table: Table) -> Column:
        """How many qSOFA criteria hold on their last recorded values (unknown criteria count as not met,
        so the score is a lower bound; a rule never reads a low score as reassurance)."""
        with np.errstate(invalid="ignore"):
            met = ((table["respiratory_rate_last"].values >= QSOFA_RESPIRATORY_RATE).astype(float)
                   + (table["systolic_bp_last"].values <= QSOFA_SYSTOLIC_BP)
                   + (table["altered_mentation_last"].values == 1))
        return number(met)

    carried_makers = {f"{finding}_{part}": carried(finding, part) for finding in CARRIED_FINDINGS
                      for part in ("last", "date", "day")}
    return Table(patient, {  # the derived fields read the others from the table they are made for
        **frame_makers(visits, VISIT_FIELDS, rows),
        **carried_makers,
        "crp_last": carried("crp_mg_l", "last"),
        "crp_last_date": carried("crp_mg_l", "date"),
        "crp_last_day": carried("crp_mg_l", "day"),
        "crp_rise_last": carried("crp_mg_l", "last", "crp_rise_from_nadir"),
        "fever_visits": fever_visits,
        "qsofa": qsofa,
        "radicular_pain_last": carried("radicular_pain", "last"),
        "radicular_pain_date": carried("radicular_pain", "date"),
        "radicular_pain_day": carried("radicular_pain", "day"),
        "radicular_pain_new": radicular_pain_new,
        "radicular_pain_new_last": carried("radicular_pain", "last", "radicular_pain_new"),
        "leg_pain_last": carried("leg_pain_nrs", "last"),
        "leg_pain_date": carried("leg_pain_nrs", "date"),
        "leg_pain_rise_last": carried("leg_pain_nrs", "last", "leg_pain_rise"),
        **_patient_makers(patient_table, patient),
        # CRP normally peaks on day 2–5; a rise is measured from the lowest value after that peak.
        "crp_rise_from_nadir": rise("crp_mg_l", from_day=3),
        "back_pain_rise": rise("back_pain_nrs"),
        "leg_pain_rise": rise("leg_pain_nrs"),
        "is_latest_visit": lambda _: flag(np.r_[patient[1:] != patient[:-1], True][:len(patient)]),
        "days_ago": days_ago,
    })


def _by_patient_then_date(patient_rank: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Order by patient, then date (missing last), ties in input order: one stable sort of one integer."""
    date_code, distinct = pd.factorize(dates, sort=True)
    date_code = np.where(date_code >= 0, date_code, len(distinct))
    return np.argsort(patient_rank * (len(distinct) + 1) + date_code, kind="stable")


def _starts(patient: np.ndarray) -> np.ndarray:
    """For each row, the first row of its patient (each patient's rows together)."""
    if not len(patient):
        return np.zeros(0, dtype=np.int64)
    first = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1]])
    return np.repeat(first, np.diff(np.r_[first, len(patient)]))


def _last_known(known: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """For each row, the last row of the same patient up to it (by date) where the value is known; -1 if none."""
    last = np.maximum.accumulate(np.where(known, np.arange(len(known)), -1)) if len(known) else np.zeros(0, int)
    return np.where(last >= _starts(patient), last, -1)


def _count_before(hit: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """For each row, how many earlier rows of the same patient are hits."""
    total = np.r_[0, np.cumsum(hit)]
    return total[np.arange(len(hit))] - total[_starts(patient)]


def _lowest_before(values: np.ndarray, patient: np.ndarray) -> np.ndarray:
    """The lowest earlier value of the same patient (each patient's rows together, by date), NaN when there
    is none; missing values are skipped. A running minimum by doubling steps: log2(most visits) passes."""
    starts = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1]]) if len(patient) else np.zeros(0, int)
    place = np.arange(len(patient)) - np.repeat(starts, np.diff(np.r_[starts, len(patient)]))
    lowest, step = values, 1  # lowest[i]: the lowest of the `step` rows up to i (fewer at a patient's start)
    while len(place) and step < place.max():  # rows read below are at most place.max() - 1 in
        earlier = np.r_[np.full(step, np.nan), lowest[:-step]]
        lowest = np.where(place >= step, np.fmin(lowest, earlier), lowest)
        step *= 2
    return np.where(place > 0, np.r_[np.nan, lowest[:-1]], np.nan)


def _muscle_table(patient_table: Table, patient_ids: pd.Series, muscles: pd.DataFrame,
                  thresholds: dict[str, float], visits: Table) -> Table:
    """Trajectories of the patients in `patient_ids`, with the patient's fields and changes between picks.

    `thresholds` are the reference's status thresholds (normal grade, one-step measurement noise, a whole
    grade of deterioration): the fields below use the same ones as the statuses, and none needs a baseline
    to see a fall between post-operative exams."""
    patient = rows_in(muscles["patient_id"], patient_ids)
    rows = np.flatnonzero(patient >= 0)
    patient = patient[rows]
    rows = None if len(rows) == len(muscles) else rows
    normal, noise = thresholds["normal_grade"], thresholds["measurement_noise"]
    drop, marked = thresholds["deterioration_drop"] - 1e-9, thresholds["marked_drop_from_baseline"] - 1e-9

    def difference(first: str, second: str) -> Maker:
        return lambda table: number(table[first].values - table[second].values)

    def values(table: Table, *fields: str) -> list[np.ndarray]:
        return [table[field].values for field in fields]

    def beyond_noise_below(before: np.ndarray, latest: np.ndarray) -> np.ndarray:
        """Weaker than `before` beyond one ± step: from a normal grade (5, 5-), below normal by more than one
        step and fallen more than one step (5 to 4+, not 5- to 4+); from an abnormal grade, a whole grade."""
        with np.errstate(invalid="ignore"):
            from_normal = (latest < normal - noise) & (before - latest > noise + 1e-9)
            return np.where(before >= normal - noise, from_normal, latest <= before - marked)

    def new_vs_baseline(table: Table) -> Column:
        """Weaker than before the operation beyond one ± step (as the status new_deficit, without the
        one-step dip from 5-); unknown without a baseline."""
        baseline, latest = values(table, "baseline_mrc", "latest_mrc")
        new = beyond_noise_below(baseline, latest)
        return flag(np.where(np.isnan(baseline) | np.isnan(latest), np.nan, new))

    def first_post_new(table: Table) -> Column:
        """At the first post-operative exam, weaker than before the operation beyond one ± step."""
        baseline, first = values(table, "baseline_mrc", "first_post_mrc")
        return flag(np.where(np.isnan(baseline) | np.isnan(first), np.nan, beyond_noise_below(baseline, first)))

    def newly_weak(table: Table) -> Column:
        """Normal (5 or 5-) at the muscle's best earlier post-operative exam (or, with none, before the
        operation) and weaker than that beyond one ± step now: weakness newer than the last normal exam.
        Weakness present since the operation is not, nor a one-step dip (5- to 4+)."""
        baseline, best, latest = values(table, "baseline_mrc", "best_prior_mrc", "latest_mrc")
        before = np.where(np.isnan(best), baseline, best)
        with np.errstate(invalid="ignore"):
            return flag((before >= normal - noise) & beyond_noise_below(before, latest))

    def loss(table: Table) -> Column:
        baseline, best, latest = values(table, "baseline_mrc", "best_prior_mrc", "latest_mrc")
        return number(np.where(np.isnan(best), baseline, best) - latest)

    def gain(table: Table) -> Column:
        """The most the muscle has gained since the operation: its best post-operative grade above the lower of
        its pre-operative and first post-operative grades (without a baseline, above the first)."""
        baseline, first, best, latest = values(table, "baseline_mrc", "first_post_mrc", "best_prior_mrc",
                                               "latest_mrc")
        return number(np.fmax(best, latest) - np.fmin(baseline, first))

    def first_post_day(table: Table) -> Column:
        between = (table["latest_date"].values - table["first_post_date"].values) / np.timedelta64(1, "D")
        return number(table["latest_day"].values - between)

    def weaker_both_sides(table: Table) -> Column:
        """The patient has weakness newer than its last normal exam, or a grade lost, on both sides."""
        with np.errstate(invalid="ignore"):
            weaker = (table["newly_weak"].values == 1) | (table["drop_from_best"].values >= drop)
        side = np.asarray(table["side"].texts, dtype=object)[table["side"].values] if len(table) else np.zeros(0)
        size = len(patient_table)
        left = np.bincount(table.patient[weaker & (side == "L")], minlength=size) > 0
        right = np.bincount(table.patient[weaker & (side == "R")], minlength=size) > 0
        return flag((left & right)[table.patient])

    def highest_near(field: str) -> Maker:
        """The highest `field` (leg pain, or its rise) recorded at a visit within NEAR_VISIT_DAYS of the
        latest exam: each trajectory's visits found by two binary searches in the visits ordered by patient
        and day."""
        def make(table: Table) -> Column:
            if field not in visits or not len(visits) or not len(table):
                return number(np.full(len(table), np.nan))
            span = np.int64(1) << 32
            visit_day = visits["visit_date"].values.astype("datetime64[D]").astype(np.int64)
            pain = visits[field].values
            dated = ~np.isnat(visits["visit_date"].values) & ~np.isnan(pain)
            key = visits.patient[dated].astype(np.int64) * span + visit_day[dated] + (span >> 1)
            order = np.argsort(key, kind="stable")
            key, pain = key[order], pain[dated][order]
            latest = table["latest_date"].values.astype("datetime64[D]").astype(np.int64)
            at = table.patient.astype(np.int64) * span + latest + (span >> 1)
            known = ~np.isnat(table["latest_date"].values)
            low = np.searchsorted(key, at - NEAR_VISIT_DAYS, "left")
            high = np.searchsorted(key, at + NEAR_VISIT_DAYS, "right")
            high = np.where(known, high, low)
            highest = np.full(len(table), np.nan)
            for step in range(int((high - low).max(initial=0))):
                inside = low + step < high
                highest[inside] = np.fmax(highest[inside], pain[low[inside] + step])
            return number(highest)
        return make

    def days_since_best(table: Table) -> Column:
        """Days from the best earlier post-operative exam (the latest one on a tie) to the latest exam: how
        fast a grade was lost."""
        return number((table["latest_date"].values - table["best_prior_date"].values) / np.timedelta64(1, "D"))

    return Table(patient, {  # the derived fields read the others from the table they are made for
        **frame_makers(muscles, MUSCLE_FIELDS, rows),
        **_patient_makers(patient_table, patient),
        "drop_from_best": difference("best_prior_mrc", "latest_mrc"),
        "drop_from_first": difference("first_post_mrc", "latest_mrc"),
        "gain_before_drop": difference("best_prior_mrc", "baseline_mrc"),
        "root_at_operated_level": lambda table: flag(_muscle_at_levels(
            table["muscle"], table["operated_levels"] if "operated_levels" in table else table["levels"])),
        "root_at_implant_level": lambda table: flag(_muscle_at_levels(table["muscle"], table["implant_levels"])),
        "first_post_day": first_post_day,
        "no_baseline": lambda table: flag(np.isnan(table["baseline_mrc"].values)),
        "new_vs_baseline": new_vs_baseline,
        "first_post_new": first_post_new,
        "newly_weak": newly_weak,
        "loss": loss,
        "gain": gain,
        "gain_since_first": difference("latest_mrc", "first_post_mrc"),
        "start_mrc": lambda table: number(np.fmin(table["baseline_mrc"].values, table["first_post_mrc"].values)),
        "weaker_both_sides": weaker_both_sides,
        "leg_pain_near": highest_near("leg_pain_nrs"),
        "leg_pain_rise_near": highest_near("leg_pain_rise"),
        "days_since_best": days_since_best,
        "muscle_label": lambda table: _relabelled(table["muscle"], MUSCLE_WORDS),
        "side_label": lambda table: _relabelled(table["side"], {"L": "left", "R": "right"}),
    })


def _relabelled(column: Column, words: dict[str, str]) -> Column:
    """A text column with its texts in clinical words (codes unchanged)."""
    return Column("text", column.values, tuple(words.get(text, text) for text in column.texts))


def _muscle_at_levels(muscles: Column, levels: Column) -> np.ndarray:
    """Whether a root of each muscle (MUSCLE_ROOT_SETS) exits or traverses at one of the segments, decided
    once per distinct muscle and distinct levels text (missing levels: no)."""
    table = np.zeros((len(levels.texts) + 1, len(muscles.texts) + 1), dtype=bool)
    for row, text in enumerate(levels.texts):
        at_risk = {root for segment in text.split(";") for root in SEGMENT_ROOTS.get(segment.strip(), ())}
        table[row, :-1] = [bool(at_risk & set(MUSCLE_ROOT_SETS.get(muscle, ()))) for muscle in muscles.texts]
    return table[levels.values, muscles.values]


def new_neuro_deficit(muscles: Table, thresholds: dict[str, float], size: int) -> np.ndarray:
    """Per patient (rows of the patients frame): a muscle weaker than its last normal exam, a whole grade
    below its best earlier post-operative exam, or weaker than before the operation at an exam in the first
    four weeks. An old deficit from the operation, months later, is not new."""
    with np.errstate(invalid="ignore"):
        early = muscles["latest_day"].values <= 28
        weaker = (((muscles["new_vs_baseline"].values == 1) & early) | (muscles["newly_weak"].values == 1)
                  | (muscles["drop_from_best"].values >= thresholds["deterioration_drop"] - 1e-9))
    return np.bincount(muscles.patient[weaker], minlength=size) > 0


def _muscle_visit_table(muscles: Table, visits: Table, rule: Rule) -> Table:
    """Trajectories paired with visits near their latest exam; muscle conditions first, so the pairs stay
    few. Pairs come by trajectory, then by visit date; the patient's fields come from the trajectory side."""
    on_muscle = tuple(c for c in rule.conditions if c["field"] not in VISIT_FIELDS)
    candidates = _rule_rows(muscles, dataclasses.replace(rule, conditions=on_muscle, any_of=()))
    pair, visit = _visits_of(muscles.patient[candidates], visits.patient)
    trajectory = candidates[pair]
    visit_date, latest_date = visits["visit_date"].values[visit], muscles["latest_date"].values[trajectory]
    with np.errstate(invalid="ignore"):
        gap = np.abs((visit_date - latest_date) // np.timedelta64(1, "D"))
    near = ~np.isnat(visit_date) & ~np.isnat(latest_date) & (gap <= rule.window_days)
    trajectory, visit = trajectory[near], visit[near]
    return Table(muscles.patient[trajectory], {
        **{field: taker(visits, field, visit) for field in visits.fields},
        **{field: taker(muscles, field, trajectory) for field in muscles.fields},
    })


def _visits_of(patient: np.ndarray, visit_patient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i, visit) of a visit of patient[i], by i then visit; each patient's visits are adjacent."""
    if not len(patient) or not len(visit_patient):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    size = max(patient.max(), visit_patient.max()) + 1
    starts = np.flatnonzero(np.r_[True, visit_patient[1:] != visit_patient[:-1]])
    first = np.zeros(size, dtype=np.int64)
    first[visit_patient[starts]] = starts
    count = np.bincount(visit_patient, minlength=size)[patient]
    pair = np.repeat(np.arange(len(patient)), count)
    return pair, np.repeat(first[patient] - (np.cumsum(count) - count), count) + np.arange(len(pair))


def _template_parts(template: str) -> list[tuple[str, str | None]]:
    """A template as (text, None) and (field, field) parts: '{day} days' → [('day', 'day'), (' days', None)]."""
    return [(part[1:-1], part[1:-1]) if re.fullmatch(r"{\w+}", part) else (part, None)
            for part in re.split(r"({\w+})", template) if part]


def _render(hits: Table, template: str, findings: pa.Array | None = None) -> pa.Array:
    """Fill an evidence template for every row at once (one Arrow join); missing values read as 'missing'."""
    parts = [pa.scalar(part, TEXT) if field is None else findings if field == "finding" else _shown(hits[field], field)
             for part, field in _template_parts(template)]
    return pc.binary_join_element_wise(pa.repeat(pa.scalar("", TEXT), len(hits)), *parts, pa.scalar("", TEXT))


def _shown(column: Column, field: str) -> pa.Array:
    """How each value reads in an evidence line, formatted once per distinct value."""
    values = column.values
    if column.kind == "text":
        return _texts([*column.texts, "missing"], np.where(values >= 0, values, len(column.texts)))
    if column.kind == "flag":
        return _texts(["no", "yes", "missing"], np.where(np.isnan(values), 2, values).astype(np.intp))
    if field in GRADE_FIELDS:
        return _per_value(values, lambda grades: map(format_mrc, grades))
    if column.kind == "date":  # the day, as Arrow writes dates: 2026-03-04
        return pc.fill_null(pa.array(values).cast(pa.date32(), safe=False).cast(TEXT), "missing")
    return _per_value(values.round(1), lambda numbers: [str(float(number)).removesuffix(".0") for number in numbers])


def _per_value(values: np.ndarray, show) -> pa.Array:
    """The texts of `values`: `show` maps their distinct values to texts; missing values read 'missing'."""
    codes, distinct = pd.factorize(values)
    return _texts([*show(distinct), "missing"], np.where(codes >= 0, codes, len(distinct)))


def _texts(texts: list[str], codes: np.ndarray) -> pa.Array:
    return pa.array(texts, TEXT).take(codes)


def _labels(hits: Table, items: tuple[dict, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Which rows meet any of `items`, and the labels of those they meet ('saddle anaesthesia on …; …')."""
    names = np.full(len(hits), "", dtype=object)
    met = np.zeros(len(hits), dtype=bool)
    for item in items:
        hit = _item_holds(hits, item)
        if not hit.any():
            continue
        label = item.get("label") or (item["field"] if "field" in item else "").replace("_", " ")
        text = _render(hits, label).to_pylist()
        names = np.array([name if not now or line in name else (f"{name}; {line}" if name else line)
                          for name, line, now in zip(names, text, hit, strict=True)], dtype=object)
        met |= hit
    return met, names


def _evidence_by_patient(hits: Table, rule: Rule) -> tuple[np.ndarray, np.ndarray, pa.Array, np.ndarray]:
    """Each patient's evidence lines, in row order then template order, each line once, and whether the
    patient's prompt is escalated to an emergency.

    Returns the patients (rows in `patients`), how many lines each has, the lines one after another, and
    per patient whether an `escalate_if` condition held on one of its rows (its line ends the row's lines).
    """
    findings = pa.array(_labels(hits, rule.any_of)[1], TEXT) if rule.any_of else None
    rendered = [_render(hits, template, findings) for template in rule.evidence]
    escalated = np.zeros(len(hits), dtype=bool)
    if rule.escalate_if:
        escalated, reasons = _labels(hits, rule.escalate_if)
        rendered.append(pa.array(np.where(escalated, "Emergency because: " + reasons, ""), TEXT))
    if rule.note_if:  # an intermediate step: what to do within the rule's urgency (moot once escalated)
        noted, notes = _labels(hits, rule.note_if)
        rendered.append(pa.array(np.where(noted & ~escalated, notes, ""), TEXT))
    rendered = pa.concat_arrays(rendered)
    rows, templates = len(hits), len(rendered) // max(len(hits), 1)
    line = np.arange(rows * templates)
    line = line % templates * rows + line // templates  # row by row, each row's lines in template order
    line = line[pc.not_equal(rendered.take(line), "").to_numpy(zero_copy_only=False)]
    patient = hits.patient[line % rows]
    order = np.argsort(patient, kind="stable")  # by patient, then row, then template
    patient, lines = patient[order], rendered.take(line[order])
    line_codes = lines.dictionary_encode().indices.to_numpy()
    first = np.sort(np.unique(patient * (line_codes.max() + 1) + line_codes, return_index=True)[1])
    patient, lines = patient[first], lines.take(first)
    starts = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1]])
    urgent_patients = np.unique(hits.patient[escalated])
    return (patient[starts], np.diff(np.r_[starts, len(patient)]), lines,
            np.isin(patient[starts], urgent_patients), _basis_by_patient(hits, rule))


def _basis_by_patient(hits: Table, rule: Rule) -> dict[int, dict[str, float]]:
    """What each patient's prompt rests on, for deciding whether new evidence is worse than the evidence a
    decision was made on: per muscle-side its latest grade (lower is worse), per finding that held, 1."""
    basis: dict[int, dict[str, float]] = {}
    if rule.scope == "visit":
        held = [(f"f:{rule.id}:{i}", _item_holds(hits, item)) for i, item in enumerate(rule.any_of)] or [
            (f"f:{rule.id}", np.ones(len(hits), dtype=bool))]
        for key, hit in held:
            for patient in np.unique(hits.patient[hit]).tolist():
                basis.setdefault(patient, {})[key] = 1.0
        return basis
    muscle, side, grade = hits["muscle"], hits["side"], hits["latest_mrc"].values
    for patient, m, sd, g in zip(hits.patient.tolist(), muscle.values.tolist(), side.values.tolist(), grade.tolist(),
                                 strict=True):
        key = f"m:{muscle.texts[m] if m >= 0 else '?'}/{side.texts[sd] if sd >= 0 else '?'}"
        entry = basis.setdefault(patient, {})
        entry[key] = min(entry.get(key, g), g)
    return basis


def evaluate(patients: pd.DataFrame, muscles: pd.DataFrame, visits: pd.DataFrame, rules: RuleSet,
             thresholds: dict[str, float] | None = None) -> pd.DataFrame:
    """Every prompt for every patient: one row per patient and scan, with its evidence lines.

    Rules asking one patient for the same scan (SCAN_OF_MODALITY) give one prompt: the most urgent rule's id
    (the decision key), every rule's id in `rule_ids`, each rule's question and evidence, the highest urgency.
    `thresholds`: the reference's status thresholds (the published reference's by default)."""
    if thresholds is None:
        from dashboard.clinical.curves import load_reference  # noqa: PLC0415 — only when the caller gave none
        thresholds = load_reference().status
    patient_rank = sort_rank(patients["patient_id"])
    patient_table = _patient_table(patients)
    visit_table = _visit_table(patient_table, patient_rank, patients["patient_id"], visits)
    muscle_table = _muscle_table(patient_table, patients["patient_id"], muscles, thresholds, visit_table)
    if any("new_neuro_deficit" in rule.fields for rule in rules.rules):
        deficit = new_neuro_deficit(muscle_table, thresholds, len(patients))
        visit_table.add("new_neuro_deficit", flag(deficit[visit_table.patient]))
    tables = {"visit": visit_table, "muscle": muscle_table}
    with _collector_paused():  # tens of thousands of small lists and dicts: no cycle scans while they are made
        return _prompts(patients, rules, patient_rank, tables)


@contextlib.contextmanager
def _collector_paused():
    """Pause Python's cycle collector (if it runs) while many small containers are made, none of them in a
    cycle: each collection would scan every tracked object of a large cohort's frames, several times over."""
    running = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if running:
            gc.enable()


def _prompts(patients: pd.DataFrame, rules: RuleSet, patient_rank: np.ndarray, tables: dict) -> pd.DataFrame:
    """Evaluate every rule on its scope's table and make the prompt frame (evaluate's second half)."""
    fired = []  # per rule and patient: (patient, rule position, urgency code, evidence lines)
    for order, rule in enumerate(rules.rules):
        table = tables[rule.scope] if rule.scope != "muscle_visit" else _muscle_visit_table(
            tables["muscle"], tables["visit"], rule)
        rows = _rule_rows(table, rule)
        if len(rows):
            patient, counts, lines, escalated, basis = _evidence_by_patient(table.take(rows), rule)
            lines = lines.to_pylist()
            ends = np.cumsum(counts)
            urgency = URGENCIES.index(rule.urgency)
            fired += [(p, order, 0 if up else urgency, lines[end - count:end], basis.get(p, {}))
                      for p, count, end, up in zip(patient.tolist(), counts.tolist(), ends.tolist(),
                                                   escalated.tolist(), strict=True)]
    if not fired:
        return pd.DataFrame(columns=PROMPT_COLUMNS)
    return _prompt_frame(_merged(fired, rules), patients, patient_rank, rules)


def _merged(fired: list[tuple], rules: RuleSet) -> list[tuple]:
    """One prompt per patient and scan: (patient, rule positions most urgent first, urgency, lines)."""
    scan = [SCAN_OF_MODALITY.get(rule.modality, rule.modality) for rule in rules.rules]
    not_red = [rule.category != "red_flag" for rule in rules.rules]

    def rank(item):
        return item[0], scan[item[1]], item[2], not_red[item[1]], item[1]

    merged: dict[tuple, list] = {}
    for item in sorted(fired, key=rank):
        key = (item[0], scan[item[1]])
        if key not in merged:
            merged[key] = [item[0], [item[1]], item[2], list(item[3]), dict(item[4])]
        else:
            prompt = merged[key]
            prompt[1].append(item[1])
            prompt[3] += [line for line in item[3] if line not in prompt[3]]
            for field, value in item[4].items():
                prompt[4][field] = min(prompt[4].get(field, value), value)
    return [tuple(prompt) for prompt in merged.values()]


def _prompt_frame(prompts: list[tuple], patients: pd.DataFrame, patient_rank: np.ndarray,
                  rules: RuleSet) -> pd.DataFrame:
    """The prompts as PROMPT_COLUMNS, by patient, red flags first, then urgency, then rule-file order."""
    patient = np.array([p[0] for p in prompts])
    first_rule = np.array([p[1][0] for p in prompts])
    urgency = np.array([p[2] for p in prompts])
    not_red = np.array([rules.rules[p[1][0]].category != "red_flag" for p in prompts])
    order = np.lexsort((first_rule, urgency, not_red, patient_rank[patient]))
    prompts = [prompts[i] for i in order]

    def texts(values: list[str]) -> pd.Series:
        codes, distinct = pd.factorize(pd.Series(values, dtype=object))
        return text_column(pa.array(list(distinct), pa.string()), codes)

    @functools.cache
    def combination(positions: tuple[int, ...]) -> tuple[str, str, str, list[str]]:
        """Modality, question, sources and rule ids of one combination of rules (a cohort has a few)."""
        chosen = [rules.rules[i] for i in positions]
        wanted = {rule.modality for rule in chosen}
        modality = "mri_contrast" if wanted == {"mri", "mri_contrast"} else chosen[0].modality
        keys = dict.fromkeys(key for rule in chosen for key in rule.source_keys)
        return (modality, " ".join(dict.fromkeys(rule.summary for rule in chosen)),
                "; ".join(rules.sources[key]["citation"] for key in keys), [rule.id for rule in chosen])

    combos = [combination(tuple(p[1])) for p in prompts]
    return pd.DataFrame({
        "patient_id": take_text(patients["patient_id"], patient[order]),
        "rule_id": texts([combo[3][0] for combo in combos]),
        "category": texts([rules.rules[p[1][0]].category for p in prompts]),
        "modality": texts([combo[0] for combo in combos]),
        "urgency": texts([URGENCIES[p[2]] for p in prompts]),
        "summary": texts([combo[1] for combo in combos]),
        "evidence": [p[3] for p in prompts],
        "source": texts([combo[2] for combo in combos]),
        "rule_ids": [list(combo[3]) for combo in combos],
        "decision_basis": [_basis_text(p[2], combo[3], p[4]) for p, combo in zip(prompts, combos, strict=True)],
    })


BASIS_PREFIX = "basis:v1"


def _basis_text(urgency: int, rule_ids: list[str], basis: dict[str, float]) -> str:
    """A prompt's decision basis as text (stored with a decision): urgency, rules, and per muscle-side the
    latest grade and per finding that it held. `evidence_no_worse` compares two of them."""
    parts = [BASIS_PREFIX, f"u={urgency}", "r=" + ",".join(sorted(rule_ids))]
    parts += [f"{key}={value:.2f}" for key, value in sorted(basis.items())]
    return "|".join(parts)


def _parse_basis(text: str) -> tuple[int, set[str], dict[str, float]] | None:
    parts = text.split("|")
    if not parts or parts[0] != BASIS_PREFIX or len(parts) < 3:
        return None
    try:
        urgency = int(parts[1].removeprefix("u="))
        rule_ids = set(filter(None, parts[2].removeprefix("r=").split(",")))
        values = {key: float(value) for key, value in (part.rsplit("=", 1) for part in parts[3:])}
    except ValueError:
        return None
    return urgency, rule_ids, values


def evidence_no_worse(now: str, decided_on: str) -> bool:
    """Whether a prompt's evidence now is no worse than the evidence a decision was made on: not more urgent,
    no rule and no finding or muscle that was not there, and no muscle weaker than it was (an improving
    grade keeps the decision; a lower grade, a new finding, a new muscle or a higher urgency reopens it)."""
    then, current = _parse_basis(decided_on or ""), _parse_basis(now or "")
    if then is None or current is None:
        return False
    urgency_then, rules_then, values_then = then
    urgency_now, rules_now, values_now = current
    if urgency_now < urgency_then or not rules_now <= rules_then:
        return False
    for key, value in values_now.items():
        if key not in values_then or (key.startswith("m:") and value < values_then[key] - 1e-6):
            return False
    return True


def decision_fingerprint(prompt) -> str:
    """What a decision on this prompt is recorded against: its decision basis (evidence_no_worse compares
    it with later evidence), or the hash of its evidence lines when the prompt has no basis."""
    basis = prompt.get("decision_basis") if isinstance(prompt, dict) else getattr(prompt, "decision_basis", None)
    if isinstance(basis, str) and basis:
        return basis
    evidence = prompt["evidence"] if isinstance(prompt, dict) else prompt.evidence
    return evidence_hash(list(evidence))


def decision_key(rule_id: str, rules: RuleSet | None = None) -> str:
    """The stable key a decision is matched by, with the patient: the scan a rule asks for ('scan:mri',
    'scan:ct', …). Rules asking one patient for one scan always give one merged prompt, so the scan names that
    prompt whatever rule is its most urgent today (its `rule_id`, under which a decision is recorded, may
    change). A rule id the rules file does not know keys itself ('rule:<id>')."""
    modality = next((rule.modality for rule in (rules or load_rules()).rules if rule.id == rule_id), None)
    return f"scan:{SCAN_OF_MODALITY.get(modality, modality)}" if modality else f"rule:{rule_id}"


def no_prompt_text(rules: RuleSet | None = None) -> str:
    """The neutral text shown when no rule fired: what was checked and what the rules cannot see."""
    return (rules or load_rules()).no_prompt_text


def evidence_hash(evidence: list[str]) -> str:
    """A short fingerprint of a prompt's evidence: a recorded decision holds until the evidence changes.

    Worked out where a decision is recorded or compared (decisions), not for every prompt of a cohort."""
    return hashlib.sha256("\n".join(evidence).encode("utf-8")).hexdigest()[:16]
