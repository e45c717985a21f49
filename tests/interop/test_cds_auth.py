"""Who may call the CDS service (CDS Hooks 2.0 "Trusting CDS Clients"), from which Host, with how large a body;
and the feedback endpoint that turns a card's outcome into a clinician's decision.

Keys are made by the tests (cryptography); nothing secret is committed.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import jwt
import pytest

from dashboard.cli import main
from dashboard.interop.cds_hooks import CS_OVERRIDE_REASON, OVERRIDE_REASONS, create_app
from dashboard.interop.cds_security import (
    UNAUTHORIZED_BODY,
    AuthConfigError,
    AuthFailure,
    FailureLimiter,
    ReplayCache,
    default_hosts,
    load_auth_config,
    parse_auth_config,
)
from dashboard.store import get_engine
from dashboard.store.audit import audit_log
from dashboard.store.decisions import decision_history
from tests.cds_auth_helpers import (
    ISSUER,
    SERVICE,
    Signer,
    auth_config,
    claims,
    client,
    ec_keys,
    hs256_with,
    jwks,
    rsa_keys,
    sign,
    unsigned,
)
from tests.interop_helpers import ROOT, SCENARIOS, demo_records, demo_store
from tests.live_server import free_port, stop

ANCHOR = date(2026, 11, 20)
EXTENSION = "example.spine-dashboard.prompt"
ES = ec_keys("ehr-es384")
RS = rsa_keys("ehr-rs384")
ENDPOINT = "/cds-services/patient-view"


def patient_of(scenario: str) -> str:
    return SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]


def hook(patient_id: str, user: str = "Practitioner/example") -> dict:
    return {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": user, "patientId": patient_id}}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    return demo_store(tmp_path_factory.mktemp("cds-auth"))


@pytest.fixture
def app(store_url):
    """The service with both test EHR keys trusted; `cards` fails the test if anything is assessed."""
    application = create_app(store_url, as_of=ANCHOR, auth=auth_config(ES, RS))
    return application


@pytest.fixture
def untouched(app, monkeypatch):
    """Fails the test if the service reads the store or the request's FHIR data."""
    def never(*args, **kwargs):
        raise AssertionError("the service read patient data before authentication")
    monkeypatch.setattr(app.state.checklist, "cards", never)
    monkeypatch.setattr(app.state.checklist, "_store", never)
    return app


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------------------------- valid tokens
@pytest.mark.parametrize("keys", [ES, RS], ids=["ES384", "RS384"])
def test_a_valid_token_gets_the_cards(app, keys):
    response = client(app, keys).post(ENDPOINT, json=hook(patient_of("cauda_equina")))
    assert response.status_code == 200, response.text
    assert response.json()["cards"] and response.json()["cards"][0]["indicator"] == "critical"


def test_aud_may_be_a_list_and_discovery_stays_open(app):
    token = sign(ES, claims(["https://other.example/x", SERVICE + ENDPOINT]))
    assert client(app).post(ENDPOINT, json=hook(patient_of("cauda_equina")), headers=bearer(token)).status_code == 200
    assert client(app).get("/cds-services").status_code == 200  # no patient data: open, as the spec allows


# ------------------------------------------------------------------------------------ refused tokens
def _payload(**changes):
    return claims(SERVICE + ENDPOINT, **changes)


OTHER = ec_keys("ehr-es384")  # same kid, another key: not the EHR's

