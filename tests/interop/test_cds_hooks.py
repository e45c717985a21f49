"""CDS Hooks over real HTTP on localhost: discovery, and patient-view cards that match `assess` exactly."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from dashboard.clinical.assessment import assess, to_json_dict
from dashboard.clinical.wording import plain
from dashboard.interop.cds_hooks import INDICATOR, PREFETCH, SUMMARY_LIMIT, create_app, markdown_escape
from dashboard.interop.fhir import records_to_bundle
from tests.cds_auth_helpers import ISSUER, Signer, auth_config, ec_keys, jwks
from tests.cds_auth_helpers import client as cds_client
from tests.interop_helpers import ROOT, SCENARIOS, demo_records, demo_store, one_per_scenario, subset
from tests.live_server import free_port, stop

ANCHOR = date(2026, 11, 20)  # the demo cohort's anchor day (data/demo/README.md)
EXTENSION = "example.spine-dashboard.prompt"
FIXTURES = Path(__file__).parents[1] / "fixtures"  # copies of ../shared/fixtures, unchanged (fixtures/SOURCES.md)
KEYS = ec_keys()  # the EHR's signing key, made for this test run (every request carries a JWT it signed)


def cds_app(store_url: str, **kwargs) -> FastAPI:
    """The service as deployed: the JWT check on, the test EHR trusted."""
    kwargs.setdefault("auth", auth_config(KEYS))
    return create_app(store_url, as_of=kwargs.pop("as_of", ANCHOR), **kwargs)


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    return demo_store(tmp_path_factory.mktemp("cds"))


@pytest.fixture(scope="module")
def service(store_url: str) -> Iterator[httpx.Client]:
    """The app under uvicorn in a thread, on a free localhost port; a real HTTP client talks to it."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = uvicorn.Server(uvicorn.Config(cds_app(store_url, auth=auth_config(KEYS, service_url=base)),
                                           host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the CDS service did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=base, timeout=60, auth=Signer(KEYS, base)) as http:
        yield http
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def expected() -> dict[str, dict]:
    """What `assess` says about every demo patient on the anchor day, by patient."""
    result = to_json_dict(assess(demo_records(), as_of=ANCHOR))
    return {p["patient_id"]: p for p in result["patients"]}


def as_served(bundle: dict, base: str = "https://ehr.example/fhir") -> dict:
    """An exported Bundle as a FHIR server holds it: `Type/id` references and `base/Type/id` fullUrls."""
    bundle = copy.deepcopy(bundle)
    local = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in bundle["entry"]}
    for entry in bundle["entry"]:
        entry["fullUrl"] = f"{base}/{local[entry['fullUrl']]}"
        for element in ("subject", "encounter"):
            reference = entry["resource"].get(element, {}).get("reference")
            if reference in local:
                entry["resource"][element] = {"reference": local[reference]}
    return bundle


def prefetch_of(bundle: dict) -> dict:
    """A Bundle as an EHR answers the four prefetch templates: the Patient, and one searchset per type."""
    bundle = as_served(bundle)

    def searchset(kind: str) -> dict:
        found = [e for e in bundle["entry"] if e["resource"]["resourceType"] == kind]
        return {"resourceType": "Bundle", "type": "searchset", "total": len(found), "entry": found}
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    return {"patient": patients[0] if len(patients) == 1 else searchset("Patient"),
            "procedures": searchset("Procedure"), "encounters": searchset("Encounter"),
            "observations": searchset("Observation")}


def hook(patient_id: str, prefetch: dict | None = None) -> dict:
    body = {"hook": "patient-view", "hookInstance": str(uuid.uuid4()),
            "context": {"userId": "Practitioner/example", "patientId": patient_id}}
    if prefetch is not None:
        body["prefetch"] = prefetch
    return body


def assert_cards_match(cards: list[dict], patient: dict) -> None:
    """One card per prompt, same order, rule, urgency, evidence and source."""
    prompts = patient["prompts"]
    assert [c["extension"][EXTENSION]["rule_id"] for c in cards] == [p["rule_id"] for p in prompts]
    for card, prompt in zip(cards, prompts, strict=True):
        facts = card["extension"][EXTENSION]
        assert (facts["category"], facts["modality"], facts["urgency"]) == (prompt["category"], prompt["modality"],
                                                                          prompt["urgency"])
        assert facts["evidence"] == prompt["evidence"]
        assert card["indicator"] == INDICATOR[prompt["urgency"]]
        assert len(card["summary"]) < SUMMARY_LIMIT
        assert prompt["summary"][:40] in card["summary"]
        for line in prompt["evidence"]:
            assert f"- {markdown_escape(plain(line))}" in card["detail"]
        assert markdown_escape(prompt["source"]) in card["detail"]
        assert card["source"]["label"] and card["source"]["url"].endswith(f"#{prompt['rule_id']}")
        assert card["source"]["topic"]["code"] == prompt["rule_id"]
        uuid.UUID(card["uuid"])


