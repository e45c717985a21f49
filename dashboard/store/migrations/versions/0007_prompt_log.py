"""The prompt log: each imaging prompt the first time it was computed from the store (issue 21).

Prompt performance counted as "fired" only the prompts of the assessment day and those with a decision, so an
emergency prompt that came and went with nobody deciding was never seen. `prompt_log` keeps one row per
patient, rule and evidence hash (unique), written insert-if-absent by dashboard.store.prompt_log; rows are
appended, never updated. No triggers: the table is a monitoring record, written only through that module.

Another branch may add a revision 0007 too: whoever merges second renumbers (down_revision) and keeps both.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "prompt_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("patient_id", sa.String(), nullable=False),
        sa.Column("rule_id", sa.String(), nullable=False),
        sa.Column("decision_key", sa.String(), nullable=False),
        sa.Column("evidence_hash", sa.String(), nullable=False),
        sa.Column("decision_basis", sa.Text(), nullable=True),
        sa.Column("urgency", sa.String(), nullable=False),
        sa.Column("modality", sa.String(), nullable=False),
        sa.Column("first_seen", sa.Date(), nullable=True),
        sa.Column("first_shown_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.Date(), nullable=False),
        sa.CheckConstraint("urgency IN ('emergency', 'urgent', 'routine')", name=op.f("ck_prompt_log_urgency")),
        sa.ForeignKeyConstraint(["patient_id"], ["patients.patient_id"],
                                name=op.f("fk_prompt_log_patient_id_patients")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prompt_log")),
        sa.UniqueConstraint("patient_id", "rule_id", "evidence_hash",
                            name=op.f("uq_prompt_log_patient_id_rule_id_evidence_hash")),
    )


def downgrade() -> None:
    op.drop_table("prompt_log")