REFUSED = {
    "expired": lambda: sign(ES, _payload(exp=int(time.time()) - 120, iat=int(time.time()) - 600)),
    "wrong aud": lambda: sign(ES, claims("https://cds.elsewhere.example/cds-services/patient-view")),
    "aud of discovery": lambda: sign(ES, claims(SERVICE + "/cds-services")),
    "wrong iss": lambda: sign(ES, _payload(iss="https://attacker.example/")),
    "unknown kid": lambda: sign(ES, _payload(), kid="no-such-key"),
    "no kid": lambda: jwt.encode(_payload(), ES.private, algorithm="ES384"),
    "alg none": lambda: unsigned(_payload(), kid=ES.kid),
    "HS256 with the public key": lambda: hs256_with(RS.public_pem, _payload(), kid=RS.kid),
    "HS256 with the JWK": lambda: hs256_with(json.dumps(RS.public_jwk).encode(), _payload(), kid=RS.kid),
    "another key, same kid": lambda: sign(OTHER, _payload()),
    "alg does not fit the key": lambda: jwt.encode(_payload(), RS.private, algorithm="RS256",
                                                   headers={"kid": ES.kid}),
    "missing jti": lambda: sign(ES, _payload(jti=None)),
    "missing exp": lambda: sign(ES, _payload(exp=None)),
    "missing iat": lambda: sign(ES, _payload(iat=None)),
    "issued in the future": lambda: sign(ES, _payload(iat=int(time.time()) + 600, exp=int(time.time()) + 900)),
    "valid for a day": lambda: sign(ES, _payload(exp=int(time.time()) + 86_400)),
    "garbage": lambda: "not.a.jwt",
}


@pytest.mark.parametrize("make", list(REFUSED.values()), ids=list(REFUSED))
def test_a_bad_token_is_401_before_anything_is_read(untouched, make, caplog):
    patient_id = patient_of("cauda_equina")
    name = demo_records().patients.set_index("patient_id").loc[patient_id, "name"]
    token = make()
    with caplog.at_level(logging.DEBUG):
        response = client(untouched).post(ENDPOINT, json=hook(patient_id), headers=bearer(token))
        broken = client(untouched).post(ENDPOINT, content=b'{"not json: ' + name.encode(), headers={
            **bearer(token), "Content-Type": "application/json"})
    for answer in (response, broken):  # 401, not 422: the body is not even parsed
        assert answer.status_code == 401
        assert answer.json() == UNAUTHORIZED_BODY
        assert answer.headers["www-authenticate"].startswith("Bearer")
    assert "CDS request refused (401)" in caplog.text
    for secret in (token, patient_id, name):
        assert secret not in caplog.text


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer "}],
                         ids=["no header", "Basic", "empty bearer"])
def test_no_bearer_token_is_401(untouched, headers):
    response = client(untouched).post(ENDPOINT, json=hook(patient_of("cauda_equina")), headers=headers)
    assert response.status_code == 401 and response.json() == UNAUTHORIZED_BODY


def test_a_replayed_jti_is_refused(app):
    token = sign(ES, _payload())
    body = hook(patient_of("cauda_equina"))
    assert client(app).post(ENDPOINT, json=body, headers=bearer(token)).status_code == 200
    again = client(app).post(ENDPOINT, json=body, headers=bearer(token))
    assert again.status_code == 401 and again.json() == UNAUTHORIZED_BODY
    # the same jti from another trusted issuer's token is that issuer's own nonce (replays are per issuer)


def test_the_replay_cache_is_thread_safe_bounded_and_forgets_expired(monkeypatch):
    cache = ReplayCache(capacity=1000)
    results, barrier = [], threading.Barrier(8)

    def use():
        barrier.wait()
        results.append(cache.first_use(ISSUER, "same-jti", time.time() + 60))
    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]
    now = [1000.0]
    small = ReplayCache(capacity=3, clock=lambda: now[0])
    for jti in ("a", "b", "c"):
        assert small.first_use(ISSUER, jti, 1010.0)
    with pytest.raises(AuthFailure, match="full"):  # full of unexpired nonces: refuse rather than forget one
        small.first_use(ISSUER, "d", 1010.0)
    now[0] = 1011.0  # all expired: forgotten, memory reclaimed
    assert small.first_use(ISSUER, "d", 1020.0) and len(small) == 1
    assert small.first_use("https://other-ehr.example/", "d", 1020.0)  # per issuer


