"""Who is using the app and in which role: sign-in before any screen, sign-out, and the audit of both.

dashboard/app/main.py calls `require_login()` before `st.navigation`, so no screen (and no patient data) runs before
a successful sign-in. Each screen of dashboard/app/screens/ checks again itself, as its first statement
(`require_screen(__file__)`), whatever ran it: SCREEN_ROLES is the one table of who may open which screen, for
app.py's navigation and for the screens' own checks. Screens read the user through `current_user()` and
`current_role()`; downloads of identified documents go through `identified_download` (a one-time link served by
dashboard/app/routes.py to this signed-in session's cookie only, audited before the document is built).

Roles: surgeon (everything, records decisions), conference (de-identified views only), admin (imports,
users, audit). Accounts live in the store (dashboard.store.users), seeded from the login configuration file
(dashboard.access) and managed on the Users screen; passwords are bcrypt hashes.

Sessions are server-side (table `sessions`): a sign-in records one, every run checks it is still live, and
sign-out, a password reset, a role change or deactivation revoke every session of that user — each open tab is
signed out at its next run. The session cookie holds only the session's random token (the store keeps its
HMAC): nothing to forge, and useless once revoked. The script cannot set an HttpOnly cookie itself: a sign-in
creates a one-time code (dashboard.app.grants) that a tiny component posts to the server's /session/start route,
which answers with the HttpOnly, SameSite=Strict cookie; a sign-out's code makes /session/end delete it. A new
tab resumes the session from the cookie (`st.context.cookies`) when `cookie.expiry_days` > 0; with 0 the cookie
only lasts while the browser is open and serves downloads, and every new tab signs in. Failed sign-ins are
counted per user name (known or not) and per client before the password is checked (dashboard.store.users).

Session keys: `user_name` (the login name, as recorded in the audit log), `role`, `display_name`, `_session`
(the session id). Tests can sign in by setting `user_name` and `role` of an active account before
`AppTest.run()` (the session is then recorded on that run), or fill the form (`login_username`,
`login_password`, button "Sign in").
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import streamlit as st
from sqlalchemy import Engine

from dashboard.access import (
    DEMO_AUTH_FILE,
    DEMO_PASSWORDS,
    ROLES,
    UNKNOWN_USER_HASH,
    AuthConfig,
    AuthConfigError,
    auth_file,
    check_password,
    demo_mode,
    load_auth_config,
)
from dashboard.app import data
from dashboard.app.grants import (
    CODE_LIFETIME,
    GRANTS,
    REPORT_LIFETIME,
    REPORTS_PATH,
    SESSION_END_PATH,
    SESSION_START_PATH,
    ClearCookie,
    Document,
    SessionCookie,
    SetCookie,
)
from dashboard.store import audit, get_engine, users
from dashboard.store.db import database_url
from dashboard.store.users import Account

__all__ = ["ROLES", "SCREEN_ROLES", "audit_event", "audit_export", "audit_patient_view", "check_sign_in",
           "current_role", "current_user", "identified_download", "require_login", "require_screen"]

log = logging.getLogger(__name__)

#: Sign-in attempts per user name (known or not) within the window; the lock then lasts LOCKOUT_WINDOW from
#: the attempt that set it, and attempts while locked do not extend it.
LOCKOUT_FAILURES = 5
#: Failed sign-ins per client address within the window, whatever the user names (a successful sign-in gives its
#: attempt back). Streamlit sees the address of the connection: behind a reverse proxy every client shares it.
CLIENT_LOCKOUT_FAILURES = 20
LOCKOUT_WINDOW = timedelta(minutes=15)
#: A server-side session lasts this long, or `cookie.expiry_days` if longer (sign-out and revocation end it sooner).
SESSION_LIFETIME = timedelta(hours=12)
#: Viewing the same patient again within this time is one access, not a new audit entry per rerun.
PATIENT_VIEW_REPEAT = timedelta(minutes=15)

#: Who may open each screen of dashboard/app/screens/ (by file name): app.py's navigation shows a role only its
#: screens from this table, and each screen checks it again as its first statement (`require_screen(__file__)`).
SCREEN_ROLES: dict[str, tuple[str, ...]] = {
    "clinic": ("surgeon",),
    "patient": ("surgeon",),
    "add_exam": ("surgeon",),
    "conference": ("surgeon", "conference"),
    "import_records": ("surgeon", "admin"),
    "reference": ("surgeon", "conference", "admin"),
    "audit": ("admin",),
    "users": ("admin",),
    "outcomes": ("surgeon", "admin"),
}
SIGN_IN_FIRST = "Sign in first."
NOT_IN_ROLE = "This page is not available in your role."
#: The one answer to a refused sign-in, whether the name exists or not.
WRONG_PASSWORD = "User name or password is incorrect."
LOCKED = (f"Too many failed sign-ins: try again in {LOCKOUT_WINDOW.seconds // 60} minutes, or ask an admin to "
          "unlock the user name.")


def current_role() -> str | None:
    return st.session_state.get("role")


def current_user() -> str | None:
    return st.session_state.get("user_name")


# ------------------------------------------------------------------------------------------- sign-in
@st.cache_resource(show_spinner=False, max_entries=4)
def _load(path: str, modified: float, demo: bool) -> AuthConfig:
    """Checked once per file version (the demo-secret check costs a few bcrypt rounds)."""
    return load_auth_config(path, demo=demo)


def auth_config() -> AuthConfig:
    """The login configuration in force; AuthConfigError when the app must not start."""
    demo = demo_mode()
    path = auth_file(demo)
    try:
        modified = path.stat().st_mtime
    except OSError:
        modified = -1.0
    return _load(str(path), modified, demo)


@st.cache_resource(show_spinner=False, max_entries=4)
def _store(url: str) -> Engine:
    """The store for accounts and sessions (not dashboard.app.data's engine: no cohort is loaded to sign in)."""
    return get_engine(url)


@st.cache_resource(show_spinner=False, max_entries=8)
def _synced(url: str, path: str, modified: float, demo: bool) -> bool:
    """The configuration file's users copied into the store, once per file version and store."""
    config = _load(path, modified, demo)
    users.sync_file_users(_store(url), {u.username: (u.name, u.role, u.password_hash) for u in config.users.values()})
    return True


def accounts_engine(config: AuthConfig | None = None) -> Engine:
    """The store, with the configuration's users in it."""
    config = config or auth_config()
    url = database_url()
    try:
        modified = config.path.stat().st_mtime
    except OSError:
        modified = -1.0
    _synced(url, str(config.path), modified, config.demo)
    return _store(url)


def require_login() -> str:
    """The signed-in user's role; otherwise the sign-in form (or why the app cannot start), then stop."""
    try:
        config = auth_config()
    except AuthConfigError as problem:
        _refuse(problem)
    if st.session_state.pop("_signing_out", False):
        _end_session()
        st.session_state["logout"] = True  # no cookie re-login in this session
        code = GRANTS.issue(ClearCookie(_session_cookie(config)), CODE_LIFETIME)
        st.session_state["_cookie_pending"] = ("delete", None, code)
    if current_user() is not None or current_role() is not None:
        account = _session_account(config)
        if account is not None:
            _signed_in_sidebar(account)
            return account.role
        _end_session()  # signed out elsewhere, revoked, deactivated, or given another role: sign in again
    returning = _cookie_login(config)
    if returning is not None:  # no rerun: this run goes on to the page the link asked for
        _signed_in_sidebar(returning)
        return returning.role
    _login_page(config)


def _session_account(config: AuthConfig) -> Account | None:
    """The account of this session if its server-side session is live and matches the session's user and role.

    A session holding a user but no session id (set by code, e.g. tests; a browser cannot write these keys)
    gets one recorded when that user is an active account in that role.
    """
    user, role = current_user(), current_role()
    if not user or not role:
        return None
    engine = accounts_engine(config)
    sid = st.session_state.get("_session")
    if sid:
        account = users.live_session(engine, sid)
    else:
        account = users.account(engine, user)
        if account is not None and account.active and account.role == role:
            _, st.session_state["_session"] = users.start_session(engine, user, "state", config.cookie_key,
                                                                  SESSION_LIFETIME, sign_in=False)
    if account is None or not account.active or (account.username, account.role) != (user, role):
        return None
    return account


def require_screen(script: str) -> str:
    """A screen's first statement, `require_screen(__file__)`: the signed-in user's role, or a notice and stop.

    Defence in depth, whatever runs the file (app.py's navigation, or Streamlit running it directly): the screen
    goes on only for a session whose server-side session is live, of an active account in the role the store
    gives it, and that role among the screen's SCREEN_ROLES (a file missing from the table opens for nobody).
    Otherwise a neutral "Sign in first." (or "not available in your role"), nothing else, and the script stops —
    before the screen reads the store's records, the cohort or a query parameter.
    """
    roles = SCREEN_ROLES.get(Path(script).stem, ())
    account = None
    if current_user() and current_role():
        try:
            account = _session_account(auth_config())
        except AuthConfigError:
            account = None
    if account is None:
        st.info(SIGN_IN_FIRST, icon=":material/lock:")
        st.stop()
    if account.role not in roles:
        st.error(NOT_IN_ROLE)
        st.stop()
    return account.role


def _only_page(render: Callable[[], None], title: str, url_path: str) -> NoReturn:
    """Run `render` as the app's one page, whatever screen the address names, then stop.

    Registering it through st.navigation (rather than drawing it and stopping) means no screen exists for the
    session until sign-in: a link to /patient cannot open it. Each screen's address is registered too, running
    `render`, not the screen: a link to /patient?patient=… shows the form without Streamlit's "Page not found"
    dialog (which blocks the form), and once signed in, the rerun opens the screen the link asked for.
    """
    pages = [st.Page(render, title=title, icon=":material/lock:", url_path=url_path, default=True)]
    pages += [st.Page(render, title=title, icon=":material/lock:", url_path=screen) for screen in SCREEN_ROLES]
    st.navigation(pages, position="hidden").run()
    st.stop()


def _refuse(problem: AuthConfigError) -> NoReturn:
    print(f"Spine Recovery Dashboard refuses to start: {problem}", file=sys.stderr)

    def cannot_start() -> None:
        st.title("Spine Recovery Dashboard")
        st.error(f"**The dashboard cannot start.** {problem}", icon=":material/lock:")

    _only_page(cannot_start, "Cannot start", "cannot-start")


def _login_page(config: AuthConfig) -> NoReturn:
    _only_page(lambda: _login_form(config), "Sign in", "sign-in")


def _login_form(config: AuthConfig) -> None:
    st.title("Spine Recovery Dashboard")
    if config.demo and config.path.resolve() == DEMO_AUTH_FILE.resolve():
        st.info("Demo mode (synthetic patients). Sign in as " + ", ".join(
            f"**{user}** / `{password}`" for user, password in DEMO_PASSWORDS.items()) + ".")
    with st.form("login", clear_on_submit=True):
        st.subheader("Sign in")
        username = st.text_input("User name", key="login_username", autocomplete="username")
        password = st.text_input("Password", type="password", key="login_password",
                                 autocomplete="current-password")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        _attempt(config, username, password)
    _pending_cookie()  # last: the sign-out's one-time code for deleting the cookie


def _client_address() -> str | None:
    try:
        address = st.context.ip_address
    except Exception:  # no request
        return None
    return address if isinstance(address, str) and address else None  # AppTest answers a mock


def check_sign_in(engine: Engine, config: AuthConfig, username: str, password: str,
                  client: str | None = None) -> Account | str:
    """The account a user name and password sign in, or the message to show (no Streamlit: tests call it from
    threads).

    The attempt is counted first — per user name (its HMAC, whether the name exists or not) and per client —
    in one transaction (users.reserve_attempt); only an attempt within the allowance has its password checked.
    An unknown or deactivated name is checked against a dummy hash (the same time) and gets the same messages.
    """
    login = (username or "").strip().lower()
    subject = users.user_subject(login, config.cookie_key)
    limits = {subject: LOCKOUT_FAILURES}
    if client:
        limits[users.client_subject(client)] = CLIENT_LOCKOUT_FAILURES
    account = users.account(engine, login)
    known = account is not None and account.active
    name = login if account is not None else audit.UNKNOWN_USER  # an unknown name may be a mistyped password
    role = account.role if account is not None else None
    if not users.reserve_attempt(engine, limits, LOCKOUT_WINDOW):
        audit.record(engine, name, "login_failed", role=role, status="locked", known_user=account is not None)
        return LOCKED
    accepted = check_password(password, account.password_hash if known else UNKNOWN_USER_HASH)
    if accepted and known:
        users.clear_failures(engine, subject)
        if client:
            users.refund_attempt(engine, users.client_subject(client), CLIENT_LOCKOUT_FAILURES)
        return account
    audit.record(engine, name, "login_failed", role=role, known_user=account is not None,
                 status="inactive" if account is not None and not account.active else None)
    return WRONG_PASSWORD


def _attempt(config: AuthConfig, username: str, password: str) -> None:
    if not (username or "").strip() or not password:
        st.error("Enter your user name and password.")
        return
    engine = accounts_engine(config)
    result = check_sign_in(engine, config, username, password, _client_address())
    if isinstance(result, str):
        st.error(result)
        return
    st.session_state["logout"] = False
    token = _start_session(config, result, "password")
    max_age = round(timedelta(days=config.cookie_expiry_days).total_seconds()) or None
    grant = SetCookie(_session_cookie(config), token, st.session_state["_session"], max_age)
    st.session_state["_cookie_pending"] = ("set", token, GRANTS.issue(grant, CODE_LIFETIME))
    st.rerun()


def _lifetime(config: AuthConfig) -> timedelta:
    return max(timedelta(days=config.cookie_expiry_days), SESSION_LIFETIME)


def _start_session(config: AuthConfig, account: Account, method: str) -> str:
    """Record a server-side session for the account; the token for the session cookie."""
    engine = accounts_engine(config)
    token, sid = users.start_session(engine, account.username, method, config.cookie_key, _lifetime(config))
    audit.record(engine, account.username, "login", role=account.role, method=method)
    _remember(account, sid)
    return token


def _remember(account: Account, sid: str) -> None:
    st.session_state["user_name"] = account.username
    st.session_state["role"] = account.role
    st.session_state["display_name"] = account.name
    st.session_state["_session"] = sid


def _signed_in_sidebar(account: Account) -> None:
    with st.sidebar:
        st.caption(f"Signed in as **{account.name}** ({account.role})")
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=_sign_out,
                  help="Signs this user out everywhere: every tab and every device.")
        _pending_cookie()  # the sign-in's one-time code for the HttpOnly cookie


