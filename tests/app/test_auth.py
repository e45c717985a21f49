"""Login and roles: the configuration the app refuses outside demo mode, the sign-in form (AppTest), each
role's pages, sign-out, lock-out, and — in a real browser — that the first request after a start cannot
reach a page without signing in."""

from __future__ import annotations

import io
import os
import sys
import time
from datetime import timedelta
from pathlib import Path

import bcrypt
import pandas as pd
import pytest
import yaml

from dashboard.access import (
    DEMO_AUTH_FILE,
    DEMO_PASSWORDS,
    MIN_COOKIE_KEY_BYTES,
    AuthConfigError,
    check_password,
    hash_password,
    load_auth_config,
)
from dashboard.cli import main as cli
from tests.app_fixtures import CLINIC_USERS, ROOT, app_store, entries, run_app, sign_in, write_clinic_config
from tests.live_server import CHROMIUM, app_server, require_chromium

FIXTURES = (app_store,)  # imported for pytest, which finds fixtures by name


# ---------------------------------------------------------------------------------------- configuration
def test_demo_configuration_has_one_user_per_role_with_bcrypt_hashes() -> None:
    config = load_auth_config(DEMO_AUTH_FILE, demo=True)
    assert {u.username: u.role for u in config.users.values()} == {
        "surgeon": "surgeon", "conference": "conference", "admin": "admin"}
    for user in config.users.values():
        assert user.password_hash.startswith("$2b$")
        assert check_password(DEMO_PASSWORDS[user.username], user.password_hash)
    assert len(config.cookie_key.encode()) >= MIN_COOKIE_KEY_BYTES


def test_outside_demo_mode_no_file_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPINE_DASHBOARD_AUTH_FILE", raising=False)
    with pytest.raises(AuthConfigError, match="set SPINE_DASHBOARD_AUTH_FILE"):
        load_auth_config(demo=False)


def _clinic(tmp_path: Path, edit) -> Path:  # noqa: ANN001 - a function that edits the YAML mapping
    path = write_clinic_config(tmp_path / "auth.yaml", users={"dr.a": ("surgeon", "Dr-A-password-1")})
    raw = yaml.safe_load(path.read_text())
    edit(raw)
    path.write_text(yaml.safe_dump(raw))
    return path


DEMO = yaml.safe_load(DEMO_AUTH_FILE.read_text())
BAD_CONFIGS = {
    "short cookie key": (lambda c: c["cookie"].update(key="x" * 31), "cookie.key is too short"),
    "no cookie key": (lambda c: c["cookie"].pop("key"), "cookie.key is missing"),
    "example cookie key": (lambda c: c["cookie"].update(key="some_signature_key"), "cookie.key is"),
    "demo cookie key": (lambda c: c["cookie"].update(key=DEMO["cookie"]["key"]), "cookie.key is the demo key"),
    "plain-text password": (lambda c: c["credentials"]["usernames"]["dr.a"].update(password="Dr-A-password-1"),
                            "is not a bcrypt hash"),
    "demo hash": (lambda c: c["credentials"]["usernames"]["dr.a"].update(
        password=DEMO["credentials"]["usernames"]["surgeon"]["password"]), "has a demo password"),
    "demo user and password": (lambda c: c["credentials"]["usernames"].update(
        admin={"name": "A", "password": hash_password("admin-demo", rounds=4), "roles": ["admin"]}),
        "user 'admin' has a demo password"),
    "unknown role": (lambda c: c["credentials"]["usernames"]["dr.a"].update(roles=["nurse"]),
                     "exactly one role of surgeon, conference, admin"),
    "two roles": (lambda c: c["credentials"]["usernames"]["dr.a"].update(roles=["surgeon", "admin"]),
                  "exactly one role"),
    "no users": (lambda c: c["credentials"].update(usernames={}), "lists no user"),
    "long cookie life": (lambda c: c["cookie"].update(expiry_days=365), "expiry_days must be between"),
}


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_outside_demo_mode_default_or_weak_secrets_are_refused(tmp_path: Path, case: str) -> None:
    edit, message = BAD_CONFIGS[case]
    with pytest.raises(AuthConfigError, match=message):
        load_auth_config(_clinic(tmp_path, edit), demo=False)


def test_outside_demo_mode_the_demo_file_itself_is_refused() -> None:
    with pytest.raises(AuthConfigError, match="it is the demo file"):
        load_auth_config(DEMO_AUTH_FILE, demo=False)


