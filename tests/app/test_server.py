"""The server's own routes (dashboard/app/routes.py, issue 22 points 4 and 10) with Starlette's TestClient, and the
script's side of them (AppTest): the HttpOnly session cookie for a one-time sign-in code, its deletion at
sign-out, and the identified follow-up report served once, audited first, only to its session's cookie.

A real browser does the same end to end: tests/app/test_auth.py and tests/browser/test_browser.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from starlette.applications import Starlette
from starlette.testclient import TestClient
from streamlit.testing.v1 import AppTest

from dashboard.access import hash_password
from dashboard.app import auth
from dashboard.app.grants import (
    CODE_LIFETIME,
    GRANTS,
    REPORT_LIFETIME,
    ClearCookie,
    Document,
    GrantBook,
    SessionCookie,
    SetCookie,
)
from dashboard.app.routes import ROUTES, SECURE_COOKIE_SETTING
from dashboard.store import audit, get_engine, users
from tests.app_fixtures import APP, app_store, entries, sign_in

FIXTURES = (app_store,)  # imported for pytest, which finds fixtures by name
KEY = "k" * 8 + "-Xy7#qP2!mZ9@rT4$wL6%nB1^vC3&dF5"
ORIGIN = "http://testserver"
PDF = b"%PDF-1.7 follow-up of Jane Roe, MRN123"


@pytest.fixture
def store(tmp_path) -> Iterator:  # noqa: ANN001 - pytest's tmp_path
    engine = get_engine(f"sqlite:///{tmp_path / 'routes.db'}")
    users.sync_file_users(engine, {"dr.a": ("Dr A", "surgeon", hash_password("A-password-123", rounds=4)),
                                   "dr.b": ("Dr B", "surgeon", hash_password("B-password-123", rounds=4))})
    yield engine
    engine.dispose()


@pytest.fixture
def client() -> Iterator[TestClient]:
    with TestClient(Starlette(routes=ROUTES)) as test_client:
        yield test_client


def _session(engine, user: str = "dr.a") -> tuple[SessionCookie, str, str]:  # noqa: ANN001
    token, sid = users.start_session(engine, user, "password", KEY, timedelta(hours=1))
    return SessionCookie("spine_test", KEY, engine), token, sid


def _cookie(name: str, value: str) -> dict[str, str]:
    """The request header a browser sends with the cookie."""
    return {"Cookie": f"{name}={value}"}


def _start(client: TestClient, code: str, **headers: str):  # noqa: ANN202 - a response
    return client.post("/session/start", json={"code": code}, headers={"Origin": ORIGIN, **headers})


# ------------------------------------------------------------------------------------------ grant book
def test_a_grant_is_taken_once_and_not_after_it_expires() -> None:
    now = [GRANTS.clock()]
    book = GrantBook(clock=lambda: now[0])
    first, second = book.issue(ClearCookie(None), CODE_LIFETIME), book.issue(ClearCookie(None), CODE_LIFETIME)
    assert len(first) >= 43 and first != second
    assert book.outstanding(first) and book.take(first) == ClearCookie(None)
    assert not book.outstanding(first) and book.take(first) is None  # single use
    now[0] += CODE_LIFETIME - timedelta(seconds=1)
    assert book.outstanding(second)
    now[0] += timedelta(seconds=1)
    assert not book.outstanding(second) and book.take(second) is None  # expired at exactly its lifetime
    assert book.take("") is None and not book.outstanding(None)


# ------------------------------------------------------------------------------------- session cookie
def test_a_sign_in_code_becomes_an_http_only_strict_cookie_once(store, client: TestClient) -> None:  # noqa: ANN001
    cookie, token, sid = _session(store)
    code = GRANTS.issue(SetCookie(cookie, token, sid, 86_400), CODE_LIFETIME)
    response = _start(client, code)
    assert response.status_code == 204
    assert response.headers["set-cookie"] == (f"spine_test={token}; HttpOnly; Max-Age=86400; Path=/; "
                                              "SameSite=strict")
    assert response.headers["cache-control"] == "no-store"
    again = _start(client, code)
    assert (again.status_code, again.json()) == (404, {"error": "unknown, used or expired code"})
    assert "set-cookie" not in again.headers


def test_the_cookie_is_secure_over_https_behind_a_proxy_or_by_the_setting(store, client: TestClient,  # noqa: ANN001
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cookie, token, sid = _session(store)

    def set_cookie(**headers: str) -> str:
        return _start(client, GRANTS.issue(SetCookie(cookie, token, sid, None), CODE_LIFETIME),
                      **headers).headers["set-cookie"]

    assert set_cookie() == f"spine_test={token}; HttpOnly; Path=/; SameSite=strict"  # no Max-Age: browser session
    assert set_cookie(**{"X-Forwarded-Proto": "https"}).endswith("; Secure")
    monkeypatch.setenv(SECURE_COOKIE_SETTING, "true")
    assert set_cookie().endswith("; Secure")
    monkeypatch.setenv(SECURE_COOKIE_SETTING, "0")
    assert "Secure" not in set_cookie()
    with TestClient(Starlette(routes=ROUTES), base_url="https://testserver") as https:
        response = https.post("/session/start", json={"code": GRANTS.issue(SetCookie(cookie, token, sid, None),
                                                                            CODE_LIFETIME)},
                              headers={"Origin": "https://testserver"})
        assert response.headers["set-cookie"].endswith("; Secure")


def test_a_sign_in_code_is_refused_cross_origin_late_or_for_an_ended_session(store, client: TestClient,  # noqa: ANN001
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    cookie, token, sid = _session(store)
    code = GRANTS.issue(SetCookie(cookie, token, sid, None), CODE_LIFETIME)
    for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}):
        refused = client.post("/session/start", json={"code": code}, headers=headers)
        assert (refused.status_code, refused.json()) == (403, {"error": "cross-origin request"})
    assert client.post("/session/start", json={"code": code}).status_code == 403  # no Origin at all
    assert GRANTS.outstanding(code)  # a refused origin does not use up the code
    assert client.post("/session/start", content=b"not json", headers={"Origin": ORIGIN}).status_code == 404
    later = GRANTS.clock() + CODE_LIFETIME
    monkeypatch.setattr(GRANTS, "clock", lambda: later)
    assert _start(client, code).status_code == 404  # expired
    monkeypatch.undo()
    code = GRANTS.issue(SetCookie(cookie, token, sid, None), CODE_LIFETIME)
    users.revoke_sessions(store, "dr.a")  # signed out (or reset, deactivated) before the page posted the code
    ended = _start(client, code)
    assert (ended.status_code, ended.json()) == (403, {"error": "the session has ended"})
    assert "set-cookie" not in ended.headers
    forged = GRANTS.issue(SetCookie(cookie, "another-token", _session(store)[2], None), CODE_LIFETIME)
    assert _start(client, forged).status_code == 403  # the token must be the session's own


def test_a_sign_out_code_deletes_the_cookie(store, client: TestClient) -> None:  # noqa: ANN001
    cookie, _, _ = _session(store)
    code = GRANTS.issue(ClearCookie(cookie), CODE_LIFETIME)
    cross = client.post("/session/end", json={"code": code}, headers={"Origin": "http://evil.example"})
    assert cross.status_code == 403
    response = client.post("/session/end", json={"code": code}, headers={"Origin": ORIGIN})
    assert response.status_code == 204
    assert response.headers["set-cookie"].startswith('spine_test=""; expires=')
    assert "Max-Age=0; Path=/; SameSite=strict" in response.headers["set-cookie"]
    assert client.post("/session/end", json={"code": code}, headers={"Origin": ORIGIN}).status_code == 404
    assert client.post("/session/start", json={"code": GRANTS.issue(ClearCookie(cookie), CODE_LIFETIME)},
                       headers={"Origin": ORIGIN}).status_code == 404  # a sign-out code signs nobody in


# ------------------------------------------------------------------------------------ identified report
def _document(store, cookie: SessionCookie, sid: str, built: list[str], user: str = "dr.a") -> Document:  # noqa: ANN001
    def make() -> bytes:
        built.append("pdf")
        return PDF

    def record() -> int:
        return audit.record(store, user, "export", role="surgeon", patient_id="P00001", kind="follow_up_report",
                            format="pdf", identified=True)

    return Document(cookie, sid, user, "surgeon", "P00001", "follow-up-P00001.pdf", "application/pdf", make, record)


def _exports(store) -> int:  # noqa: ANN001
    return len(audit.audit_log(store, actions=["export"]))


def test_the_report_is_served_once_to_its_sessions_cookie_and_audited_first(store, client: TestClient) -> None:  # noqa: ANN001
    cookie, token, sid = _session(store)
    built: list[str] = []
    code = GRANTS.issue(_document(store, cookie, sid, built), REPORT_LIFETIME)
    response = client.get(f"/reports/{code}", headers=_cookie("spine_test", token))
    assert (response.status_code, response.content) == (200, PDF)
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="follow-up-P00001.pdf"'
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-security-policy"] == "sandbox; default-src 'none'"
    entry = audit.audit_log(store, actions=["export"]).iloc[0]
    assert (entry["user_name"], entry["patient_id"], entry["details"]["identified"]) == ("dr.a", "P00001", True)
    again = client.get(f"/reports/{code}", headers=_cookie("spine_test", token))
    assert (again.status_code, again.json()) == (404, {"error": "unknown, used or expired link"})
    assert built == ["pdf"] and _exports(store) == 1
    code = GRANTS.issue(_document(store, cookie, sid, built), REPORT_LIFETIME)
    assert client.head(f"/reports/{code}", headers=_cookie("spine_test", token)).status_code == 405
    assert GRANTS.outstanding(code) and built == ["pdf"]  # a HEAD request neither uses the link nor builds


def test_a_report_that_cannot_be_made_says_so_without_its_message(store, client: TestClient,  # noqa: ANN001
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    cookie, token, sid = _session(store)

    def broken() -> bytes:
        raise ValueError("Jane Roe MRN123")

    document = Document(**{**_document(store, cookie, sid, []).__dict__, "make": broken})
    response = client.get(f"/reports/{GRANTS.issue(document, REPORT_LIFETIME)}",
                          headers=_cookie("spine_test", token))
    assert (response.status_code, response.json()) == (500, {"error": "the document could not be made; click again"})
    assert "could not build an identified document (ValueError)" in caplog.text and "Jane" not in caplog.text


@pytest.mark.parametrize("case", ["no cookie", "another user's cookie", "another session of the same user",
                                  "signed out", "deactivated", "expired", "audit fails"])
def test_the_report_is_refused_and_nothing_built_or_logged(store, client: TestClient, case: str,  # noqa: ANN001
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cookie, token, sid = _session(store)
    built: list[str] = []
    document = _document(store, cookie, sid, built)
    if case == "audit fails":
        def broken() -> int:
            raise RuntimeError("the audit log cannot be written")
        document = Document(**{**document.__dict__, "audit": broken})
    code = GRANTS.issue(document, REPORT_LIFETIME)
    cookies = _cookie("spine_test", token)
    if case == "no cookie":
        cookies = {}
    elif case == "another user's cookie":
        cookies = _cookie("spine_test", _session(store, "dr.b")[1])
    elif case == "another session of the same user":
        cookies = _cookie("spine_test", _session(store)[1])
    elif case == "signed out":
        users.revoke_sessions(store, "dr.a")
    elif case == "deactivated":
        users.change_user(store, "admin", "admin", "dr.a", users.account(store, "dr.a").version, active=False)
    elif case == "expired":
        later = GRANTS.clock() + REPORT_LIFETIME
        monkeypatch.setattr(GRANTS, "clock", lambda: later)
    response = client.get(f"/reports/{code}", headers=cookies)
    expected = {"expired": 404, "audit fails": 503}.get(case, 403)
    assert response.status_code == expected and PDF not in response.content
    assert built == [] and _exports(store) == 0
    monkeypatch.undo()
    used = client.get(f"/reports/{code}", headers=_cookie("spine_test", token))
    assert used.status_code == 404  # used up, even when refused


# ----------------------------------------------------------------------------- the script's side (AppTest)
class FakeReport:
    html = "<html>Follow-up report of P00001</html>"

    @staticmethod
    def pdf() -> bytes:
        return PDF


def _form_sign_in() -> tuple[AppTest, str, str]:
    """Signed in with the form: (app, the token the cookie will hold, the code the page posts for it)."""
    at = AppTest.from_file(APP, default_timeout=120).run()
    sign_in(at, "surgeon", "surgeon-demo")
    action, token, code = at.session_state["_cookie_pending"]
    assert action == "set"
    return at, token, code


def test_signing_in_and_out_posts_one_time_codes_for_the_cookie(app_store: str, client: TestClient) -> None:
    at, token, code = _form_sign_in()
    assert GRANTS.outstanding(code)
    response = _start(client, code)
    assert response.status_code == 204 and response.cookies["spine_dashboard_demo"] == token
    at.run()
    assert "_cookie_pending" not in at.session_state  # the code is used: no more posting component
    at.sidebar.button(key="sign_out").click().run()
    action, _, code = at.session_state["_cookie_pending"]
    assert action == "delete" and GRANTS.outstanding(code)
    response = client.post("/session/end", json={"code": code}, headers={"Origin": ORIGIN})
    assert response.status_code == 204 and 'spine_dashboard_demo=""' in response.headers["set-cookie"]
    key = auth.auth_config().cookie_key
    assert users.live_session(get_engine(app_store), users.session_id(token, key)) is None


def test_the_follow_up_report_link_serves_the_patients_report_to_this_session_only(
        app_store: str, client: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    from dashboard.reports import follow_up

    built: list[bool] = []
    monkeypatch.setattr(follow_up, "report_for", lambda *args, **kwargs: built.append(True) or FakeReport())
    at, token, _ = _form_sign_in()
    at.switch_page("screens/patient.py").run()
    assert not at.exception, at.exception
    patient = at.session_state["patient_id"]
    assert not at.get("download_button")  # nothing of the report goes to Streamlit's /media any more
    before = len(entries(app_store, actions=["export"]))
    at.button(key="follow_up_html").click().run()
    shown_for, code = at.session_state["_download_links"]["follow_up_html"]
    assert shown_for == patient and built == [] and len(entries(app_store, actions=["export"])) == before
    links = [b for b in at.get("link_button") if b.proto.label == "Download follow-up report HTML"]
    assert [b.proto.url for b in links] == [f"/reports/{code}"]
    assert client.get(f"/reports/{code}").status_code == 403  # without the cookie: refused, and the link is spent
    at.button(key="follow_up_pdf").click().run()
    _, code = at.session_state["_download_links"]["follow_up_pdf"]
    response = client.get(f"/reports/{code}", headers=_cookie("spine_dashboard_demo", token))
    assert (response.status_code, response.content) == (200, PDF)
    assert response.headers["content-disposition"] == f'attachment; filename="follow-up-{patient}.pdf"'
    exports = entries(app_store, actions=["export"])
    assert len(exports) == before + 1
    assert (exports[0]["user_name"], exports[0]["patient_id"]) == ("surgeon", patient)
    assert exports[0]["details"] == {"kind": "follow_up_report", "format": "pdf", "identified": True}
    at.run()
    assert not at.get("link_button")  # spent links are not shown again: the buttons are back
    assert [b.key for b in at.button if b.key and b.key.startswith("follow_up")] == ["follow_up_pdf",
                                                                                     "follow_up_html"]
    at.button(key="follow_up_html").click().run()
    _, code = at.session_state["_download_links"]["follow_up_html"]
    at.sidebar.button(key="sign_out").click().run()  # signing out withdraws the session's links
    assert client.get(f"/reports/{code}", headers=_cookie("spine_dashboard_demo", token)).status_code == 404
    assert len(entries(app_store, actions=["export"])) == before + 1
