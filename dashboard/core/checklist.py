"""The imaging checklist: declarative rules (data/rules/imaging_rules.yaml) evaluated over a cohort.

A rule looks at one scope of the assessment — a visit, a muscle trajectory, or a muscle trajectory with a
visit near its latest exam — and fires when all its conditions hold. Each prompt carries the rule id,
evidence with values and dates, modality, urgency and the published source. Vectorised: each scope is one
whole-cohort table of plain columns (rule_columns), and each condition one numpy test over it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from dashboard.core.grades import format_mrc
from dashboard.core.joins import rows_in, sort_rank, take_text, text_column
from dashboard.core.rule_columns import (
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

RULES_PATH = Path(__file__).resolve().parents[2] / "data" / "rules" / "imaging_rules.yaml"
CATEGORIES = ("red_flag", "compression", "fibrosis", "hardware")
MODALITIES = ("mri", "mri_contrast", "ct", "ct_myelography", "radiograph", "flexion_extension_radiograph",
              "venous_duplex")
URGENCIES = ("emergency", "urgent", "routine")
SCOPES = ("visit", "muscle", "muscle_visit")
OPERATORS = (*COMPARISONS, "in", "is")
PROMPT_COLUMNS = ["patient_id", "rule_id", "category", "modality", "urgency", "summary", "evidence", "source"]

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
def _rule_rows(table: Table, rule: Rule) -> np.ndarray:
    """The rows where a rule fires; each condition is tested only on the rows that passed the ones before."""
    rows = None  # all of them

    def passing(mask: np.ndarray) -> np.ndarray:
        return np.flatnonzero(mask) if rows is None else rows[mask]

    for condition in rule.conditions:
        rows = passing(holds(table[condition["field"]].take(rows), condition))
    if rule.any_of and (rows is None or len(rows)):
        rows = passing(np.logical_or.reduce([holds(table[c["field"]].take(rows), c) for c in rule.any_of]))
    return np.arange(len(table)) if rows is None else rows


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

    return Table(patient, {  # the derived fields read the others from the table they are made for
        **frame_makers(visits, VISIT_FIELDS, rows),
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


def _muscle_table(patient_table: Table, patient_ids: pd.Series, muscles: pd.DataFrame) -> Table:
    """Trajectories of the patients in `patient_ids`, with the patient's fields and changes between picks."""
    patient = rows_in(muscles["patient_id"], patient_ids)
    rows = np.flatnonzero(patient >= 0)
    patient = patient[rows]
    rows = None if len(rows) == len(muscles) else rows

    def difference(first: str, second: str) -> Maker:
        return lambda table: number(table[first].values - table[second].values)

    return Table(patient, {  # the derived fields read the others from the table they are made for
        **frame_makers(muscles, MUSCLE_FIELDS, rows),
        **_patient_makers(patient_table, patient),
        "drop_from_best": difference("best_prior_mrc", "latest_mrc"),
        "drop_from_first": difference("first_post_mrc", "latest_mrc"),
        "gain_before_drop": difference("best_prior_mrc", "baseline_mrc"),
        "root_at_operated_level": lambda table: flag(_root_at_levels(table["root"], table["levels"])),
    })


def _root_at_levels(roots: Column, levels: Column) -> np.ndarray:
    """Whether each root exits or traverses at one of the operated segments, decided once per distinct
    root and distinct levels text (missing levels: no)."""
    table = np.zeros((len(levels.texts) + 1, len(roots.texts) + 1), dtype=bool)
    for row, text in enumerate(levels.texts):
        at_risk = {root for segment in text.split(";") for root in SEGMENT_ROOTS.get(segment, ())}
        table[row, :-1] = [root in at_risk for root in roots.texts]
    return table[levels.values, roots.values]


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


def _findings(hits: Table, rule: Rule) -> np.ndarray:
    """Names of the boolean findings that made an any_of rule fire ('saddle_anesthesia, fever')."""
    names = np.full(len(hits), "", dtype=object)
    for condition in rule.any_of:
        hit = holds(hits[condition["field"]], condition)
        label = condition["field"]
        names = np.where(hit, np.where(names == "", label, names + ", " + label), names)
    return names