def test_unreadable_or_missing_files_are_refused_with_the_path(tmp_path: Path) -> None:
    with pytest.raises(AuthConfigError, match="does not exist"):
        load_auth_config(tmp_path / "nope.yaml", demo=False)
    broken = tmp_path / "broken.yaml"
    broken.write_text("cookie: [unclosed\n")
    with pytest.raises(AuthConfigError, match="cannot be read"):
        load_auth_config(broken, demo=False)


def test_a_clinic_configuration_loads_outside_demo_mode(tmp_path: Path) -> None:
    config = load_auth_config(write_clinic_config(tmp_path / "auth.yaml"), demo=False)
    assert {u.username: u.role for u in config.users.values()} == {n: r for n, (r, _) in CLINIC_USERS.items()}
    assert not config.demo


def test_check_auth_and_hash_password_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert cli(["check-auth", str(DEMO_AUTH_FILE)]) == 2
    assert "it is the demo file" in capsys.readouterr().err
    assert cli(["check-auth", str(DEMO_AUTH_FILE), "--demo"]) == 0
    assert cli(["check-auth", str(write_clinic_config(tmp_path / "auth.yaml"))]) == 0
    assert "ok:" in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO("Sesame-Open-7\n"))
    assert cli(["hash-password"]) == 0
    hashed = capsys.readouterr().out.strip()
    assert bcrypt.checkpw(b"Sesame-Open-7", hashed.encode())
    with pytest.raises(ValueError, match="72 bytes"):
        hash_password("x" * 73)


def test_re_login_token_is_random_and_only_its_hmac_is_stored(app_store: str) -> None:
    from dashboard.store import get_engine, users

    engine = get_engine(app_store)
    users.sync_file_users(engine, {"dr.tok": ("Dr Tok", "surgeon", hash_password("Tok-password-12", rounds=4))})
    key = "k" + "x" * 40
    token, sid = users.start_session(engine, "dr.tok", "password", key, timedelta(hours=1))
    assert len(token) >= 43 and token not in sid and sid == users.session_id(token, key)
    assert users.live_session(engine, sid).username == "dr.tok"
    assert users.live_session(engine, users.session_id(token, "another-key-" + "y" * 30)) is None  # other key
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert users.live_session(engine, users.session_id(tampered, key)) is None


# ---------------------------------------------------------------------------------------------- sign-in
def _no_patient_data(at) -> None:  # noqa: ANN001 - AppTest
    assert not at.dataframe and not at.metric and not at.get("plotly_chart")
    assert [t.value for t in at.title] == ["Spine Recovery Dashboard"]


def test_nothing_but_the_sign_in_form_before_login(app_store: str) -> None:
    at = run_app()
    _no_patient_data(at)
    assert [t.label for t in at.text_input] == ["User name", "Password"]
    assert "**surgeon** / `surgeon-demo`" in at.info[0].value  # demo mode shows the demo users
    with pytest.raises(ValueError, match="Could not find a navigation page"):
        at.switch_page("screens/patient.py")


def test_wrong_passwords_are_refused_and_audited_without_the_typed_name(app_store: str) -> None:
    at = sign_in(run_app(), "surgeon", "not-the-password")
    assert [e.value for e in at.error] == ["User name or password is incorrect."]
    _no_patient_data(at)
    assert "role" not in at.session_state
    sign_in(at, "Ann Example-typed-here", "whatever")
    failed = entries(app_store, actions=["login_failed"])[:2]
    assert [(e["user_name"], e["details"]) for e in failed] == [
        ("unknown", {"known_user": False}), ("surgeon", {"known_user": True})]


def test_signing_in_with_the_form_opens_the_roles_pages_and_is_audited(app_store: str) -> None:
    at = sign_in(run_app(), " Surgeon ", "surgeon-demo")  # user names are not case-sensitive
    assert at.session_state["user_name"] == "surgeon" and at.session_state["role"] == "surgeon"
    assert at.title[0].value == "Clinic follow-up"
    assert "Signed in as **Demo Surgeon** (surgeon)" in [c.value for c in at.sidebar.caption]
    login = entries(app_store, actions=["login"])[0]
    assert (login["user_name"], login["role"], login["details"]) == ("surgeon", "surgeon", {"method": "password"})


ROLE_PAGES = {
    "surgeon": ({"clinic", "patient", "add_exam", "conference", "import_records", "reference", "outcomes"},
                {"audit", "users"}),
    "conference": ({"conference", "reference"},
                   {"clinic", "patient", "add_exam", "import_records", "audit", "users", "outcomes"}),
    "admin": ({"import_records", "reference", "audit", "users", "outcomes"},
              {"clinic", "patient", "add_exam", "conference"}),
}