# --------------------------------------------------------------------------------- failed attempts
def test_failed_authentications_are_limited_per_client(store_url, caplog):
    application = create_app(store_url, as_of=ANCHOR, auth=auth_config(ES),
                             failure_limiter=FailureLimiter(burst=3, per_minute=6))
    anonymous = client(application)
    with caplog.at_level(logging.WARNING):
        statuses = [anonymous.post(ENDPOINT, json=hook(f"P{n:05d}")).status_code for n in range(1, 6)]
    assert statuses == [401, 401, 401, 429, 429]  # ids tried without a token: nothing answered
    limited = client(application, ES).post(ENDPOINT, json=hook(patient_of("cauda_equina")))
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1  # even a good token waits
    assert "too many failed authentications" in caplog.text
    assert "P00001" not in caplog.text and "P00005" not in caplog.text


def test_the_failure_bucket_refills_and_holds_a_bounded_number_of_clients():
    now = [0.0]
    limiter = FailureLimiter(burst=2, per_minute=6, max_clients=100, clock=lambda: now[0])
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") == 0
    limiter.failed("10.0.0.1")
    assert limiter.retry_after("10.0.0.1") >= 1 and limiter.retry_after("10.0.0.2") == 0
    now[0] = 10.0  # 6 per minute: one attempt back after 10 s
    assert limiter.retry_after("10.0.0.1") == 0
    for n in range(500):
        limiter.failed(f"10.1.{n // 256}.{n % 256}")
    assert len(limiter._buckets) == 100


# ----------------------------------------------------------------------------------- configuration
def test_a_config_file_with_a_jwks_file(tmp_path):
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "ehr.json").write_text(json.dumps(jwks(ES, RS)), encoding="utf-8")
    path = tmp_path / "cds-auth.yaml"
    path.write_text(f"service_url: {SERVICE}\nissuers:\n  - iss: {ISSUER}\n    jwks_file: keys/ehr.json\n"
                    "    algorithms: [ES384]\n", encoding="utf-8")
    config = load_auth_config(path)
    assert config.service_url == SERVICE and config.issuers[ISSUER].algorithms == ("ES384",)
    application = create_app(None, as_of=ANCHOR, auth=config)
    assert client(application, ES).post(ENDPOINT, json=hook("Unknown1")).status_code == 200
    assert client(application, RS).post(ENDPOINT, json=hook("Unknown1")).status_code == 401  # RS384 not listed


