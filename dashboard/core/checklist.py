"""The imaging checklist: declarative rules (data/rules/imaging_rules.yaml) evaluated over a cohort.

A rule looks at one scope of the assessment — a visit, a muscle trajectory, or a muscle trajectory with a
visit near its latest exam — and fires when all its conditions hold. Each prompt carries the rule id,
evidence with values and dates, modality, urgency and the published source. Vectorised: each rule is a
boolean mask over a whole-cohort frame.
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from dashboard.core.grades import format_mrc_series

RULES_PATH = Path(__file__).resolve().parents[2] / "data" / "rules" / "imaging_rules.yaml"
CATEGORIES = ("red_flag", "compression", "fibrosis", "hardware")
MODALITIES = ("mri", "mri_contrast", "ct", "ct_myelography", "radiograph", "flexion_extension_radiograph",
              "venous_duplex")
URGENCIES = ("emergency", "urgent", "routine")
SCOPES = ("visit", "muscle", "muscle_visit")
OPERATORS = ("eq", "ne", "lt", "le", "gt", "ge", "in", "is")
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
def _mask(frame: pd.DataFrame, condition: dict) -> np.ndarray:
    """Where a condition holds; a missing value never satisfies a condition (unknown is not normal)."""
    column = frame[condition["field"]]
    (operator, value), = ((k, v) for k, v in condition.items() if k != "field")
    if operator == "is":
        result = column.astype("boolean") == bool(value)
    elif operator == "in":
        result = column.isin(value)
    else:
        if isinstance(value, str) and column.dtype.kind == "M":
            value = pd.Timestamp(value)
        result = getattr(column, operator)(value)
    return pd.array(result, dtype="boolean").fillna(False).to_numpy(dtype=bool)


def _rule_mask(frame: pd.DataFrame, rule: Rule) -> np.ndarray:
    mask = np.ones(len(frame), dtype=bool)
    for condition in rule.conditions:
        mask &= _mask(frame, condition)
    if rule.any_of:
        mask &= np.logical_or.reduce([_mask(frame, c) for c in rule.any_of])
    return mask


def _visit_frame(patients: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """Visits after the index operation, with changes since earlier visits of the same patient."""
    frame = visits[visits["day"].notna() & (visits["day"] >= 0)].sort_values(["patient_id", "visit_date"])
    patient = pd.Series(pd.factorize(frame["patient_id"])[0], index=frame.index)
    # CRP normally peaks on day 2–5; a rise is measured from the lowest value after that peak.
    crp_after_peak = frame["crp_mg_l"].where(frame["day"] >= 3)
    frame = frame.assign(
        crp_rise_from_nadir=crp_after_peak - _lowest_before(crp_after_peak, patient),
        back_pain_rise=frame["back_pain_nrs"] - _lowest_before(frame["back_pain_nrs"], patient),
        leg_pain_rise=frame["leg_pain_nrs"] - _lowest_before(frame["leg_pain_nrs"], patient),
        is_latest_visit=~frame.duplicated("patient_id", keep="last"),
    )
    frame = frame.merge(patients[["patient_id", *PATIENT_FIELDS]], on="patient_id", how="inner")
    return frame.assign(days_ago=frame["days_since_surgery"] - frame["day"])


def _lowest_before(values: pd.Series, patient: pd.Series) -> pd.Series:
    """The lowest earlier value of the same patient (rows sorted by date), NaN when there is none."""
    running = values.groupby(patient).cummin()
    running = running.groupby(patient).ffill()
    return running.groupby(patient).shift(1)


def _muscle_frame(patients: pd.DataFrame, muscles: pd.DataFrame) -> pd.DataFrame:
    frame = muscles.merge(patients[["patient_id", *PATIENT_FIELDS]], on="patient_id", how="inner")
    return frame.assign(
        drop_from_best=frame["best_prior_mrc"] - frame["latest_mrc"],
        drop_from_first=frame["first_post_mrc"] - frame["latest_mrc"],
        gain_before_drop=frame["best_prior_mrc"] - frame["baseline_mrc"],
        root_at_operated_level=_root_at_levels(frame["root"], frame["levels"]),
    )


def _root_at_levels(roots: pd.Series, levels: pd.Series) -> np.ndarray:
    """Whether each root exits or traverses at one of the operated segments (computed per distinct pair)."""
    root_codes, root_values = pd.factorize(roots)
    level_codes, level_values = pd.factorize(levels.fillna(""))
    table = np.array([[root in {r for seg in str(lv).split(";") if seg for r in SEGMENT_ROOTS.get(seg, ())}
                       for root in root_values] for lv in level_values], dtype=bool).reshape(
        len(level_values), len(root_values))
    return table[level_codes, root_codes] if len(roots) else np.zeros(0, dtype=bool)


def _render(frame: pd.DataFrame, template: str) -> pd.Series:
    """Fill an evidence template for every row at once; missing values read as 'missing'."""
    parts = re.split(r"({\w+})", template)
    text = pd.Series("", index=frame.index, dtype=object)
    for part in parts:
        match = re.fullmatch(r"{(\w+)}", part)
        if not match:
            text = text + part
            continue
        text = text + _shown(frame, match.group(1))
    return text


def _shown(frame: pd.DataFrame, field: str) -> pd.Series:
    if field == "finding":
        return frame["_finding"]
    column = frame[field]
    if field in GRADE_FIELDS:
        return format_mrc_series(column)
    if column.dtype.kind == "M":
        return column.dt.strftime("%Y-%m-%d").fillna("missing")
    if str(column.dtype) == "boolean":
        return column.map({True: "yes", False: "no"}).fillna("missing").astype(object)
    if column.dtype.kind == "f" or str(column.dtype) == "Float64":
        text = column.astype(float).round(1).astype(str).str.replace(r"\.0$", "", regex=True)
        return text.where(column.notna(), "missing").astype(object)
    return column.astype(object).where(column.notna(), "missing").astype(str)


def _findings(frame: pd.DataFrame, rule: Rule) -> pd.Series:
    """Names of the boolean findings that made an any_of rule fire ('saddle_anesthesia, fever')."""
    names = pd.Series("", index=frame.index, dtype=object)
    for condition in rule.any_of:
        hit = _mask(frame, condition)
        label = condition["field"]
        names = names.where(~hit, np.where(names == "", label, names + ", " + label))
    return names


def evaluate(patients: pd.DataFrame, muscles: pd.DataFrame, visits: pd.DataFrame, rules: RuleSet) -> pd.DataFrame:
    """Every prompt for every patient: one row per patient and rule, with its evidence lines."""
    visit_frame = _visit_frame(patients, visits)
    muscle_frame = _muscle_frame(patients, muscles)
    frames = {"visit": visit_frame, "muscle": muscle_frame}
    fired = []
    for order, rule in enumerate(rules.rules):
        frame = frames[rule.scope] if rule.scope != "muscle_visit" else _muscle_visit_frame(
            muscle_frame, visit_frame, rule)
        if frame.empty:
            continue
        hits = frame[_rule_mask(frame, rule)]
        if hits.empty:
            continue
        if rule.any_of:
            hits = hits.assign(_finding=_findings(hits, rule))
        patients, evidence = _evidence_by_patient(hits, rule)
        fired.append(pd.DataFrame({
            "patient_id": patients, "rule_id": rule.id, "category": rule.category,
            "modality": rule.modality, "urgency": rule.urgency, "summary": rule.summary,
            "evidence": evidence, "source": rules.source_text(rule), "_order": order,
        }))
    if not fired:
        return pd.DataFrame(columns=PROMPT_COLUMNS)
    prompts = pd.concat(fired, ignore_index=True)
    prompts["evidence_hash"] = prompts["evidence"].map(evidence_hash)
    prompts["_urgency"] = prompts["urgency"].map({u: i for i, u in enumerate(URGENCIES)})
    prompts["_red"] = prompts["category"] != "red_flag"
    prompts = prompts.sort_values(["patient_id", "_red", "_urgency", "_order"], kind="stable")
    return prompts[PROMPT_COLUMNS].reset_index(drop=True)


def _evidence_by_patient(hits: pd.DataFrame, rule: Rule) -> tuple[np.ndarray, list[list[str]]]:
    """Each patient's evidence lines, in row order then template order, each line once."""
    long = pd.DataFrame({
        "patient_id": np.tile(hits["patient_id"].to_numpy(dtype=object), len(rule.evidence)),
        "row": np.tile(np.arange(len(hits)), len(rule.evidence)),
        "template": np.repeat(np.arange(len(rule.evidence)), len(hits)),
        "line": np.concatenate([_render(hits, t).to_numpy(dtype=object) for t in rule.evidence]),
    })
    long["patient"] = pd.factorize(long["patient_id"])[0]
    long = long.sort_values(["patient", "row", "template"], kind="stable").drop_duplicates(["patient", "line"])
    starts = np.flatnonzero(np.r_[True, long["patient"].to_numpy()[1:] != long["patient"].to_numpy()[:-1]])
    lines = np.split(long["line"].to_numpy(dtype=object), starts[1:])
    return long["patient_id"].to_numpy()[starts], [list(chunk) for chunk in lines]


def _muscle_visit_frame(muscles: pd.DataFrame, visits: pd.DataFrame, rule: Rule) -> pd.DataFrame:
    """Trajectories joined to visits near their latest exam; muscle conditions first, so the join stays small."""
    on_muscle = [c for c in rule.conditions if c["field"] not in VISIT_FIELDS]
    candidates = muscles
    for condition in on_muscle:
        candidates = candidates[_mask(candidates, condition)]
    joined = candidates.merge(visits.drop(columns=list(PATIENT_FIELDS)), on="patient_id", how="inner")
    near = (joined["visit_date"] - joined["latest_date"]).dt.days.abs() <= rule.window_days
    return joined[near.fillna(False).to_numpy(dtype=bool)]


def evidence_hash(evidence: list[str]) -> str:
    """A short fingerprint of a prompt's evidence: a recorded decision holds until the evidence changes."""
    return hashlib.sha256("\n".join(evidence).encode("utf-8")).hexdigest()[:16]
