"""The imaging checklist: declarative rules (data/rules/imaging_rules.yaml) evaluated over a cohort.

A rule looks at one scope of the assessment — a visit, a muscle trajectory, or a muscle trajectory with a
visit near its latest exam — and fires when all its conditions hold. Each prompt carries the rule id,
evidence with values and dates, modality, urgency and the published source. Vectorised: each rule is a
boolean mask over a whole-cohort frame.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import operator
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml
from pandas.api.extensions import ExtensionArray

from dashboard.core.grades import format_mrc
from dashboard.core.joins import (
    encode,
    one_array,
    rows_in,
    sort_rank,
    take_columns,
    take_rows,
    text_array,
    text_column,
)

RULES_PATH = Path(__file__).resolve().parents[2] / "data" / "rules" / "imaging_rules.yaml"
CATEGORIES = ("red_flag", "compression", "fibrosis", "hardware")
MODALITIES = ("mri", "mri_contrast", "ct", "ct_myelography", "radiograph", "flexion_extension_radiograph",
              "venous_duplex")
URGENCIES = ("emergency", "urgent", "routine")
SCOPES = ("visit", "muscle", "muscle_visit")
OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "is")
COMPARISONS = {"eq": operator.eq, "ne": operator.ne, "lt": operator.lt, "le": operator.le, "gt": operator.gt,
               "ge": operator.ge}
PROMPT_COLUMNS = ["patient_id", "rule_id", "category", "modality", "urgency", "summary", "evidence", "source",
                  "evidence_hash"]

PATIENT_FIELDS = ("instrumented", "revision", "days_since_surgery", "age", "diabetes", "smoker", "procedure",
                  "levels")
VISIT_FIELDS = ("visit_date", "day", "leg_pain_nrs", "back_pain_nrs", "odi", "radicular_pain", "numbness",
                "saddle_anesthesia", "urinary_retention", "fecal_incontinence", "fever", "wound_drainage",
                "crp_mg_l", "calf_swelling", "screw_lucency", "implant_migration", "rod_fracture",
                "crp_rise_from_nadir", "back_pain_rise", "leg_pain_rise", "is_latest_visit", "days_ago")
MUSCLE_FIELDS = ("muscle", "root", "side", "baseline_mrc", "baseline_date", "first_post_mrc", "first_post_date",
                 "best_prior_mrc", "best_prior_date", "latest_mrc", "latest_date", "latest_day", "expected_mrc",
                 "expected_low", "expected_high", "status", "drop_from_best", "drop_from_first",
                 "gain_before_drop", "root_at_operated_level")
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

    @functools.cached_property
    def fields(self) -> frozenset[str]:
        """The fields the rule reads: in its conditions and in its evidence templates."""
        return frozenset(c["field"] for c in self.conditions + self.any_of) | frozenset(
            field for template in self.evidence for field in re.findall(r"{(\w+)}", template) if field != "finding")


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    sources: dict[str, dict]
    path: Path

    def source_text(self, rule: Rule) -> str:
        return "; ".join(self.sources[key]["citation"] for key in rule.source_keys)


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
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
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
    return RuleSet(tuple(rules), sources, path)


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
    for group, name in ((conditions, "when"), (any_of, "any_of")):
        for condition in group:
            _check_condition(condition, scope, lambda message, name=name: fail(name, message))
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
                entry.get("rationale", ""))


def _check_condition(condition, scope: str, fail) -> None:
    if not isinstance(condition, dict) or "field" not in condition:
        raise fail(f"{condition!r} must be a mapping with 'field' and one operator")
    if condition["field"] not in FIELDS_BY_SCOPE[scope]:
        raise fail(f"'{condition['field']}' is not a field of scope '{scope}'")
    operators = [key for key in condition if key != "field"]
    if len(operators) != 1 or operators[0] not in OPERATORS:
        raise fail(f"condition on '{condition['field']}' needs exactly one of {', '.join(OPERATORS)}")


# ---------------------------------------------------------------------------------------------- evaluation
def _holds(values: ExtensionArray, condition: dict) -> np.ndarray:
    """Where a condition holds on a column's values; a missing value never satisfies a condition (unknown
    is not normal). Works on the column's array: the same operations as on a Series, without its overhead."""
    (test, value), = ((k, v) for k, v in condition.items() if k != "field")
    if test == "is":
        result = (values if values.dtype.kind == "b" else values.astype("boolean")) == bool(value)
    elif test == "in":
        result = pd.Series(values, copy=False).isin(value)
    else:
        if isinstance(value, str) and values.dtype.kind == "M":
            value = pd.Timestamp(value)
        result = COMPARISONS[test](values, value)
    return result if isinstance(result, np.ndarray) else result.to_numpy(dtype=bool, na_value=False)


