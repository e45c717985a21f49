"""Sessions, lock-out and user administration (issue 22 points 4 and 5, issue 21 "User administration").

Store level on SQLite and PostgreSQL: parallel failed sign-ins never get more than the allowed password checks,
unknown and known user names get the same answers and both lock, the lock ends, an admin unlocks, two admins'
edits (one wins, the other is told to reload), the audit CHECK and append-only triggers after migration 0004.
App level (AppTest): sign-out, a password reset and deactivation end every session of the user (an open tab at
its next run, a saved re-login token at once); the Users screen adds, sets a role, resets a password,
deactivates, unlocks and shows last sign-ins, each audited. Cookie keys and known passwords: `check-auth`.
"""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from sqlalchemy import text
from streamlit.testing.v1 import AppTest

from dashboard.access import AuthConfig, hash_password, load_auth_config
from dashboard.app import auth
from dashboard.cli import main as cli
from dashboard.store import audit, get_engine, users
from tests.app_fixtures import APP, app_store, entries, run_app, sign_in, write_clinic_config
from tests.store_fixtures import store_url

FIXTURES = (app_store, store_url)  # imported for pytest, which finds fixtures by name
PASSWORDS = {"dr.a": "Dr-A-password-1", "admin.c": "Admin-C-password-3"}


@pytest.fixture
def clinic(tmp_path: Path, store_url: str) -> tuple[AuthConfig, object]:
    """A clinic's login configuration and a store holding its users."""
    config = load_auth_config(write_clinic_config(tmp_path / "auth.yaml", users={
        "dr.a": ("surgeon", PASSWORDS["dr.a"]), "admin.c": ("admin", PASSWORDS["admin.c"])}), demo=False)
    engine = get_engine(store_url)
    users.sync_file_users(engine, {u.username: (u.name, u.role, u.password_hash) for u in config.users.values()})
    return config, engine


