"""The CDS Hooks service logs a stored patient's prompts in the prompt log when it answers patient-view
(docs/outcomes.md); prefetched FHIR data is not the store's and is not logged; a failure to log costs no card."""

from __future__ import annotations

import logging
from datetime import date
from pathlib import Path

import pytest

from dashboard.clinical.assessment import assess
from dashboard.interop.fhir import records_to_bundle
from dashboard.store import get_engine
from dashboard.store.prompt_log import prompt_log
from tests.cds_auth_helpers import auth_config, client, ec_keys
from tests.interop.test_cds_hooks import hook, prefetch_of
from tests.interop_helpers import SCENARIOS, demo_records, demo_store, subset

ANCHOR = date(2026, 11, 20)  # the demo cohort's anchor day (data/demo/README.md)
KEYS = ec_keys()


def _patient(scenario: str) -> str:
    return SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return demo_store(tmp_path)


def _service(store_url: str):  # noqa: ANN202 — a TestClient
    from dashboard.interop.cds_hooks import create_app

    return client(create_app(store_url, as_of=ANCHOR, auth=auth_config(KEYS)), KEYS)


def _logged(store_url: str, patient_id: str) -> list[str]:
    engine = get_engine(store_url)
    log = prompt_log(engine)
    engine.dispose()
    return sorted(log.loc[log["patient_id"] == patient_id, "rule_id"])


def test_patient_view_of_a_stored_patient_logs_its_prompts_once(store_url: str) -> None:
    patient_id = _patient("cauda_equina")
    expected = sorted(assess(subset(demo_records(), [patient_id]), as_of=ANCHOR).prompts["rule_id"])
    assert expected and "red-cauda-equina" in expected
    with _service(store_url) as http:
        for _ in range(2):
            response = http.post("/cds-services/patient-view", json=hook(patient_id))
            assert response.status_code == 200 and len(response.json()["cards"]) == len(expected)
    assert _logged(store_url, patient_id) == expected  # asked twice, logged once


def test_prefetched_data_is_not_logged(store_url: str) -> None:
    patient_id = _patient("cauda_equina")
    bundle = records_to_bundle(subset(demo_records(), [patient_id]))
    with _service(store_url) as http:
        response = http.post("/cds-services/patient-view", json=hook(patient_id, prefetch_of(bundle)))
    assert response.status_code == 200 and response.json()["cards"]
    assert _logged(store_url, patient_id) == []


def test_a_failure_to_log_costs_no_card(store_url: str, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture) -> None:
    import dashboard.store.prompt_log as prompt_log_module

    def broken(*_args, **_kwargs) -> int:
        raise RuntimeError("the store is read-only")

    monkeypatch.setattr(prompt_log_module, "record_prompts", broken)
    patient_id = _patient("cauda_equina")
    with caplog.at_level(logging.WARNING), _service(store_url) as http:
        response = http.post("/cds-services/patient-view", json=hook(patient_id))
    assert response.status_code == 200 and response.json()["cards"]
    assert ("patient-view: the prompts could not be written to the prompt log (RuntimeError); the cards are "
            "answered all the same") in caplog.text
    assert _logged(store_url, patient_id) == []
