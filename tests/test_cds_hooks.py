"""CDS Hooks over real HTTP on localhost: discovery, and patient-view cards that match `assess` exactly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date

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
            patient_id = SCENARIOS.loc[SCENARIOS["scenario"] == "cauda_equina", "patient_id"].iloc[0]
            cards = client.post("/cds-services/patient-view", json=hook(patient_id)).json()["cards"]
            assert_cards_match(cards, expected[patient_id])
            # (Was the wound-infection patient: infection is now urgent — wound review, CRP/ESR and cultures
            # first — and an emergency only with a new neurological deficit; clinical review 2026-12.)
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
