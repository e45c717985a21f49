"""Clinicians' decisions on imaging prompts: an append-only audit trail.

A decision is never edited: changing one's mind is a new row, and the latest row per patient and rule is
the one in force. The evidence hash ties a decision to the evidence shown, so the app can bring a prompt
back when new evidence arrives. Triggers in the database refuse UPDATE and DELETE as well.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
from sqlalchemy import Connection, Engine, insert, select

from dashboard.store.models import DECISIONS, Decision, Patient

#: Decisions that set the prompt aside: they need a reason in words (the one place this rule lives; the form
#: labels its reason box from it).
REASON_REQUIRED: tuple[str, ...] = ("not_indicated", "deferred")

DECISION_COLUMNS = ["id", "patient_id", "rule_id", "evidence_hash", "decision", "reason", "clinician",
                    "decided_at"]


def record_decision(engine: Engine | Connection, *, patient_id: str, rule_id: str, evidence_hash: str, decision: str,
                    clinician: str, reason: str | None = None, decided_at: datetime | None = None) -> int:
    """Append one decision and return its id. `reason` is required for REASON_REQUIRED ('not_indicated', an
    override, and 'deferred').

    `decided_at` defaults to now; a naive datetime is taken as UTC. `engine` may be an open Connection, to
    write the decision in the caller's transaction (with its audit entry).
    """
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {', '.join(DECISIONS)}, not {decision!r}")
    reason = reason.strip() if reason and reason.strip() else None
    if decision in REASON_REQUIRED and reason is None:
        raise ValueError("a reason is required when imaging is not indicated" if decision == "not_indicated"
                         else "a reason is required when the decision is deferred")
    for label, value in (("patient_id", patient_id), ("rule_id", rule_id), ("evidence_hash", evidence_hash),
                         ("clinician", clinician)):
        if not value or not str(value).strip():
            raise ValueError(f"{label} is required")
    when = decided_at or datetime.now(UTC)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    table, patients = Decision.__table__, Patient.__table__

    def write(conn: Connection) -> int:
        if conn.execute(select(patients.c.id).where(patients.c.patient_id == patient_id)).first() is None:
            raise ValueError(f"patient {patient_id} is not in the store")
        return conn.execute(insert(table).values(
            patient_id=patient_id, rule_id=rule_id, evidence_hash=evidence_hash, decision=decision,
            reason=reason, clinician=clinician.strip(), decided_at=when)).inserted_primary_key[0]

    if isinstance(engine, Connection):
        return write(engine)
    with engine.begin() as conn:
        return write(conn)


def decision_history(engine: Engine, patient_id: str | None = None) -> pd.DataFrame:
    """All decisions (or one patient's), oldest first; decided_at in UTC."""
    table = Decision.__table__
    query = select(*(table.c[c] for c in DECISION_COLUMNS)).order_by(table.c.decided_at, table.c.id)
    if patient_id is not None:
        query = query.where(table.c.patient_id == patient_id)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    return _frame(rows)


def latest_decisions(engine: Engine, patient_id: str | None = None) -> pd.DataFrame:
    """The decision in force per patient and rule (or one patient's): the latest decided_at, the later
    entry on a tie."""
    history = decision_history(engine, patient_id)
    latest = history.groupby(["patient_id", "rule_id"], sort=True).tail(1)
    return latest.sort_values(["patient_id", "rule_id"], kind="stable").reset_index(drop=True)


def _frame(rows: list) -> pd.DataFrame:
    columns = list(zip(*rows, strict=True)) if rows else [()] * len(DECISION_COLUMNS)
    frame = pd.DataFrame({
        name: pd.Series(values, dtype=object) for name, values in zip(DECISION_COLUMNS, columns, strict=True)})
    frame["id"] = frame["id"].astype("int64")
    for name in DECISION_COLUMNS[1:-1]:
        frame[name] = frame[name].astype("string")
    frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True).astype("datetime64[us, UTC]")
    return frame
