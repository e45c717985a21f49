"""User accounts, signed-in sessions and failed sign-in counting, in the store (migration 0004).

No Streamlit here: dashboard.app.auth (sign-in), the Users screen and the tests use these functions.

- Accounts: the login configuration file's users are the bootstrap accounts (`sync_file_users`); the Users
  screen adds accounts and changes role, password and active state (`add_user`, `change_user`). Every change
  names the `version` it was made on: an edit over a newer version raises StaleEdit (two admins at once: one
  wins, the other reloads). Each change and its audit entry (`user_admin`) are one transaction.
- Sessions: `start_session` records a session under the HMAC of a random token; `live_session` answers the
  account of a session that is neither expired nor revoked, of an active user; `revoke_sessions` ends every
  session of a user (sign-out, password reset, role change, deactivation).
- Lock-out: `reserve_attempt` counts an attempt *before* the password is checked, in one transaction that
  holds the subject's row (SQLite: the write lock of the INSERT; PostgreSQL: `SELECT … FOR UPDATE`), so parallel
  attempts cannot get more than `limit` password checks. A lock lasts `window` from the attempt that set it;
  attempts while locked do not extend it; a success clears the user's count; an admin can unlock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import Connection, Engine, delete, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from dashboard.store import audit
from dashboard.store.db import get_engine
from dashboard.store.models import USER_ROLES, LoginThrottle, SignInSession, UserAccount

USERS = UserAccount.__table__
SESSIONS = SignInSession.__table__
THROTTLE = LoginThrottle.__table__
#: Ended sessions are deleted this long after they ended (the audit log keeps every sign-in and sign-out).
SESSION_RETENTION = timedelta(days=30)


def _writing(engine: Engine) -> Engine:
    """The engine for a transaction that reads, then writes: SQLite takes its write lock at BEGIN."""
    return engine.execution_options(immediate=True)


def now() -> datetime:
    """The clock of this module (tests move it forward)."""
    return datetime.now(UTC)


class StaleEdit(RuntimeError):
    """The account changed since the admin's screen read it: reload and edit again."""


class AccountError(ValueError):
    """An account change that is not allowed (unknown user, user exists, bad role); the message says why."""


@dataclass(frozen=True)
class Account:
    username: str
    name: str
    role: str
    password_hash: str
    active: bool
    version: int
    last_sign_in: datetime | None
    from_file: bool


def _account(row: Mapping) -> Account:
    return Account(username=row["username"], name=row["name"], role=row["role"], password_hash=row["password_hash"],
                   active=bool(row["active"]), version=int(row["version"]), last_sign_in=_utc(row["last_sign_in"]),
                   from_file=row["file_entry"] is not None)


def _utc(when: datetime | None) -> datetime | None:
    if when is None:
        return None
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# ------------------------------------------------------------------------------------------------ accounts
def accounts(engine: Engine) -> list[Account]:
    with engine.connect() as conn:
        return [_account(r) for r in conn.execute(select(USERS).order_by(USERS.c.username)).mappings()]


def account(engine: Engine | Connection, username: str) -> Account | None:
    query = select(USERS).where(USERS.c.username == username)
    if isinstance(engine, Connection):
        row = engine.execute(query).mappings().first()
    else:
        with engine.connect() as conn:
            row = conn.execute(query).mappings().first()
    return None if row is None else _account(row)