def _mask(frame: pd.DataFrame, condition: dict) -> np.ndarray:
    return _holds(frame[condition["field"]].array, condition)


def _rule_rows(frame: pd.DataFrame, rule: Rule) -> np.ndarray:
    """The rows where a rule fires; each condition is tested only on the rows that passed the ones before,
    conditions on text last (they are the slowest to test)."""
    rows = np.arange(len(frame))

    def values(field: str) -> ExtensionArray:
        return frame[field].array if len(rows) == len(frame) else frame[field].array.take(rows)

    for condition in sorted(rule.conditions, key=lambda c: isinstance(frame[c["field"]].dtype, pd.StringDtype)):
        rows = rows[_holds(values(condition["field"]), condition)]
    if rule.any_of and len(rows):
        rows = rows[np.logical_or.reduce([_holds(values(c["field"]), c) for c in rule.any_of])]
    return rows


def _visit_frame(patients: pd.DataFrame, visits: pd.DataFrame, patient_fields: list[str]) -> pd.DataFrame:
    """Visits after the index operation by patient and date, with changes since the patient's earlier visits
    and the patient's fields; `_patient` is the row in `patients` (visits of others are left out)."""
    patient = rows_in(visits["patient_id"], patients["patient_id"])
    day = visits["day"]
    rows = np.flatnonzero((day.notna() & (day >= 0)).to_numpy(dtype=bool) & (patient >= 0))
    rows = rows[_by_patient_then_date(sort_rank(patients["patient_id"])[patient[rows]],
                                      visits["visit_date"].to_numpy()[rows])]
    patient = patient[rows]
    frame = take_columns(visits, rows, [column for column in visits.columns if column in VISIT_FIELDS])
    # CRP normally peaks on day 2–5; a rise is measured from the lowest value after that peak.
    measured = pd.DataFrame({"crp_rise_from_nadir": frame["crp_mg_l"].where(frame["day"] >= 3),
                             "back_pain_rise": frame["back_pain_nrs"], "leg_pain_rise": frame["leg_pain_nrs"]})
    frame = pd.concat([frame, measured - _lowest_before(measured, patient),
                       take_rows(patients[patient_fields], patient)], axis=1)
    return frame.assign(
        is_latest_visit=np.r_[patient[1:] != patient[:-1], True] if len(frame) else np.zeros(0, dtype=bool),
        days_ago=patients["days_since_surgery"].array.take(patient) - frame["day"].array,
        _patient=patient,
    )


def _by_patient_then_date(patient_rank: np.ndarray, dates: np.ndarray) -> np.ndarray:
    """Order by patient, then date (missing last), ties in input order: one stable sort of one integer."""
    date_code, distinct = pd.factorize(dates, sort=True)
    date_code = np.where(date_code >= 0, date_code, len(distinct))
    return np.argsort(patient_rank * (len(distinct) + 1) + date_code, kind="stable")


def _lowest_before(values: pd.DataFrame, patient: np.ndarray) -> pd.DataFrame:
    """Per column, the lowest earlier value of the same patient (rows sorted by date), NaN when there is none."""
    running = values.groupby(patient).cummin()
    running = running.groupby(patient).ffill()
    return running.groupby(patient).shift(1)


def _muscle_frame(patients: pd.DataFrame, muscles: pd.DataFrame, patient_fields: list[str]) -> pd.DataFrame:
    """Trajectories of patients in `patients`, with the patient's fields; `_patient` is the row there."""
    patient = rows_in(muscles["patient_id"], patients["patient_id"])
    rows = np.flatnonzero(patient >= 0)
    patient = patient[rows]
    frame = pd.concat([take_rows(muscles, rows), take_rows(patients[patient_fields], patient)], axis=1)
    return frame.assign(
        drop_from_best=frame["best_prior_mrc"] - frame["latest_mrc"],
        drop_from_first=frame["first_post_mrc"] - frame["latest_mrc"],
        gain_before_drop=frame["best_prior_mrc"] - frame["baseline_mrc"],
        root_at_operated_level=_root_at_levels(frame["root"], patients["levels"], patient),
        _patient=patient,
    )