def _parallel(count: int, attempt) -> list:  # noqa: ANN001 - a function of the thread's number
    results: list = [None] * count
    start = threading.Barrier(count)

    def run(i: int) -> None:
        start.wait()
        results[i] = attempt(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


# ------------------------------------------------------------------------------------------- lock-out
def test_parallel_attempts_never_get_more_than_the_allowed_checks(clinic) -> None:  # noqa: ANN001
    config, engine = clinic
    subject = users.user_subject("dr.a", config.cookie_key)
    allowed = _parallel(16, lambda _: users.reserve_attempt(engine, {subject: 5}, timedelta(minutes=15)))
    assert allowed.count(True) == 5
    # Whole sign-ins in parallel, wrong passwords: only 5 are checked, the rest are refused as locked.
    other = users.user_subject("admin.c", config.cookie_key)
    answers = _parallel(12, lambda _: auth.check_sign_in(engine, config, "admin.c", "wrong-password"))
    assert answers.count(auth.WRONG_PASSWORD) == 5 and answers.count(auth.LOCKED) == 7
    assert users.is_locked(engine, other)
    # The right password is refused too while locked.
    assert auth.check_sign_in(engine, config, "admin.c", PASSWORDS["admin.c"]) == auth.LOCKED


def test_per_client_limit_counts_every_user_name_from_one_address(clinic) -> None:  # noqa: ANN001
    config, engine = clinic
    answers = [auth.check_sign_in(engine, config, f"name{i}", "wrong", client="10.0.0.9")
               for i in range(auth.CLIENT_LOCKOUT_FAILURES + 1)]
    assert answers[:-1] == [auth.WRONG_PASSWORD] * auth.CLIENT_LOCKOUT_FAILURES and answers[-1] == auth.LOCKED
    assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"], client="10.0.0.9") == auth.LOCKED
    assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"], client="10.0.0.10").username == "dr.a"
    for _ in range(auth.CLIENT_LOCKOUT_FAILURES + 2):  # successful sign-ins do not add up
        assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"], client="10.0.0.11").username == "dr.a"


def test_unknown_and_known_user_names_get_the_same_answers_and_both_lock(clinic) -> None:  # noqa: ANN001
    config, engine = clinic
    known = [auth.check_sign_in(engine, config, "dr.a", "wrong") for _ in range(7)]
    unknown = [auth.check_sign_in(engine, config, "nobody", "wrong") for _ in range(7)]
    assert known == unknown == [auth.WRONG_PASSWORD] * 5 + [auth.LOCKED] * 2
    failed = audit.audit_log(engine, actions=["login_failed"])
    assert "nobody" not in set(failed["user_name"])  # an unknown name is never stored (it may be a password)
    with engine.connect() as conn:
        subjects = set(conn.execute(text("SELECT subject FROM login_throttle")).scalars())
    assert all("nobody" not in s and "dr.a" not in s for s in subjects)  # names are kept as HMACs only


def test_the_lock_ends_after_the_window_even_with_one_try_every_15_minutes(clinic, monkeypatch) -> None:  # noqa: ANN001
    config, engine = clinic
    clock = [users.now()]
    monkeypatch.setattr(users, "now", lambda: clock[0])
    for _ in range(5):
        assert auth.check_sign_in(engine, config, "dr.a", "wrong") == auth.WRONG_PASSWORD
    for _ in range(4):  # one try every 15 minutes, each refused during the lock: the lock does not grow
        clock[0] += timedelta(minutes=14)
        assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"]) == auth.LOCKED
        clock[0] += timedelta(minutes=1, seconds=1)
        answer = auth.check_sign_in(engine, config, "dr.a", "wrong")
        assert answer == auth.WRONG_PASSWORD  # the lock ended: this try is checked again
        for _ in range(4):  # and fills the new window up to the limit
            auth.check_sign_in(engine, config, "dr.a", "wrong")
    clock[0] += timedelta(minutes=15, seconds=1)
    assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"]).username == "dr.a"


def test_an_admin_unlocks_a_user_and_it_is_audited(clinic) -> None:  # noqa: ANN001
    config, engine = clinic
    for _ in range(6):
        auth.check_sign_in(engine, config, "dr.a", "wrong")
    assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"]) == auth.LOCKED
    users.unlock(engine, "admin.c", "admin", "dr.a", config.cookie_key)
    assert auth.check_sign_in(engine, config, "dr.a", PASSWORDS["dr.a"]).username == "dr.a"
    entry = audit.audit_log(engine, actions=["user_admin"]).iloc[0]
    assert (entry["user_name"], entry["details"]) == ("admin.c", {"kind": "unlock", "target": "dr.a"})


# ------------------------------------------------------------------------------------- two admins, store
def test_two_admins_editing_one_user_one_wins_the_other_must_reload(clinic) -> None:  # noqa: ANN001
    _, engine = clinic
    version = users.account(engine, "dr.a").version  # both admins' screens show this version
    outcomes = _parallel(2, lambda i: _edit(engine, version, ("conference", "admin")[i]))
    assert sorted(type(o).__name__ for o in outcomes) == ["Account", "StaleEdit"]
    winner = next(o for o in outcomes if isinstance(o, users.Account))
    assert users.account(engine, "dr.a").role == winner.role and winner.version == version + 1
    assert "reload" in str(next(o for o in outcomes if isinstance(o, users.StaleEdit)))
    assert len(audit.audit_log(engine, actions=["user_admin"], user="admin.c")) == 1  # only the winner's change


def _edit(engine, version: int, role: str):  # noqa: ANN001, ANN202
    try:
        return users.change_user(engine, "admin.c", "admin", "dr.a", version, role=role)
    except users.StaleEdit as stale:
        return stale


def test_after_0004_the_audit_log_takes_user_admin_and_stays_append_only(clinic) -> None:  # noqa: ANN001
    _, engine = clinic
    entry = audit.record(engine, "admin.c", "user_admin", kind="role", target="dr.a", new_role="admin")
    with engine.connect() as conn:
        for statement in (f"UPDATE audit_log SET user_name = 'x' WHERE id = {entry}",
                          f"DELETE FROM audit_log WHERE id = {entry}"):
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text(statement))
            conn.rollback()
        with pytest.raises(Exception, match="action"):
            conn.execute(text("INSERT INTO audit_log (at, user_name, action) VALUES (CURRENT_TIMESTAMP, 'x', 'y')"))
        conn.rollback()
        if engine.dialect.name == "sqlite":
            with pytest.raises(Exception, match="append-only"):
                conn.execute(text(f"INSERT OR REPLACE INTO audit_log (id, at, user_name, action) "
                                  f"VALUES ({entry}, CURRENT_TIMESTAMP, 'x', 'login')"))