def store_account(url: str, username: str) -> Account | None:
    """The account `username` (as written, else in lower case as the Users screen stores it) of the store at
    `url`, active or not; None when there is none, or no store there yet (nothing is created or migrated).

    For the command line's --user, which names who the audit log says acted.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and not (parsed.database and parsed.database != ":memory:"
                                                      and Path(parsed.database).expanduser().is_file()):
        return None
    engine = get_engine(url, migrate=False)
    try:
        return account(engine, username) or account(engine, username.lower())
    except DBAPIError:  # no users table: a store older than accounts
        return None
    finally:
        engine.dispose()


def sync_file_users(engine: Engine, file_users: Mapping[str, tuple[str, str, str]]) -> None:
    """Bring the file's users ({login: (name, role, bcrypt hash)}) into the store.

    A file user not yet stored is added. A stored file user whose entry in the file changed since it was last
    read (role or hash: an operator edited the file) takes the file's role and hash, is active again, and loses
    its sessions. A file user no longer in the file is deactivated and loses its sessions. Changes made on the
    Users screen to a file user whose file entry did not change are kept. Each change is audited (`user_admin`,
    by `config-file`).
    """
    at = now()
    with _writing(engine).begin() as conn:
        stored = {r["username"]: r for r in conn.execute(select(USERS)).mappings()}
        for login, (name, role, password_hash) in file_users.items():
            entry = f"{role}|{password_hash}"
            row = stored.get(login)
            if row is None:
                conn.execute(insert(USERS).values(username=login, name=name, role=role, password_hash=password_hash,
                                                  active=True, version=1, created_at=at, updated_at=at,
                                                  file_entry=entry))
                audit.record(conn, "config-file", "user_admin", kind="add", target=login, new_role=role)
            elif row["file_entry"] != entry:
                conn.execute(update(USERS).where(USERS.c.username == login).values(
                    name=name, role=role, password_hash=password_hash, active=True, version=row["version"] + 1,
                    updated_at=at, file_entry=entry))
                revoke_sessions(conn, login)
                audit.record(conn, "config-file", "user_admin", kind="file_change", target=login, new_role=role)
        for login, row in stored.items():
            if row["file_entry"] is not None and login not in file_users:
                conn.execute(update(USERS).where(USERS.c.username == login).values(
                    active=False, file_entry=None, version=row["version"] + 1, updated_at=at))
                revoke_sessions(conn, login)
                audit.record(conn, "config-file", "user_admin", kind="deactivate", target=login)


def add_user(engine: Engine, actor: str, actor_role: str | None, username: str, name: str, role: str,
             password_hash: str) -> Account:
    """A new account (audited as `user_admin`/`add`); AccountError if the name is taken or the role unknown."""
    login = username.strip().lower()
    if not login or any(c.isspace() for c in login) or len(login) > 64:
        raise AccountError("a user name must be 1–64 characters without spaces")
    if role not in USER_ROLES:
        raise AccountError(f"the role must be one of {', '.join(USER_ROLES)}")
    at = now()
    exists = AccountError(f"a user {login!r} exists already")
    try:
        with _writing(engine).begin() as conn:
            if account(conn, login) is not None:
                raise exists
            conn.execute(insert(USERS).values(username=login, name=name.strip() or login, role=role,
                                              password_hash=password_hash, active=True, version=1, created_at=at,
                                              updated_at=at, file_entry=None))
            audit.record(conn, actor, "user_admin", role=actor_role, kind="add", target=login, new_role=role)
            return account(conn, login)
    except IntegrityError:  # another admin added the same name at the same moment
        raise exists from None


def change_user(engine: Engine, actor: str, actor_role: str | None, username: str, version: int, *,
                role: str | None = None, password_hash: str | None = None, active: bool | None = None) -> Account:
    """Change one account, only if it is still at `version` (else StaleEdit); audited in the same transaction.

    A new role, a new password and deactivation each end every session of the user.
    """
    if role is not None and role not in USER_ROLES:
        raise AccountError(f"the role must be one of {', '.join(USER_ROLES)}")
    values: dict = {}
    kinds: list[str] = []
    if role is not None:
        values["role"], kinds = role, [*kinds, "role"]
    if password_hash is not None:
        values["password_hash"], kinds = password_hash, [*kinds, "reset_password"]
    if active is not None:
        values["active"], kinds = active, [*kinds, "activate" if active else "deactivate"]
    if not values:
        raise AccountError("nothing to change")
    with _writing(engine).begin() as conn:
        changed = conn.execute(update(USERS).where(USERS.c.username == username, USERS.c.version == version)
                               .values(**values, version=version + 1, updated_at=now())).rowcount
        if changed != 1:
            if account(conn, username) is None:
                raise AccountError(f"there is no user {username!r}")
            raise StaleEdit(f"the user {username!r} was changed by someone else meanwhile: reload and try again")
        revoke_sessions(conn, username)
        for kind in kinds:
            audit.record(conn, actor, "user_admin", role=actor_role, kind=kind, target=username,
                         new_role=role if kind == "role" else None)
        return account(conn, username)


# ------------------------------------------------------------------------------------------------ sessions
def session_id(token: str, key: str) -> str:
    """What the store keeps of a session token: its HMAC under the cookie key (a stolen table signs nobody in)."""
    return hmac.new(key.encode(), token.encode(), hashlib.sha256).hexdigest()


def start_session(engine: Engine, username: str, method: str, key: str, lifetime: timedelta,
                  *, sign_in: bool = True) -> tuple[str, str]:
    """Record a new session; (token for the browser, session id for the server). Sets the last sign-in."""
    token = secrets.token_urlsafe(32)
    sid = session_id(token, key)
    at = now()
    with engine.begin() as conn:
        stale = at - SESSION_RETENTION  # ended sessions are kept a while (who was signed in when), then dropped
        conn.execute(delete(SESSIONS).where(or_(SESSIONS.c.expires_at < stale, SESSIONS.c.revoked_at < stale)))
        conn.execute(insert(SESSIONS).values(id=sid, username=username, method=method, created_at=at,
                                             expires_at=at + lifetime, revoked_at=None))
        if sign_in:
            conn.execute(update(USERS).where(USERS.c.username == username).values(last_sign_in=at))
    return token, sid


def live_session(engine: Engine, sid: str | None) -> Account | None:
    """The active account of a session that is neither revoked nor expired; otherwise None."""
    if not sid:
        return None
    query = (select(USERS, SESSIONS.c.expires_at, SESSIONS.c.revoked_at)
             .join(SESSIONS, SESSIONS.c.username == USERS.c.username).where(SESSIONS.c.id == sid))
    with engine.connect() as conn:
        row = conn.execute(query).mappings().first()
    if row is None or row["revoked_at"] is not None or _utc(row["expires_at"]) <= now() or not row["active"]:
        return None
    return _account(row)


def touch_sign_in(engine: Engine, username: str) -> None:
    with engine.begin() as conn:
        conn.execute(update(USERS).where(USERS.c.username == username).values(last_sign_in=now()))


def revoke_sessions(engine: Engine | Connection, username: str) -> int:
    """End every live session of the user; the number ended."""
    statement = (update(SESSIONS).where(SESSIONS.c.username == username, SESSIONS.c.revoked_at.is_(None))
                 .values(revoked_at=now()))
    if isinstance(engine, Connection):
        return engine.execute(statement).rowcount
    with engine.begin() as conn:
        return conn.execute(statement).rowcount


def revoke_all_sessions(engine: Engine) -> int:
    """End every live session of every user (after a restore: sessions revoked since the backup came back)."""
    with engine.begin() as conn:
        return conn.execute(update(SESSIONS).where(SESSIONS.c.revoked_at.is_(None)).values(revoked_at=now())).rowcount


# ---------------------------------------------------------------------------------------------- lock-out
def user_subject(login: str, key: str) -> str:
    """The lock-out subject of a user name, known or not: its HMAC (an unknown name may be a mistyped password)."""
    return "user:" + hmac.new(key.encode(), login.strip().lower().encode(), hashlib.sha256).hexdigest()


def client_subject(address: str) -> str:
    return "client:" + address


def _insert_missing(conn: Connection, subject: str) -> None:
    dialect = conn.dialect.name
    if dialect == "postgresql":
        statement = postgresql.insert(THROTTLE).values(subject=subject, failures=0).on_conflict_do_nothing()
    elif dialect == "sqlite":
        statement = sqlite.insert(THROTTLE).values(subject=subject, failures=0).on_conflict_do_nothing()
    else:
        raise NotImplementedError(dialect)
    conn.execute(statement)


def reserve_attempt(engine: Engine, limits: Mapping[str, int], window: timedelta) -> bool:
    """Count one sign-in attempt against each subject ({subject: allowed attempts per window}); False if locked.

    One transaction, rows taken in a fixed order: the INSERT takes SQLite's write lock (other attempts wait for
    the commit), `FOR UPDATE` takes PostgreSQL's row lock. The attempt is counted before the password is
    checked, so `limit` parallel attempts use up the allowance and any more are refused.
    """
    at = now()
    with _writing(engine).begin() as conn:
        rows = {}
        for subject in sorted(limits):
            _insert_missing(conn, subject)
            rows[subject] = dict(conn.execute(select(THROTTLE).where(THROTTLE.c.subject == subject)
                                              .with_for_update()).mappings().one())
        states = {}
        locked = False
        for subject, row in rows.items():
            failures, start, until = row["failures"], _utc(row["window_start"]), _utc(row["locked_until"])
            if until is not None and at < until:
                locked = True
            elif until is not None or start is None or at - start >= window:
                failures, start, until = 0, at, None  # the lock or the window is over: start afresh
            states[subject] = (failures, start, until)
        for subject, (failures, start, until) in states.items():
            if not locked:
                failures += 1
                if failures >= limits[subject]:
                    until = at + window  # this attempt is still checked; the next ones wait
            conn.execute(update(THROTTLE).where(THROTTLE.c.subject == subject).values(
                failures=failures, window_start=start, locked_until=until))
    return not locked


def clear_failures(engine: Engine | Connection, subject: str) -> None:
    statement = delete(THROTTLE).where(THROTTLE.c.subject == subject)
    if isinstance(engine, Connection):
        engine.execute(statement)
        return
    with engine.begin() as conn:
        conn.execute(statement)


def refund_attempt(engine: Engine, subject: str, limit: int) -> None:
    """A successful sign-in gives its counted attempt back (per client: only failures should add up)."""
    with _writing(engine).begin() as conn:
        row = conn.execute(select(THROTTLE).where(THROTTLE.c.subject == subject).with_for_update()).mappings().first()
        if row is None:
            return
        failures = max(int(row["failures"]) - 1, 0)
        conn.execute(update(THROTTLE).where(THROTTLE.c.subject == subject).values(
            failures=failures, locked_until=row["locked_until"] if failures >= limit else None))


def is_locked(engine: Engine, subject: str) -> bool:
    with engine.connect() as conn:
        until = conn.execute(select(THROTTLE.c.locked_until).where(THROTTLE.c.subject == subject)).scalar()
    return until is not None and now() < _utc(until)


def unlock(engine: Engine, actor: str, actor_role: str | None, username: str, key: str) -> None:
    """An admin ends a user's lock-out and failure count (audited as `user_admin`/`unlock`)."""
    with engine.begin() as conn:
        clear_failures(conn, user_subject(username, key))
        audit.record(conn, actor, "user_admin", role=actor_role, kind="unlock", target=username)