def test_discovery_lists_the_patient_view_service(service: httpx.Client):
    response = service.get("/cds-services")
    assert response.status_code == 200
    (entry,) = response.json()["services"]
    assert entry["hook"] == "patient-view" and entry["id"] == "patient-view"
    assert entry["prefetch"] == PREFETCH
    # the subset the specification recommends: one instance read and type searches on the patient in context
    assert entry["prefetch"]["patient"] == "Patient/{{context.patientId}}"
    for key in ("procedures", "encounters", "observations"):
        kind, query = entry["prefetch"][key].split("?")
        assert kind in ("Procedure", "Encounter", "Observation") and query == "patient={{context.patientId}}"
    assert entry["title"] and entry["description"]


@pytest.mark.parametrize("patient_id", one_per_scenario())
def test_cards_from_the_store_match_assess(service: httpx.Client, expected: dict, patient_id: str):
    response = service.post("/cds-services/patient-view", json=hook(patient_id))
    assert response.status_code == 200
    cards = response.json()["cards"]
    assert_cards_match(cards, expected[patient_id])
    again = service.post("/cds-services/patient-view", json=hook(patient_id)).json()["cards"]
    assert [c["uuid"] for c in again] == [c["uuid"] for c in cards]  # stable for the same evidence


def test_every_urgency_reaches_its_indicator(service: httpx.Client, expected: dict):
    seen = set()
    for scenario in ("cauda_equina", "new_deficit_instrumented", "plateau_behind"):
        patient_id = SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]
        cards = service.post("/cds-services/patient-view", json=hook(patient_id)).json()["cards"]
        assert_cards_match(cards, expected[patient_id])
        seen |= {c["indicator"] for c in cards}
    assert seen == {"critical", "warning", "info"}


@pytest.mark.parametrize("scenario", ["cauda_equina", "recurrent_radicular", "late_hardware"])
def test_prefetched_bundle_gives_the_same_cards(service: httpx.Client, expected: dict, scenario: str):
    patient_id = SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]
    bundle = records_to_bundle(subset(demo_records(), [patient_id]))  # pseudonymous, like an EHR would send
    from_store = service.post("/cds-services/patient-view", json=hook(patient_id)).json()["cards"]
    prefetched = service.post("/cds-services/patient-view", json=hook(patient_id, prefetch_of(bundle)))
    assert prefetched.status_code == 200
    assert prefetched.json()["cards"] == from_store
    assert_cards_match(prefetched.json()["cards"], expected[patient_id])


def test_invalid_prefetch_says_why_there_is_no_checklist(service: httpx.Client):
    patient_id = one_per_scenario()[0]
    bundle = records_to_bundle(subset(demo_records(), [patient_id]))
    strength = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
                    and "valueCodeableConcept" in e["resource"])
    strength["resource"]["valueCodeableConcept"]["coding"][0]["code"] = "7"
    (card,) = service.post("/cds-services/patient-view", json=hook(patient_id, prefetch_of(bundle))).json()["cards"]
    assert card["indicator"] == "warning" and "1 error(s)" in card["summary"]
    assert "is not an MRC grade" in card["detail"]


def test_unknown_patient_wrong_hook_and_unknown_service(service: httpx.Client):
    assert service.post("/cds-services/patient-view", json=hook("NOBODY")).json() == {"cards": []}
    wrong = hook("P00001") | {"hook": "order-select"}
    assert service.post("/cds-services/patient-view", json=wrong).status_code == 400
    assert service.post("/cds-services/other", json=hook("P00001")).status_code == 404
    assert service.post("/cds-services/patient-view", json={"hook": "patient-view"}).status_code == 422