def test_0004_keeps_every_audit_row_of_an_older_store(tmp_path: Path) -> None:
    from alembic import command

    from dashboard.store.db import alembic_config

    engine = get_engine(f"sqlite:///{tmp_path / 'old.db'}", migrate=False)
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0003")
    ids = [audit.record(engine, "dr.a", "login", role="surgeon", method="password") for _ in range(3)]
    engine = get_engine(f"sqlite:///{tmp_path / 'old.db'}")
    log = audit.audit_log(engine)
    assert sorted(log["id"]) == ids and set(log["action"]) == {"login"}


# ---------------------------------------------------------------------------------------- check-auth
WEAK_KEYS = {
    "a" * 32: 'cookie.key repeats a pattern of 1 character(s): make one with python -c "import secrets; '
              'print(secrets.token_urlsafe(48))"',
    "changeme-" * 4: 'cookie.key repeats a pattern of 9 character(s): make one with python -c "import secrets; '
                     'print(secrets.token_urlsafe(48))"',
    "password" * 4 + "1": 'cookie.key has only 8 distinct characters: make one with python -c "import secrets; '
                          'print(secrets.token_urlsafe(48))"',
    "correct-horse-battery-staple-and-more": 'cookie.key is made of lower-case words, not a random secret: make one '
                                             'with python -c "import secrets; print(secrets.token_urlsafe(48))"',
    "A" * 30 + "bcdefghijklm": 'cookie.key has an estimated entropy of 79 bits, under 128: make one with python -c '
                               '"import secrets; print(secrets.token_urlsafe(48))"',
}


