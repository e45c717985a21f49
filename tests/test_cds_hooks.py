"""CDS Hooks over real HTTP on localhost: discovery, and patient-view cards that match `assess` exactly."""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
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
from interop_helpers import ROOT, SCENARIOS, demo_records, one_per_scenario, subset

from dashboard.core.assessment import assess, to_json_dict
from dashboard.interop.cds_hooks import INDICATOR, SUMMARY_LIMIT, create_app, markdown_escape
from dashboard.interop.fhir import records_to_bundle
from dashboard.store import get_engine, import_records

ANCHOR = date(2026, 11, 20)  # the demo cohort's anchor day (data/demo/README.md)
EXTENSION = "example.spine-dashboard.prompt"
FIXTURES = Path(__file__).parent / "fixtures"  # copies of ../shared/fixtures, unchanged (fixtures/SOURCES.md)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('cds') / 'store.db'}"
    engine = get_engine(url)
    import_records(engine, demo_records(), source_name="data/demo", user="test")
    engine.dispose()
    return url


@pytest.fixture(scope="module")
def service(store_url: str) -> Iterator[httpx.Client]:
    """The app under uvicorn in a thread, on a free localhost port; a real HTTP client talks to it."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store_url, as_of=ANCHOR), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the CDS service did not start"
        time.sleep(0.05)
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def expected() -> dict[str, dict]:
    """What `assess` says about every demo patient on the anchor day, by patient."""
    result = to_json_dict(assess(demo_records(), as_of=ANCHOR))
    return {p["patient_id"]: p for p in result["patients"]}


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
            assert f"- {markdown_escape(line)}" in card["detail"]
        assert markdown_escape(prompt["source"]) in card["detail"]
        assert card["source"]["label"] and card["source"]["url"].endswith(f"#{prompt['rule_id']}")
        assert card["source"]["topic"]["code"] == prompt["rule_id"]
        uuid.UUID(card["uuid"])


def test_discovery_lists_the_patient_view_service(service: httpx.Client):
    response = service.get("/cds-services")
    assert response.status_code == 200
    (entry,) = response.json()["services"]
    assert entry["hook"] == "patient-view" and entry["id"] == "patient-view"
    assert entry["prefetch"] == {"records": "Patient/{{context.patientId}}/$everything"}
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
    prefetched = service.post("/cds-services/patient-view", json=hook(patient_id, {"records": bundle}))
    assert prefetched.status_code == 200
    assert prefetched.json()["cards"] == from_store
    assert_cards_match(prefetched.json()["cards"], expected[patient_id])


def test_invalid_prefetch_says_why_there_is_no_checklist(service: httpx.Client):
    patient_id = one_per_scenario()[0]
    bundle = records_to_bundle(subset(demo_records(), [patient_id]))
    strength = next(e for e in bundle["entry"] if e["resource"]["resourceType"] == "Observation"
                    and "valueCodeableConcept" in e["resource"])
    strength["resource"]["valueCodeableConcept"]["coding"][0]["code"] = "7"
    (card,) = service.post("/cds-services/patient-view", json=hook(patient_id, {"records": bundle})).json()["cards"]
    assert card["indicator"] == "warning" and "1 error(s)" in card["summary"]
    assert "is not an MRC grade" in card["detail"]


def test_unknown_patient_wrong_hook_and_unknown_service(service: httpx.Client):
    assert service.post("/cds-services/patient-view", json=hook("NOBODY")).json() == {"cards": []}
    wrong = hook("P00001") | {"hook": "order-select"}
    assert service.post("/cds-services/patient-view", json=wrong).status_code == 400
    assert service.post("/cds-services/other", json=hook("P00001")).status_code == 404
    assert service.post("/cds-services/patient-view", json={"hook": "patient-view"}).status_code == 422


def test_the_documented_command_serves_the_same_cards(store_url: str, expected: dict):
    """`python -m dashboard serve-cds` as a real process: discovery and one patient's cards."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "dashboard", "serve-cds", "--port", str(port), "--database", store_url,
         "--as-of", ANCHOR.isoformat()], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:
            while True:
                assert process.poll() is None, process.stderr.read().decode()
                try:
                    if client.get("/cds-services").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "serve-cds did not answer within 60 s"
                time.sleep(0.2)
            patient_id = SCENARIOS.loc[SCENARIOS["scenario"] == "wound_infection", "patient_id"].iloc[0]
            cards = client.post("/cds-services/patient-view", json=hook(patient_id)).json()["cards"]
            assert_cards_match(cards, expected[patient_id])
            assert cards and cards[0]["indicator"] == "critical"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
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
                                json=hook(requested, {"records": identified_bundle(other)}))
    assert_refused(response, caplog.text, traces_of(other, expected))
    assert "not the patient in context" in response.json()["detail"]


def test_a_bundle_with_two_patients_is_refused(service, expected, other_and_requested, caplog):
    other, requested = other_and_requested
    both = identified_bundle(other, requested)
    for patient_id, someone_else in ((requested, other), (other, requested)):
        with caplog.at_level(logging.DEBUG):
            response = service.post("/cds-services/patient-view", json=hook(patient_id, {"records": both}))
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
        response = service.post("/cds-services/patient-view", json=hook(requested, {"records": mixed}))
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
    response = service.post("/cds-services/patient-view", json=hook(requested, {"records": bundle}))
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
    response = service.post("/cds-services/patient-view", json=hook(patient_id, {"records": bundle}))
    assert response.status_code == 200
    assert_cards_match(response.json()["cards"], expected[patient_id])