@pytest.mark.parametrize(("change", "problem"), [
    ({"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}}, "symmetric"),
    ({"jwks": {"keys": [{**ES.public_jwk, "d": "x"}]}}, "private key"),
    ({"jwks": {"keys": [{k: v for k, v in ES.public_jwk.items() if k != "kid"}]}}, "kid"),
    ({"algorithms": ["HS256"]}, "no HMAC"),
    ({"algorithms": ["none"]}, "no 'none'"),
    ({"jwks_url": "ftp://ehr.example/jwks"}, "http"),
    ({"jwks_file": "x.json"}, "exactly one"),
])
def test_unsafe_configurations_are_refused(change, problem):
    keys = {} if "jwks" in change or "jwks_url" in change else {"jwks": jwks(ES)}
    issuer = {"iss": ISSUER, **keys, **change}
    with pytest.raises(AuthConfigError, match=problem):
        parse_auth_config({"issuers": [issuer]})


def test_without_authentication_only_in_demo_mode(store_url, monkeypatch, caplog):
    with pytest.raises(ValueError, match="authentication configuration"):
        create_app(store_url)
    monkeypatch.setenv("SPINE_DASHBOARD_MODE", "production")
    with pytest.raises(ValueError, match="demo mode only"):
        create_app(store_url, allow_unauthenticated=True)
    monkeypatch.setenv("SPINE_DASHBOARD_MODE", "demo")
    with caplog.at_level(logging.WARNING):
        open_app = create_app(store_url, as_of=ANCHOR, allow_unauthenticated=True)
    assert "WITHOUT AUTHENTICATION" in caplog.text
    assert client(open_app).post(ENDPOINT, json=hook(patient_of("cauda_equina"))).status_code == 200


def test_keys_from_an_allow_listed_jwks_url_only(store_url):
    calls = []

    def ehr(request: httpx.Request) -> httpx.Response:
        calls.append(str(request.url))
        return httpx.Response(200, json=jwks(ES))

    config = parse_auth_config({"service_url": SERVICE, "issuers": [
        {"iss": ISSUER, "jwks_url": "https://ehr.example/jwks"}]}, transport=httpx.MockTransport(ehr))
    application = create_app(store_url, as_of=ANCHOR, auth=config)
    body = hook(patient_of("cauda_equina"))
    assert client(application, ES).post(ENDPOINT, json=body).status_code == 200
    assert client(application, ES).post(ENDPOINT, json=body).status_code == 200
    assert calls == ["https://ehr.example/jwks"]  # fetched once, then cached
    elsewhere = sign(ES, _payload(), jku="https://attacker.example/jwks")
    assert client(application).post(ENDPOINT, json=body, headers=bearer(elsewhere)).status_code == 401
    assert calls == ["https://ehr.example/jwks"]  # a jku that is not allow-listed is never fetched


# -------------------------------------------------------------------------------------- Host, size
def test_only_the_configured_hosts_are_answered(app):
    good = client(app, ES)
    assert good.get("/cds-services").status_code == 200
    for host in ("attacker.example", "attacker.example:8090", "127.0.0.1.attacker.example:8090", ""):
        refused = good.get("/cds-services", headers={"Host": host})
        assert refused.status_code == 400 and refused.json() == {"detail": "this Host is not served here"}
        post = good.post(ENDPOINT, json=hook(patient_of("cauda_equina")), headers={"Host": host})
        assert post.status_code == 400 and "cards" not in post.text
    pinned = create_app(None, auth=auth_config(ES), allowed_hosts=["cds.hospital.example"])
    assert client(pinned).get("/cds-services").status_code == 400  # 127.0.0.1 is not in the list
    assert client(pinned).get("/cds-services", headers={"Host": "CDS.hospital.example:443"}).status_code == 200


def test_default_hosts_are_the_bind_address_the_loopback_names_and_the_service_url():
    assert default_hosts("127.0.0.1", 8090) == ["127.0.0.1:8090", "localhost:8090", "[::1]:8090"]
    assert default_hosts("0.0.0.0", 8443, "https://cds.hospital.example") == [  # noqa: S104
        "127.0.0.1:8443", "localhost:8443", "[::1]:8443", "cds.hospital.example"]
    assert "[::1]:9000" in default_hosts("::1", 9000)


def test_a_body_over_the_limit_is_413_without_being_read(store_url, caplog):
    application = create_app(store_url, as_of=ANCHOR, auth=auth_config(ES), max_body_bytes=2000)
    body = hook(patient_of("cauda_equina"))
    body["padding"] = "x" * 5000
    declared = client(application, ES).post(ENDPOINT, json=body)
    assert declared.status_code == 413 and "over 2000 bytes" in declared.json()["detail"]

    def stream():  # no Content-Length: chunked; refused as soon as the limit is passed
        for _ in range(1000):
            yield b" " * 1000
    with caplog.at_level(logging.WARNING):
        streamed = client(application, ES).post(ENDPOINT, content=stream(),
                                                headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413 and "body over 2000 bytes while reading" in caplog.text
    small = client(application, ES).post(ENDPOINT, json=hook(patient_of("cauda_equina")))
    assert small.status_code == 200


def test_host_and_size_over_real_http(store_url):
    """Under uvicorn: a rebinding Host and 20 MiB bodies (declared or streamed) refused, a good request answered."""
    import uvicorn  # noqa: PLC0415

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    application = create_app(store_url, as_of=ANCHOR, auth=auth_config(ES, service_url=base),
                             allowed_hosts=default_hosts("127.0.0.1", port), max_body_bytes=1_000_000)
    server = uvicorn.Server(uvicorn.Config(application, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive()
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=base, timeout=30, auth=Signer(ES, base)) as http:
            assert http.post(ENDPOINT, json=hook(patient_of("cauda_equina"))).status_code == 200
            rebinding = http.post(ENDPOINT, json=hook(patient_of("cauda_equina")),
                                  headers={"Host": f"rebind.attacker.example:{port}"})
            assert rebinding.status_code == 400
            started = time.monotonic()
            big = http.post(ENDPOINT, content=b"{" + b" " * (20 * 1024 * 1024) + b"}",
                            headers={"Content-Type": "application/json"})
            assert big.status_code == 413 and time.monotonic() - started < 10
            sent = []

            def chunks():  # chunked, no Content-Length: the server stops reading at its limit
                for _ in range(320):
                    sent.append(1)
                    yield b" " * 65536
            try:
                streamed = http.post(ENDPOINT, content=chunks(), headers={"Content-Type": "application/json"})
                assert streamed.status_code == 413
            except httpx.TransportError:
                pass  # the server closed the connection mid-upload: refused as well
            assert len(sent) < 320  # the 20 MiB were never all taken
    finally:
        server.should_exit = True
        thread.join(timeout=10)


# ----------------------------------------------------------------------------------------- feedback
def cards_of(application, patient_id: str, keys=ES, user: str = "Practitioner/example") -> list[dict]:
    response = client(application, keys).post(ENDPOINT, json=hook(patient_id, user))
    assert response.status_code == 200
    return response.json()["cards"]


def feedback(card: str, outcome: str, reason: str | None = None, *, system: str = CS_OVERRIDE_REASON,
             comment: str | None = None, when: datetime | None = None) -> dict:
    item = {"card": card, "outcome": outcome,
            "outcomeTimestamp": (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z")}
    if outcome == "accepted":
        item["acceptedSuggestions"] = [{"id": "x"}]
    if reason or comment:
        item["overrideReason"] = {k: v for k, v in (("reason", {"system": system, "code": reason} if reason else None),
                                                    ("userComment", comment)) if v is not None}
    return {"feedback": [item]}


def test_cards_offer_override_reasons_and_one_suggestion(app):
    (card, *_) = cards_of(app, patient_of("cauda_equina"))
    assert [r["code"] for r in card["overrideReasons"]] == list(OVERRIDE_REASONS)
    assert all(r["system"] == CS_OVERRIDE_REASON and r["display"] for r in card["overrideReasons"])
    assert card["selectionBehavior"] == "at-most-one" and len(card["suggestions"]) == 1
    uuid.UUID(card["suggestions"][0]["uuid"])
    assert card["uuid"] == cards_of(app, patient_of("cauda_equina"))[0]["uuid"]  # stable


def test_feedback_is_stored_as_decisions_with_their_audit_entries(app, store_url):
    patient_id = patient_of("cauda_equina")
    cards = cards_of(app, patient_id, user="Practitioner/dr-a")
    card = cards[0]
    rule = card["extension"][EXTENSION]["rule_id"]
    ehr = client(app, ES)
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    accepted = ehr.post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "accepted", when=when))
    assert accepted.status_code == 200 and accepted.json() == {"recorded": 1, "repeated": 0}
    again = ehr.post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "accepted", when=when))
    assert again.json() == {"recorded": 0, "repeated": 1}  # the client may send the same feedback twice
    engine = get_engine(store_url)
    history = decision_history(engine, patient_id)
    row = history[history["rule_id"] == rule].iloc[-1]
    assert (row["decision"], row["evidence_hash"], row["clinician"]) == (
        "ordered", card["extension"][EXTENSION]["evidence_hash"], "Practitioner/example")  # the JWT's sub
    assert row["decided_at"].to_pydatetime() == when
    entry = audit_log(engine, actions=["decision"], patient_id=patient_id).iloc[0]
    assert entry["role"] == "cds-hooks" and entry["details"]["kind"] == "cds_feedback"
    assert entry["details"]["rule_id"] == rule and entry["details"]["decision"] == "ordered"
    engine.dispose()


@pytest.mark.parametrize(("reason", "system", "decision"), [
    ("not-applicable", CS_OVERRIDE_REASON, "not_indicated"),
    ("patient-ineligible", CS_OVERRIDE_REASON, "not_indicated"),
    ("order-already-exists", CS_OVERRIDE_REASON, "already_done"),
    ("action-completed", CS_OVERRIDE_REASON, "already_done"),
    ("not-a-priority", CS_OVERRIDE_REASON, "deferred"),
    (None, CS_OVERRIDE_REASON, "deferred"),
    ("their-own", "https://ehr.example/override", "deferred"),
])
def test_override_reasons_map_to_decisions(store_url, reason, system, decision):
    application = create_app(store_url, as_of=ANCHOR, auth=auth_config(ES))
    patient_id = patient_of("wound_infection")
    card = cards_of(application, patient_id, user="PractitionerRole/7")[0]
    no_sub = Signer(ES, sub=None)  # without `sub` the clinician is the hook call's user
    http = client(application)
    http.auth = no_sub
    response = http.post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "overridden", reason, system=system,
                                                                 comment="seen in clinic today"))
    assert response.status_code == 200, response.text
    engine = get_engine(store_url)
    row = decision_history(engine, patient_id).iloc[-1]
    engine.dispose()
    assert row["decision"] == decision and row["clinician"] == "PractitionerRole/7"
    assert row["reason"].endswith("comment: seen in clinic today")
    if system == CS_OVERRIDE_REASON and reason:
        assert row["reason"].startswith(OVERRIDE_REASONS[reason][0])