# ------------------------------------------------------------------------- session cookie (HttpOnly)
def _cookie_login(config: AuthConfig) -> Account | None:
    """A session cookie (read server-side from the connection's request) whose session is live (not revoked, not
    expired, of an active user) signs in: the new tab joins that session, so revoking it ends both."""
    if config.cookie_expiry_days <= 0 or st.session_state.get("logout"):
        return None
    token = dict(st.context.cookies).get(config.cookie_name)
    if not token:
        return None
    engine = accounts_engine(config)
    sid = users.session_id(token, config.cookie_key)
    account = users.live_session(engine, sid)
    if account is None:
        return None
    users.touch_sign_in(engine, account.username)
    audit.record(engine, account.username, "login", role=account.role, method="cookie")
    _remember(account, sid)
    return account


def _session_cookie(config: AuthConfig) -> SessionCookie:
    return SessionCookie(config.cookie_name, config.cookie_key, accounts_engine(config))


def _pending_cookie() -> None:
    """Have the browser post the pending sign-in or sign-out code to the server, which sets or deletes the
    HttpOnly cookie (dashboard/app/routes.py).

    An iframe of a few lines (`st.iframe`, same origin) posts the code once when it loads, so the answer's
    Set-Cookie applies to this site. It stays on the page while the code is outstanding — taken and expired
    codes drop it at the next run — so a run that follows at once cannot remove it before it has posted.
    """
    pending = st.session_state.get("_cookie_pending")
    if not pending:
        return
    action, _token, code = pending
    if not GRANTS.outstanding(code):
        st.session_state.pop("_cookie_pending", None)
        return
    path = SESSION_START_PATH if action == "set" else SESSION_END_PATH
    st.iframe(  # our own fixed script: nothing of a user's goes into it (the code is url-safe base64)
        "<script>fetch(" + json.dumps(path) + ", {method: 'POST', credentials: 'same-origin', "
        "headers: {'Content-Type': 'application/json'}, body: JSON.stringify({code: " + json.dumps(code) + "})})"
        "</script>", height=1)  # "content" left an empty iframe's default height on the page


