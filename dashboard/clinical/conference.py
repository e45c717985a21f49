"""Conference cases: a patient as a case conference may see it, with nothing that points back to them.

A case is "Case k" (its place in the case list), time is counted in weeks or months since the index
operation, age is a 5-year band. Name, MRN, patient id, free text (visit notes, decision reasons) and
calendar dates are dropped, and every date inside a prompt's evidence is rewritten relative to the
operation. Free-text fields that stay in a case become controlled values (dashboard.clinical.controlled_terms):
the procedure a term of data/vocabulary/procedures.yaml or "other procedure", levels lumbar segments, the
surgeon a pseudonym ("Surgeon A", the same for the whole cohort, so conferences can still discuss and
filter "Surgeon A's patients"), because a clinician may have typed a relative's phone number into any of
them. The deciding clinician is dropped (not needed for the discussion). Pure: no Streamlit, no Plotly.
Limits are in docs/conference.md.
"""

from __future__ import annotations

import html
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime

import pandas as pd

from dashboard.clinical.assessment import URGENCY_ORDER, Assessment
from dashboard.clinical.controlled_terms import SurgeonPseudonyms, levels_term, procedure_term
from dashboard.clinical.decisions import DECISION_LABELS
from dashboard.clinical.patient_view import PatientView, patient_view
from dashboard.clinical.summary import STATUS_SEVERITY