def _evidence_by_patient(hits: Table, rule: Rule) -> tuple[np.ndarray, np.ndarray, pa.Array]:
    """Each patient's evidence lines, in row order then template order, each line once.

    Returns the patients (rows in `patients`), how many lines each has, and the lines one after another.
    """
    findings = pa.array(_findings(hits, rule), TEXT) if rule.any_of else None
    rendered = pa.concat_arrays([_render(hits, template, findings) for template in rule.evidence])
    rows, templates = len(hits), len(rule.evidence)
    line = np.arange(rows * templates)
    line = line % templates * rows + line // templates  # row by row, each row's lines in template order
    patient = hits.patient[line % rows]
    order = np.argsort(patient, kind="stable")  # by patient, then row, then template
    patient, lines = patient[order], rendered.take(line[order])
    line_codes = lines.dictionary_encode().indices.to_numpy()
    first = np.sort(np.unique(patient * (line_codes.max() + 1) + line_codes, return_index=True)[1])
    patient, lines = patient[first], lines.take(first)
    starts = np.flatnonzero(np.r_[True, patient[1:] != patient[:-1]])
    return patient[starts], np.diff(np.r_[starts, len(patient)]), lines


def evaluate(patients: pd.DataFrame, muscles: pd.DataFrame, visits: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """Every prompt for every patient: one row per patient and rule, with its evidence lines."""
    patient_rank = sort_rank(patients["patient_id"])
    patient_table = _patient_table(patients)
    tables = {"visit": _visit_table(patient_table, patient_rank, patients["patient_id"], visits),
              "muscle": _muscle_table(patient_table, patients["patient_id"], muscles)}
    fired = []  # per rule that fired: its position, patients, lines per patient, lines
    for order, rule in enumerate(rules.rules):
        table = tables[rule.scope] if rule.scope != "muscle_visit" else _muscle_visit_table(
            tables["muscle"], tables["visit"], rule)
        rows = _rule_rows(table, rule)
        if len(rows):
            fired.append((order, *_evidence_by_patient(table.take(rows), rule)))
    if not fired:
        return pd.DataFrame(columns=PROMPT_COLUMNS)
    rule = np.concatenate([np.full(len(patient), order) for order, patient, _, _ in fired])
    patient = np.concatenate([patient for _, patient, _, _ in fired])
    counts = np.concatenate([counts for _, _, counts, _ in fired])
    evidence = pa.ListArray.from_arrays(np.r_[0, np.cumsum(counts)].astype(np.int32),
                                        pa.concat_arrays([lines for *_, lines in fired]))
    urgency = np.array([URGENCIES.index(r.urgency) for r in rules.rules])
    not_red = np.array([r.category != "red_flag" for r in rules.rules])
    order = np.lexsort((rule, urgency[rule], not_red[rule], patient_rank[patient]))
    rule, evidence = rule[order], evidence.take(order).to_pylist()

    def by_rule(values: list[str]) -> pd.Series:
        return text_column(pa.array(values, pa.string()), rule)

    return pd.DataFrame({
        "patient_id": take_text(patients["patient_id"], patient[order]),
        "rule_id": by_rule([r.id for r in rules.rules]),
        "category": by_rule([r.category for r in rules.rules]),
        "modality": by_rule([r.modality for r in rules.rules]),
        "urgency": by_rule([r.urgency for r in rules.rules]),
        "summary": by_rule([r.summary for r in rules.rules]),
        "evidence": evidence,
        "source": by_rule([rules.source_text(r) for r in rules.rules]),
    })


def evidence_hash(evidence: list[str]) -> str:
    """A short fingerprint of a prompt's evidence: a recorded decision holds until the evidence changes.

    Worked out where a decision is recorded or compared (decision_state), not for every prompt of a cohort."""
    return hashlib.sha256("\n".join(evidence).encode("utf-8")).hexdigest()[:16]
