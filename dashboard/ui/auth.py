"""Who is using the app and in which role: sign-in before any screen, sign-out, and the audit of both.

dashboard/app.py calls `require_login()` before `st.navigation`, so no screen (and no patient data) runs before
a successful sign-in. Each screen of dashboard/screens/ checks again itself, as its first statement
(`require_screen(__file__)`), whatever ran it: SCREEN_ROLES is the one table of who may open which screen, for
app.py's navigation and for the screens' own checks. Screens read the user through `current_user()` and
`current_role()`; downloads of identified documents go through `identified_download` (built for a signed-in
session only, audited before they are built).

Roles: surgeon (everything, records decisions), conference (de-identified views only), admin (imports,
users, audit). The users, their bcrypt password hashes and roles come from the login configuration
(dashboard.access); passwords are checked by streamlit-authenticator (bcrypt). An optional re-login cookie
holds its token format (a JWT of user name and expiry, signed with the configuration's cookie key), so a
new tab or a reload within `cookie.expiry_days` does not ask again; signing out deletes it.

Session keys: `user_name` (the login name, as recorded in the audit log), `role`, `display_name`. Tests can
sign in by setting `user_name` and `role` of a configured user before `AppTest.run()`, or fill the form
(`login_username`, `login_password`, button "Sign in").
"""

from __future__ import annotations

import logging
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import streamlit as st
from extra_streamlit_components.CookieManager import _component_func as _cookie_component
from streamlit_authenticator.controllers import AuthenticationController
from streamlit_authenticator.utilities import LoginError

from dashboard.access import (
    DEMO_AUTH_FILE,
    DEMO_PASSWORDS,
    ROLES,
    UNKNOWN_USER_HASH,
    AuthConfig,
    AuthConfigError,
    User,
    auth_file,
    check_password,
    cookie_token,
    cookie_user,
    demo_mode,
    load_auth_config,
)
from dashboard.store import audit
from dashboard.ui import data

__all__ = ["ROLES", "SCREEN_ROLES", "audit_event", "audit_export", "audit_patient_view", "current_role",
           "current_user", "identified_download", "require_login", "require_screen"]

log = logging.getLogger(__name__)

#: Failed sign-ins of one user within the window after which even the right password is refused.
LOCKOUT_FAILURES = 5
LOCKOUT_WINDOW = timedelta(minutes=15)
#: Viewing the same patient again within this time is one access, not a new audit entry per rerun.
PATIENT_VIEW_REPEAT = timedelta(minutes=15)
#: streamlit-authenticator's own session keys, cleared on sign-out.
LIBRARY_KEYS = ("authentication_status", "username", "name", "roles", "email")

#: Who may open each screen of dashboard/screens/ (by file name): app.py's navigation shows a role only its
#: screens from this table, and each screen checks it again as its first statement (`require_screen(__file__)`).
SCREEN_ROLES: dict[str, tuple[str, ...]] = {
    "clinic": ("surgeon",),
    "patient": ("surgeon",),
    "add_exam": ("surgeon",),
    "conference": ("surgeon", "conference"),
    "import_records": ("surgeon", "admin"),
    "reference": ("surgeon", "conference", "admin"),
    "audit": ("admin",),
    "outcomes": ("surgeon", "admin"),
}
SIGN_IN_FIRST = "Sign in first."
NOT_IN_ROLE = "This page is not available in your role."


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


def require_login() -> str:
    """The signed-in user's role; otherwise the sign-in form (or why the app cannot start), then stop."""
    try:
        config = auth_config()
    except AuthConfigError as problem:
        _refuse(problem)
    if st.session_state.pop("_signing_out", False):
        _end_session()
        st.session_state["logout"] = True  # no cookie re-login in this session
        st.session_state["_cookie_pending"] = ("delete", None, None, secrets.token_hex(4))
    user, role = current_user(), current_role()
    if user is not None or role is not None:
        known = config.users.get(user or "")
        if known is not None and known.role == role:
            _signed_in_sidebar(config, known)
            return known.role
        _end_session()  # removed from the configuration or given another role: sign in again
    returning = _cookie_login(config)
    if returning is not None:  # no rerun: this run goes on to the page the link asked for
        _signed_in_sidebar(config, returning)
        return returning.role
    _login_page(config)


