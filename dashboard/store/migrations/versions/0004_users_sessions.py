"""Users, sign-in sessions and failed-sign-in counting in the store; a `user_admin` audit action.

- `users`: the accounts (seeded from the login configuration file, changed on the Users screen), with a
  `version` for optimistic concurrency between two admins and each user's last sign-in.
- `sessions`: every signed-in session, so that sign-out, a password reset, a role change and deactivation end
  every session and re-login cookie of that user (server-side revocation, issue 22.4).
- `login_throttle`: failed sign-ins per user-name hash and per client, counted in the same transaction as the
  check (issue 22.5).
- `audit_log.action` may be `user_admin` (changes to accounts, unlocks). On PostgreSQL the CHECK is replaced in
  place. SQLite cannot alter a CHECK: the table is rebuilt (new table, rows copied, old table dropped, renamed)
  inside the migration's one transaction, and its indexes and append-only triggers (0002's UPDATE/DELETE,
  0003's no_replace) are created again before the commit — no other connection ever sees the table without
  them. Dropping a table fires no DELETE trigger.

Another branch may add a revision 0004 too: whoever merges second renumbers (down_revision) and keeps both.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ACTIONS = ("login", "logout", "login_failed", "patient_view", "import", "decision", "export", "backup", "restore")
NEW_ACTIONS = (*OLD_ACTIONS, "user_admin")
APPEND_ONLY_MESSAGE = "the audit log is append-only: its entries cannot be changed or deleted"
INDEXES = {"ix_audit_log_at": ["at"], "ix_audit_log_user_at": ["user_name", "at"],
           "ix_audit_log_patient_at": ["patient_id", "at"]}


def _check(actions: Sequence[str]) -> str:
    return "action IN (" + ", ".join(f"'{a}'" for a in actions) + ")"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_sign_in", sa.DateTime(timezone=True), nullable=True),
        sa.Column("file_entry", sa.String(), nullable=True),
        sa.CheckConstraint("role IN ('surgeon', 'conference', 'admin')", name=op.f("ck_users_role")),
        sa.PrimaryKeyConstraint("username", name=op.f("pk_users")),
    )
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("username", sa.String(), nullable=False),
        sa.Column("method", sa.String(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["username"], ["users.username"], name=op.f("fk_sessions_username_users")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_sessions")),
    )
    op.create_index("ix_sessions_username", "sessions", ["username"])
    op.create_table(
        "login_throttle",
        sa.Column("subject", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("window_start", sa.DateTime(timezone=True), nullable=True),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("subject", name=op.f("pk_login_throttle")),
    )
    _audit_actions(NEW_ACTIONS)


def downgrade() -> None:
    _audit_actions(OLD_ACTIONS)  # fails while a user_admin entry exists: the log is never rewritten
    op.drop_table("login_throttle")
    op.drop_index("ix_sessions_username", table_name="sessions")
    op.drop_table("sessions")
    op.drop_table("users")


def _audit_actions(actions: Sequence[str]) -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("ALTER TABLE audit_log DROP CONSTRAINT ck_audit_log_action")
        op.execute(f"ALTER TABLE audit_log ADD CONSTRAINT ck_audit_log_action CHECK ({_check(actions)})")
        return
    if dialect != "sqlite":
        raise NotImplementedError(f"migration 0004 supports SQLite and PostgreSQL, not {dialect}")
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