@pytest.mark.parametrize("key", list(WEAK_KEYS), ids=["32 a", "changeme", "word repeated", "words", "low entropy"])
def test_check_auth_refuses_low_entropy_cookie_keys(tmp_path: Path, key: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = write_clinic_config(tmp_path / "auth.yaml", key=key)
    assert cli(["check-auth", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.strip() == f"the login configuration {path} cannot be used: {WEAK_KEYS[key]}"


def test_check_auth_takes_random_keys(tmp_path: Path) -> None:
    import secrets

    for key in (secrets.token_urlsafe(32), secrets.token_urlsafe(48), secrets.token_hex(32)):
        assert cli(["check-auth", str(write_clinic_config(tmp_path / "auth.yaml", key=key))]) == 0


@pytest.mark.parametrize("password", ["surgeon-demo", "conference-demo", "admin-demo"])
def test_a_demo_password_is_refused_under_any_user_name(tmp_path: Path, password: str,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = write_clinic_config(tmp_path / "auth.yaml", users={"dr.x": ("surgeon", password)})
    assert cli(["check-auth", str(path)]) == 2
    assert capsys.readouterr().err.strip() == (f"the login configuration {path} cannot be used: user 'dr.x' has a "
                                               "demo password: set a new one")
    assert cli(["check-auth", str(path), "--demo"]) == 0  # demo mode only


# --------------------------------------------------------------------------------- sessions (AppTest)
def _form_sign_in(user: str, password: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120).run()
    sign_in(at, user, password)
    assert at.session_state["user_name"] == user, [e.value for e in at.error]
    return at


def _signed_out(at: AppTest) -> bool:
    at.run()
    return "user_name" not in at.session_state and any(b.label == "Sign in" for b in at.button)


def test_sign_out_ends_every_session_and_token_of_the_user(app_store: str) -> None:
    first, second = _form_sign_in("surgeon", "surgeon-demo"), _form_sign_in("surgeon", "surgeon-demo")
    token = first.session_state["_cookie_pending"][1]  # what the browser's re-login cookie would hold
    key = auth.auth_config().cookie_key
    engine = get_engine(app_store)
    assert users.live_session(engine, users.session_id(token, key)).username == "surgeon"
    first.sidebar.button(key="sign_out").click().run()
    assert _signed_out(first)
    assert users.live_session(engine, users.session_id(token, key)) is None  # the saved cookie signs nobody in
    assert _signed_out(second)  # the other tab, at its next run
    logout = entries(app_store, actions=["logout"])[0]
    assert (logout["user_name"], logout["details"]) == ("surgeon", {"scope": "user"})


def test_a_password_reset_ends_other_sessions_and_the_old_password(app_store: str) -> None:
    tab = _form_sign_in("conference", "conference-demo")
    engine = get_engine(app_store)
    account = users.account(engine, "conference")
    users.change_user(engine, "admin", "admin", "conference", account.version,
                      password_hash=hash_password("Conference-new-pass-1", rounds=4))
    assert _signed_out(tab)
    at = AppTest.from_file(APP, default_timeout=120).run()
    sign_in(at, "conference", "conference-demo")
    assert [e.value for e in at.error] == [auth.WRONG_PASSWORD]
    assert _form_sign_in("conference", "Conference-new-pass-1").session_state["role"] == "conference"


def test_a_deactivated_user_cannot_sign_in_and_an_open_session_ends(app_store: str) -> None:
    tab = run_app(user="surgeon", role="surgeon")
    engine = get_engine(app_store)
    account = users.account(engine, "surgeon")
    users.change_user(engine, "admin", "admin", "surgeon", account.version, active=False)
    assert _signed_out(tab)
    at = AppTest.from_file(APP, default_timeout=120).run()
    sign_in(at, "surgeon", "surgeon-demo")
    assert [e.value for e in at.error] == [auth.WRONG_PASSWORD]  # the same answer as for any wrong password
    assert entries(app_store, actions=["login_failed"])[0]["details"]["status"] == "inactive"
    users.change_user(engine, "admin", "admin", "surgeon", account.version + 1, active=True)


# ------------------------------------------------------------------------------ the Users screen (AppTest)
def _users_screen() -> AppTest:
    return run_app("screens/users.py", user="admin", role="admin")


def _click(at: AppTest, label: str) -> AppTest:
    next(b for b in at.button if b.label == label).click().run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest) -> dict[str, dict]:
    frame = at.dataframe[0].value
    return {row["User"]: row for row in frame.to_dict("records")}


def _kinds(url: str, target: str) -> list[str]:
    return [e["details"]["kind"] for e in entries(url, actions=["user_admin"]) if e["details"].get("target") == target]


def test_the_users_screen_adds_changes_deactivates_and_audits(app_store: str) -> None:
    at = _users_screen()
    assert at.title[0].value == "Users" and _table(at)["surgeon"]["Role"] == "surgeon"
    at.text_input(key="users_new_login").input("Dr.New")
    at.text_input(key="users_new_name").input("Dr New")
    at.selectbox(key="users_new_role").select("conference")
    at.text_input(key="users_new_password").input("admin-demo")  # a known password: refused
    _click(at, "Add user")
    assert [e.value for e in at.error] == ["this password is publicly known or is the user name: choose another"]
    at.text_input(key="users_new_login").input("Dr.New")
    at.text_input(key="users_new_name").input("Dr New")
    at.selectbox(key="users_new_role").select("conference")
    at.text_input(key="users_new_password").input("New-user-pass-1")
    _click(at, "Add user")
    assert at.success[0].value == "User dr.new added as conference."
    assert _table(at)["dr.new"]["Last sign-in"] == "never"

    new = _form_sign_in("dr.new", "New-user-pass-1")  # a sign-in: shown on the screen
    assert new.session_state["role"] == "conference"
    at.run()
    assert _table(at)["dr.new"]["Last sign-in"] != "never"

    at.selectbox(key="users_pick").select("dr.new").run()
    at.selectbox(key="users_role_dr.new").select("surgeon")
    _click(at, "Save changes")
    assert _table(at)["dr.new"]["Role"] == "surgeon"
    assert _signed_out(new)  # a new role ends the user's sessions
    at.text_input(key="users_password_dr.new").input("Reset-pass-word-2")
    _click(at, "Save changes")
    assert _form_sign_in("dr.new", "Reset-pass-word-2").session_state["role"] == "surgeon"
    at.checkbox(key="users_active_dr.new").uncheck()
    _click(at, "Save changes")
    assert not _table(at)["dr.new"]["Active"]
    _click(at, "Unlock sign-in")
    assert at.success[0].value == "Sign-in for dr.new unlocked."
    assert _kinds(app_store, "dr.new") == ["unlock", "deactivate", "reset_password", "role", "add"]
    admin = [e for e in entries(app_store, actions=["user_admin"]) if e["details"].get("target") == "dr.new"]
    assert {(e["user_name"], e["role"]) for e in admin} == {("admin", "admin")}


def test_an_admin_cannot_demote_or_deactivate_themself(app_store: str) -> None:
    at = _users_screen()
    at.selectbox(key="users_pick").select("admin").run()
    at.checkbox(key="users_active_admin").uncheck()
    _click(at, "Save changes")
    assert [e.value for e in at.error] == ["You cannot change your own role or deactivate yourself: ask another admin."]
    assert users.account(get_engine(app_store), "admin").active


def test_two_admins_on_the_users_screen_the_second_is_told_to_reload(app_store: str) -> None:
    first, second = _users_screen(), _users_screen()
    for at in (first, second):
        at.selectbox(key="users_pick").select("conference").run()
    first.selectbox(key="users_role_conference").select("admin")
    _click(first, "Save changes")
    second.selectbox(key="users_role_conference").select("surgeon")
    _click(second, "Save changes")
    assert [e.value for e in second.error] == [
        "Another admin changed this user meanwhile: nothing was saved. Reload and try again."]
    assert users.account(get_engine(app_store), "conference").role == "admin"
    _click(second, "Reload")
    assert not second.warning
    second.selectbox(key="users_role_conference").select("conference")
    _click(second, "Save changes")
    assert users.account(get_engine(app_store), "conference").role == "conference"


def test_a_file_user_changed_in_the_file_takes_the_files_values(tmp_path: Path, store_url: str) -> None:
    engine = get_engine(store_url)
    path = write_clinic_config(tmp_path / "auth.yaml", users={"dr.a": ("surgeon", "Dr-A-password-1")})
    raw = yaml.safe_load(path.read_text())
    entry = raw["credentials"]["usernames"]["dr.a"]
    users.sync_file_users(engine, {"dr.a": ("Dr A", "surgeon", entry["password"])})
    account = users.account(engine, "dr.a")
    users.change_user(engine, "admin.c", "admin", "dr.a", account.version, role="conference")
    users.sync_file_users(engine, {"dr.a": ("Dr A", "surgeon", entry["password"])})  # file unchanged
    assert users.account(engine, "dr.a").role == "conference"  # the screen's change is kept
    users.sync_file_users(engine, {"dr.a": ("Dr A", "admin", entry["password"])})  # the operator edits the file
    assert users.account(engine, "dr.a").role == "admin"
    users.sync_file_users(engine, {})  # removed from the file
    assert not users.account(engine, "dr.a").active


def test_a_restore_ends_every_session(tmp_path: Path, store_url: str) -> None:
    from dashboard.store.backup import backup, restore

    engine = get_engine(store_url)
    users.sync_file_users(engine, {"dr.a": ("Dr A", "surgeon", hash_password(PASSWORDS["dr.a"], rounds=4))})
    _, sid = users.start_session(engine, "dr.a", "password", "k" * 40, timedelta(hours=1))
    saved = backup(tmp_path / "before.bak", store_url).path
    users.revoke_sessions(engine, "dr.a")  # signed out after the backup
    restore(saved, store_url, safety_dir=tmp_path / "safety")
    assert users.live_session(get_engine(store_url), sid) is None  # the restored session stays ended


def test_two_admins_adding_the_same_name_at_once_one_is_told_it_exists(clinic) -> None:  # noqa: ANN001
    _, engine = clinic
    hashed = hash_password("Same-name-pass-1", rounds=4)

    def add(_: int):  # noqa: ANN202
        try:
            return users.add_user(engine, "admin.c", "admin", "dr.same", "Dr Same", "surgeon", hashed)
        except users.AccountError as error:
            return error

    outcomes = _parallel(2, add)
    assert sorted(type(o).__name__ for o in outcomes) == ["Account", "AccountError"]
    assert "exists already" in str(next(o for o in outcomes if isinstance(o, users.AccountError)))
