"""The Import page offers FHIR Bundle and REDCap export next to records files (Streamlit AppTest)."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from tests.interop_helpers import ROOT

APP = str(ROOT / "dashboard" / "app" / "main.py")


@pytest.fixture
def demo_store(tmp_path, monkeypatch):
    monkeypatch.setenv("SPINE_DASHBOARD_DB_URL", f"sqlite:///{tmp_path / 'app.db'}")
    monkeypatch.setenv("SPINE_DASHBOARD_MODE", "demo")
    from dashboard.app import data

    data.engine.clear()
    data.clear_caches()
    yield
    data.engine.clear()
    data.clear_caches()


@pytest.mark.parametrize(("source", "uploader"), [("FHIR Bundle", "FHIR Bundle"),
                                                  ("REDCap export", "REDCap export and mapping")])
def test_import_page_switches_to_fhir_and_redcap_uploads(demo_store, source: str, uploader: str):
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["user_name"] = "admin"  # the demo admin, signed in as the sign-in form leaves it
    at.session_state["role"] = "admin"
    at.run()
    at.switch_page("screens/import_records.py").run()
    assert not at.exception, at.exception
    (radio,) = [r for r in at.radio if r.label == "Import from"]
    assert radio.options == ["Records files", "FHIR Bundle", "REDCap export"] and radio.value == "Records files"
    radio.set_value(source).run()
    assert not at.exception, at.exception
    labels = [w.proto.label for w in at.get("file_uploader")]
    assert labels == [uploader]
    assert at.subheader[-1].value == "Import history"
