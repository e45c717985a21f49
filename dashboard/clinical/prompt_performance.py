"""How the imaging prompts perform (issue 21): clinical safety monitoring per rule.

Inputs: the prompts of the assessment day, the store's decision history (append-only), the prompt log (every
prompt computed from the store, kept from the first time: dashboard.store.prompt_log) and the visits.
Definitions (docs/outcomes.md):

* A prompt's **first-seen date** is the date of the evidence that fired it: the latest ISO date written in its
  evidence lines (every rule's evidence starts with the date of the exam or visit that fired it).
* A prompt is identified by patient, rule and **evidence hash** (checklist.evidence_hash of its evidence lines).
  A decision is recorded against a **fingerprint**: the prompt's decision basis, or its evidence hash when it has
  none (checklist.decision_fingerprint); it belongs to a prompt whose hash or basis it equals.
* The **decision on a prompt** is the first decision recorded on its current evidence (same fingerprint);
  **time to decision** = that decision's day (UTC) - first-seen date, in days (0: decided the day it fired).
* A prompt is **open** when no decision was recorded on its current evidence, or the one in force is
  'deferred' (as the clinic screen counts it). It is **overdue** when open longer than its urgency allows:
  emergency 1 day ("now: within hours"), urgent 7 days ("within days"), routine 42 days (the next planned
  review, 6 weeks). An open emergency prompt older than 1 day is an **alarm**.
* **Fired**: distinct prompts (patient, rule, evidence) ever logged, firing on the assessment day, or with a
  recorded decision (a decision proves the prompt was shown; one on a logged or current prompt is that prompt).
  Logged prompts first seen after the assessment day are left out (not yet known on that day).
* A logged prompt **went away undecided** when no prompt for the same patient and scan (checklist.decision_key)
  fires on the assessment day, and no decision for that patient and scan was ever recorded on it: with its
  fingerprint, or on evidence it is no worse than (checklist.evidence_no_worse: the decision the screens would
  have shown in force on it). A prompt still asking for the same scan on newer evidence has not gone away: it is
  counted open (or overdue) instead. This is the missed follow-through a clinic looks for: above all
  **emergencies that went away undecided**. Only prompts computed from the store are logged (the app's cohort,
  the command line's import and assess-store, the CDS service for a stored patient); a prompt that fired and went
  away between two computations is not seen.
* **Imaging yield**, where later visits record the result: visits may carry the extra columns
  `imaging_modality` (a checklist modality code) and `imaging_finding` (boolean: did the imaging find what
  was asked?), kept by the records format as extra columns (docs/format-extensions.md). A prompt's result is
  the first visit on or after its first-seen date with its modality and a recorded finding.
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd

from dashboard.clinical.decisions import with_decisions
from dashboard.clinical.imaging.checklist import decision_key, evidence_hash, evidence_no_worse

OVERDUE_DAYS = {"emergency": 1, "urgent": 7, "routine": 42}
DECISIONS = ("ordered", "already_done", "not_indicated", "deferred")
IMAGING_MODALITY, IMAGING_FINDING = "imaging_modality", "imaging_finding"
_TRUE = {"yes", "true", "y", "1"}
_FALSE = {"no", "false", "n", "0"}
RULE_COLUMNS = ["rule_id", "urgency", "modality", "fired", "prompts_now", "patients", "open", "overdue", "alarms",
                "went_away_undecided", "emergencies_went_away_undecided", *DECISIONS, "median_days_to_decision",
                "q1_days_to_decision", "q3_days_to_decision",
                "imaging_results", "imaging_found", "imaging_yield"]


#: The prompt log's columns (dashboard.store.prompt_log.prompt_log reads them from the store).
LOG_COLUMNS = ["patient_id", "rule_id", "decision_key", "evidence_hash", "decision_basis", "urgency", "modality",
               "first_seen", "first_shown_at", "as_of"]


def empty_log() -> pd.DataFrame:
    """A prompt log with no rows (where there is no store: a records folder)."""
    frame = pd.DataFrame({column: pd.Series(dtype="string") for column in LOG_COLUMNS})
    frame["first_seen"] = frame["as_of"] = pd.Series(dtype="datetime64[s]")
    frame["first_shown_at"] = pd.Series(dtype="datetime64[us, UTC]")
    return frame


def first_seen(prompts: pd.DataFrame) -> pd.Series:
    """The first-seen date of each prompt: the latest ISO date in its evidence lines (NaT without one)."""
    if prompts.empty:
        return pd.Series(pd.NaT, index=prompts.index, dtype="datetime64[s]")
    lines = prompts["evidence"].explode()
    dates = lines.astype("string").str.findall(r"\d{4}-\d{2}-\d{2}").explode().dropna()
    latest = pd.to_datetime(dates, errors="coerce").groupby(level=0).max()
    return latest.reindex(prompts.index).astype("datetime64[s]")


def prompt_states(prompts: pd.DataFrame, history: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Each prompt with its first-seen date, decision in force, first decision on its evidence, days to that
    decision, whether it is open, days open, overdue and alarm.

    The decision in force and whether it still holds come from `decisions.with_decisions`, the one definition
    the screens use (matched by patient and scan, held while the evidence is no worse): a prompt counted open
    here is the prompt the clinician sees open.
    """
    columns = ["patient_id", "rule_id", "urgency", "modality", "evidence"]
    frame = prompts[columns + (["decision_basis"] if "decision_basis" in prompts else [])].reset_index(drop=True)
    frame["first_seen"] = first_seen(frame)
    frame = frame.astype({"patient_id": "string", "rule_id": "string"})
    history = history.astype({"patient_id": "string", "rule_id": "string", "evidence_hash": "string"})
    history = history.sort_values(["decided_at", "id"], kind="stable")
    latest = history.drop_duplicates(["patient_id", "rule_id"], keep="last")
    decided = with_decisions(frame, latest)
    current = decided["decision_current"].to_numpy(dtype=bool)
    frame["decision"] = decided["decision"].to_numpy()
    # The first decision on the evidence the prompt shows now, under any rule asking for the same scan.
    frame["evidence_hash"] = pd.array([evidence_hash(list(lines)) for lines in frame["evidence"]], dtype="string")
    keys = {rule_id: decision_key(rule_id) for rule_id in {*history["rule_id"].dropna(), *frame["rule_id"]}}
    # A decision is recorded against the prompt's decision basis (the app) or its evidence hash (older decisions,
    # the CDS service): either fingerprint finds it.
    on_evidence = history.assign(decision_key=history["rule_id"].map(keys)).drop_duplicates(
        ["patient_id", "decision_key", "evidence_hash"], keep="first").rename(
        columns={"evidence_hash": "fingerprint", "decided_at": "first_decided_at"})[
        ["patient_id", "decision_key", "fingerprint", "first_decided_at"]]
    keyed = frame.assign(decision_key=frame["rule_id"].map(keys))
    if "decision_basis" not in keyed:
        keyed["decision_basis"] = pd.Series(pd.NA, index=keyed.index, dtype="string")
    found = [keyed[["patient_id", "decision_key", column]].astype({column: "string"}).merge(
        on_evidence, left_on=["patient_id", "decision_key", column],
        right_on=["patient_id", "decision_key", "fingerprint"], how="left")["first_decided_at"]
        for column in ("evidence_hash", "decision_basis")]
    frame = frame.drop(columns=["decision_basis"] if "decision_basis" in frame else [])
    frame["first_decided_at"] = found[0].where(found[0].notna() & ~(found[1] < found[0]), found[1])
    decided_day = frame["first_decided_at"].dt.tz_localize(None).dt.normalize()
    frame["days_to_decision"] = (decided_day - frame["first_seen"]).dt.days.astype("Float64")
    frame["decision_current"] = current
    frame["open"] = ~current | (frame["decision"] == "deferred").fillna(False).to_numpy(dtype=bool)
    frame["days_open"] = (pd.Timestamp(as_of) - frame["first_seen"]).dt.days.astype("Float64")
    limit = frame["urgency"].map(OVERDUE_DAYS).astype("Float64")
    frame["overdue"] = (frame["open"] & (frame["days_open"] > limit)).fillna(False).astype(bool)
    frame["alarm"] = frame["overdue"] & (frame["urgency"] == "emergency")
    return frame


