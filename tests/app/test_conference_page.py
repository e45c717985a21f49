"""The case-conference page through Streamlit's AppTest on a store seeded with the demo cohort.

Presenting must show nothing identifying: no patient id, name, MRN, note or calendar date in any text,
table, widget or chart of the page, and none of the identifiers planted in the procedure and surgeon fields
(tests/planted.py) either: the operation is a controlled term, the surgeon "Surgeon A" (the filter too).
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from dashboard.clinical.conference import age_band
from dashboard.clinical.controlled_terms import SurgeonPseudonyms
from dashboard.clinical.records.validate import validate
from dashboard.store import get_engine
from dashboard.store.importer import import_records
from tests.planted import NEEDLES, found, plant

ROOT = Path(__file__).resolve().parents[2]
APP = str(ROOT / "dashboard" / "app" / "main.py")
DEMO = ROOT / "data" / "demo"
ISO = re.compile(r"\d{4}-\d{2}-\d{2}")
PATIENTS = pd.read_csv(DEMO / "patients.csv", dtype=str)
NOTES = {n.strip() for n in pd.read_csv(DEMO / "visits.csv", dtype=str)["notes"].dropna() if n.strip()}


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    """One store for the module (the app caches its engine for the process); the app seeds the demo cohort."""
    url = f"sqlite:///{tmp_path_factory.mktemp('conference') / 'app.db'}"
    patcher = pytest.MonkeyPatch()
    patcher.setenv("SPINE_DASHBOARD_DB_URL", url)
    patcher.setenv("SPINE_DASHBOARD_MODE", "demo")
    from dashboard.app import auth, data

    def reset() -> None:
        data.engine.clear()
        data.clear_caches()
        if hasattr(auth, "_load"):  # the login configuration cache, where sign-in is in place
            auth._load.clear()

    reset()
    yield url
    reset()
    patcher.undo()


def conference(user: str = "surgeon", role: str = "surgeon") -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["user_name"] = user  # signed in as a demo user
    at.session_state["role"] = role
    at.run()
    at.switch_page("screens/conference.py").run()
    assert not at.exception, at.exception
    return at


def shown_text(at: AppTest) -> str:
    """Every text the page shows: markdown, headings, captions, alerts, tables, widget labels and options."""
    parts = [e.value for kind in ("markdown", "title", "header", "subheader", "caption", "text", "info", "warning",
                                  "success", "error", "code") for e in at.get(kind) if hasattr(e, "value")]
    parts += [frame.value.to_csv(index=False) for frame in at.dataframe]
    for kind in ("selectbox", "multiselect", "radio"):
        for widget in at.get(kind):
            parts += [str(widget.label), *map(str, widget.options), str(widget.value)]
    parts += [str(b.label) for b in at.button]
    return "\n".join(map(str, parts))


def chart_specs(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def assert_deidentified(text: str) -> None:
    lowered = text.lower()
    for column in ("patient_id", "name", "mrn"):
        hits = [v for v in PATIENTS[column] if v.lower() in lowered]
        assert not hits, f"{len(hits)} {column} value(s) on the page"  # counts only: no value in the log
    assert not [n for n in NOTES if n in text], "a visit note on the page"
    assert not ISO.search(text), "a calendar date on the page"


def current_case(at: AppTest) -> str:
    return next(m.value for m in at.markdown if "Case " in m.value and " of " in m.value)


def test_presents_case_one_deidentified_then_next_and_previous(store_url):
    at = conference()
    assert at.title[0].value == "Case conference"
    assert "Case 1 of" in current_case(at)
    assert any(h.value == "Case 1" for h in at.header)  # a header, no longer Markdown with HTML
    specs = chart_specs(at)
    assert specs and any("Pain and disability" in json.dumps(s) for s in specs)
    assert_deidentified(shown_text(at) + "\n".join(json.dumps(s) for s in specs))
    assert {b.label for b in at.get("download_button")} == {"Handout PDF", "Handout HTML"}

    at.button(key="conference_next").click().run()
    assert "Case 2 of" in current_case(at)
    assert any(h.value == "Case 2" for h in at.header)
    assert at.get("plotly_chart")
    assert_deidentified(shown_text(at) + "\n".join(json.dumps(s) for s in chart_specs(at)))

    at.button(key="conference_previous").click().run()
    assert "Case 1 of" in current_case(at)


def test_filter_by_surgeon_pseudonym_restarts_at_case_one(store_url):
    at = conference()
    at.button(key="conference_next").click().run()
    pseudonyms = SurgeonPseudonyms.of(PATIENTS["surgeon"])
    assert at.multiselect(key="conference_surgeons").options == ["Surgeon A", "Surgeon B", "Surgeon C", "Surgeon D"]
    surgeon = at.multiselect(key="conference_surgeons").options[0]
    at.selectbox(key="conference_filter").set_value("all").run()
    at.multiselect(key="conference_surgeons").set_value([surgeon]).run()
    expected = int((PATIENTS["surgeon"].map(pseudonyms.pseudonym) == surgeon).sum())
    assert 0 < expected < len(PATIENTS)
    assert current_case(at) == f"**Case 1 of {expected}**"
    assert any(t.value.endswith(f" · {surgeon}") for t in at.get("text"))  # controlled values, plain text
    text = shown_text(at)
    assert_deidentified(text)
    assert not [s for s in PATIENTS["surgeon"].unique() if s.split()[-1] in text], "a surgeon's name on the page"


def facts_band(at: AppTest) -> str:
    """The age band of the case on screen (the facts line, plain text, starts with it)."""
    return next(t.value for t in at.get("text") if " · " in t.value).split(" · ")[0]


def test_hand_picked_list_in_the_order_given_hides_the_ids(store_url):
    at = conference()
    at.radio(key="conference_mode").set_value("Hand-picked").run()
    picker = at.multiselect(key="conference_picker")
    birth = PATIENTS.set_index("patient_id")["birth_year"].astype(int)
    year = date.today().year  # the page assesses as of today (the sidebar's default)
    first = picker.options[0]
    second = next(p for p in picker.options if age_band(year - birth[p]) != age_band(year - birth[first]))
    picker.set_value([second, first]).run()
    next(b for b in at.button if b.label == "Use these cases").click().run()
    assert not at.exception, at.exception
    assert current_case(at) == "**Case 1 of 2**"
    assert not [w for w in at.multiselect if w.key == "conference_picker"]  # the ids are gone once chosen
    assert_deidentified(shown_text(at))
    assert facts_band(at) == age_band(year - birth[second])  # in the order picked
    at.button(key="conference_next").click().run()
    assert current_case(at) == "**Case 2 of 2**"
    assert facts_band(at) == age_band(year - birth[first])
    assert at.button(key="conference_next").disabled


def test_conference_role_has_no_hand_picking(store_url):
    at = conference(user="conference", role="conference")
    assert at.radio(key="conference_mode").options == ["Filter"]
    assert len(at.date_input) == 0  # no calendar day on a projected screen
    assert "Case 1 of" in current_case(at)
    assert_deidentified(shown_text(at))


def test_patient_page_offers_the_identified_follow_up_report(store_url):
    """The Patient page ends with the follow-up report's buttons (a click gives a one-time link served by
    dashboard/app/routes.py to the session's cookie; nothing goes to Streamlit's /media: tests/app/test_server.py)."""
    at = AppTest.from_file(APP, default_timeout=120)
    at.session_state["user_name"] = "surgeon"
    at.session_state["role"] = "surgeon"
    at.session_state["patient_id"] = PATIENTS["patient_id"].iloc[0]
    at.run()
    at.switch_page("screens/patient.py").run()
    assert not at.exception, at.exception
    assert any(s.value == "Follow-up report" for s in at.subheader)
    assert {b.label for b in at.button if (b.key or "").startswith("follow_up_")} == {"Follow-up report PDF",
                                                                                      "Follow-up report HTML"}
    assert not at.get("download_button")


@pytest.fixture
def planted_store(store_url, tmp_path):
    """A store of the demo cohort with identifiers planted in every procedure and surgeon field (for this
    test only: the module's store and the app's caches are restored afterwards)."""
    from dashboard.app import data

    records, report = validate(DEMO)
    assert records is not None, report.error_lines()
    url = f"sqlite:///{tmp_path / 'planted.db'}"
    import_records(get_engine(url), plant(records), source_name="planted", user="test")
    patcher = pytest.MonkeyPatch()
    patcher.setenv("SPINE_DASHBOARD_DB_URL", url)
    data.engine.clear()
    data.clear_caches()
    yield url
    patcher.undo()
    data.engine.clear()
    data.clear_caches()


def test_identifiers_planted_in_procedure_and_surgeon_never_reach_the_screen(planted_store):
    at = conference(user="conference", role="conference")
    filter_options = at.multiselect(key="conference_surgeons").options
    assert filter_options == ["Surgeon A", "Surgeon B", "Surgeon C", "Surgeon D", "Surgeon E"]
    seen = []
    for _ in range(3):  # three cases in a row: different procedure and surgeon variants
        text = shown_text(at) + "\n".join(json.dumps(s) for s in chart_specs(at))
        assert found(text) == [], current_case(at)
        assert_deidentified(text)
        facts = next(t.value for t in at.get("text") if " · " in t.value)
        seen.append(facts)
        at.button(key="conference_next").click().run()
        assert not at.exception, at.exception
    assert all("other procedure" in facts and " · Surgeon " in facts for facts in seen)
    assert len(NEEDLES) == 10  # the nine kinds of the review, and the forged image slot
