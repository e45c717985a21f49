"""Every page of the Streamlit app through Streamlit's own AppTest, on a store seeded with the demo cohort."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from app_fixtures import run_app
from streamlit.testing.v1 import AppTest

from dashboard import charts
from dashboard.core.assessment import assess
from dashboard.core.patient_view import CohortIndex, patient_view
from dashboard.core.records import validate
from dashboard.store import decision_history, get_engine, load_records
from dashboard.ui import widgets
from dashboard.ui.uploads import UploadRejected, check_uploads

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")
SCENARIOS = pd.read_csv(ROOT / "data" / "demo" / "scenarios.csv", dtype=str)


def demo_patient(scenario: str) -> str:
    return SCENARIOS.loc[SCENARIOS["scenario"] == scenario, "patient_id"].iloc[0]


@pytest.fixture(scope="module")
def store_url(tmp_path_factory):
    """One store for the module: the app's engine is cached for the whole process."""
    url = f"sqlite:///{tmp_path_factory.mktemp('app') / 'app.db'}"
    patcher = pytest.MonkeyPatch()
    patcher.setenv("SPINE_DASHBOARD_DB_URL", url)
    patcher.setenv("SPINE_DASHBOARD_MODE", "demo")
    from dashboard.ui import data

    data.engine.clear()
    data.clear_caches()
    yield url
    data.engine.clear()
    data.clear_caches()
    patcher.undo()


def app(page: str | None = None, **state) -> AppTest:
    """The app signed in as the demo surgeon (issue 8)."""
    return run_app(page, user="surgeon", role="surgeon", **state)


def texts(at: AppTest) -> str:
    return "\n".join([m.value for m in at.markdown] + [c.value for c in at.caption] + [t.value for t in at.title]
                     + [s.value for s in at.subheader] + [w.value for w in at.warning] + [i.value for i in at.info])


def test_clinic_lists_every_patient_in_follow_up_by_urgency(store_url):
    at = app()
    assert at.title[0].value == "Clinic follow-up"
    labels = {m.label: m.value for m in at.metric}
    assert int(labels[":material/emergency: Emergency — now, within hours"]) >= 1
    table = at.dataframe[-1].value
    assert len(table) == 200
    order = {"Emergency — now, within hours": 0, "Urgent — within days": 1, "Routine — next planned review": 2, "—": 3}
    ranks = table["urgency"].map(order).tolist()
    assert ranks == sorted(ranks)


def test_clinic_search_filters_by_patient_id(store_url):
    at = app()
    target = demo_patient("plateau_behind")
    at.text_input[0].input(target).run()
    assert at.dataframe[-1].value["patient_id"].tolist() == [target]


def test_patient_page_shows_strength_panels_band_and_prompts(store_url):
    patient = demo_patient("plateau_behind")
    at = app("screens/patient.py", patient_id=patient)
    assert f"## {patient}" in texts(at)
    figures = [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]
    strength = figures[0]
    names = {trace.get("name") for trace in strength["data"]}
    assert {"Expected range (expert estimate from published series, mostly decompression)", "Expected (median)",
            "Measured grade", "Pre-operative grade"} <= names
    assert not any("percentile" in str(name) for name in names)  # no source reports percentiles
    assert strength["layout"]["title"]["text"] == "Strength against the expected recovery band"
    assert any("Behind expected" in a["text"] for a in strength["layout"]["annotations"])
    assert figures[1]["layout"]["title"]["text"] == "Pain and disability"
    page = texts(at)
    assert "Possible residual compression (no gain in strength by about 3 months)?" in page
    assert "**Suggested imaging:** MRI lumbar spine" in page


def patient_picker(at: AppTest):
    return next(box for box in at.selectbox if box.label == "Patient")


def test_typing_a_whole_patient_id_opens_that_patient(store_url):
    first, target = demo_patient("plateau_behind"), demo_patient("calf_swelling")
    at = app("screens/patient.py", patient_id=first)
    assert f"## {first}" in texts(at)
    at.text_input(key="patient_search").input(f"  {target.lower()} ").run()  # any case, spaces ignored
    assert not at.exception, at.exception
    assert f"## {target}" in texts(at) and f"## {first}" not in texts(at)
    assert patient_picker(at).value == target
    assert at.query_params["patient"] == target  # the page's link now opens this patient
    assert at.session_state["patient_id"] == target
    assert "**Suggested imaging:** Venous duplex ultrasound of the leg" in texts(at)