def _sign_out() -> None:
    """Button callback: every session of this user is revoked (other tabs at their next run, session cookies
    at once), audited; this session is forgotten at the start of the next run (widget state cannot be deleted
    from inside a widget's own callback) and its cookie deleted."""
    user, role = current_user(), current_role()
    st.session_state["_signing_out"] = True
    try:
        engine = accounts_engine()
        if user:
            users.revoke_sessions(engine, user)
        audit.record(engine, user, "logout", role=role, scope="user")
    except Exception as problem:  # this session is still forgotten; the failure is logged (no values)
        log.warning("could not revoke sessions or record a sign-out (%s)", type(problem).__name__)


def _end_session() -> None:
    """Forget everything the session knew, including the patient it showed last; withdraw its download links."""
    sid = st.session_state.get("_session")
    if sid:
        GRANTS.withdraw(sid)
    for key in list(st.session_state.keys()):
        if key not in ("logout", "_cookie_pending"):
            del st.session_state[key]


# ------------------------------------------------------------------------------------------------ audit
def audit_event(action: str, *, patient_id: str | None = None, **details: Any) -> int:
    """Record an action of the signed-in user (see dashboard.store.audit.record for what details may say)."""
    return audit.record(data.engine(), current_user(), action, role=current_role(), patient_id=patient_id,
                        **details)