def test_feedback_refusals_are_neutral(app, store_url):
    patient_id = patient_of("cauda_equina")
    card = cards_of(app, patient_id)[0]
    ehr = client(app, ES)
    unknown = ehr.post(f"{ENDPOINT}/feedback", json=feedback(str(uuid.uuid4()), "accepted"))
    assert unknown.status_code == 404 and patient_id not in unknown.text and "feedback[0].card" in unknown.text
    wrong_service = ehr.post("/cds-services/other/feedback", json=feedback(card["uuid"], "accepted"))
    assert wrong_service.status_code == 404
    future = ehr.post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "accepted",
                                                             when=datetime.now(UTC) + timedelta(days=1)))
    assert future.status_code == 400 and "outcomeTimestamp" in future.text
    assert ehr.post(f"{ENDPOINT}/feedback", json={"feedback": []}).status_code == 422
    anonymous = client(app).post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "accepted"))
    assert anonymous.status_code == 401 and anonymous.json() == UNAUTHORIZED_BODY
    # the JWT for feedback names the feedback endpoint, or the service endpoint it belongs to
    as_service = sign(ES, claims(SERVICE + ENDPOINT))
    assert client(app).post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "overridden", "not-a-priority"),
                            headers=bearer(as_service)).status_code == 200
    engine = get_engine(store_url)
    before = len(decision_history(engine))
    mixed = {"feedback": feedback(card["uuid"], "accepted")["feedback"] + feedback("nope", "accepted")["feedback"]}
    assert ehr.post(f"{ENDPOINT}/feedback", json=mixed).status_code == 404
    assert len(decision_history(engine)) == before  # all or nothing
    engine.dispose()


