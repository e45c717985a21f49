"""Cohort summaries for the command line's table and the clinic list."""

from __future__ import annotations

import pandas as pd

from dashboard.core.assessment import URGENCY_ORDER, Assessment

ATTENTION = ("new_deficit", "deteriorating", "behind", "no_baseline", "insufficient_data")
STATUS_SEVERITY = ("new_deficit", "deteriorating", "behind", "no_baseline", "insufficient_data", "on_track",
                   "recovered", "no_deficit")


def _worst_status(muscles: pd.DataFrame) -> pd.Series:
    rank = muscles["status"].map({s: i for i, s in enumerate(STATUS_SEVERITY)})
    worst = rank.groupby(muscles["patient_id"]).min()
    return worst.map(dict(enumerate(STATUS_SEVERITY)))


def assessment_table(assessment: Assessment) -> pd.DataFrame:
    """One line per patient: index operation, days since, muscles needing attention, prompts."""
    muscles = assessment.muscles
    flagged = muscles[muscles["status"].isin(ATTENTION)]
    worst = (flagged["muscle"] + " " + flagged["side"] + ": " + flagged["status"]).groupby(
        flagged["patient_id"]).agg("; ".join)
    prompts = assessment.prompts
    listed = (prompts["urgency"] + " " + prompts["modality"] + " (" + prompts["rule_id"] + ")").groupby(
        prompts["patient_id"]).agg("; ".join)
    patients = assessment.patients
    return pd.DataFrame({
        "patient": patients["patient_id"],
        "operation": patients["surgery_date"].dt.strftime("%Y-%m-%d").fillna("—") + " "
        + patients["procedure"].fillna(""),
        "day": patients["days_since_surgery"].astype("string").fillna("—"),
        "muscles needing attention": patients["patient_id"].map(worst).fillna(""),
        "imaging prompts": patients["patient_id"].map(listed).fillna(""),
    })


def clinic_table(assessment: Assessment, prompts: pd.DataFrame) -> pd.DataFrame:
    """The clinic list: one row per patient in follow-up, most urgent open prompt first.

    `prompts` are the assessment's prompts with decision state (decision_state.with_decisions).
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
