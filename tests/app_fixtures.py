"""Fixtures for AppTest of the signed-in app: one demo store per test module, login configurations, sign-in."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from dashboard.access import hash_password
from dashboard.store import get_engine
from dashboard.store.audit import audit_log

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app" / "main.py")
#: Users of the production-like configuration the tests write (fast bcrypt: rounds=4).
CLINIC_USERS = {"dr.a": ("surgeon", "Dr-A-password-1"), "conf.b": ("conference", "Conf-B-password-2"),
                "admin.c": ("admin", "Admin-C-password-3"), "dr.lock": ("surgeon", "Lock-password-4")}


@pytest.fixture(scope="module")
def app_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A SQLite store for the module, demo mode; the app's cached engine and login configuration are reset."""
    url = f"sqlite:///{tmp_path_factory.mktemp('app') / 'app.db'}"
    patcher = pytest.MonkeyPatch()
    patcher.setenv("SPINE_DASHBOARD_DB_URL", url)
    patcher.setenv("SPINE_DASHBOARD_MODE", "demo")
    patcher.delenv("SPINE_DASHBOARD_AUTH_FILE", raising=False)
    from dashboard.app import auth, data

    _clear(data, auth)
    yield url
    _clear(data, auth)
    patcher.undo()


def _clear(data, auth) -> None:  # noqa: ANN001 - the modules
    data.engine.clear()
    data.clear_caches()
    auth._load.clear()
    auth._store.clear()
    auth._synced.clear()


def write_clinic_config(path: Path, *, key: str | None = None, users: dict | None = None) -> Path:
    """A configuration as a clinic would write it: own users, bcrypt hashes, a random cookie key."""
    users = CLINIC_USERS if users is None else users
    config = {
        "cookie": {"name": "spine_dashboard", "key": key or secrets.token_urlsafe(48), "expiry_days": 1},
        "credentials": {"usernames": {
            name: {"name": name.title(), "password": hash_password(password, rounds=4), "roles": [role]}
            for name, (role, password) in users.items()}},
    }
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def run_app(page: str | None = None, *, user: str | None = None, role: str | None = None, **state) -> AppTest:
    """The app, signed in as `user` with `role` when given (a session as the sign-in form leaves it)."""
    at = AppTest.from_file(APP, default_timeout=120)
    if user is not None:
        at.session_state["user_name"] = user
        at.session_state["role"] = role
    for key, value in state.items():
        at.session_state[key] = value
    at.run()
    if page:
        at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def sign_in(at: AppTest, user: str, password: str) -> AppTest:
    """Fill and submit the sign-in form."""
    at.text_input(key="login_username").input(user)
    at.text_input(key="login_password").input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def entries(url: str, **filters) -> list[dict]:
    """Audit entries, newest first, as plain dicts."""
    frame = audit_log(get_engine(url), **filters)
    return [{k: (None if not isinstance(v, dict | list) and pd.isna(v) else v) for k, v in row.items()}
            for row in frame.astype(object).to_dict("records")]