def test_the_documented_command_serves_the_same_cards(store_url: str, expected: dict, tmp_path: Path):
    """`python -m dashboard serve-cds` as a real process: discovery and one patient's cards, with a JWT."""
    port = free_port()
    (tmp_path / "ehr-jwks.json").write_text(json.dumps(jwks(KEYS)), encoding="utf-8")
    (tmp_path / "cds-auth.yaml").write_text(f"issuers:\n  - iss: {ISSUER}\n    jwks_file: ehr-jwks.json\n",
                                            encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "serve-cds", "--port", str(port), "--database", store_url,
         "--as-of", ANCHOR.isoformat(), "--source-url", "https://hospital.example/rules",
         "--cors-origin", "https://ehr.example", "--auth-config", str(tmp_path / "cds-auth.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, timeout=60, auth=Signer(KEYS, base)) as client:
            while True:
                assert process.poll() is None, process.stderr.read().decode()
                try:
                    if client.get("/cds-services").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve-cds did not answer within 60 s"
                time.sleep(0.2)
            patient_id = SCENARIOS.loc[SCENARIOS["scenario"] == "cauda_equina", "patient_id"].iloc[0]
            cards = client.post("/cds-services/patient-view", json=hook(patient_id)).json()["cards"]
            assert_cards_match(cards, expected[patient_id])
            # (Was the wound-infection patient: infection is now urgent — wound review, CRP/ESR and cultures
            # first — and an emergency only with a new neurological deficit; clinical review 2026-12.)
            assert cards and cards[0]["indicator"] == "critical"
            assert cards[0]["source"]["url"].startswith("https://hospital.example/rules#")
            cors = client.get("/cds-services", headers={"Origin": "https://ehr.example"})
            assert cors.headers["access-control-allow-origin"] == "https://ehr.example"
            anonymous = httpx.post(f"{base}/cds-services/patient-view", json=hook(patient_id), timeout=60)
            assert anonymous.status_code == 401 and patient_id not in anonymous.text
    finally:
        stop(process)
    log = process.stderr.read().decode()
    names = demo_records().patients["name"].dropna().tolist()
    assert not any(name in log for name in names)  # the access log carries no identifying data


# ------------------------------------------------------------------------------ wrong-patient refusals
def hl7(name: str) -> dict:
    return json.loads((FIXTURES / "hl7-r4" / name).read_text(encoding="utf-8"))


def patient_of(scenario: str) -> str:
    return SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]


def identified_bundle(*patient_ids: str) -> dict:
    """What an EHR holds: names and MRNs included."""
    return records_to_bundle(subset(demo_records(), list(patient_ids)), identified=True)


def traces_of(patient_id: str, expected: dict) -> list[str]:
    """Everything that would show a patient's record: id, name, MRN and the evidence of its prompts."""
    row = demo_records().patients.set_index("patient_id").loc[patient_id]
    evidence = [line for prompt in expected[patient_id]["prompts"] for line in prompt["evidence"]]
    assert row["name"] and row["mrn"] and evidence
    return [patient_id, row["name"], row["mrn"], *evidence]


def assert_refused(response: httpx.Response, log: str, traces: list[str]) -> None:
    """412 (CDS Hooks: the necessary FHIR data cannot be had), no cards, nothing of the other patient."""
    assert response.status_code == 412, response.text
    body = response.json()
    assert "cards" not in body and isinstance(body["detail"], str) and body["detail"]
    for trace in traces:
        assert trace not in response.text
        assert trace not in log


@pytest.fixture
def other_and_requested(expected: dict) -> tuple[str, str]:
    """A patient with a critical card (the other one) and the patient whose chart is open."""
    other, requested = patient_of("cauda_equina"), patient_of("plateau_behind")
    assert any(p["urgency"] == "emergency" for p in expected[other]["prompts"])
    return other, requested


def test_prefetch_of_another_patient_is_refused(service, expected, other_and_requested, caplog):
    other, requested = other_and_requested
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view",
                                json=hook(requested, prefetch_of(identified_bundle(other))))
    assert_refused(response, caplog.text, traces_of(other, expected))
    assert "not the patient in context" in response.json()["detail"]


def test_a_bundle_with_two_patients_is_refused(service, expected, other_and_requested, caplog):
    other, requested = other_and_requested
    both = identified_bundle(other, requested)
    for patient_id, someone_else in ((requested, other), (other, requested)):
        with caplog.at_level(logging.DEBUG):
            response = service.post("/cds-services/patient-view", json=hook(patient_id, prefetch_of(both)))
        assert_refused(response, caplog.text, traces_of(someone_else, expected))
        assert "more than one Patient" in response.json()["detail"]


