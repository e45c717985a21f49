"""Visits: optional sepsis and cauda equina signs (records format extension, docs/format-extensions.md).

`anal_tone_reduced`, `perianal_sensation_reduced` (cauda equina), `altered_mentation`, `respiratory_rate`,
`systolic_bp` (the qSOFA criteria of Sepsis-3). Nullable: a blank is unknown, and stored rows stay unknown.

Another branch may add a revision 0005 too: whoever merges second renumbers (down_revision) and keeps both.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("anal_tone_reduced", sa.Boolean()), ("perianal_sensation_reduced", sa.Boolean()),
           ("altered_mentation", sa.Boolean()), ("respiratory_rate", sa.Float()), ("systolic_bp", sa.Float()))


def upgrade() -> None:
    for name, kind in COLUMNS:
        op.add_column("visits", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("visits") as batch:
        for name, _ in reversed(COLUMNS):
            batch.drop_column(name)