def test_a_failing_store_does_not_pass_its_message_on(app, monkeypatch, caplog):
    import dashboard.store.decisions as decisions  # noqa: PLC0415

    card = cards_of(app, patient_of("cauda_equina"))[0]
    place = "St Elsewhere"
    message = f"INSERT failed for reason 'MRI done at {place}, bed 12'"  # a driver quoting the values

    def failing(*args, **kwargs):
        raise RuntimeError(message)
    monkeypatch.setattr(decisions, "record_decision", failing)
    with caplog.at_level(logging.INFO):
        answer = client(app, ES).post(f"{ENDPOINT}/feedback", json=feedback(card["uuid"], "overridden",
                                                                              comment=f"MRI done at {place}"))
    assert answer.status_code == 500 and answer.json() == {"detail": "internal error; the service log names where"}
    assert place not in caplog.text and place not in answer.text
    assert "feedback failed: RuntimeError (message withheld)" in caplog.text


def test_feedback_after_a_restart_finds_the_card_in_the_store(store_url):
    """A card uuid is a hash: after a restart the service finds it among the stored patients' current prompts."""
    patient_id = patient_of("wound_infection")
    card = cards_of(create_app(store_url, as_of=ANCHOR, auth=auth_config(ES)), patient_id)[-1]
    restarted = create_app(store_url, as_of=ANCHOR, auth=auth_config(ES))
    when = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3, seconds=17)
    body = feedback(card["uuid"], "overridden", "action-completed", when=when)
    answer = client(restarted, ES).post(f"{ENDPOINT}/feedback", json=body)
    assert answer.status_code == 200 and answer.json() == {"recorded": 1, "repeated": 0}
    assert client(restarted, ES).post(f"{ENDPOINT}/feedback", json=body).json() == {"recorded": 0, "repeated": 1}
    engine = get_engine(store_url)
    history = decision_history(engine, patient_id)
    engine.dispose()
    (row,) = [r for _, r in history.iterrows() if r["decided_at"].to_pydatetime() == when]
    assert (row["rule_id"], row["evidence_hash"], row["decision"]) == (
        card["extension"][EXTENSION]["rule_id"], card["extension"][EXTENSION]["evidence_hash"], "already_done")