def test_part_of_an_id_lists_the_matches_and_picking_one_opens_it(store_url, monkeypatch):
    monkeypatch.setattr(widgets, "PICKER_OPTIONS", 5)  # as on a large cohort: a short list, not every patient
    first = demo_patient("plateau_behind")
    at = app("screens/patient.py", patient_id=first)
    options = patient_picker(at).options
    assert first in options and len(options) in (5, 6)  # the 5 most urgent, and the patient shown
    at.text_input(key="patient_search").input("P001").run()
    options = patient_picker(at).options
    assert f"## {first}" in texts(at)  # a partial id opens nobody: the patient shown stays
    matches = [o for o in options if o != first]
    assert len(matches) == 5 and all("P001" in o for o in matches)
    assert any("The 5 most urgent matches are listed" in c.value for c in at.caption)
    patient_picker(at).set_value(matches[2]).run()
    assert not at.exception, at.exception
    assert f"## {matches[2]}" in texts(at)
    assert at.query_params["patient"] == matches[2]
    at.text_input(key="patient_search").input("Q9").run()
    assert any("No patient id contains “Q9”" in c.value for c in at.caption)
    assert f"## {matches[2]}" in texts(at)


def test_a_link_with_a_patient_id_opens_that_patient(store_url):
    """?patient=ID (as in a link or the browser's address) wins over the patient the session showed last."""
    first, target = demo_patient("plateau_behind"), demo_patient("normal_recovery")
    at = app("screens/patient.py", patient_id=first)
    at.query_params["patient"] = target
    at.run()
    assert not at.exception, at.exception
    assert f"## {target}" in texts(at)
    assert patient_picker(at).value == target
    assert at.session_state["patient_id"] == target
    at.query_params["patient"] = "P99999"  # unknown: the most urgent patient instead, never an error
    at.run()
    assert not at.exception, at.exception
    assert patient_picker(at).value == patient_picker(at).options[0] != "P99999"


def test_recording_a_decision_stores_it_and_marks_the_prompt(store_url):
    patient = demo_patient("calf_swelling")
    at = app("screens/patient.py", patient_id=patient)
    key = f"{patient}-red-venous-thrombosis"
    at.radio(key=f"choice-{key}").set_value("not_indicated")
    at.text_input(key=f"who-{key}").input("Dr Test")
    at.button[0].click().run()  # without a reason: refused
    assert any("a reason is required" in e.value for e in at.error)
    at.text_input(key=f"reason-{key}").input("Duplex done yesterday at the GP")
    at.radio(key=f"choice-{key}").set_value("already_done")
    at.button[0].click().run()
    history = decision_history(get_engine(store_url), patient)
    assert history[["rule_id", "decision", "reason", "clinician"]].values.tolist() == [
        ["red-venous-thrombosis", "already_done", "Duplex done yesterday at the GP", "Dr Test"]]
    at = app("screens/patient.py", patient_id=patient)
    assert "Decision: **Already done** — Duplex done yesterday at the GP (Dr Test" in "\n".join(
        i.value for i in at.info)


def test_add_exam_saves_valid_grades_and_refuses_invalid_ones(store_url):
    patient = demo_patient("normal_recovery")
    at = app("screens/add_exam.py", patient_id=patient)
    at.selectbox(key="g-ankle_dorsiflexion-R").set_value("4+")
    at.text_input[0].input("11")  # leg pain out of range
    at.button[0].click().run()
    assert at.error and "Not saved" in at.error[0].value
    errors = at.dataframe[0].value
    assert errors["message"].tolist() == ["is not a pain score (0–10)"]
    assert not (load_records(get_engine(store_url)).strength["patient_id"].eq(patient)
                & load_records(get_engine(store_url)).strength["mrc"].round(2).eq(4.33)
                & load_records(get_engine(store_url)).strength["exam_date"].eq(pd.Timestamp.today().normalize())).any()
    at.text_input[0].input("3")
    at.button[0].click().run()
    assert at.success and "Saved for" in at.success[0].value
    stored = load_records(get_engine(store_url)).strength
    today = stored[(stored["patient_id"] == patient) & (stored["exam_date"] == pd.Timestamp.today().normalize())]
    assert today[["muscle", "side"]].values.tolist() == [["ankle_dorsiflexion", "R"]]
    assert round(today["mrc"].iloc[0], 2) == 4.33