def audit_patient_view(patient_id: str) -> None:
    """Record that the signed-in user opened a patient's record; stop the page if that cannot be recorded.

    Once per patient and session (again after PATIENT_VIEW_REPEAT): a page reruns on every click.
    """
    _audit_view(patient_id, "This record is not shown", patient_id=patient_id)


def audit_clinic_view(patients: int) -> None:
    """Record that the signed-in user saw the clinic list (names and MRNs of `patients` patients), as a
    `patient_view` of no one patient with `kind` clinic_list; stop the page if that cannot be recorded.

    Once per session (again after PATIENT_VIEW_REPEAT, or when the number of patients listed changes).
    """
    _audit_view(("clinic_list", patients), "The clinic list is not shown", kind="clinic_list", patients=patients)


def _audit_view(key: object, refused: str, **entry: object) -> None:
    now = datetime.now(UTC)
    last = st.session_state.get("_audited_view")
    if last is not None and last[0] == key and now - last[1] < PATIENT_VIEW_REPEAT:
        return
    try:
        audit_event("patient_view", **entry)
    except Exception as problem:
        log.warning("could not record a view (%s)", type(problem).__name__)
        st.error(f"{refused}: the access could not be written to the audit log. Please try again, or tell an "
                 "admin.")
        st.stop()
    st.session_state["_audited_view"] = (key, now)


