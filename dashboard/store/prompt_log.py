"""The prompt log: every imaging prompt computed from the store, kept from the first time it was computed.

The checklist is recomputed from the records and keeps no history, so a prompt that fired and went away before
anyone decided on it would leave no trace. Logging each prompt once per patient, rule and evidence hash (the
table's unique key) lets prompt performance count it as fired and as "went away undecided" (issue 21).

Writing is insert-if-absent and safe when several processes write at once (two app servers, the command line):
the keys already logged are read first so only new prompts are sent, and the INSERT carries the dialect's
`ON CONFLICT DO NOTHING` (SQLite and PostgreSQL), so a row another writer inserted in between is skipped, not an
error. Rows are never updated or deleted.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.dialects import postgresql, sqlite

from dashboard.clinical.imaging.checklist import decision_key, evidence_hash, load_rules
from dashboard.clinical.prompt_performance import LOG_COLUMNS, first_seen
from dashboard.store.models import PromptLogEntry

TABLE = PromptLogEntry.__table__
KEY = ["patient_id", "rule_id", "evidence_hash"]
#: Rows per INSERT statement: a few thousand prompts go in a handful of round trips.
BATCH_ROWS = 1_000
#: Up to this many patients, only their keys are read back (a query by patient); above it the whole key list.
FEW_PATIENTS = 100


def log_rows(prompts: pd.DataFrame, as_of: date, shown_at: datetime) -> pd.DataFrame:
    """The prompts as prompt-log rows (LOG_COLUMNS), one per patient, rule and evidence hash."""
    if prompts.empty:
        return pd.DataFrame({column: pd.Series(dtype=object) for column in LOG_COLUMNS})
    rules = load_rules()
    keys = {rule_id: decision_key(rule_id, rules) for rule_id in prompts["rule_id"].unique()}
    basis = prompts["decision_basis"] if "decision_basis" in prompts else pd.Series(None, index=prompts.index)
    seen = first_seen(prompts)
    rows = pd.DataFrame({
        "patient_id": prompts["patient_id"].astype(str).to_numpy(),
        "rule_id": prompts["rule_id"].astype(str).to_numpy(),
        "decision_key": prompts["rule_id"].map(keys).to_numpy(),
        "evidence_hash": [evidence_hash(list(lines)) for lines in prompts["evidence"]],
        "decision_basis": [value if isinstance(value, str) and value else None for value in basis],
        "urgency": prompts["urgency"].astype(str).to_numpy(),
        "modality": prompts["modality"].astype(str).to_numpy(),
        "first_seen": [None if pd.isna(value) else value.date() for value in seen],
        "first_shown_at": shown_at,
        "as_of": as_of,
    })
    return rows.drop_duplicates(KEY, keep="first").reset_index(drop=True)


def record_prompts(engine: Engine, prompts: pd.DataFrame, as_of: date, shown_at: datetime | None = None) -> int:
    """Log the prompts not logged yet (by patient, rule and evidence hash); returns how many rows were added.

    `prompts` is an assessment's prompt frame (patient_id, rule_id, urgency, modality, evidence and, when there,
    decision_basis). `shown_at` defaults to now (UTC). Safe to call from several processes at once: a prompt is
    logged once whoever writes it first.
    """
    when = shown_at or datetime.now(UTC)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    rows = log_rows(prompts, as_of, when)
    if rows.empty:
        return 0
    query = select(*(TABLE.c[k] for k in KEY))
    patients = rows["patient_id"].unique()
    if len(patients) <= FEW_PATIENTS:  # one patient's prompts (the CDS service): its keys only, by the unique index
        query = query.where(TABLE.c.patient_id.in_(patients.tolist()))
    with engine.connect() as conn:
        logged = pd.DataFrame(conn.execute(query).all(), columns=KEY)
    if len(logged):
        rows = rows.merge(logged.assign(_logged=True), on=KEY, how="left")
        rows = rows[rows["_logged"].isna()].drop(columns="_logged")
    return insert_rows(engine, rows)


def insert_rows(engine: Engine, rows: pd.DataFrame) -> int:
    """Insert prompt-log rows (log_rows) in batches, skipping any key already there (ON CONFLICT DO NOTHING: a
    row another process inserted since the keys were read is not an error); returns how many were added."""
    if rows.empty:
        return 0
    insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert
    statement = insert(TABLE).on_conflict_do_nothing(index_elements=KEY).returning(TABLE.c.id)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    added = 0
    with engine.begin() as conn:
        for start in range(0, len(records), BATCH_ROWS):
            added += len(conn.execute(statement, records[start:start + BATCH_ROWS]).all())
    return added


def prompt_log(engine: Engine) -> pd.DataFrame:
    """Every logged prompt (LOG_COLUMNS), oldest first: dates as datetime64 (first_seen may be NaT),
    first_shown_at in UTC."""
    query = select(*(TABLE.c[c] for c in LOG_COLUMNS)).order_by(TABLE.c.id)
    with engine.connect() as conn:
        frame = pd.DataFrame(conn.execute(query).all(), columns=LOG_COLUMNS)
    for column in ("patient_id", "rule_id", "decision_key", "evidence_hash", "decision_basis", "urgency", "modality"):
        frame[column] = frame[column].astype("string")
    for column in ("first_seen", "as_of"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[s]")
    frame["first_shown_at"] = pd.to_datetime(frame["first_shown_at"], utc=True).astype("datetime64[us, UTC]")
    return frame


def prompt_log_size(engine: Engine) -> int:
    """The highest row id: grows with every prompt logged (a cache key for what is computed from the log)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(TABLE.c.id), 0))).scalar_one())