@pytest.mark.parametrize("role", list(ROLE_PAGES))
def test_each_role_sees_only_its_pages(app_store: str, role: str) -> None:
    allowed, forbidden = ROLE_PAGES[role]
    at = run_app(user=role, role=role)
    registered = {Path(str(info["script_path"])).stem for info in at._registered_pages.values()}
    assert registered == allowed
    for page in forbidden:
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            at.switch_page(f"screens/{page}.py")


def test_audit_page_refuses_other_roles_even_when_opened_directly(app_store: str) -> None:
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "dashboard" / "app" / "screens" / "audit.py"), default_timeout=60)
    at.session_state["user_name"], at.session_state["role"] = "surgeon", "surgeon"
    at.run()
    assert [e.value for e in at.error] == ["This page is not available in your role."]
    assert not at.dataframe


def test_a_session_whose_user_left_the_configuration_must_sign_in_again(app_store: str) -> None:
    at = run_app(user="ghost", role="surgeon")
    _no_patient_data(at)
    assert "user_name" not in at.session_state
    at = run_app(user="conference", role="surgeon")  # a role the configuration does not give
    _no_patient_data(at)


def test_signing_out_is_audited_and_shows_the_form_again(app_store: str) -> None:
    at = run_app(user="surgeon", role="surgeon", patient_id="P00001")
    at.sidebar.button(key="sign_out").click().run()
    _no_patient_data(at)
    assert "user_name" not in at.session_state and "patient_id" not in at.session_state
    assert at.session_state["logout"] is True  # no cookie re-login in this session
    logout = entries(app_store, actions=["logout"])[0]
    assert (logout["user_name"], logout["role"]) == ("surgeon", "surgeon")


