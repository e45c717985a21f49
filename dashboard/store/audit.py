"""The audit log: who did what and when — logins, patient views, imports, decisions, exports, backups, and
changes to user accounts (`user_admin`, with `kind` and `target`).

`record` is the one way in, for the app, the command line and colleagues' pages (exports):

    from dashboard.store.audit import record
    record(engine, "dr.a", "export", role="conference", kind="handout", format="pdf", patients=12)

Entries say who, which action, which patient id and which file or counts — never names, MRNs, notes or
other record values. Details are therefore checked against an allow-list of keys and must be short scalars
(or counts per file): a caller that tries to log anything else gets a ValueError in its tests, not a leak in
production. The table is append-only in the database itself (triggers, migration 0002).
"""

from __future__ import annotations

import getpass
import numbers
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, func, insert, select

from dashboard.store.models import AUDIT_ACTIONS, AuditEntry

#: Detail keys an entry may carry. Each names an id, a code, a file name or a count: nothing free-text.
DETAIL_KEYS: frozenset[str] = frozenset({
    "file",          # base name of an imported / exported / backup file
    "kind",          # folder | workbook | form | handout | conference_list | …
    "format",        # csv | pdf | xlsx | fhir | …
    "status",        # succeeded | failed | rejected | locked | …
    "error",         # exception type or constraint name, never a driver message with values
    "method",        # password | cookie
    "scope",         # logout: session (this session) | user (every session of the user)
    "known_user",    # login_failed: whether the user name exists (an unknown one is not stored)
    "import_id", "decision_id", "rule_id", "decision",
    "counts",        # {"patients": 12, …}: rows per file or table
    "rows", "patients", "files", "errors", "warnings", "bytes", "seconds",
    "patient_ids",   # pseudonymous ids of an export covering several patients
    "revision", "backend",
    "identified",    # an export with names/MRNs/notes (True) or pseudonymous (False)
    "fields",        # names of the fields an identity correction changed (never their values)
    "target",        # user_admin: the login name of the account changed or unlocked
    "new_role",      # user_admin: the role given
})
MAX_TEXT = 200
MAX_PATIENT_IDS = 1000
UNKNOWN_USER = "unknown"
AUDIT_COLUMNS = ["id", "at", "user_name", "role", "action", "patient_id", "details"]
_ONE_LINE = re.compile(r"^[^\r\n\x00]*$")


def record(engine: Engine | Connection, user: str | None, action: str, *, role: str | None = None,
           patient_id: str | None = None, at: datetime | None = None, **details: Any) -> int:
    """Append one entry and return its id.

    `engine` may be an open Connection, to write the entry in the caller's transaction (the entry then
    lands exactly when the action does). `user` is the login name (None is stored as 'unknown').
    Raises ValueError for an unknown action or a detail that is not an id, a code, a file name or a count.
    """
    if action not in AUDIT_ACTIONS:
        raise ValueError(f"audit action must be one of {', '.join(AUDIT_ACTIONS)}, not {action!r}")
    values = {
        "at": _utc(at or datetime.now(UTC)),
        "user_name": _text("user", user.strip() if user and user.strip() else UNKNOWN_USER),
        "role": _text("role", role) if role else None,
        "action": action,
        "patient_id": _text("patient_id", str(patient_id)) if patient_id is not None else None,
        "details": clean_details(details) or None,
    }
    statement = insert(AuditEntry.__table__).values(**values)
    if isinstance(engine, Connection):
        return engine.execute(statement).inserted_primary_key[0]
    with engine.begin() as conn:
        return conn.execute(statement).inserted_primary_key[0]


def clean_details(details: Mapping[str, Any]) -> dict[str, Any]:
    """The details as stored: allowed keys only, short one-line text, numbers, counts; None dropped."""
    clean: dict[str, Any] = {}
    for key, value in details.items():
        if key not in DETAIL_KEYS:
            raise ValueError(f"audit detail {key!r} is not allowed: the audit log holds ids, codes, file names "
                             f"and counts only ({', '.join(sorted(DETAIL_KEYS))})")
        if value is None:
            continue
        if key == "file":  # the user's file name: kept, but one line and at most MAX_TEXT characters
            value = " ".join(_basename(str(value)).replace("\x00", " ").split())
            value = value if len(value) <= MAX_TEXT else value[: MAX_TEXT - 1] + "…"
        clean[key] = _value(key, value)
    return clean