def _root_at_levels(roots: pd.Series, levels: pd.Series, level_row: np.ndarray) -> np.ndarray:
    """Whether each root exits or traverses at one of the operated segments `levels[level_row]`.

    Computed once per distinct root and distinct levels text.
    """
    root_codes, root_values = encode(roots)
    level_codes, level_values = encode(levels.fillna(""))
    table = np.array([[root in {r for seg in str(lv).split(";") if seg for r in SEGMENT_ROOTS.get(seg, ())}
                       for root in root_values.to_pylist()] for lv in level_values.to_pylist()], dtype=bool).reshape(
        len(level_values), len(root_values))
    return table[level_codes[level_row], root_codes] if len(roots) else np.zeros(0, dtype=bool)


def _muscle_visit_frame(muscles: pd.DataFrame, visits: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Trajectories joined to visits near their latest exam; muscle conditions first, so the join stays small.

    Pairs come by trajectory, then by visit date (as an inner merge on the patient gives them); only the
    fields the rule reads are kept, with the patient's from the trajectory side.
    """
    on_muscle = tuple(c for c in rule.conditions if c["field"] not in VISIT_FIELDS)
    candidates = _rule_rows(muscles, dataclasses.replace(rule, conditions=on_muscle, any_of=()))
    pair, visit = _visits_of(muscles["_patient"].to_numpy()[candidates], visits["_patient"].to_numpy())
    trajectory = candidates[pair]
    visit_date, latest_date = visits["visit_date"].to_numpy()[visit], muscles["latest_date"].to_numpy()[trajectory]
    with np.errstate(invalid="ignore"):
        gap = np.abs((visit_date - latest_date) // np.timedelta64(1, "D"))
    near = ~np.isnat(visit_date) & ~np.isnat(latest_date) & (gap <= rule.window_days)
    muscle_fields = [column for column in muscles.columns if column in rule.fields or column == "_patient"]
    visit_fields = [column for column in visits.columns if column in rule.fields and column not in muscle_fields]
    return pd.concat([take_columns(muscles, trajectory[near], muscle_fields),
                      take_columns(visits, visit[near], visit_fields)], axis=1)


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


def _render(hits: pd.DataFrame, template: str, findings: pa.Array | None = None) -> pa.Array:
    """Fill an evidence template for every row at once (one Arrow join); missing values read as 'missing'."""
    parts = [pa.scalar(part, TEXT) if field is None else findings if field == "finding" else _shown(hits[field], field)
             for part, field in _template_parts(template)]
    return pc.binary_join_element_wise(pa.repeat(pa.scalar("", TEXT), len(hits)), *parts, pa.scalar("", TEXT))


def _shown(column: pd.Series, field: str) -> pa.Array:
    """How each value reads in an evidence line, formatted once per distinct value."""
    if field in GRADE_FIELDS:
        return _per_value(column.to_numpy(dtype=float, na_value=np.nan), lambda grades: map(format_mrc, grades))
    if column.dtype.kind == "M":
        return _per_value(column.to_numpy(), lambda days: np.datetime_as_string(days, unit="D"))
    if str(column.dtype) == "boolean":
        return _per_value(column.to_numpy(dtype=object), lambda flags: ["yes" if flag else "no" for flag in flags])
    if column.dtype.kind == "f" or str(column.dtype) == "Float64":
        return _per_value(column.to_numpy(dtype=float, na_value=np.nan).round(1),
                          lambda numbers: [str(float(number)).removesuffix(".0") for number in numbers])
    if isinstance(column.dtype, pd.StringDtype):
        return pc.fill_null(one_array(column), "missing").cast(TEXT)
    return _per_value(column.to_numpy(dtype=object), lambda values: map(str, values))


def _per_value(values: np.ndarray, show) -> pa.Array:
    """The texts of `values`: `show` maps their distinct values to texts; missing values read 'missing'."""
    codes, distinct = pd.factorize(values)
    texts = pa.array([*show(distinct), "missing"], TEXT)
    return texts.take(np.where(codes >= 0, codes, len(distinct)))


def _findings(hits: pd.DataFrame, rule: Rule) -> np.ndarray:
    """Names of the boolean findings that made an any_of rule fire ('saddle_anesthesia, fever')."""
    names = np.full(len(hits), "", dtype=object)
    for condition in rule.any_of:
        hit = _mask(hits, condition)
        label = condition["field"]
        names = np.where(hit, np.where(names == "", label, names + ", " + label), names)
    return names


def _evidence_by_patient(hits: pd.DataFrame, rule: Rule) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Each patient's evidence lines, in row order then template order, each line once.

    Returns the patients (rows in `patients`), how many lines each has, and the lines one after another.
    """
    findings = pa.array(_findings(hits, rule), TEXT) if rule.any_of else None
    rendered = pa.concat_arrays([_render(hits, template, findings) for template in rule.evidence])
    rows, templates = len(hits), len(rule.evidence)
    line = np.arange(rows * templates)
    line = line % templates * rows + line // templates  # row by row, each row's lines in template order
    patient = hits["_patient"].to_numpy()[line % rows]
    order = np.argsort(patient, kind="stable")  # by patient, then row, then template
    patient, lines = patient[order], rendered.take(line[order])
    line_codes = lines.dictionary_encode().indices.to_numpy()
    first = np.sort(np.unique(patient * (line_codes.max() + 1) + line_codes, return_index=True)[1])
    patient, lines = patient[first], lines.take(first)
    starts = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1]])
    return patient[starts], np.diff(np.r_[starts, len(patient)]), lines