@pytest.mark.parametrize("reference", ["fullUrl", "relative"])
def test_resources_about_another_patient_are_refused(service, expected, other_and_requested, caplog, reference):
    """The requested Patient, with the other patient's Procedure, Encounters and Observations."""
    other, requested = other_and_requested
    mixed = identified_bundle(requested)
    foreign = [copy.deepcopy(e) for e in identified_bundle(other)["entry"]
               if e["resource"]["resourceType"] != "Patient"]
    if reference == "relative":
        for entry in foreign:
            entry["resource"]["subject"] = {"reference": f"Patient/{other}"}
    mixed["entry"] += foreign
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view", json=hook(requested, prefetch_of(mixed)))
    assert_refused(response, caplog.text, traces_of(other, expected))
    assert "another subject" in response.json()["detail"]


def test_resources_of_another_patient_without_any_patient_are_refused(service, expected, other_and_requested, caplog):
    other, requested = other_and_requested
    bundle = identified_bundle(other)
    bundle["entry"] = [e for e in bundle["entry"] if e["resource"]["resourceType"] != "Patient"]
    for entry in bundle["entry"]:
        entry["resource"]["subject"] = {"reference": f"Patient/{other}"}
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view", json=hook(requested, {"records": bundle}))
    assert_refused(response, caplog.text, traces_of(other, expected))


def test_resources_without_a_subject_are_refused(service, other_and_requested):
    _, requested = other_and_requested
    bundle = identified_bundle(requested)
    next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Procedure")["resource"].pop("subject")
    response = service.post("/cds-services/patient-view", json=hook(requested, prefetch_of(bundle)))
    assert response.status_code == 412 and "has no subject" in response.json()["detail"]


ROEL = ["Roel", "Roelof", "Bor", "f201"]  # Patient/f201 of the HL7 examples: his names and id


@pytest.mark.parametrize("prefetch", [
    pytest.param({"patient": "patient-example-f201-roel.json"}, id="other Patient"),
    pytest.param({"patient": "patient-example.json", "temperature": "observation-example-f202-temperature.json"},
                 id="other patient's Observation"),
    pytest.param({"encounter": "encounter-example-f201-20130404.json",
                  "procedure": "procedure-example-f201-tpf.json"}, id="no Patient, other patient's data"),
])
def test_official_hl7_examples_of_another_patient_are_refused(service, caplog, prefetch):
    """Real resources as HL7 publishes them (subject display holds the name): refused for Patient/example."""
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view",
                                 json=hook("example", {key: hl7(name) for key, name in prefetch.items()}))
    assert_refused(response, caplog.text, ROEL)


def test_official_hl7_examples_are_accepted_for_their_own_patient_only(service, caplog):
    """Patient/example with its Glasgow coma score Observation (subject display: his name)."""
    glasgow = {"resourceType": "Bundle", "type": "searchset",
               "entry": [{"resource": hl7("observation-example-glasgow.json")}]}
    own = {"patient": hl7("patient-example.json"), "procedures": None, "encounters": None, "observations": glasgow}
    accepted = service.post("/cds-services/patient-view", json=hook("example", own))
    assert accepted.status_code == 200 and accepted.json() == {"cards": []}  # no spine operation: no prompt
    with caplog.at_level(logging.DEBUG):
        refused = service.post("/cds-services/patient-view",
                               json=hook("f201", own | {"patient": hl7("patient-example-f201-roel.json")}))
    assert_refused(refused, caplog.text, ["Chalmers", "Peter", "Patient/example"])


def test_a_synthea_patient_is_refused_for_another_synthea_patient(service, caplog):
    lines = (FIXTURES / "synthea-bulk-10" / "Patient.000.ndjson").read_text(encoding="utf-8").splitlines()
    first, second = json.loads(lines[0]), json.loads(lines[1])
    traces = [first["id"], *(n["family"] for n in first["name"]), *(g for n in first["name"] for g in n["given"])]
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view", json=hook(second["id"], {"patient": first}))
    assert_refused(response, caplog.text, traces)


def test_the_requested_patient_with_relative_references_gets_its_cards(service, expected):
    """References as a FHIR server writes them (`Patient/<id>`) tie the data to the patient in context."""
    patient_id = patient_of("cauda_equina")
    bundle = identified_bundle(patient_id)
    for entry in bundle["entry"]:
        if entry["resource"]["resourceType"] != "Patient":
            entry["resource"]["subject"] = {"reference": f"Patient/{patient_id}"}
    response = service.post("/cds-services/patient-view", json=hook(patient_id, prefetch_of(bundle)))
    assert response.status_code == 200
    assert_cards_match(response.json()["cards"], expected[patient_id])


