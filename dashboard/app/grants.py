"""One-time, short-lived grants between the Streamlit script and the server's own routes (dashboard/app/server.py).

Streamlit cannot set an HttpOnly cookie or serve a file only to a request carrying one; the routes of
dashboard/app/server.py can, but they run outside any Streamlit session. A grant is how the signed-in script hands
them one precise action: it is created server-side (by the sign-in, the sign-out or a click on a download),
bound to the server-side session of the store (`sessions`, dashboard.store.users), named by a random code the
page sends back, and taken at most once before it expires. The page never holds anything that outlives it:
the code is useless after its first use, after `CODE_LIFETIME`/`REPORT_LIFETIME`, or once the session is
revoked.

Grants live in this process's memory (Streamlit's sessions do too: one server process). A restart forgets
them, which only means clicking again. No Streamlit here: the script and the routes both import this module.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from dashboard.store import users
from dashboard.store.users import Account

#: The routes of dashboard/app/server.py that take the grants (the script writes them into the page).
SESSION_START_PATH = "/session/start"
SESSION_END_PATH = "/session/end"
REPORTS_PATH = "/reports"
#: A sign-in or sign-out code: the page posts it at once (the next script run), so a minute is plenty.
CODE_LIFETIME = timedelta(minutes=1)
#: An identified document's link: clicked right after it appears.
REPORT_LIFETIME = timedelta(minutes=2)
#: Outstanding grants at most (a page clicked in a loop cannot grow memory without bound); the oldest go first.
MAX_GRANTS = 1000


@dataclass(frozen=True)
class SessionCookie:
    """How a request's cookie names a server-side session: the cookie's name, the key of the stored HMAC, the
    store holding sessions and accounts."""

    name: str
    key: str
    engine: Engine

    def session_of(self, cookies: Mapping[str, str]) -> tuple[str, Account] | None:
        """(session id, active account) of the live session the request's cookie holds the token of; else None."""
        token = cookies.get(self.name)
        if not token:
            return None
        sid = users.session_id(token, self.key)
        account = users.live_session(self.engine, sid)
        return None if account is None else (sid, account)


@dataclass(frozen=True)
class SetCookie:
    """Sign-in: put the session's token in an HttpOnly cookie (`max_age` None: until the browser closes)."""

    cookie: SessionCookie
    token: str
    session: str
    max_age: int | None


@dataclass(frozen=True)
class ClearCookie:
    """Sign-out: delete the cookie (the script has already revoked every session of the user)."""

    cookie: SessionCookie


@dataclass(frozen=True)
class Document:
    """An identified document for one patient, served once to the session that clicked, audited first.

    `make` builds the bytes (the script's closure over its cohort), `audit` writes the export's audit entry and
    raises if it cannot (no entry, no document).
    """

    cookie: SessionCookie
    session: str
    user: str
    role: str
    patient_id: str
    file_name: str
    media_type: str
    make: Callable[[], bytes]
    audit: Callable[[], object]


Grant = SetCookie | ClearCookie | Document


@dataclass
class _Entry:
    grant: Grant
    expires: datetime


@dataclass
class GrantBook:
    """The outstanding grants of this process, by code; thread-safe (script threads and route threads)."""

    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def issue(self, grant: Grant, lifetime: timedelta) -> str:
        """A new random code (256 bits) for the grant, valid for `lifetime`."""
        code = secrets.token_urlsafe(32)
        with self._lock:
            self._purge()
            while len(self._entries) >= MAX_GRANTS:
                self._entries.pop(next(iter(self._entries)))
            self._entries[code] = _Entry(grant, self.clock() + lifetime)
        return code

    def take(self, code: str) -> Grant | None:
        """The grant of a code, once: the first presentation removes it, whatever then happens; None if unknown,
        used or expired."""
        with self._lock:
            entry = self._entries.pop(code, None)
            self._purge()
        if entry is None or entry.expires <= self.clock():
            return None
        return entry.grant

    def outstanding(self, code: str | None) -> bool:
        """The code is still to be used (not taken, not expired): the script keeps its component on the page."""
        with self._lock:
            entry = self._entries.get(code or "")
            return entry is not None and entry.expires > self.clock()

    def withdraw(self, session: str) -> int:
        """Forget every grant bound to a session (sign-out in this tab); the number withdrawn."""
        with self._lock:
            codes = [c for c, e in self._entries.items() if getattr(e.grant, "session", None) == session]
            for code in codes:
                del self._entries[code]
        return len(codes)

    def _purge(self) -> None:
        now = self.clock()
        for code in [c for c, e in self._entries.items() if e.expires <= now]:
            del self._entries[code]


#: The process's grants (the script issues, the routes take).
GRANTS = GrantBook()
