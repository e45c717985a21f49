"""Which prompts a clinician has already decided on, and which are new.

A decision is matched to its prompt by patient and scan (checklist.decision_key), not by the prompt's most
urgent rule: a merged prompt keeps its decision when another of its rules becomes the most urgent. The
latest decision recorded under any rule of that scan is the one in force. A decision holds while the evidence
is no worse than the evidence it was made on (checklist.evidence_no_worse: an improving grade or the same
finding recorded again keeps it); a lower grade, a new finding or muscle, or a higher urgency brings the
prompt back as new, with the earlier decision shown. Decisions recorded against the hash of the evidence
lines (before decision bases) hold while the lines are unchanged.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dashboard.clinical.imaging.checklist import decision_key, evidence_hash, evidence_no_worse

DECISION_LABELS = {"ordered": "Imaging ordered", "already_done": "Already done",
                   "not_indicated": "Not indicated", "deferred": "Deferred"}
STATE_COLUMNS = ["decision", "decision_reason", "decided_by", "decided_at", "decision_current"]


def with_decisions(prompts: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """Prompts with the latest decision per patient and scan, and whether it was made on this evidence.

    `decisions` holds the decision in force per patient and rule (store.latest_decisions); of those recorded
    under rules asking for one scan, the latest counts (by decided_at, later rows on a tie).
    """
    latest = decisions.rename(columns={"reason": "decision_reason", "clinician": "decided_by",
                                       "evidence_hash": "decided_hash"})
    keys = {rule_id: decision_key(rule_id) for rule_id in {*latest["rule_id"], *prompts["rule_id"]}}
    latest = latest.assign(decision_key=latest["rule_id"].map(keys))
    if "decided_at" in latest and len(latest):
        latest = latest.sort_values("decided_at", kind="stable", na_position="first")
    latest = latest.drop_duplicates(["patient_id", "decision_key"], keep="last")
    merged = prompts.assign(decision_key=prompts["rule_id"].map(keys)).merge(
        latest[["patient_id", "decision_key", "decided_hash", "decision", "decision_reason", "decided_by",
                "decided_at"]],
        on=["patient_id", "decision_key"], how="left")
    decided = merged["decided_hash"].notna().to_numpy()  # fingerprints only where there is a decision
    current = np.zeros(len(merged), dtype=bool)
    basis = merged["decision_basis"].to_numpy()[decided] if "decision_basis" in merged else [None] * decided.sum()
    current[decided] = [
        evidence_hash(list(lines)) == made_on or (isinstance(now, str) and evidence_no_worse(now, made_on))
        for lines, made_on, now in zip(merged["evidence"].to_numpy()[decided],
                                       merged["decided_hash"].to_numpy()[decided], basis, strict=True)]
    merged["decision_current"] = current
    return merged.drop(columns=["decided_hash", "decision_key"])


def open_prompts(prompts_with_decisions: pd.DataFrame) -> pd.DataFrame:
    """Prompts with no decision on their current evidence (deferred ones stay open)."""
    frame = prompts_with_decisions
    return frame[~frame["decision_current"] | (frame["decision"] == "deferred")]