def test_feedback_on_a_card_for_a_patient_not_in_the_store_is_409(app):
    from dashboard.interop.fhir import records_to_bundle  # noqa: PLC0415
    from tests.interop_helpers import subset  # noqa: PLC0415

    records = subset(demo_records(), [patient_of("cauda_equina")])
    records.patients.loc[:, "patient_id"] = "Q99999"
    for frame in (records.surgeries, records.strength, records.visits):
        frame.loc[:, "patient_id"] = "Q99999"
    from test_cds_hooks import prefetch_of  # noqa: PLC0415 — the EHR's prefetch, as those tests build it

    prefetch = prefetch_of(records_to_bundle(records))
    body = hook(prefetch["patient"]["id"]) | {"prefetch": prefetch}
    response = client(app, ES).post(ENDPOINT, json=body)
    assert response.status_code == 200, response.text
    cards = response.json()["cards"]
    assert cards
    refused = client(app, ES).post(f"{ENDPOINT}/feedback", json=feedback(cards[0]["uuid"], "accepted"))
    assert refused.status_code == 409 and "Q99999" not in refused.text
    stored = cards_of(app, patient_of("plateau_behind"))[0]
    when = datetime.now(UTC) - timedelta(seconds=5)
    both = {"feedback": feedback(stored["uuid"], "overridden", "not-a-priority", when=when)["feedback"]
            + feedback(cards[0]["uuid"], "accepted")["feedback"]}
    assert client(app, ES).post(f"{ENDPOINT}/feedback", json=both).status_code == 409  # nothing stored
    alone = client(app, ES).post(f"{ENDPOINT}/feedback",
                                 json=feedback(stored["uuid"], "overridden", "not-a-priority", when=when))
    assert alone.json() == {"recorded": 1, "repeated": 0}  # the refused request did not count it as sent


