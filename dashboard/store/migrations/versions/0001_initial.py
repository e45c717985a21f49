"""Initial schema: the four record tables, the import log and clinicians' decisions.

Decisions are append-only: besides the API offering no update, triggers refuse UPDATE and DELETE, so an
audit of who decided what on which evidence cannot be rewritten.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_MESSAGE = "decisions are append-only: record a new decision instead"


def upgrade() -> None:
    op.create_table(
        "imports",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_name", sa.String(), nullable=False),
        sa.Column("source_kind", sa.String(), nullable=False),
        sa.Column("user_name", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("patients_inserted", sa.Integer(), nullable=True),
        sa.Column("patients_unchanged", sa.Integer(), nullable=True),
        sa.Column("patients_updated", sa.Integer(), nullable=True),
        sa.Column("surgeries_inserted", sa.Integer(), nullable=True),
        sa.Column("surgeries_unchanged", sa.Integer(), nullable=True),
        sa.Column("surgeries_updated", sa.Integer(), nullable=True),
        sa.Column("strength_inserted", sa.Integer(), nullable=True),
        sa.Column("strength_unchanged", sa.Integer(), nullable=True),
        sa.Column("strength_updated", sa.Integer(), nullable=True),
        sa.Column("visits_inserted", sa.Integer(), nullable=True),
        sa.Column("visits_unchanged", sa.Integer(), nullable=True),
        sa.Column("visits_updated", sa.Integer(), nullable=True),
        sa.CheckConstraint("status IN ('running', 'succeeded', 'failed')", name=op.f("ck_imports_status")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_imports")),
    )
    op.create_table(
        "patients",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=True),
        sa.Column("mrn", sa.String(), nullable=True),
        sa.Column("birth_year", sa.Integer(), nullable=True),
        sa.Column("sex", sa.String(), nullable=True),
        sa.Column("diabetes", sa.Boolean(), nullable=True),
        sa.Column("smoker", sa.Boolean(), nullable=True),
        sa.Column("surgeon", sa.String(), nullable=True),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"], name=op.f("fk_patients_import_id_imports")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patients")),
        sa.UniqueConstraint("patient_id", name=op.f("uq_patients_patient_id")),
    )
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("evidence_hash", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("clinician", sa.String(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "decision <> 'not_indicated' OR (reason IS NOT NULL AND length(trim(reason)) > 0)",
            name=op.f("ck_decisions_reason_required"),
        ),
        sa.CheckConstraint(
            "decision IN ('ordered', 'already_done', 'not_indicated', 'deferred')", name=op.f("ck_decisions_decision")
        ),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.patient_id"], name=op.f("fk_decisions_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index("ix_decisions_patient_rule", "decisions", ["patient_id", "rule_id", "decided_at"])
    _create_append_only_triggers()

    op.create_table(
        "strength_exams",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("exam_date", sa.Date(), nullable=False),
        sa.Column("muscle", sa.String(), nullable=False),
        sa.Column("side", sa.String(), nullable=False),
        sa.Column("mrc", sa.Float(), nullable=False),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.CheckConstraint("side IN ('L', 'R')", name=op.f("ck_strength_exams_side")),
        sa.CheckConstraint("mrc >= 0 AND mrc <= 5", name=op.f("ck_strength_exams_mrc")),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"], name=op.f("fk_strength_exams_import_id_imports")),
        sa.ForeignKeyConstraint(
            ["patient_id"], ["patients.patient_id"], name=op.f("fk_strength_exams_patient_id_patients")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_strength_exams")),
        sa.UniqueConstraint(
            "patient_id", "exam_date", "muscle", "side", name=op.f("uq_strength_exams_patient_id_exam_date_muscle_side")
        ),
    )
    op.create_table(
        "surgeries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("surgery_date", sa.Date(), nullable=False),
        sa.Column("procedure", sa.String(), nullable=False),
        sa.Column("levels", sa.String(), nullable=False),
        sa.Column("instrumented", sa.Boolean(), nullable=False),
        sa.Column("revision", sa.Boolean(), nullable=True),
        sa.Column("deficit_onset_date", sa.Date(), nullable=True),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"], name=op.f("fk_surgeries_import_id_imports")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.patient_id"], name=op.f("fk_surgeries_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_surgeries")),
        sa.UniqueConstraint("patient_id", "surgery_date", name=op.f("uq_surgeries_patient_id_surgery_date")),
    )
    op.create_table(
        "visits",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("visit_date", sa.Date(), nullable=False),
        sa.Column("leg_pain_nrs", sa.Float(), nullable=True),
        sa.Column("back_pain_nrs", sa.Float(), nullable=True),
        sa.Column("odi", sa.Float(), nullable=True),
        sa.Column("radicular_pain", sa.Boolean(), nullable=True),
        sa.Column("numbness", sa.Boolean(), nullable=True),
        sa.Column("saddle_anesthesia", sa.Boolean(), nullable=True),
        sa.Column("urinary_retention", sa.Boolean(), nullable=True),
        sa.Column("fecal_incontinence", sa.Boolean(), nullable=True),
        sa.Column("fever", sa.Boolean(), nullable=True),
        sa.Column("wound_drainage", sa.Boolean(), nullable=True),
        sa.Column("calf_swelling", sa.Boolean(), nullable=True),
        sa.Column("screw_lucency", sa.Boolean(), nullable=True),
        sa.Column("implant_migration", sa.Boolean(), nullable=True),
        sa.Column("rod_fracture", sa.Boolean(), nullable=True),
        sa.Column("crp_mg_l", sa.Float(), nullable=True),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("extra", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("import_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["import_id"], ["imports.id"], name=op.f("fk_visits_import_id_imports")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.patient_id"], name=op.f("fk_visits_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_visits")),
        sa.UniqueConstraint("patient_id", "visit_date", name=op.f("uq_visits_patient_id_visit_date")),
    )


def downgrade() -> None:
    _drop_append_only_triggers()
    op.drop_table("visits")
    op.drop_table("surgeries")
    op.drop_table("strength_exams")
    op.drop_index("ix_decisions_patient_rule", table_name="decisions")

    op.drop_table("decisions")
    op.drop_table("patients")
    op.drop_table("imports")


def _create_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""
            CREATE FUNCTION decisions_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}'; END $$""")
        op.execute(
            "CREATE TRIGGER decisions_append_only BEFORE UPDATE OR DELETE ON decisions "
            "FOR EACH ROW EXECUTE FUNCTION decisions_append_only()"
        )
        op.execute(
            "CREATE TRIGGER decisions_no_truncate BEFORE TRUNCATE ON decisions "
            "FOR EACH STATEMENT EXECUTE FUNCTION decisions_append_only()"
        )
    elif op.get_bind().dialect.name == "sqlite":
        for event in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER decisions_no_{event.lower()} BEFORE {event} ON decisions "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )


def _drop_append_only_triggers() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS decisions_no_truncate ON decisions")
        op.execute("DROP TRIGGER IF EXISTS decisions_append_only ON decisions")
        op.execute("DROP FUNCTION IF EXISTS decisions_append_only()")
    elif op.get_bind().dialect.name == "sqlite":
        for event in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS decisions_no_{event}")
