"""Every screen checks its user and role itself, first, whatever runs it (issue 22.1, defence in depth).

Each file of dashboard/app/screens/ is run directly — as Streamlit's legacy pages mode once ran it, without
app.py and its sign-in — and must show only a neutral notice, without reading the store, the cohort or a
query parameter. The role each screen lets in is SCREEN_ROLES, the table app.py's navigation is built from.
The identified follow-up report (one-time links served to the session's cookie only): tests/app/test_server.py.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from streamlit.delta_generator import DeltaGenerator
from streamlit.testing.v1 import AppTest

from dashboard.app.auth import NOT_IN_ROLE, SCREEN_ROLES, SIGN_IN_FIRST
from tests.app_fixtures import ROOT, _clear, app_store, entries, run_app

FIXTURES = (app_store,)  # imported for pytest, which finds fixtures by name
SCREEN_DIR = ROOT / "dashboard" / "app" / "screens"
SCREENS = sorted(path.stem for path in SCREEN_DIR.glob("*.py"))
#: The clinic table's row limit, as the screen states it.
CLINIC_ROWS = int(re.search(r"^TABLE_ROWS = (\d+)", (SCREEN_DIR / "clinic.py").read_text(), re.M).group(1))
#: What app.py is meant to give each role (the specification SCREEN_ROLES is checked against).
EXPECTED_ROLES = {
    "clinic": {"surgeon"}, "patient": {"surgeon"}, "add_exam": {"surgeon"}, "conference": {"surgeon", "conference"},
    "import_records": {"surgeon", "admin"}, "reference": {"surgeon", "conference", "admin"}, "audit": {"admin"},
    "users": {"admin"},
    "outcomes": {"surgeon", "admin"},
}
#: Everything through which a screen reaches patient data, the store or reference files (and, on the Users
#: screen, the accounts: the spy on dashboard.store.users.accounts). The guard itself reads only the session's
#: own account and session row.
DATA_ACCESS = ("engine", "cohort", "prompts_with_decisions", "patient_prompts_with_decisions", "cached_patient_view",
               "reference_files", "store_version", "assessment_day")


class DataRead(Exception):
    """Raised by the spies: the screen went past its guard and asked for data."""


@pytest.fixture
def reads(app_store: str, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Spies on every way into the data: each call is listed and raises, so nothing is read."""
    from dashboard.app import data

    seen: list[str] = []

    def spy(name: str):  # noqa: ANN202 - a stand-in for any of the data functions
        def read(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            seen.append(name)
            raise DataRead(name)
        return read

    for name in DATA_ACCESS:
        monkeypatch.setattr(data, name, spy(name))
    from dashboard.store import users

    monkeypatch.setattr(users, "accounts", spy("accounts"))  # the Users screen's list of accounts
    original = DeltaGenerator.download_button

    def download_button(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        seen.append("download_button")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DeltaGenerator, "download_button", download_button)
    return seen


def _direct(screen: str, **state) -> AppTest:
    """The screen file run on its own, not through app.py, with a link's query parameter."""
    at = AppTest.from_file(str(SCREEN_DIR / f"{screen}.py"), default_timeout=60)
    at.query_params["patient"] = "P00001"
    for key, value in state.items():
        at.session_state[key] = value
    return at.run()


def _shows_nothing_but(at: AppTest, kind: str, message: str) -> None:
    assert [e.value for e in at.get(kind)] == [message]
    assert not at.title and not at.markdown and not at.dataframe and not at.metric and not at.get("plotly_chart")
    assert not at.text_input and not at.selectbox and not at.button and not at.get("download_button")
    assert not at.exception, at.exception


# -------------------------------------------------------------------------------------- the role table
def test_every_screen_is_in_the_role_table_as_specified() -> None:
    assert set(SCREENS) == set(SCREEN_ROLES) == set(EXPECTED_ROLES)
    assert {name: set(roles) for name, roles in SCREEN_ROLES.items()} == EXPECTED_ROLES


@pytest.mark.parametrize("screen", SCREENS)
def test_the_guard_is_each_screens_first_statement(screen: str) -> None:
    """Before any other statement (after imports): `require_screen(__file__)`, which looks up SCREEN_ROLES."""
    tree = ast.parse((SCREEN_DIR / f"{screen}.py").read_text(encoding="utf-8"))
    body = [node for node in tree.body if not isinstance(node, ast.Import | ast.ImportFrom)]
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]  # the docstring
    first = body[0]
    assert ast.unparse(first) == "require_screen(__file__)", f"{screen}: first statement is {ast.unparse(first)!r}"
    imports = [node for node in tree.body if isinstance(node, ast.ImportFrom) and node.module == "dashboard.app.auth"]
    assert any(alias.name == "require_screen" for node in imports for alias in node.names)