# -------------------------------------------------------------------------------------- the command
def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dashboard", "serve-cds", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_serve_cds_refuses_to_start_without_authentication(tmp_path, monkeypatch, capsys):
    """The refusals come before the service starts, so the command runs through dashboard.cli.main in this process
    (a service that started anyway fails the test instead of serving); the real process's exit code and its start
    are checked with one refusal here and in the test below."""
    def started(*_args, **_kwargs):
        raise AssertionError("the service started")
    monkeypatch.setattr("dashboard.interop.cds_hooks.serve", started)

    ambient = os.environ.get("SPINE_DASHBOARD_MODE")

    def refused(*args: str, mode: str | None = ambient) -> tuple[int, str]:  # in the environment given, as run_cli
        if mode is None:
            monkeypatch.delenv("SPINE_DASHBOARD_MODE", raising=False)
        else:
            monkeypatch.setenv("SPINE_DASHBOARD_MODE", mode)
        capsys.readouterr()
        code = main(["serve-cds", *args])
        return code, capsys.readouterr().err

    with pytest.raises(SystemExit) as helped:
        main(["serve-cds", "--help"])
    assert helped.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--auth-config", "--service-url", "--allowed-host", "--max-body-bytes", "--no-auth"):
        assert option in help_text
    missing = run_cli("--port", "1")  # the real process
    assert missing.returncode == 2 and "--auth-config" in missing.stderr
    code, production = refused("--no-auth", mode="production")
    assert code == 2 and "demo mode" in production
    code, exposed = refused("--no-auth", "--host", "0.0.0.0", mode="demo")  # noqa: S104
    assert code == 2 and "loopback" in exposed
    config = Path(__file__).parents[1] / "fixtures" / "no-such-cds-auth.yaml"
    code, unreadable = refused("--auth-config", str(config))
    assert code == 2 and "cannot be read" in unreadable
    (tmp_path / "cds-auth.json").write_text(json.dumps({"issuers": [{"iss": ISSUER, "jwks": jwks(ES)}]}),
                                            encoding="utf-8")
    code, everywhere = refused("--auth-config", str(tmp_path / "cds-auth.json"), "--host", "0.0.0.0")  # noqa: S104
    assert code == 2 and "--service-url" in everywhere  # the JWT audience must be known


def test_serve_cds_without_authentication_says_so_at_start(store_url):
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "serve-cds", "--no-auth", "--port", str(port), "--database", store_url],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "SPINE_DASHBOARD_MODE": "demo"},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stderr.readline()
    finally:
        stop(process)
    assert "WITHOUT AUTHENTICATION" in first + process.stderr.read()


def test_the_documented_example_works(tmp_path, monkeypatch, capsys):
    """docs/interoperability.md: the key pair and token made as the docs say pass the documented configuration."""
    docs = (Path(__file__).parents[2] / "docs" / "interoperability.md").read_text(encoding="utf-8")

    def block(opening: str) -> str:
        start = docs.index(opening) + len(opening.split("\n")[0]) + 1
        return docs[start: docs.index("```", start)]
    (tmp_path / "cds-auth.yaml").write_text(block("```yaml\n# cds-auth.yaml"), encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    made: dict = {}
    exec(block("```python\nimport json, time, uuid"), made)  # noqa: S102 — the documented snippet, as written
    config = load_auth_config(tmp_path / "cds-auth.yaml")
    assert "https://ehr.hospital.example/" in config.issuers and config.service_url == "https://cds.hospital.example"
    application = create_app(None, as_of=ANCHOR, auth=config)
    from fastapi.testclient import TestClient  # noqa: PLC0415

    ehr = TestClient(application, base_url="https://cds.hospital.example")
    answer = ehr.post(ENDPOINT, json=hook("Unknown1"), headers=bearer(made["token"]))
    assert answer.status_code == 200 and answer.json() == {"cards": []}
    assert ehr.post(ENDPOINT, json=hook("Unknown1"), headers=bearer(made["token"])).status_code == 401  # same jti
