"""Plain-text summaries of an assessment, for the command line's table format."""

from __future__ import annotations

import pandas as pd

from dashboard.core.assessment import Assessment

ABNORMAL = ("new_deficit", "deteriorating", "behind", "no_baseline", "insufficient_data")


def assessment_table(assessment: Assessment) -> pd.DataFrame:
    """One line per patient: index operation, days since, worst muscles, prompts by urgency."""
    muscles = assessment.muscles
    flagged = muscles[muscles["status"].isin(ABNORMAL)]
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