def audit_export(kind: str, format: str, *, patient_id: str | None = None, patients: int | None = None,
                 rows: int | None = None, file: str | None = None) -> None:
    """For downloads: `st.download_button(..., on_click=audit_export, args=("handout", "pdf"), kwargs={...})`.

    Never raises: a failed entry is logged (without values) rather than breaking the download.
    """
    try:
        audit_event("export", patient_id=patient_id, kind=kind, format=format, patients=patients, rows=rows,
                    file=file)
    except Exception as problem:
        log.warning("could not record an export in the audit log (%s)", type(problem).__name__)


# ------------------------------------------------------------------------------ identified downloads
def identified_download(make: Callable[[], bytes], kind: str, format: str, *, patient_id: str, label: str,
                        file_name: str, mime: str, key: str) -> None:
    """A button for an identified document (name, MRN, dates), then its one-time download link.

    Clicking the button creates a grant (dashboard.app.grants.Document) bound to this session's server-side session,
    the patient and the document, valid for REPORT_LIFETIME, and shows a link to /reports/<code>. The server
    (dashboard/app/routes.py) serves it once, only to a request whose HttpOnly cookie names that same live session:
    it writes the export to the audit log, then builds the document (no entry, no document). A link copied to
    another browser, opened after a sign-out, a second time or too late is refused. Call it only after the
    screen's `require_screen`.
    """
    user, role, sid = current_user(), current_role(), st.session_state.get("_session")
    if not user or not role or not sid:  # only after require_screen: a programming error, not a user's
        st.info(SIGN_IN_FIRST, icon=":material/lock:")
        st.stop()
    links: dict[str, tuple[str, str]] = st.session_state.setdefault("_download_links", {})
    shown_for, code = links.get(key, ("", ""))
    if shown_for == patient_id and GRANTS.outstanding(code):  # another patient's link is never shown here
        st.link_button(f"Download {label[0].lower()}{label[1:]}", f"{REPORTS_PATH}/{code}", type="primary",
                       icon=":material/download:", width="stretch",
                       help=f"One download, within {REPORT_LIFETIME.seconds // 60} minutes, in this signed-in "
                            "browser.")
        return
    links.pop(key, None)
    engine = data.engine()  # here, in the script run: the grant is used outside it

    def record() -> int:
        return audit.record(engine, user, "export", role=role, patient_id=patient_id, kind=kind, format=format,
                            identified=True)

    def grant() -> None:
        document = Document(_session_cookie(auth_config()), sid, user, role, patient_id, file_name, mime, make,
                            record)
        links[key] = (patient_id, GRANTS.issue(document, REPORT_LIFETIME))

    st.button(label, key=key, icon=":material/description:", width="stretch", on_click=grant,
              help="Prepares a one-time download link for this signed-in browser.")