def test_import_page_renders_with_its_history(store_url):
    at = app("screens/import_records.py")
    assert at.title[0].value == "Import records"
    history = at.dataframe[-1].value
    assert history["source_name"].iloc[-1] == "demo"  # the first import: the demo cohort seeded at start
    assert history["user_name"].iloc[-1] == "demo-seed" and history["status"].iloc[-1] == "succeeded"


def test_uploaded_bad_file_gives_every_error_and_nothing_to_store():
    files = [(name, (ROOT / "data" / "demo" / name).read_bytes()) for name in ("patients.csv", "surgeries.csv")]
    files.append(("strength.csv", b"patient_id,exam_date,muscle,side,mrc\nP00001,2026-01-01,toe,L,7\n"))
    checked = check_uploads(files)
    assert checked.records is None
    assert checked.report.error_lines() == [
        "strength.csv:2: mrc: '7' is not an MRC grade (0–5, 4-, 4+, 5-)",
        "strength.csv:2: muscle: 'toe' is not a muscle code (hip_flexion, knee_extension, ankle_dorsiflexion, "
        "great_toe_extension, ankle_plantarflexion)",
    ]
    with pytest.raises(UploadRejected, match="Not a records file: notes.txt"):
        check_uploads([("notes.txt", b"hello")])
    with pytest.raises(UploadRejected, match="the limit is 1 MB"):
        check_uploads([("strength.csv", b"x" * (2 * 1024 * 1024))], max_mb=1)


def test_reference_page_draws_the_band_and_lists_sources(store_url):
    at = app("screens/reference.py")
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [t["name"] for t in figure["data"]] == [
        "Expected range (expert estimate from published series, mostly decompression)", "Expected",
        "Pre-operative grade"]
    assert any("Asian Spine J" in m.value or "Eur Spine J" in m.value for m in at.markdown)
    at.select_slider[0].set_value("1").run()
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert figure["layout"]["title"]["text"].startswith("Severe deficit")


# ------------------------------------------------------------------ the patient figures' specifications
@pytest.fixture(scope="module")
def demo_views():
    records, report = validate(ROOT / "data" / "demo")
    assert report.ok
    assessment = assess(records, as_of=date(2026, 11, 20))
    index = CohortIndex(assessment)
    ids = [*SCENARIOS["patient_id"].unique(), *assessment.patients["patient_id"].iloc[::25]]
    return assessment, index, [patient_view(assessment, patient_id, index=index) for patient_id in ids]


def test_patient_views_from_the_index_are_the_views_from_the_cohort(demo_views):
    assessment, index, views = demo_views
    for view in views:
        plain = patient_view(assessment, view.patient_id)
        assert plain.header == view.header and plain.missing == view.missing
        for name in ("muscles", "exams", "curves", "visits", "prompts", "curve_sources"):
            pd.testing.assert_frame_equal(getattr(plain, name).reset_index(drop=True),
                                          getattr(view, name).reset_index(drop=True))
    assert index.exams(views[0].patient_id).equals(
        assessment.records.strength[assessment.records.strength["patient_id"] == views[0].patient_id]
        .sort_values("exam_date", kind="stable"))


def test_figure_specifications_are_valid_plotly_and_drawn_as_built(demo_views):
    """The figures skip Plotly's validation at run time, so every specification is validated here in full."""
    _, _, views = demo_views
    for view in views:
        for spec in (charts.strength_spec(view), charts.strength_spec(view, show_all=True),
                     charts.strength_spec(view, large=True), charts.prom_spec(view),
                     charts.prom_spec(view, large=True), charts.timeline_spec(view)):
            validated = go.Figure(spec)  # raises on any property Plotly does not know or any bad value
            assert json.loads(pio.to_json(validated, validate=False)) == json.loads(
                pio.to_json(charts.figure_from_spec(spec), validate=False))
    weak = next(v for v in views if charts.muscles_with_weakness(v))
    spec = charts.strength_spec(weak)
    assert [a["text"] for a in spec["layout"]["annotations"][:2]] == [
        charts.panel_title(charts.muscles_with_weakness(weak)[0], side) for side in ("L", "R")]
    assert "template" in charts.strength_figure(weak).to_dict()["layout"]  # the theme's template, as before