def evaluate(patients: pd.DataFrame, muscles: pd.DataFrame, visits: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """Every prompt for every patient: one row per patient and rule, with its evidence lines."""
    read = frozenset().union(*(rule.fields for rule in rules.rules))
    patient_fields = [field for field in PATIENT_FIELDS if field in read]
    visit_frame = _visit_frame(patients, visits, patient_fields)
    muscle_frame = _muscle_frame(patients, muscles, patient_fields)
    frames = {"visit": visit_frame, "muscle": muscle_frame}
    fired = []  # per rule that fired: its position, patients, lines per patient, lines
    for order, rule in enumerate(rules.rules):
        frame = frames[rule.scope] if rule.scope != "muscle_visit" else _muscle_visit_frame(
            muscle_frame, visit_frame, rule)
        rows = _rule_rows(frame, rule)
        if len(rows):
            hits = take_columns(frame, rows, [c for c in frame.columns if c in rule.fields or c == "_patient"])
            fired.append((order, *_evidence_by_patient(hits, rule)))
    if not fired:
        return pd.DataFrame(columns=PROMPT_COLUMNS)
    rule = np.concatenate([np.full(len(patient), order) for order, patient, _, _ in fired])
    patient = np.concatenate([patient for _, patient, _, _ in fired])
    counts = np.concatenate([counts for _, _, counts, _ in fired])
    evidence = pa.ListArray.from_arrays(np.r_[0, np.cumsum(counts)].astype(np.int32),
                                        pa.concat_arrays([lines for *_, lines in fired]))
    urgency = np.array([URGENCIES.index(r.urgency) for r in rules.rules])
    not_red = np.array([r.category != "red_flag" for r in rules.rules])
    order = np.lexsort((rule, urgency[rule], not_red[rule], sort_rank(patients["patient_id"])[patient]))
    rule, evidence = rule[order], evidence.take(order).to_pylist()

    def by_rule(values: list[str]) -> pd.Series:
        return text_column(pa.array(values, pa.string()), rule)

    return pd.DataFrame({
        "patient_id": text_column(text_array(patients["patient_id"]), patient[order]),
        "rule_id": by_rule([r.id for r in rules.rules]),
        "category": by_rule([r.category for r in rules.rules]),
        "modality": by_rule([r.modality for r in rules.rules]),
        "urgency": by_rule([r.urgency for r in rules.rules]),
        "summary": by_rule([r.summary for r in rules.rules]),
        "evidence": evidence,
        "source": by_rule([rules.source_text(r) for r in rules.rules]),
        "evidence_hash": pd.Series([evidence_hash(lines) for lines in evidence], dtype="str"),
    })


def evidence_hash(evidence: list[str]) -> str:
    """A short fingerprint of a prompt's evidence: a recorded decision holds until the evidence changes."""
    return hashlib.sha256("\n".join(evidence).encode("utf-8")).hexdigest()[:16]