def require_screen(script: str) -> str:
    """A screen's first statement, `require_screen(__file__)`: the signed-in user's role, or a notice and stop.

    Defence in depth, whatever runs the file (app.py's navigation, or Streamlit running it directly): the screen
    goes on only for a session holding a user of the login configuration, in the role the configuration gives
    that user, and that role among the screen's SCREEN_ROLES (a file missing from the table opens for nobody).
    Otherwise a neutral "Sign in first." (or "not available in your role"), nothing else, and the script stops —
    before the screen reads the store, the cohort or a query parameter.
    """
    roles = SCREEN_ROLES.get(Path(script).stem, ())
    try:
        config = auth_config()
    except AuthConfigError:
        config = None
    user = None if config is None else config.users.get(current_user() or "")
    if user is None or user.role != current_role():
        st.info(SIGN_IN_FIRST, icon=":material/lock:")
        st.stop()
    if user.role not in roles:
        st.error(NOT_IN_ROLE)
        st.stop()
    return user.role


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


def _controller(config: AuthConfig) -> AuthenticationController:
    """streamlit-authenticator's credential checks (bcrypt) over our checked configuration.

    The controller, not the Authenticate widget: the widget also renders a cookie-reading component on every
    run, whose answer reruns the script and can cut short the component that sets or deletes our cookie.
    """
    return AuthenticationController(config.credentials(), None, False, None, None, config.cookie_key, None)


def _login_page(config: AuthConfig) -> NoReturn:
    _only_page(lambda: _login_form(config), "Sign in", "sign-in")


def _login_form(config: AuthConfig) -> None:
    _pending_cookie()
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


def _attempt(config: AuthConfig, username: str, password: str) -> None:
    login = (username or "").strip().lower()
    if not login or not password:
        st.error("Enter your user name and password.")
        return
    user = config.users.get(login)
    engine = data.engine()
    if user is not None and audit.recent_failures(engine, login, LOCKOUT_WINDOW) >= LOCKOUT_FAILURES:
        audit.record(engine, login, "login_failed", role=user.role, status="locked", known_user=True)
        st.error(f"Too many failed sign-ins for this user: try again in {LOCKOUT_WINDOW.seconds // 60} minutes, or "
                 "ask an admin.")
        return
    try:
        accepted = bool(_controller(config).login(login, password))  # bcrypt, by streamlit-authenticator
    except LoginError:
        accepted = False
    if user is None:
        check_password(password, UNKNOWN_USER_HASH)  # the same time as for a known user: no user enumeration
    if accepted and user is not None:
        st.session_state["logout"] = False
        _start_session(user, "password")
        if config.cookie_expiry_days > 0:
            st.session_state["_cookie_pending"] = ("set", *cookie_token(config, user.username), secrets.token_hex(4))
        st.rerun()
    # An unknown name is not stored: it may be a password typed into the wrong field.
    audit.record(engine, login if user else audit.UNKNOWN_USER, "login_failed", role=user.role if user else None,
                 known_user=user is not None)
    st.error("User name or password is incorrect.")


def _start_session(user: User, method: str) -> None:
    audit.record(data.engine(), user.username, "login", role=user.role, method=method)
    st.session_state["user_name"] = user.username
    st.session_state["role"] = user.role
    st.session_state["display_name"] = user.name


def _signed_in_sidebar(config: AuthConfig, user: User) -> None:
    with st.sidebar:
        _pending_cookie()
        st.caption(f"Signed in as **{user.name}** ({user.role})")
        st.button("Sign out", key="sign_out", icon=":material/logout:", on_click=_sign_out)


# --------------------------------------------------------------------------------------- re-login cookie
def _cookie_login(config: AuthConfig) -> User | None:
    """A valid re-login cookie (signed with the cookie key, not expired, of a configured user) signs in."""
    if config.cookie_expiry_days <= 0 or st.session_state.get("logout"):
        return None
    user = cookie_user(config, dict(st.context.cookies).get(config.cookie_name))
    if user is not None:
        _start_session(user, "cookie")
    return user


def _pending_cookie() -> None:
    """Set or delete the re-login cookie in the browser, run after run until the browser confirms it.

    The same arguments every run keep the one component instance alive; it answers True once done. A fresh
    key per action (the nonce) keeps an earlier sign-in's answer from counting for this one.
    """
    pending = st.session_state.get("_cookie_pending")
    if not pending:
        return
    action, token, expires, nonce = pending
    config = auth_config()
    if action == "set":
        done = _cookie_component(method="set", cookie=config.cookie_name, value=token, key=f"login_cookie_set_{nonce}",
                                 options={"path": "/", "expires": expires, "sameSite": "strict"}, default=False)
    else:
        done = _cookie_component(method="delete", cookie=config.cookie_name, key=f"login_cookie_delete_{nonce}",
                                 default=False)
    if done:
        st.session_state.pop("_cookie_pending", None)