# ------------------------------------------------------------------------------------------ production
@pytest.fixture
def production(app_store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPINE_DASHBOARD_MODE", "production")
    path = write_clinic_config(tmp_path / "auth.yaml")
    monkeypatch.setenv("SPINE_DASHBOARD_AUTH_FILE", str(path))
    return path


@pytest.mark.parametrize("setup, message", [
    ("missing", "set SPINE_DASHBOARD_AUTH_FILE"),
    ("demo file", "it is the demo file"),
    ("short key", "cookie.key is too short"),
])
def test_outside_demo_mode_the_app_refuses_to_start(production: Path, monkeypatch: pytest.MonkeyPatch,
                                                    setup: str, message: str) -> None:
    if setup == "missing":
        monkeypatch.delenv("SPINE_DASHBOARD_AUTH_FILE")
    elif setup == "demo file":
        monkeypatch.setenv("SPINE_DASHBOARD_AUTH_FILE", str(DEMO_AUTH_FILE))
    else:
        write_clinic_config(production, key="too-short-key")
    at = run_app()
    assert "The dashboard cannot start" in at.error[0].value and message in at.error[0].value
    assert not at.text_input  # no sign-in form either
    _no_patient_data(at)


def test_outside_demo_mode_clinic_users_sign_in_and_demo_users_cannot(production: Path, app_store: str) -> None:
    at = run_app()
    assert not at.info  # the demo users are not advertised
    sign_in(at, "surgeon", "surgeon-demo")
    assert [e.value for e in at.error] == ["User name or password is incorrect."]
    sign_in(at, "conf.b", CLINIC_USERS["conf.b"][1])
    assert at.session_state["role"] == "conference"
    assert at.title[0].value == "Case conference"


def test_repeated_failures_lock_the_user_out_for_a_while(production: Path, app_store: str) -> None:
    at = run_app()
    for _ in range(5):
        sign_in(at, "dr.lock", "wrong")
    sign_in(at, "dr.lock", CLINIC_USERS["dr.lock"][1])  # right password, but locked
    assert "Too many failed sign-ins" in at.error[0].value
    assert "role" not in at.session_state
    failed = entries(app_store, user="dr.lock", actions=["login_failed"])
    assert len(failed) == 6 and failed[0]["details"] == {"status": "locked", "known_user": True}


# --------------------------------------------------------------------------------------- real browser
def _sign_in_and_wait_for_the_cookie(page, context) -> None:  # noqa: ANN001 - Playwright objects
    page.get_by_role("textbox", name="User name").fill("surgeon")
    page.get_by_role("textbox", name="Password").fill("surgeon-demo")
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for(timeout=90_000)
    deadline = time.monotonic() + 90  # the page posts the sign-in's one-time code; the server sets the cookie
    while "spine_dashboard_demo" not in {c["name"] for c in context.cookies()}:
        assert time.monotonic() < deadline, "the session cookie was not set"
        page.wait_for_timeout(200)


@pytest.mark.browser
def test_first_request_after_start_cannot_open_a_page_without_signing_in(tmp_path: Path) -> None:
    """A fresh server's first request for a screen shows the sign-in form (Streamlit's legacy pages/ mode once
    ran the page file directly); then the session cookie (an opaque token, HttpOnly: not in document.cookie; a
    reload resumes the session), sign-out ending every tab and the cookie (a copy saved before signs nobody in;
    a reload shows the form), and signing in again. Several screens at
    once after a start: tests/browser/test_browser.py."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    env = {**os.environ, "SPINE_DASHBOARD_DB_URL": f"sqlite:///{tmp_path / 'browser.db'}",
           "SPINE_DASHBOARD_MODE": "demo"}
    env.pop("SPINE_DASHBOARD_AUTH_FILE", None)
    patient = pd.read_csv(ROOT / "data" / "demo" / "scenarios.csv", dtype=str)["patient_id"].iloc[0]
    # A fresh server (the shared start: its output to a log, not an undrained pipe; a failed start fails here).
    with app_server(env, tmp_path / "server.log") as url:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            page = context.new_page()
            page.goto(f"{url}/patient?patient={patient}", timeout=90_000)  # the server's very first request
            page.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
            # Positive marker that the run is over (no fixed wait): whatever else it would show is shown by now.
            page.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=90_000)
            assert page.get_by_text("Imaging checklist").count() == 0
            assert page.locator(".js-plotly-plot").count() == 0
            assert page.get_by_role("dialog").count() == 0  # no "Page not found" over the form
            _sign_in_and_wait_for_the_cookie(page, context)
            page.get_by_text(f"Id {patient}", exact=True).wait_for(timeout=90_000)  # the screen the link asked for
            # A new tab is a new session: the signed re-login cookie signs it in without the form.
            second = context.new_page()
            second.goto(f"{url}/patient?patient={patient}", timeout=90_000)
            try:
                second.get_by_text("Imaging checklist").wait_for(timeout=90_000)  # the page the link asked for
            except Exception:
                second.screenshot(path=str(tmp_path / "second.png"))
                raise
            assert second.get_by_role("button", name="Sign in").count() == 0
            saved = next(c for c in context.cookies() if c["name"] == "spine_dashboard_demo")
            assert not saved["value"].count(".") and len(saved["value"]) >= 43  # an opaque token, not a JWT
            assert saved["httpOnly"] and saved["sameSite"] == "Strict"  # set by the server's /session/start
            assert not saved["secure"]  # plain http here: Secure over HTTPS (or SPINE_DASHBOARD_SECURE_COOKIE=1)
            for tab in (page, second):  # page scripts cannot read it
                assert "spine_dashboard_demo" not in tab.evaluate("document.cookie")
                assert saved["value"] not in tab.content()
            page.reload(timeout=90_000)  # a reload is a new connection: the cookie resumes the live session
            page.get_by_text(f"Id {patient}", exact=True).wait_for(timeout=90_000)
            assert page.get_by_role("button", name="Sign in").count() == 0
            # Signing out ends every session of the user: this tab, the first tab at its next run, and the cookie.
            second.get_by_role("button", name="Sign out").click()
            second.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
            page.locator("body").press("r")  # the first tab's next run (Streamlit's rerun key)
            page.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
            assert page.get_by_text("Imaging checklist").count() == 0
            # A copy of the cookie taken before the sign-out (a stolen or saved one) signs nobody in.
            thief = browser.new_context()
            thief.add_cookies([{k: saved[k] for k in ("name", "value", "domain", "path")}])
            stolen = thief.new_page()
            stolen.goto(f"{url}/patient?patient={patient}", timeout=90_000)
            stolen.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
            stolen.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=90_000)
            assert stolen.get_by_text("Imaging checklist").count() == 0
            thief.close()
            deadline = time.monotonic() + 90
            while "spine_dashboard_demo" in {c["name"] for c in context.cookies()}:
                assert time.monotonic() < deadline, "signing out did not delete the re-login cookie"
                second.wait_for_timeout(200)
            third = context.new_page()
            third.goto(f"{url}/patient?patient={patient}", timeout=90_000)
            third.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
            second.reload(timeout=90_000)  # signed out: a reload shows the form
            second.get_by_role("button", name="Sign in").wait_for(timeout=90_000)
            second.locator('[data-testid="stApp"][data-test-script-state="notRunning"]').wait_for(timeout=90_000)
            assert second.get_by_text("Signed in as").count() == 0
            # Signing in again in the same tab sets a new cookie (not mistaken for the first one's answer).
            _sign_in_and_wait_for_the_cookie(second, context)
            browser.close()