def emergency_alarms(prompts_with_decisions: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """Open emergency prompts first seen more than a day before `as_of` (patient_id, rule_id, summary,
    first_seen, days_open). `prompts_with_decisions` is decisions.with_decisions(...): only its emergency prompts
    are read."""
    frame = prompts_with_decisions
    emergency = frame[(frame["urgency"] == "emergency").to_numpy(dtype=bool)]
    still_open = emergency[(~emergency["decision_current"] | (emergency["decision"] == "deferred")).fillna(
        True).to_numpy(dtype=bool)]
    seen = first_seen(still_open)
    days = (pd.Timestamp(as_of) - seen).dt.days
    late = (days > OVERDUE_DAYS["emergency"]).fillna(False).to_numpy(dtype=bool)
    return pd.DataFrame({"patient_id": still_open["patient_id"].to_numpy()[late],
                         "rule_id": still_open["rule_id"].to_numpy()[late],
                         "summary": still_open["summary"].to_numpy()[late],
                         "first_seen": seen.to_numpy()[late], "days_open": days.to_numpy()[late]})


def _flag(values: pd.Series) -> pd.Series:
    text = values.astype("string").str.strip().str.lower()
    return pd.Series(np.where(text.isin(_TRUE).fillna(False), 1.0, np.where(text.isin(_FALSE).fillna(False), 0.0,
                                                                            np.nan)), index=values.index)


def imaging_results(states: pd.DataFrame, visits: pd.DataFrame) -> pd.DataFrame:
    """Each prompt's imaging result where a visit on or after its first-seen date records one for its modality:
    columns `imaging_date` and `imaging_found` (1.0 found, 0.0 not found, NaN no result)."""
    out = states[["patient_id", "rule_id"]].copy()
    out["imaging_date"] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[s]")
    out["imaging_found"] = np.nan
    if IMAGING_MODALITY not in visits.columns or IMAGING_FINDING not in visits.columns or states.empty:
        return out
    results = pd.DataFrame({"patient_id": visits["patient_id"].astype("string"),
                            "visit_date": pd.to_datetime(visits["visit_date"]).astype("datetime64[s]"),
                            "modality": visits[IMAGING_MODALITY].astype("string").str.strip().str.lower(),
                            "found": _flag(visits[IMAGING_FINDING])})
    results = results[results["found"].notna() & results["visit_date"].notna()].sort_values("visit_date")
    asked = states[["patient_id", "modality", "first_seen"]].assign(_row=np.arange(len(states)))
    asked = asked[asked["first_seen"].notna()].astype({"patient_id": "string", "modality": "string"})
    asked = asked.sort_values("first_seen")
    if asked.empty or results.empty:
        return out
    matched = pd.merge_asof(asked, results.rename(columns={"visit_date": "imaging_date"}),
                            left_on="first_seen", right_on="imaging_date", by=["patient_id", "modality"],
                            direction="forward")
    rows = matched["_row"].to_numpy()
    out.loc[rows, "imaging_date"] = matched["imaging_date"].to_numpy()
    out.loc[rows, "imaging_found"] = matched["found"].to_numpy(dtype=float)
    return out


def logged_by(log: pd.DataFrame | None, as_of: date) -> pd.DataFrame:
    """The logged prompts known on `as_of`: first seen on or before it (and those without a date, logged for an
    assessment day on or before it)."""
    if log is None or log.empty:
        return empty_log()
    seen, logged_for = pd.to_datetime(log["first_seen"]), pd.to_datetime(log["as_of"])
    day = pd.Timestamp(as_of)
    known = (seen <= day) | (seen.isna() & (logged_for <= day))
    return log[known.to_numpy(dtype=bool)].reset_index(drop=True)


def went_away(log: pd.DataFrame | None, prompts: pd.DataFrame, history: pd.DataFrame, as_of: date) -> pd.DataFrame:
    """The logged prompts known on `as_of` with `fires_now` (a prompt for the same patient and scan fires on the
    assessment day), `decided` (a decision for that patient and scan on its fingerprint, or on evidence it is no
    worse than) and `went_away_undecided` (neither). Definitions in the module docstring."""
    logged = logged_by(log, as_of)
    keys = {rule_id: decision_key(rule_id) for rule_id in {*prompts["rule_id"], *history["rule_id"].dropna()}}
    firing = set(zip(prompts["patient_id"].astype(str), prompts["rule_id"].map(keys), strict=True))
    decided_on: dict[tuple[str, str], set[str]] = {}
    for patient_id, rule_id, fingerprint in history[["patient_id", "rule_id", "evidence_hash"]].itertuples(
            index=False):
        if isinstance(fingerprint, str):
            decided_on.setdefault((str(patient_id), keys[rule_id]), set()).add(fingerprint)
    fires_now, decided = [], []
    for patient_id, scan, hashed, basis in logged[["patient_id", "decision_key", "evidence_hash",
                                                   "decision_basis"]].itertuples(index=False):
        fires_now.append((str(patient_id), scan) in firing)
        made_on = decided_on.get((str(patient_id), scan), set())
        basis = basis if isinstance(basis, str) else ""
        decided.append(hashed in made_on or (bool(basis) and any(
            fingerprint == basis or evidence_no_worse(basis, fingerprint) for fingerprint in made_on)))
    logged["fires_now"] = np.array(fires_now, dtype=bool)
    logged["decided"] = np.array(decided, dtype=bool)
    logged["went_away_undecided"] = ~logged["fires_now"] & ~logged["decided"]
    return logged


def _fired(states: pd.DataFrame, logged: pd.DataFrame, history: pd.DataFrame) -> pd.Series:
    """Per rule: distinct prompts (patient, rule, evidence) logged, firing now, or decided on. A decision whose
    fingerprint is the hash or basis of a logged or current prompt of the same patient and scan is that prompt
    (a merged prompt's rule may change; its scan does not)."""
    columns = ["patient_id", "rule_id", "evidence_hash", "decision_basis"]
    now = states.assign(decision_basis=states.get("decision_basis", pd.Series(pd.NA, index=states.index)))
    known = pd.concat([logged[columns].astype("string"), now[columns].astype("string")]).drop_duplicates(
        ["patient_id", "rule_id", "evidence_hash"])
    decisions = history[["patient_id", "rule_id", "evidence_hash"]].astype("string").drop_duplicates()
    keys = {rule_id: decision_key(rule_id) for rule_id in {*known["rule_id"], *decisions["rule_id"].dropna()}}
    scans = known["rule_id"].map(keys)
    fingerprints = {*zip(known["patient_id"], scans, known["evidence_hash"], strict=True),
                    *zip(known["patient_id"], scans, known["decision_basis"].fillna(""), strict=True)}
    unseen = [(p, keys.get(r), f) not in fingerprints for p, r, f in decisions.itertuples(index=False)]
    fired = pd.concat([known["rule_id"], decisions["rule_id"][np.array(unseen, dtype=bool)]])
    return fired.value_counts().rename("fired")


def rule_performance(prompts: pd.DataFrame, history: pd.DataFrame, visits: pd.DataFrame, as_of: date,
                     rules=None, log: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Per rule: prompts fired (ever) and now, patients, open, overdue, alarms, logged prompts that went away
    undecided (and how many were emergencies), decisions in force by kind, time to decision (median and
    quartiles, days), imaging results and yield. Also returns the prompt states (one row per prompt now) and the
    reasons given for 'not indicated' (rule_id, reason, decisions). `log` is the prompt log (LOG_COLUMNS;
    default none: only what fires now and what was decided is known)."""
    states = prompt_states(prompts, history, as_of)
    away = went_away(log, prompts, history, as_of)
    basis = prompts["decision_basis"] if "decision_basis" in prompts else pd.Series(pd.NA, index=prompts.index)
    fired = _fired(states.assign(decision_basis=basis.to_numpy()), away, history)
    undecided = away[away["went_away_undecided"].to_numpy(dtype=bool)]
    found = imaging_results(states, visits)
    states["imaging_date"] = found["imaging_date"].to_numpy()
    states["imaging_found"] = found["imaging_found"].to_numpy()
    latest = history.sort_values(["decided_at", "id"], kind="stable").drop_duplicates(
        ["patient_id", "rule_id"], keep="last")
    pairs = pd.concat([states[["rule_id", "patient_id"]], latest[["rule_id", "patient_id"]],
                       away[["rule_id", "patient_id"]]]).astype("string").drop_duplicates()

    by_rule = states.groupby("rule_id", sort=True)
    table = pd.DataFrame({
        "prompts_now": by_rule.size(),
        "open": by_rule["open"].sum(),
        "overdue": by_rule["overdue"].sum(),
        "alarms": by_rule["alarm"].sum(),
        "median_days_to_decision": by_rule["days_to_decision"].median(),
        "q1_days_to_decision": by_rule["days_to_decision"].quantile(0.25),
        "q3_days_to_decision": by_rule["days_to_decision"].quantile(0.75),
        "imaging_results": by_rule["imaging_found"].count(),
        "imaging_found": by_rule["imaging_found"].sum(),
    })
    table = table.join(pairs.groupby("rule_id").size().rename("patients"), how="outer")
    table = table.join(fired, how="outer")
    table = table.join(undecided.groupby("rule_id").size().rename("went_away_undecided"), how="outer")
    emergencies = undecided[(undecided["urgency"] == "emergency").to_numpy(dtype=bool)]
    table = table.join(emergencies.groupby("rule_id").size().rename("emergencies_went_away_undecided"), how="outer")
    decided = pd.crosstab(latest["rule_id"], latest["decision"]).reindex(columns=list(DECISIONS), fill_value=0)
    table = table.join(decided, how="outer")
    attributes = _rule_attributes(pd.concat([states[["rule_id", "urgency", "modality"]],
                                             away[["rule_id", "urgency", "modality"]].astype(object)]), rules)
    if rules is not None:  # every rule of the file, also those that never fired (in file order)
        table = table.reindex(attributes.index.append(table.index.difference(attributes.index)))
    table = table.join(attributes, how="left")
    counts = ["fired", "prompts_now", "open", "overdue", "alarms", "went_away_undecided",
              "emergencies_went_away_undecided", "imaging_results", "imaging_found", "patients", *DECISIONS]
    table[counts] = table[counts].fillna(0).astype(int)
    table["imaging_yield"] = np.where(table["imaging_results"] > 0,
                                      table["imaging_found"] / table["imaging_results"].where(
                                          table["imaging_results"] > 0, 1), np.nan)
    table = table.rename_axis("rule_id").reset_index()
    reasons = latest[latest["decision"] == "not_indicated"].groupby(["rule_id", "reason"], sort=True).size()
    reasons = reasons.rename("decisions").reset_index().sort_values(["rule_id", "decisions"],
                                                                    ascending=[True, False], kind="stable")
    return table[RULE_COLUMNS], states, reasons.reset_index(drop=True)


def _rule_attributes(states: pd.DataFrame, rules) -> pd.DataFrame:
    """Urgency and modality per rule id: from the rules file when given, else from the prompts."""
    if rules is not None:
        return pd.DataFrame({"urgency": [r.urgency for r in rules.rules],
                             "modality": [r.modality for r in rules.rules]},
                            index=pd.Index([r.id for r in rules.rules], name="rule_id"))
    return states.drop_duplicates("rule_id").set_index("rule_id")[["urgency", "modality"]].astype(object)