# ---------------------------------------------------------------- incomplete prefetch and the FHIR server
TOKEN = "opaque-fhir-token-5f2c"  # noqa: S105 — a test token
PAGE = 4  # entries per search page of the stand-in: every demo patient's searches are paged


class FhirStandIn:
    """A local FHIR server holding some demo patients: reads, paged type searches, a bearer token."""

    def __init__(self, patient_ids: list[str]) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/fhir"
        self.requests: list[tuple[str, str | None]] = []  # (path?query, Authorization header)
        self.delay = 0.0
        self.mixed_in: list[dict] = []  # resources added to every search result (a confused server)
        served = as_served(records_to_bundle(subset(demo_records(), patient_ids), identified=True), self.base)
        self.resources = [e["resource"] for e in served["entry"]]
        app = FastAPI()

        def outcome(status: int, text: str) -> JSONResponse:
            return JSONResponse({"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "not-found" if status == 404 else "security", "diagnostics": text}]},
                status_code=status)

        @app.get("/fhir/{kind}/{resource_id}")
        def read(kind: str, resource_id: str, request: Request):
            self.requests.append((request.url.path, request.headers.get("authorization")))
            time.sleep(self.delay)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return outcome(401, "invalid token")
            found = [r for r in self.resources if r["resourceType"] == kind and r["id"] == resource_id]
            return JSONResponse(found[0]) if found else outcome(404, "not found")

        @app.get("/fhir/{kind}")
        def search(kind: str, patient: str, request: Request, page: int = 0):
            self.requests.append((f"{request.url.path}?{request.url.query}", request.headers.get("authorization")))
            time.sleep(self.delay)
            if request.headers.get("authorization") != f"Bearer {TOKEN}":
                return outcome(401, "invalid token")
            found = [r for r in self.resources if r["resourceType"] == kind
                     and r.get("subject", {}).get("reference") == f"Patient/{patient}"]
            found += [r for r in self.mixed_in if r["resourceType"] == kind]
            bundle = {"resourceType": "Bundle", "type": "searchset", "total": len(found),
                      "link": [{"relation": "self", "url": str(request.url)}],
                      "entry": [{"fullUrl": f"{self.base}/{kind}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                                for r in found[page * PAGE:(page + 1) * PAGE]]}
            if (page + 1) * PAGE < len(found):
                bundle["link"].append({"relation": "next",
                                       "url": f"{self.base}/{kind}?patient={patient}&page={page + 1}"})
            return JSONResponse(bundle)

        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def first_page(self, kind: str, patient_id: str) -> dict:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            return client.get(f"{self.base}/{kind}", params={"patient": patient_id}).json()


@pytest.fixture(scope="module")
def fhir() -> Iterator[FhirStandIn]:
    stand_in = FhirStandIn([patient_of(s) for s in ("cauda_equina", "recurrent_radicular", "plateau_behind")])
    stand_in.thread.start()
    deadline = time.monotonic() + 30
    while not stand_in.server.started:
        assert time.monotonic() < deadline and stand_in.thread.is_alive(), "the FHIR stand-in did not start"
        time.sleep(0.05)
    yield stand_in
    stand_in.server.should_exit = True
    stand_in.thread.join(timeout=10)


def with_server(body: dict, base: str, token: str = TOKEN, **authorization) -> dict:
    return body | {"fhirServer": base, "fhirAuthorization": {
        "access_token": token, "token_type": "Bearer", "expires_in": 300,
        "scope": "user/Patient.read user/Observation.read user/Procedure.read user/Encounter.read",
        "subject": "spine-dashboard-cds"} | authorization}


def only_patient(patient_id: str) -> dict:
    return {"patient": prefetch_of(records_to_bundle(subset(demo_records(), [patient_id])))["patient"]}


@pytest.mark.parametrize("prefetched", ["patient only", "nothing"])
def test_what_is_not_prefetched_is_fetched_from_the_fhir_server(service, expected, fhir, prefetched, caplog):
    patient_id = patient_of("cauda_equina")
    fhir.requests.clear()
    body = hook(patient_id, only_patient(patient_id) if prefetched == "patient only" else None)
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view", json=with_server(body, fhir.base))
    assert response.status_code == 200, response.text
    assert_cards_match(response.json()["cards"], expected[patient_id])
    assert response.json()["cards"][0]["indicator"] == "critical"
    paths = [path for path, _ in fhir.requests]
    for kind in ("Procedure", "Encounter", "Observation"):
        assert f"/fhir/{kind}?patient={patient_id}" in paths  # the template, as the specification writes it
    assert any("page=1" in path for path in paths)  # paged searches are followed to the end
    assert (f"/fhir/Patient/{patient_id}" in paths) == (prefetched == "nothing")
    assert {auth for _, auth in fhir.requests} == {f"Bearer {TOKEN}"}
    assert TOKEN not in response.text and TOKEN not in caplog.text


def test_a_paged_prefetch_is_completed_from_the_fhir_server(service, expected, fhir):
    patient_id = patient_of("recurrent_radicular")
    prefetch = {"patient": only_patient(patient_id)["patient"],
                **{key: fhir.first_page(kind, patient_id) for key, kind in
                   (("procedures", "Procedure"), ("encounters", "Encounter"), ("observations", "Observation"))}}
    assert any(link["relation"] == "next" for link in prefetch["observations"]["link"])
    fhir.requests.clear()
    response = service.post("/cds-services/patient-view", json=with_server(hook(patient_id, prefetch), fhir.base))
    assert response.status_code == 200, response.text
    assert_cards_match(response.json()["cards"], expected[patient_id])
    assert fhir.requests and all("page=" in path for path, _ in fhir.requests)  # only the missing pages
    # without a FHIR server the same first pages are refused, not assessed as if complete
    refused = service.post("/cds-services/patient-view", json=hook(patient_id, prefetch))
    assert refused.status_code == 412 and "one page of several" in refused.json()["detail"]


@pytest.mark.parametrize(("prefetch", "why"), [
    pytest.param("patient only", "prefetch 'procedures' is missing (and 2 more)", id="Patient only"),
    pytest.param("empty", "prefetch 'patient' is missing (and 3 more)", id="empty prefetch"),
    pytest.param("outcome", "prefetch 'observations' holds an OperationOutcome", id="OperationOutcome"),
    pytest.param("null patient", "is not there", id="null Patient"),
])
def test_incomplete_prefetch_without_a_fhir_server_is_412(service, prefetch, why):
    patient_id = patient_of("cauda_equina")
    full = prefetch_of(records_to_bundle(subset(demo_records(), [patient_id])))
    body = {"patient only": only_patient(patient_id), "empty": {},
            "outcome": full | {"observations": {"resourceType": "OperationOutcome", "issue": [
                {"severity": "error", "code": "timeout"}]}},
            "null patient": full | {"patient": None}}[prefetch]
    response = service.post("/cds-services/patient-view", json=hook(patient_id, body))
    assert response.status_code == 412
    assert why in response.json()["detail"]


def test_null_searches_are_empty_results(service, expected):
    """`null` for a search template: the client has no such data. The checklist says what that means."""
    patient_id = patient_of("cauda_equina")
    prefetch = prefetch_of(records_to_bundle(subset(demo_records(), [patient_id]))) | {"observations": None}
    response = service.post("/cds-services/patient-view", json=hook(patient_id, prefetch))
    assert response.status_code == 200


def test_fhir_server_problems_are_412_and_never_echo_the_token(service, fhir, caplog):
    patient_id = patient_of("plateau_behind")
    body = hook(patient_id, only_patient(patient_id))
    with caplog.at_level(logging.DEBUG):
        refused = service.post("/cds-services/patient-view", json=with_server(body, fhir.base, token="wrong-token-9"))
    assert refused.status_code == 412 and "HTTP 401" in refused.json()["detail"]
    assert "wrong-token-9" not in refused.text and "wrong-token-9" not in caplog.text
    plain = service.post("/cds-services/patient-view", json=with_server(body, "http://ehr.example/fhir"))
    assert plain.status_code == 412 and "https" in plain.json()["detail"]
    nobody = service.post("/cds-services/patient-view", json=with_server(hook("NOBODY"), fhir.base))
    assert nobody.status_code == 412 and "not there" in nobody.json()["detail"]


def test_a_next_link_elsewhere_gets_no_token(service, fhir):
    patient_id = patient_of("recurrent_radicular")
    prefetch = prefetch_of(records_to_bundle(subset(demo_records(), [patient_id])))
    elsewhere = f"http://127.0.0.1:{free_port()}/fhir/Observation?patient={patient_id}&page=1"
    prefetch["observations"]["link"] = [{"relation": "next", "url": elsewhere}]
    response = service.post("/cds-services/patient-view", json=with_server(hook(patient_id, prefetch), fhir.base))
    assert response.status_code == 412 and "outside fhirServer" in response.json()["detail"]


def test_a_slow_fhir_server_is_412_within_the_timeout(store_url, fhir):
    patient_id = patient_of("plateau_behind")
    client = cds_client(cds_app(store_url, fhir_timeout=0.5), KEYS)
    fhir.delay = 2.0
    try:
        started = time.monotonic()
        response = client.post("/cds-services/patient-view",
                               json=with_server(hook(patient_id, only_patient(patient_id)), fhir.base))
        took = time.monotonic() - started
    finally:
        fhir.delay = 0.0
    assert response.status_code == 412 and "did not answer within 0.5 s" in response.json()["detail"]
    assert took < 1.9  # one timeout, not one per template


def test_fetched_data_is_checked_like_prefetched_data(service, expected, fhir):
    """A token restricted to another patient, or a server answering with another patient's data: refused."""
    patient_id, other = patient_of("plateau_behind"), patient_of("cauda_equina")
    body = hook(patient_id, only_patient(patient_id))
    restricted = service.post("/cds-services/patient-view", json=with_server(body, fhir.base, patient=other))
    assert restricted.status_code == 412 and "another patient" in restricted.json()["detail"]
    assert other not in restricted.text
    fhir.mixed_in = [r for r in fhir.resources if r["resourceType"] == "Observation"
                     and r["subject"]["reference"] == f"Patient/{other}"]
    try:  # a confused server answers this patient's search with the other patient's Observations too
        mixed = service.post("/cds-services/patient-view", json=with_server(body, fhir.base))
    finally:
        fhir.mixed_in = []
    assert mixed.status_code == 412 and "another subject" in mixed.json()["detail"]
    for trace in traces_of(other, expected):
        assert trace not in mixed.text


# ------------------------------------------------------------------------------------ error bodies
def test_validation_errors_name_location_and_type_but_never_echo_the_request(service, caplog):
    """FastAPI's own 422 repeats the invalid input: here the token, the Patient's name and MRN."""
    patient_id = patient_of("cauda_equina")
    row = demo_records().patients.set_index("patient_id").loc[patient_id]
    secrets = [TOKEN, row["name"], row["mrn"]]
    body = with_server(hook(patient_id, prefetch_of(identified_bundle(patient_id))), "https://ehr.example/fhir")
    del body["context"]["patientId"]
    body["fhirAuthorization"]["expires_in"] = "never"
    with caplog.at_level(logging.DEBUG):
        response = service.post("/cds-services/patient-view", json=body)
        broken = service.post("/cds-services/patient-view", content=json.dumps(body)[:-40].encode(),
                              headers={"Content-Type": "application/json"})
        not_an_object = service.post("/cds-services/patient-view", json=[row["name"], TOKEN])
    assert response.status_code == 422
    assert {(p["location"], p["type"]) for p in response.json()["detail"]} == {
        ("body.context.patientId", "missing"), ("body.fhirAuthorization.expires_in", "int_parsing")}
    assert broken.status_code == 422 and broken.json()["detail"][0]["type"] == "json_invalid"
    assert not_an_object.status_code == 422
    for answer in (response, broken, not_an_object):
        assert set(answer.json()) == {"detail", "message"}
        for secret in secrets:
            assert secret not in answer.text
    for secret in secrets:
        assert secret not in caplog.text


def test_an_internal_error_does_not_pass_its_message_on(store_url, monkeypatch, caplog):
    """An exception message may quote a record (pandas quotes values): neither the answer nor the log holds it."""
    import dashboard.interop.cds_hooks as cds  # noqa: PLC0415

    patient_id = patient_of("cauda_equina")
    row = demo_records().patients.set_index("patient_id").loc[patient_id]
    message = f"cannot compare {row['name']!r} ({row['mrn']})"

    def failing(*args, **kwargs):
        raise ValueError(message)

    monkeypatch.setattr(cds, "assess", failing)
    client = cds_client(cds_app(store_url), KEYS, raise_server_exceptions=False)
    with caplog.at_level(logging.INFO):
        response = client.post("/cds-services/patient-view", json=hook(patient_id))
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the service log names where"}
    for text in (response.text, caplog.text):
        assert row["name"] not in text and row["mrn"] not in text
    assert "patient-view failed: ValueError (message withheld)" in caplog.text and "in cards" in caplog.text


# ------------------------------------------------------------------ hook rules, source, CORS, auth seam
@pytest.mark.parametrize(("change", "status", "why"), [
    pytest.param({"hookInstance": "call-1"}, 400, "hookInstance must be a UUID", id="hookInstance not a UUID"),
    pytest.param({"context": {"patientId": "P00001", "userId": "Dr Smith"}}, 400, "context.userId", id="userId text"),
    pytest.param({"context": {"patientId": "P00001", "userId": "Device/7"}}, 400, "context.userId", id="userId Device"),
    pytest.param({"context": {"patientId": "P00001"}}, 422, None, id="userId missing"),
    pytest.param({"fhirAuthorization": {"access_token": TOKEN, "token_type": "Bearer", "expires_in": 300,
                                        "scope": "user/Patient.read", "subject": "cds"}}, 400, "without fhirServer",
                 id="token without fhirServer"),
])
def test_requests_that_break_the_hook_rules_are_refused(service, change, status, why):
    response = service.post("/cds-services/patient-view", json=hook("P00001") | change)
    assert response.status_code == status
    if why:
        assert why in response.json()["detail"]
    assert TOKEN not in response.text


def test_the_user_in_context(service, expected):
    patient_id = patient_of("cauda_equina")
    body = hook(patient_id)
    for user in ("PractitionerRole/123", "Practitioner/abc"):  # the hook definition's examples
        body["context"]["userId"] = user
        assert_cards_match(service.post("/cds-services/patient-view", json=body).json()["cards"], expected[patient_id])
    for user in ("Patient/123", "RelatedPerson/9"):  # a patient or proxy: the checklist is for clinicians
        body["context"]["userId"] = user
        response = service.post("/cds-services/patient-view", json=body)
        assert response.status_code == 200 and response.json() == {"cards": []}


def test_the_source_url_is_configurable(store_url):
    client = cds_client(cds_app(store_url, source_url="https://hospital.example/cds/rules"), KEYS)
    cards = client.post("/cds-services/patient-view", json=hook(patient_of("cauda_equina"))).json()["cards"]
    assert cards and all(c["source"]["url"].startswith("https://hospital.example/cds/rules#") for c in cards)
    with pytest.raises(ValueError, match="absolute"):
        create_app(store_url, source_url="rule-catalogue.md")


def test_cors_only_for_the_allowed_origins(store_url):
    preflight = {"Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"}
    allowed = cds_client(cds_app(store_url, cors_origins=["https://ehr.example"]), KEYS)
    ok = allowed.options("/cds-services/patient-view", headers={"Origin": "https://ehr.example", **preflight})
    assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://ehr.example"
    assert "authorization" in ok.headers["access-control-allow-headers"].lower()
    assert "access-control-allow-credentials" not in ok.headers
    other = allowed.options("/cds-services/patient-view", headers={"Origin": "https://evil.example", **preflight})
    assert other.status_code == 400 and "access-control-allow-origin" not in other.headers
    got = allowed.get("/cds-services", headers={"Origin": "https://ehr.example"})
    assert got.headers["access-control-allow-origin"] == "https://ehr.example"
    closed = cds_client(cds_app(store_url), KEYS)  # default: no CORS at all
    assert "access-control-allow-origin" not in closed.get("/cds-services", headers={"Origin": "https://ehr.example"}).headers
    with pytest.raises(ValueError, match="no '\\*'"):
        create_app(store_url, cors_origins=["*"])


def test_an_authorize_hook_sees_every_request_first(store_url):
    """A site's extra rule (`authorize`) runs after the JWT check and can still refuse before anything is read."""
    from fastapi import HTTPException  # noqa: PLC0415

    seen = []

    def refuse(request: Request) -> None:
        seen.append(request.url.path)
        raise HTTPException(status_code=401, detail="no valid JWT")

    client = cds_client(cds_app(store_url, authorize=refuse), KEYS)
    assert client.get("/cds-services").status_code == 401
    assert client.post("/cds-services/patient-view", json=hook(patient_of("cauda_equina"))).status_code == 401
    assert seen == ["/cds-services", "/cds-services/patient-view"]