def _value(key: str, value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, numbers.Integral):  # numpy integers too
        return int(value)
    if isinstance(value, numbers.Real):
        return round(float(value), 3)
    if isinstance(value, str):
        return _text(key, value)
    if key == "counts" and isinstance(value, Mapping):
        return {_text(key, str(k)): _value(key, v) for k, v in value.items()}
    if key == "patient_ids" and isinstance(value, Sequence) and not isinstance(value, str | bytes):
        ids = [_text(key, str(v)) for v in value]
        if len(ids) > MAX_PATIENT_IDS:
            raise ValueError(f"audit detail 'patient_ids' holds at most {MAX_PATIENT_IDS} ids; give 'patients' "
                             "(a count) instead")
        return ids
    raise ValueError(f"audit detail {key!r} must be a number or a short text, not {type(value).__name__}")


def _text(key: str, value: str) -> str:
    if len(value) > MAX_TEXT or not _ONE_LINE.match(value):
        raise ValueError(f"audit {key} must be one line of at most {MAX_TEXT} characters")
    return value


def _basename(name: str) -> str:
    """A full path can name a person or a private folder: keep the last part only."""
    parts = [p for p in re.split(r"[\\/]", name.strip()) if p]
    return parts[-1] if parts else "unnamed"


def _utc(when: datetime) -> datetime:
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


# --------------------------------------------------------------------------------------------- reading
def audit_log(engine: Engine, *, user: str | None = None, actions: Sequence[str] | None = None,
              patient_id: str | None = None, since: date | datetime | None = None,
              until: date | datetime | None = None, limit: int | None = 10_000) -> pd.DataFrame:
    """Entries, newest first, filtered; `since`/`until` as dates include the whole day (UTC)."""
    table = AuditEntry.__table__
    query = select(*(table.c[c] for c in AUDIT_COLUMNS)).order_by(table.c.at.desc(), table.c.id.desc())
    if user:
        query = query.where(table.c.user_name == user)
    if actions:
        query = query.where(table.c.action.in_(list(actions)))
    if patient_id:
        query = query.where(table.c.patient_id == patient_id.strip())
    if since is not None:
        query = query.where(table.c.at >= _start(since))
    if until is not None:
        query = query.where(table.c.at < _end(until))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    frame = pd.DataFrame([tuple(r) for r in rows], columns=AUDIT_COLUMNS)
    frame["id"] = frame["id"].astype("int64")
    frame["at"] = pd.to_datetime(frame["at"], utc=True).astype("datetime64[us, UTC]")
    for column in ("user_name", "role", "action", "patient_id"):
        frame[column] = frame[column].astype("string")
    frame["details"] = frame["details"].astype(object)
    return frame


def audit_users(engine: Engine) -> list[str]:
    """Every user name in the log, for the Audit page's filter."""
    table = AuditEntry.__table__
    with engine.connect() as conn:
        return list(conn.execute(select(table.c.user_name).distinct().order_by(table.c.user_name)).scalars())


def recent_failures(engine: Engine, user: str, window: timedelta) -> int:
    """Failed sign-ins of one user within the window (for the lock-out after repeated failures)."""
    table = AuditEntry.__table__
    since = datetime.now(UTC) - window
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table).where(
            table.c.action == "login_failed", table.c.user_name == user, table.c.at >= since)).scalar_one())


def _start(day: date | datetime) -> datetime:
    return _utc(day) if isinstance(day, datetime) else datetime.combine(day, time.min, UTC)


def _end(day: date | datetime) -> datetime:
    return _utc(day) if isinstance(day, datetime) else datetime.combine(day + timedelta(days=1), time.min, UTC)


def import_details(result: Any) -> dict[str, Any]:
    """Details of a successful import (an ImportResult): its id, rows per file and what happened to them."""
    return {"import_id": result.import_id, "status": "succeeded", "seconds": result.seconds,
            "counts": {stem: {"inserted": c.inserted, "updated": c.updated, "unchanged": c.unchanged}
                       for stem, c in result.counts.items()}}


def command_line_user(user: str | None) -> str:
    """Who the audit log names for a command: its --user, else the operating-system account."""
    if user and user.strip():
        return user.strip()
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):
        return "cli"
