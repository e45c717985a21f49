"""Cohort summaries for the command line's table and the clinic list."""

from __future__ import annotations

import textwrap

import pandas as pd

from dashboard.clinical.assessment import URGENCY_ORDER, Assessment
from dashboard.clinical.mrc import format_mrc
from dashboard.clinical.wording import MODALITY_WORDS, MUSCLE_WORDS, SIDE_WORDS, URGENCY_WORDS, status_words

ATTENTION = ("new_deficit", "deteriorating", "behind", "no_baseline", "insufficient_data")
STATUS_SEVERITY = ("new_deficit", "deteriorating", "behind", "no_baseline", "insufficient_data", "on_track",
                   "recovered", "no_deficit")


def _worst_status(muscles: pd.DataFrame) -> pd.Series:
    rank = muscles["status"].map({s: i for i, s in enumerate(STATUS_SEVERITY)})
    worst = rank.groupby(muscles["patient_id"]).min()
    return worst.map(dict(enumerate(STATUS_SEVERITY)))


def assessment_lines(assessment: Assessment, width: int = 100) -> list[str]:
    """The command line's table: a few plain lines per patient, most urgent first, none wider than `width`.

    What a surgeon reads at a terminal: the operation and day, the muscles needing attention (grade now and
    before the operation, status in words) and each prompt with its urgency, what to do and its question.
    """
    muscles = assessment.muscles[assessment.muscles["status"].isin(ATTENTION)]
    muscle_text = (muscles["side"].map(SIDE_WORDS) + " " + muscles["muscle"].map(MUSCLE_WORDS) + " "
                   + muscles["latest_mrc"].map(format_mrc) + " (before surgery "
                   + muscles["baseline_mrc"].map(lambda g: "not examined" if pd.isna(g) else format_mrc(g)) + "): "
                   + muscles["status"].map(status_words).str.lower())
    attention = _by_patient(muscles["patient_id"], muscle_text)
    prompts = assessment.prompts
    prompt_text = (prompts["urgency"].map(URGENCY_WORDS) + " · " + prompts["modality"].map(MODALITY_WORDS) + ": "
                   + prompts["summary"])
    asked = _by_patient(prompts["patient_id"], prompt_text)
    patients = assessment.patients
    with_prompts = int(patients["patient_id"].isin(list(asked)).sum())
    lines = [f"Assessment as of {assessment.as_of:%d %b %Y} · reference {assessment.reference.reference_id} · "
             f"{len(patients)} patients, {with_prompts} with prompts", ""]
    wrapped: dict[tuple[str, str], list[str]] = {}  # prompts repeat across patients: each text wrapped once

    def add(text: str, indent: str) -> None:
        if (text, indent) not in wrapped:
            wrapped[text, indent] = _wrapped(text, width, indent)
        lines.extend(wrapped[text, indent])

    columns = ("patient_id", "procedure", "levels", "surgery_date", "days_since_surgery")
    for patient_id, procedure, levels, surgery_date, day in zip(
            *(patients[name].astype(object).tolist() for name in columns), strict=True):
        if pd.isna(surgery_date):
            add(f"{patient_id} · not operated on by this day", "")
        else:
            add(f"{patient_id} · {procedure} {str(levels).replace(';', ', ')} on {surgery_date:%d %b %Y} · day {day}",
                "")
        if patient_id in attention:
            add("Muscles: " + "; ".join(attention[patient_id]), "  ")
        for text in asked.get(patient_id, []):
            add(text, "  ")
    return lines


def _by_patient(patient_ids: pd.Series, texts: pd.Series) -> dict[str, list[str]]:
    """Each patient's texts in frame order (a dict in one pass: pandas' groupby-join runs Python per group)."""
    grouped: dict[str, list[str]] = {}
    for patient_id, text in zip(patient_ids.to_numpy(), texts.to_numpy(), strict=True):
        grouped.setdefault(patient_id, []).append(text)
    return grouped


def _wrapped(text: str, width: int, indent: str) -> list[str]:
    if len(indent) + len(text) <= width and text and text.isprintable() and text.strip(" ") == text:
        return [indent + text]  # most lines: what textwrap would give, without its cost
    return textwrap.wrap(text, width=width, initial_indent=indent, subsequent_indent=indent + "    ",
                         break_on_hyphens=False)


def clinic_table(assessment: Assessment, prompts: pd.DataFrame) -> pd.DataFrame:
    """The clinic list: one row per patient in follow-up, most urgent open prompt first.

    `prompts` are the assessment's prompts with decision state (decisions.with_decisions).
    """
    open_ = prompts[~prompts["decision_current"] | (prompts["decision"] == "deferred")]
    rank = open_["urgency"].map(URGENCY_ORDER).groupby(open_["patient_id"]).min()
    summaries = open_["summary"].groupby(open_["patient_id"]).agg(lambda s: " · ".join(dict.fromkeys(s)))
    patients = assessment.patients[assessment.patients["surgery_date"].notna()]
    table = pd.DataFrame({
        "patient_id": patients["patient_id"].to_numpy(),
        "urgency_rank": patients["patient_id"].map(rank).fillna(len(URGENCY_ORDER)).astype(int).to_numpy(),
        "open_prompts": patients["patient_id"].map(open_.groupby("patient_id").size()).fillna(0).astype(int)
        .to_numpy(),
        "decided_prompts": patients["patient_id"].map(
            prompts[prompts["decision_current"]].groupby("patient_id").size()).fillna(0).astype(int).to_numpy(),
        "prompt_summary": patients["patient_id"].map(summaries).fillna("").to_numpy(),
        "worst_status": patients["patient_id"].map(_worst_status(assessment.muscles)).to_numpy(),
        "surgeon": patients["surgeon"].to_numpy(),
        "procedure": patients["procedure"].to_numpy(),
        "levels": patients["levels"].to_numpy(),
        "days_since_surgery": patients["days_since_surgery"].to_numpy(),
    })
    table["urgency"] = table["urgency_rank"].map({v: k for k, v in URGENCY_ORDER.items()})
    return table.sort_values(["urgency_rank", "patient_id"], kind="stable").reset_index(drop=True)