def test_app_builds_its_navigation_from_the_same_table(app_store: str) -> None:
    for role in ("surgeon", "conference", "admin"):
        at = run_app(user=role, role=role)
        registered = {Path(str(info["script_path"])) for info in at._registered_pages.values()}
        assert {path.parent for path in registered} == {SCREEN_DIR}
        assert {path.stem for path in registered} == {s for s, roles in SCREEN_ROLES.items() if role in roles}


# --------------------------------------------------------------------------- each screen run on its own
@pytest.mark.parametrize("screen", SCREENS)
def test_a_screen_run_directly_without_sign_in_shows_only_sign_in_first(screen: str, app_store: str,
                                                                         reads: list[str]) -> None:
    views_before = len(entries(app_store, actions=["patient_view"]))
    _shows_nothing_but(_direct(screen), "info", SIGN_IN_FIRST)
    assert reads == []  # neither the store, nor the cohort, nor a reference file; no download built
    assert len(entries(app_store, actions=["patient_view"])) == views_before


@pytest.mark.parametrize("session", [
    {"user_name": "ghost", "role": "surgeon"},  # not in the login configuration
    {"user_name": "conference", "role": "surgeon"},  # a role the configuration does not give this user
    {"role": "admin"},  # a role without a user
    {"user_name": "surgeon"},  # a user without a role
], ids=["unknown user", "wrong role for the user", "role only", "user only"])
def test_a_session_not_signed_in_as_configured_is_refused_by_every_screen(session: dict, reads: list[str]) -> None:
    for screen in SCREENS:
        _shows_nothing_but(_direct(screen, **session), "info", SIGN_IN_FIRST)
    assert reads == []


@pytest.mark.parametrize("role", ["surgeon", "conference", "admin"])
def test_each_screen_lets_in_exactly_the_roles_of_the_table(role: str, reads: list[str]) -> None:
    """Signed in as a demo user: the screens of other roles refuse before reading; the others go on to read."""
    for screen in SCREENS:
        reads.clear()
        at = _direct(screen, user_name=role, role=role)
        if role in SCREEN_ROLES[screen]:
            assert reads, f"{screen} did not let {role} in"
            assert at.exception  # the spy stopped it at its first read (the message is redacted)
            assert NOT_IN_ROLE not in [e.value for e in at.error]
        else:
            _shows_nothing_but(at, "error", NOT_IN_ROLE)
            assert reads == [], f"{screen} read {reads} for {role}"


# ------------------------------------------------------------------------------------ the clinic list's size
@pytest.fixture
def large_clinic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A store of 620 patients: the demo cohort (seeded by the app) and 420 more."""
    from dashboard.app import auth, data
    from dashboard.clinical.records.validate import validate
    from dashboard.demo import write_cohort
    from dashboard.store import get_engine, import_records

    url = f"sqlite:///{tmp_path / 'large.db'}"
    monkeypatch.setenv("SPINE_DASHBOARD_DB_URL", url)
    monkeypatch.setenv("SPINE_DASHBOARD_MODE", "demo")
    monkeypatch.delenv("SPINE_DASHBOARD_AUTH_FILE", raising=False)
    _clear(data, auth)
    data.engine()  # seeds the demo cohort
    write_cohort(tmp_path / "more", n_patients=420, seed=7, first_id=201)
    records, report = validate(tmp_path / "more")
    assert records is not None, report.errors
    import_records(get_engine(url), records, source_name="more", user="test")
    yield url
    _clear(data, auth)


def test_the_clinic_sends_the_most_urgent_rows_and_says_how_many_it_left_out(large_clinic: str) -> None:
    at = run_app(user="surgeon", role="surgeon")
    table = at.dataframe[-1].value
    assert len(table) == 500 == CLINIC_ROWS
    ranks = table["urgency"].map({"Emergency": 0, "Urgent": 1, "Routine": 2, "—": 3}).tolist()
    assert ranks == sorted(ranks) and ranks[0] == 0
    assert ("Select a row to open the patient. The 500 most urgent of 620 patients are listed: search or filter to "
            "find the others.") in [c.value for c in at.caption]
    # P00600–P00620: all listed, nothing said
    next(box for box in at.text_input if box.label == "Search").input("P006").run()
    assert sorted(at.dataframe[-1].value["patient_id"]) == [f"P{n:05d}" for n in range(600, 621)]
    assert "Select a row to open the patient." in [c.value for c in at.caption]
