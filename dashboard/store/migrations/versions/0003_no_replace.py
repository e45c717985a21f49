"""Append-only against REPLACE: an insert may not reuse the id of an audit entry or a decision.

SQLite's `INSERT OR REPLACE` (and `REPLACE INTO`) deletes the conflicting row without firing DELETE triggers
(recursive triggers are off), so the UPDATE/DELETE triggers of 0001 and 0002 let an existing audit entry or
decision be rewritten. A BEFORE INSERT trigger refuses any insert whose id is already there. PostgreSQL has
no REPLACE, and `INSERT … ON CONFLICT DO UPDATE` fires the row UPDATE trigger, which already refuses.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MESSAGES = {
    "audit_log": "the audit log is append-only: its entries cannot be changed or deleted",
    "decisions": "decisions are append-only: record a new decision instead",
}


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table, message in MESSAGES.items():
        op.execute(f"CREATE TRIGGER {table}_no_replace BEFORE INSERT ON {table} "
                   f"WHEN EXISTS (SELECT 1 FROM {table} WHERE id = NEW.id) "
                   f"BEGIN SELECT RAISE(ABORT, '{message}'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for table in MESSAGES:
        op.execute(f"DROP TRIGGER IF EXISTS {table}_no_replace")
