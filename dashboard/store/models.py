"""Tables of the store: the four record files, the import log, the clinicians' decisions and the prompt log.

Record rows keep the natural key of the records format (schema.FileSpec.key) as a unique constraint, so
re-importing a file can only add or change rows, never duplicate them. Columns mirror the format one to one
(see tests: the model and dashboard.clinical.records.format must not drift); columns a file has beyond the format are
kept per row in `extra` (JSON), because the format promises they are never dropped.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Deterministic constraint names, so later Alembic migrations can find and alter them.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: What a clinician may answer to an imaging prompt (CDS Hooks style feedback: accepted or overridden).
DECISIONS: tuple[str, ...] = ("ordered", "already_done", "not_indicated", "deferred")
IMPORT_STATUSES: tuple[str, ...] = ("running", "succeeded", "failed")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        str: String(),
        float: Float(),
        date: Date(),
        datetime: DateTime(timezone=True),
        dict[str, Any]: JSON(none_as_null=True),
    }


def _import_fk() -> Mapped[int | None]:
    """The import that last inserted or changed the row: provenance for every value shown."""
    return mapped_column(ForeignKey("imports.id"))


def _patient_fk() -> Mapped[str]:
    return mapped_column(ForeignKey("patients.patient_id"))


class Import(Base):
    """One attempt to import a records file; failed attempts are logged too (with no row content)."""

    __tablename__ = "imports"
    __table_args__ = (CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    source_name: Mapped[str]  # base name only: a full path can name a person or a private folder
    source_kind: Mapped[str]  # folder | workbook | form | …
    user_name: Mapped[str | None]
    status: Mapped[str]
    error: Mapped[str | None]  # exception type and constraint only, never values
    patients_inserted: Mapped[int | None]
    patients_unchanged: Mapped[int | None]
    patients_updated: Mapped[int | None]
    surgeries_inserted: Mapped[int | None]
    surgeries_unchanged: Mapped[int | None]
    surgeries_updated: Mapped[int | None]
    strength_inserted: Mapped[int | None]
    strength_unchanged: Mapped[int | None]
    strength_updated: Mapped[int | None]
    visits_inserted: Mapped[int | None]
    visits_unchanged: Mapped[int | None]
    visits_updated: Mapped[int | None]


class Patient(Base):
    __tablename__ = "patients"
    __table_args__ = (UniqueConstraint("patient_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str]
    name: Mapped[str | None]  # identifying
    mrn: Mapped[str | None]  # identifying
    birth_year: Mapped[int | None]
    sex: Mapped[str | None]
    diabetes: Mapped[bool | None]
    smoker: Mapped[bool | None]
    surgeon: Mapped[str | None]
    extra: Mapped[dict[str, Any] | None]
    import_id: Mapped[int | None] = _import_fk()


class Surgery(Base):
    __tablename__ = "surgeries"
    __table_args__ = (UniqueConstraint("patient_id", "surgery_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = _patient_fk()
    surgery_date: Mapped[date]
    procedure: Mapped[str]
    levels: Mapped[str]
    instrumented: Mapped[bool]
    revision: Mapped[bool | None]
    deficit_onset_date: Mapped[date | None]
    extra: Mapped[dict[str, Any] | None]
    import_id: Mapped[int | None] = _import_fk()


class StrengthExam(Base):
    __tablename__ = "strength_exams"
    __table_args__ = (
        UniqueConstraint("patient_id", "exam_date", "muscle", "side"),
        CheckConstraint("side IN ('L', 'R')", name="side"),
        CheckConstraint("mrc >= 0 AND mrc <= 5", name="mrc"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = _patient_fk()
    exam_date: Mapped[date]
    muscle: Mapped[str]
    side: Mapped[str]
    mrc: Mapped[float]  # 4- = 3.67 … as in dashboard.clinical.mrc
    extra: Mapped[dict[str, Any] | None]
    import_id: Mapped[int | None] = _import_fk()


class Visit(Base):
    __tablename__ = "visits"
    __table_args__ = (UniqueConstraint("patient_id", "visit_date"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = _patient_fk()
    visit_date: Mapped[date]
    leg_pain_nrs: Mapped[float | None]
    back_pain_nrs: Mapped[float | None]
    odi: Mapped[float | None]
    radicular_pain: Mapped[bool | None]
    numbness: Mapped[bool | None]
    saddle_anesthesia: Mapped[bool | None]
    urinary_retention: Mapped[bool | None]
    fecal_incontinence: Mapped[bool | None]
    fever: Mapped[bool | None]
    wound_drainage: Mapped[bool | None]
    calf_swelling: Mapped[bool | None]
    screw_lucency: Mapped[bool | None]
    implant_migration: Mapped[bool | None]
    rod_fracture: Mapped[bool | None]
    crp_mg_l: Mapped[float | None]
    anal_tone_reduced: Mapped[bool | None]  # 0005: sepsis and cauda equina signs
    perianal_sensation_reduced: Mapped[bool | None]
    altered_mentation: Mapped[bool | None]
    respiratory_rate: Mapped[float | None]
    systolic_bp: Mapped[float | None]
    notes: Mapped[str | None] = mapped_column(Text)  # identifying
    extra: Mapped[dict[str, Any] | None]
    import_id: Mapped[int | None] = _import_fk()


class Decision(Base):
    """A clinician's answer to one imaging prompt. Append-only: a new answer is a new row."""

    __tablename__ = "decisions"
    __table_args__ = (
        CheckConstraint("decision IN ('ordered', 'already_done', 'not_indicated', 'deferred')", name="decision"),
        CheckConstraint("decision <> 'not_indicated' OR (reason IS NOT NULL AND length(trim(reason)) > 0)",
                        name="reason_required"),
        Index("ix_decisions_patient_rule", "patient_id", "rule_id", "decided_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = _patient_fk()
    rule_id: Mapped[str]
    evidence_hash: Mapped[str] = mapped_column(Text)
    decision: Mapped[str]
    reason: Mapped[str | None] = mapped_column(Text)
    clinician: Mapped[str]
    decided_at: Mapped[datetime]


class PromptLogEntry(Base):
    """An imaging prompt the first time it was computed from the store (migration 0007). Append-only: a prompt is
    logged once per patient, rule and evidence (dashboard.store.prompt_log inserts only keys not yet there), so a
    prompt that fired and went away without a decision is still known to have fired (prompt performance, issue 21).

    Holds ids, rule ids, fingerprints and dates only: never the evidence lines, names or notes.
    """

    __tablename__ = "prompt_log"
    __table_args__ = (
        UniqueConstraint("patient_id", "rule_id", "evidence_hash"),
        CheckConstraint("urgency IN ('emergency', 'urgent', 'routine')", name="urgency"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[str] = _patient_fk()
    rule_id: Mapped[str]
    decision_key: Mapped[str]  # the scan asked for (checklist.decision_key): decisions are matched by it
    evidence_hash: Mapped[str]  # checklist.evidence_hash of the evidence lines
    decision_basis: Mapped[str | None] = mapped_column(Text)  # what a decision on it is recorded against
    urgency: Mapped[str]
    modality: Mapped[str]
    first_seen: Mapped[date | None]  # the date of the evidence that fired it (prompt_performance.first_seen)
    first_shown_at: Mapped[datetime]  # UTC, when it was first written
    as_of: Mapped[date]  # the assessment day it was computed for


#: Records frame name (Records.frames()) → table.
RECORD_TABLES = {
    "patients": Patient.__table__,
    "surgeries": Surgery.__table__,
    "strength": StrengthExam.__table__,
    "visits": Visit.__table__,
}


#: What the audit log records (issue 8). The database refuses any other action.
AUDIT_ACTIONS: tuple[str, ...] = ("login", "logout", "login_failed", "patient_view", "import", "decision", "export",
                                  "backup", "restore", "user_admin", "setting")
#: Roles a user account may have (dashboard.access.ROLES; repeated here so the store does not import the app).
USER_ROLES: tuple[str, ...] = ("surgeon", "conference", "admin")


class AuditEntry(Base):
    """Who did what, when. Append-only: triggers refuse UPDATE and DELETE (migration 0002).

    Holds user names, actions, patient ids, file names and counts, never names, MRNs, notes or other values
    (dashboard.store.audit enforces it). No foreign key to patients: an entry must outlive any change to the
    records, and a failed import may name a patient the store never had.
    """

    __tablename__ = "audit_log"
    __table_args__ = (
        CheckConstraint("action IN ('login', 'logout', 'login_failed', 'patient_view', 'import', 'decision', "
                        "'export', 'backup', 'restore', 'user_admin', 'setting')", name="action"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_user_at", "user_name", "at"),
        Index("ix_audit_log_patient_at", "patient_id", "at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime]
    user_name: Mapped[str]
    role: Mapped[str | None]
    action: Mapped[str]
    patient_id: Mapped[str | None]
    details: Mapped[dict[str, Any] | None]


class UserAccount(Base):
    """Who may sign in (migration 0004). Seeded from the login configuration file (its users are the bootstrap
    accounts, `file_entry` = "role|hash" as last read from the file); the Users screen adds and changes accounts.

    `version` grows with every change by an admin: an edit names the version it was made on and is refused when
    another admin changed the account in between (optimistic concurrency).
    """

    __tablename__ = "users"
    __table_args__ = (CheckConstraint("role IN ('surgeon', 'conference', 'admin')", name="role"),)

    username: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str]
    role: Mapped[str]
    password_hash: Mapped[str]
    active: Mapped[bool]
    version: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    last_sign_in: Mapped[datetime | None]
    file_entry: Mapped[str | None]


class SignInSession(Base):
    """A signed-in session (migration 0004): `id` is the HMAC of the random token the browser holds (if any).

    A session is live until it expires or is revoked; sign-out, a password reset, a role change and deactivation
    revoke every session of the user, so every tab and every re-login cookie of that user stops working.
    """

    __tablename__ = "sessions"
    __table_args__ = (Index("ix_sessions_username", "username"),)

    id: Mapped[str] = mapped_column(String, primary_key=True)
    username: Mapped[str] = mapped_column(ForeignKey("users.username"))
    method: Mapped[str]
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


class LoginThrottle(Base):
    """Failed sign-in counting per subject (migration 0004): `user:<hmac of the name>` or `client:<address>`."""

    __tablename__ = "login_throttle"

    subject: Mapped[str] = mapped_column(String, primary_key=True)
    failures: Mapped[int] = mapped_column(Integer)
    window_start: Mapped[datetime | None]
    locked_until: Mapped[datetime | None]