def _sign_out() -> None:
    """Button callback: audit; the session is forgotten at the start of the next run (widget state cannot be
    deleted from inside a widget's own callback) and the re-login cookie deleted."""
    user, role = current_user(), current_role()
    try:
        audit.record(data.engine(), user, "logout", role=role)
    except Exception as problem:  # signing out must work even when the log cannot be written
        log.warning("could not record a sign-out in the audit log (%s)", type(problem).__name__)
    st.session_state["_signing_out"] = True


def _end_session() -> None:
    """Forget everything the session knew, including the patient it showed last; end its downloads' grant."""
    grant = st.session_state.get("_download_grant")
    if isinstance(grant, _DownloadGrant):
        grant.live = False
    for key in list(st.session_state.keys()):
        if key not in ("logout", "_cookie_pending"):
            del st.session_state[key]
    for key in LIBRARY_KEYS:
        st.session_state[key] = None


# ------------------------------------------------------------------------------------------------ audit
def audit_event(action: str, *, patient_id: str | None = None, **details: Any) -> int:
    """Record an action of the signed-in user (see dashboard.store.audit.record for what details may say)."""
    return audit.record(data.engine(), current_user(), action, role=current_role(), patient_id=patient_id,
                        **details)


def audit_patient_view(patient_id: str) -> None:
    """Record that the signed-in user opened a patient's record; stop the page if that cannot be recorded.

    Once per patient and session (again after PATIENT_VIEW_REPEAT): a page reruns on every click.
    """
    now = datetime.now(UTC)
    last = st.session_state.get("_audited_view")
    if last is not None and last[0] == patient_id and now - last[1] < PATIENT_VIEW_REPEAT:
        return
    try:
        audit_event("patient_view", patient_id=patient_id)
    except Exception as problem:
        log.warning("could not record a patient view (%s)", type(problem).__name__)
        st.error("This record is not shown: the access could not be written to the audit log. Please try again, "
                 "or tell an admin.")
        st.stop()
    st.session_state["_audited_view"] = (patient_id, now)


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
@dataclass
class _DownloadGrant:
    """What a session's download callables may build for: its signed-in user, until the session ends."""

    user: str
    role: str
    live: bool = True


def _download_grant() -> _DownloadGrant:
    user, role = current_user(), current_role()
    if user is None or role is None:  # only after require_screen: a programming error, not a user's
        st.info(SIGN_IN_FIRST, icon=":material/lock:")
        st.stop()
    grant = st.session_state.get("_download_grant")
    if not isinstance(grant, _DownloadGrant) or not grant.live or (grant.user, grant.role) != (user, role):
        grant = _DownloadGrant(user, role)
        st.session_state["_download_grant"] = grant
    return grant


def _still_configured(grant: _DownloadGrant) -> bool:
    try:
        known = auth_config().users.get(grant.user)
    except AuthConfigError:
        return False
    return known is not None and known.role == grant.role


def identified_download(make: Callable[[], bytes], kind: str, format: str, *,
                        patient_id: str) -> Callable[[], bytes]:
    """The `data=` of a download button for an identified document (name, MRN, dates).

    Streamlit runs a callable `data` only when the button is clicked, for the session that showed the button
    (an unguessable id sent to that browser alone), and serves the result at a short-lived media URL. The
    callable returned here builds nothing unless the session that showed the button has not signed out and its
    user is still in the login configuration with the same role, and it writes the export to the audit log
    first: no entry, no document. Call it only after the screen's `require_screen`.
    """
    grant = _download_grant()
    engine = data.engine()  # here, in the script run: the callable runs outside it

    def build() -> bytes:
        if not grant.live:
            raise PermissionError("the session that showed this download has signed out")
        if not _still_configured(grant):
            raise PermissionError("the user is no longer in the login configuration with this role")
        audit.record(engine, grant.user, "export", role=grant.role, patient_id=patient_id, kind=kind,
                     format=format, identified=True)
        return make()

    return build
