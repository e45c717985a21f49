"""A `setting` audit action: a signed-in user changed a clinical setting (the expected-recovery reference in
force, `kind` reference, `file` its file name; issue 20: the choice was shown but not audited).

The CHECK on `audit_log.action` is widened as 0004 did: replaced in place on PostgreSQL; on SQLite the table is
rebuilt inside the migration's one transaction with its indexes and append-only triggers (0002's UPDATE/DELETE,
0003's no_replace) made again before the commit.

Renumbered 0006 at the merge with 0005_visit_signs (both branches made a 0005).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ACTIONS = ("login", "logout", "login_failed", "patient_view", "import", "decision", "export", "backup", "restore",
               "user_admin")
NEW_ACTIONS = (*OLD_ACTIONS, "setting")
APPEND_ONLY_MESSAGE = "the audit log is append-only: its entries cannot be changed or deleted"
INDEXES = {"ix_audit_log_at": ["at"], "ix_audit_log_user_at": ["user_name", "at"],
           "ix_audit_log_patient_at": ["patient_id", "at"]}


def upgrade() -> None:
    _audit_actions(NEW_ACTIONS)


def downgrade() -> None:
    _audit_actions(OLD_ACTIONS)  # fails while a setting entry exists: the log is never rewritten


def _check(actions: Sequence[str]) -> str:
    return "action IN (" + ", ".join(f"'{a}'" for a in actions) + ")"


def _audit_actions(actions: Sequence[str]) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE audit_log DROP CONSTRAINT ck_audit_log_action")
        op.execute(f"ALTER TABLE audit_log ADD CONSTRAINT ck_audit_log_action CHECK ({_check(actions)})")
        return
    if dialect != "sqlite":
        raise NotImplementedError(f"migration 0006 supports SQLite and PostgreSQL, not {dialect}")
    op.execute(f"""
        CREATE TABLE audit_log_rebuilt (
            id INTEGER NOT NULL,
            at DATETIME NOT NULL,
            user_name VARCHAR NOT NULL,
            role VARCHAR,
            action VARCHAR NOT NULL,
            patient_id VARCHAR,
            details JSON,
            CONSTRAINT pk_audit_log PRIMARY KEY (id),
            CONSTRAINT ck_audit_log_action CHECK ({_check(actions)})
        )""")
    op.execute("INSERT INTO audit_log_rebuilt (id, at, user_name, role, action, patient_id, details) "
               "SELECT id, at, user_name, role, action, patient_id, details FROM audit_log")
    op.execute("DROP TABLE audit_log")  # its triggers and indexes go with it; DROP fires no DELETE trigger
    op.execute("ALTER TABLE audit_log_rebuilt RENAME TO audit_log")
    for name, columns in INDEXES.items():
        op.create_index(name, "audit_log", columns)
    for event in ("UPDATE", "DELETE"):
        op.execute(f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                   f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END")
    op.execute("CREATE TRIGGER audit_log_no_replace BEFORE INSERT ON audit_log "
               "WHEN EXISTS (SELECT 1 FROM audit_log WHERE id = NEW.id) "
               f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END")