# Calendar dates as they appear in evidence and free text: ISO, "20 Apr 2026", "20/04/2026".
ISO_DATE = re.compile(r"\b(\d{4})-(\d{2})-(\d{2})(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?\b")
_MONTHS = "Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec"
TEXT_DATE = re.compile(rf"\b(\d{{1,2}}) ({_MONTHS})[a-z]* (\d{{4}})\b", re.IGNORECASE)
SLASH_DATE = re.compile(r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b")
DATE_REMOVED = "[date removed]"
SEX_CODES = ("F", "M", "X")  # the records format's codes (records.format): anything else is not shown
IDENTIFIER_LEAK = "patient identifier (id, name or MRN)"
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")

# Filters for building a case list, by key (also the CLI's --filter values).
CASE_FILTERS = {
    "urgent": "Open urgent or emergency prompts",
    "emergency": "Open emergency prompts",
    "open": "Any open prompt",
    "all": "Everyone in follow-up",
}

# Columns a conference case keeps; everything else (dates, notes, ids) is dropped by construction.
EXAM_COLUMNS = ["day", "muscle", "side", "mrc", "phase"]
VISIT_COLUMNS = ["day", "leg_pain_nrs", "back_pain_nrs", "odi", "radicular_pain", "numbness", "saddle_anesthesia",
                 "urinary_retention", "fecal_incontinence", "fever", "wound_drainage", "crp_mg_l", "calf_swelling",
                 "screw_lucency", "implant_migration", "rod_fracture"]
MUSCLE_COLUMNS = ["muscle", "root", "side", "label", "baseline_mrc", "latest_mrc", "latest_day", "expected_mrc",
                  "expected_low", "expected_high", "status", "curve_group"]
CASE_PROMPT_COLUMNS = ["rule_id", "category", "modality", "urgency", "summary", "evidence", "source", "decision",
                       "decision_label", "decision_week", "decision_current", "decision_has_reason"]


@dataclass
class ConferenceCase:
    """One de-identified case: what the conference page and the handout show, and nothing more."""

    number: int
    label: str  # "Case 3"
    header: dict  # age band, sex, operation, time since it, surgeon, factors, top urgency
    view: PatientView  # frames without dates, notes or ids, for the charts
    prompts: pd.DataFrame  # CASE_PROMPT_COLUMNS, evidence dates rewritten as weeks
    missing: list[str]


# ---------------------------------------------------------------------------------------------- wording

def age_band(age: float | int | None) -> str:
    """Five-year band ("60–64"); 90 and over are pooled, as in the HIPAA safe-harbour rule."""
    if age is None or pd.isna(age):
        return "age not recorded"
    age = int(age)
    if age >= 90:
        return "90+"
    low = age // 5 * 5
    return f"{low}–{low + 4}"


def week_label(day: float | int | None) -> str:
    """A day since the operation as 'week N' (day 0–6 is week 0; before the operation 'week −N')."""
    if day is None or pd.isna(day):
        return "week unknown"
    week = math.floor(float(day) / 7)
    return f"week {week}" if week >= 0 else f"week −{-week}"


def time_since_operation(days: float | int | None) -> str:
    """Follow-up time as a conference says it: weeks in the first six months, months after."""
    if days is None or pd.isna(days):
        return "not operated yet"
    days = int(days)
    if days < 0:
        return "before the operation"
    if days < 14:  # the first days matter (haematoma, cauda equina): say the day too
        return f"{week_label(days)} (day {days}) after the operation"
    if days < 183:
        return f"{week_label(days)} after the operation"
    return f"{int(days // 30.4375)} months after the operation ({week_label(days)})"


def _as_timestamp(value) -> pd.Timestamp | None:
    if value is None or (not isinstance(value, (date, datetime, pd.Timestamp)) and pd.isna(value)):
        return None
    stamp = pd.Timestamp(value)
    if stamp.tzinfo is not None:
        stamp = stamp.tz_convert("UTC").tz_localize(None)
    return stamp.normalize()


def rewrite_dates(text: str, operation: date | pd.Timestamp | None) -> str:
    """Every calendar date in `text` as a week since the operation; dates it cannot place are removed.

    "2026-11-18 (day 43) … baseline 5 on 2026-09-17" → "week 6 (day 43) … baseline 5 in week −9".
    """
    anchor = _as_timestamp(operation)

    def iso(match: re.Match) -> str:
        try:
            when = pd.Timestamp(date(int(match[1]), int(match[2]), int(match[3])))
        except ValueError:
            return DATE_REMOVED
        return DATE_REMOVED if anchor is None else week_label((when - anchor).days)

    def text_date(match: re.Match) -> str:
        try:
            when = pd.Timestamp(datetime.strptime(f"{match[1]} {match[2][:3].title()} {match[3]}", "%d %b %Y"))
        except ValueError:
            return DATE_REMOVED
        return DATE_REMOVED if anchor is None else week_label((when - anchor).days)

    text = ISO_DATE.sub(iso, str(text))
    text = TEXT_DATE.sub(text_date, text)
    text = SLASH_DATE.sub(DATE_REMOVED, text)
    return re.sub(r"\bon (week (?:−)?\d+)", r"in \1", text)


# ---------------------------------------------------------------------------------------------- case lists

def _open(prompts: pd.DataFrame) -> pd.DataFrame:
    """Prompts still open: undecided on their current evidence, or deferred. Without decisions, all."""
    if "decision_current" not in prompts:
        return prompts
    return prompts[~prompts["decision_current"].astype(bool) | (prompts["decision"] == "deferred")]


def in_follow_up(assessment: Assessment) -> list[str]:
    """Patients with an index operation, in the assessment's order (most urgent first)."""
    patients = assessment.patients
    return patients.loc[patients["surgery_date"].notna(), "patient_id"].tolist()


def worst_status(assessment: Assessment) -> pd.Series:
    """Each patient's most worrying muscle status (the clinic list's 'worst muscle')."""
    muscles = assessment.muscles
    rank = muscles["status"].map({s: i for i, s in enumerate(STATUS_SEVERITY)})
    return rank.groupby(muscles["patient_id"]).min().map(dict(enumerate(STATUS_SEVERITY)))


def select_cases(assessment: Assessment, prompts: pd.DataFrame | None = None, *, filter: str = "urgent",
                 statuses: Iterable[str] | None = None, surgeons: Iterable[str] | None = None) -> list[str]:
    """Patient ids for a case list built by filter, in the clinic's order (most urgent open prompt first).

    `prompts` may carry decisions (decisions.with_decisions): decided prompts are then not open.
    `surgeons`: recorded names or pseudonyms ("Surgeon A").
    """
    if filter not in CASE_FILTERS:
        raise ValueError(f"unknown case filter {filter!r}: use one of {', '.join(CASE_FILTERS)}")
    ids = in_follow_up(assessment)
    prompts = _open(assessment.prompts if prompts is None else prompts)
    if filter != "all":
        wanted = {"urgent": ("emergency", "urgent"), "emergency": ("emergency",),
                  "open": tuple(URGENCY_ORDER)}[filter]
        keep = set(prompts.loc[prompts["urgency"].isin(wanted), "patient_id"])
        ids = [pid for pid in ids if pid in keep]
    if statuses:
        worst = worst_status(assessment)
        chosen = set(statuses)
        ids = [pid for pid in ids if worst.get(pid) in chosen]
    if surgeons:  # as recorded (surgeons at the command line) or as the pseudonym a case shows ("Surgeon A")
        chosen = set(surgeons)
        pseudonyms = surgeon_pseudonyms(assessment)
        surgeon = assessment.patients.set_index("patient_id")["surgeon"]
        ids = [pid for pid in ids if surgeon.get(pid) in chosen or pseudonyms.pseudonym(surgeon.get(pid)) in chosen]
    rank = prompts["urgency"].map(URGENCY_ORDER).groupby(prompts["patient_id"]).min()
    order = {pid: i for i, pid in enumerate(ids)}
    return sorted(ids, key=lambda pid: (rank.get(pid, len(URGENCY_ORDER)), order[pid]))


def hand_picked(assessment: Assessment, patient_ids: Sequence[str]) -> list[str]:
    """A case list chosen by hand, in the order given (repeats dropped); unknown ids are an error."""
    known = set(in_follow_up(assessment))
    unknown = [pid for pid in patient_ids if pid not in known]
    if unknown:
        raise KeyError(f"{len(unknown)} patient id(s) are not in follow-up on the assessment day")
    return list(dict.fromkeys(patient_ids))


# ---------------------------------------------------------------------------------------------- cases

def surgeon_pseudonyms(assessment: Assessment) -> SurgeonPseudonyms:
    """The cohort's surgeons as "Surgeon A", "Surgeon B", …: one pseudonym per surgeon on every case."""
    return SurgeonPseudonyms.of(assessment.patients["surgeon"])


def deidentify_view(view: PatientView, number: int, prompts: pd.DataFrame | None = None, *,
                    surgeons: SurgeonPseudonyms | None = None) -> ConferenceCase:
    """A PatientView as conference case `number`. `prompts` may carry decisions (with_decisions).

    `surgeons`: the cohort's pseudonyms; without them the surgeon is left out ("surgeon not shown"), since
    a pseudonym made from one case alone would call every surgeon "Surgeon A".
    """
    label = f"Case {number}"
    h = view.header
    operation = h.get("surgery_date")
    procedure = procedure_term(h.get("procedure"))
    header = {
        "case": label,
        "age_band": age_band(h.get("age")),
        "sex": h["sex"] if isinstance(h.get("sex"), str) and h["sex"] in SEX_CODES else None,
        "procedure": procedure,
        "levels": levels_term(h.get("levels")),
        "instrumented": h.get("instrumented"),
        "revision": h.get("revision"),
        "diabetes": h.get("diabetes"),
        "smoker": h.get("smoker"),
        "surgeon": (surgeons or SurgeonPseudonyms({})).pseudonym(h.get("surgeon")),
        "days_since_surgery": h.get("days_since_surgery"),
        "follow_up": time_since_operation(h.get("days_since_surgery")),
        "weakness_before_operation": None if h.get("deficit_days") is None
        else f"{max(1, round(float(h['deficit_days']) / 7))} weeks",
        "top_urgency": h.get("top_urgency"),
    }
    exams = view.exams[[c for c in EXAM_COLUMNS if c in view.exams]].reset_index(drop=True)
    visits = view.visits[[c for c in VISIT_COLUMNS if c in view.visits]].reset_index(drop=True)
    muscles = view.muscles.copy()
    anchor = _as_timestamp(operation)
    muscles["latest_day"] = ((muscles["latest_date"] - anchor).dt.days if anchor is not None
                             else pd.Series(pd.NA, index=muscles.index))
    muscles = muscles[[c for c in MUSCLE_COLUMNS if c in muscles]]
    written = str(h.get("procedure") or "").strip()
    recorded = {written: procedure} if written else {}
    case_prompts = _case_prompts(view.prompts if prompts is None else prompts, operation, recorded)
    missing = [rewrite_dates(note, operation) for note in view.missing]
    safe_view = replace(view, patient_id=label, header=header, exams=exams, visits=visits, muscles=muscles,
                        prompts=case_prompts, missing=missing)
    return ConferenceCase(number, label, header, safe_view, case_prompts, missing)


def _controlled(text: str, recorded: dict[str, str]) -> str:
    """An evidence line with any recorded free text (a rule template quoting {procedure}) replaced by its
    controlled term, so the case never carries the text as written. Texts under 4 characters are left:
    replacing "R" or "4" would corrupt the evidence, and they cannot hold a name or a number to call."""
    for written, term in recorded.items():
        if len(written) >= 4 and written.casefold() != term.casefold():
            text = re.sub(rf"(?<!\w){re.escape(written)}(?!\w)", lambda _, term=term: term, text, flags=re.IGNORECASE)
    return text


def _case_prompts(prompts: pd.DataFrame, operation, recorded: dict[str, str] | None = None) -> pd.DataFrame:
    anchor = _as_timestamp(operation)
    recorded = recorded or {}
    rows = []
    for p in prompts.itertuples(index=False):
        decision = getattr(p, "decision", None)
        decision = decision if isinstance(decision, str) else None
        decided_at = _as_timestamp(getattr(p, "decided_at", None)) if decision else None
        reason = getattr(p, "decision_reason", None)
        rows.append({
            "rule_id": p.rule_id, "category": p.category, "modality": p.modality, "urgency": p.urgency,
            "summary": rewrite_dates(p.summary, operation),
            "evidence": [rewrite_dates(_controlled(line, recorded), operation) for line in p.evidence],
            "source": rewrite_dates(p.source, operation),
            "decision": decision,
            "decision_label": DECISION_LABELS.get(decision) if decision else None,
            "decision_week": None if decided_at is None or anchor is None
            else week_label((decided_at - anchor).days),
            "decision_current": bool(getattr(p, "decision_current", False)) if decision else False,
            "decision_has_reason": isinstance(reason, str) and bool(reason.strip()),
        })
    return pd.DataFrame(rows, columns=CASE_PROMPT_COLUMNS)


def conference_cases(assessment: Assessment, patient_ids: Sequence[str], prompts: pd.DataFrame | None = None,
                     exams: Callable[[str], pd.DataFrame] | None = None) -> list[ConferenceCase]:
    """The case list as conference cases 1…n, in the order of `patient_ids`.

    `prompts`: the assessment's prompts, with decisions when known; `exams`: a fast per-patient exam
    lookup (patient_view.ExamIndex.exams) for large cohorts.
    """
    prompts = assessment.prompts if prompts is None else prompts
    by_patient = {pid: group for pid, group in prompts.groupby("patient_id", sort=False)}
    empty = prompts.iloc[:0]
    surgeons = surgeon_pseudonyms(assessment)
    return [deidentify_patient(assessment, pid, k, by_patient.get(pid, empty), exams, surgeons=surgeons)
            for k, pid in enumerate(patient_ids, start=1)]


def deidentify_patient(assessment: Assessment, patient_id: str, number: int, prompts: pd.DataFrame | None = None,
                       exams: Callable[[str], pd.DataFrame] | None = None, *,
                       surgeons: SurgeonPseudonyms | None = None) -> ConferenceCase:
    """One patient of an assessment as conference case `number`; `surgeons` the cohort's pseudonyms
    (made from the assessment when not given: pass them when making many cases)."""
    view = patient_view(assessment, patient_id, exams(patient_id) if exams else None)
    if prompts is None:
        prompts = view.prompts
    return deidentify_view(view, number, prompts.reset_index(drop=True),
                           surgeons=surgeon_pseudonyms(assessment) if surgeons is None else surgeons)


# ---------------------------------------------------------------------------------------------- checking

def identifiers(patients: pd.DataFrame, ids: Iterable[str] | None = None) -> list[str]:
    """The direct identifiers of some patients (patient id, name, MRN), for a last check of an output."""
    frame = patients if ids is None else patients[patients["patient_id"].isin(set(ids))]
    values: list[str] = []
    for column in ("patient_id", "name", "mrn"):
        if column in frame:
            values.extend(str(v) for v in frame[column].dropna() if str(v).strip())
    return values


_STYLE = re.compile(r"<(style|script|head)\b.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_TAG = re.compile(r"<[^>]*>")
_INVISIBLE = re.compile("[\u00ad\u200b-\u200d\u2060\ufeff]")  # soft hyphen, zero-width characters


def visible_text(document: str) -> str:
    """What a reader of an HTML document sees: no head, style or tags; entities decoded; invisible characters
    (soft hyphens, zero-width spaces) dropped, so "Jo&shy;hanna" reads, and is checked, as "Johanna"."""
    text = _TAG.sub(" ", _STYLE.sub(" ", document))
    return " ".join(_INVISIBLE.sub("", html.unescape(text)).split())


def leaks(text: str, identifying: Iterable[str], wording: Iterable[str] = ()) -> list[str]:
    """What of `identifying` (and any calendar date or e-mail address) appears in `text`: empty when clean.

    `text` is read as a reader sees it (visible_text: markup, styles and entities do not count) and each
    identifier is looked for as a whole word or phrase, case-insensitively: a patient named "Li" is found
    in "seen by Li" but not in "<li>" or "lift". `wording`: texts that are not records (the rules' summaries
    and published sources, whose authors' names and initials "Ahn", "Li", "et al." could equal a short
    name), left out before the search. A one-word name that is a word of the rest of the wording ("An") is
    found, and the output refused: safe, and the message says how to go on. Returns kinds, never the values,
    so that the result can be logged or shown without disclosing them.
    """
    found = []
    shown = visible_text(text)
    for phrase in sorted({" ".join(str(w).split()) for w in wording if str(w).strip()}, key=len, reverse=True):
        shown = shown.replace(phrase, " \u2022 ")
    needles = {" ".join(str(value).casefold().split()) for value in identifying} - {""}
    if needles:  # one pattern for all identifiers: a 200-case handout has 600 of them
        alternatives = "|".join(map(re.escape, sorted(needles, key=len, reverse=True)))
        if re.search(rf"(?<!\w)(?:{alternatives})(?!\w)", shown.casefold()):
            found.append(IDENTIFIER_LEAK)
    if ISO_DATE.search(shown) or TEXT_DATE.search(shown):
        found.append("calendar date")
    if EMAIL.search(shown):
        found.append("e-mail address")
    return found
